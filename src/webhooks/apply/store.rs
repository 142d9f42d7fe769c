//! The SQL of applying: a batch's donations and what hangs off them read and locked, and every
//! change written set-based, one statement per table, the campaigns' totals last.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Dispute, Refund, Row, State};
use crate::donations::DonationStatus;
use crate::finance::ledger::{self, Entry};
use crate::payments::status::{DisputeStatus, PaymentStatus, RefundStatus};

impl State {
    /// The donations `ids`, locked in id order, with their refunds, disputes and ledger rows.
    pub(super) async fn load(tx: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Self> {
        let rows = sqlx::query_as!(
            Row,
            r#"SELECT id, campaign, amount, total_amount, currency,
                      status AS "status: DonationStatus", payment_intent_id,
                      payment_status AS "payment_status: PaymentStatus", payment_status_at,
                      charge_id, amount_received,
                      received_currency, balance_transaction_id, fee, net, settlement_currency,
                      refunded_amount, dispute_status, dispute_lost_amount, dispute_fee,
                      counted_amount, flag, stripe_synced_at
               FROM donations WHERE id = ANY($1) ORDER BY id FOR UPDATE"#,
            ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let refunds = sqlx::query!(
            r#"SELECT id, donation_id, amount, currency, status
               FROM refunds WHERE donation_id = ANY($1)"#,
            ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let disputes = sqlx::query!(
            r#"SELECT id, donation_id, amount, currency, status, status_at
               FROM disputes WHERE donation_id = ANY($1)"#,
            ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let ledger = ledger::of_donations(tx, ids).await?;
        Ok(Self {
            rows: rows.into_iter().map(|r| (r.id, r)).collect(),
            refunds: refunds
                .into_iter()
                .map(|r| {
                    (
                        r.id,
                        Refund {
                            donation_id: r.donation_id,
                            amount: r.amount,
                            currency: r.currency,
                            status: RefundStatus::parse(&r.status),
                        },
                    )
                })
                .collect(),
            disputes: disputes
                .into_iter()
                .map(|d| {
                    (
                        d.id,
                        Dispute {
                            donation_id: d.donation_id,
                            amount: d.amount,
                            currency: d.currency,
                            status: DisputeStatus::parse(&d.status),
                            at: d.status_at,
                        },
                    )
                })
                .collect(),
            recorded: ledger.iter().map(Entry::key).collect(),
            held_entries: ledger.len(),
            ledger,
            changed_refunds: HashSet::new(),
            changed_disputes: HashSet::new(),
            linked: Vec::new(),
            declines: Default::default(),
        })
    }

    /// Writes the refunds and disputes the merge changed, and the ledger rows it added.
    pub(super) async fn write_children(&self, tx: &mut PgConnection) -> sqlx::Result<()> {
        if !self.changed_refunds.is_empty() {
            let refunds: Vec<(&String, &Refund)> = self
                .refunds
                .iter()
                .filter(|(id, _)| self.changed_refunds.contains(*id))
                .collect();
            sqlx::query!(
                r#"INSERT INTO refunds (id, donation_id, amount, currency, status, status_rank)
                   SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::text[],
                                        $5::text[], $6::smallint[])
                   ON CONFLICT (id) DO UPDATE
                       SET status = EXCLUDED.status, status_rank = EXCLUDED.status_rank,
                           updated_at = now()"#,
                &refunds
                    .iter()
                    .map(|(id, _)| (*id).clone())
                    .collect::<Vec<_>>(),
                &refunds
                    .iter()
                    .map(|(_, r)| r.donation_id)
                    .collect::<Vec<_>>(),
                &refunds.iter().map(|(_, r)| r.amount).collect::<Vec<_>>(),
                &refunds
                    .iter()
                    .map(|(_, r)| r.currency.clone())
                    .collect::<Vec<_>>(),
                &refunds
                    .iter()
                    .map(|(_, r)| r.status.as_stripe())
                    .collect::<Vec<_>>() as &[&str],
                &refunds
                    .iter()
                    .map(|(_, r)| r.status.rank())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        if !self.changed_disputes.is_empty() {
            let disputes: Vec<(&String, &Dispute)> = self
                .disputes
                .iter()
                .filter(|(id, _)| self.changed_disputes.contains(*id))
                .collect();
            sqlx::query!(
                r#"INSERT INTO disputes (id, donation_id, amount, currency, status, status_rank,
                                         status_at)
                   SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::text[],
                                        $5::text[], $6::smallint[], $7::timestamptz[])
                   ON CONFLICT (id) DO UPDATE
                       SET amount = EXCLUDED.amount, status = EXCLUDED.status,
                           status_rank = EXCLUDED.status_rank, status_at = EXCLUDED.status_at,
                           updated_at = now()"#,
                &disputes
                    .iter()
                    .map(|(id, _)| (*id).clone())
                    .collect::<Vec<_>>(),
                &disputes
                    .iter()
                    .map(|(_, d)| d.donation_id)
                    .collect::<Vec<_>>(),
                &disputes.iter().map(|(_, d)| d.amount).collect::<Vec<_>>(),
                &disputes
                    .iter()
                    .map(|(_, d)| d.currency.clone())
                    .collect::<Vec<_>>(),
                &disputes
                    .iter()
                    .map(|(_, d)| d.status.as_stripe())
                    .collect::<Vec<_>>() as &[&str],
                &disputes
                    .iter()
                    .map(|(_, d)| d.status.rank())
                    .collect::<Vec<_>>(),
                &disputes.iter().map(|(_, d)| d.at).collect::<Vec<_>>()
                    as &[Option<OffsetDateTime>],
            )
            .execute(&mut *tx)
            .await?;
        }
        ledger::append(tx, &self.ledger[self.held_entries..]).await?;
        Ok(())
    }
}

/// Writes every changed donation in one statement.
pub(super) async fn write_rows(tx: &mut PgConnection, rows: &[Row]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"UPDATE donations d
           SET status = u.status, payment_intent_id = u.payment_intent_id,
               payment_status = u.payment_status, payment_status_at = u.payment_status_at,
               charge_id = u.charge_id, amount_received = u.amount_received,
               received_currency = u.received_currency,
               balance_transaction_id = u.balance_transaction_id, fee = u.fee, net = u.net,
               settlement_currency = u.settlement_currency,
               refunded_amount = u.refunded_amount, dispute_status = u.dispute_status,
               dispute_lost_amount = u.dispute_lost_amount, dispute_fee = u.dispute_fee,
               counted_amount = u.counted_amount, flag = u.flag,
               stripe_synced_at = u.stripe_synced_at, updated_at = now()
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                       $6::text[], $7::bigint[], $8::text[], $9::text[], $10::bigint[],
                       $11::bigint[], $12::text[], $13::bigint[], $14::text[], $15::bigint[],
                       $16::bigint[], $17::bigint[], $18::text[], $19::timestamptz[])
               AS u(id, status, payment_intent_id, payment_status, payment_status_at,
                    charge_id, amount_received, received_currency, balance_transaction_id,
                    fee, net, settlement_currency, refunded_amount, dispute_status,
                    dispute_lost_amount, dispute_fee, counted_amount, flag, stripe_synced_at)
           WHERE d.id = u.id"#,
        &rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>() as &[&str],
        &rows
            .iter()
            .map(|r| r.payment_intent_id.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &rows
            .iter()
            .map(|r| r.payment_status.as_str())
            .collect::<Vec<_>>() as &[&str],
        &rows.iter().map(|r| r.payment_status_at).collect::<Vec<_>>()
            as &[Option<OffsetDateTime>],
        &rows.iter().map(|r| r.charge_id.clone()).collect::<Vec<_>>() as &[Option<String>],
        &rows.iter().map(|r| r.amount_received).collect::<Vec<_>>(),
        &rows
            .iter()
            .map(|r| r.received_currency.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &rows
            .iter()
            .map(|r| r.balance_transaction_id.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &rows.iter().map(|r| r.fee).collect::<Vec<_>>() as &[Option<i64>],
        &rows.iter().map(|r| r.net).collect::<Vec<_>>() as &[Option<i64>],
        &rows
            .iter()
            .map(|r| r.settlement_currency.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &rows.iter().map(|r| r.refunded_amount).collect::<Vec<_>>(),
        &rows
            .iter()
            .map(|r| r.dispute_status.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &rows
            .iter()
            .map(|r| r.dispute_lost_amount)
            .collect::<Vec<_>>(),
        &rows.iter().map(|r| r.dispute_fee).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.counted_amount).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.flag.clone()).collect::<Vec<_>>() as &[Option<String>],
        &rows.iter().map(|r| r.stripe_synced_at).collect::<Vec<_>>() as &[Option<OffsetDateTime>],
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves each campaign's total and count, in slug order, last in the transaction: the hot
/// campaign row stays locked only while the batch commits.
pub async fn move_totals(
    tx: &mut PgConnection,
    campaigns: &BTreeMap<String, (i64, i64)>,
) -> sqlx::Result<()> {
    for (campaign, (raised, count)) in campaigns {
        sqlx::query!(
            r#"UPDATE campaigns
               SET raised_amount = raised_amount + $2, donation_count = donation_count + $3
               WHERE slug = $1"#,
            campaign,
            raised,
            count
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Records the declined attempts `declines` (donation, declined charge), each once ever: a new
/// one adds to its donation's count, and to the card-testing counts of the address and email
/// that made the donation. Returns the donations, still waiting for a payment, whose count
/// reached `limit` with these.
pub(super) async fn count_declines(
    tx: &mut PgConnection,
    declines: &BTreeSet<(Uuid, String)>,
    limit: i32,
) -> sqlx::Result<Vec<Uuid>> {
    if declines.is_empty() {
        return Ok(Vec::new());
    }
    let (donations, charges): (Vec<Uuid>, Vec<String>) = declines.iter().cloned().unzip();
    let counted = sqlx::query!(
        r#"WITH new AS (
               INSERT INTO payment_declines (donation_id, charge_id)
               SELECT * FROM unnest($1::uuid[], $2::text[])
               ON CONFLICT DO NOTHING
               RETURNING donation_id),
           counts AS (SELECT donation_id, count(*)::int AS n FROM new GROUP BY donation_id)
           UPDATE donations d SET declines = d.declines + c.n
           FROM counts c WHERE d.id = c.donation_id
           RETURNING d.id, c.n AS "new!", d.declines, d.status, d.donor_email, d.client_key"#,
        &donations,
        &charges
    )
    .fetch_all(&mut *tx)
    .await?;
    let keys: Vec<(Vec<u8>, Option<Vec<u8>>)> = counted
        .iter()
        .flat_map(|row| {
            let key = (
                crate::donations::limits::email_key(&row.donor_email),
                row.client_key.clone(),
            );
            std::iter::repeat_n(key, usize::try_from(row.new).unwrap_or(0))
        })
        .collect();
    if !keys.is_empty() {
        crate::donations::limits::count_declines(tx, &keys).await?;
    }
    Ok(counted
        .into_iter()
        .filter(|row| row.declines >= limit && row.declines - row.new < limit)
        .filter(|row| matches!(row.status.as_str(), "pending" | "failed"))
        .map(|row| row.id)
        .collect())
}
