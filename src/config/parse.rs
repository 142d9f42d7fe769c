//! From the settings as written to the settings as meant: every value parsed and checked once,
//! in the order the keys are checked, each message starting with its key's variable name.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use axum::http::{HeaderValue, Uri};
use ipnet::IpNet;
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};

use super::budget::{REQUEST_TIMEOUT, STRIPE_ATTEMPTS, max_stripe_timeout_secs, stripe_backoff};
use super::{
    AppEnv, Captcha, CardTesting, Config, Database, Fees, FinanceReads, GiftAid, Limit,
    PaymentsChoice, PaymentsMode, Receipts, Settings, Staff, Stripe, charity, is_loopback,
};

impl Config {
    /// Parses and checks `settings`; the first value at fault stops it, named by its key.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let s = settings;
        ensure!(
            s.database_max_connections > 0,
            "DATABASE_MAX_CONNECTIONS: must be at least 1"
        );
        let max_timeout = max_stripe_timeout_secs();
        ensure!(
            (1..=max_timeout).contains(&s.stripe_timeout_secs),
            "STRIPE_TIMEOUT_SECS: must be between 1 and {max_timeout}: {STRIPE_ATTEMPTS} attempts \
             of it and {:?} of back-off between them must end within the {REQUEST_TIMEOUT:?} \
             request timeout, or a donor's request is cut off mid-retry",
            stripe_backoff()
        );
        ensure!(
            s.fee_percent_bps < 10_000,
            "FEE_PERCENT_BPS: must be below 10000 (100%)"
        );
        ensure!(
            s.fee_fixed_amount >= 0,
            "FEE_FIXED_AMOUNT: must not be negative"
        );
        ensure!(
            (1..=3600).contains(&s.webhook_tolerance_secs),
            "WEBHOOK_TOLERANCE_SECS: must be between 1 and 3600"
        );
        ensure!(
            (1..=100).contains(&s.event_max_attempts),
            "EVENT_MAX_ATTEMPTS: must be between 1 and 100"
        );
        ensure!(
            (1..=365).contains(&s.payout_overdue_days),
            "PAYOUT_OVERDUE_DAYS: must be between 1 and 365"
        );
        let trusted_proxies = trusted_proxies(&s.trusted_proxies)?;
        // `None`: not set; `Some(None)`: `off`.
        let set_limit = |name: &str, raw: &Option<String>| {
            raw.as_deref().map(|raw| limit(name, raw)).transpose()
        };
        let per_ip = set_limit("DONATION_LIMIT_PER_IP", &s.donation_limit_per_ip)?;
        let per_email = set_limit("DONATION_LIMIT_PER_EMAIL", &s.donation_limit_per_email)?;
        let per_campaign = set_limit(
            "DONATION_LIMIT_PER_CAMPAIGN",
            &s.donation_limit_per_campaign,
        )?;
        let abandoned_after = duration("ABANDONED_AFTER", &s.abandoned_after)?;
        ensure!(
            abandoned_after >= Duration::from_secs(3600),
            "ABANDONED_AFTER: must be at least an hour: a donor may still be paying"
        );
        ensure!(
            (1..=100).contains(&s.declines_per_payment),
            "DECLINES_PER_PAYMENT: must be from 1 to 100"
        );
        let gift_aid = gift_aid(s)?;
        let fee_lookup_after = duration("FEE_LOOKUP_AFTER", &s.fee_lookup_after)?;
        ensure!(
            fee_lookup_after >= Duration::from_secs(60),
            "FEE_LOOKUP_AFTER: must be at least 1m: the charge's own events come first"
        );
        let staff = staff(s)?;
        let instance_lease = duration("INSTANCE_LEASE", &s.instance_lease)?;
        let read_url = s
            .database_read_url
            .clone()
            .filter(|url| !url.expose_secret().trim().is_empty());
        if let Some(url) = &read_url {
            ensure!(
                url.expose_secret().starts_with("postgres://")
                    || url.expose_secret().starts_with("postgresql://"),
                "DATABASE_READ_URL: must be a postgres:// URL"
            );
        }
        ensure!(
            (1..=100).contains(&s.finance_max_connections),
            "FINANCE_MAX_CONNECTIONS: must be from 1 to 100"
        );
        let stall = duration("FINANCE_EXPORT_STALL", &s.finance_export_stall)?;
        ensure!(
            (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&stall),
            "FINANCE_EXPORT_STALL: must be from 100ms to 1h"
        );
        let deadline = duration("FINANCE_EXPORT_DEADLINE", &s.finance_export_deadline)?;
        ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&deadline),
            "FINANCE_EXPORT_DEADLINE: must be from 1s to 24h"
        );
        ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(600)).contains(&instance_lease),
            "INSTANCE_LEASE: must be from 1s to 10m"
        );
        let event_payload_retention =
            duration("EVENT_PAYLOAD_RETENTION", &s.event_payload_retention)?;
        ensure!(
            (Duration::from_secs(60)..=Duration::from_secs(3650 * 86_400))
                .contains(&event_payload_retention),
            "EVENT_PAYLOAD_RETENTION: must be from 1m to 3650d"
        );
        let from = receipt_from(&s.receipt_from)?;
        let (charity_name, charity_number) = charity(&s.charity_name, &s.charity_number)?;
        let smtp_url = not_empty(&s.smtp_url);
        if let Some(url) = &smtp_url {
            check_smtp_url(url.expose_secret())?;
        }
        let captcha = captcha(&s.captcha_verify_url, &s.captcha_secret)?;
        ensure!(
            s.campaign_cache_ms <= 60_000,
            "CAMPAIGN_CACHE_MS: must be at most 60000 (a minute)"
        );
        statement_descriptor_suffix(&s.statement_descriptor_suffix)?;
        let allowed_origins = allowed_origins(&s.allowed_origins)?;
        absolute_url(&s.stripe_api_base).with_context(|| {
            format!(
                "STRIPE_API_BASE: {:?} is not an absolute URL",
                s.stripe_api_base
            )
        })?;
        let database_url = s
            .database_url
            .clone()
            .filter(|url| !url.expose_secret().is_empty());
        if let Some(url) = &database_url {
            let url = url.expose_secret();
            ensure!(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "DATABASE_URL: must be a postgres:// URL"
            );
        }
        let payments = payments_mode(s)?;
        // Trying the service locally (`cargo run`) must not be refused by a cap no one set.
        let developing = s.app_env == AppEnv::Development
            && matches!(payments, PaymentsMode::Simulated { .. })
            && is_loopback(s.listen_addr);
        let [ip, email, campaign] = CardTesting::DEFAULTS;
        let unset = |cap: Limit| (!developing).then_some(cap);
        let off_for_development =
            developing && (per_ip.is_none() || per_email.is_none() || per_campaign.is_none());
        if s.app_env == AppEnv::Production {
            ensure!(
                database_url.is_some(),
                "DATABASE_URL: must be set when APP_ENV=production (the built-in Postgres is for development)"
            );
            ensure!(
                !charity_name.eq_ignore_ascii_case(charity::PLACEHOLDER_NAME),
                "CHARITY_NAME: set the charity's own name when APP_ENV=production \
                 ({:?} is the built-in placeholder, and every receipt says it)",
                charity::PLACEHOLDER_NAME
            );
            ensure!(
                charity_number != charity::PLACEHOLDER_NUMBER,
                "CHARITY_NUMBER: set the charity's own registration number when \
                 APP_ENV=production ({:?} is the built-in placeholder, and every receipt says it)",
                charity::PLACEHOLDER_NUMBER
            );
            ensure!(
                smtp_url.is_some(),
                "SMTP_URL: must be set when APP_ENV=production (without a mail server no donor \
                 gets a receipt, and each one is written to a file under DATA_DIR holding the \
                 donor's address)"
            );
        }
        Ok(Config {
            app_env: s.app_env,
            listen_addr: s.listen_addr,
            metrics_addr: s.metrics_addr,
            database: Database {
                url: database_url,
                max_connections: s.database_max_connections,
                data_dir: s.data_dir.clone(),
                pg_bin: s.pg_bin.clone(),
                instance_lease,
                finance: FinanceReads {
                    read_url,
                    max_connections: s.finance_max_connections,
                    stall,
                    deadline,
                },
            },
            campaigns_file: s.campaigns_file.clone(),
            allowed_origins,
            log_format: s.log_format,
            campaign_cache: Duration::from_millis(s.campaign_cache_ms),
            payments,
            stripe: Stripe {
                api_base: s.stripe_api_base.clone(),
                timeout: Duration::from_secs(s.stripe_timeout_secs),
                statement_descriptor_suffix: s.statement_descriptor_suffix.clone(),
            },
            webhook_tolerance: Duration::from_secs(s.webhook_tolerance_secs),
            apply_events: s.apply_events,
            event_max_attempts: s.event_max_attempts,
            event_payload_retention,
            payout_overdue_days: s.payout_overdue_days,
            card_testing: CardTesting {
                per_ip: per_ip.unwrap_or_else(|| unset(ip)),
                per_email: per_email.unwrap_or_else(|| unset(email)),
                per_campaign: per_campaign.unwrap_or_else(|| unset(campaign)),
                trusted_proxies,
                captcha,
                declines_per_payment: s.declines_per_payment,
                off_for_development,
            },
            abandoned_after,
            fees: Fees {
                percent_bps: s.fee_percent_bps,
                fixed_amount: s.fee_fixed_amount,
            },
            receipts: Receipts {
                smtp_url,
                files_dir: s.data_dir.join("receipts"),
                from,
                charity_name,
                charity_number,
            },
            gift_aid,
            fee_lookup_after,
            staff,
        })
    }
}

