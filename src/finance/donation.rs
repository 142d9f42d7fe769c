//! `GET /v1/finance/donations/{id}`: one donation whole, for finance staff: the row the list
//! shows (and when it succeeded), the Stripe events the event log holds for its payment in the
//! order Stripe created them, its ledger rows, its receipts, and its Gift Aid.
//!
//! All of it is read in one snapshot on finance's reads (`db::reading`). The event log and the
//! receipts outbox belong to features above this one (`webhooks`, `receipts`), so their tables
//! are read here with SQL of our own rather than through their modules; an event's payload is
//! never read.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::donations::Row;
use super::ledger;
use crate::finance::FinanceState;
use crate::http::problem::{ApiResult, Problem};
use crate::http::query::{BadParameter, Params};
use crate::operators::access::{Caller, Refusals};
use crate::operators::audit;

/// What the audit log calls this read.
const WHAT: &str = "GET /v1/finance/donations/{id}";

/// The answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationWhole)]
pub(super) struct Whole {
    donation: Donation,
    /// The events of its PaymentIntent, its charge, its refunds and its disputes, in the order
    /// Stripe created them (`created`, then `id`); never their payloads.
    events: Vec<Event>,
    /// Its rows of the ledger, oldest first (by when Stripe moved the money).
    ledger: Vec<LedgerRow>,
    /// Its receipts in the outbox (a thank-you once it succeeded, a refund notice once
    /// refunded in full), oldest first; empty if none is owed.
    receipts: Vec<Receipt>,
    gift_aid: GiftAid,
}

/// The donation as a row of `GET /v1/finance/donations` shows it, and when it succeeded.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationShown)]
struct Donation {
    #[serde(flatten)]
    #[schema(schema_with = listed)]
    row: Row,
    /// When Stripe said the payment succeeded (RFC 3339); null unless it did.
    #[serde(with = "time::serde::rfc3339::option")]
    succeeded_at: Option<OffsetDateTime>,
}

/// `row`'s documentation: the list's (`FinanceDonation`), whose fields `row` flattens.
fn listed() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::Ref::from_schema_name("FinanceDonation").into()
}

/// A Stripe event the event log holds.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationEvent)]
struct Event {
    /// `evt_...`.
    id: String,
    /// Stripe's event type, e.g. `payment_intent.succeeded`.
    #[serde(rename = "type")]
    kind: String,
    /// When Stripe created it (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    /// When we first received it.
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    /// `pending` (to apply), `applied`, `ignored` (stored, never applied) or `failed` (set
    /// aside after failing, until an operator replays it).
    state: String,
    /// How many times applying it was tried.
    attempts: i32,
    /// When it was applied; null until it is.
    #[serde(with = "time::serde::rfc3339::option")]
    applied_at: Option<OffsetDateTime>,
}

/// A row of the ledger.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationLedgerRow)]
struct LedgerRow {
    /// `gift`, `stripe_fee`, `refund`, `refund_failure`, `dispute_withdrawal`, `dispute_fee` or
    /// `dispute_reinstatement`.
    kind: &'static str,
    /// Signed, in minor units of `currency` (positive adds to the balance).
    amount: i64,
    /// The settlement currency.
    currency: String,
    /// When Stripe moved the money (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    /// The charge, refund or dispute that moved it.
    source_id: String,
    balance_transaction_id: String,
}

/// A receipt owed to the donor.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationReceipt)]
struct Receipt {
    /// `thank_you` or `refund_notice`.
    kind: String,
    /// `pending` (owed), `sent`, `failed` (given up, for an operator) or `canceled` (the
    /// donor's data was erased first).
    status: String,
    attempts: i32,
    /// When it was queued (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// When it was handed to the mail server (or written as a file); null until then.
    #[serde(with = "time::serde::rfc3339::option")]
    sent_at: Option<OffsetDateTime>,
}

