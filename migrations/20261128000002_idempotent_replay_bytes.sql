-- A replay must be the first answer byte for byte, and jsonb keeps neither key order nor
-- spacing: keep the exact text we sent. (Answers stored before this keep jsonb's rendering.)
ALTER TABLE idempotency_keys
    ALTER COLUMN response_body TYPE text USING response_body::text;
