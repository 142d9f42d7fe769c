//! The worker: applies stored events in the background, a batch at a time, in three steps.
//!
//! 1. **Claim** due events for a while (a lease written in one short transaction), never two
//!    workers on one payment ([`queue`]).
//! 2. **Plan and fetch**, holding nothing in the database: read the events' facts, find their
//!    donations, and fetch from Stripe what a payment refers to and lacks ([`plan`]), at most
//!    once per payment and with a few calls in flight at once. A slow or failing Stripe delays
//!    only the events that need it; redeliveries, donation creation and readiness never wait
//!    on it.
//! 3. **Apply** everything in one short transaction ([`apply`]), with each event's outcome and
//!    the campaigns' totals. A deadlock or serialization failure is retried at once. Any other
//!    failure is kept to its payment: the batch is applied again one payment per transaction,
//!    and the failing payment's events are retried with back-off, then set aside as `failed`
//!    (a dead letter) if the event itself is at fault. Several instances may share a database.
//!
//! Most batches need nothing from Stripe; such a batch is applied **at once** instead: its
//! events, and each of their payments (an advisory lock per payment), are held for one
//! transaction that plans and applies them, with no claim written ([`Worker::apply_at_once`]).
//! Either way one payment is in the hands of one worker at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::apply::{self, Applied, Fetched};
use super::batch::{Batch, outcome_ids, outcomes_of};
use super::fetch::Fetcher;
use super::plan::{self, Payment};
use super::queue::{self, Claim, Failure, Outcomes};
use crate::campaigns::cache::CampaignCache;
use crate::db::{self, Instance};
use crate::donations::abandoned::Abandoned;
use crate::finance::payouts::{self, PayoutWork};
use crate::metrics::Metrics;
use crate::payments::Payments;

/// Events claimed at once.
const BATCH: i64 = 200;
/// How long a claim lasts: longer than a batch can take (fetching stops starting new calls
/// after [`super::fetch::FETCH_BUDGET`], and each call is bounded by Stripe's timeout and its
/// retries).
const LEASE: Duration = Duration::from_secs(300);
/// How often an idle worker looks for events another instance stored.
const POLL: Duration = Duration::from_millis(250);
/// The longest an idle worker waits while the database is unreachable.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// How often a transaction that deadlocked or failed to serialize is tried again at once.
const TRANSIENT_RETRIES: u32 = 5;

/// What applying at once did.
enum AtOnce {
    /// Took these many events (0: none was due), and left none for the claim path.
    All(usize),
    /// Took these many, and left payments that need Stripe for the claim path.
    Some(usize),
    /// Took none: the claim path takes the batch.
    None,
}

/// A claim's token and its events.
type HeldClaim = (Uuid, Vec<String>);

#[derive(Clone)]
pub struct Worker {
    pub(super) db: PgPool,
    /// The instance its claims name.
    instance: Instance,
    pub(super) fetcher: Fetcher,
    wake: Arc<Notify>,
    campaigns: Arc<CampaignCache>,
    max_attempts: i32,
    metrics: Metrics,
    /// Declined attempts on a PaymentIntent before it is given up, and who gives it up.
    declines: (i32, Option<Abandoned>),
    /// Claims on batches that failed while the database was away, so could not be released
    /// then: released as soon as it answers again, not when their lease runs out minutes later.
    unreleased: Arc<Mutex<Vec<HeldClaim>>>,
    /// `FEE_LOOKUP_AFTER`: when a succeeded donation's unknown fee is looked up (`fees.rs`).
    pub(super) fee_lookup_after: Duration,
}

/// Each claimed event's type, by id: what the metrics count outcomes by.
type Kinds<'a> = HashMap<&'a str, &'a str>;

impl Worker {
    /// A worker setting aside an event whose own fault has failed it `max_attempts` times.
    pub fn new(
        db: PgPool,
        instance: Instance,
        payments: Payments,
        wake: Arc<Notify>,
        campaigns: Arc<CampaignCache>,
        max_attempts: i32,
    ) -> Self {
        Self {
            db,
            instance,
            fetcher: Fetcher::new(payments),
            wake,
            campaigns,
            max_attempts,
            metrics: Metrics::disabled(),
            declines: (5, None),
            unreleased: Arc::default(),
            fee_lookup_after: Duration::from_secs(600),
        }
    }

