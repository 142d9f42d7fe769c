-- Card-testing defence: each attempt to create a donation, counted per client address, donor
-- email and campaign over sliding windows, by every instance alike. Stored by a SHA-256 of
-- what is counted (never the address or email itself), and deleted once no window counts it.
CREATE TABLE donation_attempts (
    scope text NOT NULL CHECK (scope IN ('ip', 'email', 'campaign')),
    key   bytea NOT NULL,
    at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX donation_attempts_key_idx ON donation_attempts (scope, key, at);
CREATE INDEX donation_attempts_at_idx ON donation_attempts (at);

-- Once a cap refuses an address or an email, new donations from it must solve a captcha
-- (when one is configured) until `until`.
CREATE TABLE donation_challenges (
    key   bytea PRIMARY KEY,
    until timestamptz NOT NULL
);
