-- Finance access: the bearer tokens of /v1/finance, and the log of every finance read.

-- A token is shown once, when it is made; only its SHA-256 is kept. Names are never reused (a
-- revoked token keeps its row, so the audit log's names stay unambiguous).
CREATE TABLE api_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No ':' in a token's name: the command line records its exports as `cli:<user>`.
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role       text NOT NULL CHECK (role IN ('finance', 'admin')),
    token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Who read what of the finance data, with which filters, and how many rows they got. Filters
-- are the request's query parameters only, never donor data. Rows are only ever added.
CREATE TABLE finance_audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_name text NOT NULL,
    role       text NOT NULL CHECK (role IN ('finance', 'admin')),
    what       text NOT NULL,
    filters    jsonb NOT NULL DEFAULT '{}',
    row_count  bigint NOT NULL CHECK (row_count >= 0),
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX finance_audit_log_at_idx ON finance_audit_log (at, id);

-- The finance lists page through donations in (created_at, id) order.
CREATE INDEX donations_created_idx ON donations (created_at, id);
