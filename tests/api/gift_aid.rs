//! Gift Aid: the declaration on the donation form as the donor's own record, HMRC's schedule
//! of the eligible gifts not yet claimed (JSON, CSV, ODS), its parts of 1,000 lines, claims
//! that never take a donation twice, and adjustments for claimed gifts refunded or disputed
//! since. Most donations here are written straight into the database, paid, on the dates a
//! test needs; the ones that matter end to end are made and paid through the API and Stripe's
//! signed webhooks.

use quickdonate::gift_aid::ADJUSTMENT_COLUMNS;
use quickdonate::gift_aid::schedule::COLUMNS;
use quickdonate::operators::access::Role;
use reqwest::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::finance_access::{audit_rows, get_with, token};
use crate::helpers::{
    StripeObjects, TestApp, assert_problem, donation_body, event, fresh_database_url, objects,
    problem_fields, spawn_app_on, spawn_app_with, stripe_creates_payment_intents,
};

const ODS: &str = "application/vnd.oasis.opendocument.spreadsheet";

struct Finance {
    app: TestApp,
    token: String,
    stripe: StripeObjects,
}

async fn finance_app() -> Finance {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    finance_on(app).await
}

async fn finance_on(app: TestApp) -> Finance {
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let token = token(&app, "treasurer", Role::Finance).await;
    Finance { app, token, stripe }
}

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

