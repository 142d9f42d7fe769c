-- Payouts ready for the books: what the bank statement shows of each (its arrival date, the
-- trace id the bank can find it by, the statement descriptor), how it was paid (standard or
-- instant) and whether Stripe's schedule made it (a manual payout lists no transactions).
ALTER TABLE payouts
    ADD COLUMN trace_id             text,
    ADD COLUMN trace_status         text,
    ADD COLUMN statement_descriptor text,
    ADD COLUMN method               text,
    ADD COLUMN automatic            boolean;
CREATE INDEX payouts_arrival_idx ON payouts (arrival_date, id);

-- Which paid payout took each balance transaction to the bank, following a chain of failed
-- payouts to its end: a failed payout's money came back in its failure transaction, which a
-- later payout takes; if that one failed too, the one after it, and so on.
CREATE OR REPLACE VIEW paid_out_transactions AS
WITH RECURSIVE carried (payout_id, via, depth) AS (
    SELECT p.id, p.id, 0 FROM payouts p
    UNION
    SELECT c.payout_id, back.payout_id, c.depth + 1
    FROM carried c
    JOIN payouts failed ON failed.id = c.via AND failed.status IN ('failed', 'canceled')
    JOIN payout_transactions back
      ON back.balance_transaction_id = failed.failure_balance_transaction_id
    WHERE c.depth < 100
)
SELECT t.balance_transaction_id, p.id AS payout_id, p.created
FROM payout_transactions t
JOIN payouts own ON own.id = t.payout_id
JOIN carried c ON c.payout_id = t.payout_id
JOIN payouts p ON p.id = c.via AND p.status = 'paid'
WHERE c.depth = 0 OR t.balance_transaction_id IS DISTINCT FROM own.balance_transaction_id;
