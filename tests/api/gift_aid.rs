//! Gift Aid: the declaration on the donation form as the donor's own record, HMRC's schedule
//! of the eligible gifts not yet claimed (JSON, CSV, ODS), its parts of 1,000 lines, claims
//! that never take a donation twice, and adjustments for claimed gifts refunded or disputed
//! since. Most donations here are written straight into the database, paid, on the dates a
//! test needs; the ones that matter end to end are made and paid through the API and Stripe's
//! signed webhooks.

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
    /// A finance token: reads.
    token: String,
    /// An admin's: claims and their moves.
    admin: String,
    stripe: StripeObjects,
}

/// Most gifts here are written straight into the database, in no payout: they are claimed as
/// soon as they succeed (`GIFT_AID_CLAIM_AFTER_PAYOUT=false`); one test keeps the default.
async fn finance_app() -> Finance {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.gift_aid_claim_after_payout = false;
    })
    .await;
    finance_on(app).await
}

async fn finance_on(app: TestApp) -> Finance {
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let admin = token(&app, "trustee", Role::Admin).await;
    let token = token(&app, "treasurer", Role::Finance).await;
    Finance {
        app,
        token,
        admin,
        stripe,
    }
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
            .bearer_auth(&self.admin)
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
                    postcode, country, declared_at, covers_from, cancelled_at, source)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9 - interval '4 years', $10,
                       'later_form')"#,
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
        .bind(gift.dispute.map(|status| match status {
            "warning_needs_response" | "warning_under_review" => "inquiry",
            "warning_closed" => "inquiry_closed",
            other => other,
        }))
        .bind(gift.donor.map(|(first, _)| first))
        .bind(gift.donor.map(|(_, last)| last))
        .execute(&self.app.db)
        .await
        .unwrap();
        if gift.refunded > 0 {
            self.refund_row(id, gift.refunded, gift.refund_status).await;
        }
        if let Some(status) = gift.dispute {
            sqlx::query(
                "INSERT INTO disputes (id, donation_id, amount, currency, status, status_rank)
                 VALUES ($1, $2, $3, 'gbp', $4, 1)",
            )
            .bind(format!("dp_{}", Uuid::new_v4().simple()))
            .bind(id)
            .bind(total)
            .bind(status)
            .execute(&self.app.db)
            .await
            .unwrap();
        }
        id
    }

    /// A refund of `amount` of donation `id` in `status`, straight into the database.
    async fn refund_row(&self, id: Uuid, amount: i64, status: &str) -> String {
        let refund = format!("re_{}", Uuid::new_v4().simple());
        sqlx::query(
            "INSERT INTO refunds (id, donation_id, amount, currency, status, status_rank)
             VALUES ($1, $2, $3, 'gbp', $4, 1)",
        )
        .bind(&refund)
        .bind(id)
        .bind(amount)
        .bind(status)
        .execute(&self.app.db)
        .await
        .unwrap();
        refund
    }

    /// A donation made on the donation form with a Gift Aid declaration, and paid through
    /// Stripe's signed webhooks: its id, PaymentIntent, charge and total.
    async fn give_through_the_api(&self, amount: i64) -> Paid {
        let mut body = donation_body();
        body["amount"] = json!(amount);
        body["cover_fees"] = json!(true);
        body["gift_aid"] = json!({"declared": true, "title": "Ms", "house_name_or_number": "10",
                                  "postcode": "s192bd"});
        self.give_on_the_form(body).await
    }

    /// The donation form's `body`, made and paid through Stripe's signed webhooks.
    async fn give_on_the_form(&self, body: Value) -> Paid {
        let amount = body["amount"].as_i64().unwrap();
        let response = self.app.post_donation("kashmir", &body, None).await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        let donation = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
        let pi = created["payment_intent_id"].as_str().unwrap().to_owned();
        let total = created["total_amount"].as_i64().unwrap();
        assert!(
            total > amount || body["cover_fees"] != json!(true),
            "the donor covers the fee"
        );

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
        let before = self.app.donation_facts(paid.donation).await.refunded_amount;
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
            before + amount,
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
            before + amount
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
    refund_status: &'a str,
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
        refund_status: "succeeded",
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

/// Today in the UK, as HMRC's checks take it.
fn today() -> time::Date {
    quickdonate::timestamps::uk_date(OffsetDateTime::now_utc())
}

/// A fresh database as the release before migration `ours` left it, holding what `sql` writes;
/// its name, for an app to open (and migrate the rest of the way).
async fn database_as_left_before(ours: i64, sql: &'static str) -> String {
    let (db_name, url) = fresh_database_url().await;
    let before = quickdonate::db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| *v < ours)
        .max()
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    quickdonate::db::MIGRATOR
        .run_to(before, &pool)
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
    db_name
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
    assert_eq!(schedule["total"], 5000);
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
    let workbook = f
        .get(
            &range(at("2026-06-01T00:00:00Z"), at("2026-08-01T00:00:00Z"), None),
            Some(ODS),
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());
    assert_eq!(crate::hmrc::cell(&workbook, "D13"), "01/07/26");
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
    // Claimed for what the charity kept: a penny refunded leaves 49.99; a chargeback won, a
    // refund that failed, and a refund of the fee cover alone leave the whole gift.
    let kept = [
        (
            Gift {
                refunded: 1,
                ..eligible
            },
            4999,
        ),
        (
            Gift {
                dispute: Some("won"),
                ..eligible
            },
            5000,
        ),
        (
            Gift {
                dispute: Some("warning_closed"),
                ..eligible
            },
            5000,
        ),
        (
            Gift {
                refunded: 5000,
                refund_status: "failed",
                ..eligible
            },
            5000,
        ),
        (
            Gift {
                cover: 150,
                refunded: 150,
                ..eligible
            },
            5000,
        ),
    ];
    let mut kept_amounts = Vec::new();
    for (gift, amount) in kept {
        expected.push(f.give(gift).await);
        kept_amounts.push(amount);
    }
    let left_out = [
        // Older than the 4 years the declaration reaches back.
        gift("eligible@example.org", 5000, declared - days(4 * 366)),
        // All of it given back.
        Gift {
            refunded: 5000,
            ..eligible
        },
        Gift {
            cover: 150,
            refunded: 5150,
            ..eligible
        },
        Gift {
            dispute: Some("lost"),
            ..eligible
        },
        // Not known yet: a refund pending, a dispute open.
        Gift {
            refunded: 100,
            refund_status: "pending",
            ..eligible
        },
        Gift {
            dispute: Some("needs_response"),
            ..eligible
        },
        Gift {
            dispute: Some("warning_under_review"),
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
    let mut expected_amounts = vec![4000, 4100, 4200, 4300, 4400];
    expected_amounts.extend(kept_amounts);
    assert_eq!(
        amounts, expected_amounts,
        "the gift, never the fee cover, less what was given back"
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
async fn small_gifts_are_aggregated_only_when_asked_in_lines_of_at_most_1000_pounds() {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.gift_aid_claim_after_payout = false;
        s.gift_aid_aggregate_up_to = Some(2000);
    })
    .await;
    let f = finance_on(app).await;
    let day = |d: u8| at(&format!("2026-11-{d:02}T12:00:00Z"));
    f.declare(&declaration("small@example.org", day(1))).await;
    // 50 gifts of £20 make exactly £1,000: one line...
    let mut first_line = Vec::new();
    for _ in 0..50 {
        first_line.push(f.give(gift("small@example.org", 2000, day(2))).await);
    }
    // ...and the next small gift starts another.
    let small = f.give(gift("small@example.org", 1999, day(3))).await;
    // £20.01 is more than GIFT_AID_AGGREGATE_UP_TO: a line of its own, with its donor.
    let over = f.give(gift("small@example.org", 2001, day(4))).await;

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
                "Small gifts 02/11/26",
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
                "Small gifts 03/11/26",
                "",
                "03/11/26",
                "19.99"
            ]),
            row([
                "Mr", "Tariq", "Shah", "7", "M1 1AE", "", "", "04/11/26", "20.01"
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
    assert_eq!(ids(&rows[1]), [small]);
    assert_eq!(ids(&rows[2]), [over]);
    let workbook = f.get(&range(day(1), day(30), None), Some(ODS)).await;
    let workbook = workbook.bytes().await.unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());
    assert_eq!(crate::hmrc::cell(&workbook, "D13"), "02/11/26");

    // Without the setting, the same gifts are lines of their own.
    let plain = finance_app().await;
    plain
        .declare(&declaration("small@example.org", day(1)))
        .await;
    for amount in [2000, 1999, 500] {
        plain.give(gift("small@example.org", amount, day(2))).await;
    }
    let schedule = plain.schedule(day(1), day(30)).await;
    assert_eq!(schedule["rows"].as_array().unwrap().len(), 3);
    assert!(
        cells(&schedule)
            .iter()
            .all(|row| row[5].is_empty() && row[1] == "Tariq"),
        "{schedule}"
    );
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
    assert_eq!(first["total"], 3_000_000);
    assert_eq!(first["gift_aid"], 750_000);

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

    // Each part is a workbook valid alone: its own items from 1, its own box 1.
    for (part, rows, first_item, earliest) in [(1, 1000, "1", "01/11/26"), (2, 1, "1", "01/11/26")]
    {
        let workbook = f.get(&range(start, end, Some(part)), Some(ODS)).await;
        let workbook = workbook.bytes().await.unwrap();
        assert_eq!(
            crate::hmrc::check(&workbook, today()),
            Vec::<String>::new(),
            "part {part}"
        );
        let read = crate::hmrc::rows(&workbook);
        assert_eq!(read.len(), rows, "part {part}");
        assert_eq!(read[0][0], first_item);
        assert_eq!(read[rows - 1][0], rows.to_string());
        assert_eq!(crate::hmrc::cell(&workbook, "D13"), earliest);
    }

    // A claim takes one part; what is left is a schedule of its own.
    let claim = f
        .claim(&json!({"from": text(start), "to": text(end), "part": 1}))
        .await;
    assert_eq!(claim.status(), 201);
    let claim: Value = claim.json().await.unwrap();
    assert_eq!(claim["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(claim["rows"][999]["item"], 1000);
    let rest = f.schedule(start, end).await;
    assert_eq!(donation_ids(&rest), [latest]);
    assert_eq!(rest["parts"], 1);
}

#[tokio::test]
async fn what_is_given_back_after_a_claim_repays_25_percent_of_it_once() {
    let f = finance_app().await;
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - days(1), now + days(1));
    // Paid through Stripe (the donor covered the fee), and three gifts written as paid.
    let paid = f.give_through_the_api(4000).await;
    let cover = paid.total - 4000;
    f.declare(&declaration("disputed@example.org", now - days(2)))
        .await;
    let hour_ago = now - time::Duration::hours(1);
    let disputed = f.give(gift("disputed@example.org", 6000, hour_ago)).await;
    let won = f.give(gift("disputed@example.org", 2000, hour_ago)).await;
    let refund_fails = f.give(gift("disputed@example.org", 3000, hour_ago)).await;
    let first = f.claimed(from, to).await;
    let mut claimed = donation_ids(&first);
    claimed.sort();
    let mut all = vec![paid.donation, disputed, won, refund_fails];
    all.sort();
    assert_eq!(claimed, all);
    assert_eq!(first["adjustments"], json!([]));
    assert_eq!(first["overclaimed_tax"], 0);

    // Claimed, then refunded in part through Stripe's webhooks (the fee cover first); a
    // chargeback opened, one opened and won, a refund pending: nothing is given back yet.
    f.refund(&paid, 1000).await;
    let dispute = |id: Uuid, status: &'static str| {
        let db = f.app.db.clone();
        async move {
            sqlx::query(
                "INSERT INTO disputes (id, donation_id, amount, currency, status, status_rank)
                 VALUES ($1, $2, (SELECT total_amount FROM donations WHERE id = $2), 'gbp', $3,
                         1)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status",
            )
            .bind(format!("dp_{id}"))
            .bind(id)
            .bind(status)
            .execute(&db)
            .await
            .unwrap();
        }
    };
    dispute(disputed, "needs_response").await;
    dispute(won, "won").await;
    let pending = f.refund_row(refund_fails, 3000, "pending").await;
    let given_back = 1000 - cover;
    let refund_adjustment = |schedule: &Value| -> Vec<(Value, Value, Value)> {
        schedule["adjustments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["donation_id"].clone(),
                    a["given_back"].clone(),
                    a["tax"].clone(),
                )
            })
            .collect()
    };
    let schedule = f.schedule(from, to).await;
    assert_eq!(schedule["rows"], json!([]), "never claimed again");
    assert_eq!(
        refund_adjustment(&schedule),
        [(
            json!(paid.donation),
            json!(given_back),
            json!((given_back + 2) / 4)
        )],
        "the part of the gift refunded, never the fee cover; nothing for a dispute open or \
         won, or a refund pending"
    );
    assert_eq!(schedule["adjustments"][0]["cause_kind"], "refund");
    assert_eq!(schedule["adjustments"][0]["claim_id"], first["id"]);

    // The pending refund fails; the chargeback is lost: all of that gift is given back.
    sqlx::query("UPDATE refunds SET status = 'failed' WHERE id = $1")
        .bind(&pending)
        .execute(&f.app.db)
        .await
        .unwrap();
    dispute(disputed, "lost").await;
    let schedule = f.schedule(from, to).await;
    let mut adjustments = refund_adjustment(&schedule);
    adjustments.sort_by_key(|a| a.1.as_i64());
    assert_eq!(
        adjustments,
        [
            (
                json!(paid.donation),
                json!(given_back),
                json!((given_back + 2) / 4)
            ),
            (json!(disputed), json!(6000), json!(1500)),
        ]
    );
    let tax = (given_back + 2) / 4 + 1500;
    assert_eq!(schedule["overclaimed_tax"], tax);

    // The next claim carries them (it needs a line of its own), and the schedule after it no
    // longer shows them.
    let adjustments_wait = f.claim(&json!({"from": text(from), "to": text(to)})).await;
    assert_problem(adjustments_wait, 409, "nothing-to-claim").await;
    f.give(gift("disputed@example.org", 5000, now)).await;
    let next = f.claimed(from, to).await;
    assert_eq!(next["rows"].as_array().unwrap().len(), 1);
    assert_eq!(next["adjustments"].as_array().unwrap().len(), 2);
    assert_eq!(next["overclaimed_tax"], tax);
    let after = f.schedule(from, to).await;
    assert_eq!(after["adjustments"], json!([]));
    assert_eq!(after["overclaimed_tax"], 0);

    // Another refund of the same gift later is one more adjustment, for it alone: all of it
    // gift, the fee cover having gone with the first.
    f.refund(&paid, 2000).await;
    let later = f.schedule(from, to).await;
    assert_eq!(
        refund_adjustment(&later),
        [(json!(paid.donation), json!(2000), json!(500))]
    );

    // The claim reads back as it was made, its workbook's box 2 the tax.
    let path = format!(
        "/v1/finance/gift-aid/claims/{}",
        next["id"].as_str().unwrap()
    );
    let shown = f.get(&path, None).await;
    assert_eq!(shown.status(), 200);
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(shown, next);
    assert_eq!(shown["created_by"], "trustee");
    let workbook = f.get(&path, Some(ODS)).await;
    assert_eq!(
        workbook.headers()["overclaimed-tax"],
        format!("{}.{:02}", tax / 100, tax % 100)
    );
    let workbook = workbook.bytes().await.unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());
    assert_eq!(
        crate::hmrc::cell(&workbook, "D17"),
        format!("{}.{:02}", tax / 100, tax % 100)
    );
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
    f.refund_row(refunded, 7500, "succeeded").await;
    let claim = Uuid::parse_str(september["id"].as_str().unwrap()).unwrap();
    (from, to, refunded, claim)
}