/// `STAFF_ORIGIN` and the console's session lengths.
fn staff(s: &Settings) -> anyhow::Result<Staff> {
    let raw = s.staff_origin.trim().trim_end_matches('/');
    let uri: Uri = raw
        .parse()
        .ok()
        .with_context(|| format!("STAFF_ORIGIN: {raw:?} is not an origin"))?;
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    ensure!(
        matches!(uri.scheme_str(), Some("http" | "https"))
            && !host.is_empty()
            && uri.path_and_query().is_none_or(|p| p.as_str() == "/"),
        "STAFF_ORIGIN: {raw:?} is not an origin like https://finance.example.org"
    );
    ensure!(
        host.trim_matches(['[', ']']).parse::<IpAddr>().is_err(),
        "STAFF_ORIGIN: {raw:?} names an IP address, and passkeys are bound to a name: use \
         http://localhost:PORT on this machine, or the console's https name"
    );
    let secure = uri.scheme_str() == Some("https");
    ensure!(
        secure || host == "localhost",
        "STAFF_ORIGIN: {raw:?} must be https (a browser takes only http://localhost as secure)"
    );
    let idle = duration("STAFF_SESSION_IDLE", &s.staff_session_idle)?;
    let max = duration("STAFF_SESSION_MAX", &s.staff_session_max)?;
    ensure!(
        idle <= max,
        "STAFF_SESSION_IDLE: must be no longer than STAFF_SESSION_MAX"
    );
    // As a browser sends it in `Origin`: the host in lower case, no default port.
    let scheme = uri.scheme_str().unwrap_or("https");
    let port = uri
        .port_u16()
        .filter(|&port| port != if secure { 443 } else { 80 })
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    Ok(Staff {
        origin: format!("{scheme}://{host}{port}"),
        host,
        secure,
        idle,
        max,
    })
}

