-- Gift Aid: declarations as records of their own, and claims to HMRC that never take a
-- donation twice.

-- A declaration is the donor's, not one donation's: HMRC's model one-off wording covers "this
-- gift, any made in the past 4 years, and any in the future" until the donor cancels it. It
-- keeps the donor's name and address as declared, for the schedule.
-- donation_id: the donation it was made with on the donation form (null for one made another
-- way); the donation's link to its declaration.
ALTER TABLE gift_aid_declarations DROP CONSTRAINT gift_aid_declarations_pkey;
ALTER TABLE gift_aid_declarations
    ADD COLUMN id           uuid,
    ADD COLUMN donor_email  text,
    ADD COLUMN first_name   text,
    ADD COLUMN last_name    text,
    ADD COLUMN covers_from  timestamptz,
    ADD COLUMN cancelled_at timestamptz;

UPDATE gift_aid_declarations g
SET id = gen_random_uuid(),
    donor_email = d.donor_email,
    first_name = d.donor_first_name,
    last_name = d.donor_last_name,
    covers_from = g.declared_at - interval '4 years'
FROM donations d
WHERE d.id = g.donation_id;

ALTER TABLE gift_aid_declarations
    ALTER COLUMN id SET NOT NULL,
    ADD PRIMARY KEY (id),
    ALTER COLUMN donation_id DROP NOT NULL,
    ADD CONSTRAINT gift_aid_declarations_donation_key UNIQUE (donation_id),
    ALTER COLUMN donor_email SET NOT NULL,
    ALTER COLUMN first_name SET NOT NULL,
    ALTER COLUMN last_name SET NOT NULL,
    ALTER COLUMN covers_from SET NOT NULL,
    ALTER COLUMN declared_at DROP DEFAULT,
    ADD CONSTRAINT gift_aid_declarations_covers_check CHECK (covers_from <= declared_at),
    ADD CONSTRAINT gift_aid_declarations_cancelled_check
        CHECK (cancelled_at IS NULL OR cancelled_at >= declared_at);

-- A donation finds its donor's declarations by email, whatever its case.
CREATE INDEX gift_aid_declarations_donor_idx ON gift_aid_declarations (lower(donor_email));

-- A claim: one schedule (at most 1,000 lines) sent to HMRC, who made it, and the range and
-- part of the schedule it was made from.
CREATE TABLE gift_aid_claims (
    id         uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    range_from timestamptz NOT NULL,
    range_to   timestamptz NOT NULL,
    part       integer NOT NULL CHECK (part >= 1),
    -- Gift Aid is claimed on sterling gifts only; every amount below is in pence.
    currency   text NOT NULL DEFAULT 'gbp' CHECK (currency = 'gbp'),
    CHECK (range_from <= range_to)
);

-- The claim's schedule, line by line, exactly as it was claimed (the cells HMRC got), so the
-- claim reads the same whatever happens to its donations or declarations afterwards.
CREATE TABLE gift_aid_claim_lines (
    claim_id             uuid NOT NULL REFERENCES gift_aid_claims (id),
    line                 integer NOT NULL CHECK (line BETWEEN 1 AND 1000),
    title                text NOT NULL,
    first_name           text NOT NULL,
    last_name            text NOT NULL,
    house_name_or_number text NOT NULL,
    postcode             text NOT NULL,
    aggregated_donations text NOT NULL,
    sponsored_event      text NOT NULL,
    donation_date        date NOT NULL,
    amount               bigint NOT NULL CHECK (amount > 0 AND amount <= 100000000),
    PRIMARY KEY (claim_id, line)
);

-- Every donation a claim took, on its line. The primary key is what makes a donation claimed
-- at most once, ever: a second claim of it, even one running at the same moment, is refused
-- by the database.
CREATE TABLE gift_aid_claimed_donations (
    donation_id uuid PRIMARY KEY REFERENCES donations (id),
    claim_id    uuid NOT NULL,
    line        integer NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    FOREIGN KEY (claim_id, line) REFERENCES gift_aid_claim_lines (claim_id, line)
);
CREATE INDEX gift_aid_claimed_donations_claim_idx ON gift_aid_claimed_donations (claim_id);

-- A claimed donation since refunded or disputed: the Gift Aid claimed on it is over-claimed,
-- and the next claim adjusts for it, once (the primary key).
CREATE TABLE gift_aid_adjustments (
    donation_id uuid PRIMARY KEY REFERENCES gift_aid_claimed_donations (donation_id),
    -- The claim that carries the adjustment (the one that claimed it is on the claimed row).
    claim_id    uuid NOT NULL REFERENCES gift_aid_claims (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    reason      text NOT NULL CHECK (reason IN ('refunded', 'disputed'))
);
CREATE INDEX gift_aid_adjustments_claim_idx ON gift_aid_adjustments (claim_id);
