//! Passkeys (WebAuthn, with `webauthn-rs`): registering one from an enrolment link, and signing
//! in with one. Each ceremony is two requests: the challenge, whose server-side state is kept in
//! `staff_ceremonies` (so any instance may receive the answer), and the browser's answer, which
//! takes that state once (a replayed answer finds it taken) within [`CEREMONY_VALID`].
//!
//! The relying party is `STAFF_ORIGIN`: its host is the id passkeys are bound to, and an answer
//! made for any other origin fails, which is what makes a passkey unphishable. A passkey must
//! verify its user (a PIN or a fingerprint): webauthn-rs's passkeys require it.
//!
//! Sign-in attempts are counted per client address from the ceremonies themselves: at most
//! [`ATTEMPTS`] challenges within [`ATTEMPT_WINDOW`]. Every refusal is logged and answered
//! with one problem that says what to do, never which check failed for which account.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Webauthn,
    WebauthnBuilder,
};

use super::accounts::{hash, is_secret_shaped};
use super::{log, sessions};
use crate::config;

/// How long a challenge may wait for its answer.
pub const CEREMONY_VALID: Duration = Duration::from_secs(300);
/// At most this many sign-in or enrolment challenges per client address ...
pub const ATTEMPTS: i64 = 20;
/// ... within this long.
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(600);

/// The relying party `STAFF_ORIGIN` names.
pub fn relying_party(staff: &config::Staff, charity_name: &str) -> anyhow::Result<Webauthn> {
    let origin = Url::parse(&staff.origin).context("STAFF_ORIGIN is a URL")?;
    WebauthnBuilder::new(&staff.host, &origin)
        .context("STAFF_ORIGIN's host is a relying party id")?
        .rp_name(charity_name)
        .timeout(CEREMONY_VALID)
        .build()
        .context("the passkey relying party")
}

/// Why a ceremony was refused; every one is logged before it is answered.
#[derive(Debug)]
pub enum Refused {
    /// The link is unknown, used, expired or its account revoked.
    Link,
    /// No live account of that name has a passkey.
    Account,
    /// The answer did not verify, was late, or was already used.
    Answer,
    /// Too many challenges from this address.
    TooMany,
    Database(sqlx::Error),
    Other(anyhow::Error),
}

impl From<sqlx::Error> for Refused {
    fn from(error: sqlx::Error) -> Self {
        Refused::Database(error)
    }
}

/// A challenge, for the browser: `{ceremony, publicKey: {...}}`.
pub struct Challenge {
    pub ceremony: Uuid,
    pub options: Value,
}

/// Refuses a new challenge from `client` once it has made [`ATTEMPTS`] within the window; also
/// forgets ceremonies over a day old.
async fn count_attempt(db: &PgPool, client: IpAddr, name: &str) -> Result<(), Refused> {
    sqlx::query!("DELETE FROM staff_ceremonies WHERE created_at < now() - interval '1 day'")
        .execute(db)
        .await?;
    let recent = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM staff_ceremonies
           WHERE client_ip = $1 AND created_at > now() - make_interval(secs => $2)"#,
        client.to_string(),
        ATTEMPT_WINDOW.as_secs_f64()
    )
    .fetch_one(db)
    .await?;
    if recent >= ATTEMPTS {
        log::write(
            db,
            name,
            "sign-in refused",
            "too many attempts",
            Some(client),
        )
        .await?;
        return Err(Refused::TooMany);
    }
    Ok(())
}

/// The account an enrolment link `secret` may still register a passkey for.
async fn enrolment(db: &PgPool, secret: &str) -> sqlx::Result<Option<(Uuid, String)>> {
    if !is_secret_shaped(secret) {
        return Ok(None);
    }
    let row = sqlx::query!(
        r#"SELECT s.id, s.name FROM staff_enrolments e JOIN staff s ON s.id = e.staff_id
           WHERE e.token_hash = $1 AND e.used_at IS NULL AND e.expires_at > now()
             AND s.revoked_at IS NULL"#,
        hash(secret)
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.id, row.name)))
}

/// Whose a link is, if it still works: for the enrolment page.
pub async fn link_works(db: &PgPool, secret: &str) -> sqlx::Result<Option<String>> {
    Ok(enrolment(db, secret).await?.map(|(_, name)| name))
}

async fn passkeys_of(db: &PgPool, staff_id: Uuid) -> Result<Vec<Passkey>, Refused> {
    let stored = sqlx::query_scalar!(
        "SELECT passkey FROM staff_passkeys WHERE staff_id = $1 ORDER BY created_at",
        staff_id
    )
    .fetch_all(db)
    .await?;
    stored
        .into_iter()
        .map(|json| serde_json::from_value(json).context("a stored passkey reads back"))
        .collect::<anyhow::Result<_>>()
        .map_err(Refused::Other)
}

