//! What an operator scrapes: the service's metrics, rendered in Prometheus's text format for
//! `GET /metrics` (served by `operations::metrics`).
//!
//! Each application holds its own recorder (never the process-wide one), so several apps in one
//! process (the tests) each count only their own requests. A metric is recorded through
//! [`Metrics`], which hands the recorder to the `metrics` macros for that one synchronous call.
//!
//! Labels name routes as they are declared (`/v1/donations/{id}`), event types, Stripe
//! operations and outcomes: never an id, an amount or anything about a donor.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// Latency buckets, in seconds: from a cached campaign read to a request's 60 s timeout.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// This application's metrics; cloning shares them. [`Metrics::disabled`] records nothing (the
/// command line's Stripe client).
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<PrometheusRecorder>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Metrics"
        } else {
            "Metrics(disabled)"
        })
    }
}

const WEBHOOKS_WAITING: &str = "quickdonate_webhook_events_waiting";
const WEBHOOK_GROUP_SIZE: &str = "quickdonate_webhook_group_size";
/// A group holds from one event to `webhooks::ingest::MAX_GROUP`.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Counts a webhook request out of [`WEBHOOKS_WAITING`] when dropped, however it ends.
pub struct WaitingGuard(Metrics);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0
            .record(|| ::metrics::gauge!(WEBHOOKS_WAITING).decrement(1.0));
    }
}

/// What becomes of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Stored for the first time.
    Stored,
    /// Stored before: a redelivery.
    Duplicate,
    /// Stored, never to be applied (the other mode, a type we do not apply).
    Ignored,
    /// Refused: a bad or missing signature.
    BadSignature,
    /// Refused: not an event, or too large.
    Invalid,
    /// Not stored (the database failed): Stripe delivers it again.
    NotStored,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::Stored => "stored",
            Delivery::Duplicate => "duplicate",
            Delivery::Ignored => "ignored",
            Delivery::BadSignature => "bad_signature",
            Delivery::Invalid => "invalid",
            Delivery::NotStored => "not_stored",
        }
    }
}

/// The event log's state, read when `/metrics` is scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backlog {
    /// Events not yet applied (waiting, or being retried after an error).
    pub pending: i64,
    /// How long the oldest of them has waited since it was first received.
    pub oldest_pending_age_secs: f64,
    /// Events set aside as `failed` for an operator (dead letters).
    pub failed: i64,
}

impl Metrics {
    /// A recorder of this application's own, with every metric described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the buckets are not empty")
            .set_buckets_for_metric(Matcher::Full(WEBHOOK_GROUP_SIZE.to_owned()), GROUP_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let metrics = Self(Some(Arc::new(recorder)));
        metrics.record(|| {
            use ::metrics::{describe_counter, describe_gauge, describe_histogram};
            describe_counter!(
                "quickdonate_http_requests_total",
                "HTTP requests answered, by method, matched route and status"
            );
            describe_histogram!(
                "quickdonate_http_request_duration_seconds",
                ::metrics::Unit::Seconds,
                "HTTP request latency, by method, matched route and status"
            );
            describe_counter!(
                "quickdonate_webhook_deliveries_total",
                "Stripe webhook deliveries, by event type and outcome"
            );
            describe_counter!(
                "quickdonate_events_processed_total",
                "Stored events the worker took, by event type and outcome (applied, ignored, failed: to be retried or set aside; released: not tried this time)"
            );
            describe_gauge!(
                WEBHOOKS_WAITING,
                "Verified webhook events waiting for the commit of their group"
            );
            describe_histogram!(
                WEBHOOK_GROUP_SIZE,
                "Webhook events stored together in one commit (group commit)"
            );
            describe_gauge!(
                "quickdonate_events_pending",
                "Events stored and not yet applied"
            );
            describe_gauge!(
                "quickdonate_events_oldest_pending_age_seconds",
                ::metrics::Unit::Seconds,
                "How long the oldest event not yet applied has waited since it was received"
            );
            describe_gauge!(
                "quickdonate_events_failed",
                "Events set aside as failed for an operator (dead letters)"
            );
            describe_histogram!(
                "quickdonate_stripe_request_duration_seconds",
                ::metrics::Unit::Seconds,
                "Stripe calls with their retries, by operation and outcome"
            );
            describe_counter!(
                "quickdonate_stripe_errors_total",
                "Stripe call attempts that failed, by operation and kind"
            );
            describe_gauge!(
                "quickdonate_books_differences",
                "Differences the books' last check found, by check (quickdonate verify; checked every ten minutes)"
            );
            describe_counter!(
                "quickdonate_card_testing_rejections_total",
                "New donations refused by a card-testing cap (or sent to solve a captcha), by cap"
            );
        });
        metrics
    }

    /// Records nothing.
    pub fn disabled() -> Self {
        Self(None)
    }

