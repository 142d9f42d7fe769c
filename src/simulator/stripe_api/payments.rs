//! PaymentIntents, their charges and their refunds, as Stripe answers for them.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Answer, ChargeExpansion, TransactionExpansion, authorized, cannot_expand, expansions,
    found_or_404, invalid_request, limit_of, list, list_expansions, refunds_of, snapshot,
    stripe_error, unauthorized,
};
use crate::simulator::store::{lock_intent, record_event, save_intent, status_of};
use crate::simulator::{SimulatedStripe, SimulationError};

pub(super) async fn create_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    params.sort();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let amount = match param("amount").and_then(|a| a.parse::<i64>().ok()) {
        Some(amount) if amount > 0 => amount,
        _ => return Ok(invalid_request("amount", "Missing or invalid amount.")),
    };
    let Some(currency) = param("currency").filter(|c| c.len() == 3) else {
        return Ok(invalid_request("currency", "Missing or invalid currency."));
    };
    let metadata: serde_json::Map<String, Value> = params
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), Value::String(v.clone())))
        })
        .collect();

    let id = format!("pi_sim_{}", Uuid::new_v4().simple());
    let secret = format!("{id}_secret_{}", Uuid::new_v4().simple());
    let intent = json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": {"enabled": param("automatic_payment_methods[enabled]") == Some("true")},
        "canceled_at": null,
        "cancellation_reason": null,
        "capture_method": "automatic",
        "client_secret": secret,
        "confirmation_method": "automatic",
        "created": OffsetDateTime::now_utc().unix_timestamp(),
        "currency": currency,
        "customer": null,
        "description": param("description"),
        "last_payment_error": null,
        "latest_charge": null,
        "livemode": false,
        "metadata": metadata,
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": null,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "processing": null,
        "receipt_email": null,
        "review": null,
        "setup_future_usage": null,
        "shipping": null,
        "source": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": param("statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": null,
        "transfer_group": null
    });

    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let params = json!(params);
    let mut tx = stripe.db.begin().await?;
    sqlx::query!(
        "INSERT INTO simulator_payment_intents (id, object) VALUES ($1, $2)",
        id,
        intent
    )
    .execute(&mut *tx)
    .await?;
    if let Some(key) = &key {
        // A request holding the same key commits first, or this one does; the other finds
        // the key taken (after waiting for it) and answers as the first request did.
        let taken = sqlx::query!(
            r#"INSERT INTO simulator_idempotency_keys (key, params, payment_intent_id, response)
               VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING"#,
            key,
            params,
            id,
            intent
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 0;
        if taken {
            tx.rollback().await?;
            return replay(&stripe.db, key, &params).await;
        }
    }
    tx.commit().await?;
    Ok((StatusCode::OK, axum::Json(intent)).into_response())
}

/// The answer to a request whose Idempotency-Key was used before: the first answer again if
/// the parameters are the same, Stripe's `idempotency_error` if not.
async fn replay(db: &PgPool, key: &str, params: &Value) -> Answer {
    let earlier = sqlx::query!(
        "SELECT params, response FROM simulator_idempotency_keys WHERE key = $1",
        key
    )
    .fetch_one(db)
    .await?;
    if earlier.params != *params {
        return Ok(stripe_error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            None,
            "Keys for idempotent requests can only be used with the same parameters they \
             were first used with.",
        ));
    }
    Ok((
        StatusCode::OK,
        [("idempotent-replayed", "true")],
        axum::Json(earlier.response),
    )
        .into_response())
}

