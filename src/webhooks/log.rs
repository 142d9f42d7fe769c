//! The durable event log: every verified Stripe event, stored before we answer 2xx.

use serde_json::Value;
use sqlx::PgExecutor;
use time::OffsetDateTime;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    Backfill,
    Simulator,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Backfill => "backfill",
            Self::Simulator => "simulator",
        }
    }
}

/// A Stripe event, read from its JSON.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub api_version: Option<String>,
    pub livemode: bool,
    pub created: OffsetDateTime,
    pub object_id: Option<String>,
    pub payload: Value,
}

impl Event {
    /// Reads the envelope of a Stripe event; `None` if `payload` is not one.
    pub fn from_json(payload: Value) -> Option<Self> {
        if payload.get("object")?.as_str()? != "event" {
            return None;
        }
        let id = payload.get("id")?.as_str()?.to_owned();
        if !id.starts_with("evt_") {
            return None;
        }
        let kind = payload.get("type")?.as_str()?.to_owned();
        let livemode = payload.get("livemode")?.as_bool()?;
        let created =
            OffsetDateTime::from_unix_timestamp(payload.get("created")?.as_i64()?).ok()?;
        let object = payload.get("data")?.get("object")?;
        if !object.is_object() {
            return None;
        }
        let object_id = object.get("id").and_then(Value::as_str).map(str::to_owned);
        let api_version = payload
            .get("api_version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(Self {
            id,
            kind,
            api_version,
            livemode,
            created,
            object_id,
            payload,
        })
    }

    /// The object the event describes.
    pub fn object(&self) -> &Value {
        &self.payload["data"]["object"]
    }
}

/// The event types whose objects we apply to donations; all others are stored and ignored.
pub fn is_handled(kind: &str) -> bool {
    kind.starts_with("payment_intent.")
        || kind.starts_with("charge.")
        || kind.starts_with("refund.")
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
                                      payload, source, state, last_error)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
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
    if !is_handled(&event.kind) {
        return Some(format!("{} is not a type we apply", event.kind));
    }
    None
}
