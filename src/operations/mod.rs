//! Operations: what keeps the service watched and reachable. Liveness and readiness for load
//! balancers and orchestrators ([`health`]), and the metrics a scraper reads ([`metrics`]).

pub mod health;
pub mod metrics;
