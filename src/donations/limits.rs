//! Card-testing defence: caps on new donations over sliding windows, per client address, per
//! donor email and per campaign (DOMAIN.md, "Card testing").
//!
//! The attempts are counted in Postgres, so every instance sees the same counts, and kept only
//! as long as the longest window. Each is stored by a SHA-256 of what it counts (the address,
//! the lower-cased email, the campaign), never the address or the email itself. A request over
//! any cap is refused with one and the same problem whichever cap it was, after a short random
//! pause, so that a bot learns nothing from the answer about which cap it hit.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::config::{self, Limit};
use crate::http::client::Proxies;
use crate::http::problem::{Problem, ProblemType};

/// The caps, and whose `X-Forwarded-For` to believe.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub per_ip: Option<Limit>,
    pub per_email: Option<Limit>,
    pub per_campaign: Option<Limit>,
    /// Whose `X-Forwarded-For` to believe.
    pub proxies: Proxies,
}

impl Limits {
    /// The caps as configured (`DONATION_LIMIT_*`, `TRUSTED_PROXIES`).
    pub fn new(config: &config::CardTesting) -> Self {
        Self {
            per_ip: config.per_ip,
            per_email: config.per_email,
            per_campaign: config.per_campaign,
            proxies: Proxies::new(config.trusted_proxies.clone()),
        }
    }
}

/// How long an address or email a cap refused must solve a captcha to donate.
pub const CHALLENGE_FOR: Duration = Duration::from_secs(3600);

/// Why an attempt was refused: how long until it may be made, and the keys (the address, the
/// email, whichever's cap refused it; never for the campaign's) that must solve a captcha from
/// now on.
#[derive(Debug)]
pub struct Refusal {
    pub wait: Duration,
    pub challenge: Vec<Vec<u8>>,
    /// The first cap that refused it (`ip`, `email`, `campaign`), for the metrics alone: the
    /// answer never says which.
    pub cap: &'static str,
}

/// The key a client address's attempts are counted by (a donation keeps it, so that its
/// declined payments count against the address that made it).
pub fn client_key(ip: IpAddr) -> Vec<u8> {
    key_of(Scope::Ip, &ip.to_string())
}

/// Counts one attempt per key in `keys` (each `(email key, client key)` of a donation whose
/// payment was declined) against the caps of the address and email that made it.
pub async fn count_declines(
    conn: &mut PgConnection,
    keys: &[(Vec<u8>, Option<Vec<u8>>)],
) -> sqlx::Result<()> {
    let (mut scopes, mut values) = (Vec::new(), Vec::new());
    for (email, client) in keys {
        scopes.push(Scope::Email.as_str().to_owned());
        values.push(email.clone());
        if let Some(client) = client {
            scopes.push(Scope::Ip.as_str().to_owned());
            values.push(client.clone());
        }
    }
    sqlx::query!(
        "INSERT INTO donation_attempts (scope, key) SELECT * FROM unnest($1::text[], $2::bytea[])",
        &scopes,
        &values
    )
    .execute(conn)
    .await
    .map(drop)
}

/// The key an email's attempts are counted and challenged by (erasing a donor deletes them).
pub fn email_key(email: &str) -> Vec<u8> {
    key_of(Scope::Email, &email.trim().to_lowercase())
}

/// The key an attempt is counted and challenged by.
fn key_of(scope: Scope, value: &str) -> Vec<u8> {
    Sha256::digest(format!("{}:{value}", scope.as_str()).as_bytes()).to_vec()
}

/// What the attempt is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Ip,
    Email,
    Campaign,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Email => "email",
            Scope::Campaign => "campaign",
        }
    }
}

