//! Console sessions: a random cookie (only its SHA-256 kept, in Postgres, so any instance knows
//! it), `HttpOnly`, `SameSite=Strict`, `Path=/staff`, `Secure` when `STAFF_ORIGIN` is https.
//! A session ends after `STAFF_SESSION_IDLE` without a request, `STAFF_SESSION_MAX` after
//! sign-in, at sign-out, or at once when its account is revoked: every lookup checks all four in
//! one statement, which also marks the session seen.
//!
//! [`Signed`] is the extractor of a page: a request without a live session is sent to the
//! sign-in page (and back afterwards). [`Posted`] is the extractor of every state-changing
//! form: a live session, an `Origin` that is the console's own (when the browser sends one), and
//! the session's CSRF token in the form's `csrf` field, or nothing changes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use uuid::Uuid;

use super::StaffState;
use super::accounts::{hash, is_secret_shaped, secret};
use super::log;
use super::pages::{read_pairs, refusal_page};
use crate::operators::access::{Caller, Role};

/// The session cookie's name.
pub const COOKIE: &str = "qd_staff";

/// How long sessions last, and how their cookie is set.
#[derive(Debug, Clone)]
pub struct Sessions {
    pub idle: Duration,
    pub max: Duration,
    /// The cookie is `Secure`.
    pub secure: bool,
    /// `STAFF_ORIGIN`: a state-changing request from any other origin is refused.
    pub origin: String,
}

impl Sessions {
    /// The `Set-Cookie` of a new session.
    pub fn cookie(&self, secret: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={secret}; Path=/staff; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.max.as_secs()
        ))
        .expect("a hex secret is a header value")
    }

    /// The `Set-Cookie` that removes it.
    pub fn removal(&self) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/staff; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
        ))
        .expect("a static header value")
    }
}

/// A signed-in person, for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub staff_id: Uuid,
    pub name: String,
    pub role: Role,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// The client's address.
    pub client: IpAddr,
}

impl Signed {
    /// Who they are to the finance audit log: `staff:<name>`, with their role. (A token's name
    /// has no `:`, so the two never meet.)
    pub fn caller(&self) -> Caller {
        Caller {
            name: format!("staff:{}", self.name),
            role: self.role,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The 403 page a finance account gets on an admin's page; none for an admin.
    pub fn unless_admin(&self) -> Option<Response> {
        (!self.is_admin()).then(|| {
            refusal_page(
                StatusCode::FORBIDDEN,
                "Only an admin may open this page",
                "Your account is a finance account. Ask an admin if you need this.",
            )
        })
    }
}

/// Makes a session for `staff_id`; returns its cookie's secret.
pub async fn start(db: impl sqlx::PgExecutor<'_>, staff_id: Uuid) -> anyhow::Result<String> {
    let secret = secret()?;
    let csrf = super::accounts::secret()?;
    sqlx::query!(
        "INSERT INTO staff_sessions (token_hash, staff_id, csrf_token) VALUES ($1, $2, $3)",
        hash(&secret),
        staff_id,
        csrf
    )
    .execute(db)
    .await?;
    Ok(secret)
}

/// The session cookie's value, if the request has one shaped as ours.
pub fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && is_secret_shaped(value))
        .map(|(_, value)| value.to_owned())
}

/// The live session whose cookie is `secret`, marked seen; a session found past its time is
/// ended (and logged) instead.
pub async fn look_up(
    db: &PgPool,
    sessions: &Sessions,
    secret: &str,
    client: IpAddr,
) -> sqlx::Result<Option<Signed>> {
    let token_hash = hash(secret);
    let live = sqlx::query!(
        r#"UPDATE staff_sessions x SET last_seen_at = now()
           FROM staff s
           WHERE x.token_hash = $1 AND x.ended_at IS NULL AND s.id = x.staff_id
             AND s.revoked_at IS NULL
             AND x.last_seen_at > now() - make_interval(secs => $2)
             AND x.created_at > now() - make_interval(secs => $3)
           RETURNING s.id, s.name, s.role AS "role: Role", x.csrf_token"#,
        token_hash,
        sessions.idle.as_secs_f64(),
        sessions.max.as_secs_f64()
    )
    .fetch_optional(db)
    .await?;
    if let Some(row) = live {
        return Ok(Some(Signed {
            staff_id: row.id,
            name: row.name,
            role: row.role,
            csrf: row.csrf_token,
            client,
        }));
    }
    // Past its time: ended now, and said so once.
    let ended = sqlx::query!(
        r#"UPDATE staff_sessions x
           SET ended_at = now(),
               ended_why = CASE WHEN x.created_at <= now() - make_interval(secs => $3)
                                THEN 'too old' ELSE 'idle' END
           FROM staff s
           WHERE x.token_hash = $1 AND x.ended_at IS NULL AND s.id = x.staff_id
             AND s.revoked_at IS NULL
             AND (x.last_seen_at <= now() - make_interval(secs => $2)
                  OR x.created_at <= now() - make_interval(secs => $3))
           RETURNING s.name, x.ended_why AS "why!""#,
        token_hash,
        sessions.idle.as_secs_f64(),
        sessions.max.as_secs_f64()
    )
    .fetch_optional(db)
    .await?;
    if let Some(ended) = ended {
        log::write(db, &ended.name, "session ended", &ended.why, Some(client)).await?;
    }
    Ok(None)
}

