//! How requests reach Stripe: our own [`StripeClient`] for async-stripe's request builders.
//!
//! async-stripe `1.0.0-rc.10` builds its hyper client with `pool_max_idle_per_host(0)`, so
//! every call to Stripe opens a new connection and, in production, makes a new TLS handshake:
//! a round trip or two more on every donation. This transport sends the same requests (the
//! same headers, body, Idempotency-Key and per-attempt timeout, and the same retry strategy
//! as the request asks for) through a client that keeps its connections.
//!
//! Like async-stripe's client it reads `Stripe-Should-Retry` and no other header of an error
//! answer; reading `Retry-After` is for later (see `payments::AWAY_PAUSE`).

use std::fmt::Write as _;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stripe::StripeError;
use stripe_client_core::{
    CustomizedStripeRequest, Outcome, RequestStrategy, StripeClient, StripeMethod,
};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long an idle connection to Stripe is kept for the next call.
const IDLE: Duration = Duration::from_secs(90);

/// A Stripe client whose connections are reused.
#[derive(Clone)]
pub struct Transport {
    client: HyperClient<Connector, Full<Bytes>>,
    /// `https://api.stripe.com/` or a fake's base, ending in `/`.
    api_base: String,
    authorization: HeaderValue,
    user_agent: HeaderValue,
    version: HeaderValue,
    /// Each attempt's limit.
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(secret_key: &str, api_base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let uri: hyper::Uri = api_base
            .parse()
            .map_err(|_| anyhow::anyhow!("not an absolute URL"))?;
        anyhow::ensure!(
            uri.scheme().is_some() && uri.host().is_some(),
            "not an absolute URL"
        );
        let mut authorization = HeaderValue::from_str(&format!("Bearer {secret_key}"))
            .map_err(|_| anyhow::anyhow!("the secret key is not a usable header value"))?;
        authorization.set_sensitive(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .build(connector);
        Ok(Self {
            client,
            api_base: format!("{}/", api_base.trim_end_matches('/')),
            authorization,
            user_agent: HeaderValue::from_static(concat!(
                "Stripe/v1 RustBindings/1.0.0-rc.10 quickdonate/",
                env!("CARGO_PKG_VERSION")
            )),
            version: HeaderValue::from_static(stripe_shared::version::VERSION.as_str()),
            timeout,
        })
    }

    fn request(
        &self,
        method: &Method,
        uri: &str,
        body: &Option<Bytes>,
        key: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, StripeError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .header(
                HeaderName::from_static("stripe-version"),
                self.version.clone(),
            );
        if let Some(key) = key {
            builder = builder.header(HeaderName::from_static("idempotency-key"), key);
        }
        if body.is_some() {
            builder = builder.header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        builder
            .body(Full::new(body.clone().unwrap_or_default()))
            .map_err(|error| StripeError::ClientError(error.to_string()))
    }

    /// One attempt: the answer's status, its `Stripe-Should-Retry`, and its body.
    async fn attempt(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Option<bool>, Bytes), StripeError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| StripeError::ClientError(error.to_string()))?;
            let status = response.status();
            let should_retry = response
                .headers()
                .get("stripe-should-retry")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| StripeError::ClientError(error.to_string()))?
                .to_bytes();
            Ok((status, should_retry, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(StripeError::Timeout))
    }
}

impl StripeClient for Transport {
    type Err = StripeError;

    async fn execute(&self, request: CustomizedStripeRequest) -> Result<Bytes, StripeError> {
        let (request, config) = request.into_pieces();
        let method = match request.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        let mut uri = format!("{}v1{}", self.api_base, request.path);
        if let Some(query) = &request.query {
            let _ = write!(uri, "?{query}");
        }
        let body = request.body.map(Bytes::from);
        let strategy = config.request_strategy.unwrap_or(RequestStrategy::Once);
        let key = strategy.get_key();
        let timeout = config.timeout.unwrap_or(self.timeout);

        let mut tries = 0;
        let mut last_status = None;
        let mut last_should_retry = None;
        let mut last_error = StripeError::ClientError("no attempt was made".into());
        loop {
            let wait = match strategy.test(last_status, last_should_retry, tries) {
                Outcome::Stop => return Err(last_error),
                Outcome::Continue(wait) => wait,
            };
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            tries += 1;
            let attempt = self.request(&method, &uri, &body, key.as_ref().map(|k| k.as_str()))?;
            let (status, should_retry, bytes) = match self.attempt(attempt, timeout).await {
                Ok(answer) => answer,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
            if status.is_success() {
                return Ok(bytes);
            }
            last_error = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| miniserde::json::from_str::<stripe_shared::Error>(text).ok())
                .map_or_else(
                    || StripeError::JSONDeserialize("error deserializing Stripe error".into()),
                    |error| StripeError::Stripe(error.error, status.as_u16()),
                );
            last_status = Some(status.as_u16());
            last_should_retry = should_retry;
        }
    }
}
