//! Payments set up as configured: the real Stripe, or the simulated one started inside the
//! process, with the client that talks to it either way.

use std::net::SocketAddr;

use secrecy::SecretString;
use sqlx::PgPool;

use crate::config::{Config, PaymentsMode};
use crate::payments::Payments;
use crate::simulator::routes::Simulator;
use crate::simulator::{self, SimulatedStripe};

/// How payments are taken, set up.
pub(super) struct PaymentsSetUp {
    /// The Stripe client: real, or pointed at the simulated Stripe.
    pub payments: Payments,
    /// The simulator's controls, if payments are simulated.
    pub simulator: Option<Simulator>,
    /// The secrets webhooks are signed with.
    pub webhook_secrets: Vec<SecretString>,
}

/// The Stripe client, and with simulated payments the simulated Stripe (started, its objects
/// in `db`) and its controls, whose events are delivered to our own endpoint at `address`.
pub(super) async fn set_up(
    settings: &Config,
    address: SocketAddr,
    db: &PgPool,
) -> anyhow::Result<PaymentsSetUp> {
    match settings.payments.clone() {
        PaymentsMode::Stripe {
            secret_key,
            publishable_key,
            webhook_secrets,
        } => {
            tracing::info!(live = settings.livemode(), "payments go to Stripe");
            let payments = Payments::for_stripe(&settings.stripe, &secret_key, publishable_key)?;
            Ok(PaymentsSetUp {
                payments,
                simulator: None,
                webhook_secrets,
            })
        }
        PaymentsMode::Simulated { webhook_secret } => {
            let stripe = SimulatedStripe::new(db.clone());
            let base = stripe.start().await?;
            tracing::warn!(
                "SIMULATED PAYMENTS: no STRIPE_SECRET_KEY is set, so a Stripe look-alike inside \
                 this process answers. No money moves."
            );
            if settings.card_testing.off_for_development {
                tracing::warn!(
                    "CARD-TESTING CAPS OFF: payments are simulated on a loopback address, so the \
                     caps not set (DONATION_LIMIT_PER_IP, _PER_EMAIL, _PER_CAMPAIGN) are off \
                     and trying the service is never refused; set one to try it"
                );
            }
            let payments = Payments::new(
                &SecretString::from(simulator::SECRET_KEY),
                simulator::PUBLISHABLE_KEY.to_owned(),
                &base,
                settings.stripe.timeout,
                settings.stripe.statement_descriptor_suffix.clone(),
            )?;
            // Sign the simulator's events with the configured secret, or one made for this run.
            let secret = webhook_secret.unwrap_or_else(|| {
                SecretString::from(format!("whsec_sim_{}", uuid::Uuid::new_v4().simple()))
            });
            let own = SocketAddr::new(
                if address.ip().is_unspecified() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    address.ip()
                },
                address.port(),
            );
            let simulator = Simulator::new(
                stripe,
                format!("http://{own}/v1/webhooks/stripe"),
                secret.clone(),
                settings.apply_events,
            );
            Ok(PaymentsSetUp {
                payments,
                simulator: Some(simulator),
                webhook_secrets: vec![secret],
            })
        }
    }
}
