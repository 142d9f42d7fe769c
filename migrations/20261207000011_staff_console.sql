-- The finance staff's console: staff accounts signed in with passkeys (WebAuthn), their one-time
-- enrolment links, the passkeys themselves, the ceremonies between a challenge and its answer,
-- sessions, and the log of every sign-in, failure and sign-out.

-- A person. `id` is also the WebAuthn user handle their passkeys carry. Names are never reused
-- (a revoked account keeps its row), so the audit log's `staff:<name>` stays unambiguous.
CREATE TABLE staff (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role       text NOT NULL CHECK (role IN ('finance', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- A link that registers a passkey, once, before it expires. Only its SHA-256 is kept.
CREATE TABLE staff_enrolments (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    staff_id   uuid NOT NULL REFERENCES staff (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX staff_enrolments_staff_idx ON staff_enrolments (staff_id);

-- A passkey: webauthn-rs's `Passkey` (its public key and counter; no secret), by its credential
-- id, which no two accounts may share.
CREATE TABLE staff_passkeys (
    credential_id bytea PRIMARY KEY,
    staff_id      uuid NOT NULL REFERENCES staff (id),
    passkey       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX staff_passkeys_staff_idx ON staff_passkeys (staff_id);

-- A ceremony's server-side state between its challenge and the browser's answer, so any
-- instance can finish it, and only once (`finished_at`). Kept a day: sign-in attempts are
-- counted by the client's address from these rows.
CREATE TABLE staff_ceremonies (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('enrol', 'sign-in')),
    staff_id    uuid REFERENCES staff (id),
    enrolment   bytea REFERENCES staff_enrolments (token_hash),
    state       jsonb,
    client_ip   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX staff_ceremonies_client_idx ON staff_ceremonies (client_ip, created_at);
CREATE INDEX staff_ceremonies_created_idx ON staff_ceremonies (created_at);

-- A signed-in browser. Only the SHA-256 of its cookie is kept; its CSRF token is sent in every
-- form and state-changing request.
CREATE TABLE staff_sessions (
    token_hash   bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    staff_id     uuid NOT NULL REFERENCES staff (id),
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    ended_why    text CHECK (ended_why IN ('signed out', 'revoked', 'idle', 'too old'))
);
CREATE INDEX staff_sessions_live_idx ON staff_sessions (staff_id) WHERE ended_at IS NULL;

-- Every invitation, enrolment, sign-in, failure, sign-out and revocation. Append-only, like
-- the finance audit log.
CREATE TABLE staff_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    name      text NOT NULL,
    what      text NOT NULL,
    detail    text NOT NULL DEFAULT '',
    client_ip text
);
CREATE INDEX staff_log_at_idx ON staff_log (at, id);

CREATE FUNCTION staff_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the staff log is append-only: % of staff_log is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER staff_log_no_update BEFORE UPDATE OR DELETE ON staff_log
    FOR EACH ROW EXECUTE FUNCTION staff_log_is_append_only();
CREATE TRIGGER staff_log_no_truncate BEFORE TRUNCATE ON staff_log
    FOR EACH STATEMENT EXECUTE FUNCTION staff_log_is_append_only();
