//! Settings: `config/default.toml` (built in), an optional file named by `QUICKDONATE_CONFIG`,
//! then environment variables. They are read as written ([`Settings`]), then parsed and checked
//! once into typed values ([`Config`]): durations, limits, origins, addresses, keys. A bad value
//! stops start-up with a message naming its key. Secrets are `SecretString`s and never show in
//! `Debug`.
//!
//! This module knows no feature: each feature builds its own objects from the values here (the
//! card-testing caps from [`CardTesting`], the fee model from [`Fees`], the receipts' sender
//! from [`Receipts`]).

pub mod budget;
pub mod charity;
mod parse;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use axum::http::HeaderValue;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;
use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::Deserialize;

/// The documented defaults, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../../config/default.toml");

/// Every key that an environment variable of the same name (upper-cased) may set.
const ENV_KEYS: &[&str] = &[
    "APP_ENV",
    "LISTEN_ADDR",
    "METRICS_ADDR",
    "PAYMENTS",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "INSTANCE_LEASE",
    "DATABASE_READ_URL",
    "FINANCE_MAX_CONNECTIONS",
    "FINANCE_EXPORT_STALL",
    "FINANCE_EXPORT_DEADLINE",
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
    "DECLINES_PER_PAYMENT",
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
    "GIFT_AID_AGGREGATE_UP_TO",
    "GIFT_AID_YEAR_END",
    "GIFT_AID_CLAIM_AFTER_PAYOUT",
    "FEE_LOOKUP_AFTER",
    "STAFF_ORIGIN",
    "STAFF_SESSION_IDLE",
    "STAFF_SESSION_MAX",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Development,
    Production,
}

/// `PAYMENTS`: how payments are chosen. See [`PaymentsMode`].
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

/// The settings as written; see `config/default.toml` for what each key means. Nothing here is
/// checked: [`Config::from_settings`] does that, once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub app_env: AppEnv,
    pub listen_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub payments: PaymentsChoice,
    pub database_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub instance_lease: String,
    pub database_read_url: Option<SecretString>,
    pub finance_max_connections: u32,
    pub finance_export_stall: String,
    pub finance_export_deadline: String,
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
    pub donation_limit_per_ip: Option<String>,
    pub donation_limit_per_email: Option<String>,
    pub donation_limit_per_campaign: Option<String>,
    pub trusted_proxies: String,
    pub abandoned_after: String,
    pub declines_per_payment: i32,
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
    pub gift_aid_aggregate_up_to: Option<i64>,
    pub gift_aid_year_end: String,
    pub gift_aid_claim_after_payout: bool,
    pub fee_lookup_after: String,
    pub staff_origin: String,
    pub staff_session_idle: String,
    pub staff_session_max: String,
}

impl Settings {
    /// Defaults, then `QUICKDONATE_CONFIG`'s file, then the environment.
    pub fn read() -> anyhow::Result<Self> {
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
        Self::from_figment(figment.merge(Env::raw().only(ENV_KEYS)))
    }

    /// The built-in defaults alone, ignoring the environment (tests start from these).
    pub fn defaults() -> anyhow::Result<Self> {
        Self::from_figment(Figment::from(Toml::string(DEFAULTS)))
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        figment.extract().map_err(parse::config_error)
    }
}

/// The settings, parsed and checked: what the service is built from.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub listen_addr: SocketAddr,
    /// `METRICS_ADDR`: `/metrics` on a listener of its own.
    pub metrics_addr: Option<SocketAddr>,
    pub database: Database,
    pub campaigns_file: PathBuf,
    /// `ALLOWED_ORIGINS`: the origins whose pages may call the public API, as header values.
    pub allowed_origins: Vec<HeaderValue>,
    pub log_format: LogFormat,
    /// `CAMPAIGN_CACHE_MS`.
    pub campaign_cache: Duration,
    pub payments: PaymentsMode,
    pub stripe: Stripe,
    /// `WEBHOOK_TOLERANCE_SECS`: never zero.
    pub webhook_tolerance: Duration,
    pub apply_events: bool,
    pub event_max_attempts: i32,
    pub event_payload_retention: Duration,
    pub payout_overdue_days: i64,
    pub card_testing: CardTesting,
    /// `ABANDONED_AFTER`: at least an hour.
    pub abandoned_after: Duration,
    pub fees: Fees,
    pub receipts: Receipts,
    pub gift_aid: GiftAid,
    /// `FEE_LOOKUP_AFTER`: when a succeeded donation whose fee no event brought is looked up.
    pub fee_lookup_after: Duration,
    pub staff: Staff,
}

impl Config {
    /// The settings of [`Settings::read`], parsed and checked.
    pub fn load() -> anyhow::Result<Self> {
        Self::from_settings(&Settings::read()?)
    }

    /// Whether our Stripe key is a live one (simulated payments are test mode): events of the
    /// other mode are stored but never applied.
    pub fn livemode(&self) -> bool {
        match &self.payments {
            PaymentsMode::Stripe { secret_key, .. } => {
                secrecy::ExposeSecret::expose_secret(secret_key).contains("_live_")
            }
            PaymentsMode::Simulated { .. } => false,
        }
    }
}

