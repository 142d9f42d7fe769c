//! The ledger: every movement of money in our Stripe balance, one row per movement, built
//! from Stripe's balance transactions and never changed (the table refuses UPDATE and DELETE).
//!
//! A balance transaction gives a row for what it moved and, if it carries a fee, a row for the
//! fee: a gift's charge gives `gift` (gross) and `stripe_fee`; a dispute's withdrawal gives
//! `dispute_withdrawal` and `dispute_fee`. Amounts are signed (positive adds to the balance)
//! in the settlement currency Stripe reports. Each (balance transaction, kind) is written once,
//! so recording the same transaction again, from any event in any order, adds nothing.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::payments::objects::BalanceTransactionFacts;

/// What moved the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Charge,
    Refund,
    RefundFailure,
    Dispute,
    Payout,
    PayoutFailure,
}

/// The kinds of row, as stored.
pub const GIFT: &str = "gift";
pub const STRIPE_FEE: &str = "stripe_fee";
pub const REFUND: &str = "refund";
pub const REFUND_FAILURE: &str = "refund_failure";
pub const DISPUTE_WITHDRAWAL: &str = "dispute_withdrawal";
pub const DISPUTE_FEE: &str = "dispute_fee";
pub const DISPUTE_REINSTATEMENT: &str = "dispute_reinstatement";
pub const PAYOUT: &str = "payout";
pub const PAYOUT_FAILURE: &str = "payout_failure";

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub amount: i64,
    pub currency: String,
    pub balance_transaction_id: String,
    /// The charge, refund, dispute or payout.
    pub source_id: String,
    /// The donation and its campaign, when the money is a donation's.
    pub donation: Option<(Uuid, String)>,
    pub occurred_at: OffsetDateTime,
}

impl Entry {
    pub fn key(&self) -> (String, &'static str) {
        (self.balance_transaction_id.clone(), self.kind)
    }
}

/// The rows a balance transaction makes: what it moved, and its fee if it has one.
pub fn entries(
    bt: &BalanceTransactionFacts,
    source: Source,
    source_id: &str,
    donation: Option<(Uuid, &str)>,
) -> Vec<Entry> {
    let (moved, fee) = match source {
        Source::Charge => (GIFT, STRIPE_FEE),
        Source::Refund => (REFUND, STRIPE_FEE),
        Source::RefundFailure => (REFUND_FAILURE, STRIPE_FEE),
        // A withdrawal takes the disputed amount; a reinstatement gives it back.
        Source::Dispute if bt.amount < 0 => (DISPUTE_WITHDRAWAL, DISPUTE_FEE),
        Source::Dispute => (DISPUTE_REINSTATEMENT, DISPUTE_FEE),
        Source::Payout => (PAYOUT, STRIPE_FEE),
        Source::PayoutFailure => (PAYOUT_FAILURE, STRIPE_FEE),
    };
    let row = |kind, amount| Entry {
        kind,
        amount,
        currency: bt.currency.clone(),
        balance_transaction_id: bt.id.clone(),
        source_id: source_id.to_owned(),
        donation: donation.map(|(id, campaign)| (id, campaign.to_owned())),
        // Stripe always says when; a transaction that does not is recorded as of now.
        occurred_at: bt.created.unwrap_or_else(OffsetDateTime::now_utc),
    };
    let mut rows = vec![row(moved, bt.amount)];
    if bt.fee != 0 {
        // A fee is taken from the balance: a positive fee is a negative movement.
        rows.push(row(fee, -bt.fee));
    }
    rows
}

