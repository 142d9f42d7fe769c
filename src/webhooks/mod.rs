//! Stripe's signed webhooks: verified on the raw bytes, stored durably, answered, then applied
//! by the [`worker`].

pub mod admin;
pub mod apply;
pub mod ingest;
mod intake;
pub mod log;
pub mod plan;
pub mod queue;
pub mod signature;
pub mod worker;

pub use intake::{IntakeState, router};
