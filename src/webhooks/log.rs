//! The durable event log: every verified Stripe event, stored before we answer 2xx.

use std::borrow::Cow;

use serde::Deserialize;
use sqlx::PgExecutor;
use time::OffsetDateTime;

use super::kind::EventKind;
use crate::metrics::Backlog;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    Backfill,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Backfill => "backfill",
        }
    }
}

/// A Stripe event: the few fields the log indexes, and the payload as it came.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub api_version: Option<String>,
    pub livemode: bool,
    pub created: OffsetDateTime,
    pub object_id: Option<String>,
    /// What the worker groups the event by: see [`object_key`].
    pub object_key: Option<String>,
    /// The event's JSON text exactly as Stripe signed it.
    pub payload: String,
}

/// The envelope of an event, read without building the rest of the JSON: webhook ingest is the
/// hottest path, and the object itself is only read when the event is applied.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    object: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    api_version: Option<Cow<'a, str>>,
    livemode: bool,
    created: i64,
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    object: ObjectHead<'a>,
}

/// The event's object; only what names it and the payment it belongs to is read.
#[derive(Deserialize)]
struct ObjectHead<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payment_intent: Option<IdOrObject<'a>>,
    #[serde(borrow, default)]
    charge: Option<IdOrObject<'a>>,
}

/// A reference to another object: its id, or the object expanded.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdOrObject<'a> {
    Id(#[serde(borrow)] Cow<'a, str>),
    Object {
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
}

impl IdOrObject<'_> {
    fn into_id(self) -> String {
        match self {
            Self::Id(id) | Self::Object { id } => id.into_owned(),
        }
    }
}

/// What an object's events are grouped by: the PaymentIntent for a PaymentIntent and for the
/// charges, refunds and disputes of one; failing that the charge; failing that the object. All
/// the events of one payment share a key, so one worker merges them together.
fn object_key(head: ObjectHead<'_>) -> Option<String> {
    if head.object.as_deref() == Some("payment_intent") {
        return head.id.map(Cow::into_owned);
    }
    head.payment_intent
        .map(IdOrObject::into_id)
        .or_else(|| head.charge.map(IdOrObject::into_id))
        .or_else(|| head.id.map(Cow::into_owned))
}

impl Event {
    /// Reads a Stripe event from its JSON text; `None` if it is not one.
    pub fn parse(json: &[u8]) -> Option<Self> {
        let envelope: Envelope = serde_json::from_slice(json).ok()?;
        if envelope.object != "event" || !envelope.id.starts_with("evt_") {
            return None;
        }
        let object_id = envelope.data.object.id.as_deref().map(str::to_owned);
        Some(Self {
            id: envelope.id.into_owned(),
            kind: envelope.kind.into_owned(),
            api_version: envelope.api_version.map(Cow::into_owned),
            livemode: envelope.livemode,
            created: OffsetDateTime::from_unix_timestamp(envelope.created).ok()?,
            object_id,
            object_key: object_key(envelope.data.object),
            payload: String::from_utf8(json.to_vec()).ok()?,
        })
    }
}

/// Stores `event`, to be applied unless `ignore` gives a reason not to. A delivery of an event
/// we already have adds no row, only counts the delivery; a backfill of one changes nothing.
/// Returns whether the event was new.
pub async fn record(
    db: impl PgExecutor<'_>,
    event: &Event,
    ignore: Option<&str>,
    source: Source,
) -> sqlx::Result<bool> {
    let state = if ignore.is_some() {
        "ignored"
    } else {
        "pending"
    };
    let new = sqlx::query_scalar!(
        r#"INSERT INTO stripe_events (id, type, api_version, livemode, created, object_id,
                                      object_key, payload, source, state, last_error)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (id) DO UPDATE
               SET last_received_at = now(),
                   delivery_count = stripe_events.delivery_count + 1
               WHERE EXCLUDED.source <> 'backfill'
           RETURNING (xmax = 0) AS "inserted!""#,
        event.id,
        event.kind,
        event.api_version,
        event.livemode,
        event.created,
        event.object_id,
        event.object_key,
        event.payload,
        source.as_str(),
        state,
        ignore
    )
    .fetch_optional(db)
    .await?;
    Ok(new == Some(true))
}

/// Why an event is stored but not applied, if it is not to be.
pub fn reason_to_ignore(event: &Event, livemode: bool) -> Option<String> {
    if event.livemode != livemode {
        let (theirs, ours) = if livemode {
            ("test", "live")
        } else {
            ("live", "test")
        };
        return Some(format!("a {theirs}-mode event, and our key is {ours}-mode"));
    }
    if !EventKind::of(&event.kind).is_applied() {
        return Some(format!("{} is not a type we apply", event.kind));
    }
    None
}

/// The event log's counts, from the partial indexes on pending and failed events.
pub async fn backlog(db: &sqlx::PgPool) -> sqlx::Result<Backlog> {
    let row = sqlx::query!(
        r#"SELECT
               (SELECT count(*) FROM stripe_events WHERE state = 'pending') AS "pending!",
               (SELECT extract(epoch FROM now() - min(first_received_at))::float8
                FROM stripe_events WHERE state = 'pending') AS oldest_age,
               (SELECT count(*) FROM stripe_events WHERE state = 'failed') AS "failed!""#
    )
    .fetch_one(db)
    .await?;
    Ok(Backlog {
        pending: row.pending,
        oldest_pending_age_secs: row.oldest_age.unwrap_or(0.0).max(0.0),
        failed: row.failed,
    })
}

/// The state in the log (`pending`, `applied`, `ignored`, `failed`) of each of `ids` stored.
pub async fn states(
    db: &sqlx::PgPool,
    ids: &[String],
) -> sqlx::Result<std::collections::HashMap<String, String>> {
    let rows = sqlx::query!(
        "SELECT id, state FROM stripe_events WHERE id = ANY($1)",
        ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.state)).collect())
}

/// Bodies no one expected: any bytes, and envelopes with any field of any shape.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
    #![proptest_config(crate::arbitrary::config())]
            #[test]
            fn any_bytes_are_read_or_refused_without_a_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                let _ = Event::parse(&bytes);
            }

            #[test]
            fn an_envelope_with_any_fields_is_read_or_refused_without_a_panic(
                event in crate::arbitrary::variant_of(json!({
                    "id": "evt_1", "object": "event", "type": "charge.succeeded",
                    "api_version": "2026-09-30.clover", "created": 1_700_000_000, "livemode": false,
                    "data": {"object": {
                        "id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                        "charge": {"id": "ch_1"}
                    }}
                })),
            ) {
                let text = serde_json::to_vec(&event).unwrap();
                if let Some(read) = Event::parse(&text) {
                    prop_assert!(read.id.starts_with("evt_"));
                    prop_assert_eq!(read.payload.as_bytes(), &text[..], "kept as signed");
                }
            }
        }
}
