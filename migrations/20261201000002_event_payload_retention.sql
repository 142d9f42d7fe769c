-- Donor data protected: a stored event's payload loses its personal data (billing details,
-- emails, names, addresses, dispute evidence) once it is applied or ignored and older than
-- EVENT_PAYLOAD_RETENTION, or when its donor is erased. Ids, amounts, currencies, statuses,
-- types and times stay, so `events show` and replays still work.

-- When the payload was stripped of personal data; NULL: still as Stripe sent it.
ALTER TABLE stripe_events ADD COLUMN personal_data_removed_at timestamptz;

-- The events still to strip, oldest first, for the housekeeping's batches.
CREATE INDEX stripe_events_unstripped_idx ON stripe_events (created)
    WHERE personal_data_removed_at IS NULL AND state IN ('applied', 'ignored');
