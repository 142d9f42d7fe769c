//! Donations: created pending by the website's request, then moved on by Stripe.

pub mod abandoned;
mod create;
pub mod fees;
pub mod limits;
pub mod recovered;
pub mod request;
mod routes;

pub use routes::router;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::payments::Payments;
use crate::payments::status::PaymentStatus;
use fees::FeeModel;
use limits::{Captcha, Limits};

/// What making a donation touches: the database, Stripe, the fee model, Idempotency-Keys, the
/// card-testing caps (and their captcha), and the metrics of refusals.
#[derive(Clone)]
pub struct DonationsState {
    pub db: PgPool,
    pub payments: Payments,
    pub fees: FeeModel,
    /// How long a request may hold its Idempotency-Key before another may take it over.
    pub idempotency_lease: Duration,
    pub limits: Arc<Limits>,
    /// The captcha those a cap refused must solve, if one is configured.
    pub captcha: Option<Captcha>,
    pub metrics: Metrics,
    /// The Gift Aid declaration's words the form shows, with the charity's name: kept with
    /// each declaration made.
    pub declaration: Arc<str>,
}

impl DonationsState {
    pub fn new(db: PgPool, payments: Payments, config: &Config, metrics: Metrics) -> Self {
        Self {
            db,
            payments,
            fees: FeeModel::new(config.fees),
            // Longer than the slowest Stripe call with its retries, so a live request keeps
            // its key.
            idempotency_lease: config.stripe.timeout * 4 + Duration::from_secs(30),
            limits: Arc::new(Limits::new(&config.card_testing)),
            captcha: config.card_testing.captcha.as_ref().map(Captcha::new),
            metrics,
            declaration: crate::gift_aid::declaration(&config.receipts.charity_name).into(),
        }
    }
}

/// Where a donation is in its life. It only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DonationStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
    Canceled,
    Refunded,
}

impl DonationStatus {
    /// Every status, in the order a donation can go through them.
    pub const ALL: [DonationStatus; 6] = [
        Self::Pending,
        Self::Processing,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
        Self::Refunded,
    ];

    /// Every status's word, in the same order.
    pub const NAMES: [&'static str; 6] = [
        "pending",
        "processing",
        "succeeded",
        "failed",
        "canceled",
        "refunded",
    ];

    /// The word the API and the database say.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Refunded => "refunded",
        }
    }
}

/// A donation is where its payment is, until it is refunded in full.
impl From<PaymentStatus> for DonationStatus {
    fn from(payment: PaymentStatus) -> Self {
        match payment {
            PaymentStatus::Pending => Self::Pending,
            PaymentStatus::Failed => Self::Failed,
            PaymentStatus::Processing => Self::Processing,
            PaymentStatus::Succeeded => Self::Succeeded,
            PaymentStatus::Canceled => Self::Canceled,
        }
    }
}

/// A donation as `GET /v1/donations/{id}` shows it: no donor data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DonationView {
    pub id: Uuid,
    pub status: DonationStatus,
    pub campaign: String,
    pub amount: i64,
    pub total_amount: i64,
    pub currency: String,
    /// Refunded so far, in minor units, from every refund, partial or full, ours or the
    /// dashboard's.
    pub refunded_amount: i64,
    /// Null if never disputed; else `inquiry`, `inquiry_closed`, `prevented`,
    /// `needs_response`, `under_review`, `won`, `lost`, or `open` for a status Stripe added
    /// that we do not know yet.
    pub dispute_status: Option<String>,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<DonationView>> {
    sqlx::query_as!(
        DonationView,
        r#"SELECT id, status AS "status: DonationStatus", campaign, amount, total_amount,
                  currency, refunded_amount, dispute_status, created_at
           FROM donations WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}
