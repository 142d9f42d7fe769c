//! Gift Aid: declarations as the donor's own records, HMRC's schedule of the eligible gifts
//! not yet claimed, and claims that never take a donation twice.
//!
//! A donation is eligible when it succeeded, in pounds; nothing of it was refunded (a pending
//! refund counts) and it was never disputed; Stripe received at least the gift; and a
//! declaration of its donor (the same email, whatever its case: the one made with it, or any
//! other) covers its date and was not cancelled before it. Only the gift is claimed, never the
//! donor's fee cover. A claimed donation that is refunded or disputed afterwards is an
//! adjustment, carried once by the next claim.

pub mod address;
pub mod claims;
pub mod ods;
pub mod routes;
pub mod schedule;
pub mod store;

use serde::Serialize;
use uuid::Uuid;

/// Gift Aid is claimed on sterling gifts only.
pub const CURRENCY: &str = "gbp";

/// HMRC's model wording for a declaration covering this gift, the past 4 years and the future
/// (the one the donation form takes), with the charity's name in place of `{charity}`. The
/// donor's receipt repeats it.
pub const DECLARATION: &str = "I want to Gift Aid my donation and any donations I make in \
the future or have made in the past 4 years to {charity}. I am a UK taxpayer and understand \
that if I pay less Income Tax and/or Capital Gains Tax than the amount of Gift Aid claimed on \
all my donations in that tax year it is my responsibility to pay any difference.";

/// [`DECLARATION`] for `charity`.
pub fn declaration(charity: &str) -> String {
    DECLARATION.replace("{charity}", charity)
}

/// A claimed donation since refunded or disputed: what was claimed on it is to be paid back
/// through the next claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = GiftAidAdjustment)]
pub struct Adjustment {
    pub donation_id: Uuid,
    /// The claim that claimed the donation.
    pub claim_id: Uuid,
    /// What that claim claimed for it, in pence.
    pub amount: i64,
    #[schema(value_type = String)]
    pub currency: &'static str,
    /// `refunded` or `disputed`.
    pub reason: String,
}

/// The adjustments sheet's columns.
pub const ADJUSTMENT_COLUMNS: [&str; 4] = ["Donation", "Claimed in claim", "Amount", "Reason"];
