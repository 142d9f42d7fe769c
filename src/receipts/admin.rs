//! What operators do with the receipts outbox: `quickdonate receipts list` and `quickdonate
//! receipts retry`.
//!
//! A listing names receipts by their ids, their donation's id, kind, state, attempts, next
//! attempt and last error: never the donor's address or name (the outbox holds neither, and
//! the last error is only ever our own words and the mail server's reply code).
//!
//! A retry puts a receipt set aside as `failed` back in the queue, due at once, with its
//! attempts reset to 0: an operator retries once the cause is fixed (the mail server's
//! settings, say), and a fresh count gives it the full run of attempts and the short back-off
//! again instead of one last try. What it had (its attempts and last error) is kept in the
//! audit log's entry for the retry. Only failed receipts are retried: a pending one is queued
//! already, a sent one would be sent twice, and a canceled one's donor was erased. A failed
//! receipt whose donation's donor data was erased is never retried: it is marked canceled
//! instead (as `donors erase` would have), and the sender checks again before it sends
//! anything. Each retry is recorded in the audit log as `receipts retry`, by `cli:$USER`.

use anyhow::bail;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::operators::access::Caller;
use crate::operators::audit;
use crate::timestamps::rfc3339_seconds;

/// What the audit log says was done.
pub const WHAT: &str = "receipts retry";

/// A receipt as `receipts list` shows it: never the donor's address or name.
#[derive(Debug, Clone)]
pub struct ReceiptSummary {
    pub id: Uuid,
    pub donation_id: Uuid,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub last_error: Option<String>,
}

/// The latest receipts, newest first. With `failed_only`, those set aside as `failed` and
/// those still being retried after an error.
pub async fn list(db: &PgPool, failed_only: bool, limit: i64) -> sqlx::Result<Vec<ReceiptSummary>> {
    sqlx::query_as!(
        ReceiptSummary,
        r#"SELECT id, donation_id, kind, status, attempts, next_attempt_at, last_error
           FROM receipts
           WHERE NOT $1 OR status = 'failed' OR (status = 'pending' AND last_error IS NOT NULL)
           ORDER BY created_at DESC, id
           LIMIT $2"#,
        failed_only,
        limit.clamp(1, 10_000)
    )
    .fetch_all(db)
    .await
}

/// Which receipts to retry.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    One(Uuid),
    AllFailed,
}

/// What a retry did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retried {
    /// Put back in the queue, due now.
    pub queued: Vec<Uuid>,
    /// Failed receipts whose donor was erased: marked canceled, never sent.
    pub canceled: Vec<Uuid>,
}

/// Puts `which` failed receipts back in the queue (see the module), as `caller`, and records
/// it in the audit log. A single receipt that is not failed is an error that says why.
pub async fn retry(db: &PgPool, which: Retry, caller: &Caller) -> anyhow::Result<Retried> {
    let one = match which {
        Retry::One(id) => Some(id),
        Retry::AllFailed => None,
    };
    if let Some(id) = one {
        let Some(row) = sqlx::query!(
            r#"SELECT status, next_attempt_at, sent_at FROM receipts WHERE id = $1"#,
            id
        )
        .fetch_optional(db)
        .await?
        else {
            bail!("no receipt {id}");
        };
        match row.status.as_str() {
            "failed" => {}
            "pending" => bail!(
                "receipt {id} is not failed: it is queued already (next attempt at {})",
                rfc3339_seconds(row.next_attempt_at)
            ),
            "sent" => bail!(
                "receipt {id} was sent{}: retrying it would send it twice",
                row.sent_at
                    .map(|at| format!(" at {}", rfc3339_seconds(at)))
                    .unwrap_or_default()
            ),
            "canceled" => {
                bail!("receipt {id} is canceled: its donor's data was erased, and it is never sent")
            }
            other => bail!("receipt {id} is {other}, not failed"),
        }
    }

    let mut tx = db.begin().await?;
    // The donations locked in id order, as `donors erase` and the worker lock them, so that no
    // erasure can slip between reading a donor's state and queueing their receipt.
    let failed = sqlx::query!(
        r#"SELECT r.id, r.attempts, r.last_error,
                  d.personal_data_erased_at IS NOT NULL AS "erased!"
           FROM receipts r JOIN donations d ON d.id = r.donation_id
           WHERE r.status = 'failed' AND ($1::uuid IS NULL OR r.id = $1)
           ORDER BY d.id, r.id
           FOR UPDATE OF d, r"#,
        one
    )
    .fetch_all(&mut *tx)
    .await?;
    let (erased, live): (Vec<_>, Vec<_>) = failed.into_iter().partition(|r| r.erased);
    let done = Retried {
        queued: live.iter().map(|r| r.id).collect(),
        canceled: erased.iter().map(|r| r.id).collect(),
    };
    sqlx::query!(
        r#"UPDATE receipts
           SET status = 'pending', attempts = 0, next_attempt_at = now(),
               claimed_by = NULL, claimed_until = NULL, claimed_instance = NULL
           WHERE id = ANY($1) AND status = 'failed'"#,
        &done.queued
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"UPDATE receipts
           SET status = 'canceled', claimed_by = NULL, claimed_until = NULL,
               claimed_instance = NULL
           WHERE id = ANY($1) AND status = 'failed'"#,
        &done.canceled
    )
    .execute(&mut *tx)
    .await?;
    if one.is_none() || !done.queued.is_empty() || !done.canceled.is_empty() {
        let filters = json!({
            "which": if one.is_some() { "one" } else { "all failed" },
            "queued": live.iter().map(|r| json!({
                "id": r.id, "attempts": r.attempts, "last_error": r.last_error,
            })).collect::<Vec<_>>(),
            "canceled_donor_erased": done.canceled,
        });
        audit::record(
            &mut *tx,
            caller,
            WHAT,
            &filters,
            i64::try_from(done.queued.len()).unwrap_or(i64::MAX),
        )
        .await?;
    }
    tx.commit().await?;
    if let Some(id) = one
        && !done.canceled.is_empty()
    {
        bail!(
            "receipt {id} is not retried: its donor's data was erased, so it is never sent; it \
             is marked canceled"
        );
    }
    if let Some(id) = one
        && done.queued.is_empty()
    {
        // Changed under us (another operator, or an erasure).
        bail!(
            "receipt {id} is no longer failed; see `quickdonate receipts list` (`cargo run -- \
             receipts list` in a checkout)"
        );
    }
    Ok(done)
}