/// The first half of registering a passkey through the link `secret`.
pub async fn begin_enrolment(
    db: &PgPool,
    webauthn: &Webauthn,
    secret: &str,
    client: IpAddr,
) -> Result<Challenge, Refused> {
    count_attempt(db, client, "(enrolment link)").await?;
    let Some((staff_id, name)) = enrolment(db, secret).await? else {
        log::write(
            db,
            "(enrolment link)",
            "enrolment refused",
            "link",
            Some(client),
        )
        .await?;
        return Err(Refused::Link);
    };
    let existing: Vec<_> = passkeys_of(db, staff_id)
        .await?
        .iter()
        .map(|passkey| passkey.cred_id().clone())
        .collect();
    let (options, state): (CreationChallengeResponse, PasskeyRegistration) = webauthn
        .start_passkey_registration(staff_id, &name, &name, Some(existing))
        .map_err(|error| Refused::Other(error.into()))?;
    let ceremony = Uuid::new_v4();
    sqlx::query!(
        r#"INSERT INTO staff_ceremonies (id, kind, staff_id, enrolment, state, client_ip)
           VALUES ($1, 'enrol', $2, $3, $4, $5)"#,
        ceremony,
        staff_id,
        hash(secret),
        serde_json::to_value(&state).map_err(|error| Refused::Other(error.into()))?,
        client.to_string()
    )
    .execute(db)
    .await?;
    Ok(Challenge {
        ceremony,
        options: serde_json::to_value(&options).map_err(|error| Refused::Other(error.into()))?,
    })
}

/// The state of ceremony `id` of `kind`, taken once and for good (in a statement of its own,
/// before the answer is checked: a challenge answered wrongly cannot be answered again), if it
/// is not too late.
async fn take(
    db: &PgPool,
    id: Uuid,
    kind: &str,
) -> sqlx::Result<Option<(Option<Uuid>, Option<Vec<u8>>, Value)>> {
    let row = sqlx::query!(
        r#"WITH taken AS (
               SELECT id, staff_id, enrolment, state FROM staff_ceremonies
               WHERE id = $1 AND kind = $2 AND finished_at IS NULL AND state IS NOT NULL
                 AND created_at > now() - make_interval(secs => $3)
               FOR UPDATE)
           UPDATE staff_ceremonies c SET finished_at = now(), state = NULL
           FROM taken WHERE c.id = taken.id
           RETURNING taken.staff_id, taken.enrolment, taken.state AS "state!""#,
        id,
        kind,
        CEREMONY_VALID.as_secs_f64()
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.staff_id, row.enrolment, row.state)))
}

