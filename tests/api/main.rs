//! One test binary, so the throwaway Postgres starts once for all the API tests.

mod bad_input;
mod campaigns;
mod disputes;
mod donations;
mod events;
mod finance_access;
mod gift_aid;
mod health;
mod helpers;
mod idempotency;
mod operators;
mod out_of_the_box;
mod payments_mode;
mod poison;
mod simulator;
mod storms;
mod webhooks;
