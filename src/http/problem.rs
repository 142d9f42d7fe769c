//! Every error the API returns: an RFC 9457 `application/problem+json` body whose `type` is one
//! of a closed catalogue ([`ProblemType`]). A 5xx never carries internal detail; its cause is
//! logged inside the request's span instead.
//!
//! Each feature maps its own errors to problems; this module knows none of them.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db;

/// One field of a request and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as a path into the body (`donor.email`) or the query parameter's name; empty
    /// for the body as a whole.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Declares the catalogue: the enum, the list of every member, and each member's status, slug,
/// title and meaning, from one table.
macro_rules! catalogue {
    ($($(#[$doc:meta])* $name:ident = $status:ident, $slug:literal, $title:literal, $meaning:literal;)*) => {
        /// Every problem the API can answer. The catalogue is closed: a [`Problem`] is made
        /// from one of these alone, the OpenAPI document's `Problem` schema lists them (its
        /// table and its `type` values are written from [`ProblemType::ALL`]), and the README's
        /// tables are checked against them (`tests/api/openapi.rs`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemType {
            $($(#[$doc])* $name,)*
        }

        impl ProblemType {
            /// Every problem type, in the order the documentation lists them.
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$name,)*];

            /// The HTTP status it is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ProblemType::$name => StatusCode::$status,)*
                }
            }

            /// Its name: the last part of its `type`, `/problems/<slug>`.
            pub fn slug(self) -> &'static str {
                match self {
                    $(ProblemType::$name => $slug,)*
                }
            }

            /// A short summary, the same for every problem of the type.
            pub fn title(self) -> &'static str {
                match self {
                    $(ProblemType::$name => $title,)*
                }
            }

            /// What it means, for the documentation's table.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ProblemType::$name => $meaning,)*
                }
            }
        }
    };
}

catalogue! {
    Validation = UNPROCESSABLE_ENTITY, "validation", "The request has invalid fields",
        "fields are invalid; `errors` names each";
    NotSupported = UNPROCESSABLE_ENTITY, "not-supported", "Not supported yet",
        "a valid value we do not take yet (`frequency`)";
    MalformedJson = BAD_REQUEST, "malformed-json", "Malformed JSON",
        "the body is not JSON";
    UnreadableBody = BAD_REQUEST, "unreadable-body", "Unreadable body",
        "the body could not be read";
    UnsupportedMediaType = UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type",
        "Unsupported media type", "the body is not `application/json`";
    BodyTooLarge = PAYLOAD_TOO_LARGE, "body-too-large", "Body too large",
        "the body is over the limit";
    BadParameter = BAD_REQUEST, "bad-parameter", "Bad query parameter",
        "a query parameter is unknown, repeated or invalid";
    NotAcceptable = NOT_ACCEPTABLE, "not-acceptable", "Not acceptable",
        "`Accept` names no format the route gives";
    NotFound = NOT_FOUND, "not-found", "Not found",
        "no such thing, or nothing at this path";
    MethodNotAllowed = METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed",
        "the path does not take that method";
    InvalidIdempotencyKey = BAD_REQUEST, "invalid-idempotency-key", "Invalid Idempotency-Key",
        "`Idempotency-Key` is not 1 to 255 visible ASCII characters";
    IdempotencyKeyReused = UNPROCESSABLE_ENTITY, "idempotency-key-reused",
        "Idempotency-Key reused", "the key was used for another request";
    IdempotencyKeyInUse = CONFLICT, "idempotency-key-in-use", "Request in progress",
        "the key's first request is still being worked on";
    CampaignInactive = CONFLICT, "campaign-inactive", "Campaign closed",
        "the campaign takes no donations";
    DonationAbandoned = CONFLICT, "donation-abandoned", "Donation given up",
        "the donation waited too long and was given up";
    TooManyAttempts = TOO_MANY_REQUESTS, "too-many-attempts", "Too many attempts",
        "a card-testing cap; see `Retry-After`";
    CaptchaRequired = FORBIDDEN, "captcha-required", "A check is needed",
        "a captcha token is needed (`Captcha-Token`)";
    InvalidSignature = BAD_REQUEST, "invalid-signature", "Invalid signature",
        "a webhook's `Stripe-Signature` does not verify";
    InvalidEvent = BAD_REQUEST, "invalid-event", "Not a Stripe event",
        "a webhook's body is not a Stripe event";
    Unauthorized = UNAUTHORIZED, "unauthorized", "Unauthorized",
        "no valid bearer token";
    Forbidden = FORBIDDEN, "forbidden", "Forbidden",
        "the token's role may not do this";
    SignInRefused = UNAUTHORIZED, "sign-in-refused", "Sign-in refused",
        "a staff passkey, enrolment link or sign-in was not accepted; nothing changed";
    NothingToClaim = CONFLICT, "nothing-to-claim", "Nothing to claim",
        "a Gift Aid claim would have no lines";
    ClaimConflict = CONFLICT, "claim-conflict", "Claimed at the same time",
        "a Gift Aid claim overlaps another";
    ClaimMoveRefused = CONFLICT, "claim-move-refused", "Not a possible move",
        "a Gift Aid claim cannot move from its status to that one";
    SimulationRefused = CONFLICT, "simulation-refused", "Not possible now",
        "the simulator cannot do that now";
    PaymentProviderError = BAD_GATEWAY, "payment-provider-error", "Payment provider error",
        "Stripe refused; nothing was charged";
    PaymentProviderUnavailable = SERVICE_UNAVAILABLE, "payment-provider-unavailable",
        "Payment provider unavailable", "Stripe is out of reach; retry with the same key";
    ServiceUnavailable = SERVICE_UNAVAILABLE, "service-unavailable", "Service unavailable",
        "our database is out of reach; see `Retry-After`";
    Internal = INTERNAL_SERVER_ERROR, "internal", "Internal error",
        "a failure of ours";
}

