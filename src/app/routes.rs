//! Every feature's routes merged in one place, with the layers they share and the OpenAPI
//! document made from the very routers served.

use axum::{Extension, Router};
use utoipa_axum::router::OpenApiRouter;

use super::state::AppState;
use crate::http::middleware::{catch_panics, limits, method_not_allowed, not_found, traced};
use crate::http::{REQUEST_TIMEOUT, browser, openapi};
use crate::metrics::Metrics;
use crate::operations::metrics::{Exposure, Scrape};
use crate::simulator::routes::Simulator;

/// What the routes are served with beyond the features' state.
pub struct Served {
    /// `ALLOWED_ORIGINS`: the origins whose pages may call the public routes (CORS).
    pub allowed_origins: Vec<axum::http::HeaderValue>,
    /// `/metrics`, unless `METRICS_ADDR` serves it on a listener of its own.
    pub scrape: Scrape,
    /// The simulator's controls, when payments are simulated.
    pub simulator: Option<Simulator>,
    pub metrics: Metrics,
}

/// The service's routes.
pub fn router(state: AppState, served: Served) -> Router {
    // Every route is registered with its documentation (see `http::openapi`): each group's
    // router and document are split apart, the routers layered as before, the documents
    // merged into the one served at /openapi.json.
    //
    // What the donation website calls from the browser, and the only routes with CORS. Their
    // 405 is set before the CORS layer so that it wraps it: a preflight (OPTIONS) reaches the
    // layer through it. CORS sits outside the limits, so a 413 or a timeout's 503 is readable
    // by the page too.
    let (public, public_doc) = OpenApiRouter::<AppState>::new()
        .merge(crate::campaigns::router())
        .merge(crate::donations::router())
        .split_for_parts();
    let public = limits(
        public.method_not_allowed_fallback(method_not_allowed),
        REQUEST_TIMEOUT,
    )
    .layer(browser::public_cors(served.allowed_origins));

    // The finance API as the staff console calls it, in-process (see `staff::api`).
    let (api, _) = OpenApiRouter::<AppState>::new()
        .merge(crate::campaigns::router())
        .merge(crate::finance::router())
        .merge(crate::books::router())
        .merge(crate::operators::router())
        .merge(crate::gift_aid::routes::router())
        .merge(crate::webhooks::events_api::router())
        .split_for_parts();
    let api = crate::staff::api::Api::new(api.with_state(state.clone()));

    // Never called from a page: no CORS, so a browser refuses any cross-origin call.
    let mut private = OpenApiRouter::<AppState>::new()
        .merge(crate::operations::health::router())
        .merge(openapi::router())
        .merge(crate::finance::router())
        .merge(crate::books::router())
        .merge(crate::operators::router())
        .merge(crate::gift_aid::routes::router())
        .merge(crate::webhooks::router())
        // Same-origin with the API it calls, so it needs no CORS; framed by ALLOWED_ORIGINS.
        .merge(crate::donate_page::router())
        // Same-origin pages for finance staff, never framed.
        .merge(crate::staff::router().layer(Extension(api)));
    // The simulator's controls exist only when payments are simulated.
    if let Some(simulator) = served.simulator {
        private = private.merge(crate::simulator::routes::router(simulator));
    }
    // Unless METRICS_ADDR serves it apart.
    if served.scrape.exposure != Exposure::Elsewhere {
        private = private.merge(crate::operations::metrics::router(served.scrape));
    }
    let (private, private_doc) = private.split_for_parts();

    let mut document = openapi::base();
    document.merge(public_doc);
    document.merge(private_doc);
    let private = private.layer(Extension(openapi::Document::new(&document)));

    let routes = Router::new()
        .merge(public)
        .merge(limits(private, REQUEST_TIMEOUT))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let routes = catch_panics(routes)
        // Inside the trace span, so that a request's metrics see the route it matched.
        .layer(axum::middleware::from_fn_with_state(
            served.metrics,
            crate::metrics::track,
        ));
    // Outside everything else, so that every answer carries them: problems, 404s, timeouts.
    traced(browser::security_headers(routes)).with_state(state)
}

/// `METRICS_ADDR`'s own listener: `/metrics` and nothing else.
pub fn metrics_router(scrape: Scrape) -> Router {
    // Its own listener serves no document.
    let (metrics, _) = crate::operations::metrics::router(scrape).split_for_parts();
    Router::new()
        .merge(metrics)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}
