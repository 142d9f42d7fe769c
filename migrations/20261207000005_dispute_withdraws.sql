-- Whether a dispute of this status holds the disputed money: from the chargeback until it is
-- won; an inquiry, or a dispute prevented, moves none; a status Stripe adds later is taken as an
-- open chargeback. The same rule as `DisputeStatus::withdraws` (src/payments/status.rs), for the
-- books' checks in SQL; a test compares the two for every status.
CREATE FUNCTION dispute_withdraws(status text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN status NOT IN ('warning_needs_response', 'warning_under_review', 'warning_closed',
                          'prevented', 'won');
