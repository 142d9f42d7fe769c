//! Receipts, exactly once: the thank-you a donor gets when their donation first succeeds, and
//! the short notice when it is refunded in full.
//!
//! A receipt is owed the moment its donation moves, so it is queued as a row of the `receipts`
//! outbox in the very transaction that moves the donation ([`queue`], called by the event
//! worker), at most once per donation and kind (a unique key; a duplicate event, a storm, a
//! replay or another instance's batch finds the row there and adds nothing). The [`sender`]
//! loops deliver what is owed over SMTP, or as `.eml` files when no SMTP server is configured.
//!
//! The row copies no personal data: the donor's address and name are read from the donation
//! when the receipt is sent. A donor erased before then is sent nothing.

pub mod admin;
pub mod message;
pub mod sender;

use sqlx::PgConnection;
use uuid::Uuid;

pub const THANK_YOU: &str = "thank_you";
pub const REFUND_NOTICE: &str = "refund_notice";

/// Queues, inside the transaction that moved them, a thank-you for each of `succeeded` and a
/// refund notice for each of `refunded` (donations), unless already queued (or sent) before.
pub async fn queue(
    tx: &mut PgConnection,
    succeeded: &[Uuid],
    refunded: &[Uuid],
) -> sqlx::Result<()> {
    if succeeded.is_empty() && refunded.is_empty() {
        return Ok(());
    }
    let mut donations = Vec::with_capacity(succeeded.len() + refunded.len());
    let mut kinds = Vec::with_capacity(donations.capacity());
    let mut ids = Vec::with_capacity(donations.capacity());
    for (list, kind) in [(succeeded, THANK_YOU), (refunded, REFUND_NOTICE)] {
        for donation in list {
            donations.push(*donation);
            kinds.push(kind.to_owned());
            ids.push(Uuid::now_v7());
        }
    }
    sqlx::query!(
        r#"INSERT INTO receipts (id, donation_id, kind, message_id)
           SELECT u.id, u.donation_id, u.kind, 'receipt-' || u.id::text
           FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS u(id, donation_id, kind)
           -- A donation recovered from Stripe after a restore has no address to write to.
           WHERE NOT EXISTS (SELECT 1 FROM donations d
                             WHERE d.id = u.donation_id AND d.recovered_at IS NOT NULL)
           ORDER BY u.donation_id, u.kind
           ON CONFLICT (donation_id, kind) DO NOTHING"#,
        &ids,
        &donations,
        &kinds
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Cancels the receipts still owed for `donations` (their donor was erased): nothing is sent
/// to an address that is gone. Returns how many were cancelled.
pub async fn cancel_owed(tx: &mut PgConnection, donations: &[Uuid]) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE receipts SET status = 'canceled', claimed_by = NULL, claimed_until = NULL
           WHERE donation_id = ANY($1) AND status IN ('pending', 'failed')"#,
        donations
    )
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}
