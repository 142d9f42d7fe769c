//! The quick-donate flow: check the request, write the donation, then create its PaymentIntent.
//!
//! The donation is committed before Stripe is called, and the PaymentIntent's idempotency key
//! is derived from the donation's id, so a retry after a crash or a timeout finishes the same
//! donation with the same PaymentIntent and can never make a second one.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::request::{DonationRequest, GiftAidDeclaration, Rejection};
use super::{DonationStatus, DonationsState};
use crate::campaigns;
use crate::http::problem::{ApiResult, Problem, ProblemType};
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::payments::{IntentRequest, PaymentError};

/// The 201 answer: what the website needs to take the payment with Stripe.js.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DonationCreated)]
pub(super) struct Created<'a> {
    id: Uuid,
    /// Always `pending`.
    status: DonationStatus,
    #[schema(value_type = String)]
    campaign: &'a str,
    /// The gift, in minor units.
    amount: i64,
    /// What the donor adds to cover the card fee (0 without `cover_fees`).
    cover_fees_amount: i64,
    /// `amount` plus `cover_fees_amount`: what the card is charged.
    total_amount: i64,
    #[schema(value_type = String)]
    currency: &'a str,
    /// The Stripe PaymentIntent to confirm with Stripe.js.
    #[schema(value_type = String)]
    payment_intent_id: &'a str,
    /// For Stripe.js's `confirmPayment`.
    #[schema(value_type = String)]
    client_secret: &'a str,
    /// The Stripe publishable key to load Stripe.js with.
    #[schema(value_type = String)]
    publishable_key: &'a str,
}

/// The stored facts of a donation the PaymentIntent is made from.
struct Pending {
    id: Uuid,
    campaign: String,
    amount: i64,
    cover_fees_amount: i64,
    total_amount: i64,
    currency: String,
}

