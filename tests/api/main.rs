//! One test binary, so the throwaway Postgres starts once for all the API tests.

mod abandoned;
mod arbitrary;
mod bad_input;
mod browser;
mod campaigns;
mod card_testing;
mod disputes;
mod donations;
mod events;
mod faults;
mod finance_access;
mod finance_donations;
mod gift_aid;
mod health;
mod helpers;
mod idempotency;
mod ledger;
mod operators;
mod out_of_the_box;
mod payments_mode;
mod payouts;
mod poison;
mod simulator;
mod storms;
mod unexpected_input;
mod webhooks;