/// The mixed schedule's rows, item number first: every gift its own line, with its donor.
fn expected_mixed_rows() -> Vec<Vec<String>> {
    let donor = [
        "Dr",
        "Siobhan",
        "O'Neill Murphy",
        "Rose Cottage",
        "BT7 1NN",
        "",
        "",
    ];
    [
        ("1", "05/10/26", "250.00"),
        ("2", "06/10/26", "5.00"),
        ("3", "07/10/26", "15.00"),
    ]
    .into_iter()
    .map(|(item, date, amount)| {
        let mut cells = vec![item.to_owned()];
        cells.extend(donor.iter().map(|c| c.to_string()));
        cells.extend([date.to_owned(), amount.to_owned()]);
        cells
    })
    .collect()
}

#[tokio::test]
async fn the_schedule_as_ods_is_hmrcs_own_workbook_and_passes_hmrcs_checks() {
    let f = finance_app().await;
    let (from, to, refunded, claim) = mixed_schedule(&f).await;

    let response = f.get(&range(from, to, None), Some(ODS)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], ODS);
    assert_eq!(response.headers()["earliest-donation-date"], "05/10/26");
    assert_eq!(response.headers()["overclaimed-tax"], "18.75");
    assert_download_name(&response, from, to, "ods");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(crate::hmrc::check(&bytes, today()), Vec::<String>::new());

    // One sheet, HMRC's; box 1 the earliest gift; box 2 the tax on the refunded gift claimed
    // in September (25% of 75.00); the rows from row 25.
    let book: calamine::Ods<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).unwrap();
    use calamine::Reader;
    assert_eq!(book.sheet_names(), ["R68GAD_V1_00_0_EN"]);
    assert_eq!(crate::hmrc::cell(&bytes, "D13"), "05/10/26");
    assert_eq!(crate::hmrc::cell(&bytes, "D17"), "18.75");
    assert_eq!(crate::hmrc::cell(&bytes, "B25"), "1");
    let rows: Vec<Vec<String>> = crate::hmrc::rows(&bytes)
        .into_iter()
        .map(|row| row.to_vec())
        .collect();
    assert_eq!(rows, expected_mixed_rows());

    // The JSON says the same figures.
    let schedule = f.schedule(from, to).await;
    assert_eq!(schedule["earliest_donation_date"], "2026-10-05");
    assert_eq!(schedule["overclaimed_tax"], 1875);
    assert_eq!(schedule["total"], 27_000);
    assert_eq!(schedule["gift_aid"], 6750);
    assert_eq!(
        schedule["adjustments"],
        json!([{"donation_id": refunded, "claim_id": claim, "cause_kind": "refund",
                "cause": schedule["adjustments"][0]["cause"], "given_back": 7500, "tax": 1875,
                "currency": "gbp"}])
    );
}

