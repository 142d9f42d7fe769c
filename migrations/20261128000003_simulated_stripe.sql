-- The simulated Stripe's own objects (payments simulated: no Stripe key). They live here, not
-- in the process, so that a donation made before a restart can still be paid, and an event's
-- objects can still be fetched when it is applied or replayed later. Nothing of quickdonate's
-- reads these tables: only the simulator, through its Stripe-shaped API.
-- Each object is kept whole, as the JSON Stripe would send; the other columns are lookups.

CREATE TABLE simulator_payment_intents (
    id     text PRIMARY KEY,
    object jsonb NOT NULL
);

CREATE TABLE simulator_balance_transactions (
    id     text PRIMARY KEY,
    object jsonb NOT NULL
);

CREATE TABLE simulator_charges (
    id                text PRIMARY KEY,
    payment_intent_id text NOT NULL REFERENCES simulator_payment_intents (id),
    object            jsonb NOT NULL
);

CREATE TABLE simulator_refunds (
    id        text PRIMARY KEY,
    charge_id text NOT NULL REFERENCES simulator_charges (id),
    -- The order they were made: Stripe lists newest first, and `created` is only in seconds.
    seq       bigint GENERATED ALWAYS AS IDENTITY,
    object    jsonb NOT NULL
);
CREATE INDEX simulator_refunds_charge_idx ON simulator_refunds (charge_id, seq);

-- Every event the simulator made, for its events API (newest first).
CREATE TABLE simulator_events (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id      text NOT NULL UNIQUE,
    -- Unix seconds, as in the event.
    created bigint NOT NULL,
    event   jsonb NOT NULL
);

-- Stripe's idempotency: a key remembers the parameters of its first request, what it made,
-- and the answer it got, which a request with the same key and parameters gets again.
CREATE TABLE simulator_idempotency_keys (
    key               text PRIMARY KEY,
    params            jsonb NOT NULL,
    payment_intent_id text NOT NULL REFERENCES simulator_payment_intents (id),
    response          jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