    /// The same worker, giving up through `abandoned` (cancelling the PaymentIntent, after the
    /// commit) a donation declined `declines` times.
    pub fn giving_up_declined(mut self, abandoned: Abandoned, declines: i32) -> Self {
        self.declines = (declines, Some(abandoned));
        self
    }

    /// The same worker, counting what becomes of each event in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts, by type, what became of each event once its outcome is committed.
    fn count(&self, kinds: &Kinds<'_>, outcomes: &Outcomes) {
        let mut counts: HashMap<(&str, &'static str), u64> = HashMap::new();
        let mut tally = |id: &str, outcome: &'static str| {
            let kind = kinds.get(id).copied().unwrap_or("unknown");
            *counts.entry((kind, outcome)).or_default() += 1;
        };
        outcomes.applied.iter().for_each(|id| tally(id, "applied"));
        outcomes
            .ignored
            .iter()
            .for_each(|(id, _)| tally(id, "ignored"));
        outcomes.failed.iter().for_each(|f| tally(&f.id, "failed"));
        outcomes
            .released
            .iter()
            .for_each(|id| tally(id, "released"));
        for ((kind, outcome), count) in counts {
            self.metrics.events_processed(kind, outcome, count);
        }
    }

    /// Applies events until `stop` turns true, finishing the batch in hand.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::debug!("an event worker loop started");
        let mut failures = 0u32;
        while !*stop.borrow() {
            let mut pause = POLL;
            match self.apply_due().await {
                Ok(0) => failures = 0,
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(error) => {
                    // The database is away: wait longer each time, up to half a minute.
                    failures += 1;
                    pause = (POLL * 2u32.pow(failures.min(7))).min(MAX_PAUSE);
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "the event worker could not take a batch");
                }
            }
            tokio::select! {
                () = self.wake.notified(), if failures == 0 => {}
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::debug!("an event worker loop stopped");
    }

    /// Makes the events claimed by instances that died due again now; see
    /// [`queue::release_orphaned`].
    pub async fn release_orphaned_claims(&self) {
        match queue::release_orphaned(&self.db).await {
            Ok(0) => {}
            Ok(released) => {
                tracing::warn!(
                    released,
                    "events claimed by an instance that is gone are due again"
                )
            }
            Err(error) => tracing::warn!(%error, "could not look for claims of instances gone"),
        }
    }

    /// Claims, plans, fetches and applies one batch of due events; returns how many it took.
    pub async fn apply_due(&self) -> sqlx::Result<usize> {
        self.release_unreleased().await?;
        let at_once = match self.apply_at_once().await? {
            AtOnce::All(taken) => return Ok(taken),
            AtOnce::Some(taken) => taken,
            AtOnce::None => 0,
        };
        let claim = queue::claim(&self.db, self.instance.name(), BATCH, LEASE).await?;
        if claim.events.is_empty() {
            return Ok(at_once);
        }
        let taken = at_once + claim.events.len();
        if let Err(error) = self.work(&claim).await {
            // Let another attempt have the events at once rather than when the claim runs out;
            // if the database is away, as soon as it is back.
            let ids: Vec<String> = claim.events.iter().map(|e| e.id.clone()).collect();
            self.unreleased.lock().unwrap().push((claim.token, ids));
            let _ = self.release_unreleased().await;
            return Err(error);
        }
        Ok(taken)
    }

