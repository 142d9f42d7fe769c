//! `quickdonate donors erase --email ADDRESS`: a donor's right to erasure.
//!
//! In one transaction, for every donation made with the email (whatever its case):
//! - the donation's email, first and last name read `erased`; its amounts, money, Stripe ids
//!   and status stay (finance needs them);
//! - a donation already claimed in a Gift Aid claim keeps the donor's name, as does the
//!   declaration that backed its claim (title, name, house, postcode, country), and the
//!   claim's own lines stay as claimed: HMRC requires them for six years after the claim.
//!   Their email goes all the same. Every other declaration of the email (or made with one of
//!   its donations) reads `erased`, without title or postcode, and an erased donation is never
//!   put on a Gift Aid schedule again;
//! - the stored Stripe events of its payments are stripped of personal data, as retention
//!   does (see [`crate::webhooks::payloads`]);
//! - its Idempotency-Key forgets the request's fingerprint (a hash of the donor's details):
//!   a retry with the key is refused as another request, never made into a second donation;
//! - the card-testing counts and captcha demands of the email (kept by its SHA-256) go;
//! - the receipts written as `.eml` files (without `SMTP_URL`) for its donations are deleted,
//!   before the transaction commits, so that an erasure that fails leaves them for the next
//!   run. A receipt being written at that very moment by a running service may still land.
//!
//! The simulated Stripe's tables are left alone: they stand for Stripe's side (erasing there
//! is a request to Stripe), and the simulator never holds donor data, since we send Stripe
//! only the donation's id and campaign.
//!
//! The erasure is recorded in the finance audit log, as `donors erase`, by `cli:$USER`, with
//! its counts and the donations' ids, never the email or a hash of it. Running it again finds
//! nothing more to erase.

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::ERASED;
use crate::operators::access::Caller;
use crate::operators::audit;

/// What the audit log says was done.
pub const WHAT: &str = "donors erase";

/// What an erasure did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// Donations whose donor data was erased.
    pub donations: i64,
    /// Of those, already claimed in a Gift Aid claim: their donor's name is kept for HMRC.
    pub donations_claimed: i64,
    /// Declarations erased.
    pub declarations: i64,
    /// Declarations that backed a claimed gift: name and address kept for HMRC, email erased.
    pub declarations_kept: i64,
    /// Stored Stripe events stripped of personal data.
    pub events: u64,
    /// Idempotency-Keys whose request fingerprint was forgotten.
    pub idempotency_keys: u64,
    /// Card-testing counts and captcha demands of the email deleted.
    pub card_testing_rows: u64,
    pub receipts_canceled: u64,
    /// Receipts written as `.eml` files (without `SMTP_URL`) whose file was deleted.
    pub receipt_files: u64,
}

