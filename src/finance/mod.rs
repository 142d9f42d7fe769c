//! What finance staff need: the ledger of every movement of money, payouts reconciled to it,
//! exports and Gift Aid claims.

pub mod ledger;
pub mod payouts;
pub mod summary;
