//! Staff accounts, made and revoked from the command line (`quickdonate staff ...`): a person's
//! name and role, and the one-time links that register their passkeys. A link is
//! `<STAFF_ORIGIN>/staff/enrol/` and 64 hex digits (32 random bytes); only its SHA-256 is kept,
//! and it works once, within [`ENROLMENT_VALID`]. Inviting a name that already has an account
//! makes a new link for it: a second passkey (a phone and a security key) for the same person.
//!
//! Revoking an account ends its sessions in the same statement, and every session lookup also
//! checks the account, so a revoked person is signed out at once, on every instance.

use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::log;
use crate::operators::access::{Role, valid_name};

/// How long an enrolment link works.
pub const ENROLMENT_VALID: Duration = Duration::from_secs(24 * 3600);

/// A random secret: 64 lower-case hex digits.
pub(super) fn secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("the system's random source failed: {error}"))?;
    Ok(hex::encode(bytes))
}

/// Whether `text` is shaped as [`secret`] makes them.
pub(super) fn is_secret_shaped(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// What `invite` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The link's secret: the last segment of `/staff/enrol/{secret}`.
    pub secret: String,
    pub role: Role,
    pub expires_at: OffsetDateTime,
    /// Whether the account already existed (the link adds a passkey to it).
    pub existing: bool,
}

/// Makes an enrolment link for `name`: a new account with `role`, or (if `name` has one) a
/// further passkey for it, whose role must then be the account's or unsaid.
pub async fn invite(db: &PgPool, name: &str, role: Option<Role>) -> anyhow::Result<Invitation> {
    if !valid_name(name) {
        bail!(
            "--name {name:?}: a name is a letter or digit, then letters, digits, '.', '_' or '-', \
             at most 64 characters"
        );
    }
    let secret = secret()?;
    let mut tx = db.begin().await?;
    let existing = sqlx::query!(
        r#"SELECT id, role AS "role: Role", revoked_at FROM staff WHERE name = $1 FOR UPDATE"#,
        name
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (id, role, existed) = match (existing, role) {
        (Some(account), _) if account.revoked_at.is_some() => {
            bail!("{name} was revoked; names are never reused, so invite them under another name")
        }
        (Some(account), Some(role)) if role != account.role => bail!(
            "{name} is already {}; an account's role does not change (revoke it and invite \
             the person under a new name)",
            account.role
        ),
        (Some(account), _) => (account.id, account.role, true),
        (None, None) => bail!("--role is needed for a new account: finance or admin"),
        (None, Some(role)) => {
            let id = Uuid::new_v4();
            sqlx::query!(
                "INSERT INTO staff (id, name, role) VALUES ($1, $2, $3)",
                id,
                name,
                role as Role
            )
            .execute(&mut *tx)
            .await
            .context("could not store the account")?;
            (id, role, false)
        }
    };
    let expires_at = sqlx::query_scalar!(
        r#"INSERT INTO staff_enrolments (token_hash, staff_id, expires_at)
           VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING expires_at"#,
        hash(&secret),
        id,
        ENROLMENT_VALID.as_secs_f64()
    )
    .fetch_one(&mut *tx)
    .await?;
    log::write(
        &mut *tx,
        name,
        "invited",
        if existed {
            "a further passkey"
        } else {
            role.as_str()
        },
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(Invitation {
        secret,
        role,
        expires_at,
        existing: existed,
    })
}

/// An account as `staff list` and the admin page show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub passkeys: i64,
    pub live_sessions: i64,
    pub last_sign_in: Option<OffsetDateTime>,
}

/// Every account, oldest first.
pub async fn list(db: &PgPool) -> sqlx::Result<Vec<Account>> {
    sqlx::query_as!(
        Account,
        r#"SELECT s.name, s.role AS "role: Role", s.created_at, s.revoked_at,
                  (SELECT count(*) FROM staff_passkeys p WHERE p.staff_id = s.id) AS "passkeys!",
                  (SELECT count(*) FROM staff_sessions x
                   WHERE x.staff_id = s.id AND x.ended_at IS NULL) AS "live_sessions!",
                  (SELECT max(x.created_at) FROM staff_sessions x WHERE x.staff_id = s.id)
                      AS last_sign_in
           FROM staff s ORDER BY s.created_at, s.name"#
    )
    .fetch_all(db)
    .await
}

/// What `revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now, ending this many sessions.
    Now { sessions: u64 },
    /// It already was, at this time.
    Already(OffsetDateTime),
}

/// Revokes `name`: its sessions end at once, its links and passkeys stop working. `by` is who
/// did it, for the log (`cli:<user>` or `staff:<name>`).
pub async fn revoke(db: &PgPool, name: &str, by: &str) -> anyhow::Result<Revoked> {
    let mut tx = db.begin().await?;
    let account = sqlx::query!(
        "SELECT id, revoked_at FROM staff WHERE name = $1 FOR UPDATE",
        name
    )
    .fetch_optional(&mut *tx)
    .await?
    .with_context(|| {
        format!("no staff account is named {name:?} (see `quickdonate staff list`)")
    })?;
    if let Some(at) = account.revoked_at {
        return Ok(Revoked::Already(at));
    }
    sqlx::query!(
        "UPDATE staff SET revoked_at = now() WHERE id = $1",
        account.id
    )
    .execute(&mut *tx)
    .await?;
    let sessions = sqlx::query!(
        r#"UPDATE staff_sessions SET ended_at = now(), ended_why = 'revoked'
           WHERE staff_id = $1 AND ended_at IS NULL"#,
        account.id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    log::write(&mut *tx, name, "revoked", &format!("by {by}"), None).await?;
    tx.commit().await?;
    Ok(Revoked::Now { sessions })
}
