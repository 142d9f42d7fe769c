//! Finance (placeholder until the finance-access foundation lands).

pub mod gift_aid;
