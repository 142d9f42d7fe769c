//! Every error the API returns: an RFC 9457 `application/problem+json` body whose `type` names
//! the problem (each is described in the README). A 5xx never carries internal detail; its
//! cause is logged inside the request's span instead.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db;
use crate::payments::PaymentError;

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

/// A problem the client can act on (RFC 9457, `application/problem+json`). Its `type` is one
/// of:
///
/// | type | status | meaning |
/// |---|---|---|
/// | `/problems/validation` | 422 | fields are invalid; `errors` names each |
/// | `/problems/not-supported` | 422 | a valid value we do not take yet (`frequency`) |
/// | `/problems/malformed-json` | 400 | the body is not JSON |
/// | `/problems/unreadable-body` | 400 | the body could not be read |
/// | `/problems/unsupported-media-type` | 415 | the body is not `application/json` |
/// | `/problems/body-too-large` | 413 | the body is over the limit |
/// | `/problems/bad-parameter` | 400 | a query parameter is unknown, repeated or invalid |
/// | `/problems/not-acceptable` | 406 | `Accept` names no format the route gives |
/// | `/problems/not-found` | 404 | no such thing, or nothing at this path |
/// | `/problems/method-not-allowed` | 405 | the path does not take that method |
/// | `/problems/invalid-idempotency-key` | 400 | `Idempotency-Key` is not 1 to 255 visible ASCII characters |
/// | `/problems/idempotency-key-reused` | 422 | the key was used for another request |
/// | `/problems/idempotency-key-in-use` | 409 | the key's first request is still being worked on |
/// | `/problems/campaign-inactive` | 409 | the campaign takes no donations |
/// | `/problems/donation-abandoned` | 409 | the donation waited too long and was given up |
/// | `/problems/too-many-attempts` | 429 | a card-testing cap; see `Retry-After` |
/// | `/problems/captcha-required` | 403 | a captcha token is needed (`Captcha-Token`) |
/// | `/problems/invalid-signature` | 400 | a webhook's `Stripe-Signature` does not verify |
/// | `/problems/invalid-event` | 400 | a webhook's body is not a Stripe event |
/// | `/problems/unauthorized` | 401 | no valid bearer token |
/// | `/problems/forbidden` | 403 | the token's role may not do this |
/// | `/problems/nothing-to-claim` | 409 | a Gift Aid claim would have no lines |
/// | `/problems/claim-conflict` | 409 | a Gift Aid claim overlaps another |
/// | `/problems/simulation-refused` | 409 | the simulator cannot do that now |
/// | `/problems/payment-provider-error` | 502 | Stripe refused; nothing was charged |
/// | `/problems/payment-provider-unavailable` | 503 | Stripe is out of reach; retry with the same key |
/// | `/problems/service-unavailable` | 503 | our database is out of reach; see `Retry-After` |
/// | `/problems/internal` | 500 | a failure of ours |
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The problem's type, a URI reference: `/problems/<name>`.
    #[serde(rename = "type")]
    #[schema(example = "/problems/validation")]
    pub kind: String,
    /// A short summary of the type.
    #[schema(value_type = String)]
    pub title: &'static str,
    /// The HTTP status code.
    #[serde(serialize_with = "serialize_status")]
    #[schema(value_type = u16, minimum = 400, maximum = 599)]
    pub status: StatusCode,
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
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title,
            status,
            detail: detail.into(),
            errors: Vec::new(),
        }
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
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The request has invalid fields",
            detail,
        )
        .with_errors(errors)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "Something went wrong on our side. Nothing was charged; please try again.",
        )
    }

    fn database_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service-unavailable",
            "Service unavailable",
            "The service cannot reach its database. Please try again shortly.",
        )
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
    /// Stripe failed us; answered 502 or 503.
    #[error(transparent)]
    Payment(#[from] PaymentError),
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
            ApiError::Payment(error) => {
                tracing::error!(error = %error, cause = %source_of(&error), "payment provider failure");
                let problem = match error {
                    PaymentError::Unavailable(_) => Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "payment-provider-unavailable",
                        "Payment provider unavailable",
                        "We could not reach our payment provider. Nothing was charged. Retry \
                         with the same Idempotency-Key to complete this same donation.",
                    ),
                    PaymentError::Rejected(_) => Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "payment-provider-error",
                        "Payment provider error",
                        "Our payment provider could not start this payment. Nothing was \
                         charged. Retry with the same Idempotency-Key, or try again later.",
                    ),
                };
                problem.into_response()
            }
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

fn source_of(error: &dyn std::error::Error) -> String {
    error.source().map(ToString::to_string).unwrap_or_default()
}
