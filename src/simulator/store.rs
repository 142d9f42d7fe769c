//! The simulated Stripe's objects in Postgres (`simulator_*`): read, locked, written, and its
//! events kept for its events API, for the controls and the look-alike API alike.

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::SimulationError;

/// A PaymentIntent's `status`.
pub(super) fn status_of(intent: &Value) -> String {
    intent["status"].as_str().unwrap_or_default().to_owned()
}

/// Whether a PaymentIntent in `status` can still be paid or declined.
pub(super) fn awaits_payment(status: &str) -> bool {
    status.starts_with("requires_") || status == "processing"
}

/// The PaymentIntent `id`, its row locked until `tx` ends.
pub(super) async fn lock_intent(tx: &mut PgConnection, id: &str) -> Result<Value, SimulationError> {
    sqlx::query_scalar!(
        "SELECT object FROM simulator_payment_intents WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| SimulationError::UnknownPaymentIntent(id.to_owned()))
}

pub(super) async fn save_intent(
    tx: &mut PgConnection,
    id: &str,
    intent: &Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE simulator_payment_intents SET object = $2 WHERE id = $1",
        id,
        intent
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn insert_charge(
    tx: &mut PgConnection,
    intent: &str,
    charge: &Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO simulator_charges (id, payment_intent_id, object) VALUES ($1, $2, $3)",
        charge["id"].as_str(),
        intent,
        charge
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn insert_balance_transaction(
    tx: &mut PgConnection,
    transaction: &Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO simulator_balance_transactions (id, object) VALUES ($1, $2)",
        transaction["id"].as_str(),
        transaction
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Wraps `object` in an event as Stripe does, and keeps it for the events API.
pub(super) async fn record_event(
    tx: &mut PgConnection,
    kind: &str,
    object: Value,
    created: i64,
) -> sqlx::Result<Value> {
    let id = format!("evt_sim_{}", Uuid::new_v4().simple());
    let event = json!({
        "id": id,
        "object": "event",
        "api_version": stripe_client_core::VERSION.as_str(),
        "created": created,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind
    });
    sqlx::query!(
        "INSERT INTO simulator_events (id, created, event) VALUES ($1, $2, $3)",
        id,
        created,
        event
    )
    .execute(&mut *tx)
    .await?;
    Ok(event)
}