#[tokio::test]
async fn the_schedule_as_csv_has_hmrcs_columns() {
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
    assert_eq!(response.headers()["earliest-donation-date"], "05/10/26");
    assert_eq!(response.headers()["overclaimed-tax"], "18.75");
    assert_download_name(&response, from, to, "csv");
    let bytes = response.bytes().await.unwrap();
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let mut expected_header = vec!["Item".to_owned()];
    expected_header.extend(COLUMNS.iter().map(|c| c.to_string()));
    assert_eq!(header, expected_header);
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records, expected_mixed_rows());

    // A claim's own schedule comes the same ways, its workbook passing HMRC's checks.
    let claim = f.claimed(from, to).await;
    let path = format!(
        "/v1/finance/gift-aid/claims/{}",
        claim["id"].as_str().unwrap()
    );
    let response = f.get(&path, Some("text/csv")).await;
    let bytes = response.bytes().await.unwrap();
    let records: Vec<Vec<String>> = csv::Reader::from_reader(&bytes[..])
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records, expected_mixed_rows());
    let workbook = f.get(&path, Some(ODS)).await.bytes().await.unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());
    assert_eq!(crate::hmrc::cell(&workbook, "D17"), "18.75");
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
        .bearer_auth(&f.admin)
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
    let workbook = f
        .get(&format!("/v1/finance/gift-aid/claims/{id}"), Some(ODS))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());

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
                4
            ),
            (
                "trustee".into(),
                "admin".into(),
                "POST /v1/finance/gift-aid/claims".into(),
                json!({"from": text(from), "to": text(to), "part": 1, "claim": id}),
                4
            ),
            (
                "treasurer".into(),
                "finance".into(),
                "GET /v1/finance/gift-aid/claims/{id}".into(),
                json!({"id": id}),
                4
            ),
        ],
        "3 lines and 1 adjustment each time"
    );
}

