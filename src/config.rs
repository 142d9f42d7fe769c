//! Settings: `config/default.toml` (built in), an optional file named by `QUICKDONATE_CONFIG`,
//! then environment variables. Loading validates everything, so a bad value stops start-up
//! with a message naming its key. Secrets are `SecretString`s and never show in `Debug`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::donations::fees::FeeModel;
use crate::http::REQUEST_TIMEOUT;
use crate::payments::{ATTEMPTS, BACKOFF};

/// The documented defaults, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// Every key that an environment variable of the same name (upper-cased) may set.
const ENV_KEYS: &[&str] = &[
    "APP_ENV",
    "LISTEN_ADDR",
    "METRICS_ADDR",
    "PAYMENTS",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "DATA_DIR",
    "PG_BIN",
    "CAMPAIGNS_FILE",
    "ALLOWED_ORIGINS",
    "LOG_FORMAT",
    "CAMPAIGN_CACHE_MS",
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "WEBHOOK_TOLERANCE_SECS",
    "APPLY_EVENTS",
    "EVENT_MAX_ATTEMPTS",
    "PAYOUT_OVERDUE_DAYS",
    "DONATION_LIMIT_PER_IP",
    "DONATION_LIMIT_PER_EMAIL",
    "DONATION_LIMIT_PER_CAMPAIGN",
    "TRUSTED_PROXIES",
    "CAPTCHA_VERIFY_URL",
    "CAPTCHA_SECRET",
    "ABANDONED_AFTER",
    "STRIPE_API_BASE",
    "STRIPE_TIMEOUT_SECS",
    "STATEMENT_DESCRIPTOR_SUFFIX",
    "FEE_PERCENT_BPS",
    "FEE_FIXED_AMOUNT",
    "EVENT_PAYLOAD_RETENTION",
    "SMTP_URL",
    "RECEIPT_FROM",
    "CHARITY_NAME",
    "CHARITY_NUMBER",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Development,
    Production,
}

/// `PAYMENTS`: how payments are chosen. See [`Settings::payments_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentsChoice {
    /// Stripe with a secret key; without one, simulated only on a loopback address.
    Auto,
    /// Stripe, and the keys are required.
    Stripe,
    /// Simulated on purpose, wherever the service listens.
    Simulated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings as read; see `config/default.toml` for what each key means.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub app_env: AppEnv,
    pub listen_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub payments: PaymentsChoice,
    pub database_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub data_dir: PathBuf,
    pub pg_bin: Option<PathBuf>,
    pub campaigns_file: PathBuf,
    pub allowed_origins: String,
    pub log_format: LogFormat,
    pub campaign_cache_ms: u64,
    pub stripe_secret_key: Option<SecretString>,
    pub stripe_publishable_key: Option<String>,
    pub stripe_webhook_secret: Option<SecretString>,
    pub webhook_tolerance_secs: u64,
    pub apply_events: bool,
    pub event_max_attempts: i32,
    pub payout_overdue_days: i64,
    pub donation_limit_per_ip: String,
    pub donation_limit_per_email: String,
    pub donation_limit_per_campaign: String,
    pub trusted_proxies: String,
    pub abandoned_after: String,
    pub captcha_verify_url: Option<String>,
    pub captcha_secret: Option<SecretString>,
    pub stripe_api_base: String,
    pub stripe_timeout_secs: u64,
    pub statement_descriptor_suffix: String,
    pub fee_percent_bps: u32,
    pub fee_fixed_amount: i64,
    pub event_payload_retention: String,
    pub smtp_url: Option<SecretString>,
    pub receipt_from: String,
    pub charity_name: String,
    pub charity_number: String,
}

/// How payments are taken, decided once at start-up.
#[derive(Debug, Clone)]
pub enum PaymentsMode {
    /// Real Stripe calls with these keys.
    Stripe {
        secret_key: SecretString,
        publishable_key: String,
        webhook_secrets: Vec<SecretString>,
    },
    /// A Stripe look-alike inside the process answers, and no money moves.
    Simulated,
}

