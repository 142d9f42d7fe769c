-- No fee left unknown: a succeeded donation whose fee no event brought (an endpoint that
-- receives only payment_intent.* events, say) has its charge and balance transaction fetched
-- from Stripe once, some minutes after it succeeded; when that was done.
ALTER TABLE donations ADD COLUMN fee_looked_up_at timestamptz;
CREATE INDEX donations_fee_unknown_idx ON donations (payment_status_at)
    WHERE payment_status = 'succeeded' AND fee IS NULL AND fee_looked_up_at IS NULL;
