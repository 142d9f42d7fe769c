//! Campaigns: what donors give to. The catalogue lives in `config/campaigns.toml`
//! ([`catalogue`]); the running totals live on each campaign's row.

pub mod cache;
pub mod catalogue;
mod routes;

pub use routes::router;

use std::sync::Arc;

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use cache::CampaignCache;

/// What the campaign routes touch: the database, and the campaigns kept for a second.
#[derive(Clone)]
pub struct CampaignsState {
    pub db: PgPool,
    pub cache: Arc<CampaignCache>,
}

/// A campaign as the website sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Campaign {
    #[schema(example = "kashmir")]
    pub slug: String,
    pub title: String,
    /// Lower-case ISO 4217 code, e.g. `gbp`.
    pub currency: String,
    /// Amounts for the page's buttons, in minor units.
    pub suggested_amounts: Vec<i64>,
    /// The least and the most a gift may be, in minor units.
    pub min_amount: i64,
    pub max_amount: i64,
    pub goal_amount: Option<i64>,
    /// What the charity keeps of succeeded gifts, in minor units: never pending money or the
    /// fee cover. At most a second old.
    pub raised_amount: i64,
    pub donation_count: i64,
    pub active: bool,
}

/// The campaign named `slug`, if there is one.
pub async fn find(db: impl PgExecutor<'_>, slug: &str) -> sqlx::Result<Option<Campaign>> {
    sqlx::query_as!(
        Campaign,
        r#"SELECT slug, title, currency, suggested_amounts, min_amount, max_amount, goal_amount,
                  raised_amount, donation_count, active
           FROM campaigns WHERE slug = $1"#,
        slug
    )
    .fetch_optional(db)
    .await
}

/// Every active campaign, in slug order.
pub async fn active(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Campaign>> {
    sqlx::query_as!(
        Campaign,
        r#"SELECT slug, title, currency, suggested_amounts, min_amount, max_amount, goal_amount,
                  raised_amount, donation_count, active
           FROM campaigns WHERE active ORDER BY slug"#
    )
    .fetch_all(db)
    .await
}