/// The donation's Gift Aid.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationGiftAid)]
struct GiftAid {
    /// Whether a declaration was made with the gift, on the donation form.
    declared: bool,
    /// Whether that declaration has been cancelled (from `declaration.cancelled_at`: gifts
    /// before then are still covered).
    cancelled: bool,
    /// The declaration made with the gift; null if none was. (Another declaration of the
    /// donor's can still cover the gift: the schedule says.)
    declaration: Option<Declaration>,
    /// The standing claim (not rejected or void) that holds the gift; null if none does.
    claim: Option<Claim>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationDeclaration)]
struct Declaration {
    id: Uuid,
    /// `donation_form` or `later_form`.
    source: String,
    #[serde(with = "time::serde::rfc3339")]
    declared_at: OffsetDateTime,
    /// From when it covers the donor's gifts.
    #[serde(with = "time::serde::rfc3339")]
    covers_from: OffsetDateTime,
    /// From when it no longer covers them; null unless cancelled.
    #[serde(with = "time::serde::rfc3339::option")]
    cancelled_at: Option<OffsetDateTime>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FinanceDonationClaim)]
struct Claim {
    /// The claim (`GET /v1/finance/gift-aid/claims/{id}`).
    id: Uuid,
    /// `prepared`, `submitted` or `paid`.
    status: String,
    /// When it last moved (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    status_at: OffsetDateTime,
    /// Its line in the claim's schedule, from 1.
    line: i32,
    /// What of the gift it claims, in pence.
    amount: i64,
}

/// One donation whole: its row, events, ledger, receipts and Gift Aid.
#[utoipa::path(
    get,
    path = "/v1/finance/donations/{id}",
    operation_id = "showFinanceDonation",
    tag = "finance",
    summary = "A donation, whole",
    description = "One donation as the list shows it (and when it succeeded), with the Stripe \
                   events the event log holds for its payment (its PaymentIntent, charge, \
                   refunds and disputes) in the order Stripe created them, never their \
                   payloads; its ledger rows, oldest first; its receipts; and its Gift Aid: \
                   the declaration made with it and the claim that holds it. Any finance \
                   token; audited.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The donation's id (a UUID).")),
    responses(
        (status = 200, description = "The donation.", body = Whole),
        (status = 404, description = "`/problems/not-found`: no such donation.", body = Problem,
         content_type = "application/problem+json"),
        Refusals,
        BadParameter,
    ),
)]
pub(super) async fn show(
    State(state): State<FinanceState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &[])?;
    let not_found = || Problem::unknown("id", "donation", &id);
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let mut tx = crate::db::reading(&state.reads).await?;
    let Some(donation) = donation(&mut tx, id).await? else {
        return Err(not_found().into());
    };
    let events = events(&mut tx, id).await?;
    let mut ledger = ledger::of_donations(&mut tx, &[id]).await?;
    // Oldest first, by when Stripe moved the money; rows of one moment as they were written
    // (the sort is stable).
    ledger.sort_by_key(|entry| entry.occurred_at);
    let receipts = receipts(&mut tx, id).await?;
    let gift_aid = gift_aid(&mut tx, id).await?;
    tx.commit().await?;

    let mut filters = params.filters();
    if let Value::Object(map) = &mut filters {
        map.insert("id".into(), id.to_string().into());
    }
    audit::record(&state.db, &caller, WHAT, &filters, 1).await?;
    let whole = Whole {
        donation,
        events,
        ledger: ledger
            .into_iter()
            .map(|entry| LedgerRow {
                kind: entry.kind,
                amount: entry.amount,
                currency: entry.currency,
                occurred_at: entry.occurred_at,
                source_id: entry.source_id,
                balance_transaction_id: entry.balance_transaction_id,
            })
            .collect(),
        receipts,
        gift_aid,
    };
    Ok(Json(whole).into_response())
}