/// A PaymentIntent. `expand[]=latest_charge` embeds the charge; `latest_charge.
/// balance_transaction` and `latest_charge.refunds` embed the charge with those inside it, and
/// `latest_charge.refunds.data.balance_transaction` (or `.failure_balance_transaction`) each
/// refund's transaction inside those.
pub(super) async fn retrieve_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut latest_charge = false;
    let mut inside = ChargeExpansion::default();
    for path in expansions(query.as_deref()) {
        let known = match path.split_once('.') {
            None => path == "latest_charge",
            Some(("latest_charge", rest)) => inside.take(rest),
            Some(_) => false,
        };
        if !known {
            return Ok(cannot_expand(&path));
        }
        latest_charge = true;
    }
    let mut tx = snapshot(&stripe.db).await?;
    let mut intent = sqlx::query_scalar!(
        "SELECT object FROM simulator_payment_intents WHERE id = $1",
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(intent) = intent.as_mut().filter(|_| latest_charge)
        && let Some(charge_id) = intent["latest_charge"].as_str().map(str::to_owned)
    {
        let charge = sqlx::query_scalar!(
            "SELECT object FROM simulator_charges WHERE id = $1",
            charge_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(mut charge) = charge {
            inside.apply(&mut tx, &mut charge).await?;
            intent["latest_charge"] = charge;
        }
    }
    tx.commit().await?;
    Ok(found_or_404(intent, "payment_intent", &id))
}

/// Cancels a PaymentIntent still waiting for its payment, as Stripe does: one that succeeded,
/// is processing or is already canceled cannot be, and the error carries it.
pub(super) async fn cancel_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let reason = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "cancellation_reason")
        .map(|(_, v)| v.into_owned());
    let mut tx = stripe.db.begin().await?;
    let mut intent = match lock_intent(&mut tx, &id).await {
        Ok(intent) => intent,
        Err(SimulationError::Database(error)) => return Err(error.into()),
        Err(_) => return Ok(found_or_404(None, "payment_intent", &id)),
    };
    let status = status_of(&intent);
    if !status.starts_with("requires_") {
        let message =
            format!("You cannot cancel this PaymentIntent because it has a status of {status}.");
        let body = json!({"error": {
            "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
            "message": message, "payment_intent": intent
        }});
        return Ok((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    intent["status"] = json!("canceled");
    intent["canceled_at"] = json!(now);
    intent["cancellation_reason"] = json!(reason);
    save_intent(&mut tx, &id, &intent).await?;
    record_event(&mut tx, "payment_intent.canceled", intent.clone(), now).await?;
    tx.commit().await?;
    Ok((StatusCode::OK, axum::Json(intent)).into_response())
}

/// A charge; `expand[]=balance_transaction` and `expand[]=refunds` (and the refunds' own, as
/// for a PaymentIntent's charge) embed those.
pub(super) async fn retrieve_charge(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut expansion = ChargeExpansion::default();
    for path in expansions(query.as_deref()) {
        if !expansion.take(&path) {
            return Ok(cannot_expand(&path));
        }
    }
    let mut tx = snapshot(&stripe.db).await?;
    let mut charge = sqlx::query_scalar!("SELECT object FROM simulator_charges WHERE id = $1", id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(charge) = charge.as_mut() {
        expansion.apply(&mut tx, charge).await?;
    }
    tx.commit().await?;
    Ok(found_or_404(charge, "charge", &id))
}

/// `GET /v1/refunds?charge=...`: a charge's refunds, newest first, paginated;
/// `expand[]=data.balance_transaction` and `data.failure_balance_transaction` embed those.
pub(super) async fn list_refunds(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut expansion = TransactionExpansion::default();
    if let Some(path) = list_expansions(raw.as_deref(), |p| expansion.take(p)) {
        return Ok(cannot_expand(&path));
    }
    let charge = query.get("charge").cloned().unwrap_or_default();
    let limit = limit_of(&query);
    let mut tx = snapshot(&stripe.db).await?;
    let after = query.get("starting_after").map(String::as_str);
    let mut refunds = refunds_of(&mut tx, &charge, after, limit + 1).await?;
    let has_more = refunds.len() as i64 > limit;
    refunds.truncate(limit as usize);
    for refund in &mut refunds {
        expansion.apply(&mut tx, refund).await?;
    }
    tx.commit().await?;
    Ok(list(refunds, has_more, "/v1/refunds"))
}
