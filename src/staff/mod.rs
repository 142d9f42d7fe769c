//! The finance staff's console, `/staff`: server-rendered pages for the people who reconcile the
//! books, signed in with passkeys.
//!
//! - [`accounts`]: staff accounts and their one-time enrolment links (`quickdonate staff ...`);
//! - [`passkeys`]: WebAuthn ceremonies (registering a passkey, signing in with one);
//! - [`sessions`]: the session cookie, its limits, CSRF, and the extractors of every page;
//! - [`log`]: the append-only log of every sign-in, failure and sign-out;
//! - [`api`]: the finance API called in-process, the only way pages read or act;
//! - [`sign_in`]: the sign-in, enrolment and sign-out routes;
//! - [`pages`]: the console's pages, each rendered from what the finance API answered.

pub mod accounts;
pub mod api;
pub mod log;
pub mod pages;
pub mod passkeys;
pub mod sessions;
pub mod sign_in;

use std::sync::Arc;

use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;
use webauthn_rs::prelude::Webauthn;

use crate::config::Config;
use crate::http::client::Proxies;
use sessions::Sessions;

/// What the console touches: the database (accounts, sessions, the log), the relying party, and
/// how sessions last. Everything it shows comes through [`api::Api`].
#[derive(Clone)]
pub struct StaffState {
    pub db: sqlx::PgPool,
    pub webauthn: Arc<Webauthn>,
    pub sessions: Sessions,
    pub proxies: Proxies,
    /// Named on every page.
    pub charity_name: Arc<str>,
}

impl StaffState {
    pub fn new(db: sqlx::PgPool, config: &Config) -> anyhow::Result<Self> {
        let staff = &config.staff;
        Ok(Self {
            db,
            webauthn: Arc::new(passkeys::relying_party(
                staff,
                &config.receipts.charity_name,
            )?),
            sessions: Sessions {
                idle: staff.idle,
                max: staff.max,
                secure: staff.secure,
                origin: staff.origin.clone(),
            },
            proxies: Proxies::new(config.card_testing.trusted_proxies.clone()),
            charity_name: config.receipts.charity_name.as_str().into(),
        })
    }
}

/// Every `/staff` route. The pages need the finance API's routes: `app::routes` adds them as
/// an `Extension<api::Api>`.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    StaffState: FromRef<S>,
{
    sign_in::routes().merge(pages::routes())
}
