-- Which paid payout took a balance transaction to the bank, the chain of failed payouts
-- followed by a function called only for a failed payout's transactions, so that a lookup of
-- one transaction (finance's donation rows, the overdue list, Gift Aid) reads its rows by
-- index instead of walking every payout (the recursive view of 20261207000008 did).

-- The payout that finally paid out what failed payout `failed` held: the one that took its
-- failure transaction, or, if that failed too, the one after it, and so on; null while none
-- has paid.
CREATE FUNCTION paid_out_by(failed text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (
        WITH RECURSIVE chain (id, status, depth) AS (
            SELECT p.id, p.status, 0 FROM payouts p WHERE p.id = failed
            UNION ALL
            SELECT next.id, next.status, c.depth + 1
            FROM chain c
            JOIN payouts f ON f.id = c.id
            JOIN payout_transactions back
              ON back.balance_transaction_id = f.failure_balance_transaction_id
            JOIN payouts next ON next.id = back.payout_id
            WHERE c.status IN ('failed', 'canceled') AND c.depth < 100
        )
        SELECT id FROM chain WHERE status = 'paid' ORDER BY depth LIMIT 1
    );

CREATE OR REPLACE VIEW paid_out_transactions AS
SELECT t.balance_transaction_id, p.id AS payout_id, p.created
FROM payout_transactions t
JOIN payouts p ON p.id = t.payout_id AND p.status = 'paid'
UNION ALL
SELECT t.balance_transaction_id, later.id, later.created
FROM payout_transactions t
JOIN payouts failed ON failed.id = t.payout_id AND failed.status IN ('failed', 'canceled')
JOIN payouts later ON later.id = paid_out_by(failed.id)
WHERE t.balance_transaction_id IS DISTINCT FROM failed.balance_transaction_id;
