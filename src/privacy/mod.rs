//! Donor data protected: what we keep of a donor's personal data, and for how long.
//!
//! - stored Stripe events lose their personal data (billing details, emails, names,
//!   addresses, dispute evidence) once applied and older than `EVENT_PAYLOAD_RETENTION`, and
//!   as they are applied once their donor is erased; ids, amounts, statuses and times stay
//!   (`webhooks::payloads`, since the event log is the webhooks').
//! - [`erasure`]: `quickdonate donors erase --email ADDRESS` removes a donor's personal data
//!   from donations, declarations and stored events, keeping only what HMRC requires for Gift
//!   Aid already claimed and what finance needs, and records the erasure in the audit log.
//!
//! Names, emails and addresses never reach the log, Stripe (metadata, description) or a public
//! answer (there are no metrics yet): `tests/api/log_leaks.rs` greps a whole run's log for
//! them, `tests/api/anonymous_gifts.rs` the public answers and what Stripe is sent.

pub mod erasure;

/// What an erased text field reads.
pub const ERASED: &str = "erased";