#[tokio::test]
async fn declarations_made_before_this_release_become_records_of_their_own() {
    // A database as the release before this one left it: a declaration keyed by its donation.
    let db_name = database_as_left_before(
        20261129000003,
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
    .await;
    let app = spawn_app_on(db_name, |s| {
        s.apply_events = false;
        s.gift_aid_claim_after_payout = false;
    })
    .await;
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

impl Finance {
    /// `PATCH`es claim `id` with `body`, as the admin.
    async fn move_claim(&self, id: &Value, body: Value) -> Response {
        self.app
            .http
            .patch(format!(
                "{}/v1/finance/gift-aid/claims/{}",
                self.app.address,
                id.as_str().unwrap()
            ))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn claim_with_key(&self, body: &Value, key: &str) -> Response {
        self.app
            .http
            .post(format!("{}/v1/finance/gift-aid/claims", self.app.address))
            .bearer_auth(&self.admin)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn only_an_admin_claims_and_a_retried_claim_request_answers_the_same_claim() {
    let f = finance_app().await;
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - days(10), now);
    f.declare(&declaration("retry@example.org", now - days(20)))
        .await;
    let gift_id = f.give(gift("retry@example.org", 5000, now - days(2))).await;
    let body = json!({"from": text(from), "to": text(to)});

    // A finance token reads, but may not claim.
    let refused = f
        .app
        .http
        .post(format!("{}/v1/finance/gift-aid/claims", f.app.address))
        .bearer_auth(&f.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(refused, 403, "forbidden").await;

    // The answer is lost; the same request with the same key answers the same claim.
    let first = f.claim_with_key(&body, "claim-2026-12").await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "prepared");
    assert_eq!(donation_ids(&first), [gift_id]);
    assert_eq!(first["total"], 5000);
    assert_eq!(first["gift_aid"], 1250);
    let again = f.claim_with_key(&body, "claim-2026-12").await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    // The key with another request is refused, and nothing is claimed.
    let other = json!({"from": text(from - days(1)), "to": text(to)});
    let reused = f.claim_with_key(&other, "claim-2026-12").await;
    assert_problem(reused, 422, "idempotency-key-reused").await;
    let (claims,): (i64,) = sqlx::query_as("SELECT count(*) FROM gift_aid_claims")
        .fetch_one(&f.app.db)
        .await
        .unwrap();
    assert_eq!(claims, 1);

    // The claims list shows it.
    let list: Value = f
        .get("/v1/finance/gift-aid/claims", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], first["id"]);
    assert_eq!(list["data"][0]["status"], "prepared");
    assert_eq!(list["data"][0]["rows"], 1);
}

#[tokio::test]
async fn a_claim_moves_through_its_life_and_a_rejected_one_releases_its_donations() {
    let f = finance_app().await;
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - days(10), now);
    f.declare(&declaration("life@example.org", now - days(20)))
        .await;
    let gift_id = f.give(gift("life@example.org", 8000, now - days(2))).await;
    let claim = f.claimed(from, to).await;
    let id = &claim["id"];

    // Paid before it was submitted: refused, and nothing changes.
    let paid = json!({"status": "paid", "amount_paid": 2000, "paid_on": "2026-01-15"});
    let early = f.move_claim(id, paid.clone()).await;
    let problem = assert_problem(early, 409, "claim-move-refused").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("prepared claim cannot become paid"),
        "{problem}"
    );
    // A move missing what HMRC said names the field.
    let bare = f.move_claim(id, json!({"status": "submitted"})).await;
    let problem = assert_problem(bare, 422, "validation").await;
    assert_eq!(problem_fields(&problem), ["hmrc_reference"]);
    let long = json!({"status": "submitted", "hmrc_reference": "C".repeat(65)});
    let problem = assert_problem(f.move_claim(id, long).await, 422, "validation").await;
    assert_eq!(problem_fields(&problem), ["hmrc_reference"]);

    let submitted = f
        .move_claim(
            id,
            json!({"status": "submitted", "hmrc_reference": "CH123456"}),
        )
        .await;
    assert_eq!(submitted.status(), 200);
    let submitted: Value = submitted.json().await.unwrap();
    assert_eq!(submitted["status"], "submitted");
    assert_eq!(submitted["hmrc_reference"], "CH123456");
    // The same move again (a retried request) changes nothing.
    let retried = f
        .move_claim(
            id,
            json!({"status": "submitted", "hmrc_reference": "CH123456"}),
        )
        .await;
    assert_eq!(retried.status(), 200);
    // Void only before submission.
    let void = f.move_claim(id, json!({"status": "void"})).await;
    assert_problem(void, 409, "claim-move-refused").await;

    // HMRC rejects it: the gift is free for the next claim, which takes it again.
    let rejected = f
        .move_claim(
            id,
            json!({"status": "rejected", "reason": "Postcode not found"}),
        )
        .await;
    assert_eq!(rejected.status(), 200);
    let rejected: Value = rejected.json().await.unwrap();
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["rejection_reason"], "Postcode not found");
    let schedule = f.schedule(from, to).await;
    assert_eq!(donation_ids(&schedule), [gift_id]);
    let second = f.claimed(from, to).await;
    assert_eq!(donation_ids(&second), [gift_id]);
    // Nothing moves after rejected.
    let after = f
        .move_claim(
            id,
            json!({"status": "submitted", "hmrc_reference": "CH999"}),
        )
        .await;
    assert_problem(after, 409, "claim-move-refused").await;

    // The second goes through to paid; nothing moves after paid.
    let second_id = &second["id"];
    let submitted = f
        .move_claim(
            second_id,
            json!({"status": "submitted", "hmrc_reference": "CH777"}),
        )
        .await;
    assert_eq!(submitted.status(), 200);
    let paid = f.move_claim(second_id, paid).await;
    assert_eq!(paid.status(), 200);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(
        (&paid["status"], &paid["amount_paid"], &paid["paid_on"]),
        (&json!("paid"), &json!(2000), &json!("2026-01-15"))
    );
    let late = f
        .move_claim(second_id, json!({"status": "rejected", "reason": "late"}))
        .await;
    assert_problem(late, 409, "claim-move-refused").await;

    // A prepared claim made void releases its gifts too.
    let third_gift = f.give(gift("life@example.org", 3000, now - days(1))).await;
    let third = f.claimed(from, to).await;
    assert_eq!(donation_ids(&third), [third_gift]);
    let void = f.move_claim(&third["id"], json!({"status": "void"})).await;
    assert_eq!(void.status(), 200);
    assert_eq!(donation_ids(&f.schedule(from, to).await), [third_gift]);

    // Each move is audited, by the admin who made it.
    let log = audit_rows(&f.app).await;
    let moves: Vec<&(String, String, String, Value, i64)> = log
        .iter()
        .filter(|row| row.2 == "PATCH /v1/finance/gift-aid/claims/{id}")
        .collect();
    assert_eq!(moves.len(), 6, "{moves:?}");
    assert!(moves.iter().all(|row| row.0 == "trustee"));
    assert_eq!(
        moves[0].3,
        json!({"id": id, "from": "prepared", "status": "submitted"})
    );
}

