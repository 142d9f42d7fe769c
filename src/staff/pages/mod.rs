//! The console's pages. Each reads through the finance API ([`super::api::Api`]) as the
//! signed-in person and renders what it answered: askama templates (escaped by default) in
//! `src/staff/templates/`, one stylesheet, one script, no inline script or style, and a policy
//! that allows nothing else. Every filter is in the address, so a page can be bookmarked and
//! shared.
//!
//! - [`overview`]: today, this week and this month per campaign, 90 days' chart, what needs
//!   attention;
//! - [`donations`]: the finance list, its filters and search, and one donation whole;
//! - [`payouts`]: payouts with their reconciliation, one payout's lines, overdue donations;
//! - [`gift_aid`]: the schedule, its workbook, claims prepared and moved through their life;
//! - [`exports`]: every download, streamed from the finance API's own exports;
//! - [`admin`]: the audit log, the staff log and the staff accounts (admins only).

pub mod admin;
pub mod donations;
pub mod exports;
pub mod gift_aid;
pub mod overview;
pub mod payouts;

use askama::Template;
use axum::extract::FromRef;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::StaffState;
use super::api::Failed;
use super::sessions::Signed;

/// The console's `Content-Security-Policy`: its own script, style and images, forms posted to
/// itself, never framed.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                          img-src 'self'; connect-src 'self'; form-action 'self'; \
                          base-uri 'none'; frame-ancestors 'none'";

pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    StaffState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(overview::page))
        .routes(routes!(donations::list))
        .routes(routes!(donations::show))
        .routes(routes!(payouts::list))
        .routes(routes!(payouts::show))
        .routes(routes!(gift_aid::page))
        .routes(routes!(gift_aid::prepare))
        .routes(routes!(gift_aid::claim))
        .routes(routes!(gift_aid::move_claim))
        .routes(routes!(exports::page))
        .routes(routes!(exports::file))
        .routes(routes!(admin::page))
        .routes(routes!(admin::invite))
        .routes(routes!(admin::revoke))
        .routes(routes!(admin::replay))
}

/// What every page's frame shows: the charity, the page's title, who is signed in.
pub struct Shell {
    pub charity: String,
    pub title: String,
    /// The navigation's current section (`overview`, `donations`, ...).
    pub section: &'static str,
    pub person: Option<Person>,
    pub version: &'static str,
}

/// Who is signed in, for the frame: their name, whether they are an admin, the sign-out form's
/// CSRF token.
pub struct Person {
    pub name: String,
    pub role: &'static str,
    pub admin: bool,
    pub csrf: String,
}

impl Shell {
    pub fn signed_out(state: &StaffState, title: &str) -> Self {
        Self {
            charity: state.charity_name.to_string(),
            title: title.to_owned(),
            section: "",
            person: None,
            version: super::sign_in::asset_version(),
        }
    }

    pub fn signed_in(
        state: &StaffState,
        signed: &Signed,
        title: &str,
        section: &'static str,
    ) -> Self {
        Self {
            person: Some(Person {
                name: signed.name.clone(),
                role: signed.role.as_str(),
                admin: signed.is_admin(),
                csrf: signed.csrf.clone(),
            }),
            section,
            ..Self::signed_out(state, title)
        }
    }
}

/// A page as HTML with the console's policy, never cached (it shows donors' data).
pub fn html(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(POLICY),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                // Not `no-referrer`: under it a browser sends `Origin: null` with a form post,
                // and the console refuses a post from any origin but its own.
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ),
            ],
            Html(body),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "a console page did not render");
            crate::http::problem::Problem::internal().into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "refusal.html")]
struct Refusal<'a> {
    heading: &'a str,
    detail: &'a str,
    version: &'static str,
}

/// A short page that says why not, with `status`.
pub fn refusal_page(status: StatusCode, heading: &str, detail: &str) -> Response {
    html(
        status,
        Refusal {
            heading,
            detail,
            version: super::sign_in::asset_version(),
        },
    )
}

/// A page for what the API refused or failed, with its status.
pub fn failed_page(failed: Failed) -> Response {
    let heading = if failed.title.is_empty() {
        "Something went wrong"
    } else {
        &failed.title
    };
    refusal_page(failed.status, heading, &failed.detail)
}

/// Money as people read it, with its thousands grouped: `£1,234.50`.
pub fn money(amount: i64, currency: &str) -> String {
    crate::money::grouped(amount, currency)
}

/// An RFC 3339 time as the console shows it: `2026-12-07 14:03` (UTC).
pub fn when(rfc3339: &str) -> String {
    rfc3339
        .get(..16)
        .map(|text| text.replacen('T', " ", 1))
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// A query string or form body read into `T`: every value a string, unknown keys ignored.
pub fn read_pairs<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let pairs: serde_json::Map<String, serde_json::Value> = form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(serde_json::Value::Object(pairs)).map_err(|error| error.to_string())
}
