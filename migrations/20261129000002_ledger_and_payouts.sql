-- The ledger: every movement of money in our Stripe balance, as Stripe's balance transactions
-- record it, and the payouts that take it to the bank.

-- One row per movement. A balance transaction gives one row for what it moved and, when it
-- carries a fee, one for the fee: a gift's charge gives `gift` (the gross) and `stripe_fee`;
-- a dispute's withdrawal gives `dispute_withdrawal` and `dispute_fee`. Amounts are signed,
-- in minor units of `currency` (the settlement currency Stripe reports, which can differ from
-- the gift's): positive adds to the balance, negative takes from it. So a donation's net is
-- the sum of its rows, and a payout's transactions sum to what the ledger holds for them.
CREATE TABLE ledger_entries (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                   text NOT NULL CHECK (kind IN (
                               'gift', 'stripe_fee', 'refund', 'refund_failure',
                               'dispute_withdrawal', 'dispute_fee', 'dispute_reinstatement',
                               'payout', 'payout_failure')),
    amount                 bigint NOT NULL,
    currency               text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    balance_transaction_id text NOT NULL,
    -- The Stripe object that moved the money: the charge, refund, dispute or payout.
    source_id              text NOT NULL,
    donation_id            uuid REFERENCES donations (id),
    -- The donation's campaign, for summaries. No foreign key: the donation's own implies it,
    -- and one would make every worker share-lock the hot campaign row it updates last.
    campaign               text,
    -- When Stripe made the balance transaction, and when we wrote this row.
    occurred_at            timestamptz NOT NULL,
    recorded_at            timestamptz NOT NULL DEFAULT now(),
    -- A balance transaction never changes, so each of its movements is written once.
    UNIQUE (balance_transaction_id, kind),
    CHECK ((donation_id IS NULL) = (campaign IS NULL))
);
CREATE INDEX ledger_entries_donation_idx ON ledger_entries (donation_id) WHERE donation_id IS NOT NULL;
CREATE INDEX ledger_entries_campaign_idx ON ledger_entries (campaign, occurred_at) WHERE campaign IS NOT NULL;

-- Append-only: a row is never changed or removed; a correction is a new row.
CREATE FUNCTION ledger_entries_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % of ledger_entries is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_are_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_are_append_only();

-- Stripe's payouts, as their latest status says.
CREATE TABLE payouts (
    id                             text PRIMARY KEY,
    amount                         bigint NOT NULL,
    currency                       text NOT NULL,
    -- pending (1), in_transit (2), paid (3), failed or canceled (4): a payout marked paid can
    -- still fail, and nothing comes after a failure.
    status                         text NOT NULL,
    status_rank                    smallint NOT NULL,
    status_at                      timestamptz NOT NULL,
    arrival_date                   timestamptz,
    created                        timestamptz NOT NULL,
    balance_transaction_id         text,
    failure_balance_transaction_id text,
    reconciliation_status          text,
    -- When we last listed its balance transactions from Stripe, and whether Stripe had
    -- finished reconciling it then (the list is complete only once it has).
    listed_at                      timestamptz,
    listed_complete                boolean NOT NULL DEFAULT false,
    updated_at                     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payouts_created_idx ON payouts (created, id);

-- What Stripe says each payout contains, as it listed them: written once per transaction.
CREATE TABLE payout_transactions (
    payout_id              text NOT NULL REFERENCES payouts (id),
    balance_transaction_id text NOT NULL,
    type                   text NOT NULL,
    reporting_category     text,
    amount                 bigint NOT NULL,
    fee                    bigint NOT NULL,
    net                    bigint NOT NULL,
    currency               text NOT NULL,
    source_id              text,
    created                timestamptz,
    PRIMARY KEY (payout_id, balance_transaction_id)
);
CREATE INDEX payout_transactions_transaction_idx ON payout_transactions (balance_transaction_id);

-- The ledger is written from here on; what earlier versions recorded of each donation's
-- balance transactions (its charge's, and its disputes') is carried over, so that earlier
-- donations sum to their rows too. Refunds were recorded without their balance transactions,
-- so those have no rows here: replaying a refund's event (`quickdonate events replay evt_...`)
-- fetches the payment and writes them.
INSERT INTO ledger_entries (kind, amount, currency, balance_transaction_id, source_id,
                            donation_id, campaign, occurred_at)
SELECT 'gift', d.net + d.fee, d.settlement_currency, d.balance_transaction_id, d.charge_id,
       d.id, d.campaign, coalesce(d.payment_status_at, d.updated_at)
FROM donations d
WHERE d.balance_transaction_id IS NOT NULL AND d.charge_id IS NOT NULL
  AND d.settlement_currency IS NOT NULL AND d.fee IS NOT NULL AND d.net IS NOT NULL
UNION ALL
SELECT 'stripe_fee', -d.fee, d.settlement_currency, d.balance_transaction_id, d.charge_id,
       d.id, d.campaign, coalesce(d.payment_status_at, d.updated_at)
FROM donations d
WHERE d.balance_transaction_id IS NOT NULL AND d.charge_id IS NOT NULL
  AND d.settlement_currency IS NOT NULL AND d.fee IS NOT NULL AND d.fee <> 0
UNION ALL
SELECT CASE WHEN t.amount < 0 THEN 'dispute_withdrawal' ELSE 'dispute_reinstatement' END,
       t.amount, t.currency, t.id, t.dispute_id, t.donation_id, d.campaign,
       coalesce(t.created, d.updated_at)
FROM dispute_balance_transactions t JOIN donations d ON d.id = t.donation_id
UNION ALL
SELECT 'dispute_fee', -t.fee, t.currency, t.id, t.dispute_id, t.donation_id, d.campaign,
       coalesce(t.created, d.updated_at)
FROM dispute_balance_transactions t JOIN donations d ON d.id = t.donation_id
WHERE t.fee <> 0;

-- The ledger now holds what this table held.
DROP TABLE dispute_balance_transactions;

-- Which paid payout took each balance transaction to the bank. A failed payout's money came
-- back to the balance in its failure transaction, which a later payout takes: what the failed
-- payout held went to the bank with that later one.
CREATE VIEW paid_out_transactions AS
SELECT t.balance_transaction_id, p.id AS payout_id, p.created
FROM payout_transactions t
JOIN payouts p ON p.id = t.payout_id AND p.status = 'paid'
UNION ALL
SELECT t.balance_transaction_id, later.id, later.created
FROM payout_transactions t
JOIN payouts failed ON failed.id = t.payout_id AND failed.status IN ('failed', 'canceled')
JOIN payout_transactions back ON back.balance_transaction_id = failed.failure_balance_transaction_id
JOIN payouts later ON later.id = back.payout_id AND later.status = 'paid'
WHERE t.balance_transaction_id IS DISTINCT FROM failed.balance_transaction_id;
