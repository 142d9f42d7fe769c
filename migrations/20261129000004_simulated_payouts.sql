-- The simulated Stripe's payouts (payments simulated: no Stripe key), and which balance
-- transactions each one paid out, as Stripe's `GET /v1/balance_transactions?payout=po_...`
-- lists them. Only the simulator reads these tables.

CREATE TABLE simulator_payouts (
    id     text PRIMARY KEY,
    -- The order they were made: Stripe lists newest first, and `created` is only in seconds.
    seq    bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    object jsonb NOT NULL
);

-- The order transactions were made, for lists newest first; existing rows are numbered as
-- they lie. A transaction belongs to at most one payout: the one that paid it out (a payout's
-- own `payout` transaction belongs to it too). NULL: still in the balance.
ALTER TABLE simulator_balance_transactions
    ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    ADD COLUMN payout_id text REFERENCES simulator_payouts (id);
CREATE INDEX simulator_balance_transactions_payout_idx
    ON simulator_balance_transactions (payout_id, seq);
CREATE INDEX simulator_balance_transactions_unpaid_idx
    ON simulator_balance_transactions (seq) WHERE payout_id IS NULL;

-- Refunds made before refunds moved money get the balance transaction Stripe would have made
-- for them (its id derived from the refund's), so the balance they leave is what Stripe's would
-- be. A refund keeps its fields, with the ones Stripe's refund object also has.
INSERT INTO simulator_balance_transactions (id, object)
SELECT 'txn_sim_' || md5(r.id),
       jsonb_build_object(
           'id', 'txn_sim_' || md5(r.id), 'object', 'balance_transaction',
           'amount', -(r.object ->> 'amount')::bigint,
           'available_on', (r.object ->> 'created')::bigint,
           'created', (r.object ->> 'created')::bigint,
           'currency', r.object -> 'currency', 'description', 'REFUND FOR CHARGE (Donation)',
           'exchange_rate', NULL, 'fee', 0, 'fee_details', '[]'::jsonb,
           'net', -(r.object ->> 'amount')::bigint, 'reporting_category', 'refund',
           'source', r.id, 'status', 'available', 'type', 'refund')
FROM simulator_refunds r
WHERE NOT r.object ? 'balance_transaction'
ORDER BY r.seq;

UPDATE simulator_refunds
SET object = object || jsonb_build_object(
        'balance_transaction', 'txn_sim_' || md5(id),
        'failure_balance_transaction', NULL, 'failure_reason', NULL,
        'receipt_number', NULL, 'source_transfer_reversal', NULL, 'transfer_reversal', NULL)
WHERE NOT object ? 'balance_transaction';
