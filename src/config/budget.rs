//! The time a donor's request has, and how calls to Stripe fit inside it. None of these can be
//! set; they are here, beside the settings, because `STRIPE_TIMEOUT_SECS` must fit within
//! them: every attempt at a Stripe call timing out, and the back-off between the attempts, must
//! end before the request's own timeout, or a donor's request is cut off mid-retry.

use std::time::Duration;

/// No request may take longer than this (the HTTP layer's timeout); Stripe calls have their
/// own, shorter one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts at one Stripe call that failed in a way worth repeating (network, 429, 5xx).
pub const STRIPE_ATTEMPTS: u32 = 3;

/// The back-off after a failed attempt at a Stripe call: this, times the attempt's number.
pub const STRIPE_BACKOFF: Duration = Duration::from_millis(200);

/// The back-off slept between attempts at one Stripe call, all told.
pub fn stripe_backoff() -> Duration {
    (1..STRIPE_ATTEMPTS)
        .map(|attempt| STRIPE_BACKOFF * attempt)
        .sum()
}

/// The longest `STRIPE_TIMEOUT_SECS` for which every attempt at one Stripe call, timing out,
/// and the back-off between them end before the request timeout does.
pub fn max_stripe_timeout_secs() -> u64 {
    let budget = REQUEST_TIMEOUT.saturating_sub(stripe_backoff()).as_nanos();
    // Strictly within the budget: the request still has to answer.
    let max = budget.saturating_sub(1) / (u128::from(STRIPE_ATTEMPTS) * 1_000_000_000);
    u64::try_from(max).unwrap_or(u64::MAX)
}
