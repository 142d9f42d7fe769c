-- Finding a donation by what a donor or Stripe's dashboard gives finance staff: an email or a
-- name in any case, or a charge (the PaymentIntent and the id are unique already). Each search of
-- `GET /v1/finance/donations?q=` is an exact match on one of these.
CREATE INDEX donations_email_search_idx ON donations (lower(donor_email));
CREATE INDEX donations_surname_search_idx ON donations (lower(donor_last_name));
CREATE INDEX donations_name_search_idx
    ON donations (lower(donor_first_name || ' ' || donor_last_name));

-- A donation's events (`GET /v1/finance/donations/{id}`, the console's donation page): every
-- event of one payment shares its `object_key` (its PaymentIntent, else its charge), so the
-- payment's events are one index lookup rather than a read of the whole log. One more index
-- for the webhook's insert to keep: the price of seeing a donation's history at once.
CREATE INDEX stripe_events_object_key_idx ON stripe_events (object_key);
