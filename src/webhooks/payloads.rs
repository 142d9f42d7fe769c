//! Stored event payloads stripped of personal data.
//!
//! An event is kept as Stripe signed it while it may still be applied; once it is applied,
//! ignored or set aside as failed (a replay still applies a stripped event), and older than `EVENT_PAYLOAD_RETENTION` (30 days by default), the housekeeping
//! strips it, a batch at a time, and marks it (`personal_data_removed_at`) so it is done once.
//! Erasing a donor strips their payments' events at once, whatever their age or state, and the
//! worker strips each event that comes later for an erased donor's payment (a refund, a dispute
//! with its evidence) in the transaction that applies it.
//!
//! Stripping keeps every id, amount, currency, status, type and time, and the metadata that
//! ties an object to its donation, so `events show` still reads and a replay applies exactly
//! as before: nothing the worker reads is personal.

use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

/// Fields that hold personal data wherever they appear in a Stripe object (a charge, its
/// PaymentIntent, a refund, a dispute, a payment method, a source...): set to `null`, whole.
const PERSONAL: &[&str] = &[
    // The card holder as the donor typed them: name, email, phone, address, tax id.
    "billing_details",
    "billing_address",
    "shipping",
    "shipping_address",
    "receipt_email",
    // The receipt page shows the billing details to whoever holds the link.
    "receipt_url",
    "email",
    "name",
    "phone",
    "address",
    "customer_email",
    "customer_name",
    "customer_phone",
    "customer_address",
    "customer_shipping",
    "customer_details",
    "customer_tax_ids",
    "customer_purchase_ip",
    "customer_signature",
    "customer_communication",
    "payer_email",
    "payer_name",
    "account_holder_name",
    "cardholder_name",
    // A source's owner: name, email, phone, address and their `verified_` twins.
    "owner",
    "verified_name",
    "verified_email",
    "verified_phone",
    "verified_address",
    // A dispute's evidence: the customer's name, email, address, IP, correspondence.
    "evidence",
    "ip_address",
    "user_agent",
    // What identifies the card itself.
    "fingerprint",
    "last4",
    "dynamic_last4",
    "exp_month",
    "exp_year",
    // Free text another product on the account may have written a name into; ours is
    // "Donation" and nothing reads it.
    "description",
];

/// Metadata keys kept: ours, which tie an object to its donation. Another product's metadata
/// (the events we ignore) may hold anything.
const METADATA_KEPT: &[&str] = &["donation_id", "campaign", "cover_fees_amount"];

/// The event's JSON text without its personal data, or `None` if it is not JSON.
pub fn strip(payload: &str) -> Option<String> {
    let mut value: Value = serde_json::from_str(payload).ok()?;
    strip_value(&mut value);
    serde_json::to_string(&value).ok()
}

/// Strips personal data from `value` and everything inside it.
pub fn strip_value(value: &mut Value) {
    match value {
        Value::Object(map) => strip_object(map),
        Value::Array(items) => items.iter_mut().for_each(strip_value),
        _ => {}
    }
}

fn strip_object(map: &mut Map<String, Value>) {
    for (key, field) in map.iter_mut() {
        if PERSONAL.contains(&key.as_str()) {
            *field = Value::Null;
        } else if key == "metadata" {
            if let Value::Object(metadata) = field {
                metadata.retain(|key, _| METADATA_KEPT.contains(&key.as_str()));
            }
        } else {
            strip_value(field);
        }
    }
}

/// What replaces a payload that is not JSON (it never is: the log stores only events it
/// parsed): the event's record alone.
fn skeleton(id: &str, kind: &str) -> String {
    serde_json::json!({"id": id, "object": "event", "type": kind}).to_string()
}

/// Events stripped per transaction.
pub const BATCH: i64 = 500;

/// Batches at most per call, so one call never runs for long; the next call goes on.
const MAX_BATCHES: usize = 20;

/// Strips the payloads of events applied, ignored or set aside as failed, and created more than `retention` ago,
/// `batch` events per short transaction, at most [`MAX_BATCHES`] batches; returns how many.
/// Instances share the work: each batch skips rows another holds.
pub async fn strip_expired(db: &PgPool, retention: Duration, batch: i64) -> sqlx::Result<u64> {
    let mut stripped = 0;
    for _ in 0..MAX_BATCHES {
        let mut tx = db.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id, type AS kind, payload FROM stripe_events
               WHERE personal_data_removed_at IS NULL AND state IN ('applied', 'ignored', 'failed')
                 AND created < now() - make_interval(secs => $1)
               ORDER BY created
               LIMIT $2
               FOR UPDATE SKIP LOCKED"#,
            retention.as_secs_f64(),
            batch
        )
        .fetch_all(&mut *tx)
        .await?;
        let done = rows.len() as i64;
        let (ids, payloads) = stripped_rows(rows.into_iter().map(|r| (r.id, r.kind, r.payload)));
        save(&mut tx, &ids, &payloads).await?;
        tx.commit().await?;
        stripped += ids.len() as u64;
        if done < batch {
            break;
        }
    }
    Ok(stripped)
}

