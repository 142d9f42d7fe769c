//! Declarations after they are made: cancelled from a day (later gifts are not claimed; gifts
//! before it still are, and claims made stand), and a donor's Gift Aid gifts in a tax year,
//! for a donor who asks what was claimed on their gifts.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{PgExecutor, PgPool};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::{CURRENCY, periods, tax_on};
use crate::operators::access::Caller;
use crate::operators::audit;
use crate::timestamps::rfc3339;

/// A declaration as the finance API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = GiftAidDeclaration)]
pub struct Declaration {
    pub id: Uuid,
    /// The donation it was made with, if on the donation form.
    pub donation_id: Option<Uuid>,
    /// `donation_form` or `later_form`.
    pub source: String,
    /// The wording's version and its words, as the donor saw them; null for declarations made
    /// before the wording was kept.
    pub wording_version: Option<String>,
    pub wording: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub declared_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub covers_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancelled_at: Option<OffsetDateTime>,
}

/// A declaration made on a later form (a thank-you page, a paper form, a phone call written
/// down), as finance records it: the donor's name and address as HMRC's schedule takes them,
/// the words the donor agreed to, and from when it covers their gifts.
#[derive(Clone)]
pub struct Later {
    pub email: String,
    pub donor: super::donor::Declared,
    pub wording_version: String,
    pub wording: String,
    pub declared_at: OffsetDateTime,
    pub covers_from: OffsetDateTime,
}

/// Donor data stays out of logs.
impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Later { .. }")
    }
}

/// Records `later`, audited in the same transaction.
pub async fn record(db: &PgPool, later: &Later, by: &Caller) -> sqlx::Result<Declaration> {
    let mut tx = db.begin().await?;
    let id = Uuid::now_v7();
    sqlx::query!(
        r#"INSERT INTO gift_aid_declarations
               (id, donor_email, title, first_name, last_name, house_name_or_number, postcode,
                country, declared_at, covers_from, wording_version, wording, source)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'later_form')"#,
        id,
        later.email,
        later.donor.title,
        later.donor.first_name,
        later.donor.last_name,
        later.donor.house_name_or_number,
        later.donor.postcode,
        later.donor.country,
        later.declared_at,
        later.covers_from,
        later.wording_version,
        later.wording
    )
    .execute(&mut *tx)
    .await?;
    let mut filters = Map::new();
    filters.insert("id".into(), id.to_string().into());
    audit::record(
        &mut *tx,
        by,
        "POST /v1/finance/gift-aid/declarations",
        &Value::Object(filters),
        1,
    )
    .await?;
    let declaration = find(&mut *tx, id).await?.expect("it was just written");
    tx.commit().await?;
    Ok(declaration)
}

/// Why a declaration was not cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no such declaration")]
    NotFound,
    #[error("a declaration cannot end before it was made")]
    BeforeDeclared { declared_at: OffsetDateTime },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Ends declaration `id` from `from`: gifts made from then on are not claimed. A declaration
