//! Group commit for webhook ingest: many requests' events, one durable commit.
//!
//! A verified event is handed to one of [`WRITERS`] writer tasks through a queue. A writer takes
//! every event waiting (at most [`MAX_GROUP`]) as one group and stores the group with one
//! multi-row `INSERT ... ON CONFLICT` (one statement, so one transaction and one WAL flush);
//! each request is answered only once that commit has returned. There is no timer: while a
//! writer waits for the disk, the next events gather in the queue, so the groups grow with the
//! load by themselves and a lone event is stored at once.
//!
//! - **Duplicates.** Copies of one event in a group are stored once (the first copy's answer
//!   says it is new, the others' that it is a redelivery) and all counted in
//!   `delivery_count`; a copy of an event stored before meets its row through `ON CONFLICT`.
//!   Rows are inserted in id order, so two groups holding the same events never wait on each
//!   other in a circle.
//! - **Failure.** If the commit fails, no event of the group is stored and every request in it
//!   is answered 503: Stripe delivers each again (a deadlock or serialization failure is first
//!   tried once more). If the database refused the statement for
//!   what one event holds (a value it cannot store), the group's events are stored again one
//!   by one, so only that event is refused and the others are not held hostage to it.
//! - **A crash** after the commit and before the answers leaves events stored that Stripe was
//!   never told of: it delivers them again, and a redelivery only counts (`delivery_count`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::log::Event;
use crate::db;
use crate::metrics::Metrics;

/// Groups stored at once per instance: while one waits for its commit, another gathers.
pub const WRITERS: usize = 2;
/// The most events one group holds.
pub const MAX_GROUP: usize = 512;
/// Events waiting for a writer before a request waits to join the queue.
const QUEUE: usize = 4 * MAX_GROUP;

/// Why an event was not stored; Stripe must deliver it again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotStored(String);

/// An event waiting for its group's commit, and where its answer goes.
struct Waiting {
    event: Event,
    ignore: Option<String>,
    answer: oneshot::Sender<Result<bool, NotStored>>,
}

/// The queue to the writers; cloning shares it.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Waiting>,
    metrics: Metrics,
}

impl Ingest {
    /// Starts the writers, which end once every clone of the returned queue is gone.
    pub fn start(db: PgPool, metrics: Metrics) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..WRITERS {
            tokio::spawn(writer(db.clone(), waiting.clone(), metrics.clone()));
        }
        Self { queue, metrics }
    }

    /// Stores `event` (to be applied unless `ignore` says why not) with the next group; returns
    /// once the group's commit has, with whether the event was new.
    pub async fn store(&self, event: Event, ignore: Option<String>) -> Result<bool, NotStored> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting {
                event,
                ignore,
                answer,
            })
            .await
            .map_err(|_| NotStored("the service is stopping".to_owned()))?;
        let _waiting = self.metrics.webhook_waiting();
        answered
            .await
            .map_err(|_| NotStored("the writer stopped before the commit".to_owned()))?
    }
}

/// Takes every event waiting as a group, stores it, answers each; until the queue closes.
async fn writer(db: PgPool, queue: Arc<Mutex<mpsc::Receiver<Waiting>>>, metrics: Metrics) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        // One writer gathers at a time; it lets go as soon as it has its group.
        if queue.lock().await.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        metrics.webhook_group(group.len());
        let mut stored = store(&db, &group).await;
        if let Err(error) = &stored
            && db::Failure::of(error) == db::Failure::Retry
        {
            // A deadlock with the worker's batch (a duplicate of an event it holds): the group
            // was rolled back whole; once more, as Postgres advises.
            stored = store(&db, &group).await;
        }
        match stored {
            Ok(new) => answer(group.drain(..), &new),
            Err(error) if db::Failure::of(&error) == db::Failure::Refused && group.len() > 1 => {
                tracing::warn!(%error, events = group.len(), "a group of webhook events was refused; storing its events one by one");
                for one in group.drain(..) {
                    match store(&db, std::slice::from_ref(&one)).await {
                        Ok(new) => answer(std::iter::once(one), &new),
                        Err(error) => refuse(std::iter::once(one), &error),
                    }
                }
            }
            Err(error) => refuse(group.drain(..), &error),
        }
    }
}

/// Answers each request of a stored group: whether its event was new.
fn answer(group: impl Iterator<Item = Waiting>, new: &BTreeMap<String, bool>) {
    let mut answered = HashSet::new();
    for waiting in group {
        let id = &waiting.event.id;
        let result = match new.get(id) {
            // Only the first copy of an event in the group is the one that made it new.
            Some(new) => Ok(*new && answered.insert(id.clone())),
            None => Err(NotStored(format!("{id} was not in the commit's answer"))),
        };
        // The request may have gone (its client hung up): the event is stored all the same.
        let _ = waiting.answer.send(result);
    }
}

/// Answers each request of a group that was not stored.
fn refuse(group: impl Iterator<Item = Waiting>, error: &sqlx::Error) {
    for waiting in group {
        let _ = waiting.answer.send(Err(NotStored(error.to_string())));
    }
}

/// Stores `group` in one statement; returns, for each distinct event id, whether it was new.
async fn store(db: &PgPool, group: &[Waiting]) -> sqlx::Result<BTreeMap<String, bool>> {
    // One row per event, in id order, with how many copies came.
    let mut distinct: BTreeMap<&str, (&Waiting, i32)> = BTreeMap::new();
    for waiting in group {
        distinct.entry(&waiting.event.id).or_insert((waiting, 0)).1 += 1;
    }
    let rows: Vec<(&Event, Option<&str>, i32)> = distinct
        .values()
        .map(|(w, copies)| (&w.event, w.ignore.as_deref(), *copies))
        .collect();
    let text = |f: fn(&Event) -> &str| rows.iter().map(|r| f(r.0)).collect::<Vec<_>>();
    let optional = |f: fn(&Event) -> Option<&str>| rows.iter().map(|r| f(r.0)).collect::<Vec<_>>();
    let stored = sqlx::query!(
        r#"INSERT INTO stripe_events (id, type, api_version, livemode, created, object_id,
                                      object_key, payload, source, state, last_error,
                                      delivery_count)
           SELECT id, type, api_version, livemode, created, object_id, object_key,
                  payload, 'webhook',
                  CASE WHEN ignore IS NULL THEN 'pending' ELSE 'ignored' END, ignore, copies
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[],
                       $6::text[], $7::text[], $8::text[], $9::text[], $10::int[])
                AS u(id, type, api_version, livemode, created, object_id, object_key, payload,
                     ignore, copies)
           ON CONFLICT (id) DO UPDATE
               SET last_received_at = now(),
                   delivery_count = stripe_events.delivery_count + EXCLUDED.delivery_count
           RETURNING id, (xmax = 0) AS "inserted!""#,
        &text(|e| &e.id) as &[&str],
        &text(|e| &e.kind) as &[&str],
        &optional(|e| e.api_version.as_deref()) as &[Option<&str>],
        &rows.iter().map(|r| r.0.livemode).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.0.created).collect::<Vec<_>>(),
        &optional(|e| e.object_id.as_deref()) as &[Option<&str>],
        &optional(|e| e.object_key.as_deref()) as &[Option<&str>],
        &text(|e| &e.payload) as &[&str],
        &rows.iter().map(|r| r.1).collect::<Vec<_>>() as &[Option<&str>],
        &rows.iter().map(|r| r.2).collect::<Vec<_>>(),
    )
    .fetch_all(db)
    .await?;
    Ok(stored
        .into_iter()
        .map(|row| (row.id, row.inserted))
        .collect())
}
