-- Finding a donation by what a donor or Stripe's dashboard gives finance staff: an email or a
-- name in any case, or a charge (the PaymentIntent and the id are unique already). Each search of
-- `GET /v1/finance/donations?q=` is an exact match on one of these.
CREATE INDEX donations_email_search_idx ON donations (lower(donor_email));
CREATE INDEX donations_surname_search_idx ON donations (lower(donor_last_name));
CREATE INDEX donations_name_search_idx
    ON donations (lower(donor_first_name || ' ' || donor_last_name));