#[tracing::instrument(name = "Creating a donation", skip_all, fields(campaign = %slug, donation_id))]
pub async fn create_donation(
    state: &DonationsState,
    slug: &str,
    key: Option<IdempotencyKey>,
    client: std::net::IpAddr,
    captcha: Option<&str>,
    body: &Value,
) -> ApiResult<Response> {
    // An address or email a card-testing cap refused must solve a captcha, if one is set up;
    // it is checked before any transaction, since it is a call to someone else.
    let email = body["donor"]["email"].as_str().unwrap_or_default();
    let (verified, must_solve) = match &state.captcha {
        Some(check) if super::limits::challenged(&state.db, client, email).await? => {
            match captcha {
                Some(token) if check.verify(token, client).await => (true, false),
                Some(_) => {
                    state.metrics.card_testing_rejection("captcha");
                    return Ok(super::limits::captcha_required());
                }
                None => (false, true),
            }
        }
        _ => (false, false),
    };
    let new_id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    // The key first: a replay is the first answer even if the campaign has closed since, and a
    // key used for another request is refused whatever the request now says. A fresh key is
    // held (its row inserted) for the rest of this transaction, and let go if the request is
    // refused below.
    let resume = match &key {
        None => None,
        Some(key) => {
            let route = format!("POST /v1/campaigns/{slug}/donations");
            let fingerprint = idempotency::fingerprint(&route, body);
            let lease = state.idempotency_lease;
            match idempotency::claim(&mut tx, key, &fingerprint, lease, new_id).await? {
                Claim::Fresh => None,
                Claim::Resume { donation_id } => Some(donation_id),
                Claim::Replay(first) => {
                    tx.commit().await?;
                    return Ok(answer(first.status, first.donation_id, first.body, true));
                }
            }
        }
    };

    // On the transaction's connection: a request holding a key never waits for a second one.
    let campaign = campaigns::find(&mut *tx, slug)
        .await?
        .ok_or_else(|| Problem::not_found(format!("There is no campaign {slug:?}.")))?;
    if !campaign.active {
        return Err(Problem::new(
            ProblemType::CampaignInactive,
            format!("The campaign {slug:?} is not taking donations."),
        )
        .into());
    }
    let request = DonationRequest::parse(body, &campaign).map_err(|rejection| match rejection {
        Rejection::Invalid(errors) => Problem::invalid(errors),
        Rejection::NotSupported(error) => Problem::new(
            ProblemType::NotSupported,
            format!("{}: {}", error.field, error.message),
        )
        .with_errors(vec![error]),
    })?;

    let donation = match resume {
        Some(donation_id) => load_pending(&mut tx, donation_id).await?,
        // A fresh key already names `new_id`; the reference is checked at commit.
        None => {
            // A new donation is an attempt the card-testing caps count; a retry of one already
            // made (its key resumed or replayed above) is not.
            if must_solve {
                drop(tx);
                state.metrics.card_testing_rejection("captcha");
                return Ok(super::limits::captcha_required());
            }
            let email = &request.donor.email;
            if let Err(refusal) = state
                .limits
                .attempt(&mut tx, client, email, &campaign.slug, verified)
                .await?
            {
                drop(tx);
                state.metrics.card_testing_rejection(refusal.cap);
                tracing::warn!(
                    retry_after_secs = refusal.wait.as_secs(),
                    "a donation attempt was refused by a card-testing cap"
                );
                if state.captcha.is_some() {
                    super::limits::challenge(&state.db, &refusal.challenge).await?;
                }
                tokio::time::sleep(super::limits::pause()).await;
                return Ok(super::limits::refused(refusal.wait));
            }
            let cover_fees_amount = if request.cover_fees {
                state.fees.cover_for(request.amount)
            } else {
                0
            };
            let fresh = Pending {
                id: new_id,
                campaign: campaign.slug.clone(),
                amount: request.amount,
                cover_fees_amount,
                total_amount: request.amount + cover_fees_amount,
                currency: request.currency.clone(),
            };
            insert(
                &mut tx,
                &fresh,
                &request,
                &super::limits::client_key(client),
                &state.declaration,
            )
            .await?;
            fresh
        }
    };
    tx.commit().await?;
    tracing::Span::current().record("donation_id", tracing::field::display(donation.id));

    let intent = state
        .payments
        .create_payment_intent(IntentRequest {
            donation_id: donation.id,
            campaign: &donation.campaign,
            amount: donation.total_amount,
            cover_fees_amount: donation.cover_fees_amount,
            currency: &donation.currency,
        })
        .await;
    let intent = match intent {
        Ok(intent) => intent,
        Err(error) => {
            if let Some(key) = &key {
                // Free the key so that the website's retry finishes this same donation.
                if let Err(release_error) = idempotency::release(&state.db, key).await {
                    tracing::warn!(error = %release_error, "could not release the idempotency key; it frees itself when its lease ends");
                }
            }
            return Err(payment_problem(error).into());
        }
    };

    // Serialised once: these bytes are sent now and stored for replays.
    let body = serde_json::to_string(&Created {
        id: donation.id,
        status: DonationStatus::Pending,
        campaign: &donation.campaign,
        amount: donation.amount,
        cover_fees_amount: donation.cover_fees_amount,
        total_amount: donation.total_amount,
        currency: &donation.currency,
        payment_intent_id: &intent.id,
        client_secret: &intent.client_secret,
        publishable_key: state.payments.publishable_key(),
    })
    .expect("the answer serialises");

    let mut tx = state.db.begin().await?;
    // This write need not wait for the disk: if a crash loses it, a retry with the same key
    // finds the same PaymentIntent at Stripe, and the PaymentIntent's webhooks carry the
    // donation's id. The donation itself was committed durably before Stripe was called.
    sqlx::query!("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let recorded = sqlx::query!(
        r#"UPDATE donations SET payment_intent_id = $2, updated_at = now()
           WHERE id = $1 AND payment_intent_id IS NULL AND status = 'pending'"#,
        donation.id,
        intent.id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !recorded {
        // Either its events linked this same intent first (`payment_intent.created` can beat
        // us here), and all is well; or the abandoned-payments sweep gave the donation up while
        // Stripe was answering, and the new intent must not be paid either.
        let now = sqlx::query!(
            r#"SELECT status AS "status: DonationStatus", payment_intent_id
               FROM donations WHERE id = $1"#,
            donation.id
        )
        .fetch_one(&mut *tx)
        .await?;
        if now.status == DonationStatus::Canceled {
            drop(tx);
            if now.payment_intent_id.as_deref() != Some(intent.id.as_str())
                && let Err(error) = state
                    .payments
                    .cancel_payment_intent(&intent.id, donation.id)
                    .await
            {
                tracing::warn!(%error, payment_intent_id = %intent.id, "could not cancel the PaymentIntent of a donation given up meanwhile; cancel it in Stripe's dashboard");
            }
            if let Some(key) = &key
                && let Err(error) = idempotency::release(&state.db, key).await
            {
                tracing::warn!(%error, "could not release the idempotency key; it frees itself when its lease ends");
            }
            return Err(given_up().into());
        }
    }
    if let Some(key) = &key {
        idempotency::complete(&mut tx, key, StatusCode::CREATED, &body).await?;
    }
    tx.commit().await?;
    tracing::info!(payment_intent_id = %intent.id, total_amount = donation.total_amount, "donation created");

    Ok(answer(StatusCode::CREATED, Some(donation.id), body, false))
}

/// A JSON answer of exactly `body`'s bytes; a 201 names its donation in `Location`. A replay is
/// marked the way Stripe marks its own.
fn answer(status: StatusCode, donation_id: Option<Uuid>, body: String, replayed: bool) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if status == StatusCode::CREATED
        && let Some(location) =
            donation_id.and_then(|id| HeaderValue::try_from(format!("/v1/donations/{id}")).ok())
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn insert(
    tx: &mut PgConnection,
    donation: &Pending,
    request: &DonationRequest,
    client_key: &[u8],
    wording: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO donations (id, campaign, frequency, amount, cover_fees_amount,
                                  total_amount, currency, donor_email, donor_first_name,
                                  donor_last_name, anonymous, client_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#,
        donation.id,
        donation.campaign,
        request.frequency.as_str(),
        donation.amount,
        donation.cover_fees_amount,
        donation.total_amount,
        donation.currency,
        request.donor.email,
        request.donor.first_name,
        request.donor.last_name,
        request.anonymous,
        client_key
    )
    .execute(&mut *tx)
    .await?;
    if let Some(gift_aid) = &request.gift_aid {
        insert_gift_aid(tx, donation.id, request, gift_aid, wording).await?;
    }
    Ok(())
}

/// The declaration made on the donation form: a record of the donor's own, made in the same
/// transaction as the donation and linked to it. HMRC's model one-off wording covers this
/// gift, the past 4 years and the future, until the donor cancels it.
async fn insert_gift_aid(
    tx: &mut PgConnection,
    donation_id: Uuid,
    request: &DonationRequest,
    declaration: &GiftAidDeclaration,
    wording: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO gift_aid_declarations
               (id, donation_id, donor_email, title, first_name, last_name,
                house_name_or_number, postcode, country, declared_at, covers_from,
                wording_version, wording, source)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now() - interval '4 years',
                   $10, $11, 'donation_form')"#,
        Uuid::now_v7(),
        donation_id,
        request.donor.email,
        declaration.title,
        request.donor.first_name,
        request.donor.last_name,
        declaration.house_name_or_number,
        declaration.postcode,
        declaration.country,
        crate::gift_aid::DECLARATION_VERSION,
        wording
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The donation a retry resumes: one whose first answer was never recorded. A donation since
/// cancelled (given up by the abandoned-payments sweep, or its intent cancelled at Stripe)
/// took nothing and is not resumed; any other is, and Stripe gives back the same intent.
async fn load_pending(tx: &mut PgConnection, id: Uuid) -> ApiResult<Pending> {
    let row = sqlx::query!(
        r#"SELECT id, campaign, amount, cover_fees_amount, total_amount, currency,
                  status AS "status: DonationStatus"
           FROM donations WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_one(tx)
    .await?;
    if row.status == DonationStatus::Canceled {
        return Err(given_up().into());
    }
    Ok(Pending {
        id: row.id,
        campaign: row.campaign,
        amount: row.amount,
        cover_fees_amount: row.cover_fees_amount,
        total_amount: row.total_amount,
        currency: row.currency,
    })
}

/// A retry of a donation that waited too long for its payment and was given up.
fn given_up() -> Problem {
    Problem::new(
        ProblemType::DonationAbandoned,
        "This donation waited too long for its payment and was cancelled; nothing was taken. \
         Start a new donation (with a new Idempotency-Key).",
    )
}

/// Stripe failed the PaymentIntent's creation; nothing was charged either way. Out of reach: a
/// 503, and a retry with the same key finishes this same donation. Refused: a 502.
fn payment_problem(error: PaymentError) -> Problem {
    let cause = std::error::Error::source(&error)
        .map(ToString::to_string)
        .unwrap_or_default();
    tracing::error!(%error, %cause, "payment provider failure");
    match error {
        PaymentError::Unavailable(_) => Problem::new(
            ProblemType::PaymentProviderUnavailable,
            "We could not reach our payment provider. Nothing was charged. Retry with the same \
             Idempotency-Key to complete this same donation.",
        ),
        PaymentError::Rejected(_) => Problem::new(
            ProblemType::PaymentProviderError,
            "Our payment provider could not start this payment. Nothing was charged. Retry \
             with the same Idempotency-Key, or try again later.",
        ),
    }
}
