//! A JSON body extractor whose every refusal is one of our problems: 415 for another content
//! type, 413 past the body limit, 400 for JSON that does not parse. The fields themselves are
//! checked by the handler, so that one answer can name them all.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde_json::Value;

use super::problem::{Problem, ProblemType};

/// A request body that is well-formed JSON, as a `Value`.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(Problem::new(
                ProblemType::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json.",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    ProblemType::BodyTooLarge,
                    format!(
                        "The request body is larger than the {} KiB this endpoint accepts.",
                        super::API_BODY_LIMIT / 1024
                    ),
                )
            } else {
                Problem::new(
                    ProblemType::UnreadableBody,
                    "The request body could not be read.",
                )
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                Problem::new(
                    ProblemType::MalformedJson,
                    format!("The body is not valid JSON: {error}."),
                )
            })
    }
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types_are_recognised() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(Some(&HeaderValue::from_static(ok))), "{ok}");
        }
        for not in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json(Some(&HeaderValue::from_static(not))), "{not}");
        }
        assert!(!is_json(None));
    }
}