fn text(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// A schedule's download is named by its period, in either format, and by when it was made.
fn assert_download_name(response: &Response, from: OffsetDateTime, to: OffsetDateTime, ext: &str) {
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    let named = format!(
        "attachment; filename=\"gift-aid-schedule-{}-to-{}-",
        from.date(),
        to.date()
    );
    assert!(disposition.starts_with(&named), "{disposition}");
    assert!(
        disposition.ends_with(&format!("Z.{ext}\"")),
        "{disposition}"
    );
}

/// The schedule's query string for [from, to), and part `part` if given.
fn range(from: OffsetDateTime, to: OffsetDateTime, part: Option<usize>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("from", &text(from));
    query.append_pair("to", &text(to));
    if let Some(part) = part {
        query.append_pair("part", &part.to_string());
    }
    format!("/v1/finance/gift-aid/schedule?{}", query.finish())
}

impl Finance {
    async fn get(&self, path: &str, accept: Option<&str>) -> Response {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        get_with(&self.app, Some(&self.token), path, &headers).await
    }

    /// The schedule of [from, to) as JSON.
    async fn schedule(&self, from: OffsetDateTime, to: OffsetDateTime) -> Value {
        self.schedule_part(from, to, None).await
    }

    async fn schedule_part(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        part: Option<usize>,
    ) -> Value {
        let response = self.get(&range(from, to, part), None).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn claim(&self, body: &Value) -> Response {
        self.app
            .http
            .post(format!("{}/v1/finance/gift-aid/claims", self.app.address))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Claims [from, to) and expects a claim.
    async fn claimed(&self, from: OffsetDateTime, to: OffsetDateTime) -> Value {
        let response = self
            .claim(&json!({"from": text(from), "to": text(to)}))
            .await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// A donor's declaration, straight into the database.
    async fn declare(&self, declaration: &Declaration<'_>) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            r#"INSERT INTO gift_aid_declarations
                   (id, donor_email, title, first_name, last_name, house_name_or_number,
                    postcode, country, declared_at, covers_from, cancelled_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9 - interval '4 years', $10)"#,
        )
        .bind(id)
        .bind(declaration.email)
        .bind(declaration.title)
        .bind(declaration.first_name)
        .bind(declaration.last_name)
        .bind(declaration.house)
        .bind(declaration.postcode)
        .bind(declaration.country)
        .bind(declaration.declared_at)
        .bind(declaration.cancelled_at)
        .execute(&self.app.db)
        .await
        .unwrap();
        id
    }

    /// A donation straight into the database, paid (unless told otherwise) at `gift.at`.
    async fn give(&self, gift: Gift<'_>) -> Uuid {
        let id = Uuid::now_v7();
        let succeeded = gift.payment_status == "succeeded";
        let total = gift.amount + gift.cover;
        let status = if succeeded && gift.refunded >= total {
            "refunded"
        } else {
            gift.payment_status
        };
        sqlx::query(
            r#"INSERT INTO donations
                   (id, campaign, frequency, amount, cover_fees_amount, total_amount, currency,
                    donor_email, donor_first_name, donor_last_name, status, payment_status,
                    payment_status_at, amount_received, received_currency, refunded_amount,
                    dispute_status, created_at)
               VALUES ($1, 'kashmir', 'one_off', $2, $3, $2 + $3, $4, $5,
                       coalesce($12, (SELECT first_name FROM gift_aid_declarations
                                      WHERE lower(donor_email) = lower($5)
                                      ORDER BY declared_at DESC, id DESC LIMIT 1), 'Tariq'),
                       coalesce($13, (SELECT last_name FROM gift_aid_declarations
                                      WHERE lower(donor_email) = lower($5)
                                      ORDER BY declared_at DESC, id DESC LIMIT 1), 'Shah'),
                       $6,
                       $7, $8, $9, $4, $10, $11, $8)"#,
        )
        .bind(id)
        .bind(gift.amount)
        .bind(gift.cover)
        .bind(gift.currency)
        .bind(gift.email)
        .bind(status)
        .bind(gift.payment_status)
        .bind(gift.at)
        .bind(if succeeded { total } else { 0 })
        .bind(gift.refunded)
        .bind(gift.dispute)
        .bind(gift.donor.map(|(first, _)| first))
        .bind(gift.donor.map(|(_, last)| last))
        .execute(&self.app.db)
        .await
        .unwrap();
        id
    }

    /// A donation made on the donation form with a Gift Aid declaration, and paid through
    /// Stripe's signed webhooks: its id, PaymentIntent, charge and total.
    async fn give_through_the_api(&self, amount: i64) -> Paid {
        let mut body = donation_body();
        body["amount"] = json!(amount);
        body["cover_fees"] = json!(true);
        body["gift_aid"] = json!({"declared": true, "title": "Ms", "house_name_or_number": "10",
                                  "postcode": "s192bd"});
        let response = self.app.post_donation("kashmir", &body, None).await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        let donation = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
        let pi = created["payment_intent_id"].as_str().unwrap().to_owned();
        let total = created["total_amount"].as_i64().unwrap();
        assert!(total > amount, "the donor covers the fee");

        let suffix = Uuid::new_v4().simple();
        let paid = Paid {
            donation,
            charge: format!("ch_{suffix}"),
            txn: format!("txn_{suffix}"),
            pi,
            total,
        };
        let mut intent = objects::payment_intent(&paid.pi, Some(donation), "succeeded", total);
        intent["latest_charge"] = paid.charge.clone().into();
        self.stripe.put(intent.clone());
        self.stripe.put(objects::charge(
            &paid.charge,
            &paid.pi,
            total,
            0,
            Some(&paid.txn),
        ));
        self.stripe
            .put(objects::balance_transaction(&paid.txn, total, 60));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let delivered = self
            .app
            .deliver(&event("payment_intent.succeeded", intent, now - 100))
            .await;
        assert_eq!(delivered.status(), 200);
        self.app.apply_events().await;
        assert_eq!(self.app.donation_facts(donation).await.status, "succeeded");
        paid
    }

    /// Refunds `amount` of a paid donation, through Stripe's signed webhooks.
    async fn refund(&self, paid: &Paid, amount: i64) {
        let refund = objects::refund(
            &format!("re_{}", Uuid::new_v4().simple()),
            &paid.charge,
            &paid.pi,
            amount,
            "succeeded",
        );
        self.stripe.put(refund.clone());
        self.stripe.put(objects::charge(
            &paid.charge,
            &paid.pi,
            paid.total,
            amount,
            Some(&paid.txn),
        ));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let delivered = self
            .app
            .deliver(&event("refund.created", refund, now - 50))
            .await;
        assert_eq!(delivered.status(), 200);
        self.app.apply_events().await;
        assert_eq!(
            self.app.donation_facts(paid.donation).await.refunded_amount,
            amount
        );
    }
}

struct Paid {
    donation: Uuid,
    pi: String,
    charge: String,
    txn: String,
    total: i64,
}

struct Declaration<'a> {
    email: &'a str,
    title: Option<&'a str>,
    first_name: &'a str,
    last_name: &'a str,
    house: &'a str,
    postcode: Option<&'a str>,
    country: &'a str,
    declared_at: OffsetDateTime,
    cancelled_at: Option<OffsetDateTime>,
}

fn declaration(email: &str, declared_at: OffsetDateTime) -> Declaration<'_> {
    Declaration {
        email,
        title: Some("Mr"),
        first_name: "Tariq",
        last_name: "Shah",
        house: "7",
        postcode: Some("M1 1AE"),
        country: "GB",
        declared_at,
        cancelled_at: None,
    }
}

#[derive(Clone, Copy)]
struct Gift<'a> {
    email: &'a str,
    amount: i64,
    cover: i64,
    at: OffsetDateTime,
    currency: &'a str,
    payment_status: &'a str,
    refunded: i64,
    dispute: Option<&'a str>,
    /// The donor's first and last name; by default those of the email's latest declaration.
    donor: Option<(&'a str, &'a str)>,
}

fn gift(email: &str, amount: i64, at: OffsetDateTime) -> Gift<'_> {
    Gift {
        email,
        amount,
        cover: 0,
        at,
        currency: "gbp",
        payment_status: "succeeded",
        refunded: 0,
        dispute: None,
        donor: None,
    }
}

/// The schedule's rows as their HMRC cells, in order.
fn cells(schedule: &Value) -> Vec<Vec<String>> {
    schedule["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            [
                "title",
                "first_name",
                "last_name",
                "house_name_or_number",
                "postcode",
                "aggregated_donations",
                "sponsored_event",
                "donation_date",
                "schedule_amount",
            ]
            .iter()
            .map(|key| row[*key].as_str().unwrap().to_owned())
            .collect()
        })
        .collect()
}

