//! Who may read finance data: bearer tokens, made and revoked from the command line
//! (`quickdonate tokens ...`), each with a role. A token is `qd_` and 64 hex digits (32 random
//! bytes from the operating system); only its SHA-256 is stored, so the database never holds
//! one that works. A token is looked up by its hash: how long the lookup takes tells nothing
//! about any stored token.
//!
//! [`Caller`] is the extractor for any finance route (either role); [`Admin`] only lets an
//! admin through. No token, a malformed, unknown or revoked one: 401 with
//! `WWW-Authenticate: Bearer`; the wrong role: 403.

use anyhow::{Context, bail};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::http::problem::{ApiError, Problem, ProblemType};

/// The problems every route behind a bearer token can answer, for its documentation
/// (`responses(Refusals, ...)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// No bearer token, or one malformed, unknown or revoked.
    #[response(
        status = 401,
        description = "`/problems/unauthorized`: no valid bearer token.",
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer`, or \
                  `Bearer error=\"invalid_token\"` when the token sent is not valid."))
    )]
    Unauthorized(Problem),
    /// The database is out of reach.
    #[response(
        status = 503,
        description = "`/problems/service-unavailable`.",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait."))
    )]
    Unavailable(Problem),
}

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    /// Read donations, summaries, payouts and Gift Aid.
    Finance,
    /// All that, and the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Finance => "finance",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whoever made a finance request: the name of their token and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// A caller whose token is an admin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin(pub Caller);

/// Why a finance request was refused.
#[derive(Debug)]
pub enum Denied {
    /// 401: no token, or one that is malformed, unknown or revoked.
    Unauthorized {
        detail: &'static str,
        /// Whether a token was sent (RFC 6750: `error="invalid_token"`).
        invalid_token: bool,
    },
    /// 403: the token's role may not do this.
    Forbidden(String),
    /// The token could not be looked up.
    Database(sqlx::Error),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized {
                detail,
                invalid_token,
            } => {
                let mut response = Problem::new(ProblemType::Unauthorized, detail).into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(if invalid_token {
                        "Bearer error=\"invalid_token\""
                    } else {
                        "Bearer"
                    }),
                );
                response
            }
            Denied::Forbidden(detail) => {
                Problem::new(ProblemType::Forbidden, detail).into_response()
            }
            Denied::Database(error) => ApiError::from(error).into_response(),
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    PgPool: FromRef<S>,
{
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Denied> {
        // Asked for twice in one request (Caller and Admin), looked up once.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token = bearer_token(&parts.headers)?;
        match authenticate(&PgPool::from_ref(state), token).await {
            Ok(Some(caller)) => {
                parts.extensions.insert(caller.clone());
                Ok(caller)
            }
            Ok(None) => Err(Denied::Unauthorized {
                detail: "The bearer token is not valid: it is unknown or has been revoked.",
                invalid_token: true,
            }),
            Err(error) => Err(Denied::Database(error)),
        }
    }
}

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    PgPool: FromRef<S>,
{
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Denied> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != Role::Admin {
            return Err(Denied::Forbidden(format!(
                "This needs an admin token; the token {:?} has the role {}.",
                caller.name, caller.role
            )));
        }
        Ok(Admin(caller))
    }
}

/// The token of `Authorization: Bearer <token>`, if it has a token's shape.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Denied> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Denied::Unauthorized {
            detail: "Send a finance API token as `Authorization: Bearer <token>`.",
            invalid_token: false,
        });
    };
    let malformed = || Denied::Unauthorized {
        detail: "The Authorization header must be `Bearer ` and a token made by \
                 `quickdonate tokens create`.",
        invalid_token: true,
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || !is_token_shaped(token) {
        return Err(malformed());
    }
    Ok(token)
}

const PREFIX: &str = "qd_";

fn is_token_shaped(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The caller a live token belongs to.
pub async fn authenticate(db: &PgPool, token: &str) -> sqlx::Result<Option<Caller>> {
    let row = sqlx::query!(
        r#"SELECT name, role AS "role: Role" FROM api_tokens
           WHERE token_hash = $1 AND revoked_at IS NULL"#,
        hash(token)
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| Caller {
        name: row.name,
        role: row.role,
    }))
}

/// Whether `name` may name a token: a letter or digit, then letters, digits, `.`, `_` or `-`,
/// 64 characters at most. (No `:`: the command line's own exports are logged as `cli:<user>`.)
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Makes a token named `name` with `role`; returns it. It is stored only as its hash, so this
/// is the one time it can be shown. Names are never reused, even once revoked.
pub async fn create(db: &PgPool, name: &str, role: Role) -> anyhow::Result<String> {
    if !valid_name(name) {
        bail!(
            "--name {name:?}: a token's name is a letter or digit, then letters, digits, '.', '_' \
             or '-', at most 64 characters"
        );
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|error| anyhow::anyhow!("the system's random source failed: {error}"))?;
    let token = format!("{PREFIX}{}", hex::encode(secret));
    let inserted = sqlx::query!(
        r#"INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO NOTHING"#,
        name,
        role as Role,
        hash(&token)
    )
    .execute(db)
    .await
    .context("could not store the token")?;
    if inserted.rows_affected() == 0 {
        bail!(
            "a token named {name:?} already exists (names are never reused, even once revoked); \
             choose another name"
        );
    }
    Ok(token)
}

/// A token as `tokens list` shows it: never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Every token, oldest first.
pub async fn list(db: &PgPool) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as!(
        TokenInfo,
        r#"SELECT name, role AS "role: Role", created_at, revoked_at
           FROM api_tokens ORDER BY created_at, id"#
    )
    .fetch_all(db)
    .await
}

/// What `revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Now,
    /// It already was, at this time.
    Already(OffsetDateTime),
}

/// Revokes the token named `name`: it stops working at once. An unknown name is an error.
pub async fn revoke(db: &PgPool, name: &str) -> anyhow::Result<Revoked> {
    let row = sqlx::query!(
        r#"WITH token AS (SELECT id, revoked_at FROM api_tokens WHERE name = $1),
                revoked AS (UPDATE api_tokens t SET revoked_at = now()
                            FROM token WHERE t.id = token.id AND t.revoked_at IS NULL
                            RETURNING t.id)
           SELECT token.revoked_at AS before, EXISTS (SELECT 1 FROM revoked) AS "now!"
           FROM token"#,
        name
    )
    .fetch_optional(db)
    .await?
    .with_context(|| {
        format!(
            "no token is named {name:?} (see `quickdonate tokens list`, or `cargo run -- tokens \
             list` in a checkout)"
        )
    })?;
    match (row.now, row.before) {
        (true, _) => Ok(Revoked::Now),
        (false, Some(at)) => Ok(Revoked::Already(at)),
        (false, None) => bail!("the token {name:?} could not be revoked; try again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        assert!(is_token_shaped(&format!("qd_{}", "0a".repeat(32))));
        assert!(!is_token_shaped(&format!("qd_{}", "0A".repeat(32))));
        assert!(!is_token_shaped(&format!("qd_{}", "0a".repeat(31))));
        assert!(!is_token_shaped(&format!("xx_{}", "0a".repeat(32))));
        assert!(!is_token_shaped("qd_"));
    }

    #[test]
    fn names() {
        for good in ["finance", "amina.khan", "ops-2026_q4", "A"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "cli:root", "-x", "has space", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
