//! Payouts: what Stripe sent to the bank, the balance transactions each one contains, and
//! their reconciliation against the ledger.
//!
//! On a payout's events the worker records its latest status and, once the money has moved
//! (paid, failed, or reconciled by Stripe), lists the payout's balance transactions from
//! Stripe, every page, before any transaction begins. The listing is kept as Stripe gave it;
//! the reconciliation is worked out when asked for, so it always reflects the ledger as it is.
//!
//! - [`apply`]: what the worker records of a batch's payout events;
//! - [`reconcile`]: each payout against the ledger, and the gifts overdue a payout;
//! - [`routes`]: `GET /v1/finance/payouts`, `.../{id}` and `.../overdue-donations`.

pub mod apply;
pub mod reconcile;
pub mod routes;

pub use apply::{Call, PayoutWork};