impl Settings {
    /// Defaults, then `QUICKDONATE_CONFIG`'s file, then the environment.
    pub fn load() -> anyhow::Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = std::env::var_os("QUICKDONATE_CONFIG") {
            let path = PathBuf::from(path);
            ensure!(
                path.is_file(),
                "QUICKDONATE_CONFIG: no such file {}",
                path.display()
            );
            figment = figment.merge(Toml::file_exact(path));
        }
        let figment = figment.merge(Env::raw().only(ENV_KEYS));
        Self::from_figment(figment)
    }

    /// The built-in defaults alone, ignoring the environment (tests start from these).
    pub fn defaults() -> anyhow::Result<Self> {
        Self::from_figment(Figment::from(Toml::string(DEFAULTS)))
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        let settings: Settings = figment.extract().map_err(config_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot; every message starts with the key's variable name.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.database_max_connections > 0,
            "DATABASE_MAX_CONNECTIONS: must be at least 1"
        );
        let max_timeout = max_stripe_timeout_secs();
        ensure!(
            (1..=max_timeout).contains(&self.stripe_timeout_secs),
            "STRIPE_TIMEOUT_SECS: must be between 1 and {max_timeout}: {ATTEMPTS} attempts of it \
             and {:?} of back-off between them must end within the {REQUEST_TIMEOUT:?} request \
             timeout, or a donor's request is cut off mid-retry",
            stripe_backoff()
        );
        ensure!(
            self.fee_percent_bps < 10_000,
            "FEE_PERCENT_BPS: must be below 10000 (100%)"
        );
        ensure!(
            self.fee_fixed_amount >= 0,
            "FEE_FIXED_AMOUNT: must not be negative"
        );
        ensure!(
            (1..=3600).contains(&self.webhook_tolerance_secs),
            "WEBHOOK_TOLERANCE_SECS: must be between 1 and 3600"
        );
        ensure!(
            (1..=100).contains(&self.event_max_attempts),
            "EVENT_MAX_ATTEMPTS: must be between 1 and 100"
        );
        ensure!(
            (1..=365).contains(&self.payout_overdue_days),
            "PAYOUT_OVERDUE_DAYS: must be between 1 and 365"
        );
        self.donation_limits()?;
        self.abandoned_after()?;
        self.event_payload_retention()?;
        self.receipt_sender()?;
        self.receipt_transport()?;
        ensure!(
            self.captcha_verify_url.is_some() == self.captcha_secret.is_some(),
            "CAPTCHA_VERIFY_URL and CAPTCHA_SECRET: set both, or neither"
        );
        if let Some(url) = &self.captcha_verify_url {
            ensure!(
                url.parse::<axum::http::Uri>()
                    .is_ok_and(|uri| uri.scheme().is_some() && uri.host().is_some()),
                "CAPTCHA_VERIFY_URL: {url:?} is not a URL"
            );
        }
        ensure!(
            self.campaign_cache_ms <= 60_000,
            "CAMPAIGN_CACHE_MS: must be at most 60000 (a minute)"
        );
        validate_statement_descriptor_suffix(&self.statement_descriptor_suffix)?;
        self.allowed_origins()?;
        self.stripe_api_base
            .parse::<axum::http::Uri>()
            .ok()
            .filter(|uri| uri.scheme().is_some() && uri.host().is_some())
            .with_context(|| {
                format!(
                    "STRIPE_API_BASE: {:?} is not an absolute URL",
                    self.stripe_api_base
                )
            })?;
        if let Some(url) = self.database_url() {
            ensure!(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "DATABASE_URL: must be a postgres:// URL"
            );
        }
        self.payments_mode()?;
        // Checked here too for simulated payments (which sign with the first secret, if one is
        // set), so a bad secret stops start-up before anything is started.
        self.webhook_secrets()?;
        if self.app_env == AppEnv::Production {
            ensure!(
                self.database_url().is_some(),
                "DATABASE_URL: must be set when APP_ENV=production (the built-in Postgres is for development)"
            );
            ensure!(
                !self
                    .charity_name
                    .trim()
                    .eq_ignore_ascii_case(crate::receipts::charity::PLACEHOLDER_NAME),
                "CHARITY_NAME: set the charity's own name when APP_ENV=production \
                 ({:?} is the built-in placeholder, and every receipt says it)",
                crate::receipts::charity::PLACEHOLDER_NAME
            );
            ensure!(
                self.charity_number.trim() != crate::receipts::charity::PLACEHOLDER_NUMBER,
                "CHARITY_NUMBER: set the charity's own registration number when \
                 APP_ENV=production ({:?} is the built-in placeholder, and every receipt says it)",
                crate::receipts::charity::PLACEHOLDER_NUMBER
            );
            ensure!(
                self.smtp_url().is_some(),
                "SMTP_URL: must be set when APP_ENV=production (without a mail server no donor \
                 gets a receipt, and each one is written to a file under DATA_DIR holding the \
                 donor's address)"
            );
        }
        Ok(())
    }

    /// `SMTP_URL`, unless unset or empty.
    pub fn smtp_url(&self) -> Option<&str> {
        self.smtp_url
            .as_ref()
            .map(|url| url.expose_secret())
            .filter(|url| !url.trim().is_empty())
    }

    /// `DATABASE_URL`, unless unset or empty.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url
            .as_ref()
            .map(|url| url.expose_secret())
            .filter(|url| !url.is_empty())
    }

    /// The card-testing caps on new donations, and the proxies whose `X-Forwarded-For` to
    /// believe.
    pub fn donation_limits(&self) -> anyhow::Result<crate::donations::limits::Limits> {
        use crate::donations::limits::{Limits, parse_setting};
        let trusted_proxies = self
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|net| !net.is_empty())
            .map(|net| {
                net.parse::<ipnet::IpNet>()
                    .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!("TRUSTED_PROXIES: {net:?} is not a CIDR like 10.0.0.0/8")
                    })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Limits {
            per_ip: parse_setting("DONATION_LIMIT_PER_IP", &self.donation_limit_per_ip)?,
            per_email: parse_setting("DONATION_LIMIT_PER_EMAIL", &self.donation_limit_per_email)?,
            per_campaign: parse_setting(
                "DONATION_LIMIT_PER_CAMPAIGN",
                &self.donation_limit_per_campaign,
            )?,
            trusted_proxies,
        })
    }

    /// `ABANDONED_AFTER`: when a donation still waiting for its payment is given up.
    pub fn abandoned_after(&self) -> anyhow::Result<Duration> {
        let after = duration("ABANDONED_AFTER", &self.abandoned_after)?;
        ensure!(
            after >= Duration::from_secs(3600),
            "ABANDONED_AFTER: must be at least an hour: a donor may still be paying"
        );
        Ok(after)
    }

    /// `EVENT_PAYLOAD_RETENTION`: how long a stored event keeps its personal data once
    /// applied (`30d`), from a minute to ten years.
    pub fn event_payload_retention(&self) -> anyhow::Result<Duration> {
        let retention = duration("EVENT_PAYLOAD_RETENTION", &self.event_payload_retention)?;
        ensure!(
            (Duration::from_secs(60)..=Duration::from_secs(3650 * 86_400)).contains(&retention),
            "EVENT_PAYLOAD_RETENTION: must be from 1m to 3650d"
        );
        Ok(retention)
    }

    /// Who receipts come from and the charity they speak for (`RECEIPT_FROM`, `CHARITY_NAME`,
    /// `CHARITY_NUMBER`).
    pub fn receipt_sender(&self) -> anyhow::Result<crate::receipts::message::Charity> {
        use crate::receipts::charity;
        let from = self
            .receipt_from
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("RECEIPT_FROM: {:?} is not an email address like \"Charity <receipts@example.org>\"", self.receipt_from))?;
        ensure!(
            !self.charity_name.trim().is_empty(),
            "CHARITY_NAME: must not be empty"
        );
        ensure!(
            !self.charity_number.trim().is_empty(),
            "CHARITY_NUMBER: must not be empty"
        );
        ensure!(
            charity::check_number(&self.charity_number),
            "CHARITY_NUMBER: {:?} does not look like a charity registration number ({})",
            self.charity_number,
            charity::NUMBER_SHAPES
        );
        Ok(crate::receipts::message::Charity {
            from,
            name: self.charity_name.trim().to_owned(),
            number: self.charity_number.trim().to_owned(),
        })
    }

    /// Where receipts go: `SMTP_URL`, or `.eml` files under `DATA_DIR/receipts/` without it.
    pub fn receipt_transport(&self) -> anyhow::Result<crate::receipts::sender::Transport> {
        crate::receipts::sender::Transport::new(self.smtp_url(), self.data_dir.join("receipts"))
    }

    pub fn campaign_cache(&self) -> Duration {
        Duration::from_millis(self.campaign_cache_ms)
    }

    pub fn webhook_tolerance(&self) -> Duration {
        Duration::from_secs(self.webhook_tolerance_secs)
    }

    pub fn stripe_timeout(&self) -> Duration {
        Duration::from_secs(self.stripe_timeout_secs)
    }

    pub fn fee_model(&self) -> FeeModel {
        FeeModel {
            percent_bps: self.fee_percent_bps,
            fixed_amount: self.fee_fixed_amount,
        }
    }

    /// The parsed `ALLOWED_ORIGINS`.
    pub fn allowed_origins(&self) -> anyhow::Result<Vec<axum::http::HeaderValue>> {
        self.allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                let uri: axum::http::Uri = origin
                    .parse()
                    .ok()
                    .with_context(|| format!("ALLOWED_ORIGINS: {origin:?} is not an origin"))?;
                ensure!(
                    matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some()
                        && uri.path_and_query().is_none_or(|p| p.as_str() == "/"),
                    "ALLOWED_ORIGINS: {origin:?} is not an origin like https://www.example.org"
                );
                axum::http::HeaderValue::from_str(origin.trim_end_matches('/'))
                    .with_context(|| format!("ALLOWED_ORIGINS: {origin:?} is not a header value"))
            })
            .collect()
    }

    /// How payments are taken, from `PAYMENTS` and the Stripe keys. Simulated payments need no
    /// key, so a deployment that lost its keys must not fall back to them unseen: `auto`
    /// simulates only on a loopback address, where nobody else can reach the simulator's
    /// controls (which mark donations paid). Anywhere else simulating takes `PAYMENTS=simulated`.
    pub fn payments_mode(&self) -> anyhow::Result<PaymentsMode> {
        let secret_key = self
            .stripe_secret_key
            .clone()
            .filter(|k| !k.expose_secret().is_empty());
        let production = self.app_env == AppEnv::Production;
        match (self.payments, secret_key) {
            (PaymentsChoice::Auto | PaymentsChoice::Stripe, Some(secret_key)) => {
                self.stripe_mode(secret_key)
            }
            (PaymentsChoice::Stripe, None) => {
                bail!("STRIPE_SECRET_KEY: must be set when PAYMENTS=stripe")
            }
            (PaymentsChoice::Simulated, Some(_)) => bail!(
                "PAYMENTS: is simulated, but STRIPE_SECRET_KEY is set too; unset one of them \
                 (which is meant is ambiguous)"
            ),
            (PaymentsChoice::Simulated, None) => {
                ensure!(
                    !production,
                    "PAYMENTS: simulated payments are refused when APP_ENV=production (no money moves)"
                );
                Ok(PaymentsMode::Simulated)
            }
            (PaymentsChoice::Auto, None) => {
                ensure!(
                    !production,
                    "STRIPE_SECRET_KEY: must be set when APP_ENV=production (simulated payments move no money)"
                );
                ensure!(
                    is_loopback(self.listen_addr),
                    "PAYMENTS: no STRIPE_SECRET_KEY is set and LISTEN_ADDR {} is reachable from \
                     other machines, so payments will not be simulated there by default. Set \
                     STRIPE_SECRET_KEY, STRIPE_PUBLISHABLE_KEY and STRIPE_WEBHOOK_SECRET to take \
                     real payments, or PAYMENTS=simulated to simulate them on purpose (no money \
                     moves, and anyone who can reach the service can mark donations paid)",
                    self.listen_addr
                );
                Ok(PaymentsMode::Simulated)
            }
        }
    }

    /// Stripe with `secret_key`, once the other keys are checked against it.
    fn stripe_mode(&self, secret_key: SecretString) -> anyhow::Result<PaymentsMode> {
        let key = secret_key.expose_secret();
        ensure!(
            key.starts_with("sk_") || key.starts_with("rk_"),
            "STRIPE_SECRET_KEY: must start with sk_ or rk_"
        );
        let publishable_key = self
            .stripe_publishable_key
            .clone()
            .filter(|k| !k.is_empty())
            .context("STRIPE_PUBLISHABLE_KEY: must be set with STRIPE_SECRET_KEY")?;
        ensure!(
            publishable_key.starts_with("pk_"),
            "STRIPE_PUBLISHABLE_KEY: must start with pk_"
        );
        ensure!(
            key.contains("_live_") == publishable_key.contains("_live_"),
            "STRIPE_PUBLISHABLE_KEY: must be of the same mode (live or test) as STRIPE_SECRET_KEY"
        );
        let webhook_secrets = self.webhook_secrets()?;
        ensure!(
            !webhook_secrets.is_empty(),
            "STRIPE_WEBHOOK_SECRET: must be set with STRIPE_SECRET_KEY"
        );
        Ok(PaymentsMode::Stripe {
            secret_key,
            publishable_key,
            webhook_secrets,
        })
    }

    /// The comma-separated `STRIPE_WEBHOOK_SECRET`, each checked for its `whsec_` prefix.
    pub fn webhook_secrets(&self) -> anyhow::Result<Vec<SecretString>> {
        let Some(secrets) = &self.stripe_webhook_secret else {
            return Ok(Vec::new());
        };
        secrets
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                ensure!(
                    s.starts_with("whsec_"),
                    "STRIPE_WEBHOOK_SECRET: each secret must start with whsec_"
                );
                Ok(SecretString::from(s))
            })
            .collect()
    }
}