/// Appends `entries`; rows already there (the same transaction and kind) are left as they are.
pub async fn append(tx: &mut PgConnection, entries: &[Entry]) -> sqlx::Result<u64> {
    if entries.is_empty() {
        return Ok(0);
    }
    let written = sqlx::query!(
        r#"INSERT INTO ledger_entries (kind, amount, currency, balance_transaction_id, source_id,
                                       donation_id, campaign, occurred_at)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                                $6::uuid[], $7::text[], $8::timestamptz[])
           ON CONFLICT (balance_transaction_id, kind) DO NOTHING"#,
        &entries
            .iter()
            .map(|e| e.kind.to_owned())
            .collect::<Vec<_>>(),
        &entries.iter().map(|e| e.amount).collect::<Vec<_>>(),
        &entries
            .iter()
            .map(|e| e.currency.clone())
            .collect::<Vec<_>>(),
        &entries
            .iter()
            .map(|e| e.balance_transaction_id.clone())
            .collect::<Vec<_>>(),
        &entries
            .iter()
            .map(|e| e.source_id.clone())
            .collect::<Vec<_>>(),
        &entries
            .iter()
            .map(|e| e.donation.as_ref().map(|(id, _)| *id))
            .collect::<Vec<_>>() as &[Option<Uuid>],
        &entries
            .iter()
            .map(|e| e.donation.as_ref().map(|(_, c)| c.clone()))
            .collect::<Vec<_>>() as &[Option<String>],
        &entries.iter().map(|e| e.occurred_at).collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(written.rows_affected())
}

/// Every row of these donations, as written so far.
pub async fn of_donations(tx: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Entry>> {
    let rows = sqlx::query!(
        r#"SELECT kind, amount, currency, balance_transaction_id, source_id,
                  donation_id AS "donation_id!", campaign AS "campaign!", occurred_at
           FROM ledger_entries WHERE donation_id = ANY($1) ORDER BY id"#,
        ids
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Entry {
                kind: kind_named(&r.kind)?,
                amount: r.amount,
                currency: r.currency,
                balance_transaction_id: r.balance_transaction_id,
                source_id: r.source_id,
                donation: Some((r.donation_id, r.campaign)),
                occurred_at: r.occurred_at,
            })
        })
        .collect())
}

fn kind_named(kind: &str) -> Option<&'static str> {
    [
        GIFT,
        STRIPE_FEE,
        REFUND,
        REFUND_FAILURE,
        DISPUTE_WITHDRAWAL,
        DISPUTE_FEE,
        DISPUTE_REINSTATEMENT,
        PAYOUT,
        PAYOUT_FAILURE,
    ]
    .into_iter()
    .find(|k| *k == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bt(amount: i64, fee: i64) -> BalanceTransactionFacts {
        BalanceTransactionFacts {
            id: "txn_1".into(),
            amount,
            fee,
            net: amount - fee,
            currency: "gbp".into(),
            kind: None,
            reporting_category: None,
            source: None,
            created: None,
        }
    }

    #[test]
    fn a_charge_is_its_gross_and_its_fee_which_sum_to_its_net() {
        let rows = entries(&bt(1036, 56), Source::Charge, "ch_1", None);
        let kinds: Vec<_> = rows.iter().map(|r| (r.kind, r.amount)).collect();
        assert_eq!(kinds, [(GIFT, 1036), (STRIPE_FEE, -56)]);
        assert_eq!(rows.iter().map(|r| r.amount).sum::<i64>(), 1036 - 56);
    }

    #[test]
    fn a_dispute_withdraws_then_reinstates_and_a_fee_of_zero_writes_no_row() {
        let out = entries(&bt(-1000, 1500), Source::Dispute, "du_1", None);
        assert_eq!(
            out.iter().map(|r| (r.kind, r.amount)).collect::<Vec<_>>(),
            [(DISPUTE_WITHDRAWAL, -1000), (DISPUTE_FEE, -1500)]
        );
        let back = entries(&bt(1000, 0), Source::Dispute, "du_1", None);
        assert_eq!(
            back.iter().map(|r| (r.kind, r.amount)).collect::<Vec<_>>(),
            [(DISPUTE_REINSTATEMENT, 1000)]
        );
    }
}