/// Erases the personal data of the donor of `email` (see the module's documentation), as
/// `caller`, deleting their receipts' `.eml` files under `receipt_files`, and records it in
/// the audit log.
pub async fn erase(
    db: &PgPool,
    email: &str,
    caller: &Caller,
    receipt_files: &Path,
) -> anyhow::Result<Erasure> {
    let email = email.trim();
    anyhow::ensure!(!email.is_empty(), "--email: give the donor's email address");
    let mut erasure = Erasure::default();
    let mut tx = db.begin().await?;

    // The donations, locked in id order as the worker locks them.
    let donations = sqlx::query!(
        r#"SELECT d.id, d.payment_intent_id, d.charge_id,
                  EXISTS (SELECT 1 FROM gift_aid_claimed_donations c
                          WHERE c.donation_id = d.id AND NOT c.released) AS "claimed!"
           FROM donations d
           WHERE lower(d.donor_email) = lower($1)
           ORDER BY d.id
           FOR UPDATE OF d"#,
        email
    )
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = donations.iter().map(|d| d.id).collect();
    let payments: Vec<String> = donations
        .iter()
        .flat_map(|d| [d.payment_intent_id.clone(), d.charge_id.clone()])
        .flatten()
        .collect();
    erasure.donations = ids.len() as i64;
    erasure.donations_claimed = donations.iter().filter(|d| d.claimed).count() as i64;

    // The declarations that backed a claimed gift of the donor, chosen as the claim chose
    // them (`gift_aid::store::gifts`) among those made before the claim: the one made
    // with the gift, else the latest of theirs in the same name that covered its date. Name and
    // address stay for HMRC; the email goes.
    let kept = sqlx::query_scalar!(
        r#"WITH backing AS (
               SELECT DISTINCT b.id
               FROM donations d
               JOIN gift_aid_claimed_donations c ON c.donation_id = d.id AND NOT c.released
               JOIN gift_aid_claims k ON k.id = c.claim_id
               CROSS JOIN LATERAL (
                   SELECT g.id FROM gift_aid_declarations g
                   WHERE lower(g.donor_email) = lower(d.donor_email)
                     AND g.declared_at <= k.created_at
                     AND g.covers_from <= coalesce(d.payment_status_at, d.created_at)
                     AND (g.donation_id = d.id
                          OR (lower(trim(g.first_name)) = lower(trim(d.donor_first_name))
                              AND lower(trim(g.last_name)) = lower(trim(d.donor_last_name))))
                   ORDER BY g.donation_id IS NOT DISTINCT FROM d.id DESC, g.declared_at DESC, g.id
                   LIMIT 1) b
               WHERE d.id = ANY($1))
           UPDATE gift_aid_declarations g
           SET donor_email = $2, personal_data_erased_at = now()
           FROM backing
           WHERE g.id = backing.id AND g.personal_data_erased_at IS NULL
           RETURNING g.id"#,
        &ids,
        ERASED
    )
    .fetch_all(&mut *tx)
    .await?;
    erasure.declarations_kept = kept.len() as i64;
    erasure.declarations = sqlx::query!(
        r#"UPDATE gift_aid_declarations g
           SET donor_email = $3, first_name = $3, last_name = $3, title = NULL,
               house_name_or_number = $3, postcode = NULL, country = $3,
               personal_data_erased_at = now()
           WHERE (lower(g.donor_email) = lower($1) OR g.donation_id = ANY($2))
             AND NOT g.id = ANY($4)
             AND g.personal_data_erased_at IS NULL"#,
        email,
        &ids,
        ERASED,
        &kept
    )
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;

    sqlx::query!(
        r#"WITH claimed AS (
               SELECT donation_id FROM gift_aid_claimed_donations
               WHERE donation_id = ANY($1) AND NOT released)
           UPDATE donations d
           SET donor_email = $2,
               donor_first_name = CASE WHEN d.id IN (SELECT donation_id FROM claimed)
                                       THEN d.donor_first_name ELSE $2 END,
               donor_last_name = CASE WHEN d.id IN (SELECT donation_id FROM claimed)
                                      THEN d.donor_last_name ELSE $2 END,
               client_key = NULL,
               personal_data_erased_at = coalesce(d.personal_data_erased_at, now())
           WHERE d.id = ANY($1)"#,
        &ids,
        ERASED
    )
    .execute(&mut *tx)
    .await?;

    erasure.events = crate::webhooks::payloads::strip_payments(&mut tx, &payments).await?;
    // Receipts hold no personal data of their own; the ones still owed are not sent.
    erasure.receipts_canceled = crate::receipts::cancel_owed(&mut tx, &ids).await?;

    erasure.idempotency_keys = sqlx::query!(
        "UPDATE idempotency_keys SET fingerprint = $2 WHERE donation_id = ANY($1)",
        &ids,
        Sha256::digest(ERASED.as_bytes()).to_vec()
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let key = crate::donations::limits::email_key(email);
    erasure.card_testing_rows = sqlx::query!(
        "DELETE FROM donation_attempts WHERE scope = 'email' AND key = $1",
        key
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        + sqlx::query!("DELETE FROM donation_challenges WHERE key = $1", key)
            .execute(&mut *tx)
            .await?
            .rows_affected();

    let receipts = sqlx::query_scalar!(
        "SELECT id FROM receipts WHERE donation_id = ANY($1) ORDER BY id",
        &ids
    )
    .fetch_all(&mut *tx)
    .await?;
    let dir = receipt_files.to_owned();
    erasure.receipt_files =
        tokio::task::spawn_blocking(move || crate::receipts::sender::delete_files(&dir, &receipts))
            .await?
            .map_err(|error| anyhow::anyhow!("could not delete a receipt's .eml file: {error}"))?;

    let mut filters = serde_json::to_value(&erasure)?;
    filters["donation_ids"] = json!(ids);
    audit::record(&mut *tx, caller, WHAT, &filters, erasure.donations).await?;
    tx.commit().await?;
    Ok(erasure)
}