    /// Releases the claims kept in `unreleased`; those it cannot release stay there.
    async fn release_unreleased(&self) -> sqlx::Result<()> {
        let held = std::mem::take(&mut *self.unreleased.lock().unwrap());
        if held.is_empty() {
            return Ok(());
        }
        let mut left = held.into_iter();
        let result = async {
            let mut conn = self.db.acquire().await.map_err(|error| (error, None))?;
            for (token, ids) in left.by_ref() {
                if let Err(error) = queue::release(&mut conn, token, &ids).await {
                    return Err((error, Some((token, ids))));
                }
            }
            Ok(())
        }
        .await;
        let (error, failed) = match result {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let mut unreleased = self.unreleased.lock().unwrap();
        unreleased.extend(failed);
        unreleased.extend(left);
        Err(error)
    }

    async fn work(&self, claim: &Claim) -> sqlx::Result<()> {
        let kinds: Kinds<'_> = claim
            .events
            .iter()
            .map(|e| (e.id.as_str(), e.kind.as_str()))
            .collect();
        let kinds = &kinds;
        let plan = plan::plan(&mut *self.db.acquire().await?, &claim.events).await?;
        let (fetched, listed) = tokio::join!(
            self.fetcher.payments(&plan),
            self.fetcher.payouts(&self.db, &plan)
        );
        let batch = Batch::sort(&plan, &fetched, &listed?);
        match self
            .commit(
                claim.token,
                &batch.payments,
                &batch.payouts,
                &batch.general,
                kinds,
            )
            .await
        {
            Ok(()) => Ok(()),
            // The database is away or busy: nothing here is any event's fault.
            Err(error) if !refused_a_statement(&error) => Err(error),
            Err(error) if batch.is_one_payment() => {
                self.fail_payments(claim.token, &batch.payments, &error, kinds)
                    .await
            }
            Err(error) => {
                tracing::warn!(%error, payments = batch.payments.len(), "a batch failed to apply; applying its payments one at a time");
                self.apply_one_at_a_time(claim.token, batch, kinds).await
            }
        }
    }

    /// Applies a batch the database refused one payment per transaction, then each payout on
    /// its own, then the rest of its outcomes: the payment or payout at fault fails alone, its
    /// events retried with back-off.
    async fn apply_one_at_a_time(
        &self,
        token: Uuid,
        batch: Batch<'_>,
        kinds: &Kinds<'_>,
    ) -> sqlx::Result<()> {
        for one in &batch.payments {
            let single = std::slice::from_ref(one);
            match self
                .commit(token, single, &[], &Outcomes::default(), kinds)
                .await
            {
                Ok(()) => {}
                Err(error) if !refused_a_statement(&error) => return Err(error),
                Err(error) => self.fail_payments(token, single, &error, kinds).await?,
            }
        }
        // Each payout with its events' outcomes; the rest after.
        let theirs: std::collections::HashSet<&String> =
            batch.payouts.iter().flat_map(|p| &p.events).collect();
        let mut rest = batch.general;
        rest.applied.retain(|id| !theirs.contains(id));
        for payout in &batch.payouts {
            let outcomes = Outcomes {
                applied: payout.events.clone(),
                ..Outcomes::default()
            };
            match self
                .commit(token, &[], std::slice::from_ref(payout), &outcomes, kinds)
                .await
            {
                Ok(()) => {}
                Err(error) if !refused_a_statement(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(payout = %payout.facts.id, %error, "could not apply a payout's events");
                    self.fail_events(token, &payout.events, &error, kinds)
                        .await?
                }
            }
        }
        self.commit(token, &[], &[], &rest, kinds).await
    }

    /// Applies `work` and `payouts` and records `general` in one transaction, trying again at
    /// once after a deadlock or a serialization failure.
    async fn commit(
        &self,
        token: Uuid,
        work: &[(&Payment, Option<&Fetched>, Outcomes)],
        payouts: &[PayoutWork],
        general: &Outcomes,
        kinds: &Kinds<'_>,
    ) -> sqlx::Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.commit_once(token, work, payouts, general, kinds).await {
                Err(error)
                    if db::Failure::of(&error) == db::Failure::Retry
                        && tries < TRANSIENT_RETRIES =>
                {
                    tracing::info!(%error, tries, "a batch met a transient database error; trying again");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(tries))).await;
                }
                Err(error) => return Err(error),
                Ok(applied) => {
                    self.committed(&applied);
                    return Ok(());
                }
            }
        }
    }

    async fn commit_once(
        &self,
        token: Uuid,
        work: &[(&Payment, Option<&Fetched>, Outcomes)],
        payouts: &[PayoutWork],
        general: &Outcomes,
        kinds: &Kinds<'_>,
    ) -> sqlx::Result<Applied> {
        if work.is_empty() && general.is_empty() {
            return Ok(Applied::default());
        }
        let mut ids: Vec<String> = work
            .iter()
            .flat_map(|(payment, _, _)| payment.events.iter().map(|e| e.id.clone()))
            .chain(outcome_ids(general))
            .collect();
        ids.sort();
        ids.dedup();
        let mut tx = self.db.begin().await?;
        if !queue::still_ours(&mut tx, token, &ids).await? {
            tracing::warn!(
                events = ids.len(),
                "a claim ran out before its batch was applied; another worker has the events"
            );
            tx.rollback().await?;
            return Ok(Applied::default());
        }
        let payments: Vec<(&Payment, Option<&Fetched>)> =
            work.iter().map(|(p, f, _)| (*p, *f)).collect();
        // Every outcome of the batch in a few statements, not a few per payment.
        let mut outcomes = Outcomes::default();
        for (_, _, theirs) in work {
            outcomes.absorb(theirs);
        }
        outcomes.absorb(general);
        let applied = self
            .apply_in(&mut tx, Some(token), &payments, payouts, &outcomes)
            .await?;
        tx.commit().await?;
        self.count(kinds, &outcomes);
        Ok(applied)
    }

    /// Applies `payments` and `payouts` inside `tx`, records the events' `outcomes` (ending
    /// claim `token`, or on events `tx` holds locked) and moves the campaigns' totals last.
    pub(super) async fn apply_in(
        &self,
        tx: &mut sqlx::PgConnection,
        token: Option<Uuid>,
        payments: &[(&Payment, Option<&Fetched>)],
        payouts: &[PayoutWork],
        outcomes: &Outcomes,
    ) -> sqlx::Result<Applied> {
        let applied = apply::apply(&mut *tx, payments, self.declines.0).await?;
        // What comes for an erased donor (a refund, a dispute with its evidence) is not kept.
        let erased: Vec<String> = payments
            .iter()
            .filter(|(payment, _)| payment.erased)
            .flat_map(|(payment, _)| payment.events.iter().map(|e| e.id.clone()))
            .collect();
        super::payloads::strip_events(&mut *tx, &erased).await?;
        payouts::apply::apply(&mut *tx, payouts).await?;
        queue::record(&mut *tx, token, outcomes, self.max_attempts).await?;
        let requeued = queue::requeue_not_ours(&mut *tx, &applied.linked).await?;
        if requeued > 0 {
            tracing::info!(
                requeued,
                "events set aside as not ours belong to a payment just linked; queued again"
            );
        }
        apply::move_totals(&mut *tx, &applied.campaigns).await?;
        Ok(applied)
    }

    /// What follows a batch's commit: the campaigns' cached totals dropped, flags logged.
    pub(super) fn committed(&self, applied: &Applied) {
        if !applied.declined_out.is_empty() {
            tracing::warn!(
                donations = applied.declined_out.len(),
                limit = self.declines.0,
                "declined too often (card testing through a client secret?): giving up their PaymentIntents"
            );
            if let Some(abandoned) = self.declines.1.clone() {
                tokio::spawn(async move {
                    if let Err(error) = abandoned.sweep().await {
                        tracing::warn!(%error, "could not give up the declined donations now; the next sweep will");
                    }
                });
            }
        }
        for campaign in applied.campaigns.keys() {
            self.campaigns.forget(campaign);
        }
        for (donation_id, flag) in &applied.flagged {
            tracing::warn!(%donation_id, %flag, "a donation is flagged for an operator");
        }
    }

    /// The common case, in one transaction with no claim written: due events are locked for
    /// the transaction (see [`queue::lock_due`]) and planned, and the payments among them that
    /// need nothing from Stripe (each event carries all it says, or the payment was fetched
    /// before) are applied there and then, with the events no one applies. So such an event is
    /// written once, from pending to applied, and its batch costs one transaction instead of
    /// two. The payments that need Stripe are left as they were, for the claim path, which
    /// calls Stripe holding nothing; so is the whole batch if it holds a payout's or an
    /// unreadable event, or if it could not be applied so (the claim path then has its handling
    /// of every failure).
    async fn apply_at_once(&self) -> sqlx::Result<AtOnce> {
        let mut tx = self.db.begin().await?;
        let events = queue::lock_due(&mut tx, BATCH).await?;
        if events.is_empty() {
            return Ok(AtOnce::All(0));
        }
        let plan = plan::plan(&mut tx, &events).await?;
        if !plan.payouts.is_empty() || !plan.unreadable.is_empty() {
            tx.rollback().await?;
            return Ok(AtOnce::None);
        }
        let (ready, needy): (Vec<&Payment>, Vec<&Payment>) =
            plan.payments.values().partition(|p| p.needs.is_empty());
        if ready.is_empty() && plan.ignored.is_empty() {
            tx.rollback().await?;
            return Ok(AtOnce::None);
        }
        let payments: Vec<(&Payment, Option<&Fetched>)> =
            ready.iter().map(|p| (*p, None)).collect();
        let mut outcomes = Outcomes {
            ignored: plan.ignored.clone(),
            ..Outcomes::default()
        };
        for (payment, _) in &payments {
            outcomes.absorb(&outcomes_of(payment, None));
        }
        let applied = match self
            .apply_in(&mut tx, None, &payments, &[], &outcomes)
            .await
        {
            Ok(applied) => applied,
            Err(error) => {
                tracing::debug!(%error, "a batch could not be applied at once; claiming it");
                // Let go of its events now, not when the pool gets round to it: the claim
                // that follows skips events still locked.
                let _ = tx.rollback().await;
                return Ok(AtOnce::None);
            }
        };
        tx.commit().await?;
        let kinds: Kinds<'_> = events
            .iter()
            .map(|e| (e.id.as_str(), e.kind.as_str()))
            .collect();
        self.count(&kinds, &outcomes);
        self.committed(&applied);
        let taken = outcome_ids(&outcomes).count();
        Ok(if needy.is_empty() {
            AtOnce::All(taken)
        } else {
            AtOnce::Some(taken)
        })
    }

    /// Records that these payments could not be applied: each of their events is retried with
    /// back-off, and set aside once it has failed too often.
    async fn fail_payments(
        &self,
        token: Uuid,
        work: &[(&Payment, Option<&Fetched>, Outcomes)],
        error: &sqlx::Error,
        kinds: &Kinds<'_>,
    ) -> sqlx::Result<()> {
        let mut ids = Vec::new();
        for (payment, _, _) in work {
            tracing::warn!(donation_id = %payment.donation, %error, "could not apply a payment's events");
            ids.extend(payment.events.iter().map(|event| event.id.clone()));
        }
        self.fail_events(token, &ids, error, kinds).await
    }

    /// Records that the database refused to apply these events: each is retried with
    /// back-off, and set aside once it has failed too often.
    async fn fail_events(
        &self,
        token: Uuid,
        ids: &[String],
        error: &sqlx::Error,
        kinds: &Kinds<'_>,
    ) -> sqlx::Result<()> {
        let failed = Outcomes {
            failed: ids
                .iter()
                .map(|id| Failure {
                    id: id.clone(),
                    error: format!("database: {error}"),
                    poison: true,
                    wait: Duration::ZERO,
                })
                .collect(),
            ..Outcomes::default()
        };
        let mut tx = self.db.begin().await?;
        queue::record(&mut tx, Some(token), &failed, self.max_attempts).await?;
        tx.commit().await?;
        self.count(kinds, &failed);
        Ok(())
    }
}

/// The database refused a statement for what it said or did (a constraint, a bad value, a
/// trigger's refusal): the payment applied is at fault, not the database. A deadlock or
/// serialization failure that outlasted its retries is not that, nor is a database away.
fn refused_a_statement(error: &sqlx::Error) -> bool {
    matches!(
        db::Failure::of(error),
        db::Failure::Refused | db::Failure::Statement
    )
}
