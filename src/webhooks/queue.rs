//! The worker's queue in `stripe_events`: due events are claimed for a while (a lease, not a
//! lock held open), one payment at a time per worker, and each claimed event leaves with an
//! outcome. Nothing is locked while Stripe is called.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// Claims are made one at a time across every instance (a transaction-scoped advisory lock),
/// so two workers never claim events of the same payment: one worker merges a payment's
/// events, calls Stripe for it at most once, and no two workers wait on its row.
const CLAIM_LOCK: i64 = 0x7175_6963_6b64_6f6e; // "quickdon"

/// The advisory locks' first key for payments (the second is the hash of the payment's
/// `object_key`), a key space apart from [`CLAIM_LOCK`]'s.
const PAYMENT_LOCKS: i32 = 0x7164_7079; // "qdpy"

/// A claimed event, as stored.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub created: OffsetDateTime,
    pub payload: String,
    pub object_key: Option<String>,
}

/// The events one worker holds, and its token on them.
#[derive(Debug)]
pub struct Claim {
    pub token: Uuid,
    pub events: Vec<Claimed>,
}

/// Claims up to `batch` due events whose payments no other worker holds, for `lease`. A
/// worker that dies leaves its claim to run out; its events are then due again.
/// The claim names `instance`, so that another instance releases it early only once this one's
/// lease has run out ([`release_orphaned`]).
pub async fn claim(
    db: &PgPool,
    instance: &str,
    batch: i64,
    lease: Duration,
) -> sqlx::Result<Claim> {
    let token = Uuid::new_v4();
    let mut tx = db.begin().await?;
    // A claim is only a lease: if a crash loses it, its events are simply due again (and a
    // Stripe read made meanwhile is made once more). So its commit does not wait for the disk,
    // and the claim lock, which every worker of every instance queues for, is not held through
    // a WAL flush. Whatever the batch then applies is committed durably, and that flush carries
    // the claim's record with it.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock($1), set_config('synchronous_commit', 'off', true) AS commits",
        CLAIM_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    let events = lock_due(&mut tx, batch).await?;
    if !events.is_empty() {
        // A claimed event is due again only when its claim runs out (next_attempt_at is the
        // end of the claim), so other workers' scans never wade through it.
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        sqlx::query!(
            r#"UPDATE stripe_events
               SET claimed_by = $2, claimed_until = now() + make_interval(secs => $3),
                   next_attempt_at = now() + make_interval(secs => $3),
                   claimed_instance = $4
               WHERE id = ANY($1)"#,
            &ids as &[&str],
            token,
            lease.as_secs_f64(),
            instance
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Claim { token, events })
}

/// Locks up to `batch` due events, oldest first, whose payments no worker holds a claim on,
/// for the transaction `tx` alone, writing nothing: the worker applies them in that same
/// transaction when none needs Stripe, so they are written once (pending to applied), and
/// [`claim`] claims them otherwise. The due index gives the oldest due events in order and the
/// claimed index says, per event, whether its payment is held: this reads about as many rows
/// as it takes, whatever the backlog. The best plan depends on the backlog, which can grow from
/// nothing to tens of thousands of events within a minute, before statistics catch up: it is
/// planned afresh each time rather than with a plan made when the table was empty (seen to
/// take seconds).
pub async fn lock_due(tx: &mut PgConnection, batch: i64) -> sqlx::Result<Vec<Claimed>> {
    // Nor in parallel: with statistics behind the table's growth, the check of claimed
    // payments below was planned with two parallel workers, whose start and stop cost 15 ms
    // against 0.4 ms for the same read done alone (BENCHMARKS.md).
    sqlx::query!(
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true) AS plans,
                set_config('max_parallel_workers_per_gather', '0', true) AS workers"
    )
    .fetch_one(&mut *tx)
    .await?;
    // One worker at a time per payment, across instances: each payment's key is taken with a
    // transaction-scoped advisory lock, never waited for (a payment another transaction is
    // applying at once, or claiming, is left for later).
    let mut events = sqlx::query_as!(
        Claimed,
        r#"WITH due AS (
               SELECT e.id, e.type AS kind, e.created, e.payload, e.object_key
               FROM stripe_events e
               WHERE e.state = 'pending' AND e.next_attempt_at <= now()
                 AND NOT EXISTS (
                     SELECT 1 FROM stripe_events o
                     WHERE o.object_key = e.object_key AND o.claimed_until >= now())
               ORDER BY e.next_attempt_at, e.created
               LIMIT $1
               FOR UPDATE OF e SKIP LOCKED)
           SELECT id AS "id!", kind AS "kind!", created AS "created!", payload AS "payload!",
                  object_key
           FROM due
           WHERE pg_try_advisory_xact_lock($2, hashtext(coalesce(object_key, id)))"#,
        batch,
        PAYMENT_LOCKS
    )
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        return Ok(events);
    }
    // A claim committed after the statement above began, and its lock let go with its
    // transaction: read anew which of these payments are claimed now, and leave them.
    let keys: Vec<&str> = events
        .iter()
        .filter_map(|e| e.object_key.as_deref())
        .collect();
    let claimed: Vec<String> = sqlx::query_scalar!(
        r#"SELECT DISTINCT object_key AS "key!" FROM stripe_events
           WHERE object_key = ANY($1) AND claimed_until >= now()"#,
        &keys as &[&str]
    )
    .fetch_all(&mut *tx)
    .await?;
    events.retain(|e| !e.object_key.as_ref().is_some_and(|k| claimed.contains(k)));
    Ok(events)
}

