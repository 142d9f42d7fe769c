//! What the handlers can reach: one state per feature, composed here, the one place that knows
//! them all. A handler takes the state of its own feature (`State<DonationsState>`), or only the
//! database (`State<PgPool>`), through axum's `FromRef`: its signature says what it may touch.

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::campaigns::CampaignsState;
use crate::donate_page::PageState;
use crate::donations::DonationsState;
use crate::finance::FinanceState;
use crate::staff::StaffState;
use crate::webhooks::IntakeState;

#[derive(Clone, FromRef)]
pub struct AppState {
    /// For the routes that read the database and nothing else: health, a donation's status,
    /// the audit log, Gift Aid, and every finance caller's token.
    pub db: PgPool,
    /// Finance's reads and exports (see `db::Reads`).
    pub reads: crate::db::Reads,
    pub campaigns: CampaignsState,
    pub donations: DonationsState,
    pub intake: IntakeState,
    pub finance: FinanceState,
    pub page: PageState,
    pub gift_aid: crate::gift_aid::Rules,
    pub staff: StaffState,
}
