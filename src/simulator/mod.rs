//! Simulated payments: a small Stripe look-alike served inside the process on a loopback port
//! of its own. With no Stripe key configured, the real Stripe client is pointed here, so local
//! runs go through exactly the code that talks to Stripe in production. No money moves.
//!
//! - `stripe_api`: Stripe's API as the look-alike answers it, to our own Stripe client;
//! - [`controls`]: what a donor, the dashboard, a card issuer or a bank would do to its objects;
//! - [`routes`]: those controls over our API (`/v1/simulator/...`), each delivering the events
//!   it makes, signed, to our own webhook endpoint.
//!
//! It answers the calls quickdonate makes, with Stripe's shapes and Stripe's idempotency rules
//! (same key and same parameters: the same object; other parameters: `idempotency_error`).
//! Its objects, events and idempotency keys live in Postgres (the `simulator_*` tables), so a
//! PaymentIntent made before a restart can still be paid, and an event's objects can still be
//! fetched when it is applied or replayed later. A change to a PaymentIntent is made in one
//! transaction with its row locked, so two controls used at once on one payment act one after
//! the other, as at Stripe.
//!
//! Money moves as it does in a Stripe balance: a charge, a refund, a refund that fails later and
//! a payout each make a balance transaction. A payout pays out every transaction still in the
//! balance, and remembers them, for `GET /v1/balance_transactions?payout=po_...`.

pub mod controls;
pub mod routes;
mod store;
mod stripe_api;

use std::net::SocketAddr;

use sqlx::PgPool;

/// The secret and publishable keys the simulated Stripe hands out and expects.
pub const SECRET_KEY: &str = "sk_test_simulated";
pub const PUBLISHABLE_KEY: &str = "pk_test_simulated";

/// The simulated Stripe, over the database that holds its objects.
#[derive(Clone)]
pub struct SimulatedStripe {
    db: PgPool,
}

/// Why the simulator would not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error("the simulator has no PaymentIntent {0}")]
    UnknownPaymentIntent(String),
    #[error("the PaymentIntent is {0}; it cannot be {1}")]
    WrongState(String, &'static str),
    #[error("must be more than 0 and at most the {0} not yet refunded")]
    BadRefundAmount(i64),
    #[error("the simulator has no refund {0}")]
    UnknownRefund(String),
    #[error("the refund is {0}; only a succeeded refund can fail")]
    RefundCannotFail(String),
    #[error("the simulated balance has nothing to pay out: {0}")]
    NothingToPayOut(String),
    #[error("the simulator could not use its database")]
    Database(#[from] sqlx::Error),
}

impl SimulatedStripe {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Serves the look-alike on a free loopback port; returns its base URL for the client.
    pub async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = stripe_api::router(self.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the simulated Stripe stopped");
            }
        });
        let base = format!("http://{addr}/");
        // Where to read its objects (payouts, balance transactions) with Stripe's API.
        tracing::info!("the simulated Stripe answers Stripe's API at {base}");
        Ok(base)
    }
}
