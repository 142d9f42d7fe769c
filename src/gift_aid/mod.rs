//! Gift Aid: declarations as the donor's own records, HMRC's schedule of the eligible gifts
//! not yet claimed, and claims that never take a donation twice.
//!
//! A donation is eligible when it succeeded, in pounds; Stripe received at least the gift and
//! (by default) paid it out to the bank; no refund of it is pending and no dispute open; its
//! accounting period ended less than 4 years ago; and a declaration of its donor (the same
//! email, whatever its case: the one made with it, or any other) covers its date and was not
//! cancelled before it. Only the gift is claimed, never the donor's fee cover, and only what of
//! it the charity kept. What of a claimed gift is given back afterwards (a succeeded refund, a
//! chargeback lost) is an adjustment: the tax on it, repaid once through the next claim.

pub mod claims;
pub mod declarations;
pub mod donor;
pub mod ods;
pub mod periods;
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

/// Which wording [`DECLARATION`] is, kept with each declaration made with it. A change to the
/// words is a new version.
pub const DECLARATION_VERSION: &str = "hmrc-model-one-off-1";

/// [`DECLARATION`] for `charity`.
pub fn declaration(charity: &str) -> String {
    DECLARATION.replace("{charity}", charity)
}

/// How Gift Aid is claimed here, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub making: schedule::Making,
    /// Only gifts in a paid payout are claimed (`GIFT_AID_CLAIM_AFTER_PAYOUT`).
    pub claim_after_payout: bool,
}

impl Rules {
    pub fn from_config(config: &crate::config::GiftAid) -> Self {
        Self {
            making: schedule::Making {
                aggregate_up_to: config.aggregate_up_to,
                year_end: periods::YearEnd::new(config.year_end_month, config.year_end_day)
                    .expect("the year end was checked with the settings"),
            },
            claim_after_payout: config.claim_after_payout,
        }
    }
}

/// The Gift Aid on `pence` given: a quarter (basic rate 20%: 25p per £1), to the nearest
/// penny, a half penny up.
pub fn tax_on(pence: i64) -> i64 {
    (pence + 2).div_euclid(4)
}

/// Part of a claimed gift given back since it was claimed: the tax claimed on that part is to
/// be repaid through the next claim (HMRC's "previously overclaimed" box), once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = GiftAidAdjustment)]
pub struct Adjustment {
    pub donation_id: Uuid,
    /// The claim that claimed the gift.
    pub claim_id: Uuid,
    /// What gave it back: a refund's or a dispute's Stripe id.
    pub cause: String,
    /// `refund` or `dispute` (a chargeback lost).
    pub cause_kind: String,
    /// Pence of the claimed gift given back.
    pub given_back: i64,
    /// The tax overclaimed on it: 25% of `given_back`, in pence.
    pub tax: i64,
    #[schema(value_type = String)]
    pub currency: &'static str,
}
