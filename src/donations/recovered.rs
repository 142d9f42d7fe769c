//! Donations recreated from Stripe: after the database is restored from a backup, a donation
//! made since the backup has no row, though Stripe holds its PaymentIntent (our metadata names
//! the donation, its campaign and its fee cover). `events backfill` recreates such a donation
//! as `recovered`, with what Stripe knows and no donor details (Stripe never had them); its
//! events, stored by the same backfill, then bring its payment, charge, fee, refunds and
//! disputes as they bring any donation's. No receipt is owed for it: there is no address.

use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// What Stripe's PaymentIntent says of one of our donations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub id: Uuid,
    pub campaign: String,
    pub payment_intent: String,
    /// What was charged: the gift and its fee cover.
    pub total_amount: i64,
    pub cover_fees_amount: i64,
    pub currency: String,
    pub created: OffsetDateTime,
}

impl Recovered {
    /// The donation a PaymentIntent (as Stripe returns it) was made for, if its metadata names
    /// one of ours; `Err` says why a PaymentIntent that names one cannot be recovered.
    pub fn from_payment_intent(intent: &Value) -> Result<Option<Self>, String> {
        let metadata = &intent["metadata"];
        let Some(id) = metadata["donation_id"].as_str() else {
            return Ok(None);
        };
        let id = Uuid::parse_str(id).map_err(|_| format!("its donation_id {id:?} is not ours"))?;
        let campaign = metadata["campaign"]
            .as_str()
            .ok_or("its metadata names no campaign")?;
        let total_amount = intent["amount"]
            .as_i64()
            .filter(|a| *a > 0)
            .ok_or("it has no amount")?;
        // Made before the metadata carried it: the whole charge is taken as the gift.
        let cover_fees_amount = match metadata["cover_fees_amount"].as_str() {
            None => 0,
            Some(cover) => cover
                .parse::<i64>()
                .ok()
                .filter(|c| (0..total_amount).contains(c))
                .ok_or_else(|| format!("its cover_fees_amount {cover:?} does not fit"))?,
        };
        let currency = intent["currency"]
            .as_str()
            .filter(|c| c.len() == 3)
            .ok_or("it has no currency")?;
        let created = intent["created"]
            .as_i64()
            .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
            .unwrap_or_else(OffsetDateTime::now_utc);
        Ok(Some(Self {
            id,
            campaign: campaign.to_owned(),
            payment_intent: intent["id"].as_str().ok_or("it has no id")?.to_owned(),
            total_amount,
            cover_fees_amount,
            currency: currency.to_lowercase(),
            created,
        }))
    }
}

/// Of these PaymentIntents, those no donation holds.
pub async fn unknown_intents(db: &PgPool, intents: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT i AS "i!" FROM unnest($1::text[]) AS i
           WHERE NOT EXISTS (SELECT 1 FROM donations d WHERE d.payment_intent_id = i)"#,
        intents
    )
    .fetch_all(db)
    .await
}

/// Of these donations, those that have no row.
pub async fn missing(db: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT i AS "i!" FROM unnest($1::uuid[]) AS i
           WHERE NOT EXISTS (SELECT 1 FROM donations d WHERE d.id = i)"#,
        ids
    )
    .fetch_all(db)
    .await
}

/// Recreates `donation` unless it has a row (or its PaymentIntent is another's); whether it
/// did. Its campaign must be one we know.
pub async fn recreate(db: &PgPool, donation: &Recovered) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"INSERT INTO donations (id, campaign, frequency, amount, cover_fees_amount,
                                  total_amount, currency, donor_email, donor_first_name,
                                  donor_last_name, anonymous, payment_intent_id, created_at,
                                  recovered_at)
           SELECT $1, c.slug, 'one_off', $3::bigint - $4::bigint, $4, $3, $5, '', '', '', true,
                  $6, $7, now()
           FROM campaigns c WHERE c.slug = $2
           ON CONFLICT DO NOTHING"#,
        donation.id,
        donation.campaign,
        donation.total_amount,
        donation.cover_fees_amount,
        donation.currency,
        donation.payment_intent,
        donation.created
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_payment_intent_of_ours_says_its_gift_and_cover() {
        let id = Uuid::now_v7();
        let intent = json!({"id": "pi_1", "amount": 2559, "currency": "gbp", "created": 1,
            "metadata": {"donation_id": id.to_string(), "campaign": "kashmir",
                         "cover_fees_amount": "59"}});
        let recovered = Recovered::from_payment_intent(&intent).unwrap().unwrap();
        assert_eq!(
            (
                recovered.id,
                recovered.total_amount,
                recovered.cover_fees_amount
            ),
            (id, 2559, 59)
        );
        assert_eq!(recovered.payment_intent, "pi_1");
    }

    #[test]
    fn another_products_payment_intent_is_not_ours_and_a_bad_one_says_why() {
        let theirs = json!({"id": "pi_2", "amount": 100, "currency": "gbp", "metadata": {}});
        assert_eq!(Recovered::from_payment_intent(&theirs), Ok(None));
        let bad = json!({"id": "pi_3", "amount": 100, "currency": "gbp",
            "metadata": {"donation_id": Uuid::now_v7().to_string(), "campaign": "kashmir",
                         "cover_fees_amount": "100"}});
        assert!(Recovered::from_payment_intent(&bad).is_err());
    }
}
