-- The finance audit log is append-only, as the ledger is: a row is never changed or removed.
-- A streamed export is recorded as two rows: one before its first byte (row_count 0), and one
-- when it ends, naming the first in `ends` and holding the rows actually sent.
ALTER TABLE finance_audit_log
    ADD COLUMN ends bigint UNIQUE REFERENCES finance_audit_log (id);

CREATE FUNCTION finance_audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the finance audit log is append-only: % of finance_audit_log is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER finance_audit_log_no_update BEFORE UPDATE OR DELETE ON finance_audit_log
    FOR EACH ROW EXECUTE FUNCTION finance_audit_log_is_append_only();
CREATE TRIGGER finance_audit_log_no_truncate BEFORE TRUNCATE ON finance_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION finance_audit_log_is_append_only();

-- Each read once: a streamed export with the row count of its end, if it has ended.
CREATE VIEW finance_reads AS
SELECT began.id, began.at, began.token_name, began.role, began.what, began.filters,
       coalesce(ended.row_count, began.row_count) AS row_count, ended.at AS ended_at
FROM finance_audit_log began
LEFT JOIN finance_audit_log ended ON ended.ends = began.id
WHERE began.ends IS NULL;
