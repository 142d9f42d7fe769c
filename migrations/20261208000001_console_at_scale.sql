-- Eligible Gift Aid is read by the day a gift succeeded (`gift_aid::store::gifts`: the
-- schedule of a period, and the gifts near or past HMRC's 4-year limit): an index of that day
-- for succeeded gifts lets a period's schedule read the period's gifts only, and the
-- overview's 4-year check the few days it asks about, instead of every donation ever made.
CREATE INDEX donations_succeeded_on_idx ON donations ((coalesce(payment_status_at, created_at)))
    WHERE payment_status = 'succeeded';