/// The back-off slept between attempts at one Stripe call, all told (see `payments::with_retries`).
/// A duration setting like `90s`, `10m`, `24h` or `30d`, its key named if it is not one.
pub fn duration(key: &str, raw: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(raw.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{key}: {raw:?} is not a duration like 90s, 10m, 24h or 30d"))
}

fn stripe_backoff() -> Duration {
    (1..ATTEMPTS).map(|attempt| BACKOFF * attempt).sum()
}

/// The longest `STRIPE_TIMEOUT_SECS` for which every attempt at one Stripe call, timing out,
/// and the back-off between them end before the request timeout does.
pub fn max_stripe_timeout_secs() -> u64 {
    let budget = REQUEST_TIMEOUT.saturating_sub(stripe_backoff()).as_nanos();
    // Strictly within the budget: the request still has to answer.
    let max = budget.saturating_sub(1) / (u128::from(ATTEMPTS) * 1_000_000_000);
    u64::try_from(max).unwrap_or(u64::MAX)
}

/// Whether only this machine can reach `address` (127.0.0.0/8, ::1, or ::ffff:127.x.x.x).
pub fn is_loopback(address: SocketAddr) -> bool {
    address.ip().to_canonical().is_loopback()
}

fn validate_statement_descriptor_suffix(suffix: &str) -> anyhow::Result<()> {
    ensure!(
        (1..=22).contains(&suffix.len())
            && suffix.is_ascii()
            && suffix.chars().any(|c| c.is_ascii_alphabetic())
            && !suffix.contains(['<', '>', '\\', '\'', '"', '*']),
        "STATEMENT_DESCRIPTOR_SUFFIX: must be 1 to 22 ASCII characters with a letter and none of < > \\ ' \" *"
    );
    Ok(())
}

/// Figment names the key and where its value came from; say it with the variable's name first.
fn config_error(error: figment::Error) -> anyhow::Error {
    let key = error
        .path
        .first()
        .map(|k| k.to_uppercase())
        .unwrap_or_else(|| "configuration".to_owned());
    if key == "configuration" {
        anyhow::anyhow!("configuration: {error}")
    } else {
        anyhow::anyhow!("{key}: {}", error.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &str) -> anyhow::Result<Settings> {
        Settings::from_figment(Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(overrides)))
    }

    fn error_of(overrides: &str) -> String {
        format!("{:#}", with(overrides).expect_err(overrides))
    }

    /// Every key `config/default.toml` documents (set, or commented out) can be set by its
    /// environment variable, as the README says.
    #[test]
    fn every_documented_key_has_its_environment_variable() {
        for line in DEFAULTS.lines() {
            let line = line.trim_start_matches('#').trim_start();
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            if key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                let variable = key.to_uppercase();
                assert!(
                    ENV_KEYS.contains(&variable.as_str()),
                    "{variable} cannot be set from the environment"
                );
            }
        }
    }

    #[test]
    fn the_defaults_are_valid_and_simulate_payments() {
        let settings = Settings::defaults().unwrap();
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:8080");
        assert!(matches!(
            settings.payments_mode().unwrap(),
            PaymentsMode::Simulated
        ));
        assert!(settings.database_url().is_none());
        assert_eq!(
            settings.event_payload_retention().unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            with(r#"event_payload_retention = "12h""#)
                .unwrap()
                .event_payload_retention()
                .unwrap(),
            Duration::from_secs(12 * 3_600)
        );
    }

    #[test]
    fn a_bad_value_names_its_key() {
        assert!(error_of(r#"listen_addr = "nowhere""#).starts_with("LISTEN_ADDR:"));
        assert!(error_of(r#"app_env = "staging""#).starts_with("APP_ENV:"));
        assert!(error_of("fee_percent_bps = 10000").starts_with("FEE_PERCENT_BPS:"));
        assert!(error_of("fee_fixed_amount = -1").starts_with("FEE_FIXED_AMOUNT:"));
        assert!(
            error_of(r#"stripe_webhook_secret = "not-whsec""#)
                .starts_with("STRIPE_WEBHOOK_SECRET:"),
            "checked even when payments are simulated"
        );
        assert!(error_of("stripe_timeout_secs = 0").starts_with("STRIPE_TIMEOUT_SECS:"));
        assert!(error_of("webhook_tolerance_secs = 0").starts_with("WEBHOOK_TOLERANCE_SECS:"));
        assert!(error_of("campaign_cache_ms = 60001").starts_with("CAMPAIGN_CACHE_MS:"));
        assert!(error_of("event_max_attempts = 0").starts_with("EVENT_MAX_ATTEMPTS:"));
        assert!(error_of(r#"abandoned_after = "soon""#).starts_with("ABANDONED_AFTER:"));
        assert!(error_of(r#"abandoned_after = "30m""#).starts_with("ABANDONED_AFTER:"));
        assert_eq!(
            with(r#"abandoned_after = "7d""#)
                .unwrap()
                .abandoned_after()
                .unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in ["", "30", "d", "thirty", "-1d", "0d", "30s", "3651d"] {
            let error = error_of(&format!("event_payload_retention = {bad:?}"));
            assert!(
                error.starts_with("EVENT_PAYLOAD_RETENTION:"),
                "{bad}: {error}"
            );
        }
        assert!(error_of(r#"allowed_origins = "not an origin""#).starts_with("ALLOWED_ORIGINS:"));
        assert!(
            error_of(r#"statement_descriptor_suffix = "<b>""#)
                .starts_with("STATEMENT_DESCRIPTOR_SUFFIX:")
        );
        assert!(error_of(r#"database_url = "mysql://x""#).starts_with("DATABASE_URL:"));
        assert!(error_of(r#"stripe_api_base = "/relative""#).starts_with("STRIPE_API_BASE:"));
        assert!(error_of(r#"stripe_secret_key = "pk_test_1""#).starts_with("STRIPE_SECRET_KEY:"));
        assert!(
            error_of(r#"stripe_secret_key = "sk_test_1""#).starts_with("STRIPE_PUBLISHABLE_KEY:")
        );
        assert!(
            error_of(
                r#"
            stripe_secret_key = "sk_test_1"
            stripe_publishable_key = "pk_test_1"
            "#
            )
            .starts_with("STRIPE_WEBHOOK_SECRET:")
        );
        assert!(
            error_of(
                r#"
            stripe_secret_key = "sk_live_1"
            stripe_publishable_key = "pk_test_1"
            stripe_webhook_secret = "whsec_1"
            "#
            )
            .starts_with("STRIPE_PUBLISHABLE_KEY:")
        );
    }

    #[test]
    fn a_stripe_timeout_whose_attempts_outlast_the_request_timeout_is_refused() {
        let max = max_stripe_timeout_secs();
        let worst = |secs: u64| Duration::from_secs(secs) * ATTEMPTS + stripe_backoff();
        assert!(worst(max) < REQUEST_TIMEOUT);
        assert!(worst(max + 1) >= REQUEST_TIMEOUT);
        // What the README and config/default.toml say, with today's constants.
        assert_eq!(max, 19);

        with(&format!("stripe_timeout_secs = {max}")).expect("the longest timeout that fits");
        let error = error_of(&format!("stripe_timeout_secs = {}", max + 1));
        assert!(
            error.starts_with(&format!(
                "STRIPE_TIMEOUT_SECS: must be between 1 and {max}:"
            )),
            "{error}"
        );
        assert!(error.contains("request timeout"), "{error}");
        assert!(error_of("stripe_timeout_secs = 120").starts_with("STRIPE_TIMEOUT_SECS:"));
        assert!(
            error_of(&format!("stripe_timeout_secs = {}", i64::MAX))
                .starts_with("STRIPE_TIMEOUT_SECS:")
        );
    }

    #[test]
    fn production_refuses_simulated_payments_and_the_built_in_database() {
        assert!(error_of(r#"app_env = "production""#).starts_with("STRIPE_SECRET_KEY:"));
        // Beyond loopback too: production needs the keys, not PAYMENTS=simulated.
        assert!(
            error_of("app_env = \"production\"\nlisten_addr = \"0.0.0.0:8080\"")
                .starts_with("STRIPE_SECRET_KEY:")
        );
        let stripe = r#"
            app_env = "production"
            stripe_secret_key = "sk_live_1"
            stripe_publishable_key = "pk_live_1"
            stripe_webhook_secret = "whsec_1"
        "#;
        assert!(error_of(stripe).starts_with("DATABASE_URL:"));
        let stripe = format!("{stripe}\ndatabase_url = \"postgres://db/quickdonate\"");
        assert!(error_of(&stripe).starts_with("CHARITY_NAME:"));
        let stripe = format!("{stripe}\n{CHARITY}");
        assert!(error_of(&stripe).starts_with("SMTP_URL:"));
        assert!(error_of(&format!("{stripe}\nsmtp_url = \" \"")).starts_with("SMTP_URL:"));
        with(&format!("{stripe}\n{SMTP}")).expect("a complete production configuration");
    }

    const CHARITY: &str = r#"
        charity_name = "Kashmir Relief Trust"
        charity_number = "1234567"
    "#;

    const SMTP: &str = r#"smtp_url = "smtps://receipts:secret@mail.example.org""#;

    #[test]
    fn production_refuses_the_placeholder_charity_details() {
        let production = r#"
            app_env = "production"
            stripe_secret_key = "sk_live_1"
            stripe_publishable_key = "pk_live_1"
            stripe_webhook_secret = "whsec_1"
            database_url = "postgres://db/quickdonate"
        "#;
        let name = error_of(&format!("{production}\ncharity_number = \"1234567\""));
        assert!(name.starts_with("CHARITY_NAME:"), "{name}");
        assert!(name.contains("Example Charity"), "{name}");
        assert!(name.contains("APP_ENV=production"), "{name}");
        let number = error_of(&format!(
            "{production}\ncharity_name = \"Kashmir Relief Trust\""
        ));
        assert!(number.starts_with("CHARITY_NUMBER:"), "{number}");
        assert!(number.contains("0000000"), "{number}");
        // With spaces around it, a placeholder is still one.
        assert!(
            error_of(&format!(
                "{production}\ncharity_name = \" Example Charity \"\ncharity_number = \"1234567\""
            ))
            .starts_with("CHARITY_NAME:")
        );
        // In any case, too.
        assert!(
            error_of(&format!(
                "{production}\ncharity_name = \"example CHARITY\"\ncharity_number = \"1234567\""
            ))
            .starts_with("CHARITY_NAME:")
        );
        with(&format!("{production}\n{CHARITY}\n{SMTP}")).expect("the charity's own details");
        // In development the placeholders stand, so `cargo run` works.
        Settings::defaults().expect("the placeholders in development");
    }

    #[test]
    fn a_charity_number_of_no_known_shape_is_refused_in_any_environment() {
        for bad in ["12345", "GB123456789", "SC1234", "registered"] {
            let error = error_of(&format!("charity_number = {bad:?}"));
            assert!(error.starts_with("CHARITY_NUMBER:"), "{bad}: {error}");
            assert!(
                error.contains("Scotland"),
                "it says what is expected: {error}"
            );
        }
        for good in ["1234567-1", "SC012345", "1234567 and SC012345", "NIC100001"] {
            with(&format!("charity_number = {good:?}")).expect(good);
        }
    }

    const STRIPE_KEYS: &str = r#"
        stripe_secret_key = "sk_test_1"
        stripe_publishable_key = "pk_test_1"
        stripe_webhook_secret = "whsec_1"
    "#;

    fn mode_of(overrides: &str) -> PaymentsMode {
        with(overrides).expect(overrides).payments_mode().unwrap()
    }

    #[test]
    fn auto_takes_stripe_with_a_key_and_simulates_without_one_only_on_loopback() {
        assert!(matches!(mode_of(STRIPE_KEYS), PaymentsMode::Stripe { .. }));
        let beyond = format!("{STRIPE_KEYS}\nlisten_addr = \"0.0.0.0:8080\"");
        assert!(matches!(mode_of(&beyond), PaymentsMode::Stripe { .. }));

        for loopback in [
            "127.0.0.1:8080",
            "127.0.0.2:0",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            let settings = format!("listen_addr = \"{loopback}\"");
            assert!(
                matches!(mode_of(&settings), PaymentsMode::Simulated),
                "{loopback}"
            );
        }
        for beyond in ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080"] {
            let error = error_of(&format!("listen_addr = \"{beyond}\""));
            assert!(error.starts_with("PAYMENTS:"), "{beyond}: {error}");
            assert!(error.contains(beyond), "it names the address: {error}");
            assert!(error.contains("STRIPE_SECRET_KEY"), "{error}");
            assert!(error.contains("PAYMENTS=simulated"), "{error}");
        }
    }

    #[test]
    fn stripe_requires_every_key() {
        let stripe = "payments = \"stripe\"";
        assert!(matches!(
            mode_of(&format!("{stripe}\n{STRIPE_KEYS}")),
            PaymentsMode::Stripe { .. }
        ));
        assert_eq!(
            error_of(stripe),
            "STRIPE_SECRET_KEY: must be set when PAYMENTS=stripe"
        );
        assert!(
            error_of(&format!("{stripe}\nstripe_secret_key = \"sk_test_1\""))
                .starts_with("STRIPE_PUBLISHABLE_KEY:")
        );
        assert!(
            error_of(&format!(
                "{stripe}\nstripe_secret_key = \"sk_test_1\"\nstripe_publishable_key = \"pk_test_1\""
            ))
            .starts_with("STRIPE_WEBHOOK_SECRET:")
        );
    }

    #[test]
    fn simulated_is_taken_anywhere_but_never_with_a_key_or_in_production() {
        let simulated = "payments = \"simulated\"";
        assert!(matches!(mode_of(simulated), PaymentsMode::Simulated));
        assert!(matches!(
            mode_of(&format!("{simulated}\nlisten_addr = \"0.0.0.0:8080\"")),
            PaymentsMode::Simulated
        ));

        let with_key = error_of(&format!("{simulated}\n{STRIPE_KEYS}"));
        assert!(with_key.starts_with("PAYMENTS:"), "{with_key}");
        assert!(with_key.contains("STRIPE_SECRET_KEY"), "{with_key}");

        let production = error_of(&format!(
            "{simulated}\napp_env = \"production\"\ndatabase_url = \"postgres://db/q\""
        ));
        assert!(production.starts_with("PAYMENTS:"), "{production}");
        assert!(production.contains("APP_ENV=production"), "{production}");
    }

    #[test]
    fn an_unknown_payments_choice_names_its_key() {
        assert!(error_of("payments = \"maybe\"").starts_with("PAYMENTS:"));
    }

    #[test]
    fn several_webhook_secrets_may_be_given_for_rotation() {
        let settings = with(
            r#"
            stripe_secret_key = "sk_test_1"
            stripe_publishable_key = "pk_test_1"
            stripe_webhook_secret = "whsec_old, whsec_new"
            "#,
        )
        .unwrap();
        let secrets = settings.webhook_secrets().unwrap();
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[1].expose_secret(), "whsec_new");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings = with(
            r#"
            database_url = "postgres://u:hunter2@db/quickdonate"
            stripe_secret_key = "sk_test_topsecret"
            stripe_publishable_key = "pk_test_1"
            stripe_webhook_secret = "whsec_topsecret"
            "#,
        )
        .unwrap();
        let debug = format!("{settings:?} {:?}", settings.payments_mode().unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("topsecret"), "{debug}");
    }
}