/// Releases the claims of instances whose lease has run out or was given up (see
/// `db::Instance`): their events are due again at once instead of when the claim's own lease
/// runs out. An instance taken for dead while alive (its heartbeats lost for a whole lease)
/// loses nothing but time: its batch finds the claim no longer its own and writes nothing, and
/// the events are applied afresh.
pub async fn release_orphaned(db: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE stripe_events
           SET next_attempt_at = now(), claimed_by = NULL, claimed_until = NULL,
               claimed_instance = NULL
           WHERE claimed_until IS NOT NULL AND claimed_instance IS NOT NULL
             AND claimed_instance NOT IN (SELECT name FROM instances WHERE alive_until > now())"#
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// What became of each claimed event.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub applied: Vec<String>,
    /// Stored, never to be applied, with the reason.
    pub ignored: Vec<(String, String)>,
    /// Tried and failed; tried again later, or set aside once it has failed too often.
    pub failed: Vec<Failure>,
    /// Not tried this time (the batch ran out of time for Stripe); due again at once.
    pub released: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub id: String,
    pub error: String,
    /// Whether the event itself is at fault (unreadable, refused by Stripe), so that failing
    /// often sets it aside. Stripe or the database being away is never the event's fault.
    pub poison: bool,
    /// The least wait before the next attempt, whatever the back-off says: a pause Stripe
    /// asked for, or the one we keep when it was away (zero otherwise).
    pub wait: Duration,
}