impl ProblemType {
    /// Its `type`: `/problems/<slug>`.
    pub fn uri(self) -> String {
        format!("/problems/{}", self.slug())
    }

    /// The problem type whose `type` is `uri`, if the catalogue has one.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let slug = uri.strip_prefix("/problems/")?;
        Self::ALL.iter().copied().find(|kind| kind.slug() == slug)
    }

    /// The catalogue as a Markdown table: type, status and meaning.
    pub fn table() -> String {
        let mut table = "| type | status | meaning |\n|---|---|---|".to_owned();
        for kind in Self::ALL {
            table.push_str(&format!(
                "\n| `{}` | {} | {} |",
                kind.uri(),
                kind.status().as_u16(),
                kind.meaning()
            ));
        }
        table
    }
}

impl Serialize for ProblemType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri())
    }
}

/// A problem the client can act on (RFC 9457, `application/problem+json`). Its `type` is one
/// of the catalogue's ([`ProblemType`]); the OpenAPI document lists them here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The problem's type, a URI reference: `/problems/<name>`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "/problems/validation")]
    pub kind: ProblemType,
    /// A short summary of the type.
    #[schema(value_type = String)]
    title: &'static str,
    /// The HTTP status code.
    #[serde(serialize_with = "serialize_status")]
    #[schema(value_type = u16, minimum = 400, maximum = 599)]
    status: StatusCode,
    /// What went wrong with this request, in a sentence.
    pub detail: String,
    /// Each field at fault (only when fields are).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// A problem of type `kind`: its status and title are the catalogue's.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            title: kind.title(),
            status: kind.status(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => sentence(&one.field, &one.message),
            _ => format!("{} fields are invalid; see errors.", errors.len()),
        };
        Self::new(ProblemType::Validation, detail).with_errors(errors)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    /// A 404 naming `field`: there is no `what` called `value` (shown at most 64 characters
    /// long, quoted).
    pub fn unknown(field: &str, what: &str, value: &str) -> Self {
        let shown: String = value.chars().take(64).collect();
        Self::not_found(format!("There is no {what} {shown:?}."))
            .with_errors(vec![FieldError::new(field, format!("names no {what}"))])
    }

    pub fn internal() -> Self {
        Self::new(
            ProblemType::Internal,
            "Something went wrong on our side. Nothing was charged; please try again.",
        )
    }

    /// Our database is out of reach: `detail` says what could not be done.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::ServiceUnavailable, detail)
    }

    fn database_unavailable() -> Self {
        Self::unavailable("The service cannot reach its database. Please try again shortly.")
    }
}

/// A field's message as a sentence: "The body must be a JSON object.", "`amount` must be at
/// least 200."
fn sentence(field: &str, message: &str) -> String {
    let subject = if field.is_empty() {
        "The body".to_owned()
    } else {
        format!("`{field}`")
    };
    let message = message.trim_end_matches('.');
    format!("{subject} {message}.")
}

/// What a 503 asks the client to wait before trying again, in seconds: our database or Stripe
/// was out of reach, which is usually brief.
pub const RETRY_UNAVAILABLE_SECS: &str = "5";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_UNAVAILABLE_SECS),
            );
        }
        response
    }
}

/// The error type of every handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client's problem, answered as it is.
    #[error("{}", .0.detail)]
    Client(Problem),
    /// Our database failed us; answered 503 when it is unreachable, 500 otherwise.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Anything else; answered 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self::Client(problem)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client(problem) => problem.into_response(),
            ApiError::Database(error) => {
                tracing::error!(error = %error, "database failure");
                if db::Failure::of(&error) == db::Failure::Unavailable {
                    Problem::database_unavailable().into_response()
                } else {
                    Problem::internal().into_response()
                }
            }
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                Problem::internal().into_response()
            }
        }
    }
}
