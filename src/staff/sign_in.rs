//! Signing in and out, and registering a passkey from an enrolment link. The pages are plain
//! HTML; `console.js` runs the WebAuthn ceremony against the two JSON routes of each (begin:
//! the challenge; finish: the browser's answer), and a finished ceremony sets the session
//! cookie. Every refusal is one problem, `/problems/sign-in-refused` (or
//! `/problems/too-many-attempts` over the limit), logged in the staff log before it is sent.

use std::net::{IpAddr, SocketAddr};

use askama::Template;
use axum::Json;
use axum::extract::{ConnectInfo, FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::pages::{Shell, html, refusal_page};
use super::passkeys::{self, Refused};
use super::sessions::{Posted, cookie_of, look_up};
use super::{StaffState, log, sessions};
use crate::http::json::JsonBody;
use crate::http::problem::{Problem, ProblemType};

pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    StaffState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(login_page))
        .routes(routes!(login_begin))
        .routes(routes!(login_finish))
        .routes(routes!(enrol_page))
        .routes(routes!(enrol_begin))
        .routes(routes!(enrol_finish))
        .routes(routes!(sign_out))
        .routes(routes!(asset))
}

const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// What a refused ceremony answers.
fn refused(refusal: Refused) -> Response {
    match refusal {
        Refused::Link => Problem::new(
            ProblemType::SignInRefused,
            "This enrolment link does not work: it was used, it expired (links last 24 hours) \
             or its account was revoked. Ask an admin for a new one.",
        )
        .into_response(),
        Refused::Account | Refused::Answer => Problem::new(
            ProblemType::SignInRefused,
            "That did not sign you in. Check the name, use a passkey registered for it on this \
             site, and try again; an admin can send a new enrolment link.",
        )
        .into_response(),
        Refused::TooMany => {
            let mut response = Problem::new(
                ProblemType::TooManyAttempts,
                "Too many sign-in attempts from this address. Wait ten minutes and try again.",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
            response
        }
        Refused::Database(error) => crate::http::problem::ApiError::from(error).into_response(),
        Refused::Other(error) => {
            tracing::error!(error = %format!("{error:#}"), "a passkey ceremony failed");
            Problem::internal().into_response()
        }
    }
}

/// A finished ceremony: its session cookie, and where the page goes next.
fn signed_in(state: &StaffState, secret: &str, next: &str) -> Response {
    (
        [(header::SET_COOKIE, state.sessions.cookie(secret))],
        Json(json!({"next": next})),
    )
        .into_response()
}

/// Where to go after signing in: a console path given by the page, or the overview.
fn next_or_home(next: Option<&str>) -> String {
    next.filter(|next| {
        next.starts_with("/staff")
            && !next.starts_with("/staff/login")
            && !next.contains("//")
            && !next.contains('\\')
    })
    .unwrap_or("/staff")
    .to_owned()
}

fn client(state: &StaffState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    state.proxies.client_ip(peer, headers)
}

/// A JSON body read into `T`, or a 422 naming what is wrong.
fn body_as<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, Problem> {
    serde_json::from_value(body).map_err(|error| {
        Problem::new(
            ProblemType::Validation,
            format!("The body is not what this step takes: {error}"),
        )
    })
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    shell: Shell,
    next: String,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// `GET /staff/login`: the sign-in page.
#[utoipa::path(
    get,
    path = "/staff/login",
    operation_id = "staffLoginPage",
    tag = "staff console",
    summary = "The console's sign-in page",
    description = "Asks for the person's name, then signs in with a passkey (WebAuthn). \
                   Already signed in: a redirect to `next` (a console path) or `/staff`.",
    params(("next" = Option<String>, Query, description = "The console page to open after.")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Already signed in."),
    ),
)]
async fn login_page(
    State(state): State<StaffState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<Next>,
) -> Response {
    let next = next_or_home(query.next.as_deref());
    if let Some(secret) = cookie_of(&headers)
        && let Ok(Some(_)) = look_up(
            &state.db,
            &state.sessions,
            &secret,
            client(&state, peer, &headers),
        )
        .await
    {
        return Redirect::to(&next).into_response();
    }
    html(
        StatusCode::OK,
        LoginPage {
            shell: Shell::signed_out(&state, "Sign in"),
            next,
        },
    )
}

#[derive(Deserialize)]
struct Begin {
    name: String,
}

