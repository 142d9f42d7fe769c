//! The reference quick-donate page, `GET /donate/{slug}`: plain HTML, CSS and JavaScript compiled
//! into the binary. It calls the public API as any website would (create the donation with an
//! Idempotency-Key, pay, then wait for the webhook-confirmed status), so it is both a page a
//! charity can embed as it is and a worked example for a website's own form.
//!
//! The page is rendered from `donate.html` by askama, which escapes every value;
//! what the script needs (the campaign, the fee model, how payments are taken) travels in
//! `data-` attributes, so the page carries no inline script and its policy allows none.

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::campaigns::Campaign;
use crate::config::Config;
use crate::donations::fees::FeeModel;
use crate::http::problem::{ApiResult, Problem};
use crate::money;

const SCRIPT: &str = include_str!("donate.js");
const STYLE: &str = include_str!("donate.css");

/// Stripe.js and the Payment Element's frames, as Stripe's security guide lists them; only
/// allowed when a real Stripe key is set.
const STRIPE_SCRIPTS: &str = "https://js.stripe.com https://*.js.stripe.com";
const STRIPE_FRAMES: &str =
    "https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com";
const STRIPE_API: &str = "https://api.stripe.com";

/// What the page needs beyond the campaign, fixed at start-up.
#[derive(Debug, Clone)]
pub struct PageSettings {
    /// Named in the Gift Aid declaration, as HMRC's model wording requires.
    pub charity_name: String,
    /// The page's `Content-Security-Policy`, `frame-ancestors` included.
    content_security_policy: HeaderValue,
}

impl PageSettings {
    /// `allowed_origins` (`ALLOWED_ORIGINS`) may frame the page; `stripe` is whether payments go
    /// to the real Stripe, whose script and frames the page then loads.
    pub fn new(charity_name: String, allowed_origins: &[HeaderValue], stripe: bool) -> Self {
        let ancestors = allowed_origins
            .iter()
            .filter_map(|origin| origin.to_str().ok())
            .fold(String::from("'self'"), |list, origin| list + " " + origin);
        let (scripts, frames, connect) = if stripe {
            (
                format!("'self' {STRIPE_SCRIPTS}"),
                STRIPE_FRAMES.to_owned(),
                format!("'self' {STRIPE_API}"),
            )
        } else {
            (
                "'self'".to_owned(),
                "'none'".to_owned(),
                "'self'".to_owned(),
            )
        };
        let policy = format!(
            "default-src 'none'; script-src {scripts}; style-src 'self'; img-src 'self' data:; \
             connect-src {connect}; frame-src {frames}; form-action 'self'; base-uri 'none'; \
             frame-ancestors {ancestors}"
        );
        Self {
            charity_name,
            content_security_policy: HeaderValue::from_str(&policy)
                .expect("origins were checked as header values"),
        }
    }
}

/// What the page touches: the database (its campaign), and what it says beyond the campaign.
#[derive(Clone)]
pub struct PageState {
    pub db: PgPool,
    pub settings: Arc<PageSettings>,
    /// The fee model, for the fee cover the page offers.
    pub fees: FeeModel,
    /// The Stripe publishable key Stripe.js is loaded with.
    pub publishable_key: String,
    /// Whether payments are simulated: the page offers a labelled simulated card instead of
    /// Stripe's Payment Element.
    pub simulated: bool,
}

impl PageState {
    pub fn new(db: PgPool, config: &Config, publishable_key: &str, simulated: bool) -> Self {
        Self {
            db,
            settings: Arc::new(PageSettings::new(
                config.receipts.charity_name.clone(),
                &config.allowed_origins,
                !simulated,
            )),
            fees: FeeModel::new(config.fees),
            publishable_key: publishable_key.to_owned(),
            simulated,
        }
    }
}

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PageState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(asset))
}

/// One amount button: `£25` for a whole number of pounds, `£12.50` otherwise.
struct Preset {
    amount: i64,
    label: String,
}

#[derive(Template)]
#[template(path = "donate.html")]
struct Page<'a> {
    campaign: &'a Campaign,
    raised: String,
    goal: Option<String>,
    presets: Vec<Preset>,
    /// The currency's symbol or code, for the "Other amount" field's label.
    unit: String,
    fees: FeeModel,
    /// `simulated` or `stripe`.
    payments: &'static str,
    publishable_key: &'a str,
    gift_aid: bool,
    declaration: String,
    /// The currency's decimal places, so the script reads amounts as the server does.
    exponent: u32,
    /// Names this build's script and style, so a page never runs with a cached older script.
    version: &'static str,
}

