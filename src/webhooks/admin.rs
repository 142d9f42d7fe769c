//! What operators do with the event log: list, show, replay, and backfill from Stripe's events
//! API what the webhook endpoint missed (Stripe keeps 30 days of events).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::kind::EventKind;
use super::log::{self, Event, Source};
use crate::payments::Payments;
use crate::timestamps::rfc3339;

/// How far back Stripe's events API reaches.
const STRIPE_KEEPS: Duration = Duration::from_secs(30 * 86_400);

/// An event as `events list` shows it (and `GET /v1/finance/events`: never its payload).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub attempts: i32,
    pub delivery_count: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub first_received_at: OffsetDateTime,
    pub last_error: Option<String>,
}

/// The latest events, newest first. With `failed_only`, the events set aside as `failed` and
/// those still being retried after an error.
pub async fn list(db: &PgPool, failed_only: bool, limit: i64) -> sqlx::Result<Vec<EventSummary>> {
    sqlx::query_as!(
        EventSummary,
        r#"SELECT id, type AS kind, state, attempts, delivery_count, last_error, first_received_at
           FROM stripe_events
           WHERE NOT $1 OR state = 'failed' OR (state = 'pending' AND last_error IS NOT NULL)
           ORDER BY first_received_at DESC, id
           LIMIT $2"#,
        failed_only,
        limit
    )
    .fetch_all(db)
    .await
}

