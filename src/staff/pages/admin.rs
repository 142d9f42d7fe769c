//! `GET /staff/admin` (admins only): the Stripe events set aside as failed, each with a button
//! that applies it again (`GET /v1/finance/events?failed=true`,
//! `POST /v1/finance/events/{id}/replay`), the audit log (`GET /v1/finance/audit`), the staff
//! log of sign-ins, failures and sign-outs, and the staff accounts, with a form to invite
//! someone (the one-time link shown once, on the answer) and one to revoke an account (its
//! sessions end at once). A finance account gets a 403 page.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Shell, failed_page, html, refusal_page, when};
use crate::operators::access::Role;
use crate::staff::api::Api;
use crate::staff::sessions::{Posted, Signed};
use crate::staff::{StaffState, accounts, log};

#[derive(Deserialize)]
struct AuditPage {
    data: Vec<AuditEntry>,
}

#[derive(Deserialize)]
pub struct AuditEntry {
    pub at: String,
    pub token_name: String,
    pub role: String,
    pub what: String,
    pub filters: serde_json::Value,
    pub row_count: i64,
}

#[derive(Deserialize)]
struct EventsPage {
    data: Vec<FailedEvent>,
}

#[derive(Deserialize)]
pub struct FailedEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub first_received_at: String,
    pub last_error: Option<String>,
}

pub struct Account {
    pub name: String,
    pub role: &'static str,
    pub passkeys: i64,
    pub sessions: i64,
    pub last_sign_in: String,
    pub revoked: String,
}

pub struct Line {
    pub at: String,
    pub name: String,
    pub what: String,
    pub detail: String,
    pub client: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    shell: Shell,
    failed: Vec<FailedEvent>,
    audit: Vec<AuditEntry>,
    accounts: Vec<Account>,
    lines: Vec<Line>,
    /// What the last form did: an invitation's link, a revocation.
    done: Option<String>,
    link: Option<String>,
}

async fn render(
    state: &StaffState,
    api: &Api,
    signed: &Signed,
    done: Option<String>,
    link: Option<String>,
) -> Response {
    if let Some(refusal) = signed.unless_admin() {
        return refusal;
    }
    let audit: AuditPage = match api.get(signed, "/v1/finance/audit?limit=50").await {
        Ok(audit) => audit,
        Err(failed) => return failed_page(failed),
    };
    let events: EventsPage = match api
        .get(signed, "/v1/finance/events?failed=true&limit=100")
        .await
    {
        Ok(events) => events,
        Err(failed) => return failed_page(failed),
    };
    let (accounts, lines) =
        match tokio::try_join!(accounts::list(&state.db), log::latest(&state.db, 50)) {
            Ok(both) => both,
            Err(error) => return crate::http::problem::ApiError::from(error).into_response(),
        };
    let time = |at: time::OffsetDateTime| when(&crate::timestamps::rfc3339(at));
    html(
        StatusCode::OK,
        AdminPage {
            shell: Shell::signed_in(state, signed, "Admin", "admin"),
            failed: events
                .data
                .into_iter()
                .map(|event| FailedEvent {
                    first_received_at: when(&event.first_received_at),
                    ..event
                })
                .collect(),
            audit: audit
                .data
                .into_iter()
                .map(|entry| AuditEntry {
                    at: when(&entry.at),
                    ..entry
                })
                .collect(),
            accounts: accounts
                .into_iter()
                .map(|a| Account {
                    role: a.role.as_str(),
                    passkeys: a.passkeys,
                    sessions: a.live_sessions,
                    last_sign_in: a.last_sign_in.map(time).unwrap_or_default(),
                    revoked: a.revoked_at.map(time).unwrap_or_default(),
                    name: a.name,
                })
                .collect(),
            lines: lines
                .into_iter()
                .map(|l| Line {
                    at: time(l.at),
                    name: l.name,
                    what: l.what,
                    detail: l.detail,
                    client: l.client_ip.unwrap_or_default(),
                })
                .collect(),
            done,
            link,
        },
    )
}

/// `GET /staff/admin`: admins only.
#[utoipa::path(
    get,
    path = "/staff/admin",
    operation_id = "staffAdmin",
    tag = "staff console",
    summary = "The console's admin page",
    description = "The audit log, the staff log (sign-ins, failures, sign-outs) and the staff \
                   accounts with invite and revoke forms. Admins only: a finance account gets \
                   403.",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page."),
        (status = 403, description = "Not an admin.", body = String, content_type = "text/html"),
    ),
)]
pub async fn page(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
) -> Response {
    render(&state, &api, &signed, None, None).await
}

#[derive(Deserialize)]
pub struct Invite {
    name: String,
    role: String,
}

