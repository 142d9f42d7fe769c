-- A fresh Idempotency-Key row names its donation in the same transaction that writes the
-- donation; check the reference when that transaction commits, not statement by statement.
ALTER TABLE idempotency_keys
    ALTER CONSTRAINT idempotency_keys_donation_id_fkey DEFERRABLE INITIALLY DEFERRED;
