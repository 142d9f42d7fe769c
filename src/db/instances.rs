//! Which instances are alive: each serving instance holds a lease in `instances`, renewed every
//! third of [`Instance::lease`] while it runs, and gives it up when it stops. The claims its
//! worker and sender make (events, receipts) name it; another instance releases them before
//! their own lease runs out only once this lease has run out (the instance was killed, or lost
//! its machine) or was given up.
//!
//! Not `pg_stat_activity`: behind a transaction-pooling proxy (PgBouncer, RDS Proxy) the
//! database's sessions are the proxy's, not the instances', so an instance alive could have no
//! session of its own and be taken for dead, its receipt sent twice. Nothing here relies on a
//! session: the instance's name travels as a parameter of each statement.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

/// One running process, by its name (also its connections' `application_name`).
#[derive(Debug, Clone)]
pub struct Instance {
    name: Arc<str>,
    lease: Duration,
}

impl Instance {
    /// A new instance's name, with a lease of `lease` (`INSTANCE_LEASE`).
    pub fn new(lease: Duration) -> Self {
        Self {
            name: format!("quickdonate {}", uuid::Uuid::new_v4().simple()).into(),
            lease,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long the instance is taken to be alive after its last renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often the lease is renewed: three times per lease, so that two renewals in a row can
    /// be late or lost before the instance is taken for dead.
    pub fn heartbeat(&self) -> Duration {
        self.lease / 3
    }

    /// Takes, or renews, the lease.
    pub async fn renew(&self, db: &PgPool) -> sqlx::Result<()> {
        sqlx::query!(
            r#"INSERT INTO instances (name, alive_until) VALUES ($1, now() + make_interval(secs => $2))
               ON CONFLICT (name) DO UPDATE SET alive_until = excluded.alive_until"#,
            &*self.name,
            self.lease.as_secs_f64()
        )
        .execute(db)
        .await
        .map(drop)
    }

    /// Gives the lease up: the instance has stopped, and holds no claim worth waiting for.
    pub async fn leave(&self, db: &PgPool) -> sqlx::Result<()> {
        sqlx::query!("DELETE FROM instances WHERE name = $1", &*self.name)
            .execute(db)
            .await
            .map(drop)
    }
}

/// Forgets instances whose lease ran out long ago (a day), so the table stays small.
pub async fn forget_gone(db: &PgPool) -> sqlx::Result<u64> {
    sqlx::query!("DELETE FROM instances WHERE alive_until < now() - interval '1 day'")
        .execute(db)
        .await
        .map(|done| done.rows_affected())
}
