use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRef, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::DonationView;
use super::DonationsState;
use super::create::Created;
use crate::http::json::JsonBody;
use crate::http::problem::{ApiResult, Problem};
use crate::idempotency::IdempotencyKey;

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    DonationsState: FromRef<S>,
    PgPool: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
}

// Documentation only: the body is read as JSON and checked by hand, by
// `super::request::DonationRequest::parse`, which names every field at fault at once.
/// A donation request. No other field is taken; every field at fault is named in one 422
/// `/problems/validation`. A `null` counts as a field not given.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DonationRequest)]
#[allow(dead_code)]
struct DonationBody {
    /// The gift in minor units, within the campaign's `min_amount` and `max_amount`.
    #[schema(example = 2500)]
    amount: i64,
    /// The campaign's currency (lower or upper case); by default, the campaign's.
    currency: Option<String>,
    /// `one_off` (`monthly` answers `/problems/not-supported`).
    #[schema(example = "one_off")]
    frequency: String,
    donor: DonorBody,
    /// The donor asks to stay anonymous (stored with the gift); default false.
    anonymous: Option<bool>,
    /// Add the card fee to the charge, so the charity keeps at least `amount`; default false.
    cover_fees: Option<bool>,
    gift_aid: Option<GiftAidBody>,
}

/// The donor. Kept apart from logs.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Donor)]
#[allow(dead_code)]
struct DonorBody {
    /// An email address with a top-level domain, at most 254 characters.
    email: String,
    /// At most 100 characters.
    first_name: String,
    /// At most 100 characters.
    last_name: String,
}

/// A Gift Aid declaration. A declaration not made (`declared: false`) stores no address.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GiftAidDeclaration)]
#[allow(dead_code)]
struct GiftAidBody {
    declared: bool,
    /// At most 4 characters (`Ms`, `Dr`).
    title: Option<String>,
    /// Required for a declaration; at most 40 characters.
    house_name_or_number: Option<String>,
    /// Required for a declaration from the UK (a UK postcode); at most 16 characters.
    postcode: Option<String>,
    /// By default the UK; at most 56 characters.
    country: Option<String>,
}

/// `POST /v1/campaigns/{slug}/donations`: a pending donation and the PaymentIntent to pay it.
#[utoipa::path(
    post,
    path = "/v1/campaigns/{slug}/donations",
    operation_id = "createDonation",
    tag = "donations",
    summary = "Make a donation",
    description = "Records a pending donation and creates the Stripe PaymentIntent that \
                   Stripe.js confirms. Retry-safe with an `Idempotency-Key`: the same key with \
                   the same request answers the first answer again (`Idempotent-Replayed: \
                   true`). Checked against the card-testing caps before anything is written.",
    params(
        ("slug" = String, Path, description = "The campaign's slug.", example = "kashmir"),
        ("Idempotency-Key" = Option<String>, Header,
         description = "1 to 255 visible ASCII characters (a bare token, or a structured-field \
                        string `\"...\"`). The same key with the same request replays the first \
                        answer; with another request it is 422; while the first is still being \
                        worked on, 409.",
         example = "5b0c9e1e-4d43-4d5e-9a59-7b1e0f2f6a01"),
        ("Captcha-Token" = Option<String>, Header,
         description = "A solved captcha's token, once a 403 `/problems/captcha-required` asked \
                        for one."),
    ),
    request_body(content = DonationBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The donation, pending. A replay of the same key answers \
                                      the same body with `Idempotent-Replayed: true`.",
         body = Created,
         headers(
             ("Location" = String, description = "`/v1/donations/{id}`"),
             ("Idempotent-Replayed" = String, description = "`true` on a replay"),
         )),
        (status = 400, description = "`/problems/malformed-json`, `/problems/unreadable-body` \
                                      or `/problems/invalid-idempotency-key`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`/problems/captcha-required`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`/problems/not-found`: no such campaign.",
         body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/campaign-inactive`, \
                                      `/problems/idempotency-key-in-use` or \
                                      `/problems/donation-abandoned`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`/problems/body-too-large`: over 16 KiB.",
         body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`/problems/unsupported-media-type`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation` (with `errors`), \
                                      `/problems/not-supported` or \
                                      `/problems/idempotency-key-reused`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`/problems/too-many-attempts`.",
         body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds until a new attempt may count."))),
        (status = 502, description = "`/problems/payment-provider-error`: nothing was charged.",
         body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`/problems/payment-provider-unavailable` or \
                                      `/problems/service-unavailable`: retry with the same \
                                      Idempotency-Key.",
         body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
async fn create(
    State(state): State<DonationsState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let client = state.limits.proxies.client_ip(peer, &headers);
    let captcha = headers
        .get("captcha-token")
        .and_then(|value| value.to_str().ok());
    super::create::create_donation(&state, &slug, key, client, captcha, &body).await
}

/// `GET /v1/donations/{id}`: where a donation is; no donor data.
#[utoipa::path(
    get,
    path = "/v1/donations/{id}",
    operation_id = "showDonation",
    tag = "donations",
    summary = "A donation",
    description = "Where a donation is: its status and amounts. No donor data.",
    params(("id" = String, Path, description = "The donation's id (a UUID).")),
    responses(
        (status = 200, description = "The donation.", body = DonationView),
        (status = 404, description = "`/problems/not-found`: no such donation.", body = Problem,
         content_type = "application/problem+json"),
        (status = 503, description = "`/problems/service-unavailable`.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn show(State(db): State<PgPool>, Path(id): Path<String>) -> ApiResult<Json<DonationView>> {
    let not_found = || Problem::not_found(format!("There is no donation {id:?}."));
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let donation = super::find(&db, uuid).await?.ok_or_else(not_found)?;
    Ok(Json(donation))
}