fn row(cells: [&str; 9]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Every donation id the schedule's rows claim, in order.
fn donation_ids(schedule: &Value) -> Vec<Uuid> {
    schedule["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row["donation_ids"].as_array().unwrap().clone())
        .map(|id| Uuid::parse_str(id.as_str().unwrap()).unwrap())
        .collect()
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

#[tokio::test]
async fn the_declaration_on_the_donation_form_is_the_donors_record_and_only_the_gift_is_claimed() {
    let f = finance_app().await;
    let paid = f.give_through_the_api(5000).await;

    // The declaration: a record of the donor's own, linked to the donation it was made with,
    // covering the past 4 years and the future.
    let (email, first, last, declared_at, covers_from, cancelled_at): (
        String,
        String,
        String,
        OffsetDateTime,
        OffsetDateTime,
        Option<OffsetDateTime>,
    ) = sqlx::query_as(
        "SELECT donor_email, first_name, last_name, declared_at, covers_from, cancelled_at
         FROM gift_aid_declarations WHERE donation_id = $1",
    )
    .bind(paid.donation)
    .fetch_one(&f.app.db)
    .await
    .unwrap();
    assert_eq!(
        (email.as_str(), first.as_str(), last.as_str()),
        ("amina@example.org", "Amina", "Khan")
    );
    assert_eq!(
        covers_from,
        declared_at.replace_year(declared_at.year() - 4).unwrap()
    );
    assert_eq!(cancelled_at, None);

    let now = OffsetDateTime::now_utc();
    let schedule = f.schedule(now - days(1), now + days(1)).await;
    let (uk_date,): (String,) = sqlx::query_as(
        "SELECT to_char(payment_status_at AT TIME ZONE 'Europe/London', 'DD/MM/YY')
         FROM donations WHERE id = $1",
    )
    .bind(paid.donation)
    .fetch_one(&f.app.db)
    .await
    .unwrap();
    assert_eq!(
        cells(&schedule),
        [row([
            "Ms", "Amina", "Khan", "10", "S19 2BD", "", "", &uk_date, "50.00"
        ])],
        "the gift alone, never the fee cover the donor added"
    );
    assert_eq!(schedule["rows"][0]["amount"], 5000);
    assert_eq!(schedule["rows"][0]["currency"], "gbp");
    assert_eq!(schedule["total_amount"], 5000);
    assert_eq!(donation_ids(&schedule), [paid.donation]);
    assert_eq!(
        (&schedule["part"], &schedule["parts"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(schedule["next_part"], Value::Null);
}

#[tokio::test]
async fn every_cell_is_written_as_hmrc_asks() {
    let f = finance_app().await;
    let declared = at("2026-06-01T12:00:00Z");
    f.declare(&Declaration {
        email: "long@example.org",
        title: Some("Professor"),
        first_name: "Bartholomew Maximilian Augustus Fitzroy",
        last_name: "Smith-Jones",
        house: "  Flat 3,   The Maltings ",
        postcode: Some("s192bd"),
        country: "United Kingdom",
        declared_at: declared,
        cancelled_at: None,
    })
    .await;
    f.declare(&Declaration {
        email: "paris@example.org",
        title: Some("Mme"),
        first_name: "Claire",
        last_name: "Dubois",
        house: "12 Rue de Rivoli",
        postcode: Some("75001"),
        country: "France",
        declared_at: declared,
        cancelled_at: None,
    })
    .await;
    // 23:30 UTC on 30 June is 00:30 on 1 July in the UK (BST): HMRC gets the UK date.
    f.give(gift("long@example.org", 12_345, at("2026-06-30T23:30:00Z")))
        .await;
    f.give(gift("paris@example.org", 3000, at("2026-07-02T10:00:00Z")))
        .await;

    let schedule = f
        .schedule(at("2026-06-01T00:00:00Z"), at("2026-08-01T00:00:00Z"))
        .await;
    assert_eq!(
        cells(&schedule),
        [
            row([
                "Prof",
                "Bartholomew Maximilian Augustus Fit",
                "Smith Jones",
                "Flat 3, The Maltings",
                "S19 2BD",
                "",
                "",
                "01/07/26",
                "123.45"
            ]),
            row([
                "Mme",
                "Claire",
                "Dubois",
                "12 Rue de Rivoli, 75001, France",
                "X",
                "",
                "",
                "02/07/26",
                "30.00"
            ]),
        ]
    );
}

#[tokio::test]
async fn only_eligible_gifts_are_on_the_schedule() {
    let f = finance_app().await;
    let declared = at("2026-11-15T12:00:00Z");
    f.declare(&declaration("eligible@example.org", declared))
        .await;
    f.declare(&Declaration {
        cancelled_at: Some(at("2026-11-20T00:00:00Z")),
        ..declaration("cancelled@example.org", declared)
    })
    .await;

    let within = |days_before: i64| declared - days(days_before);
    let mut expected = vec![
        // Made before the declaration, within the 4 years it covers.
        f.give(gift("eligible@example.org", 4000, within(365)))
            .await,
        // The same donor, whatever the case of the address.
        f.give(gift("ELIGIBLE@Example.ORG", 4100, within(1))).await,
        // After the declaration: it covers the future.
        f.give(gift("eligible@example.org", 4200, declared + days(3)))
            .await,
        // Before the donor cancelled.
        f.give(gift(
            "cancelled@example.org",
            4300,
            at("2026-11-19T00:00:00Z"),
        ))
        .await,
    ];
    let with_cover = f
        .give(Gift {
            cover: 150,
            ..gift("eligible@example.org", 4400, declared + days(4))
        })
        .await;
    expected.push(with_cover);

    let eligible = gift("eligible@example.org", 5000, declared + days(5));
    let left_out = [
        // Older than the 4 years the declaration reaches back.
        gift("eligible@example.org", 5000, declared - days(4 * 366)),
        Gift {
            refunded: 1,
            ..eligible
        },
        Gift {
            refunded: 5000,
            ..eligible
        },
        Gift {
            dispute: Some("inquiry_closed"),
            ..eligible
        },
        Gift {
            dispute: Some("won"),
            ..eligible
        },
        Gift {
            payment_status: "pending",
            ..eligible
        },
        Gift {
            payment_status: "failed",
            ..eligible
        },
        Gift {
            currency: "usd",
            ..eligible
        },
        // No declaration of this donor.
        gift("stranger@example.org", 5000, declared),
        // After the donor cancelled.
        gift("cancelled@example.org", 5000, at("2026-11-21T00:00:00Z")),
    ];
    for gift in left_out {
        f.give(gift).await;
    }

    let schedule = f
        .schedule(at("2020-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        .await;
    assert_eq!(donation_ids(&schedule), expected);
    let amounts: Vec<i64> = schedule["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(
        amounts,
        [4000, 4100, 4200, 4300, 4400],
        "the gift, never the fee cover"
    );

    // The range is [from, to): a gift at `to` waits for the next schedule.
    let before_the_last = f
        .schedule(at("2020-01-01T00:00:00Z"), declared + days(4))
        .await;
    assert_eq!(donation_ids(&before_the_last), expected[..4]);
}

#[tokio::test]
async fn only_a_declaration_the_donor_made_counts_for_their_other_gifts() {
    let f = finance_app().await;
    let declared = at("2026-11-15T12:00:00Z");
    // A form sent with Gift Aid ticked whose card was declined: it declares nothing.
    let declined = f
        .give(Gift {
            payment_status: "failed",
            donor: Some(("Tariq", "Shah")),
            ..gift("shared@example.org", 5000, declared)
        })
        .await;
    let made_with_it = f
        .declare(&declaration("shared@example.org", declared))
        .await;
    sqlx::query("UPDATE gift_aid_declarations SET donation_id = $1 WHERE id = $2")
        .bind(declined)
        .bind(made_with_it)
        .execute(&f.app.db)
        .await
        .unwrap();
    // Someone else with the same mailbox declared, under their own name.
    f.declare(&Declaration {
        first_name: "Amina",
        last_name: "Shah",
        ..declaration("shared@example.org", declared)
    })
    .await;
    let later = f
        .give(Gift {
            donor: Some(("Tariq", "Shah")),
            ..gift("shared@example.org", 4000, declared + days(2))
        })
        .await;
    let range = (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
    assert_eq!(
        donation_ids(&f.schedule(range.0, range.1).await),
        Vec::<Uuid>::new(),
        "neither an unpaid form's declaration nor another person's covers Tariq's gift"
    );

    // Once that gift goes through (the donor pays with another card), its declaration counts:
    // for it, and for the donor's other gifts.
    sqlx::query(
        "UPDATE donations SET payment_status = 'succeeded', status = 'succeeded',
                amount_received = total_amount WHERE id = $1",
    )
    .bind(declined)
    .execute(&f.app.db)
    .await
    .unwrap();
    assert_eq!(
        donation_ids(&f.schedule(range.0, range.1).await),
        vec![declined, later]
    );
}

#[tokio::test]
async fn gifts_under_30_pounds_are_aggregated_in_lines_of_at_most_1000_pounds() {
    let f = finance_app().await;
    let day = |d: u8| at(&format!("2026-11-{d:02}T12:00:00Z"));
    f.declare(&declaration("small@example.org", day(1))).await;
    // 40 gifts of £25 make exactly £1,000: one line...
    let mut first_line = Vec::new();
    for _ in 0..40 {
        first_line.push(f.give(gift("small@example.org", 2500, day(2))).await);
    }
    // ...and the next small gift (£29.99, just under £30) starts another.
    let just_under = f.give(gift("small@example.org", 2999, day(3))).await;
    // £30 exactly is not aggregated.
    let exactly_30 = f.give(gift("small@example.org", 3000, day(4))).await;

    let schedule = f.schedule(day(1), day(30)).await;
    assert_eq!(
        cells(&schedule),
        [
            row([
                "",
                "",
                "",
                "",
                "",
                "Gifts under £30 02/11/26",
                "",
                "02/11/26",
                "1000.00"
            ]),
            row([
                "",
                "",
                "",
                "",
                "",
                "Gifts under £30 03/11/26",
                "",
                "03/11/26",
                "29.99"
            ]),
            row([
                "Mr", "Tariq", "Shah", "7", "M1 1AE", "", "", "04/11/26", "30.00"
            ]),
        ]
    );
    let rows = schedule["rows"].as_array().unwrap();
    let ids = |row: &Value| -> Vec<Uuid> {
        row["donation_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| Uuid::parse_str(id.as_str().unwrap()).unwrap())
            .collect()
    };
    assert_eq!(ids(&rows[0]), first_line);
    assert_eq!(ids(&rows[1]), [just_under]);
    assert_eq!(ids(&rows[2]), [exactly_30]);
}

#[tokio::test]
async fn more_than_1000_lines_come_in_parts_and_a_claim_takes_one() {
    let f = finance_app().await;
    let start = at("2026-11-01T00:00:00Z");
    let end = at("2026-11-03T00:00:00Z");
    f.declare(&declaration("regular@example.org", start)).await;
    // 1,001 gifts of £30, one a minute: 1,001 lines.
    sqlx::query(
        r#"INSERT INTO donations
               (id, campaign, frequency, amount, cover_fees_amount, total_amount, currency,
                donor_email, donor_first_name, donor_last_name, status, payment_status,
                payment_status_at, amount_received, received_currency, created_at)
           SELECT gen_random_uuid(), 'kashmir', 'one_off', 3000, 0, 3000, 'gbp',
                  'regular@example.org', 'Tariq', 'Shah', 'succeeded', 'succeeded',
                  $1 + i * interval '1 minute', 3000, 'gbp', $1 + i * interval '1 minute'
           FROM generate_series(1, 1001) AS i"#,
    )
    .bind(start)
    .execute(&f.app.db)
    .await
    .unwrap();
    let (latest,): (Uuid,) =
        sqlx::query_as("SELECT id FROM donations ORDER BY payment_status_at DESC LIMIT 1")
            .fetch_one(&f.app.db)
            .await
            .unwrap();

    let response = f.get(&range(start, end, None), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["schedule-parts"], "2");
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.contains("part=2") && link.ends_with("rel=\"next\""),
        "{link}"
    );
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["rows"].as_array().unwrap().len(), 1000);
    assert_eq!((&first["part"], &first["parts"]), (&json!(1), &json!(2)));
    assert_eq!(first["next_part"], 2);
    assert_eq!(first["total_amount"], 3_000_000);

    let second = f.schedule_part(start, end, Some(2)).await;
    assert_eq!(donation_ids(&second), [latest], "the newest gift is last");
    assert_eq!(second["next_part"], Value::Null);
    let past = f.get(&range(start, end, Some(3)), None).await;
    let problem = assert_problem(past, 400, "bad-parameter").await;
    assert_eq!(problem_fields(&problem), ["part"]);

    // The CSV of a part holds that part: a header and 1,000 lines.
    let csv = f.get(&range(start, end, Some(1)), Some("text/csv")).await;
    let disposition = csv.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.contains(&format!("-to-{}-part-1-", end.date())),
        "a part's download names its part: {disposition}"
    );
    let csv = csv.bytes().await.unwrap();
    assert_eq!(csv::Reader::from_reader(&csv[..]).records().count(), 1000);

    // A claim takes one part; what is left is a schedule of its own.
    let claim = f
        .claim(&json!({"from": text(start), "to": text(end), "part": 1}))
        .await;
    assert_eq!(claim.status(), 201);
    let claim: Value = claim.json().await.unwrap();
    assert_eq!(claim["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(claim["rows"][999]["line"], 1000);
    let rest = f.schedule(start, end).await;
    assert_eq!(donation_ids(&rest), [latest]);
    assert_eq!(rest["parts"], 1);
}

#[tokio::test]
async fn a_refund_after_the_claim_is_an_adjustment_in_the_next_schedule_once() {
    let f = finance_app().await;
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - days(1), now + days(1));
    // Paid through Stripe, and another gift (written as paid) to be disputed.
    let paid = f.give_through_the_api(4000).await;
    f.declare(&declaration("disputed@example.org", now - days(2)))
        .await;
    let disputed = f
        .give(gift(
            "disputed@example.org",
            6000,
            now - time::Duration::hours(1),
        ))
        .await;
    let first = f.claimed(from, to).await;
    let mut claimed = donation_ids(&first);
    claimed.sort();
    let mut both = vec![paid.donation, disputed];
    both.sort();
    assert_eq!(claimed, both);
    assert_eq!(first["adjustments"], json!([]));

    // Claimed, then refunded in part, through Stripe's webhooks; and claimed, then disputed.
    f.refund(&paid, 1000).await;
    sqlx::query("UPDATE donations SET dispute_status = 'needs_response' WHERE id = $1")
        .bind(disputed)
        .execute(&f.app.db)
        .await
        .unwrap();

    let schedule = f.schedule(from, to).await;
    assert_eq!(schedule["rows"], json!([]), "never claimed again");
    let expected = json!([
        {"donation_id": paid.donation, "claim_id": first["id"], "amount": 4000,
         "currency": "gbp", "reason": "refunded"},
        {"donation_id": disputed, "claim_id": first["id"], "amount": 6000,
         "currency": "gbp", "reason": "disputed"},
    ]);
    let mut adjustments = schedule["adjustments"].as_array().unwrap().clone();
    adjustments.sort_by_key(|a| a["amount"].as_i64());
    assert_eq!(Value::from(adjustments), expected);
    assert_eq!(schedule["adjustments_amount"], 10_000);

    // The next claim carries them; the schedule after it no longer shows them.
    let next = f.claimed(from, to).await;
    assert_eq!(next["rows"], json!([]));
    assert_eq!(next["adjustments"].as_array().unwrap().len(), 2);
    assert_eq!(next["adjustments_amount"], 10_000);
    let after = f.schedule(from, to).await;
    assert_eq!(after["adjustments"], json!([]));
    let again = f.claim(&json!({"from": text(from), "to": text(to)})).await;
    assert_problem(again, 409, "nothing-to-claim").await;

    // The claim reads back as it was made.
    let shown = f
        .get(
            &format!(
                "/v1/finance/gift-aid/claims/{}",
                next["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(shown.status(), 200);
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(shown, next);
    assert_eq!(shown["created_by"], "treasurer");
}

#[tokio::test]
async fn claiming_twice_claims_nothing_twice_even_at_the_same_moment() {
    let f = finance_app().await;
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - days(10), now);
    f.declare(&declaration("twice@example.org", now - days(20)))
        .await;
    let mut gifts = Vec::new();
    for i in 0..5 {
        gifts.push(
            f.give(gift("twice@example.org", 3000 + i, now - days(5 - i)))
                .await,
        );
    }
    let body = json!({"from": text(from), "to": text(to)});
    let (a, b) = tokio::join!(f.claim(&body), f.claim(&body));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "one claim, and one refused");
    let made: Value = if a.status() == 201 {
        a.json().await.unwrap()
    } else {
        b.json().await.unwrap()
    };
    assert_eq!(donation_ids(&made), gifts);

    // And later: nothing is left to claim.
    let later = f.claim(&body).await;
    assert_problem(later, 409, "nothing-to-claim").await;
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT donation_id) FROM gift_aid_claimed_donations",
    )
    .fetch_one(&f.app.db)
    .await
    .unwrap();
    assert_eq!((rows, distinct), (5, 5));

    // The database itself refuses a second claim of a donation, whatever the code does.
    let (claim_id, line): (Uuid, i32) = sqlx::query_as(
        "SELECT claim_id, line FROM gift_aid_claimed_donations WHERE donation_id = $1",
    )
    .bind(gifts[0])
    .fetch_one(&f.app.db)
    .await
    .unwrap();
    let twice = sqlx::query(
        "INSERT INTO gift_aid_claimed_donations (donation_id, claim_id, line, amount)
         VALUES ($1, $2, $3, 3000)",
    )
    .bind(gifts[0])
    .bind(claim_id)
    .bind(line)
    .execute(&f.app.db)
    .await
    .unwrap_err();
    assert!(
        twice
            .as_database_error()
            .is_some_and(|e| e.is_unique_violation()),
        "{twice}"
    );
}

/// A schedule with a line of its own, an aggregated line and an adjustment due.
async fn mixed_schedule(f: &Finance) -> (OffsetDateTime, OffsetDateTime, Uuid, Uuid) {
    let from = at("2026-10-01T00:00:00Z");
    let to = at("2026-11-01T00:00:00Z");
    f.declare(&Declaration {
        title: Some("Dr"),
        first_name: "Siobhan",
        last_name: "O'Neill-Murphy",
        house: "Rose Cottage",
        postcode: Some("bt71nn"),
        ..declaration("siobhan@example.org", at("2026-09-01T00:00:00Z"))
    })
    .await;
    f.give(gift(
        "siobhan@example.org",
        25_000,
        at("2026-10-05T09:00:00Z"),
    ))
    .await;
    f.give(gift("siobhan@example.org", 500, at("2026-10-06T09:00:00Z")))
        .await;
    f.give(gift(
        "siobhan@example.org",
        1500,
        at("2026-10-07T09:00:00Z"),
    ))
    .await;
    // Claimed in September, refunded since.
    let refunded = f
        .give(gift(
            "siobhan@example.org",
            7500,
            at("2026-09-15T09:00:00Z"),
        ))
        .await;
    let september = f
        .claimed(at("2026-09-01T00:00:00Z"), at("2026-10-01T00:00:00Z"))
        .await;
    sqlx::query("UPDATE donations SET refunded_amount = 7500, status = 'refunded' WHERE id = $1")
        .bind(refunded)
        .execute(&f.app.db)
        .await
        .unwrap();
    let claim = Uuid::parse_str(september["id"].as_str().unwrap()).unwrap();
    (from, to, refunded, claim)
}

fn expected_mixed_rows() -> Vec<Vec<String>> {
    vec![
        row([
            "Dr",
            "Siobhan",
            "O'Neill Murphy",
            "Rose Cottage",
            "BT7 1NN",
            "",
            "",
            "05/10/26",
            "250.00",
        ]),
        row([
            "",
            "",
            "",
            "",
            "",
            "Gifts under £30 06/10/26-07/10/26",
            "",
            "07/10/26",
            "20.00",
        ]),
    ]
}

#[tokio::test]
async fn the_schedule_as_ods_reads_back_cell_by_cell() {
    let f = finance_app().await;
    let (from, to, refunded, claim) = mixed_schedule(&f).await;

    let response = f.get(&range(from, to, None), Some(ODS)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], ODS);
    assert_download_name(&response, from, to, "ods");
    let bytes = response.bytes().await.unwrap();
    let book = spreadsheet_ods::read_ods_buf(&bytes).expect("the workbook opens");
    assert_eq!(book.num_sheets(), 2);

    let sheet_cells = |n: usize| -> Vec<Vec<String>> {
        let sheet = book.sheet(n);
        let (rows, cols) = sheet.used_grid_size();
        (0..rows)
            .map(|r| {
                (0..cols.max(9))
                    .map(|c| sheet.value(r, c).as_str_or_default().to_owned())
                    .collect()
            })
            .collect()
    };
    let schedule = book.sheet(0);
    assert_eq!(schedule.name(), "Schedule");
    let mut expected = vec![COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    expected.extend(expected_mixed_rows());
    assert_eq!(sheet_cells(0), expected);

    let adjustments = book.sheet(1);
    assert_eq!(adjustments.name(), "Adjustments");
    let pad = |cells: Vec<String>| -> Vec<String> {
        let mut cells = cells;
        cells.resize(9, String::new());
        cells
    };
    assert_eq!(
        sheet_cells(1),
        [
            pad(ADJUSTMENT_COLUMNS.iter().map(|c| c.to_string()).collect()),
            pad(vec![
                refunded.to_string(),
                claim.to_string(),
                "75.00".into(),
                "refunded".into()
            ]),
        ]
    );
}

#[tokio::test]
async fn the_schedule_as_csv_has_exactly_hmrcs_columns() {
    let f = finance_app().await;
    let (from, to, _, _) = mixed_schedule(&f).await;

    let response = f.get(&range(from, to, None), Some("text/csv")).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"),
    );
    assert_download_name(&response, from, to, "csv");
    let bytes = response.bytes().await.unwrap();
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, COLUMNS);
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records, expected_mixed_rows());

    // A claim's own schedule comes the same ways.
    let claim = f.claimed(from, to).await;
    let response = f
        .get(
            &format!(
                "/v1/finance/gift-aid/claims/{}",
                claim["id"].as_str().unwrap()
            ),
            Some("text/csv"),
        )
        .await;
    let bytes = response.bytes().await.unwrap();
    let records: Vec<Vec<String>> = csv::Reader::from_reader(&bytes[..])
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records, expected_mixed_rows());
}

#[tokio::test]
async fn bad_input_is_a_problem_that_names_the_field() {
    let f = finance_app().await;
    let path = |query: &str| format!("/v1/finance/gift-aid/schedule?{query}");
    for (query, field) in [
        ("to=2026-12-01T00:00:00Z", "from"),
        ("from=2026-11-01T00:00:00Z", "to"),
        ("from=2026-11-01&to=2026-12-01T00:00:00Z", "from"),
        ("from=2026-11-01T00:00:00Z&to=next-week", "to"),
        ("from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z", "from"),
        (
            "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&campaign=kashmir",
            "campaign",
        ),
        (
            "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&part=0",
            "part",
        ),
        (
            "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&part=two",
            "part",
        ),
        (
            "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&part=2",
            "part",
        ),
    ] {
        let response = f.get(&path(query), None).await;
        let problem = assert_problem(response, 400, "bad-parameter").await;
        assert_eq!(problem_fields(&problem), [field], "{query}");
    }

    let (from, to) = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
    for (body, fields) in [
        (json!({}), vec!["from", "to"]),
        (json!({"from": "2026-11-01", "to": to}), vec!["from"]),
        (json!({"from": from, "to": 20261201}), vec!["to"]),
        (json!({"from": to, "to": from}), vec!["from"]),
        (
            json!({"from": from, "to": to, "colour": "blue"}),
            vec!["colour"],
        ),
        (json!({"from": from, "to": to, "part": 0}), vec!["part"]),
        (json!({"from": from, "to": to, "part": "1"}), vec!["part"]),
        (json!({"from": from, "to": to, "part": 2}), vec!["part"]),
        (json!(["from", "to"]), vec![""]),
    ] {
        let response = f.claim(&body).await;
        let problem = assert_problem(response, 422, "validation").await;
        assert_eq!(problem_fields(&problem), fields, "{body}");
    }
    let malformed = f
        .app
        .http
        .post(format!("{}/v1/finance/gift-aid/claims", f.app.address))
        .bearer_auth(&f.token)
        .header("content-type", "application/json")
        .body("{\"from\":")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400, "malformed-json").await;

    for id in ["not-a-claim", &Uuid::now_v7().to_string()] {
        let response = f
            .get(&format!("/v1/finance/gift-aid/claims/{id}"), None)
            .await;
        assert_problem(response, 404, "not-found").await;
    }
    let wrong_format = f
        .get(
            &path(&format!("from={from}&to={to}")),
            Some("application/pdf"),
        )
        .await;
    assert_problem(wrong_format, 406, "not-acceptable").await;

    // Without a token, nothing.
    let anonymous = get_with(&f.app, None, &path(&format!("from={from}&to={to}")), &[]).await;
    assert_problem(anonymous, 401, "unauthorized").await;
    let anonymous = f
        .app
        .http
        .post(format!("{}/v1/finance/gift-aid/claims", f.app.address))
        .json(&json!({"from": from, "to": to}))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401, "unauthorized").await;
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM gift_aid_claims")
            .fetch_one(&f.app.db)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn every_gift_aid_read_and_claim_is_audited() {
    let f = finance_app().await;
    let (from, to, _, _) = mixed_schedule(&f).await;
    let before = audit_rows(&f.app).await.len();
    let schedule_path = range(from, to, None);
    f.get(&schedule_path, None).await;
    let claim = f.claimed(from, to).await;
    let id = claim["id"].as_str().unwrap();
    f.get(&format!("/v1/finance/gift-aid/claims/{id}"), Some(ODS))
        .await;

    let log = audit_rows(&f.app).await;
    let new: Vec<(String, String, String, Value, i64)> = log[before..].to_vec();
    assert_eq!(
        new,
        [
            (
                "treasurer".into(),
                "finance".into(),
                "GET /v1/finance/gift-aid/schedule".into(),
                json!({"from": text(from), "to": text(to)}),
                3
            ),
            (
                "treasurer".into(),
                "finance".into(),
                "POST /v1/finance/gift-aid/claims".into(),
                json!({"from": text(from), "to": text(to), "part": 1, "claim": id}),
                3
            ),
            (
                "treasurer".into(),
                "finance".into(),
                "GET /v1/finance/gift-aid/claims/{id}".into(),
                json!({"id": id}),
                3
            ),
        ],
        "2 lines and 1 adjustment each time"
    );
}

#[tokio::test]
async fn declarations_made_before_this_release_become_records_of_their_own() {
    // A database as the release before this one left it: a declaration keyed by its donation.
    let (db_name, url) = fresh_database_url().await;
    let ours = 20261129000003;
    let before = quickdonate::db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| *v < ours)
        .max()
        .unwrap();
    {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        quickdonate::db::MIGRATOR
            .run_to(before, &pool)
            .await
            .unwrap();
        sqlx::raw_sql(
            r#"INSERT INTO campaigns (slug, title, currency, min_amount, max_amount)
                   VALUES ('kashmir', 'Kashmir Campaign', 'gbp', 200, 1000000);
               INSERT INTO donations (id, campaign, frequency, amount, cover_fees_amount,
                                      total_amount, currency, donor_email, donor_first_name,
                                      donor_last_name, status, payment_status,
                                      payment_status_at, amount_received, received_currency,
                                      created_at)
                   VALUES ('0194a2c0-0000-7000-8000-000000000001', 'kashmir', 'one_off', 4000,
                           0, 4000, 'gbp', 'Old.Donor@example.org', 'Olive', 'Hale-Bopp',
                           'succeeded', 'succeeded', '2026-10-10T10:00:00Z', 4000, 'gbp',
                           '2026-10-10T10:00:00Z');
               INSERT INTO gift_aid_declarations (donation_id, title, house_name_or_number,
                                                  postcode, country, declared_at)
                   VALUES ('0194a2c0-0000-7000-8000-000000000001', 'Mrs', '3', 'E1 6AN', 'GB',
                           '2026-10-10T10:00:00Z');"#,
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let app = spawn_app_on(db_name, |s| s.apply_events = false).await;
    let f = finance_on(app).await;

    let (email, first, last, covers_from, donation): (
        String,
        String,
        String,
        OffsetDateTime,
        Uuid,
    ) = sqlx::query_as(
        "SELECT donor_email, first_name, last_name, covers_from, donation_id
             FROM gift_aid_declarations",
    )
    .fetch_one(&f.app.db)
    .await
    .unwrap();
    assert_eq!(
        (email.as_str(), first.as_str(), last.as_str()),
        ("Old.Donor@example.org", "Olive", "Hale-Bopp")
    );
    assert_eq!(covers_from, at("2022-10-10T10:00:00Z"));
    assert_eq!(donation.to_string(), "0194a2c0-0000-7000-8000-000000000001");

    let schedule = f
        .schedule(at("2026-10-01T00:00:00Z"), at("2026-11-01T00:00:00Z"))
        .await;
    assert_eq!(
        cells(&schedule),
        [row([
            "Mrs",
            "Olive",
            "Hale Bopp",
            "3",
            "E1 6AN",
            "",
            "",
            "10/10/26",
            "40.00"
        ])]
    );
}
