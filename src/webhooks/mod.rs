//! Stripe's signed webhooks: verified on the raw bytes, stored durably, answered, then applied
//! by the [`worker`].
//!
//! The intake, on the answer's path:
//! - `intake`: `POST /v1/webhooks/stripe`, and what it touches ([`IntakeState`]);
//! - [`signature`]: `Stripe-Signature`, checked before anything parses the body;
//! - [`kind`]: which event types we apply, and what each is about;
//! - [`ingest`]: group commit, many requests' events stored in one durable commit;
//! - [`log`]: the durable event log, what it holds and its backlog;
//! - [`payloads`]: stored events stripped of personal data, after the retention or once their
//!   donor is erased.
//!
//! Applying, in the background:
//! - [`worker`]: the loops, a batch at a time, applied at once or claimed;
//! - [`queue`]: claims, leases and each event's outcome in the log;
//! - [`plan`]: a batch's events read, tied to their donations, and what they need from Stripe;
//! - `fetch`: the Stripe calls a batch needs, made holding nothing;
//! - `batch`: a batch sorted into what to apply by what Stripe answered;
//! - [`apply`]: the merge into donations, refunds, disputes and the ledger, in one transaction.
//!
//! And [`admin`]: what operators do with the log from the command line; [`events_api`]: its
//! failures listed and replayed by finance admins (`/v1/finance/events`).

pub mod admin;
pub mod apply;
mod batch;
pub mod events_api;
mod fees;
mod fetch;
pub mod ingest;
mod intake;
pub mod kind;
pub mod log;
pub mod payloads;
pub mod plan;
pub mod queue;
pub mod signature;
pub mod worker;

use axum::extract::FromRef;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;

pub use intake::IntakeState;

/// The feature's routes: Stripe's webhook endpoint, and the event log's failures for finance
/// admins.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: FromRef<S>,
    crate::db::Reads: FromRef<S>,
    IntakeState: FromRef<S>,
{
    intake::router().merge(events_api::router())
}
