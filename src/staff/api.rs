//! The finance API, called in-process: every console page reads and acts only through the very
//! routes `/v1/finance/...` serves to a bearer token, so there is one set of queries, one set of
//! checks and one audit trail. The request carries the signed-in person's
//! [`Caller`](crate::operators::access::Caller) (`staff:<name>`) as an extension, which the
//! finance routes' extractor takes as it would a token's; nothing from outside the process can
//! set an extension, so no client can make itself one.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

use super::sessions::Signed;

/// The finance API's routes, with their state.
#[derive(Clone)]
pub struct Api(Router);

/// A refusal or failure of the API, as its problem said it.
#[derive(Debug, Clone)]
pub struct Failed {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
}

impl Api {
    pub fn new(routes: Router) -> Self {
        Self(routes)
    }

    /// Sends `request` as `signed`; the answer as the API gives it (a CSV download streams).
    pub async fn send(&self, signed: &Signed, mut request: Request<Body>) -> Response {
        request.extensions_mut().insert(signed.caller());
        match self.0.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// `GET path` as JSON, read into `T`.
    pub async fn get<T: DeserializeOwned>(&self, signed: &Signed, path: &str) -> Result<T, Failed> {
        let request = Request::get(path)
            .header(header::ACCEPT, "application/json")
            .body(Body::empty())
            .expect("a path the console made");
        self.read(self.send(signed, request).await).await
    }

    /// `GET path` in the format `accept` names: the API's answer as it is (an export streams
    /// from the first row), or what it refused.
    pub async fn download(
        &self,
        signed: &Signed,
        path: &str,
        accept: &str,
    ) -> Result<Response, Failed> {
        let request = Request::get(path)
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .expect("a path the console made");
        let response = self.send(signed, request).await;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.read::<Value>(response).await.err().unwrap_or(Failed {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "Internal error".into(),
                detail: "the API refused without a problem".into(),
            }))
        }
    }

    /// `method path` with a JSON `body` (and an `Idempotency-Key`, if given), read into `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        signed: &Signed,
        method: Method,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<T, Failed> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let request = request
            .body(Body::from(body.to_string()))
            .expect("a request the console made");
        self.read(self.send(signed, request).await).await
    }

    async fn read<T: DeserializeOwned>(&self, response: Response) -> Result<T, Failed> {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .map_err(|error| Failed {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "Internal error".into(),
                detail: error.to_string(),
            })?;
        if !status.is_success() {
            let problem: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let text = |key: &str| problem[key].as_str().unwrap_or_default().to_owned();
            let mut detail = text("detail");
            if let Some(errors) = problem["errors"].as_array() {
                for error in errors {
                    detail.push_str(&format!(
                        " {}: {}.",
                        error["field"].as_str().unwrap_or_default(),
                        error["message"].as_str().unwrap_or_default()
                    ));
                }
            }
            return Err(Failed {
                status,
                title: text("title"),
                detail,
            });
        }
        serde_json::from_slice(&bytes).map_err(|error| Failed {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal error".into(),
            detail: format!("the API's answer did not read as the console expects: {error}"),
        })
    }
}

/// `text` encoded to stand as one segment of a path, or a query's value: an id a person
/// typed or a page carried can never reach another route.
pub fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A path with its query string made from `pairs` (empty values left out).
pub fn path_with(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
        query.append_pair(key, value);
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}