/// The second half: the browser's `credential` for `ceremony`, through the link `secret`. The
/// passkey is kept, the link used up, and a session started: returns its cookie's secret.
pub async fn finish_enrolment(
    db: &PgPool,
    webauthn: &Webauthn,
    secret: &str,
    ceremony: Uuid,
    credential: &RegisterPublicKeyCredential,
    client: IpAddr,
) -> Result<String, Refused> {
    let taken = take(db, ceremony, "enrol").await?;
    let Some((Some(staff_id), Some(link), state)) = taken else {
        log::write(
            db,
            "(enrolment link)",
            "enrolment refused",
            "late or replayed",
            Some(client),
        )
        .await?;
        return Err(Refused::Answer);
    };
    if link != hash(secret) {
        log::write(
            db,
            "(enrolment link)",
            "enrolment refused",
            "another link",
            Some(client),
        )
        .await?;
        return Err(Refused::Link);
    }
    let state: PasskeyRegistration =
        serde_json::from_value(state).map_err(|error| Refused::Other(error.into()))?;
    // The link is used up with the passkey it registers; an answer that does not verify
    // leaves it for another try (a new challenge), within its 24 hours.
    let mut tx = db.begin().await?;
    let used = sqlx::query_scalar!(
        r#"UPDATE staff_enrolments e SET used_at = now()
           FROM staff s
           WHERE e.token_hash = $1 AND e.used_at IS NULL AND e.expires_at > now()
             AND s.id = e.staff_id AND s.revoked_at IS NULL
           RETURNING s.name"#,
        link
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(name) = used else {
        drop(tx);
        log::write(
            db,
            "(enrolment link)",
            "enrolment refused",
            "link",
            Some(client),
        )
        .await?;
        return Err(Refused::Link);
    };
    let passkey = match webauthn.finish_passkey_registration(credential, &state) {
        Ok(passkey) => passkey,
        Err(error) => {
            drop(tx);
            log::write(
                db,
                &name,
                "enrolment refused",
                &error.to_string(),
                Some(client),
            )
            .await?;
            return Err(Refused::Answer);
        }
    };
    let stored = sqlx::query!(
        r#"INSERT INTO staff_passkeys (credential_id, staff_id, passkey) VALUES ($1, $2, $3)
           ON CONFLICT (credential_id) DO NOTHING"#,
        passkey.cred_id().as_slice(),
        staff_id,
        serde_json::to_value(&passkey).map_err(|error| Refused::Other(error.into()))?
    )
    .execute(&mut *tx)
    .await?;
    if stored.rows_affected() == 0 {
        drop(tx);
        log::write(
            db,
            &name,
            "enrolment refused",
            "passkey already registered",
            Some(client),
        )
        .await?;
        return Err(Refused::Answer);
    }
    let session = sessions::start(&mut *tx, staff_id)
        .await
        .map_err(Refused::Other)?;
    log::write(
        &mut *tx,
        &name,
        "enrolled",
        "a passkey registered",
        Some(client),
    )
    .await?;
    log::write(
        &mut *tx,
        &name,
        "signed in",
        "after enrolling",
        Some(client),
    )
    .await?;
    tx.commit().await?;
    Ok(session)
}

/// The first half of signing in as `name`.
pub async fn begin_sign_in(
    db: &PgPool,
    webauthn: &Webauthn,
    name: &str,
    client: IpAddr,
) -> Result<Challenge, Refused> {
    count_attempt(db, client, name).await?;
    let account = sqlx::query_scalar!(
        "SELECT id FROM staff WHERE name = $1 AND revoked_at IS NULL",
        name
    )
    .fetch_optional(db)
    .await?;
    let passkeys = match account {
        Some(id) => passkeys_of(db, id).await?,
        None => Vec::new(),
    };
    let (Some(staff_id), false) = (account, passkeys.is_empty()) else {
        // Counted as an attempt all the same.
        sqlx::query!(
            "INSERT INTO staff_ceremonies (id, kind, client_ip) VALUES ($1, 'sign-in', $2)",
            Uuid::new_v4(),
            client.to_string()
        )
        .execute(db)
        .await?;
        log::write(db, name, "sign-in failed", "no such account", Some(client)).await?;
        return Err(Refused::Account);
    };
    let (options, state): (RequestChallengeResponse, PasskeyAuthentication) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|error| Refused::Other(error.into()))?;
    let ceremony = Uuid::new_v4();
    sqlx::query!(
        r#"INSERT INTO staff_ceremonies (id, kind, staff_id, state, client_ip)
           VALUES ($1, 'sign-in', $2, $3, $4)"#,
        ceremony,
        staff_id,
        serde_json::to_value(&state).map_err(|error| Refused::Other(error.into()))?,
        client.to_string()
    )
    .execute(db)
    .await?;
    Ok(Challenge {
        ceremony,
        options: serde_json::to_value(&options).map_err(|error| Refused::Other(error.into()))?,
    })
}

/// The second half: the browser's `credential` for `ceremony`. The passkey's counter is kept and
/// a session started: returns its cookie's secret.
pub async fn finish_sign_in(
    db: &PgPool,
    webauthn: &Webauthn,
    ceremony: Uuid,
    credential: &PublicKeyCredential,
    client: IpAddr,
) -> Result<String, Refused> {
    let Some((Some(staff_id), _, state)) = take(db, ceremony, "sign-in").await? else {
        log::write(
            db,
            "(unknown)",
            "sign-in failed",
            "late or replayed",
            Some(client),
        )
        .await?;
        return Err(Refused::Answer);
    };
    let mut tx = db.begin().await?;
    let account = sqlx::query!(
        "SELECT name FROM staff WHERE id = $1 AND revoked_at IS NULL FOR SHARE",
        staff_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(account) = account else {
        drop(tx);
        log::write(
            db,
            "(revoked)",
            "sign-in failed",
            "account revoked",
            Some(client),
        )
        .await?;
        return Err(Refused::Account);
    };
    let state: PasskeyAuthentication =
        serde_json::from_value(state).map_err(|error| Refused::Other(error.into()))?;
    let result = match webauthn.finish_passkey_authentication(credential, &state) {
        Ok(result) => result,
        Err(error) => {
            drop(tx);
            log::write(
                db,
                &account.name,
                "sign-in failed",
                &error.to_string(),
                Some(client),
            )
            .await?;
            return Err(Refused::Answer);
        }
    };
    let stored = sqlx::query_scalar!(
        r#"SELECT passkey FROM staff_passkeys WHERE credential_id = $1 AND staff_id = $2
           FOR UPDATE"#,
        result.cred_id().as_slice(),
        staff_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut passkey: Passkey =
        serde_json::from_value(stored).map_err(|error| Refused::Other(error.into()))?;
    passkey.update_credential(&result);
    sqlx::query!(
        r#"UPDATE staff_passkeys SET passkey = $2, last_used_at = now()
           WHERE credential_id = $1"#,
        result.cred_id().as_slice(),
        serde_json::to_value(&passkey).map_err(|error| Refused::Other(error.into()))?
    )
    .execute(&mut *tx)
    .await?;
    let session = sessions::start(&mut *tx, staff_id)
        .await
        .map_err(Refused::Other)?;
    log::write(&mut *tx, &account.name, "signed in", "", Some(client)).await?;
    tx.commit().await?;
    Ok(session)
}
