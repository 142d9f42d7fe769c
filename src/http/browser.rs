//! What browsers are told: CORS for the public endpoints only, and the security headers every
//! answer carries.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Response, header};
use tower_http::cors::CorsLayer;
use tower_http::set_header::SetResponseHeaderLayer;

/// The request id every answer carries (`SetRequestIdLayer`), readable by the website too.
pub const REQUEST_ID: &str = "x-request-id";

/// Given to an HTML answer that sets no policy of its own: it may load nothing and be framed by
/// no page. The donation page sets its own; this keeps any other page (or an error page a
/// layer makes) from running scripts or being framed for clickjacking.
pub const HTML_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// CORS for the endpoints the donation website calls from the browser, and only for the origins
/// in `ALLOWED_ORIGINS`. A preflight from another origin is answered without
/// `Access-Control-Allow-Origin`, so the browser refuses the call. Never put this on the finance,
/// webhook or simulator routes: no page has a reason to call them.
pub fn public_cors(allowed_origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(allowed_origins)
        .allow_methods([Method::GET, Method::POST])
        // What the website sends: a JSON body and, on creation, its Idempotency-Key and, once a
        // card-testing cap has refused the donor's address or email, a solved captcha's token.
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("captcha-token"),
        ])
        // What it reads back: where the donation is, whether an answer was replayed, when to
        // try again, and the request id to quote to support.
        .expose_headers([
            header::LOCATION,
            HeaderName::from_static("idempotent-replayed"),
            header::RETRY_AFTER,
            HeaderName::from_static(REQUEST_ID),
        ])
        .max_age(Duration::from_secs(3600))
}

/// The security headers on every answer, problems and 404s included; an answer that sets one of
/// them itself keeps its own.
pub fn security_headers<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // `no-referrer` rather than `strict-origin-when-cross-origin`: the latter is already
        // every current browser's default, so sending it would change nothing, and nothing the
        // API serves links anywhere that needs to know where the visitor came from. Should an
        // answer ever hold a link (a receipt page, say), its target learns nothing of our URLs,
        // which carry donation ids.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            html_content_security_policy,
        ))
}

/// The policy for an answer served as HTML; none for anything else (JSON runs nothing, and a
/// policy there would only be noise).
fn html_content_security_policy(response: &Response<Body>) -> Option<HeaderValue> {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/html"));
    html.then(|| HeaderValue::from_static(HTML_CONTENT_SECURITY_POLICY))
}

/// A digest of a page's script and style (FNV-1a, 64 bits, in hex), to name them in the page's
/// links: it changes whenever they do, so a browser may keep them for a day and never runs a
/// cached older script with a newer page.
pub fn asset_version(files: &[&str]) -> String {
    let digest = files
        .iter()
        .flat_map(|file| file.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{digest:016x}")
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "unit tests of layers, on routers of their own that the service never serves"
)]
mod tests {
    use super::*;
    use axum::http::{Request, StatusCode};
    use axum::response::{Html, IntoResponse};
    use axum::routing::get;
    use tower::ServiceExt;

    async fn headers_of(path: &str) -> axum::http::HeaderMap {
        let app = security_headers(
            Router::new()
                .route("/page", get(|| async { Html("<p>Thank you</p>") }))
                .route(
                    "/page-with-its-own-policy",
                    get(|| async {
                        (
                            [(header::CONTENT_SECURITY_POLICY, "default-src 'self'")],
                            Html("<p>Thank you</p>"),
                        )
                    }),
                )
                .route(
                    "/upper-case-html",
                    get(|| async {
                        (
                            [(header::CONTENT_TYPE, "TEXT/HTML; charset=utf-8")],
                            "<p>Hi</p>",
                        )
                            .into_response()
                    }),
                )
                .route("/json", get(|| async { axum::Json("{}") })),
        );
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.headers().clone()
    }

    #[tokio::test]
    async fn an_html_answer_gets_the_strict_policy() {
        for path in ["/page", "/upper-case-html"] {
            let headers = headers_of(path).await;
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                HTML_CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
    }

    #[tokio::test]
    async fn an_html_answer_with_its_own_policy_keeps_it() {
        let headers = headers_of("/page-with-its-own-policy").await;
        let policies: Vec<_> = headers
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .collect();
        assert_eq!(policies, ["default-src 'self'"]);
    }

    #[tokio::test]
    async fn a_json_answer_gets_no_policy() {
        let headers = headers_of("/json").await;
        assert!(headers.get(header::CONTENT_SECURITY_POLICY).is_none());
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