impl Outcomes {
    /// Adds a copy of `other`'s outcomes to these.
    pub fn absorb(&mut self, other: &Outcomes) {
        self.applied.extend(other.applied.iter().cloned());
        self.ignored.extend(other.ignored.iter().cloned());
        self.failed.extend(other.failed.iter().cloned());
        self.released.extend(other.released.iter().cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
            && self.ignored.is_empty()
            && self.failed.is_empty()
            && self.released.is_empty()
    }
}

/// Locks this claim's events for the closing transaction; false if the claim ran out and
/// another worker took any of them (then this worker must not write their outcome).
pub async fn still_ours(tx: &mut PgConnection, token: Uuid, ids: &[String]) -> sqlx::Result<bool> {
    let held = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM (
               SELECT id FROM stripe_events WHERE id = ANY($1) AND claimed_by = $2
               ORDER BY id FOR UPDATE) held"#,
        ids,
        token
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(usize::try_from(held).ok() == Some(ids.len()))
}

/// Writes the outcomes and ends the claim `token` on those events (or, with `None`, on events
/// this transaction holds locked: see [`lock_due`]). A failure is due again after
/// 2^attempts seconds (at most an hour), or after its `wait` if that is longer; a poison event that has failed `max_attempts` times
/// is set aside as `failed` for an operator.
pub async fn record(
    tx: &mut PgConnection,
    token: Option<Uuid>,
    outcomes: &Outcomes,
    max_attempts: i32,
) -> sqlx::Result<()> {
    if !outcomes.applied.is_empty() {
        sqlx::query!(
            r#"UPDATE stripe_events
               SET state = 'applied', applied_at = now(), attempts = attempts + 1,
                   last_error = NULL, claimed_by = NULL, claimed_until = NULL
               WHERE id = ANY($1) AND ($2::uuid IS NULL OR claimed_by = $2)"#,
            &outcomes.applied,
            token
        )
        .execute(&mut *tx)
        .await?;
    }
    if !outcomes.ignored.is_empty() {
        let (ids, reasons): (Vec<String>, Vec<String>) = outcomes.ignored.iter().cloned().unzip();
        sqlx::query!(
            r#"UPDATE stripe_events e
               SET state = 'ignored', attempts = e.attempts + 1, last_error = u.reason,
                   claimed_by = NULL, claimed_until = NULL
               FROM unnest($1::text[], $2::text[]) AS u(id, reason)
               WHERE e.id = u.id AND ($3::uuid IS NULL OR e.claimed_by = $3)"#,
            &ids,
            &reasons,
            token
        )
        .execute(&mut *tx)
        .await?;
    }
    if !outcomes.failed.is_empty() {
        let ids: Vec<String> = outcomes.failed.iter().map(|f| f.id.clone()).collect();
        let errors: Vec<String> = outcomes.failed.iter().map(|f| f.error.clone()).collect();
        let poison: Vec<bool> = outcomes.failed.iter().map(|f| f.poison).collect();
        let waits: Vec<f64> = outcomes
            .failed
            .iter()
            .map(|f| f.wait.as_secs_f64())
            .collect();
        sqlx::query!(
            r#"UPDATE stripe_events e
               SET attempts = e.attempts + 1, last_error = u.error,
                   state = CASE WHEN u.poison AND e.attempts + 1 >= $5 THEN 'failed'
                                ELSE 'pending' END,
                   next_attempt_at = now()
                       + make_interval(secs => greatest(
                             least(power(2, least(e.attempts, 12)), 3600), u.wait)),
                   claimed_by = NULL, claimed_until = NULL
               FROM unnest($1::text[], $2::text[], $3::bool[], $4::float8[])
                    AS u(id, error, poison, wait)
               WHERE e.id = u.id AND ($6::uuid IS NULL OR e.claimed_by = $6)"#,
            &ids,
            &errors,
            &poison,
            &waits,
            max_attempts,
            token
        )
        .execute(&mut *tx)
        .await?;
    }
    if !outcomes.released.is_empty()
        && let Some(token) = token
    {
        release(&mut *tx, token, &outcomes.released).await?;
    }
    Ok(())
}

/// Ends the claim on `ids` without an outcome: they are due again at once.
pub async fn release(db: &mut PgConnection, token: Uuid, ids: &[String]) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE stripe_events
           SET next_attempt_at = now(), claimed_by = NULL, claimed_until = NULL
           WHERE id = ANY($1) AND claimed_by = $2"#,
        ids,
        token
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The reason every event set aside as not ours starts with.
pub const NOT_OURS: &str = "not ours: ";

/// Queues again the events of `keys` that were set aside as not ours: their payment has just
/// been linked to a donation (the create flow's own write of the link was lost, and a later
/// event named the donation), so they are ours after all.
pub async fn requeue_not_ours(tx: &mut PgConnection, keys: &[String]) -> sqlx::Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query!(
        r#"UPDATE stripe_events
           SET state = 'pending', next_attempt_at = now(), last_error = NULL
           WHERE object_key = ANY($1) AND state = 'ignored' AND starts_with(last_error, $2)"#,
        keys,
        NOT_OURS
    )
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}