/// Strips, in the caller's transaction, the payloads of every event about these payments
/// (their PaymentIntent or charge ids: what events are grouped by), whatever their state or
/// age; returns how many were stripped now.
pub async fn strip_payments(conn: &mut PgConnection, object_keys: &[String]) -> sqlx::Result<u64> {
    let ids = sqlx::query_scalar!(
        r#"SELECT id FROM stripe_events
           WHERE object_key = ANY($1) AND personal_data_removed_at IS NULL"#,
        object_keys
    )
    .fetch_all(&mut *conn)
    .await?;
    strip_events(conn, &ids).await
}

/// Strips, in the caller's transaction, the payloads of events `ids` not yet stripped; returns
/// how many were stripped now.
pub async fn strip_events(conn: &mut PgConnection, ids: &[String]) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query!(
        r#"SELECT id, type AS kind, payload FROM stripe_events
           WHERE id = ANY($1) AND personal_data_removed_at IS NULL
           ORDER BY id
           FOR UPDATE"#,
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let (ids, payloads) = stripped_rows(rows.into_iter().map(|r| (r.id, r.kind, r.payload)));
    save(conn, &ids, &payloads).await?;
    Ok(ids.len() as u64)
}

/// Each event's id and its payload stripped: `(id, type, payload)` in, ids and payloads out.
fn stripped_rows(
    rows: impl Iterator<Item = (String, String, String)>,
) -> (Vec<String>, Vec<String>) {
    rows.map(|(id, kind, payload)| {
        let payload = strip(&payload).unwrap_or_else(|| skeleton(&id, &kind));
        (id, payload)
    })
    .unzip()
}

async fn save(conn: &mut PgConnection, ids: &[String], payloads: &[String]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"UPDATE stripe_events e
           SET payload = s.payload, personal_data_removed_at = now()
           FROM unnest($1::text[], $2::text[]) AS s (id, payload)
           WHERE e.id = s.id"#,
        ids,
        payloads
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn personal_fields_go_and_what_applying_reads_stays() {
        let event = json!({
            "id": "evt_1", "object": "event", "type": "charge.succeeded", "created": 1,
            "data": {"object": {
                "id": "ch_1", "object": "charge", "amount": 2500, "currency": "gbp",
                "status": "succeeded", "payment_intent": "pi_1", "balance_transaction": "txn_1",
                "metadata": {"donation_id": "d1", "campaign": "kashmir", "note": "Zebedee"},
                "billing_details": {"name": "Zebedee Quux", "email": "z@example.org",
                                    "address": {"postal_code": "S19 2BD"}},
                "receipt_email": "z@example.org",
                "payment_method_details": {"card": {"brand": "visa", "last4": "4242"}},
                "refunds": {"data": [{"id": "re_1", "amount": 100, "receipt_number": "1",
                                      "metadata": {}}]},
                "source": {"id": "src_1", "owner": {"name": "Zebedee Quux"}}
            },
            "previous_attributes": {"billing_details": {"name": "Old Name"}}}
        });
        let stripped: Value = serde_json::from_str(&strip(&event.to_string()).unwrap()).unwrap();
        let text = stripped.to_string();
        for personal in ["Zebedee", "z@example.org", "S19 2BD", "Old Name", "4242"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
        let object = &stripped["data"]["object"];
        assert_eq!(object["amount"], 2500);
        assert_eq!(object["status"], "succeeded");
        assert_eq!(object["payment_intent"], "pi_1");
        assert_eq!(object["balance_transaction"], "txn_1");
        assert_eq!(
            object["metadata"],
            json!({"donation_id": "d1", "campaign": "kashmir"})
        );
        assert_eq!(object["refunds"]["data"][0]["id"], "re_1");
        assert_eq!(object["source"]["id"], "src_1");
        assert_eq!(object["billing_details"], Value::Null);
        assert_eq!(stripped["type"], "charge.succeeded");
    }

    #[test]
    fn a_payload_that_is_not_json_is_not_stripped() {
        assert_eq!(strip("not json"), None);
    }
}