#[tokio::test]
async fn gifts_past_hmrcs_4_year_limit_are_never_claimed_and_those_near_it_are_listed() {
    let f = finance_app().await;
    let today = today();
    // The accounting year ends on 31 March. The next 31 March (today, or later) is the last
    // day to claim the gifts of the period that ended 4 years before it.
    let march_31 =
        |year: i32| time::Date::from_calendar_date(year, time::Month::March, 31).unwrap();
    let year = if today <= march_31(today.year()) {
        today.year()
    } else {
        today.year() + 1
    };
    let last_period_end = march_31(year - 4);
    let noon = |date: time::Date| date.with_hms(12, 0, 0).unwrap().assume_utc();
    f.declare(&Declaration {
        declared_at: noon(last_period_end) - days(400),
        ..declaration("old@example.org", noon(last_period_end) - days(400))
    })
    .await;
    sqlx::query("UPDATE gift_aid_declarations SET covers_from = '2000-01-01'")
        .execute(&f.app.db)
        .await
        .unwrap();
    // In the period ended `last_period_end` (4 years or less ago): claimable until its 4th
    // anniversary.
    let in_time = f
        .give(gift("old@example.org", 4000, noon(last_period_end)))
        .await;
    // A period earlier: past the limit.
    let too_old = f
        .give(gift(
            "old@example.org",
            5000,
            noon(last_period_end - days(366)),
        ))
        .await;
    // Three periods earlier: lost more than two years ago, no longer listed.
    let lost_long_ago = f
        .give(gift(
            "old@example.org",
            6000,
            noon(last_period_end - days(3 * 366)),
        ))
        .await;
    let (from, to) = (noon(last_period_end) - days(800), OffsetDateTime::now_utc());
    let schedule = f.schedule(from, to).await;
    let deadline = march_31(year);
    assert!(deadline >= today);
    assert_eq!(donation_ids(&schedule), [in_time], "{schedule}");
    assert_eq!(schedule["expired"], 1);

    let expiring: Value = f
        .get("/v1/finance/gift-aid/expiring?within=400d", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(expiring["expiring"][0]["donation_id"], json!(in_time));
    assert_eq!(expiring["expiring"][0]["claim_by"], deadline.to_string());
    assert_eq!(expiring["expired"][0]["donation_id"], json!(too_old));
    assert_eq!(
        expiring["expired"].as_array().unwrap().len(),
        1,
        "{lost_long_ago} is listed: {expiring}"
    );
    // A window that ends before the deadline lists nothing as expiring.
    let days_left = (deadline - today).whole_days();
    let narrow: Value = f
        .get(
            &format!(
                "/v1/finance/gift-aid/expiring?within={}d",
                days_left.max(1) - 1
            ),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    if days_left >= 1 {
        assert_eq!(narrow["expiring"], json!([]), "{narrow}");
    }
    let claim = f.claimed(from, to).await;
    assert_eq!(donation_ids(&claim), [in_time]);
}

#[tokio::test]
async fn every_donor_the_form_accepts_is_a_row_hmrc_accepts() {
    let f = finance_app().await;
    let start = OffsetDateTime::now_utc() - days(1);
    // (title, first name, last name, house, postcode, country) as the donor typed them, and
    // the row HMRC gets.
    let donors: [([Option<&str>; 6], [&str; 9]); 8] = [
        (
            [
                Some("Lieutenant Colonel"),
                Some("Zoë"),
                Some("Smith-Jones"),
                Some("10"),
                Some("sw1a1aa"),
                None,
            ],
            [
                "",
                "Zoë",
                "Smith Jones",
                "10",
                "SW1A 1AA",
                "",
                "",
                "",
                "50.00",
            ],
        ),
        (
            [
                Some("Dr."),
                Some("Łukasz"),
                Some("Nowak"),
                Some("Flat 2"),
                Some("m1 1ae"),
                None,
            ],
            [
                "Dr", "Lukasz", "Nowak", "Flat 2", "M1 1AE", "", "", "", "50.00",
            ],
        ),
        (
            [
                Some("M."),
                Some("Renée"),
                Some("O’Brien"),
                Some("Rose Cottage"),
                Some("BT71NN"),
                None,
            ],
            [
                "",
                "Renée",
                "O'Brien",
                "Rose Cottage",
                "BT7 1NN",
                "",
                "",
                "",
                "50.00",
            ],
        ),
        (
            [
                Some("Rt Hon"),
                Some(&"A".repeat(35)),
                Some("Khan"),
                Some("3"),
                Some("E1 6AN"),
                None,
            ],
            [
                "",
                &"A".repeat(35),
                "Khan",
                "3",
                "E1 6AN",
                "",
                "",
                "",
                "50.00",
            ],
        ),
        (
            [
                None,
                Some("Amina"),
                Some(&"B".repeat(36)),
                Some("3"),
                Some("E1 6AN"),
                None,
            ],
            [
                "",
                "Amina",
                &"B".repeat(35),
                "3",
                "E1 6AN",
                "",
                "",
                "",
                "50.00",
            ],
        ),
        (
            [
                Some("Mme"),
                Some("Claire"),
                Some("Dubois"),
                Some("12 Rue de Rivoli"),
                Some("75001"),
                Some("France"),
            ],
            [
                "Mme",
                "Claire",
                "Dubois",
                "12 Rue de Rivoli, 75001, France",
                "X",
                "",
                "",
                "",
                "50.00",
            ],
        ),
        (
            [
                Some("Prof"),
                Some("Fatima"),
                Some("Al-Sayed"),
                Some("Apartment 4, Al Wasl Road, Dubai"),
                None,
                Some("United Arab Emirates"),
            ],
            [
                "Prof",
                "Fatima",
                "Al Sayed",
                "Apartment 4, Al Wasl Road, Dubai",
                "X",
                "",
                "",
                "",
                "50.00",
            ],
        ),
        (
            [
                Some("Mrs"),
                Some("Mary-Jane"),
                Some("Watson"),
                Some("  221b  "),
                Some("nw16xe"),
                None,
            ],
            [
                "Mrs",
                "Mary-Jane",
                "Watson",
                "221b",
                "NW1 6XE",
                "",
                "",
                "",
                "50.00",
            ],
        ),
    ];
    let mut expected = Vec::new();
    for (i, ([title, first, last, house, postcode, country], row)) in donors.iter().enumerate() {
        let mut gift_aid = json!({"declared": true, "house_name_or_number": house});
        if let Some(title) = title {
            gift_aid["title"] = json!(title);
        }
        if let Some(postcode) = postcode {
            gift_aid["postcode"] = json!(postcode);
        }
        if let Some(country) = country {
            gift_aid["country"] = json!(country);
        }
        let body = json!({
            "amount": 5000,
            "frequency": "one_off",
            "donor": {"email": format!("donor{i}@example.org"), "first_name": first,
                      "last_name": last},
            "gift_aid": gift_aid,
        });
        f.give_on_the_form(body).await;
        expected.push(row.map(String::from).to_vec());
    }
    let now = OffsetDateTime::now_utc();
    let schedule = f.schedule(start, now + days(1)).await;
    let date = quickdonate::gift_aid::schedule::date(today());
    let mut got = cells(&schedule);
    for row in &mut got {
        assert_eq!(row[7], date);
        row[7] = String::new();
    }
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    let workbook = f.get(&range(start, now + days(1), None), Some(ODS)).await;
    let workbook = workbook.bytes().await.unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());
    assert_eq!(crate::hmrc::rows(&workbook).len(), donors.len());

    // What HMRC could not read is refused at the form, the field named, nothing made.
    for (first, last, postcode, fields) in [
        ("محمد", "Khan", "E1 6AN", vec!["donor.first_name"]),
        ("Amina", "خان", "E1 6AN", vec!["donor.last_name"]),
        (
            "Алексей",
            "Иванов",
            "E1 6AN",
            vec!["donor.first_name", "donor.last_name"],
        ),
        ("Amina", "Khan", "AI1 1AA", vec!["gift_aid.postcode"]),
        ("Amina", "Khan", "12345", vec!["gift_aid.postcode"]),
    ] {
        let body = json!({
            "amount": 5000,
            "frequency": "one_off",
            "donor": {"email": "refused@example.org", "first_name": first, "last_name": last},
            "gift_aid": {"declared": true, "house_name_or_number": "3", "postcode": postcode},
        });
        let response = f.app.post_donation("kashmir", &body, None).await;
        let problem = assert_problem(response, 422, "validation").await;
        assert_eq!(
            problem_fields(&problem),
            fields,
            "{first} {last} {postcode}"
        );
        if fields[0].starts_with("donor.") {
            assert!(
                problem["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("as on your tax records"),
                "{problem}"
            );
        }
    }
    // Without Gift Aid, a name in any script is a donor's name.
    let mut body = donation_body();
    body["donor"]["first_name"] = json!("محمد");
    body["donor"]["email"] = json!("script@example.org");
    let response = f.app.post_donation("kashmir", &body, None).await;
    assert_eq!(response.status(), 201);
    let (declared,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM gift_aid_declarations WHERE donor_email = 'refused@example.org'",
    )
    .fetch_one(&f.app.db)
    .await
    .unwrap();
    assert_eq!(declared, 0);
}

#[tokio::test]
async fn by_default_only_gifts_paid_out_to_the_bank_are_claimed() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    let f = finance_on(app).await;
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - days(10), now);
    f.declare(&declaration("bank@example.org", now - days(20)))
        .await;
    let paid_out = f.give(gift("bank@example.org", 4000, now - days(5))).await;
    let waiting = f.give(gift("bank@example.org", 4500, now - days(4))).await;
    let in_failed_payout = f.give(gift("bank@example.org", 4600, now - days(3))).await;
    assert_eq!(
        donation_ids(&f.schedule(from, to).await),
        Vec::<Uuid>::new()
    );

    // Stripe pays out the first to the bank; the third's payout fails.
    for (donation, payout, status) in [
        (paid_out, "po_paid", "paid"),
        (in_failed_payout, "po_failed", "failed"),
    ] {
        let txn = format!("txn_{donation}");
        sqlx::query("UPDATE donations SET balance_transaction_id = $2 WHERE id = $1")
            .bind(donation)
            .bind(&txn)
            .execute(&f.app.db)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO payouts (id, amount, currency, status, status_rank, status_at, created)
             VALUES ($1, 4000, 'gbp', $2, 3, now(), now())",
        )
        .bind(payout)
        .bind(status)
        .execute(&f.app.db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO payout_transactions (payout_id, balance_transaction_id, type, amount,
                                              fee, net, currency)
             VALUES ($1, $2, 'charge', 4000, 0, 4000, 'gbp')",
        )
        .bind(payout)
        .bind(&txn)
        .execute(&f.app.db)
        .await
        .unwrap();
    }
    let schedule = f.schedule(from, to).await;
    assert_eq!(donation_ids(&schedule), [paid_out]);
    assert!(!donation_ids(&schedule).contains(&waiting));
}

