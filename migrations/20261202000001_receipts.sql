-- Receipts, exactly once: an outbox of the emails owed to donors. A row is queued in the same
-- transaction that moves its donation (a thank-you when it first succeeds, a refund notice when
-- it is fully refunded), at most once per donation and kind; the sender loops deliver it.
--
-- No personal data is copied here: the donor's address and name are read from the donation
-- when the receipt is sent, so erasing a donor erases what a receipt would say.
CREATE TABLE receipts (
    id              uuid PRIMARY KEY,
    donation_id     uuid NOT NULL REFERENCES donations (id),
    kind            text NOT NULL CHECK (kind IN ('thank_you', 'refund_notice')),
    -- pending: owed; sent: handed to the mail server (or written as a file); failed: given up
    -- after too many attempts, for an operator; canceled: the donor's data was erased first.
    status          text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'sent', 'failed', 'canceled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A sender's lease: while claimed_until is in the future no other sender takes the row.
    claimed_by      text,
    claimed_until   timestamptz,
    -- The Message-ID every attempt of this receipt carries (derived from its id).
    message_id      text NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT receipts_once UNIQUE (donation_id, kind)
);
CREATE INDEX receipts_due_idx ON receipts (next_attempt_at) WHERE status = 'pending';
