//! The campaign as `GET /v1/campaigns/{slug}` shows it, kept for a second.
//!
//! Campaign pages are read far more often than anything else, most of all during an appeal,
//! and a total a moment old is fine to show. Each instance keeps the serialised campaign for
//! at most `ttl`; its own worker forgets a campaign as soon as it has moved the campaign's
//! total, so on one instance a change shows at once, and on others within `ttl`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use sqlx::PgPool;

#[derive(Debug)]
pub struct CampaignCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Instant, Bytes)>>,
}

impl CampaignCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The campaign's JSON, from the cache if fresh, else from the database.
    pub async fn get(&self, db: &PgPool, slug: &str) -> sqlx::Result<Option<Bytes>> {
        if let Some((at, json)) = self.read().get(slug)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(json.clone()));
        }
        let Some(campaign) = super::find(db, slug).await? else {
            return Ok(None);
        };
        let json = Bytes::from(serde_json::to_vec(&campaign).expect("a campaign serialises"));
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(slug.to_owned(), (Instant::now(), json.clone()));
        Ok(Some(json))
    }

    /// Drops what is kept of `slug`, so the next read comes from the database.
    pub fn forget(&self, slug: &str) {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(slug);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (Instant, Bytes)>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