/// The Gift Aid settings: aggregation within HMRC's limit, a year end every year has.
fn gift_aid(s: &Settings) -> anyhow::Result<GiftAid> {
    if let Some(up_to) = s.gift_aid_aggregate_up_to {
        ensure!(
            (1..=2000).contains(&up_to),
            "GIFT_AID_AGGREGATE_UP_TO: must be from 1 to 2000 pence (gifts of £20 or less), or unset"
        );
    }
    let raw = s.gift_aid_year_end.trim();
    let year_end = raw
        .split_once('-')
        .filter(|(month, day)| month.len() == 2 && day.len() == 2)
        .and_then(|(month, day)| {
            let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
            let day = day.parse::<u8>().ok()?;
            // 2023 has no 29 February: the day must be one every year has.
            time::Date::from_calendar_date(2023, month, day).ok()?;
            Some((month, day))
        })
        .with_context(|| {
            format!("GIFT_AID_YEAR_END: {raw:?} is not a day every year has, as MM-DD (03-31)")
        })?;
    Ok(GiftAid {
        aggregate_up_to: s.gift_aid_aggregate_up_to,
        year_end_month: year_end.0,
        year_end_day: year_end.1,
        claim_after_payout: s.gift_aid_claim_after_payout,
    })
}

/// A secret setting, unless unset or blank.
fn not_empty(value: &Option<SecretString>) -> Option<SecretString> {
    value
        .clone()
        .filter(|value| !value.expose_secret().trim().is_empty())
}

