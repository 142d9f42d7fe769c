-- Which instances are alive, by a lease each renews while it runs, instead of by their sessions
-- in pg_stat_activity: behind a connection pooler (PgBouncer, RDS Proxy) a session is not an
-- instance, and an instance alive could be taken for dead, its claims released mid-work.
-- A claim (an event's, a receipt's) names its instance; it is released early only once that
-- instance's lease has run out, or the instance left (a clean shutdown deletes its row).
CREATE TABLE instances (
    name        text PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    alive_until timestamptz NOT NULL
);