/// `POST /staff/login/begin`: a sign-in challenge for `name`.
#[utoipa::path(
    post,
    path = "/staff/login/begin",
    operation_id = "staffLoginBegin",
    tag = "staff console",
    summary = "Start signing in with a passkey",
    description = "`{\"name\": \"...\"}` → `{\"ceremony\": uuid, \"publicKey\": {...}}`, the \
                   WebAuthn request options for `navigator.credentials.get`. At most 20 \
                   challenges per client address in 10 minutes.",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The challenge.", body = Object),
        (status = 401, description = "`/problems/sign-in-refused`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 429, description = "`/problems/too-many-attempts`.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn login_begin(
    State(state): State<StaffState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let begin: Begin = match body_as(body) {
        Ok(begin) => begin,
        Err(problem) => return problem.into_response(),
    };
    let client = client(&state, peer, &headers);
    match passkeys::begin_sign_in(&state.db, &state.webauthn, begin.name.trim(), client).await {
        Ok(challenge) => challenge_json(challenge),
        Err(refusal) => refused(refusal),
    }
}

fn challenge_json(challenge: passkeys::Challenge) -> Response {
    let mut body = challenge.options;
    body["ceremony"] = json!(challenge.ceremony);
    Json(body).into_response()
}

#[derive(Deserialize)]
struct FinishSignIn {
    ceremony: Uuid,
    credential: PublicKeyCredential,
    next: Option<String>,
}

/// `POST /staff/login/finish`: the browser's answer; sets the session cookie.
#[utoipa::path(
    post,
    path = "/staff/login/finish",
    operation_id = "staffLoginFinish",
    tag = "staff console",
    summary = "Finish signing in with a passkey",
    description = "`{\"ceremony\", \"credential\", \"next\"}`: the assertion the browser made. \
                   Signed in: the session cookie (`HttpOnly`, `SameSite=Strict`) and \
                   `{\"next\": path}`.",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in.", body = Object,
         headers(("Set-Cookie" = String, description = "The session."))),
        (status = 401, description = "`/problems/sign-in-refused`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`: not an answer.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn login_finish(
    State(state): State<StaffState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let finish: FinishSignIn = match body_as(body) {
        Ok(finish) => finish,
        Err(problem) => return problem.into_response(),
    };
    let client = client(&state, peer, &headers);
    match passkeys::finish_sign_in(
        &state.db,
        &state.webauthn,
        finish.ceremony,
        &finish.credential,
        client,
    )
    .await
    {
        Ok(secret) => signed_in(&state, &secret, &next_or_home(finish.next.as_deref())),
        Err(refusal) => refused(refusal),
    }
}

#[derive(Template)]
#[template(path = "enrol.html")]
struct EnrolPage {
    shell: Shell,
    name: String,
    secret: String,
}

/// `GET /staff/enrol/{secret}`: register a passkey with a one-time link.
#[utoipa::path(
    get,
    path = "/staff/enrol/{secret}",
    operation_id = "staffEnrolPage",
    tag = "staff console",
    summary = "Register a passkey from an enrolment link",
    description = "The page an enrolment link (`quickdonate staff invite`) opens: one button \
                   that registers a passkey for the account, then signs in.",
    params(("secret" = String, Path, description = "The link's secret.")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 410, description = "The link was used, expired or its account revoked.",
         body = String, content_type = "text/html"),
    ),
)]
async fn enrol_page(State(state): State<StaffState>, Path(secret): Path<String>) -> Response {
    match passkeys::link_works(&state.db, &secret).await {
        Ok(Some(name)) => html(
            StatusCode::OK,
            EnrolPage {
                shell: Shell::signed_out(&state, "Register a passkey"),
                name,
                secret,
            },
        ),
        Ok(None) => refusal_page(
            StatusCode::GONE,
            "This link no longer works",
            "An enrolment link works once, for 24 hours, and not after its account is revoked. \
             Ask an admin for a new one.",
        ),
        Err(error) => crate::http::problem::ApiError::from(error).into_response(),
    }
}