impl Limits {
    /// Counts an attempt to create a donation, or says how long until it may be made. Within
    /// `tx`: a refused attempt leaves no trace, and concurrent attempts on one key queue on a
    /// lock held to the end of `tx`, so no two can both take the last place.
    ///
    /// An attempt whose captcha was solved (`verified`) is still counted, but only the
    /// campaign's cap can refuse it: a person behind a busy address may give.
    pub async fn attempt(
        &self,
        tx: &mut PgConnection,
        ip: IpAddr,
        email: &str,
        campaign: &str,
        verified: bool,
    ) -> sqlx::Result<Result<(), Refusal>> {
        let email = email.trim().to_lowercase();
        let caps = [
            (Scope::Ip, self.per_ip, ip.to_string()),
            (Scope::Email, self.per_email, email.clone()),
            (Scope::Campaign, self.per_campaign, campaign.to_owned()),
        ];
        let mut wait = Duration::ZERO;
        let mut cap = None;
        let mut tripped = Vec::new();
        let mut counted = Vec::new();
        for (scope, limit, key) in caps {
            let Some(limit) = limit else { continue };
            let key = key_of(scope, &key);
            let lock = i64::from_be_bytes(key[..8].try_into().expect("a digest has 8 bytes"));
            sqlx::query!("SELECT pg_advisory_xact_lock($1)", lock)
                .fetch_one(&mut *tx)
                .await?;
            let seen = sqlx::query!(
                r#"SELECT count(*) AS "count!", min(at) AS oldest, now() AS "now!"
                   FROM donation_attempts
                   WHERE scope = $1 AND key = $2
                     AND at > now() - make_interval(secs => $3)"#,
                scope.as_str(),
                &key,
                limit.window.as_secs_f64()
            )
            .fetch_one(&mut *tx)
            .await?;
            if seen.count >= limit.count && (scope == Scope::Campaign || !verified) {
                // The place frees when the oldest attempt in the window leaves it.
                let frees = seen
                    .oldest
                    .map(|oldest| oldest + limit.window - seen.now)
                    .unwrap_or(time::Duration::ZERO);
                let frees = Duration::try_from(frees).unwrap_or(Duration::ZERO);
                wait = wait.max(frees.max(Duration::from_secs(1)));
                cap.get_or_insert(scope.as_str());
                if scope != Scope::Campaign {
                    tripped.push(key.clone());
                }
            }
            counted.push((scope.as_str(), key));
        }
        if wait > Duration::ZERO {
            return Ok(Err(Refusal {
                wait,
                challenge: tripped,
                cap: cap.unwrap_or("unknown"),
            }));
        }
        if !counted.is_empty() {
            let (scopes, keys): (Vec<&str>, Vec<Vec<u8>>) = counted.into_iter().unzip();
            let scopes: Vec<String> = scopes.into_iter().map(str::to_owned).collect();
            sqlx::query!(
                r#"INSERT INTO donation_attempts (scope, key)
                   SELECT * FROM unnest($1::text[], $2::bytea[])"#,
                &scopes,
                &keys
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(Ok(()))
    }

    /// The longest window: attempts older than it count for nothing.
    pub fn longest_window(&self) -> Duration {
        [self.per_ip, self.per_email, self.per_campaign]
            .into_iter()
            .flatten()
            .map(|limit| limit.window)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// Deletes the attempts that no window counts any more, and the challenges that ran out.
pub async fn prune(db: &sqlx::PgPool, longest: Duration) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM donation_attempts WHERE at < now() - make_interval(secs => $1)",
        longest.as_secs_f64()
    )
    .execute(db)
    .await?;
    sqlx::query!("DELETE FROM donation_challenges WHERE until < now()")
        .execute(db)
        .await?;
    Ok(deleted.rows_affected())
}

/// From now on, for [`CHALLENGE_FOR`], these keys must solve a captcha to donate.
pub async fn challenge(db: &sqlx::PgPool, keys: &[Vec<u8>]) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO donation_challenges (key, until)
           SELECT k, now() + make_interval(secs => $2) FROM unnest($1::bytea[]) AS k
           ON CONFLICT (key) DO UPDATE SET until = EXCLUDED.until"#,
        keys,
        CHALLENGE_FOR.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Whether this address or this email must solve a captcha to donate.
pub async fn challenged(db: &sqlx::PgPool, ip: IpAddr, email: &str) -> sqlx::Result<bool> {
    let keys = vec![
        key_of(Scope::Ip, &ip.to_string()),
        key_of(Scope::Email, &email.trim().to_lowercase()),
    ];
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM donation_challenges
                          WHERE key = ANY($1) AND until > now()) AS "challenged!""#,
        &keys
    )
    .fetch_one(db)
    .await
}

/// A captcha's siteverify endpoint (Cloudflare Turnstile's and hCaptcha's speak the same:
/// a form POST of `secret`, `response` and `remoteip`, answered `{"success": true|false}`).
#[derive(Clone)]
pub struct Captcha {
    pub verify_url: String,
    pub secret: secrecy::SecretString,
    pub http: reqwest::Client,
}

impl Captcha {
    /// The captcha as configured (`CAPTCHA_VERIFY_URL`, `CAPTCHA_SECRET`).
    pub fn new(config: &config::Captcha) -> Self {
        Self {
            verify_url: config.verify_url.clone(),
            secret: config.secret.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// Whether `token` is a solved captcha. Anything else (a refusal, no answer within five
    /// seconds, an answer we cannot read) is not.
    pub async fn verify(&self, token: &str, ip: IpAddr) -> bool {
        use secrecy::ExposeSecret;
        let form = [
            ("secret", self.secret.expose_secret()),
            ("response", token),
            ("remoteip", &ip.to_string()),
        ];
        let answer = self
            .http
            .post(&self.verify_url)
            .timeout(Duration::from_secs(5))
            .form(&form)
            .send()
            .await;
        match answer {
            Ok(answer) if answer.status().is_success() => answer
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["success"] == true),
            Ok(answer) => {
                tracing::warn!(status = %answer.status(), "the captcha verifier refused to answer");
                false
            }
            Err(error) => {
                tracing::warn!(%error, "the captcha verifier could not be reached");
                false
            }
        }
    }
}

/// The answer to an attempt that must solve a captcha first and did not.
pub fn captcha_required() -> Response {
    Problem::new(
        ProblemType::CaptchaRequired,
        "Please complete the check shown and try again, sending its token as Captcha-Token.",
    )
    .into_response()
}

/// An IPv4 address the socket reports as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
/// The one answer to every refused attempt, whichever cap refused it: 429 and when to retry.
pub fn refused(retry_after: Duration) -> Response {
    let mut response = Problem::new(
        ProblemType::TooManyAttempts,
        "Too many donations were attempted from here in a short time. Please wait and try again.",
    )
    .into_response();
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.to_string()).expect("digits are a header value"),
    );
    response
}

/// A pause of 100 to 400 ms before a refusal, so its timing says nothing either.
pub fn pause() -> Duration {
    let random = uuid::Uuid::new_v4().as_u128();
    Duration::from_millis(100 + (random % 301) as u64)
}