/// `GET /donate/{slug}`: the campaign's quick-donate page.
#[utoipa::path(
    get,
    path = "/donate/{slug}",
    operation_id = "donatePage",
    tag = "donation page",
    summary = "The quick-donate page",
    description = "A reference quick-donate page for an active campaign, as HTML, for a donor's \
                   browser or an iframe on an `ALLOWED_ORIGINS` origin. It calls the public \
                   API itself; its `Content-Security-Policy` allows only this service (and \
                   Stripe's script, frames and API with a real Stripe key).",
    params(("slug" = String, Path, description = "The campaign's slug.", example = "kashmir")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 404, description = "No active campaign has this slug.", body = String,
         content_type = "text/html"),
        (status = 503, description = "`/problems/service-unavailable`: the database is out \
                                      of reach.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn page(State(state): State<PageState>, Path(slug): Path<String>) -> ApiResult<Response> {
    let settings = &state.settings;
    let Some(campaign) = crate::campaigns::find(&state.db, &slug)
        .await?
        .filter(|campaign| campaign.active)
    else {
        return Ok(html(
            settings,
            StatusCode::NOT_FOUND,
            "<!doctype html><html lang=\"en-GB\"><meta charset=\"utf-8\"><title>Not found</title>\
             <h1>There is no campaign here</h1>"
                .to_owned(),
        ));
    };
    let currency = campaign.currency.as_str();
    let page = Page {
        raised: money::grouped(campaign.raised_amount, currency),
        goal: campaign.goal_amount.map(|goal| short_money(goal, currency)),
        presets: campaign
            .suggested_amounts
            .iter()
            .map(|&amount| Preset {
                amount,
                label: short_money(amount, currency),
            })
            .collect(),
        unit: unit(currency),
        fees: state.fees,
        payments: if state.simulated {
            "simulated"
        } else {
            "stripe"
        },
        publishable_key: &state.publishable_key,
        // Gift Aid is a UK tax relief on gifts in pounds.
        gift_aid: currency == "gbp",
        declaration: crate::gift_aid::declaration(&settings.charity_name),
        exponent: money::exponent(currency),
        version: asset_version(),
        campaign: &campaign,
    };
    let body = page.render().map_err(|error| {
        tracing::error!(%error, "the donation page did not render");
        Problem::internal()
    })?;
    Ok(html(settings, StatusCode::OK, body))
}

fn html(settings: &PageSettings, status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_SECURITY_POLICY,
                settings.content_security_policy.clone(),
            ),
            // The progress shown is at most a minute old; a missing page is not remembered, so
            // a campaign that opens shows at once.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(if status.is_success() {
                    "max-age=60"
                } else {
                    "no-store"
                }),
            ),
        ],
        Html(body),
    )
        .into_response()
}

/// `GET /donate/assets/{file}`: the page's script and style. The page asks for them with this
/// build's [`asset_version`], so a browser may keep them for a day.
#[utoipa::path(
    get,
    path = "/donate/assets/{file}",
    operation_id = "donatePageAsset",
    tag = "donation page",
    summary = "The donation page's script and style",
    params(("file" = String, Path, description = "`donate.js` or `donate.css`.",
            example = "donate.js")),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/javascript"),
        (status = 404, description = "`/problems/not-found`: no such file.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn asset(Path(file): Path<String>) -> Result<Response, Problem> {
    let (content_type, body) = match file.as_str() {
        "donate.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "donate.css" => ("text/css; charset=utf-8", STYLE),
        _ => {
            return Err(Problem::not_found(format!(
                "The page has no file {file:?}."
            )));
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        body,
    )
        .into_response())
}

/// A digest of the script and style (FNV-1a, 64 bits, in hex): it changes whenever they do.
fn asset_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| crate::http::browser::asset_version(&[SCRIPT, STYLE]))
}

/// [`money::grouped`] without a whole amount's `.00`: `£25`, `£12.50`, `£50,000`.
fn short_money(amount: i64, currency: &str) -> String {
    let full = money::grouped(amount, currency);
    match full.strip_suffix(".00") {
        Some(whole) => whole.to_owned(),
        None => full.replacen(".00 ", " ", 1),
    }
}

/// What the "Other amount" field is counted in: `£`, or the currency's code.
fn unit(currency: &str) -> String {
    let one = money::format(100, currency);
    match one.strip_suffix("1.00") {
        Some(symbol) if !symbol.is_empty() => symbol.to_owned(),
        _ => currency.to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_on_buttons_drop_a_whole_amounts_pence() {
        assert_eq!(short_money(2500, "gbp"), "£25");
        assert_eq!(short_money(5_000_000, "gbp"), "£50,000");
        assert_eq!(money::grouped(123_456_789, "gbp"), "£1,234,567.89");
        assert_eq!(money::grouped(-100_000, "eur"), "-€1,000.00");
        assert_eq!(money::grouped(99, "usd"), "$0.99");
        assert_eq!(short_money(1_000_000, "jpy"), "1,000,000 JPY");
        assert_eq!(short_money(1250, "gbp"), "£12.50");
        assert_eq!(short_money(2500, "sek"), "25 SEK");
        assert_eq!(short_money(2500, "jpy"), "2,500 JPY");
        assert_eq!(unit("gbp"), "£");
        assert_eq!(unit("eur"), "€");
        assert_eq!(unit("sek"), "SEK");
        assert_eq!(unit("jpy"), "JPY");
    }

    #[test]
    fn only_the_allowed_origins_may_frame_the_page_and_stripe_only_with_a_real_key() {
        let origins = [HeaderValue::from_static("https://www.example.org")];
        let simulated = PageSettings::new("A".into(), &origins, false);
        let policy = simulated.content_security_policy.to_str().unwrap();
        assert!(policy.ends_with("frame-ancestors 'self' https://www.example.org"));
        assert!(policy.contains("script-src 'self';"));
        assert!(!policy.contains("stripe"));
        let real = PageSettings::new("A".into(), &[], true);
        let policy = real.content_security_policy.to_str().unwrap();
        assert!(policy.contains("script-src 'self' https://js.stripe.com"));
        assert!(policy.contains("connect-src 'self' https://api.stripe.com;"));
        assert!(policy.ends_with("frame-ancestors 'self'"));
        assert!(!policy.contains("unsafe"));
    }
}
