-- Gift Aid claims HMRC accepts, and a claim's whole life: prepared, then submitted (with HMRC's
-- reference), paid (the amount and day) or rejected (why), or void before submission. A claim
-- rejected or void releases its donations and the adjustments it carried for the next claim.

ALTER TABLE gift_aid_claims
    ADD COLUMN status text NOT NULL DEFAULT 'prepared'
        CHECK (status IN ('prepared', 'submitted', 'paid', 'rejected', 'void')),
    ADD COLUMN status_at timestamptz,
    ADD COLUMN hmrc_reference text,
    ADD COLUMN amount_paid bigint CHECK (amount_paid >= 0),
    ADD COLUMN paid_on date,
    ADD COLUMN rejection_reason text,
    -- HMRC's box 1 (D13): the earliest gift the claim takes, aggregated ones included.
    ADD COLUMN earliest_donation_date date,
    -- HMRC's box 2 (D17): the tax earlier claims overclaimed, in pence, which this one repays.
    ADD COLUMN overclaimed_tax bigint NOT NULL DEFAULT 0 CHECK (overclaimed_tax >= 0),
    -- An Idempotency-Key sent with the request that made it, and what that request was: the
    -- same key again answers this claim; with another request, it is refused.
    ADD COLUMN idempotency_key text UNIQUE,
    ADD COLUMN request_fingerprint bytea;

UPDATE gift_aid_claims k
SET status_at = k.created_at,
    earliest_donation_date = (SELECT min(l.donation_date) FROM gift_aid_claim_lines l
                              WHERE l.claim_id = k.id);

ALTER TABLE gift_aid_claims
    ALTER COLUMN status_at SET NOT NULL,
    ALTER COLUMN status_at SET DEFAULT now(),
    ADD CONSTRAINT gift_aid_claims_submitted_check
        CHECK (status NOT IN ('submitted', 'paid') OR hmrc_reference IS NOT NULL),
    ADD CONSTRAINT gift_aid_claims_paid_check
        CHECK ((status = 'paid') = (amount_paid IS NOT NULL AND paid_on IS NOT NULL)),
    ADD CONSTRAINT gift_aid_claims_rejected_check
        CHECK ((status = 'rejected') = (rejection_reason IS NOT NULL)),
    ADD CONSTRAINT gift_aid_claims_key_check
        CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL));

-- A donation is claimed at most once by a claim that stands: a rejected or void claim's
-- donations are released, and may be claimed again.
ALTER TABLE gift_aid_claimed_donations ADD COLUMN released boolean NOT NULL DEFAULT false;
ALTER TABLE gift_aid_adjustments DROP CONSTRAINT gift_aid_adjustments_donation_id_fkey;
ALTER TABLE gift_aid_claimed_donations DROP CONSTRAINT gift_aid_claimed_donations_pkey;
ALTER TABLE gift_aid_claimed_donations ADD PRIMARY KEY (claim_id, donation_id);
DROP INDEX gift_aid_claimed_donations_claim_idx;
CREATE UNIQUE INDEX gift_aid_claimed_once
    ON gift_aid_claimed_donations (donation_id) WHERE NOT released;

-- How much of a donation's gift (never its fee cover) the charity gave back: its succeeded
-- refunds and its chargebacks lost, taken off the fee cover first, as everywhere else. A
-- pending refund, a failed one, an inquiry and a chargeback won give nothing back.
CREATE FUNCTION gift_given_back(donation uuid) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (SELECT least(d.amount, greatest(0,
                       coalesce((SELECT sum(r.amount) FROM refunds r
                                 WHERE r.donation_id = d.id AND r.status = 'succeeded'), 0)
                     + coalesce((SELECT sum(x.amount) FROM disputes x
                                 WHERE x.donation_id = d.id AND x.status = 'lost'), 0)
                     - d.cover_fees_amount))::bigint
            FROM donations d WHERE d.id = donation);

-- An adjustment: part of a claimed gift given back since it was claimed (a succeeded refund,
-- a chargeback lost), its cause named, and the tax on it (25%), repaid through the claim that
-- carries it, once. A rejected or void carrying claim releases it for the next claim.
ALTER TABLE gift_aid_adjustments RENAME TO gift_aid_adjustments_before_20261207;
ALTER INDEX gift_aid_adjustments_claim_idx RENAME TO gift_aid_adjustments_before_claim_idx;
CREATE TABLE gift_aid_adjustments (
    -- The refund's or dispute's Stripe id.
    cause       text NOT NULL,
    cause_kind  text NOT NULL CHECK (cause_kind IN ('refund', 'dispute', 'before')),
    donation_id uuid NOT NULL,
    -- The claim that claimed the gift.
    claimed_in  uuid NOT NULL,
    -- The claim that repays it.
    carried_by  uuid NOT NULL REFERENCES gift_aid_claims (id),
    -- Pence of the claimed gift given back, and the tax on them.
    given_back  bigint NOT NULL CHECK (given_back > 0),
    tax         bigint NOT NULL CHECK (tax >= 0),
    released    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (carried_by, cause, claimed_in),
    FOREIGN KEY (claimed_in, donation_id)
        REFERENCES gift_aid_claimed_donations (claim_id, donation_id)
);
CREATE UNIQUE INDEX gift_aid_adjustments_once
    ON gift_aid_adjustments (cause, claimed_in) WHERE NOT released;
CREATE INDEX gift_aid_adjustments_donation_idx ON gift_aid_adjustments (donation_id);

-- Adjustments made before: the whole claimed gift, whatever was given back; kept as they were
-- carried, with their tax.
INSERT INTO gift_aid_adjustments (cause, cause_kind, donation_id, claimed_in, carried_by,
                                  given_back, tax)
SELECT 'before:' || a.donation_id, 'before', a.donation_id, c.claim_id, a.claim_id, a.amount,
       (a.amount + 2) / 4
FROM gift_aid_adjustments_before_20261207 a
JOIN gift_aid_claimed_donations c ON c.donation_id = a.donation_id;
UPDATE gift_aid_claims k
SET overclaimed_tax = coalesce((SELECT sum(a.tax) FROM gift_aid_adjustments a
                                WHERE a.carried_by = k.id), 0);
DROP TABLE gift_aid_adjustments_before_20261207;