/// One event in full: its record, the donation it belongs to (and why that donation is
/// flagged, if it is), and its payload.
pub async fn show(db: &PgPool, id: &str) -> anyhow::Result<String> {
    let row = sqlx::query!(
        r#"SELECT e.id, e.type AS kind, e.state, e.source, e.livemode, e.api_version, e.created,
                  e.object_id, e.object_key, e.attempts, e.delivery_count, e.last_error,
                  e.first_received_at, e.last_received_at, e.applied_at, e.payload,
                  d.id AS "donation_id?", d.status AS "donation_status?", d.flag
           FROM stripe_events e
           LEFT JOIN donations d ON d.payment_intent_id = e.object_key
           WHERE e.id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?
    .with_context(|| format!("no event {id} in the log"))?;
    let mut out = String::new();
    writeln!(out, "id:              {}", row.id)?;
    writeln!(out, "type:            {}", row.kind)?;
    writeln!(out, "state:           {}", row.state)?;
    writeln!(out, "source:          {}", row.source)?;
    writeln!(out, "livemode:        {}", row.livemode)?;
    writeln!(
        out,
        "api version:     {}",
        row.api_version.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "created:         {}", rfc3339(row.created))?;
    writeln!(
        out,
        "object:          {}",
        row.object_id.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "deliveries:      {}", row.delivery_count)?;
    writeln!(out, "first received:  {}", rfc3339(row.first_received_at))?;
    writeln!(out, "last received:   {}", rfc3339(row.last_received_at))?;
    writeln!(out, "attempts:        {}", row.attempts)?;
    if let Some(applied) = row.applied_at {
        writeln!(out, "applied:         {}", rfc3339(applied))?;
    }
    if let Some(error) = &row.last_error {
        writeln!(out, "last error:      {error}")?;
    }
    if let (Some(donation), Some(status)) = (row.donation_id, &row.donation_status) {
        writeln!(out, "donation:        {donation} ({status})")?;
    }
    if let Some(flag) = &row.flag {
        writeln!(out, "FLAGGED:         {flag}")?;
    }
    writeln!(out, "payload:")?;
    // Pretty, when it parses; as received, when it does not.
    let pretty = serde_json::from_str::<serde_json::Value>(&row.payload)
        .and_then(|payload| serde_json::to_string_pretty(&payload));
    write!(out, "{}", pretty.unwrap_or(row.payload))?;
    Ok(out)
}

/// Queues an event to be applied again now: applying is idempotent, so a replay of an applied
/// event changes nothing, and one of a failing or set-aside (`failed`) event retries it at
/// once. Ignored events of a type we apply are queued too (one ignored as not ours may be ours
/// after a data fix); an event of the other mode never is.
pub async fn replay(db: &PgPool, id: &str, livemode: bool) -> anyhow::Result<()> {
    let row = sqlx::query!(
        "SELECT type AS kind, livemode FROM stripe_events WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await?
    .with_context(|| format!("no event {id} in the log"))?;
    ensure!(
        row.livemode == livemode,
        "{id} is of the other mode (live or test) than our key; it is never applied"
    );
    ensure!(
        EventKind::of(&row.kind).is_applied(),
        "{id} is a {}, which is not a type we apply",
        row.kind
    );
    sqlx::query!(
        r#"UPDATE stripe_events
           SET state = 'pending', next_attempt_at = now(), attempts = 0, last_error = NULL,
               claimed_by = NULL, claimed_until = NULL
           WHERE id = $1"#,
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Queues every event set aside as `failed`, and every one still being retried, to be tried
/// again now, from a clean count; returns how many.
pub async fn replay_failed(db: &PgPool) -> anyhow::Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE stripe_events
           SET state = 'pending', next_attempt_at = now(), attempts = 0
           WHERE state = 'failed'
              OR (state = 'pending' AND last_error IS NOT NULL AND claimed_by IS NULL)"#
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// What a backfill found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Backfill {
    pub seen: u64,
    pub new: u64,
    /// Donations recreated from Stripe (their row was gone: a restore from backup), with their
    /// PaymentIntents.
    pub recovered: Vec<(Uuid, String)>,
    /// PaymentIntents that name a donation of ours that could not be recreated, and why.
    pub unrecoverable: Vec<(String, String)>,
}

/// The PaymentIntent a payment event's object belongs to, and the donation its metadata
/// names (a PaymentIntent's and a charge's carry our metadata; a refund or dispute names only
/// its PaymentIntent).
fn payment_of(event: &serde_json::Value) -> Option<(String, Option<String>)> {
    let object = &event["data"]["object"];
    let intent = match object["object"].as_str()? {
        "payment_intent" => object["id"].as_str(),
        "charge" | "refund" | "dispute" => object["payment_intent"].as_str(),
        _ => None,
    }?;
    let named = object["metadata"]["donation_id"]
        .as_str()
        .map(str::to_owned);
    Some((intent.to_owned(), named))
}

/// Recreates the donations of this page's payments whose rows are gone (see
/// `donations::recovered`), before their events are stored, so the worker finds them. A
/// PaymentIntent is asked of Stripe (with nothing locked) only when the donation its metadata
/// names is missing, or when its events carry no metadata (a refund, a dispute) and no
/// donation holds it.
async fn recover(
    db: &PgPool,
    payments: &Payments,
    page: &[serde_json::Value],
    asked: &mut HashSet<String>,
    found: &mut Backfill,
) -> anyhow::Result<()> {
    use crate::donations::recovered::{self, Recovered};
    let mut intents: BTreeMap<String, Option<Uuid>> = BTreeMap::new();
    let mut foreign: HashSet<String> = HashSet::new();
    for event in page {
        let Some((intent, named)) = payment_of(event) else {
            continue;
        };
        let object = &event["data"]["object"];
        let has_metadata = object["metadata"].is_object()
            && matches!(object["object"].as_str(), Some("payment_intent" | "charge"));
        match named.as_deref().map(Uuid::parse_str) {
            Some(Ok(id)) => {
                intents.insert(intent, Some(id));
            }
            // Another product's payment: its own metadata says so.
            _ if has_metadata => {
                foreign.insert(intent);
            }
            _ => {
                intents.entry(intent).or_insert(None);
            }
        }
    }
    intents.retain(|intent, named| named.is_some() || !foreign.contains(intent));
    let keys: Vec<String> = intents.keys().cloned().collect();
    let unknown: HashSet<String> = recovered::unknown_intents(db, &keys)
        .await?
        .into_iter()
        .collect();
    let named: Vec<Uuid> = intents.values().flatten().copied().collect();
    let missing: HashSet<Uuid> = recovered::missing(db, &named).await?.into_iter().collect();
    for (intent, named) in intents {
        let wanted = match named {
            Some(id) => missing.contains(&id),
            None => unknown.contains(&intent),
        };
        if !wanted || !asked.insert(intent.clone()) {
            continue;
        }
        let fetched = payments
            .retrieve_payment(&intent)
            .await
            .with_context(|| format!("reading PaymentIntent {intent} from Stripe"))?;
        let donation = match Recovered::from_payment_intent(&fetched) {
            Ok(Some(donation)) => donation,
            Ok(None) => continue,
            Err(why) => {
                found.unrecoverable.push((intent, why));
                continue;
            }
        };
        if !recovered::recreate(db, &donation).await? {
            if !recovered::missing(db, &[donation.id]).await?.is_empty() {
                found.unrecoverable.push((
                    intent,
                    format!(
                        "its campaign {:?} is not in the catalogue, or another donation holds it",
                        donation.campaign
                    ),
                ));
            }
            continue;
        }
        // Events of it already stored (Stripe's redeliveries since the restore) were set aside
        // as not ours: they are due again.
        let mut keys = vec![intent.clone()];
        keys.extend(
            fetched["latest_charge"]["id"]
                .as_str()
                .or(fetched["latest_charge"].as_str())
                .map(str::to_owned),
        );
        super::queue::requeue_not_ours(&mut *db.acquire().await?, &keys).await?;
        found.recovered.push((donation.id, intent));
    }
    Ok(())
}

/// Pages through Stripe's events since `since` ago and stores those we do not have, exactly
/// as if they had been delivered; a donation whose row is gone (a restore from backup) is
/// recreated from Stripe first (see [`recover`]).
pub async fn backfill(
    db: &PgPool,
    payments: &Payments,
    since: Duration,
    livemode: bool,
) -> anyhow::Result<Backfill> {
    ensure!(
        since <= STRIPE_KEEPS,
        "--since: Stripe keeps 30 days of events"
    );
    let from = OffsetDateTime::now_utc().unix_timestamp()
        - i64::try_from(since.as_secs()).context("--since is too long")?;
    let mut found = Backfill::default();
    let mut asked = HashSet::new();
    let mut after: Option<String> = None;
    // Bounded: 30 days of events at 100 a page is far below this many pages.
    for _ in 0..100_000 {
        let (events, has_more) = payments.list_events(from, after.as_deref()).await?;
        recover(db, payments, &events, &mut asked, &mut found).await?;
        for payload in events {
            let event = Event::parse(&serde_json::to_vec(&payload)?)
                .context("Stripe listed something that is not an event")?;
            found.seen += 1;
            let ignore = log::reason_to_ignore(&event, livemode);
            if log::record(db, &event, ignore.as_deref(), Source::Backfill).await? {
                found.new += 1;
            }
            after = Some(event.id);
        }
        if !has_more || after.is_none() {
            return Ok(found);
        }
    }
    bail!("Stripe kept saying there were more events; stopped")
}

/// `30m`, `12h`, `2d` or `90s`.
pub fn parse_since(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .with_context(|| format!("--since {text:?}: expected a number and a unit, like 2d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("--since {text:?}: the unit must be s, m, h or d"),
    };
    Ok(Duration::from_secs(number * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_number_and_a_unit() {
        assert_eq!(parse_since("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_since("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_since("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(parse_since("90s").unwrap(), Duration::from_secs(90));
        for bad in ["", "2", "d", "2w", "-1d", "1.5d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
