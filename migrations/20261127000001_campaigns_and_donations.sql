-- Campaigns, donations, Gift Aid declarations and our own idempotency keys.
-- Money is always a bigint of minor units beside a lower-case ISO 4217 currency code.

CREATE TABLE campaigns (
    slug              text PRIMARY KEY CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    title             text NOT NULL CHECK (title <> ''),
    currency          text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    suggested_amounts bigint[] NOT NULL DEFAULT '{}',
    min_amount        bigint NOT NULL CHECK (min_amount > 0),
    max_amount        bigint NOT NULL,
    goal_amount       bigint CHECK (goal_amount > 0),
    active            boolean NOT NULL DEFAULT true,
    -- What the charity keeps of succeeded gifts, and how many gifts count; kept up to date in
    -- the same transaction as every change to a donation, so reading a campaign scans nothing.
    raised_amount     bigint NOT NULL DEFAULT 0 CHECK (raised_amount >= 0),
    donation_count    bigint NOT NULL DEFAULT 0 CHECK (donation_count >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (max_amount >= min_amount)
);

CREATE TABLE donations (
    id                uuid PRIMARY KEY,
    campaign          text NOT NULL REFERENCES campaigns (slug),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'canceled', 'refunded')),
    frequency         text NOT NULL CHECK (frequency IN ('one_off')),
    amount            bigint NOT NULL CHECK (amount > 0),
    cover_fees_amount bigint NOT NULL CHECK (cover_fees_amount >= 0),
    total_amount      bigint NOT NULL,
    currency          text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    donor_email       text NOT NULL,
    donor_first_name  text NOT NULL,
    donor_last_name   text NOT NULL,
    anonymous         boolean NOT NULL DEFAULT false,
    payment_intent_id text UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (total_amount = amount + cover_fees_amount)
);

CREATE INDEX donations_campaign_idx ON donations (campaign);

-- Kept apart from the donation: it is the donor's address, needed only for the HMRC claim.
CREATE TABLE gift_aid_declarations (
    donation_id          uuid PRIMARY KEY REFERENCES donations (id),
    title                text,
    house_name_or_number text NOT NULL,
    postcode             text,
    country              text NOT NULL,
    declared_at          timestamptz NOT NULL DEFAULT now()
);

-- The Idempotency-Key of a POST, what the request was (a hash), and the first answer to it.
CREATE TABLE idempotency_keys (
    key             text PRIMARY KEY,
    fingerprint     bytea NOT NULL,
    donation_id     uuid REFERENCES donations (id),
    -- While set and in the future, a request with this key is being worked on.
    locked_until    timestamptz,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((response_status IS NULL) = (response_body IS NULL))
);
