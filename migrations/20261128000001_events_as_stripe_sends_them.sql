-- Events as Stripe really sends them: kept byte for byte, grouped by the payment they are
-- about, claimed by one worker at a time, and set aside when they keep failing.

-- The body exactly as Stripe signed it. jsonb refuses some valid JSON (a \u0000 in a text
-- field) and reorders keys; the signed text is the record.
ALTER TABLE stripe_events ALTER COLUMN payload TYPE text USING payload::text;

-- The object an event is about, for grouping: the PaymentIntent for a payment, its charges,
-- refunds and disputes; failing that the charge; failing that the object itself. Every event
-- for one payment shares a key, so one worker merges them together.
ALTER TABLE stripe_events ADD COLUMN object_key text;
UPDATE stripe_events SET object_key = coalesce(
    CASE WHEN payload::jsonb #>> '{data,object,object}' = 'payment_intent'
         THEN payload::jsonb #>> '{data,object,id}' END,
    payload::jsonb #>> '{data,object,payment_intent}',
    payload::jsonb #>> '{data,object,charge}',
    object_id);

-- A worker's claim: the events it took, until when. Nothing is locked while Stripe is called;
-- a worker that dies leaves a claim that runs out.
ALTER TABLE stripe_events
    ADD COLUMN claimed_by    uuid,
    ADD COLUMN claimed_until timestamptz;

-- failed: applying kept failing; set aside (a dead letter) until an operator replays it.
ALTER TABLE stripe_events DROP CONSTRAINT stripe_events_state_check;
ALTER TABLE stripe_events ADD CONSTRAINT stripe_events_state_check
    CHECK (state IN ('pending', 'applied', 'ignored', 'failed'));

-- Which payments are held by a worker: only claimed events are in it (an outcome ends the
-- claim), so it stays as small as the batches in hand, and a claim costs what its batch
-- does, whatever the backlog.
CREATE INDEX stripe_events_claimed_idx ON stripe_events (object_key)
    WHERE claimed_until IS NOT NULL;
-- The events set aside as not ours, which a newly linked payment makes ours after all.
CREATE INDEX stripe_events_ignored_idx ON stripe_events (object_key) WHERE state = 'ignored';

ALTER TABLE donations
    -- The currency of amount_received, as Stripe reports it.
    ADD COLUMN received_currency   text,
    -- The currency Stripe settled the gift in (the balance transaction's), for fee and net.
    ADD COLUMN settlement_currency text,
    -- When we last read the payment from Stripe ourselves (our clock): snapshots older than
    -- this add nothing a fetch did not already bring.
    ADD COLUMN stripe_synced_at    timestamptz,
    -- Why an operator should look at this donation (what Stripe received differs from the gift).
    ADD COLUMN flag                text;

-- A dispute's status moves by rank (an inquiry, a closed inquiry, a chargeback, its outcome),
-- ties going to the later event; its money moves only through its balance transactions.
ALTER TABLE disputes
    ADD COLUMN status_at timestamptz,
    DROP COLUMN balance_transaction_count,
    DROP COLUMN fee;
UPDATE disputes SET status_at = updated_at, status_rank = CASE status
    WHEN 'warning_needs_response' THEN 1 WHEN 'warning_under_review' THEN 2
    WHEN 'warning_closed' THEN 3 WHEN 'prevented' THEN 3
    WHEN 'needs_response' THEN 4 WHEN 'under_review' THEN 5
    WHEN 'won' THEN 6 WHEN 'lost' THEN 6 ELSE 4 END;

-- Dispute statuses in the words the API shows (objects::DisputeStatus): an inquiry no longer
-- reads as the chargeback it may become, nor a closed one as won.
ALTER TABLE donations DROP CONSTRAINT donations_dispute_status_check;
UPDATE donations d SET dispute_status = (
    SELECT CASE x.status
        WHEN 'warning_needs_response' THEN 'inquiry' WHEN 'warning_under_review' THEN 'inquiry'
        WHEN 'warning_closed' THEN 'inquiry_closed' WHEN 'prevented' THEN 'prevented'
        WHEN 'needs_response' THEN 'needs_response' WHEN 'under_review' THEN 'under_review'
        WHEN 'won' THEN 'won' WHEN 'lost' THEN 'lost' ELSE 'open' END
    FROM disputes x WHERE x.donation_id = d.id
    ORDER BY x.status_rank DESC, x.status_at DESC LIMIT 1)
WHERE d.dispute_status IS NOT NULL;
ALTER TABLE donations ADD CONSTRAINT donations_dispute_status_check
    CHECK (dispute_status IN ('inquiry', 'inquiry_closed', 'prevented', 'needs_response',
                              'under_review', 'won', 'lost', 'open'));

-- The money a dispute moved: the withdrawal (the disputed amount and the dispute fee) and any
-- reinstatement. Balance transactions never change, so a row is written once.
CREATE TABLE dispute_balance_transactions (
    id                 text PRIMARY KEY,
    dispute_id         text NOT NULL REFERENCES disputes (id),
    donation_id        uuid NOT NULL REFERENCES donations (id),
    amount             bigint NOT NULL,
    fee                bigint NOT NULL,
    net                bigint NOT NULL,
    currency           text NOT NULL,
    reporting_category text,
    created            timestamptz
);
CREATE INDEX dispute_balance_transactions_donation_idx ON dispute_balance_transactions (donation_id);