/// A duration setting like `90s`, `10m`, `24h` or `30d`, its key named if it is not one.
pub fn duration(key: &str, raw: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(raw.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{key}: {raw:?} is not a duration like 90s, 10m, 24h or 30d"))
}

impl FromStr for Limit {
    type Err = String;

    /// `5/10m`: five in ten minutes; the window in `s`, `m` or `h`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{raw:?} is not a limit like 5/10m (a count, a slash, a window in s, m or h), nor off"
            )
        };
        let (count, window) = raw.trim().split_once('/').ok_or_else(bad)?;
        let count: i64 = count.trim().parse().map_err(|_| bad())?;
        let window = window.trim();
        let (number, unit) = window.split_at(window.len().saturating_sub(1));
        let number: u64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "s" => number,
            "m" => number * 60,
            "h" => number * 3600,
            _ => return Err(bad()),
        };
        if count < 1 || !(1..=86_400).contains(&seconds) {
            return Err(format!(
                "{raw:?}: at least 1 attempt, in a window of 1 s to 24 h"
            ));
        }
        Ok(Self {
            count,
            window: Duration::from_secs(seconds),
        })
    }
}

/// A limit setting: `off`, or a [`Limit`].
pub fn limit(name: &str, raw: &str) -> anyhow::Result<Option<Limit>> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|error| anyhow::anyhow!("{name}: {error}"))
}

/// `TRUSTED_PROXIES`: comma-separated CIDRs or addresses.
fn trusted_proxies(raw: &str) -> anyhow::Result<Vec<IpNet>> {
    raw.split(',')
        .map(str::trim)
        .filter(|net| !net.is_empty())
        .map(|net| {
            net.parse::<IpNet>()
                .or_else(|_| net.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!("TRUSTED_PROXIES: {net:?} is not a CIDR like 10.0.0.0/8")
                })
        })
        .collect()
}

/// `RECEIPT_FROM`: an address, with or without a name.
fn receipt_from(raw: &str) -> anyhow::Result<Mailbox> {
    raw.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "RECEIPT_FROM: {raw:?} is not an email address like \"Charity <receipts@example.org>\""
        )
    })
}

/// `CHARITY_NAME` and `CHARITY_NUMBER`, trimmed: neither empty, the number of a known shape.
fn charity(name: &str, number: &str) -> anyhow::Result<(String, String)> {
    ensure!(!name.trim().is_empty(), "CHARITY_NAME: must not be empty");
    ensure!(
        !number.trim().is_empty(),
        "CHARITY_NUMBER: must not be empty"
    );
    ensure!(
        charity::check_number(number),
        "CHARITY_NUMBER: {number:?} does not look like a charity registration number ({})",
        charity::NUMBER_SHAPES
    );
    Ok((name.trim().to_owned(), number.trim().to_owned()))
}

/// `SMTP_URL`: a URL lettre's SMTP transport takes (`smtp://`, `smtps://`, `?tls=required`).
fn check_smtp_url(url: &str) -> anyhow::Result<()> {
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
        .map(drop)
        .map_err(|_| anyhow::anyhow!("SMTP_URL: not a usable smtp:// or smtps:// URL"))
}

/// `CAPTCHA_VERIFY_URL` and `CAPTCHA_SECRET`: both, or neither.
fn captcha(url: &Option<String>, secret: &Option<SecretString>) -> anyhow::Result<Option<Captcha>> {
    ensure!(
        url.is_some() == secret.is_some(),
        "CAPTCHA_VERIFY_URL and CAPTCHA_SECRET: set both, or neither"
    );
    let (Some(url), Some(secret)) = (url, secret) else {
        return Ok(None);
    };
    ensure!(
        absolute_url(url).is_some(),
        "CAPTCHA_VERIFY_URL: {url:?} is not a URL"
    );
    Ok(Some(Captcha {
        verify_url: url.clone(),
        secret: secret.clone(),
    }))
}

