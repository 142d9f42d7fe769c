//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, generated from the code.
//!
//! Every route is registered with `utoipa-axum` (`OpenApiRouter::routes(routes!(handler))`),
//! so the same call that adds a route to the router adds its `#[utoipa::path]` operation to
//! the document: the document is built from the very router the service serves, and follows
//! it (the simulator's controls appear only when payments are simulated, `/metrics` only when
//! it is served on the main listener). Registering a route any other way (`Router::route`,
//! `OpenApiRouter::route`, ...) is refused by clippy (`clippy.toml`), and
//! `tests/api/openapi.rs` checks the document against the running app both ways.
//!
//! A JSON route is documented with `responses((status = 200, body = T))`; any other answer
//! names its content type, e.g. an HTML page:
//! `responses((status = 200, content_type = "text/html", body = String, description = "..."))`.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{FieldError, Problem, ProblemType};

/// The security scheme of the finance routes (`security(("bearerAuth" = []))`).
pub const BEARER_AUTH: &str = "bearerAuth";

/// What every document starts from: its info, the shared schemas and the security scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "quickdonate",
        description = "The donation API behind the charity's campaign pages: campaigns, \
                       donations and their Stripe PaymentIntents, Stripe's webhook, and the \
                       finance API.\n\nAmounts are always integers of minor units (pence for \
                       `gbp`) beside a lower-case ISO currency code. Every error is an RFC 9457 \
                       problem (`application/problem+json`, schema `Problem`) whose `type` names \
                       it; each operation lists the types it can answer, and any can also \
                       answer 500 `/problems/internal` (a failure of ours); a request still \
                       unanswered after 60 s gets a bare 503.\n\nThis document \
                       describes what this running service serves: the simulator's controls \
                       only when payments are simulated, `/metrics` only when it is not served \
                       on a listener of its own.",
        license(name = "MIT"),
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&Security, &Catalogue),
    tags(
        (name = "campaigns", description = "The campaign catalogue and running totals."),
        (name = "donations", description = "Making a donation and following it."),
        (name = "webhooks", description = "Stripe's signed events."),
        (name = "finance", description = "For finance staff, behind bearer tokens \
                                          (`quickdonate tokens create`); every read is audited."),
        (name = "simulator", description = "Only with simulated payments: play the donor, the \
                                            dashboard, the card issuer and the bank."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    )
)]
struct Base;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A finance API token (`qd_` and 64 hex digits), made with \
                         `quickdonate tokens create --name NAME --role finance|admin`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The `Problem` schema as the catalogue has it: its description tables every problem type
/// with its status and meaning, and its `type` takes those values alone.
struct Catalogue;

impl Modify for Catalogue {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let schemas = &mut openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas;
        let Some(RefOr::T(Schema::Object(problem))) = schemas.get_mut("Problem") else {
            unreachable!("the Problem schema is among the components");
        };
        problem.description = Some(format!(
            "A problem the client can act on (RFC 9457, `application/problem+json`). Its \
             `type` is one of:\n\n{}",
            ProblemType::table()
        ));
        if let Some(RefOr::T(Schema::Object(kind))) = problem.properties.get_mut("type") {
            kind.enum_values = Some(ProblemType::ALL.iter().map(|k| k.uri().into()).collect());
        }
    }
}

/// An empty document with the info, shared schemas and security scheme, for the routers of
/// every module to be merged into.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// The document as served, rendered once.
#[derive(Clone)]
pub struct Document(Arc<String>);

impl Document {
    pub fn new(openapi: &utoipa::openapi::OpenApi) -> Self {
        Self(Arc::new(
            openapi.to_pretty_json().expect("the document serialises"),
        ))
    }
}

/// `GET /openapi.json` (the document itself is added as an extension once it is complete).
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This OpenAPI document",
    description = "The OpenAPI 3.1 document of what this service serves, generated from its \
                   code. A website can generate a typed client from it.",
    responses((status = 200, description = "The document.", content_type = "application/json",
               body = Object)),
)]
async fn openapi_json(Extension(document): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.as_str().to_owned(),
    )
}
