//! Our own `Idempotency-Key` (IETF draft "The Idempotency-Key HTTP Header Field"): the same
//! key with the same request replays the first answer; the same key with another request is
//! 422; a key whose first request is still being worked on is 409.
//!
//! A request holds its key by a lease (`locked_until`) rather than an open transaction, so no
//! connection is held while Stripe is called, and a key whose worker died is free again once
//! the lease runs out.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::http::problem::{Problem, ProblemType};

const HEADER: &str = "idempotency-key";
const MAX_LEN: usize = 255;

/// A validated `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key from `headers`, if any. The draft writes it as a structured-field string
    /// (`"abc"`); a bare token (`abc`), as Stripe takes it, is accepted too.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Problem> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let invalid = || {
            Problem::new(
                ProblemType::InvalidIdempotencyKey,
                format!("Idempotency-Key must be 1 to {MAX_LEN} visible ASCII characters."),
            )
        };
        let raw = value.to_str().map_err(|_| invalid())?.trim();
        let key = raw
            .strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(raw);
        let valid = (1..=MAX_LEN).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
        if !valid {
            return Err(invalid());
        }
        Ok(Some(Self(key.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a request is, for telling "the same request again" from "another request": the route
/// and the body as sent, in a canonical form. It depends on nothing but the request, so a key
/// can be looked up before anything else (a replay answers even if the campaign has closed).
pub fn fingerprint(route: &str, body: &Value) -> Vec<u8> {
    let mut canonical = Vec::new();
    write_canonical(body, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(&canonical);
    hasher.finalize().to_vec()
}

/// `value` as compact JSON with every object's keys sorted, so that the same body sent with its
/// keys in another order is the same request. (Our maps keep insertion order.)
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("a string serialises");
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a JSON scalar serialises"),
    }
}

/// The outcome of presenting a key.
#[derive(Debug)]
pub enum Claim {
    /// First use: the key now names the new donation, which the caller writes in the same
    /// transaction.
    Fresh,
    /// An earlier request with this key stopped before answering (it failed, or its worker
    /// died): the caller finishes the same donation.
    Resume { donation_id: Uuid },
    /// The first answer, to send again.
    Replay(StoredAnswer),
}

/// An answer as first sent: its status, the donation it made, and its body's exact bytes.
#[derive(Debug)]
pub struct StoredAnswer {
    pub status: StatusCode,
    pub donation_id: Option<Uuid>,
    pub body: String,
}

/// Takes the key for this request inside `tx`, or says why not. The lease lasts `lease`. On
/// first use the key names `new_donation`, which the caller must write before committing.
pub async fn claim(
    tx: &mut PgConnection,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    lease: Duration,
    new_donation: Uuid,
) -> Result<Claim, ClaimError> {
    let lease_secs = lease.as_secs_f64();
    let inserted = sqlx::query!(
        r#"INSERT INTO idempotency_keys (key, fingerprint, locked_until, donation_id)
           VALUES ($1, $2, now() + make_interval(secs => $3), $4)
           ON CONFLICT (key) DO NOTHING"#,
        key.as_str(),
        fingerprint,
        lease_secs,
        new_donation
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }

    let existing = sqlx::query!(
        r#"SELECT fingerprint, donation_id, response_status, response_body,
                  coalesce(locked_until > now(), false) AS "in_flight!"
           FROM idempotency_keys WHERE key = $1 FOR UPDATE"#,
        key.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;
    if existing.fingerprint != fingerprint {
        return Err(ClaimError::Mismatch);
    }
    if let (Some(status), Some(body)) = (existing.response_status, existing.response_body) {
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        return Ok(Claim::Replay(StoredAnswer {
            status,
            donation_id: existing.donation_id,
            body,
        }));
    }
    if existing.in_flight {
        return Err(ClaimError::InFlight);
    }
    let donation_id = existing.donation_id.ok_or(ClaimError::InFlight)?;
    sqlx::query!(
        "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $2) WHERE key = $1",
        key.as_str(),
        lease_secs
    )
    .execute(&mut *tx)
    .await?;
    Ok(Claim::Resume { donation_id })
}

/// Records the answer, to be replayed for every later request with this key: `body` is the
/// exact text sent, so a replay is the same bytes.
pub async fn complete(
    tx: &mut PgConnection,
    key: &IdempotencyKey,
    status: StatusCode,
    body: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE idempotency_keys
           SET response_status = $2, response_body = $3, locked_until = NULL
           WHERE key = $1"#,
        key.as_str(),
        i16::try_from(status.as_u16()).expect("HTTP statuses fit an i16"),
        body
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Lets the key go without an answer, so that a retry can finish the work.
pub async fn release(db: &PgPool, key: &IdempotencyKey) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE idempotency_keys SET locked_until = NULL WHERE key = $1",
        key.as_str()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// How long a key is kept. Stripe keeps its own for at least 24 hours; so do we. A request
/// with an expired key is a new request.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Deletes keys older than [`RETENTION`] that no request holds; returns how many.
pub async fn expire(db: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"DELETE FROM idempotency_keys
           WHERE created_at < now() - make_interval(secs => $1)
             AND (locked_until IS NULL OR locked_until < now())"#,
        RETENTION.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the key was used for a different request")]
    Mismatch,
    #[error("the key's first request is still in progress")]
    InFlight,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<ClaimError> for crate::http::problem::ApiError {
    fn from(error: ClaimError) -> Self {
        match error {
            ClaimError::Mismatch => Problem::new(
                ProblemType::IdempotencyKeyReused,
                "This Idempotency-Key was already used for a different request. Use a new key \
                 for a new donation.",
            )
            .into(),
            ClaimError::InFlight => Problem::new(
                ProblemType::IdempotencyKeyInUse,
                "A request with this Idempotency-Key is still being processed. Retry shortly.",
            )
            .into(),
            ClaimError::Database(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn key_of(value: &'static str) -> Result<Option<IdempotencyKey>, Problem> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static(value));
        IdempotencyKey::from_headers(&headers)
    }

    #[test]
    fn keys_are_taken_bare_or_quoted() {
        assert_eq!(key_of("abc-123").unwrap().unwrap().as_str(), "abc-123");
        assert_eq!(key_of("\"abc-123\"").unwrap().unwrap().as_str(), "abc-123");
        assert!(
            IdempotencyKey::from_headers(&HeaderMap::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn empty_spaced_or_overlong_keys_are_refused() {
        assert!(key_of("").is_err());
        assert!(key_of("\"\"").is_err());
        assert!(key_of("a b").is_err());
        let long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
        assert!(key_of(long).is_err());
    }

    #[test]
    fn the_fingerprint_tells_requests_apart() {
        let a = fingerprint("POST /x", &json!({"amount": 1}));
        assert_eq!(a, fingerprint("POST /x", &json!({"amount": 1})));
        assert_ne!(a, fingerprint("POST /y", &json!({"amount": 1})));
        assert_ne!(a, fingerprint("POST /x", &json!({"amount": 2})));
        assert_ne!(a, fingerprint("POST /x", &json!({"amount": "1"})));
    }

    #[test]
    fn the_fingerprint_ignores_key_order_at_every_depth_but_not_array_order() {
        let body: Value = serde_json::from_str(
            r#"{"amount": 2500, "donor": {"email": "a@example.org", "first_name": "A"}, "tags": [1, 2]}"#,
        )
        .unwrap();
        let reordered: Value = serde_json::from_str(
            r#"{"tags": [1, 2], "donor": {"first_name": "A", "email": "a@example.org"}, "amount": 2500}"#,
        )
        .unwrap();
        assert_eq!(
            fingerprint("POST /x", &body),
            fingerprint("POST /x", &reordered)
        );

        let mut other_order = body.clone();
        other_order["tags"] = json!([2, 1]);
        assert_ne!(
            fingerprint("POST /x", &body),
            fingerprint("POST /x", &other_order)
        );
    }

    #[test]
    fn the_canonical_form_is_compact_json_with_sorted_keys() {
        let body: Value =
            serde_json::from_str(r#"{"b": {"z": null, "é": "\"q\"", "a": [true, 1.5]}, "a": 0}"#)
                .unwrap();
        let mut out = Vec::new();
        write_canonical(&body, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":0,"b":{"a":[true,1.5],"z":null,"é":"\"q\""}}"#
        );
    }
}
