//! The settings' checks: each bad value refused with its key named, and what each setting
//! means once parsed.

use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::ExposeSecret;

use super::budget::{REQUEST_TIMEOUT, STRIPE_ATTEMPTS, max_stripe_timeout_secs, stripe_backoff};
use super::parse::limit;
use super::*;

fn with(overrides: &str) -> anyhow::Result<Config> {
    let settings = Settings::from_figment(
        Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(overrides)),
    )?;
    Config::from_settings(&settings)
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
    let config = Config::from_settings(&Settings::defaults().unwrap()).unwrap();
    assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
    assert!(matches!(config.payments, PaymentsMode::Simulated { .. }));
    assert!(config.database.url.is_none());
    assert_eq!(
        config.event_payload_retention,
        Duration::from_secs(30 * 86_400)
    );
    assert_eq!(
        with(r#"event_payload_retention = "12h""#)
            .unwrap()
            .event_payload_retention,
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
        error_of(r#"stripe_webhook_secret = "not-whsec""#).starts_with("STRIPE_WEBHOOK_SECRET:"),
        "checked even when payments are simulated"
    );
    assert!(error_of("stripe_timeout_secs = 0").starts_with("STRIPE_TIMEOUT_SECS:"));
    assert!(error_of("webhook_tolerance_secs = 0").starts_with("WEBHOOK_TOLERANCE_SECS:"));
    assert!(error_of("campaign_cache_ms = 60001").starts_with("CAMPAIGN_CACHE_MS:"));
    assert!(error_of("event_max_attempts = 0").starts_with("EVENT_MAX_ATTEMPTS:"));
    assert!(error_of(r#"abandoned_after = "soon""#).starts_with("ABANDONED_AFTER:"));
    assert!(error_of(r#"abandoned_after = "30m""#).starts_with("ABANDONED_AFTER:"));
    assert_eq!(
        with(r#"abandoned_after = "7d""#).unwrap().abandoned_after,
        Duration::from_secs(7 * 86_400)
    );
    for bad in ["", "30", "d", "thirty", "-1d", "0d", "30s", "3651d"] {
        let error = error_of(&format!("event_payload_retention = {bad:?}"));
        assert!(
            error.starts_with("EVENT_PAYLOAD_RETENTION:"),
            "{bad}: {error}"
        );
    }
    assert!(error_of("declines_per_payment = 0").starts_with("DECLINES_PER_PAYMENT:"));
    for bad in ["02-29", "3-31", "13-01", "04-31", "31-03", ""] {
        let error = error_of(&format!("gift_aid_year_end = {bad:?}"));
        assert!(error.starts_with("GIFT_AID_YEAR_END:"), "{bad}: {error}");
    }
    for bad in [0, 2001, -5] {
        let error = error_of(&format!("gift_aid_aggregate_up_to = {bad}"));
        assert!(
            error.starts_with("GIFT_AID_AGGREGATE_UP_TO:"),
            "{bad}: {error}"
        );
    }
    let gift_aid = with("gift_aid_year_end = \"12-31\"\ngift_aid_aggregate_up_to = 2000")
        .unwrap()
        .gift_aid;
    assert_eq!(
        (
            gift_aid.year_end_month,
            gift_aid.year_end_day,
            gift_aid.aggregate_up_to
        ),
        (time::Month::December, 31, Some(2000))
    );
    assert!(with("").unwrap().gift_aid.claim_after_payout);
    assert!(error_of(r#"fee_lookup_after = "30s""#).starts_with("FEE_LOOKUP_AFTER:"));
    assert_eq!(with("").unwrap().fee_lookup_after, Duration::from_secs(600));
    assert!(error_of("finance_max_connections = 0").starts_with("FINANCE_MAX_CONNECTIONS:"));
    assert!(error_of(r#"database_read_url = "mysql://replica""#).starts_with("DATABASE_READ_URL:"));
    assert!(error_of(r#"finance_export_stall = "10ms""#).starts_with("FINANCE_EXPORT_STALL:"));
    assert!(error_of(r#"finance_export_deadline = "2d""#).starts_with("FINANCE_EXPORT_DEADLINE:"));
    let finance = with(r#"finance_export_stall = "2s""#)
        .unwrap()
        .database
        .finance;
    assert_eq!(
        (
            finance.stall,
            finance.max_connections,
            finance.read_url.is_none()
        ),
        (Duration::from_secs(2), 3, true)
    );
    for bad in ["", "15", "0s", "11m", "soon"] {
        let error = error_of(&format!("instance_lease = {bad:?}"));
        assert!(error.starts_with("INSTANCE_LEASE:"), "{bad}: {error}");
    }
    assert_eq!(
        with(r#"instance_lease = "2s""#)
            .unwrap()
            .database
            .instance_lease,
        Duration::from_secs(2)
    );
    assert!(error_of(r#"allowed_origins = "not an origin""#).starts_with("ALLOWED_ORIGINS:"));
    assert!(
        error_of(r#"statement_descriptor_suffix = "<b>""#)
            .starts_with("STATEMENT_DESCRIPTOR_SUFFIX:")
    );
    assert!(error_of(r#"database_url = "mysql://x""#).starts_with("DATABASE_URL:"));
    assert!(error_of(r#"stripe_api_base = "/relative""#).starts_with("STRIPE_API_BASE:"));
    assert!(error_of(r#"stripe_secret_key = "pk_test_1""#).starts_with("STRIPE_SECRET_KEY:"));
    assert!(error_of(r#"stripe_secret_key = "sk_test_1""#).starts_with("STRIPE_PUBLISHABLE_KEY:"));
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
    let worst = |secs: u64| Duration::from_secs(secs) * STRIPE_ATTEMPTS + stripe_backoff();
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
    Config::from_settings(&Settings::defaults().unwrap()).expect("the placeholders in development");
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
    with(overrides).expect(overrides).payments
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
            matches!(mode_of(&settings), PaymentsMode::Simulated { .. }),
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
    assert!(matches!(mode_of(simulated), PaymentsMode::Simulated { .. }));
    assert!(matches!(
        mode_of(&format!("{simulated}\nlisten_addr = \"0.0.0.0:8080\"")),
        PaymentsMode::Simulated { .. }
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
    let config = with(
        r#"
        stripe_secret_key = "sk_test_1"
        stripe_publishable_key = "pk_test_1"
        stripe_webhook_secret = "whsec_old, whsec_new"
        "#,
    )
    .unwrap();
    let PaymentsMode::Stripe {
        webhook_secrets: secrets,
        ..
    } = config.payments
    else {
        panic!("the keys make Stripe payments");
    };
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[1].expose_secret(), "whsec_new");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let overrides = r#"
        database_url = "postgres://u:hunter2@db/quickdonate"
        stripe_secret_key = "sk_test_topsecret"
        stripe_publishable_key = "pk_test_1"
        stripe_webhook_secret = "whsec_topsecret"
        smtp_url = "smtps://receipts:topsecret@mail.example.org"
        captcha_verify_url = "https://captcha.example.org/siteverify"
        captcha_secret = "topsecret"
    "#;
    let settings = Settings::from_figment(
        Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(overrides)),
    )
    .unwrap();
    let config = Config::from_settings(&settings).unwrap();
    let debug = format!("{config:?} {settings:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("topsecret"), "{debug}");
}

#[test]
fn a_limit_is_a_count_over_a_window_or_off() {
    assert_eq!(
        "5/10m".parse::<Limit>().unwrap(),
        Limit {
            count: 5,
            window: Duration::from_secs(600)
        }
    );
    assert_eq!(
        "300/1m".parse::<Limit>().unwrap().window,
        Duration::from_secs(60)
    );
    assert_eq!(limit("X", "off").unwrap(), None);
    for bad in ["5", "5/10", "five/10m", "0/1m", "5/10d", "5/0s", "5/25h"] {
        assert!(bad.parse::<Limit>().is_err(), "{bad}");
    }
    assert!(
        limit("DONATION_LIMIT_PER_IP", "lots")
            .unwrap_err()
            .to_string()
            .starts_with("DONATION_LIMIT_PER_IP:")
    );
}

#[test]
fn the_card_testing_caps_are_off_only_when_developing_with_simulated_payments_on_loopback() {
    let [ip, email, campaign] = CardTesting::DEFAULTS;
    let caps = |config: &Config| {
        let c = &config.card_testing;
        (c.per_ip, c.per_email, c.per_campaign, c.off_for_development)
    };
    // `cargo run` on the defaults: simulated payments on 127.0.0.1, every cap off.
    let local = with("").unwrap();
    assert_eq!(caps(&local), (None, None, None, true));
    // A cap set is a cap kept, even then; the others stay off.
    let one = with(r#"donation_limit_per_email = "2/1m""#).unwrap();
    assert_eq!(
        caps(&one),
        (
            None,
            Some(Limit {
                count: 2,
                window: Duration::from_secs(60)
            }),
            None,
            true
        )
    );
    let all_set = with(
        r#"
        donation_limit_per_ip = "5/10m"
        donation_limit_per_email = "off"
        donation_limit_per_campaign = "300/1m"
        "#,
    )
    .unwrap();
    assert_eq!(caps(&all_set), (Some(ip), None, Some(campaign), false));
    // Real Stripe keys, even on loopback: the defaults.
    assert_eq!(
        caps(&with(STRIPE_KEYS).unwrap()),
        (Some(ip), Some(email), Some(campaign), false)
    );
    // Simulated on purpose beyond loopback: anyone can reach it, so the defaults.
    assert_eq!(
        caps(&with("payments = \"simulated\"\nlisten_addr = \"0.0.0.0:8080\"").unwrap()),
        (Some(ip), Some(email), Some(campaign), false)
    );
    // Production: the defaults.
    let production = format!(
        "{STRIPE_KEYS}\napp_env = \"production\"\ndatabase_url = \"postgres://db/q\"\n{CHARITY}\n{SMTP}"
    );
    assert_eq!(
        caps(&with(&production).unwrap()),
        (Some(ip), Some(email), Some(campaign), false)
    );
    assert_eq!(
        (
            ip.count,
            ip.window,
            email.count,
            campaign.count,
            campaign.window
        ),
        (5, Duration::from_secs(600), 3, 300, Duration::from_secs(60)),
        "what config/default.toml and the README say"
    );
}

#[test]
fn the_staff_origin_is_a_name_served_securely() {
    let staff = with("").unwrap().staff;
    assert_eq!(
        (staff.origin.as_str(), staff.host.as_str(), staff.secure),
        ("http://localhost:8080", "localhost", false)
    );
    assert_eq!(
        (staff.idle, staff.max),
        (Duration::from_secs(1800), Duration::from_secs(12 * 3600))
    );
    // As a browser sends it in `Origin`.
    let https = with(r#"staff_origin = "https://Finance.Example.org:443/""#)
        .unwrap()
        .staff;
    assert_eq!(
        (https.origin.as_str(), https.host.as_str(), https.secure),
        ("https://finance.example.org", "finance.example.org", true)
    );
    for (bad, says) in [
        (
            r#"staff_origin = "http://127.0.0.1:8080""#,
            "names an IP address",
        ),
        (
            r#"staff_origin = "https://[::1]:8080""#,
            "names an IP address",
        ),
        (
            r#"staff_origin = "http://finance.example.org""#,
            "must be https",
        ),
        (
            r#"staff_origin = "https://finance.example.org/staff""#,
            "is not an origin",
        ),
        (
            r#"staff_origin = "finance.example.org""#,
            "is not an origin",
        ),
        (
            r#"staff_session_idle = "13h""#,
            "no longer than STAFF_SESSION_MAX",
        ),
    ] {
        let error = error_of(bad);
        assert!(
            error.starts_with("STAFF_ORIGIN:") || error.starts_with("STAFF_SESSION_IDLE:"),
            "{bad}: {error}"
        );
        assert!(error.contains(says), "{bad}: {error}");
    }
}