/// The database: `DATABASE_URL`, or the local Postgres under `DATA_DIR` without one.
#[derive(Debug, Clone)]
pub struct Database {
    /// A `postgres://` URL, unless unset or empty.
    pub url: Option<SecretString>,
    pub max_connections: u32,
    pub data_dir: PathBuf,
    pub pg_bin: Option<PathBuf>,
    /// `INSTANCE_LEASE`: how long an instance is taken to be alive after its last heartbeat.
    pub instance_lease: Duration,
    pub finance: FinanceReads,
}

/// Where finance's reads and exports go, and how long an export may take.
#[derive(Debug, Clone)]
pub struct FinanceReads {
    /// `DATABASE_READ_URL`: a read replica; unset, the primary (`DATABASE_URL`).
    pub read_url: Option<SecretString>,
    /// `FINANCE_MAX_CONNECTIONS`: the size of their own pool.
    pub max_connections: u32,
    /// `FINANCE_EXPORT_STALL`: how long a streamed export waits for a client that stopped
    /// reading before cutting it off.
    pub stall: Duration,
    /// `FINANCE_EXPORT_DEADLINE`: how long a whole streamed export may take.
    pub deadline: Duration,
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
    /// A Stripe look-alike inside the process answers, and no money moves. Its events are
    /// signed with `webhook_secret` if one is set.
    Simulated {
        webhook_secret: Option<SecretString>,
    },
}

/// How we call Stripe.
#[derive(Debug, Clone)]
pub struct Stripe {
    /// `STRIPE_API_BASE`: an absolute URL.
    pub api_base: String,
    /// `STRIPE_TIMEOUT_SECS`: one attempt's; the attempts fit the request's [`budget`].
    pub timeout: Duration,
    pub statement_descriptor_suffix: String,
}

/// At most `count` attempts in any `window` (`5/10m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: i64,
    pub window: Duration,
}

/// The card-testing caps on new donations (`off` is `None`), whose `X-Forwarded-For` to
/// believe, and the captcha those a cap refused must solve.
#[derive(Debug, Clone, Default)]
pub struct CardTesting {
    pub per_ip: Option<Limit>,
    pub per_email: Option<Limit>,
    pub per_campaign: Option<Limit>,
    pub trusted_proxies: Vec<IpNet>,
    pub captcha: Option<Captcha>,
    /// `DECLINES_PER_PAYMENT`: declined attempts on one PaymentIntent before it is cancelled.
    pub declines_per_payment: i32,
    /// Whether a cap left unset is off because payments are simulated on a loopback address in
    /// development (see [`CardTesting::DEFAULTS`]), for the start-up log to say so.
    pub off_for_development: bool,
}

impl CardTesting {
    /// The caps an unset `DONATION_LIMIT_PER_IP`, `_PER_EMAIL` and `_PER_CAMPAIGN` take, but
    /// in development with simulated payments on a loopback address (`cargo run`'s defaults),
    /// where they are off: a developer trying the donation page must not be refused.
    pub const DEFAULTS: [Limit; 3] = [
        Limit {
            count: 5,
            window: Duration::from_secs(600),
        },
        Limit {
            count: 3,
            window: Duration::from_secs(600),
        },
        Limit {
            count: 300,
            window: Duration::from_secs(60),
        },
    ];
}

/// A captcha's siteverify endpoint and secret.
#[derive(Debug, Clone)]
pub struct Captcha {
    /// An absolute URL.
    pub verify_url: String,
    pub secret: SecretString,
}

/// The card fee a donor may cover: `percent_bps` basis points (below 10000) plus
/// `fixed_amount` minor units (not negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub percent_bps: u32,
    pub fixed_amount: i64,
}

/// Receipts: where they go, who sends them, and the charity they speak for.
#[derive(Debug, Clone)]
pub struct Receipts {
    /// `SMTP_URL`, a URL lettre's SMTP transport takes; `None` writes `.eml` files instead.
    pub smtp_url: Option<SecretString>,
    /// Where the `.eml` files go without `SMTP_URL`: `DATA_DIR/receipts/`.
    pub files_dir: PathBuf,
    /// `RECEIPT_FROM`.
    pub from: Mailbox,
    /// `CHARITY_NAME` and `CHARITY_NUMBER`, trimmed; the number of a known shape.
    pub charity_name: String,
    pub charity_number: String,
}

/// Whether only this machine can reach `address` (127.0.0.0/8, ::1, or ::ffff:127.x.x.x).
pub fn is_loopback(address: SocketAddr) -> bool {
    address.ip().to_canonical().is_loopback()
}

/// The staff console: where it is served and how long its sessions last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    /// `STAFF_ORIGIN`, without a trailing `/`: `http://localhost:8080`.
    pub origin: String,
    /// Its host: the relying party id passkeys are bound to.
    pub host: String,
    /// Whether it is https: the session cookie is then `Secure`.
    pub secure: bool,
    /// `STAFF_SESSION_IDLE`.
    pub idle: Duration,
    /// `STAFF_SESSION_MAX`.
    pub max: Duration,
}

/// How Gift Aid is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiftAid {
    /// `GIFT_AID_AGGREGATE_UP_TO`: gifts of at most this many pence are aggregated; `None`,
    /// none are.
    pub aggregate_up_to: Option<i64>,
    /// `GIFT_AID_YEAR_END`: the accounting year's last day (a day every year has).
    pub year_end_month: time::Month,
    pub year_end_day: u8,
    /// `GIFT_AID_CLAIM_AFTER_PAYOUT`: only gifts paid out to the bank are claimed.
    pub claim_after_payout: bool,
}
