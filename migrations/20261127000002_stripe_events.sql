-- Stripe's webhook events, stored before we answer 2xx and applied after; and the Stripe
-- facts that make a donation's state: payment status, fee, refunds, disputes.

CREATE TABLE stripe_events (
    id                text PRIMARY KEY,
    type              text NOT NULL,
    api_version       text,
    livemode          boolean NOT NULL,
    created           timestamptz NOT NULL,
    object_id         text,
    payload           jsonb NOT NULL,
    source            text NOT NULL CHECK (source IN ('webhook', 'backfill')),
    first_received_at timestamptz NOT NULL DEFAULT now(),
    last_received_at  timestamptz NOT NULL DEFAULT now(),
    delivery_count    integer NOT NULL DEFAULT 1,
    -- pending: to apply; applied: done; ignored: stored, never applied (unknown type, other
    -- mode, not one of ours), with the reason in last_error.
    state             text NOT NULL CHECK (state IN ('pending', 'applied', 'ignored')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    applied_at        timestamptz
);

-- The worker's queue: pending events in the order they are due.
CREATE INDEX stripe_events_due_idx ON stripe_events (next_attempt_at, created) WHERE state = 'pending';

ALTER TABLE donations
    -- The PaymentIntent's own status, as of payment_status_at (the Stripe event's time);
    -- `status` is derived from it and the refunds.
    ADD COLUMN payment_status         text NOT NULL DEFAULT 'pending'
        CHECK (payment_status IN ('pending', 'processing', 'succeeded', 'failed', 'canceled')),
    ADD COLUMN payment_status_at      timestamptz,
    ADD COLUMN charge_id              text,
    ADD COLUMN amount_received        bigint NOT NULL DEFAULT 0 CHECK (amount_received >= 0),
    ADD COLUMN balance_transaction_id text,
    ADD COLUMN fee                    bigint,
    ADD COLUMN net                    bigint,
    ADD COLUMN refunded_amount        bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    ADD COLUMN dispute_status         text
        CHECK (dispute_status IN ('needs_response', 'under_review', 'won', 'lost')),
    ADD COLUMN dispute_lost_amount    bigint NOT NULL DEFAULT 0 CHECK (dispute_lost_amount >= 0),
    ADD COLUMN dispute_fee            bigint NOT NULL DEFAULT 0,
    -- What this donation adds to its campaign's raised_amount right now.
    ADD COLUMN counted_amount         bigint NOT NULL DEFAULT 0 CHECK (counted_amount >= 0);

CREATE INDEX donations_charge_idx ON donations (charge_id);

CREATE TABLE refunds (
    id          text PRIMARY KEY,
    donation_id uuid NOT NULL REFERENCES donations (id),
    amount      bigint NOT NULL CHECK (amount >= 0),
    currency    text NOT NULL,
    status      text NOT NULL,
    -- Refund statuses only move up this rank: pending (1), succeeded (2), failed/canceled (3).
    status_rank smallint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_donation_idx ON refunds (donation_id);

CREATE TABLE disputes (
    id          text PRIMARY KEY,
    donation_id uuid NOT NULL REFERENCES donations (id),
    amount      bigint NOT NULL CHECK (amount >= 0),
    currency    text NOT NULL,
    status      text NOT NULL,
    -- needs_response (1), under_review (2), closed (3); ties go to the object with more
    -- balance transactions (a withdrawal, then a reinstatement).
    status_rank smallint NOT NULL,
    balance_transaction_count integer NOT NULL,
    fee         bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disputes_donation_idx ON disputes (donation_id);
