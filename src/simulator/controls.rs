//! What happens to the simulated Stripe's objects when a donor pays or is declined, the
//! dashboard refunds, a card issuer fails a refund or the bank takes a payout: each change made
//! in one transaction, with its row locked, and the events Stripe would send kept for its
//! events API and returned to the caller to deliver.

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::store::{
    awaits_payment, insert_balance_transaction, insert_charge, lock_intent, record_event,
    save_intent, status_of,
};
use super::{SimulatedStripe, SimulationError};

impl SimulatedStripe {
    /// The card is charged: the PaymentIntent succeeds, with a new charge and its balance
    /// transaction (the fee at 1.5% + 20p). Returns the events Stripe would send.
    pub async fn succeed(&self, id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let mut intent = lock_intent(&mut tx, id).await?;
        let status = status_of(&intent);
        if !awaits_payment(&status) {
            return Err(SimulationError::WrongState(status, "paid"));
        }
        let amount = intent["amount"].as_i64().unwrap_or(0);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let charge_id = format!("ch_sim_{}", Uuid::new_v4().simple());
        let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
        // Stripe rounds its fee to the nearest penny.
        let fee = (amount * 150 + 5_000) / 10_000 + 20;
        let transaction = json!({
            "id": txn_id, "object": "balance_transaction", "amount": amount,
            "available_on": now + 7 * 86_400, "created": now, "currency": intent["currency"],
            "description": "Donation", "exchange_rate": null, "fee": fee,
            "fee_details": [{"amount": fee, "application": null, "currency": intent["currency"],
                             "description": "Stripe processing fees", "type": "stripe_fee"}],
            "net": amount - fee, "reporting_category": "charge", "source": charge_id,
            "status": "pending", "type": "charge"
        });
        let charge = json!({
            "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": 0, "balance_transaction": txn_id, "captured": true,
            "created": now, "currency": intent["currency"], "description": "Donation",
            "disputed": false, "failure_code": null, "failure_message": null,
            "livemode": false, "metadata": intent["metadata"],
            "outcome": {"network_status": "approved_by_network", "reason": null,
                        "risk_level": "normal", "seller_message": "Payment complete.",
                        "type": "authorized"},
            "paid": true, "payment_intent": id, "refunded": false, "status": "succeeded"
        });
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["latest_charge"] = json!(charge_id);
        intent["last_payment_error"] = Value::Null;
        insert_balance_transaction(&mut tx, &transaction).await?;
        insert_charge(&mut tx, id, &charge).await?;
        save_intent(&mut tx, id, &intent).await?;
        let events = vec![
            record_event(&mut tx, "payment_intent.succeeded", intent, now).await?,
            record_event(&mut tx, "charge.succeeded", charge, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }

    /// The card is declined, as Stripe does it: a failed charge, and the PaymentIntent waits
    /// for another payment method, naming the failed charge as its latest.
    pub async fn fail(&self, id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let mut intent = lock_intent(&mut tx, id).await?;
        let status = status_of(&intent);
        if !awaits_payment(&status) {
            return Err(SimulationError::WrongState(status, "declined"));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let charge_id = format!("ch_sim_{}", Uuid::new_v4().simple());
        let message = "Your card was declined.";
        let charge = json!({
            "id": charge_id, "object": "charge", "amount": intent["amount"],
            "amount_captured": 0, "amount_refunded": 0, "balance_transaction": null,
            "captured": false, "created": now, "currency": intent["currency"],
            "description": "Donation", "disputed": false, "failure_code": "card_declined",
            "failure_message": message, "livemode": false, "metadata": intent["metadata"],
            "outcome": {"network_status": "declined_by_network", "reason": "generic_decline",
                        "risk_level": "normal",
                        "seller_message": "The bank did not return any further details with this decline.",
                        "type": "issuer_declined"},
            "paid": false, "payment_intent": id, "refunded": false, "status": "failed"
        });
        intent["status"] = json!("requires_payment_method");
        intent["latest_charge"] = json!(charge_id);
        intent["last_payment_error"] = json!({
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
            "message": message, "charge": charge_id
        });
        insert_charge(&mut tx, id, &charge).await?;
        save_intent(&mut tx, id, &intent).await?;
        let events = vec![
            record_event(&mut tx, "charge.failed", charge, now).await?,
            record_event(&mut tx, "payment_intent.payment_failed", intent, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }

    /// Refunds `amount` (all that is left if `None`) of a succeeded PaymentIntent.
    pub async fn refund(
        &self,
        id: &str,
        amount: Option<i64>,
    ) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let intent = lock_intent(&mut tx, id).await?;
        let status = status_of(&intent);
        if status != "succeeded" {
            return Err(SimulationError::WrongState(status, "refunded"));
        }
        let charge_id = intent["latest_charge"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut charge = sqlx::query_scalar!(
            "SELECT object FROM simulator_charges WHERE id = $1 FOR UPDATE",
            charge_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let left = charge["amount"].as_i64().unwrap_or(0)
            - charge["amount_refunded"].as_i64().unwrap_or(0);
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(SimulationError::BadRefundAmount(left));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let refund_id = format!("re_sim_{}", Uuid::new_v4().simple());
        let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
        // The money leaves the balance at once; Stripe keeps no fee back on a refund.
        let transaction = json!({
            "id": txn_id, "object": "balance_transaction", "amount": -amount,
            "available_on": now, "created": now, "currency": charge["currency"],
            "description": "REFUND FOR CHARGE (Donation)", "exchange_rate": null, "fee": 0,
            "fee_details": [], "net": -amount, "reporting_category": "refund",
            "source": refund_id, "status": "available", "type": "refund"
        });
        let refund = json!({
            "id": refund_id, "object": "refund", "amount": amount, "balance_transaction": txn_id,
            "charge": charge_id, "created": now, "currency": charge["currency"],
            "failure_balance_transaction": null, "failure_reason": null, "metadata": {},
            "payment_intent": id, "reason": "requested_by_customer", "receipt_number": null,
            "source_transfer_reversal": null, "status": "succeeded", "transfer_reversal": null
        });
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) + amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or(0));
        insert_balance_transaction(&mut tx, &transaction).await?;
        sqlx::query!(
            "INSERT INTO simulator_refunds (id, charge_id, object) VALUES ($1, $2, $3)",
            refund_id,
            charge_id,
            refund
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE simulator_charges SET object = $2 WHERE id = $1",
            charge_id,
            charge
        )
        .execute(&mut *tx)
        .await?;
        let events = vec![
            record_event(&mut tx, "refund.created", refund, now).await?,
            record_event(&mut tx, "charge.refunded", charge, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }
}

impl SimulatedStripe {
    /// A succeeded refund fails afterwards, as one does when the card it went back to is closed:
    /// the money comes back to the balance (a `refund_failure` balance transaction, the refund's
    /// `failure_balance_transaction`) and the charge counts it refunded no more.
    pub async fn fail_refund(&self, refund_id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let unknown = || SimulationError::UnknownRefund(refund_id.to_owned());
        let found = sqlx::query!(
            r#"SELECT c.id AS charge_id, c.payment_intent_id
               FROM simulator_refunds r JOIN simulator_charges c ON c.id = r.charge_id
               WHERE r.id = $1"#,
            refund_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(unknown)?;
        // Locked in the order every control takes them: the PaymentIntent, its charge, then
        // the refund.
        lock_intent(&mut tx, &found.payment_intent_id).await?;
        let mut charge = sqlx::query_scalar!(
            "SELECT object FROM simulator_charges WHERE id = $1 FOR UPDATE",
            found.charge_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut refund = sqlx::query_scalar!(
            "SELECT object FROM simulator_refunds WHERE id = $1 FOR UPDATE",
            refund_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(unknown)?;
        let status = status_of(&refund);
        if status != "succeeded" {
            return Err(SimulationError::RefundCannotFail(status));
        }
        let amount = refund["amount"].as_i64().unwrap_or(0);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
        let transaction = json!({
            "id": txn_id, "object": "balance_transaction", "amount": amount,
            "available_on": now, "created": now, "currency": refund["currency"],
            "description": "REFUND FAILURE", "exchange_rate": null, "fee": 0,
            "fee_details": [], "net": amount, "reporting_category": "refund_failure",
            "source": refund_id, "status": "available", "type": "refund_failure"
        });
        refund["status"] = json!("failed");
        refund["failure_reason"] = json!("expired_or_canceled_card");
        refund["failure_balance_transaction"] = json!(txn_id);
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) - amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or(0));
        insert_balance_transaction(&mut tx, &transaction).await?;
        sqlx::query!(
            "UPDATE simulator_refunds SET object = $2 WHERE id = $1",
            refund_id,
            refund
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE simulator_charges SET object = $2 WHERE id = $1",
            found.charge_id,
            charge
        )
        .execute(&mut *tx)
        .await?;
        let events = vec![
            record_event(&mut tx, "refund.updated", refund.clone(), now).await?,
            record_event(&mut tx, "refund.failed", refund.clone(), now).await?,
            record_event(&mut tx, "charge.refund.updated", refund, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }

    /// An automatic payout of everything in the balance not yet paid out: one payout per
    /// currency whose transactions add up to more than 0, each remembering the transactions
    /// it pays out, with its own `payout` balance transaction. With `fail`, the bank returns
    /// it: the payout fails and a `payout_failure` transaction puts the money back in the
    /// balance, for the next payout. Returns the payouts as they end and the events Stripe
    /// would send.
    pub async fn pay_out(&self, fail: bool) -> Result<(Vec<Value>, Vec<Value>), SimulationError> {
        let mut tx = self.db.begin().await?;
        // Each transaction is paid out once: a payout made at the same time waits for these
        // rows, then finds them paid out and passes them by.
        let unpaid = sqlx::query!(
            r#"SELECT id, object->>'currency' AS "currency!", (object->>'net')::bigint AS "net!"
               FROM simulator_balance_transactions
               WHERE payout_id IS NULL
               ORDER BY seq
               FOR UPDATE"#
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut balances: Vec<(String, i64, Vec<String>)> = Vec::new();
        for row in unpaid {
            match balances.iter_mut().find(|(c, ..)| *c == row.currency) {
                Some((_, total, ids)) => {
                    *total += row.net;
                    ids.push(row.id);
                }
                None => balances.push((row.currency, row.net, vec![row.id])),
            }
        }
        if let Some(reason) = nothing_to_pay_out(&balances) {
            return Err(SimulationError::NothingToPayOut(reason));
        }

        let now = OffsetDateTime::now_utc();
        // Stripe's arrival dates are midnight UTC; a standard payout arrives two days on.
        let arrival = (now.date() + time::Duration::days(2))
            .midnight()
            .assume_utc()
            .unix_timestamp();
        let now = now.unix_timestamp();
        let (mut payouts, mut events) = (Vec::new(), Vec::new());
        for (currency, amount, ids) in balances.into_iter().filter(|(_, total, _)| *total > 0) {
            let payout_id = format!("po_sim_{}", Uuid::new_v4().simple());
            let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
            let transaction = json!({
                "id": txn_id, "object": "balance_transaction", "amount": -amount,
                "available_on": arrival, "created": now, "currency": currency,
                "description": "STRIPE PAYOUT", "exchange_rate": null, "fee": 0,
                "fee_details": [], "net": -amount, "reporting_category": "payout",
                "source": payout_id, "status": "available", "type": "payout"
            });
            let mut payout = json!({
                "id": payout_id, "object": "payout", "amount": amount,
                "application_fee": null, "application_fee_amount": null,
                "arrival_date": arrival, "automatic": true, "balance_transaction": txn_id,
                "created": now, "currency": currency, "description": "STRIPE PAYOUT",
                "destination": "ba_sim_charity", "failure_balance_transaction": null,
                "failure_code": null, "failure_message": null, "livemode": false,
                "metadata": {}, "method": "standard", "original_payout": null,
                "reconciliation_status": "in_progress", "reversed_by": null,
                "source_type": "card", "statement_descriptor": null, "status": "pending",
                "trace_id": {"status": "unsupported", "value": null}, "type": "bank_account"
            });
            sqlx::query!(
                "INSERT INTO simulator_payouts (id, object) VALUES ($1, $2)",
                payout_id,
                payout
            )
            .execute(&mut *tx)
            .await?;
            insert_balance_transaction(&mut tx, &transaction).await?;
            // What it pays out had to be available to be paid out; its own transaction is
            // part of it, as Stripe lists it.
            sqlx::query!(
                r#"UPDATE simulator_balance_transactions
                   SET payout_id = $1, object = jsonb_set(object, '{status}', '"available"')
                   WHERE id = ANY($2) OR id = $3"#,
                payout_id,
                &ids,
                txn_id
            )
            .execute(&mut *tx)
            .await?;
            events.push(record_event(&mut tx, "payout.created", payout.clone(), now).await?);

            if fail {
                let failure_id = format!("txn_sim_{}", Uuid::new_v4().simple());
                let failure = json!({
                    "id": failure_id, "object": "balance_transaction", "amount": amount,
                    "available_on": now, "created": now, "currency": currency,
                    "description": "STRIPE PAYOUT FAILURE", "exchange_rate": null, "fee": 0,
                    "fee_details": [], "net": amount, "reporting_category": "payout_reversal",
                    "source": payout_id, "status": "available", "type": "payout_failure"
                });
                insert_balance_transaction(&mut tx, &failure).await?;
                payout["status"] = json!("failed");
                payout["failure_balance_transaction"] = json!(failure_id);
                payout["failure_code"] = json!("account_closed");
                payout["failure_message"] = json!("The bank account has been closed.");
                events.push(record_event(&mut tx, "payout.failed", payout.clone(), now).await?);
            } else {
                payout["status"] = json!("paid");
                events.push(record_event(&mut tx, "payout.paid", payout.clone(), now).await?);
            }
            payout["reconciliation_status"] = json!("completed");
            sqlx::query!(
                "UPDATE simulator_payouts SET object = $2 WHERE id = $1",
                payout_id,
                payout
            )
            .execute(&mut *tx)
            .await?;
            events.push(
                record_event(
                    &mut tx,
                    "payout.reconciliation_completed",
                    payout.clone(),
                    now,
                )
                .await?,
            );
            payouts.push(payout);
        }
        tx.commit().await?;
        Ok((payouts, events))
    }
}

/// Why nothing can be paid out of `balances` (currency, total, transactions), if so.
fn nothing_to_pay_out(balances: &[(String, i64, Vec<String>)]) -> Option<String> {
    if balances.is_empty() {
        return Some("every balance transaction is in a payout already".to_owned());
    }
    if balances.iter().any(|(_, total, _)| *total > 0) {
        return None;
    }
    let totals: Vec<String> = balances
        .iter()
        .map(|(currency, total, _)| format!("{total} {currency}"))
        .collect();
    Some(format!(
        "what is not paid out adds up to {}, nothing above 0",
        totals.join(", ")
    ))
}