#[tokio::test]
async fn a_declaration_keeps_its_words_ends_when_cancelled_and_a_donor_can_see_their_year() {
    let f = finance_app().await;
    let paid = f.give_through_the_api(5000).await;
    // The words the donor agreed to, with the charity's name, and where they were made.
    let (id, version, wording, source): (Uuid, String, String, String) = sqlx::query_as(
        "SELECT id, wording_version, wording, source FROM gift_aid_declarations
         WHERE donation_id = $1",
    )
    .bind(paid.donation)
    .fetch_one(&f.app.db)
    .await
    .unwrap();
    assert_eq!(version, quickdonate::gift_aid::DECLARATION_VERSION);
    assert_eq!(
        wording,
        quickdonate::gift_aid::declaration("Example Charity")
    );
    assert_eq!(source, "donation_form");

    // The donor cancels from tomorrow: a gift after it is not claimed; this one still is.
    let now = OffsetDateTime::now_utc();
    let tomorrow = now + days(1);
    let cancel = |token: String, body: Value| {
        let f = &f;
        async move {
            f.app
                .http
                .post(format!(
                    "{}/v1/finance/gift-aid/declarations/{id}/cancel",
                    f.app.address
                ))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let refused = cancel(f.token.clone(), json!({"from": text(tomorrow)})).await;
    assert_problem(refused, 403, "forbidden").await;
    let too_early = cancel(f.admin.clone(), json!({"from": text(now - days(30))})).await;
    let problem = assert_problem(too_early, 422, "validation").await;
    assert_eq!(problem_fields(&problem), ["from"]);
    let cancelled = cancel(f.admin.clone(), json!({"from": text(tomorrow)})).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["id"], json!(id));
    assert_eq!(cancelled["wording_version"], json!(version));
    let at: OffsetDateTime =
        OffsetDateTime::parse(cancelled["cancelled_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(at.unix_timestamp(), tomorrow.unix_timestamp());
    let after = f
        .give(Gift {
            donor: Some(("Amina", "Khan")),
            ..gift("amina@example.org", 3000, tomorrow + days(1))
        })
        .await;
    let schedule = f.schedule(now - days(1), now + days(5)).await;
    assert_eq!(donation_ids(&schedule), [paid.donation]);
    assert!(!donation_ids(&schedule).contains(&after));
    let log = audit_rows(&f.app).await;
    assert!(log.iter().any(
        |row| row.2 == "POST /v1/finance/gift-aid/declarations/{id}/cancel" && row.0 == "trustee"
    ));

    // The donor asks what was claimed on their gifts this tax year.
    let claim = f.claimed(now - days(1), now + days(1)).await;
    let year = quickdonate::gift_aid::periods::tax_year(today());
    let tax_year = format!("{year}-{:02}", (year + 1) % 100);
    let donors: Value = f
        .get(
            &format!("/v1/finance/gift-aid/donors?tax_year={tax_year}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donors["tax_year"], tax_year);
    let amina = &donors["donors"][0];
    assert_eq!(amina["email"], "amina@example.org");
    assert_eq!(amina["gifts"][0]["donation_id"], json!(paid.donation));
    assert_eq!(
        amina["gifts"][0]["amount"], 5000,
        "the gift, never the fee cover"
    );
    assert_eq!(amina["gifts"][0]["claim_id"], claim["id"]);
    assert_eq!(amina["gifts"][0]["claim_status"], "prepared");
    assert_eq!(amina["total"], 5000);
    assert_eq!(amina["gift_aid"], 1250);
    assert_eq!(donors["donors"].as_array().unwrap().len(), 1, "{donors}");
    let csv = f
        .get(
            &format!("/v1/finance/gift-aid/donors?tax_year={tax_year}"),
            Some("text/csv"),
        )
        .await
        .bytes()
        .await
        .unwrap();
    let records: Vec<csv::StringRecord> = csv::Reader::from_reader(&csv[..])
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0][3], paid.donation.to_string());
    assert_eq!(&records[0][5], "50.00");
    let bad = f
        .get("/v1/finance/gift-aid/donors?tax_year=2026", None)
        .await;
    assert_problem(bad, 400, "bad-parameter").await;
}

#[tokio::test]
async fn a_declaration_made_on_a_later_form_is_recorded_by_hmrcs_rules_and_covers_the_gifts() {
    let f = finance_app().await;
    let now = OffsetDateTime::now_utc();
    // A gift made without Gift Aid; the donor fills in a form a week later.
    let gift_id = f
        .give(Gift {
            donor: Some(("Łukasz", "Nowak-Kowalski")),
            ..gift("lukasz@example.org", 6000, now - days(7))
        })
        .await;
    let post = |token: String, body: Value| {
        let f = &f;
        async move {
            f.app
                .http
                .post(format!(
                    "{}/v1/finance/gift-aid/declarations",
                    f.app.address
                ))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let form = json!({
        "email": "lukasz@example.org", "title": "Dr.", "first_name": "Łukasz",
        "last_name": "Nowak-Kowalski", "house_name_or_number": "4", "postcode": "ec1a1bb",
        "wording_version": "paper-2026-1",
        "wording": quickdonate::gift_aid::declaration("Example Charity"),
    });
    assert_problem(post(f.token.clone(), form.clone()).await, 403, "forbidden").await;
    // What HMRC could not read is refused, each field named.
    let mut bad = form.clone();
    bad["first_name"] = json!("Лукаш");
    bad["postcode"] = json!("nowhere");
    bad["wording"] = json!("");
    let problem = assert_problem(post(f.admin.clone(), bad).await, 422, "validation").await;
    assert_eq!(
        problem_fields(&problem),
        ["first_name", "postcode", "wording"]
    );

    let made = post(f.admin.clone(), form).await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    assert_eq!(made["source"], "later_form");
    assert_eq!(made["wording_version"], "paper-2026-1");
    assert_eq!(made["donation_id"], Value::Null);
    // It covers the gift of a week ago (4 years back), written as HMRC reads it.
    let schedule = f.schedule(now - days(10), now).await;
    assert_eq!(donation_ids(&schedule), [gift_id]);
    assert_eq!(
        cells(&schedule)[0][..5],
        ["Dr", "Lukasz", "Nowak Kowalski", "4", "EC1A 1BB"].map(String::from)
    );
    let workbook = f
        .get(&range(now - days(10), now, None), Some(ODS))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());
    let log = audit_rows(&f.app).await;
    assert!(
        log.iter()
            .any(|row| row.2 == "POST /v1/finance/gift-aid/declarations" && row.0 == "trustee")
    );
}

#[tokio::test]
async fn claims_and_adjustments_made_before_this_release_keep_their_meaning() {
    // A database as the release before claims had a life left it: two claims, the second
    // carrying an adjustment of the whole gift the first claimed (as adjustments were then).
    let db_name = database_as_left_before(
        20261207000006,
        r#"INSERT INTO campaigns (slug, title, currency, min_amount, max_amount)
                   VALUES ('kashmir', 'Kashmir Campaign', 'gbp', 200, 1000000);
               INSERT INTO donations (id, campaign, frequency, amount, cover_fees_amount,
                                      total_amount, currency, donor_email, donor_first_name,
                                      donor_last_name, status, payment_status,
                                      payment_status_at, amount_received, received_currency,
                                      refunded_amount, created_at)
                   VALUES ('0194a2c0-0000-7000-8000-000000000002', 'kashmir', 'one_off', 6000,
                           0, 6000, 'gbp', 'old@example.org', 'Olive', 'Hale', 'refunded',
                           'succeeded', '2026-10-10T10:00:00Z', 6000, 'gbp', 6000,
                           '2026-10-10T10:00:00Z'),
                          ('0194a2c0-0000-7000-8000-000000000003', 'kashmir', 'one_off', 4000,
                           0, 4000, 'gbp', 'old@example.org', 'Olive', 'Hale', 'succeeded',
                           'succeeded', '2026-10-20T10:00:00Z', 4000, 'gbp', 0,
                           '2026-10-20T10:00:00Z');
               INSERT INTO gift_aid_claims (id, created_by, range_from, range_to, part)
                   VALUES ('0194a2c0-0000-7000-8000-0000000000c1', 'treasurer',
                           '2026-10-01T00:00:00Z', '2026-10-15T00:00:00Z', 1),
                          ('0194a2c0-0000-7000-8000-0000000000c2', 'treasurer',
                           '2026-10-15T00:00:00Z', '2026-11-01T00:00:00Z', 1);
               INSERT INTO gift_aid_claim_lines (claim_id, line, title, first_name, last_name,
                                                 house_name_or_number, postcode,
                                                 aggregated_donations, sponsored_event,
                                                 donation_date, amount)
                   VALUES ('0194a2c0-0000-7000-8000-0000000000c1', 1, 'Mrs', 'Olive', 'Hale',
                           '3', 'E1 6AN', '', '', '2026-10-10', 6000),
                          ('0194a2c0-0000-7000-8000-0000000000c2', 1, 'Mrs', 'Olive', 'Hale',
                           '3', 'E1 6AN', '', '', '2026-10-20', 4000);
               INSERT INTO gift_aid_claimed_donations (donation_id, claim_id, line, amount)
                   VALUES ('0194a2c0-0000-7000-8000-000000000002',
                           '0194a2c0-0000-7000-8000-0000000000c1', 1, 6000),
                          ('0194a2c0-0000-7000-8000-000000000003',
                           '0194a2c0-0000-7000-8000-0000000000c2', 1, 4000);
               INSERT INTO gift_aid_adjustments (donation_id, claim_id, amount, reason)
                   VALUES ('0194a2c0-0000-7000-8000-000000000002',
                           '0194a2c0-0000-7000-8000-0000000000c2', 6000, 'refunded');"#,
    )
    .await;
    let app = spawn_app_on(db_name, |s| {
        s.apply_events = false;
        s.gift_aid_claim_after_payout = false;
    })
    .await;
    let f = finance_on(app).await;

    // Both claims stand, prepared; the adjustment is the tax on what it repaid, its cause kept.
    let second: Value = f
        .get(
            "/v1/finance/gift-aid/claims/0194a2c0-0000-7000-8000-0000000000c2",
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["status"], "prepared");
    assert_eq!(second["earliest_donation_date"], "2026-10-20");
    assert_eq!(second["overclaimed_tax"], 1500, "{second}");
    assert_eq!(
        second["adjustments"],
        json!([{"donation_id": "0194a2c0-0000-7000-8000-000000000002",
                "claim_id": "0194a2c0-0000-7000-8000-0000000000c1",
                "cause": "before:0194a2c0-0000-7000-8000-000000000002", "cause_kind": "before",
                "given_back": 6000, "tax": 1500, "currency": "gbp"}])
    );
    let list: Value = f
        .get("/v1/finance/gift-aid/claims", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    // Neither gift is claimed again; the adjustment is not made twice.
    let schedule = f
        .schedule(at("2026-10-01T00:00:00Z"), at("2026-11-01T00:00:00Z"))
        .await;
    assert_eq!(schedule["rows"], json!([]));
    assert_eq!(schedule["adjustments"], json!([]));
    let workbook = f
        .get(
            "/v1/finance/gift-aid/claims/0194a2c0-0000-7000-8000-0000000000c2",
            Some(ODS),
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today()), Vec::<String>::new());
    assert_eq!(crate::hmrc::cell(&workbook, "D17"), "15.00");
}