/// The donation as a row of the list (the same columns, computed the same way), and when it
/// succeeded; `None` if there is no such donation.
async fn donation(tx: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<Option<Donation>> {
    let found = sqlx::query!(
        r#"SELECT d.id, d.created_at, d.campaign, d.status, d.donor_email,
                  d.donor_first_name, d.donor_last_name, d.amount, d.cover_fees_amount,
                  d.total_amount, d.currency, d.fee, d.net, d.settlement_currency,
                  d.refunded_amount, d.dispute_status,
                  EXISTS (SELECT 1 FROM gift_aid_declarations g WHERE g.donation_id = d.id)
                      AS "gift_aid!",
                  d.payment_intent_id, d.charge_id,
                  (SELECT t.payout_id FROM paid_out_transactions t
                   WHERE t.balance_transaction_id = d.balance_transaction_id
                   ORDER BY t.created DESC LIMIT 1) AS payout_id,
                  d.recovered_at IS NOT NULL AS "recovered!",
                  CASE WHEN d.payment_status = 'succeeded' THEN d.payment_status_at END
                      AS succeeded_at
           FROM donations d
           WHERE d.id = $1"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(found.map(|d| Donation {
        row: Row {
            id: d.id,
            created_at: d.created_at,
            campaign: d.campaign,
            status: d.status,
            donor_email: d.donor_email,
            donor_first_name: d.donor_first_name,
            donor_last_name: d.donor_last_name,
            amount: d.amount,
            cover_fees_amount: d.cover_fees_amount,
            total_amount: d.total_amount,
            currency: d.currency,
            fee: d.fee,
            net: d.net,
            settlement_currency: d.settlement_currency,
            refunded_amount: d.refunded_amount,
            dispute_status: d.dispute_status,
            gift_aid: d.gift_aid,
            payment_intent_id: d.payment_intent_id,
            charge_id: d.charge_id,
            payout_id: d.payout_id,
            recovered: d.recovered,
        },
        succeeded_at: d.succeeded_at,
    }))
}

/// The events of the donation's payment: those the event log files under its PaymentIntent or
/// its charge (the worker's grouping key, `object_key`: every event of a payment, its refunds'
/// and disputes' too, carries one of the two). One lookup of `stripe_events_object_key_idx`.
async fn events(tx: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as!(
        Event,
        r#"WITH keys (key) AS (
               SELECT d.payment_intent_id FROM donations d WHERE d.id = $1
               UNION SELECT d.charge_id FROM donations d WHERE d.id = $1)
           SELECT e.id, e.type AS kind, e.created, e.first_received_at AS received_at,
                  e.state, e.attempts, e.applied_at
           FROM stripe_events e
           WHERE e.object_key IN (SELECT key FROM keys WHERE key IS NOT NULL)
           ORDER BY e.created, e.id"#,
        id
    )
    .fetch_all(&mut *tx)
    .await
}

/// The donation's receipts in the outbox, oldest first.
async fn receipts(tx: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<Vec<Receipt>> {
    sqlx::query_as!(
        Receipt,
        r#"SELECT kind, status, attempts, created_at, sent_at
           FROM receipts WHERE donation_id = $1
           ORDER BY created_at, kind"#,
        id
    )
    .fetch_all(&mut *tx)
    .await
}

/// The declaration made with the donation and the standing claim that holds it.
async fn gift_aid(tx: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<GiftAid> {
    let declaration = sqlx::query_as!(
        Declaration,
        r#"SELECT id, source, declared_at, covers_from, cancelled_at
           FROM gift_aid_declarations WHERE donation_id = $1"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let claim = sqlx::query_as!(
        Claim,
        r#"SELECT k.id, k.status, k.status_at, c.line, c.amount
           FROM gift_aid_claimed_donations c
           JOIN gift_aid_claims k ON k.id = c.claim_id
           WHERE c.donation_id = $1 AND NOT c.released"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(GiftAid {
        declared: declaration.is_some(),
        cancelled: declaration
            .as_ref()
            .is_some_and(|d| d.cancelled_at.is_some()),
        declaration,
        claim,
    })
}