/// `POST /staff/admin/invite`: a new account's (or a further passkey's) one-time link.
#[utoipa::path(
    post,
    path = "/staff/admin/invite",
    operation_id = "staffInvite",
    tag = "staff console",
    summary = "Invite someone to the console",
    description = "A form post (`name`, `role`, `csrf`) as `quickdonate staff invite` does: \
                   the answer shows the one-time enrolment link, once. Admins only.",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The admin page with the link.", body = String,
         content_type = "text/html"),
        (status = 403, description = "Not an admin, or no CSRF token.", body = String,
         content_type = "text/html"),
        (status = 422, description = "The name or role is not valid.", body = String,
         content_type = "text/html"),
    ),
)]
pub async fn invite(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    posted: Posted<Invite>,
) -> Response {
    let Posted { signed, form } = posted;
    if let Some(refusal) = signed.unless_admin() {
        return refusal;
    }
    let role = match form.role.as_str() {
        "finance" => Some(Role::Finance),
        "admin" => Some(Role::Admin),
        _ => None,
    };
    match accounts::invite(&state.db, form.name.trim(), role).await {
        Ok(invitation) => {
            let link = format!(
                "{}/staff/enrol/{}",
                state.sessions.origin, invitation.secret
            );
            let done = format!(
                "Invited {} ({}) by {}. Send them this link; it works once, for 24 hours, and \
                 is shown only now:",
                form.name.trim(),
                invitation.role,
                signed.name
            );
            render(&state, &api, &signed, Some(done), Some(link)).await
        }
        Err(error) => refusal_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No invitation was made",
            &format!("{error:#}"),
        ),
    }
}

#[derive(Deserialize)]
pub struct Revoke {
    name: String,
}

/// `POST /staff/admin/revoke`: revokes an account; its sessions end at once.
#[utoipa::path(
    post,
    path = "/staff/admin/revoke",
    operation_id = "staffRevoke",
    tag = "staff console",
    summary = "Revoke a console account",
    description = "A form post (`name`, `csrf`) as `quickdonate staff revoke` does: the \
                   account's sessions end at once and its passkeys stop working. Admins only.",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The admin page.", body = String, content_type = "text/html"),
        (status = 403, description = "Not an admin, or no CSRF token.", body = String,
         content_type = "text/html"),
        (status = 422, description = "No such account.", body = String,
         content_type = "text/html"),
    ),
)]
pub async fn revoke(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    posted: Posted<Revoke>,
) -> Response {
    let Posted { signed, form } = posted;
    if let Some(refusal) = signed.unless_admin() {
        return refusal;
    }
    let by = signed.caller().name;
    match accounts::revoke(&state.db, form.name.trim(), &by).await {
        Ok(accounts::Revoked::Now { sessions }) => {
            let done = format!(
                "{} is revoked: {sessions} session(s) ended.",
                form.name.trim()
            );
            render(&state, &api, &signed, Some(done), None).await
        }
        Ok(accounts::Revoked::Already(_)) => {
            let done = format!("{} was already revoked.", form.name.trim());
            render(&state, &api, &signed, Some(done), None).await
        }
        Err(error) => refusal_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing was revoked",
            &format!("{error:#}"),
        ),
    }
}

#[derive(Deserialize)]
pub struct Replay {
    id: String,
}

/// `POST /staff/admin/replay`: applies a failed event again.
#[utoipa::path(
    post,
    path = "/staff/admin/replay",
    operation_id = "staffReplayEvent",
    tag = "staff console",
    summary = "Apply a failed event again",
    description = "A form post (`id`, `csrf`): replays the event through the finance API \
                   (applying is idempotent). Admins only.",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The admin page.", body = String, content_type = "text/html"),
        (status = 403, description = "Not an admin, or no CSRF token.", body = String,
         content_type = "text/html"),
        (status = 404, description = "No such event.", body = String, content_type = "text/html"),
    ),
)]
pub async fn replay(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    posted: Posted<Replay>,
) -> Response {
    let Posted { signed, form } = posted;
    if let Some(refusal) = signed.unless_admin() {
        return refusal;
    }
    let encoded = crate::staff::api::encoded(&form.id);
    let replayed: Result<serde_json::Value, _> = api
        .call(
            &signed,
            axum::http::Method::POST,
            &format!("/v1/finance/events/{encoded}/replay"),
            &serde_json::Value::Null,
            None,
        )
        .await;
    match replayed {
        Ok(_) => {
            let done = format!(
                "{} is queued to be applied again; it leaves this list once it applies.",
                form.id
            );
            render(&state, &api, &signed, Some(done), None).await
        }
        Err(failed) => failed_page(failed),
    }
}