/// cancelled already keeps the earlier of the two days. Audited in the same transaction.
pub async fn cancel(
    db: &PgPool,
    id: Uuid,
    from: OffsetDateTime,
    by: &Caller,
) -> Result<Declaration, CancelError> {
    let mut tx = db.begin().await?;
    let declared_at = sqlx::query_scalar!(
        "SELECT declared_at FROM gift_aid_declarations WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(CancelError::NotFound)?;
    if from < declared_at {
        return Err(CancelError::BeforeDeclared { declared_at });
    }
    sqlx::query!(
        r#"UPDATE gift_aid_declarations
           SET cancelled_at = least(coalesce(cancelled_at, $2), $2)
           WHERE id = $1"#,
        id,
        from
    )
    .execute(&mut *tx)
    .await?;
    let mut filters = Map::new();
    filters.insert("id".into(), id.to_string().into());
    filters.insert("from".into(), rfc3339(from).into());
    audit::record(
        &mut *tx,
        by,
        "POST /v1/finance/gift-aid/declarations/{id}/cancel",
        &Value::Object(filters),
        1,
    )
    .await?;
    let declaration = find(&mut *tx, id).await?.expect("it was just updated");
    tx.commit().await?;
    Ok(declaration)
}

/// Declaration `id`, if there is one.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Declaration>> {
    sqlx::query_as!(
        Declaration,
        r#"SELECT id, donation_id, source, wording_version, wording, declared_at, covers_from,
                  cancelled_at
           FROM gift_aid_declarations WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// A donor's Gift Aid gift in a tax year.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = GiftAidDonorGift)]
pub struct DonorGift {
    pub donation_id: Uuid,
    /// Its date in the UK, `YYYY-MM-DD`.
    #[serde(with = "iso_date")]
    pub date: Date,
    /// What of the gift the charity kept, in pence (never the fee cover): what Gift Aid is on.
    pub amount: i64,
    pub currency: &'static str,
    /// 25% of `amount`.
    pub gift_aid: i64,
    /// The declaration that covers it.
    pub declaration_id: Uuid,
    /// The standing claim that took it, and where that claim is; null if none has yet.
    pub claim_id: Option<Uuid>,
    pub claim_status: Option<String>,
}

/// A donor and their Gift Aid gifts in a tax year.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = GiftAidDonor)]
pub struct Donor {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub gifts: Vec<DonorGift>,
    /// The gifts' amounts, in pence.
    pub total: i64,
    /// 25% of `total`.
    pub gift_aid: i64,
}

/// Every donor's Gift Aid gifts in tax year `year` (`2026` is 6 April 2026 to 5 April 2027):
/// succeeded gifts in pounds a declaration of theirs covers (as the schedule chooses it), with
/// what of each the charity kept, by donor (their email, whatever its case), donors by email.
pub async fn donors(db: impl PgExecutor<'_>, year: i32) -> sqlx::Result<Vec<Donor>> {
    let (first, last) = periods::tax_year_days(year).expect("a tax year the API checked");
    let rows = sqlx::query!(
        r#"SELECT d.id, lower(d.donor_email) AS "email!", g.first_name, g.last_name,
                  (coalesce(d.payment_status_at, d.created_at) AT TIME ZONE 'Europe/London')::date
                      AS "date!",
                  d.amount - back.given AS "amount!", g.id AS declaration_id,
                  c.claim_id AS "claim_id?", k.status AS "claim_status?"
           FROM donations d
           CROSS JOIN LATERAL (SELECT gift_given_back(d.id) AS given) back
           CROSS JOIN LATERAL (
               SELECT g.id, g.first_name, g.last_name FROM gift_aid_declarations g
               WHERE lower(g.donor_email) = lower(d.donor_email)
                 AND g.covers_from <= coalesce(d.payment_status_at, d.created_at)
                 AND (g.cancelled_at IS NULL
                      OR g.cancelled_at > coalesce(d.payment_status_at, d.created_at))
                 AND (g.donation_id = d.id
                      OR (lower(trim(g.first_name)) = lower(trim(d.donor_first_name))
                          AND lower(trim(g.last_name)) = lower(trim(d.donor_last_name))))
               ORDER BY g.donation_id IS NOT DISTINCT FROM d.id DESC, g.declared_at DESC, g.id
               LIMIT 1) g
           LEFT JOIN gift_aid_claimed_donations c ON c.donation_id = d.id AND NOT c.released
           LEFT JOIN gift_aid_claims k ON k.id = c.claim_id
           WHERE d.currency = 'gbp' AND d.payment_status = 'succeeded'
             AND (coalesce(d.payment_status_at, d.created_at) AT TIME ZONE 'Europe/London')::date
                 BETWEEN $1 AND $2
             AND d.amount - back.given > 0
           ORDER BY lower(d.donor_email), coalesce(d.payment_status_at, d.created_at), d.id"#,
        first,
        last
    )
    .fetch_all(db)
    .await?;
    let mut donors: Vec<Donor> = Vec::new();
    for row in rows {
        let gift = DonorGift {
            donation_id: row.id,
            date: row.date,
            amount: row.amount,
            currency: CURRENCY,
            gift_aid: tax_on(row.amount),
            declaration_id: row.declaration_id,
            claim_id: row.claim_id,
            claim_status: row.claim_status,
        };
        match donors.last_mut() {
            Some(donor) if donor.email == row.email => donor.gifts.push(gift),
            _ => donors.push(Donor {
                email: row.email,
                first_name: row.first_name,
                last_name: row.last_name,
                gifts: vec![gift],
                total: 0,
                gift_aid: 0,
            }),
        }
    }
    for donor in &mut donors {
        donor.total = donor.gifts.iter().map(|g| g.amount).sum();
        donor.gift_aid = tax_on(donor.total);
    }
    Ok(donors)
}

/// `2026-27` is 2026; the second year must follow the first.
pub fn parse_tax_year(raw: &str) -> Option<i32> {
    let (first, second) = raw.split_once('-')?;
    let first: i32 = first.parse().ok().filter(|y| (2000..=2999).contains(y))?;
    (second.len() == 2 && second.parse::<i32>().ok()? == (first + 1) % 100).then_some(first)
}

mod iso_date {
    pub fn serialize<S: serde::Serializer>(date: &time::Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&date.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_years_are_written_2026_27() {
        assert_eq!(parse_tax_year("2026-27"), Some(2026));
        assert_eq!(parse_tax_year("2099-00"), Some(2099));
        for refused in ["2026-28", "2026", "26-27", "2026-2027", "x-27", ""] {
            assert_eq!(parse_tax_year(refused), None, "{refused}");
        }
    }
}