/// `url` if it has a scheme and a host.
fn absolute_url(url: &str) -> Option<Uri> {
    url.parse::<Uri>()
        .ok()
        .filter(|uri| uri.scheme().is_some() && uri.host().is_some())
}

fn statement_descriptor_suffix(suffix: &str) -> anyhow::Result<()> {
    ensure!(
        (1..=22).contains(&suffix.len())
            && suffix.is_ascii()
            && suffix.chars().any(|c| c.is_ascii_alphabetic())
            && !suffix.contains(['<', '>', '\\', '\'', '"', '*']),
        "STATEMENT_DESCRIPTOR_SUFFIX: must be 1 to 22 ASCII characters with a letter and none of < > \\ ' \" *"
    );
    Ok(())
}

/// `ALLOWED_ORIGINS`: comma-separated origins, each as the header value CORS answers with.
fn allowed_origins(raw: &str) -> anyhow::Result<Vec<HeaderValue>> {
    raw.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let uri: Uri = origin
                .parse()
                .ok()
                .with_context(|| format!("ALLOWED_ORIGINS: {origin:?} is not an origin"))?;
            ensure!(
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some()
                    && uri.path_and_query().is_none_or(|p| p.as_str() == "/"),
                "ALLOWED_ORIGINS: {origin:?} is not an origin like https://www.example.org"
            );
            HeaderValue::from_str(origin.trim_end_matches('/'))
                .with_context(|| format!("ALLOWED_ORIGINS: {origin:?} is not a header value"))
        })
        .collect()
}

/// How payments are taken, from `PAYMENTS` and the Stripe keys. Simulated payments need no
/// key, so a deployment that lost its keys must not fall back to them unseen: `auto`
/// simulates only on a loopback address, where nobody else can reach the simulator's
/// controls (which mark donations paid). Anywhere else simulating takes `PAYMENTS=simulated`.
/// The webhook secrets are checked for simulated payments too (which sign with the first, if
/// one is set), so a bad secret stops start-up before anything is started.
fn payments_mode(s: &Settings) -> anyhow::Result<PaymentsMode> {
    let secret_key = s
        .stripe_secret_key
        .clone()
        .filter(|k| !k.expose_secret().is_empty());
    let production = s.app_env == AppEnv::Production;
    let secrets = match (s.payments, secret_key) {
        (PaymentsChoice::Auto | PaymentsChoice::Stripe, Some(secret_key)) => {
            return stripe_mode(s, secret_key);
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
            webhook_secrets(s)?
        }
        (PaymentsChoice::Auto, None) => {
            ensure!(
                !production,
                "STRIPE_SECRET_KEY: must be set when APP_ENV=production (simulated payments move no money)"
            );
            ensure!(
                is_loopback(s.listen_addr),
                "PAYMENTS: no STRIPE_SECRET_KEY is set and LISTEN_ADDR {} is reachable from \
                 other machines, so payments will not be simulated there by default. Set \
                 STRIPE_SECRET_KEY, STRIPE_PUBLISHABLE_KEY and STRIPE_WEBHOOK_SECRET to take \
                 real payments, or PAYMENTS=simulated to simulate them on purpose (no money \
                 moves, and anyone who can reach the service can mark donations paid)",
                s.listen_addr
            );
            webhook_secrets(s)?
        }
    };
    Ok(PaymentsMode::Simulated {
        webhook_secret: secrets.into_iter().next(),
    })
}

/// Stripe with `secret_key`, once the other keys are checked against it.
fn stripe_mode(s: &Settings, secret_key: SecretString) -> anyhow::Result<PaymentsMode> {
    let key = secret_key.expose_secret();
    ensure!(
        key.starts_with("sk_") || key.starts_with("rk_"),
        "STRIPE_SECRET_KEY: must start with sk_ or rk_"
    );
    let publishable_key = s
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
    let webhook_secrets = webhook_secrets(s)?;
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
fn webhook_secrets(s: &Settings) -> anyhow::Result<Vec<SecretString>> {
    let Some(secrets) = &s.stripe_webhook_secret else {
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

/// Figment names the key and where its value came from; say it with the variable's name first.
pub(super) fn config_error(error: figment::Error) -> anyhow::Error {
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