/// `POST /staff/enrol/{secret}/begin`: a registration challenge.
#[utoipa::path(
    post,
    path = "/staff/enrol/{secret}/begin",
    operation_id = "staffEnrolBegin",
    tag = "staff console",
    summary = "Start registering a passkey",
    description = "→ `{\"ceremony\": uuid, \"publicKey\": {...}}`, the WebAuthn creation \
                   options for `navigator.credentials.create`.",
    params(("secret" = String, Path, description = "The link's secret.")),
    responses(
        (status = 200, description = "The challenge.", body = Object),
        (status = 401, description = "`/problems/sign-in-refused`: the link does not work.",
         body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`/problems/too-many-attempts`.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn enrol_begin(
    State(state): State<StaffState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(secret): Path<String>,
) -> Response {
    let client = client(&state, peer, &headers);
    match passkeys::begin_enrolment(&state.db, &state.webauthn, &secret, client).await {
        Ok(challenge) => challenge_json(challenge),
        Err(refusal) => refused(refusal),
    }
}

#[derive(Deserialize)]
struct FinishEnrolment {
    ceremony: Uuid,
    credential: RegisterPublicKeyCredential,
}

/// `POST /staff/enrol/{secret}/finish`: the new passkey; sets the session cookie.
#[utoipa::path(
    post,
    path = "/staff/enrol/{secret}/finish",
    operation_id = "staffEnrolFinish",
    tag = "staff console",
    summary = "Finish registering a passkey",
    description = "`{\"ceremony\", \"credential\"}`: the attestation the browser made. The \
                   passkey is kept, the link used up, and the person signed in.",
    params(("secret" = String, Path, description = "The link's secret.")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Registered and signed in.", body = Object,
         headers(("Set-Cookie" = String, description = "The session."))),
        (status = 401, description = "`/problems/sign-in-refused`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`: not an answer.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn enrol_finish(
    State(state): State<StaffState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(secret): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let finish: FinishEnrolment = match body_as(body) {
        Ok(finish) => finish,
        Err(problem) => return problem.into_response(),
    };
    let client = client(&state, peer, &headers);
    match passkeys::finish_enrolment(
        &state.db,
        &state.webauthn,
        &secret,
        finish.ceremony,
        &finish.credential,
        client,
    )
    .await
    {
        Ok(session) => signed_in(&state, &session, "/staff"),
        Err(refusal) => refused(refusal),
    }
}

/// `POST /staff/logout`: ends the session (a form with its CSRF token).
#[utoipa::path(
    post,
    path = "/staff/logout",
    operation_id = "staffSignOut",
    tag = "staff console",
    summary = "Sign out",
    description = "Ends the session at once and removes its cookie; a form post with the \
                   session's CSRF token (`csrf`).",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out: to the sign-in page."),
        (status = 403, description = "No CSRF token, or not this session's.", body = String,
         content_type = "text/html"),
    ),
)]
async fn sign_out(
    State(state): State<StaffState>,
    headers: HeaderMap,
    posted: Posted<serde::de::IgnoredAny>,
) -> Response {
    if let Some(secret) = cookie_of(&headers) {
        match sessions::end(&state.db, &secret).await {
            Ok(Some(name)) => {
                if let Err(error) = log::write(
                    &state.db,
                    &name,
                    "signed out",
                    "",
                    Some(posted.signed.client),
                )
                .await
                {
                    return crate::http::problem::ApiError::from(error).into_response();
                }
            }
            Ok(None) => {}
            Err(error) => return crate::http::problem::ApiError::from(error).into_response(),
        }
    }
    (
        [(header::SET_COOKIE, state.sessions.removal())],
        Redirect::to("/staff/login"),
    )
        .into_response()
}

/// `GET /staff/assets/{file}`: the console's script and style.
#[utoipa::path(
    get,
    path = "/staff/assets/{file}",
    operation_id = "staffAsset",
    tag = "staff console",
    summary = "The console's script and style",
    params(("file" = String, Path, description = "`console.js` or `console.css`.")),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/javascript"),
        (status = 404, description = "`/problems/not-found`: no such file.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn asset(Path(file): Path<String>) -> Result<Response, Problem> {
    let (content_type, body) = match file.as_str() {
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "console.css" => ("text/css; charset=utf-8", STYLE),
        _ => {
            return Err(Problem::not_found(format!(
                "The console has no file {file:?}."
            )));
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        body,
    )
        .into_response())
}

/// A digest of the script and style, so a page never runs a cached older script.
pub fn asset_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| crate::http::browser::asset_version(&[SCRIPT, STYLE]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sign_in_only_a_console_path_is_followed() {
        assert_eq!(
            next_or_home(Some("/staff/donations?q=x")),
            "/staff/donations?q=x"
        );
        for away in [
            "https://evil.example/staff",
            "//evil.example/staff",
            "/staff//evil.example",
            "/staff/\\evil",
            "/v1/finance/donations",
            "/staff/login?next=/staff",
        ] {
            assert_eq!(next_or_home(Some(away)), "/staff", "{away}");
        }
        assert_eq!(next_or_home(None), "/staff");
    }
}