/// Ends the session whose cookie is `secret` (signing out); returns whose it was.
pub async fn end(db: &PgPool, secret: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        r#"UPDATE staff_sessions x SET ended_at = now(), ended_why = 'signed out'
           FROM staff s
           WHERE x.token_hash = $1 AND x.ended_at IS NULL AND s.id = x.staff_id
           RETURNING s.name"#,
        hash(secret)
    )
    .fetch_optional(db)
    .await
}

/// The client's address, behind `TRUSTED_PROXIES`.
pub fn client_of(parts: &Parts, state: &StaffState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    state.proxies.client_ip(peer, &parts.headers)
}

/// Where a signed-out request is sent: the sign-in page, then back here.
fn to_sign_in(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/staff", |p| p.as_str())
        .to_owned();
    let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
    Redirect::to(&format!("/staff/login?next={next}")).into_response()
}

impl<S> FromRequestParts<S> for Signed
where
    S: Send + Sync,
    StaffState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = StaffState::from_ref(state);
        let client = client_of(parts, &state);
        let Some(secret) = cookie_of(&parts.headers) else {
            return Err(to_sign_in(parts));
        };
        match look_up(&state.db, &state.sessions, &secret, client).await {
            Ok(Some(signed)) => Ok(signed),
            Ok(None) => {
                let mut response = to_sign_in(parts);
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, state.sessions.removal());
                Err(response)
            }
            Err(error) => Err(crate::http::problem::ApiError::from(error).into_response()),
        }
    }
}

/// A state-changing form: the session, and the form's fields once its CSRF token matched.
pub struct Posted<T> {
    pub signed: Signed,
    pub form: T,
}

/// What every console form sends besides its own fields.
#[derive(serde::Deserialize)]
struct Csrf {
    csrf: String,
}

fn csrf_refused() -> Response {
    refusal_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was not sent from this console's own page, or its session has changed. Go \
         back, reload the page and try again.",
    )
}

impl<S, T> FromRequest<S> for Posted<T>
where
    S: Send + Sync,
    StaffState: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let staff = StaffState::from_ref(state);
        let (mut parts, body) = request.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        if let Some(origin) = parts.headers.get(header::ORIGIN)
            && origin.as_bytes() != staff.sessions.origin.as_bytes()
        {
            return Err(csrf_refused());
        }
        let body = axum::body::to_bytes(body, crate::http::API_BODY_LIMIT)
            .await
            .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?;
        let sent = sent_csrf(&body);
        if !sent.is_some_and(|token| constant_time_eq(token.as_bytes(), signed.csrf.as_bytes())) {
            return Err(csrf_refused());
        }
        let form: T = read_pairs(&body).map_err(|detail| {
            refusal_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The form is not right",
                &detail,
            )
        })?;
        Ok(Posted { signed, form })
    }
}

fn sent_csrf(body: &[u8]) -> Option<String> {
    read_pairs::<Csrf>(body).ok().map(|c| c.csrf)
}

/// Compares two secrets in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_when_https() {
        let sessions = Sessions {
            idle: Duration::from_secs(1800),
            max: Duration::from_secs(43200),
            secure: true,
            origin: "https://finance.example.org".into(),
        };
        let cookie = sessions.cookie(&"a".repeat(64));
        let cookie = cookie.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/staff",
            "Max-Age=43200",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        let local = Sessions {
            secure: false,
            ..sessions
        };
        assert!(
            !local
                .cookie(&"a".repeat(64))
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }

    #[test]
    fn only_our_cookie_shaped_as_ours_is_read() {
        let mut headers = HeaderMap::new();
        let good = "b".repeat(64);
        headers.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}=short; x=y").parse().unwrap(),
        );
        assert_eq!(cookie_of(&headers), None);
        headers.append(header::COOKIE, format!("{COOKIE}={good}").parse().unwrap());
        assert_eq!(cookie_of(&headers), Some(good));
    }

    #[test]
    fn a_form_body_gives_its_csrf_and_fields() {
        #[derive(serde::Deserialize)]
        struct Move {
            reference: String,
        }
        let body = b"csrf=abc&reference=X%20123";
        assert_eq!(sent_csrf(body).as_deref(), Some("abc"));
        assert_eq!(read_pairs::<Move>(body).unwrap().reference, "X 123");
        assert_eq!(sent_csrf(b"reference=1"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