    fn record(&self, f: impl FnOnce()) {
        if let Some(recorder) = &self.0 {
            ::metrics::with_local_recorder(recorder.as_ref(), f);
        }
    }

    pub fn http_request(&self, method: &str, route: &str, status: StatusCode, took: Duration) {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        self.record(|| {
            ::metrics::counter!("quickdonate_http_requests_total", &labels).increment(1);
            ::metrics::histogram!("quickdonate_http_request_duration_seconds", &labels)
                .record(took.as_secs_f64());
        });
    }

    /// A webhook delivery; `kind` is the event's type when it could be read and trusted.
    pub fn webhook(&self, kind: Option<&str>, outcome: Delivery) {
        let labels = [
            ("type", event_type_label(kind)),
            ("outcome", outcome.as_str().to_owned()),
        ];
        self.record(|| {
            ::metrics::counter!("quickdonate_webhook_deliveries_total", &labels).increment(1);
        });
    }

    /// `count` events of type `kind` the worker applied, ignored, failed or released.
    pub fn events_processed(&self, kind: &str, outcome: &'static str, count: u64) {
        let labels = [
            ("type", event_type_label(Some(kind))),
            ("outcome", outcome.to_owned()),
        ];
        self.record(|| {
            ::metrics::counter!("quickdonate_events_processed_total", &labels).increment(count);
        });
    }

    /// A webhook request waiting for its event's group commit, until the guard is dropped.
    pub fn webhook_waiting(&self) -> WaitingGuard {
        self.record(|| ::metrics::gauge!(WEBHOOKS_WAITING).increment(1.0));
        WaitingGuard(self.clone())
    }

    /// One group of webhook events stored (or tried) in one commit.
    pub fn webhook_group(&self, events: usize) {
        self.record(|| ::metrics::histogram!(WEBHOOK_GROUP_SIZE).record(events as f64));
    }

    /// One Stripe call (with its retries) that ended in `outcome` (`ok`, `unavailable`,
    /// `rejected`) after `took`.
    pub fn stripe_call(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        let labels = [("operation", operation), ("outcome", outcome)];
        self.record(|| {
            ::metrics::histogram!("quickdonate_stripe_request_duration_seconds", &labels)
                .record(took.as_secs_f64());
        });
    }

    /// One failed Stripe call attempt, retried or not.
    pub fn stripe_error(&self, operation: &'static str, kind: &'static str) {
        let labels = [("operation", operation), ("kind", kind)];
        self.record(|| {
            ::metrics::counter!("quickdonate_stripe_errors_total", &labels).increment(1);
        });
    }

    /// A new donation refused by the card-testing cap `cap` (`ip`, `email`, `campaign`), or
    /// told to solve a captcha (`captcha`).
    pub fn card_testing_rejection(&self, cap: &'static str) {
        self.record(|| {
            ::metrics::counter!("quickdonate_card_testing_rejections_total", "cap" => cap)
                .increment(1);
        });
    }

    /// What the books' last check found: how many differences per check.
    pub fn books(&self, checks: &[(&'static str, usize)]) {
        self.record(|| {
            for &(check, differences) in checks {
                ::metrics::gauge!("quickdonate_books_differences", "check" => check)
                    .set(differences as f64);
            }
        });
    }

    /// Everything, in Prometheus's text format, with the event log's gauges set to `backlog`.
    pub fn render(&self, backlog: Backlog) -> String {
        let Some(recorder) = &self.0 else {
            return String::new();
        };
        self.record(|| {
            ::metrics::gauge!("quickdonate_events_pending").set(backlog.pending as f64);
            ::metrics::gauge!("quickdonate_events_oldest_pending_age_seconds")
                .set(backlog.oldest_pending_age_secs);
            ::metrics::gauge!("quickdonate_events_failed").set(backlog.failed as f64);
        });
        recorder.handle().render()
    }

    /// Folds recent histogram samples in; rendering does it too, so this only bounds memory
    /// when nobody scrapes.
    pub fn upkeep(&self) {
        if let Some(recorder) = &self.0 {
            recorder.handle().run_upkeep();
        }
    }
}

/// Stripe's event types are a fixed list of short names; anything else (it never should be) is
/// `other`, so no label can carry arbitrary text.
fn event_type_label(kind: Option<&str>) -> String {
    match kind {
        None => "unknown".to_owned(),
        Some(kind)
            if kind.len() <= 64
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_') =>
        {
            kind.to_owned()
        }
        Some(_) => "other".to_owned(),
    }
}

/// Counts every request by its matched route (never its raw path), method and status.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // Only the methods we know: a made-up one must not make a series of its own.
    let method = match request.method().as_str() {
        known @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => known,
        _ => "other",
    }
    .to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    metrics.http_request(&method, &route, response.status(), started.elapsed());
    response
}
