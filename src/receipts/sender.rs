//! The sender loops: deliver the receipts owed, each once.
//!
//! A sender claims a few due receipts with `FOR UPDATE SKIP LOCKED` in one short statement
//! that also sets a lease (`claimed_until`) and counts the attempt; no transaction or row lock
//! is held while it talks to the mail server. Delivered, a receipt is recorded `sent`; failed,
//! it is due again after a back-off (1 s, 2 s, 4 s ... up to an hour) and set aside as `failed`
//! after [`MAX_ATTEMPTS`]. Two instances never hold the same receipt: the claim is exclusive
//! until its lease runs out.
//!
//! The one window left is a crash (SIGKILL, power) after the mail server took the message and
//! before `sent` is written: nothing can tell that apart from a crash just before sending, so
//! the receipt is sent again, with the same Message-ID, so the second copy is recognisably the
//! same message (and many mailboxes drop it as one). Again promptly: a claim names its instance
//! (`claimed_instance`, as the event worker's claims do), and the claims of an instance whose
//! lease (`db::Instance`, renewed by its heartbeat) has run out are released by every running
//! instance at its next heartbeat ([`release_orphaned`]), else when the claim's own lease runs
//! out ([`LEASE`]). An instance alive renews its lease while it sends, so its claims are never
//! taken for a dead one's. A sender sends one receipt at a time, so a crash can find at most one
//! delivered and not yet recorded: each crash costs at most one extra copy of one receipt (the
//! rest of its batch was never sent). The attempts that count toward [`MAX_ATTEMPTS`] bound
//! the total. A graceful shutdown finishes the receipt in hand first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use super::message::{Charity, Receipt, compose};
use crate::config;
use crate::db::{self, Instance};

/// How long a claimed receipt is its sender's alone: well beyond one SMTP attempt.
pub const LEASE: Duration = Duration::from_secs(120);
/// How long one SMTP delivery may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// After how many attempts a receipt is set aside as `failed`.
pub const MAX_ATTEMPTS: i32 = 20;
/// How often an idle sender looks for receipts owed.
const POLL: Duration = Duration::from_millis(500);
/// The longest a sender waits between passes while the database is away.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Receipts claimed at once.
const BATCH: i64 = 10;

/// Where receipts go.
#[derive(Clone)]
pub enum Transport {
    /// An SMTP server (`SMTP_URL`).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// No SMTP configured: each receipt is written as `<receipt id>.eml` in this directory.
    Files(PathBuf),
}

impl Transport {
    /// The transport for `SMTP_URL` (`smtp://`, `smtps://`, `smtp://...?tls=required`), or
    /// `.eml` files under `DATA_DIR/receipts/` without one.
    pub fn new(config: &config::Receipts) -> Self {
        match &config.smtp_url {
            Some(url) => Self::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .expect("SMTP_URL was checked when the settings were read")
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            None => Self::Files(config.files_dir.clone()),
        }
    }

    async fn deliver(&self, receipt: Uuid, message: &Message) -> Result<(), String> {
        match self {
            Self::Smtp(smtp) => smtp.send(message.clone()).await.map(drop).map_err(|error| {
                // The server's words may quote the donor's address: keep only its code.
                match error.status() {
                    Some(code) => format!("the mail server refused it ({code})"),
                    None if error.is_timeout() => "the mail server timed out".to_owned(),
                    None => "could not reach the mail server".to_owned(),
                }
            }),
            Self::Files(dir) => {
                let dir = dir.clone();
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    std::fs::create_dir_all(&dir)?;
                    let partial = dir.join(format!(".{receipt}.eml.partial"));
                    std::fs::write(&partial, bytes)?;
                    // Written whole or not at all; a second write is the same file again.
                    std::fs::rename(&partial, dir.join(format!("{receipt}.eml")))
                })
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| format!("could not write the receipt file: {}", error.kind()))
            }
        }
    }
}

/// Deletes the `.eml` files written for `receipts` under `dir` (and any half-written one), as
/// a donor's erasure does; returns how many receipts had a file. A receipt with none (sent by
/// SMTP, or never sent) is passed over.
pub fn delete_files(dir: &Path, receipts: &[Uuid]) -> std::io::Result<u64> {
    let mut deleted = 0;
    for receipt in receipts {
        for (name, counted) in [
            (format!("{receipt}.eml"), true),
            (format!(".{receipt}.eml.partial"), false),
        ] {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => deleted += u64::from(counted),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(deleted)
}

/// Delivers the receipts owed; every instance that applies events runs one.
#[derive(Clone)]
pub struct Sender {
    db: PgPool,
    /// The instance its claims name.
    instance: Instance,
    transport: Transport,
    charity: Charity,
}

impl Sender {
    pub fn new(db: PgPool, instance: Instance, transport: Transport, charity: Charity) -> Self {
        Self {
            db,
            instance,
            transport,
            charity,
        }
    }

    /// Sends what is owed until `stop` says so; the receipt in hand is finished first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        match &self.transport {
            Transport::Smtp(_) => tracing::info!("receipts are sent by SMTP"),
            Transport::Files(dir) => tracing::info!(
                dir = %dir.display(),
                "no SMTP_URL: receipts are written as .eml files"
            ),
        }
        // Passes in a row that found the database away: each waits twice as long, up to
        // `MAX_PAUSE`, so an outage is not met with a warning every half second.
        let mut away = 0u32;
        loop {
            match self.send_due(&stop).await {
                Ok(sent) if sent > 0 => {
                    away = 0;
                    continue;
                }
                Ok(_) => away = 0,
                Err(error) => {
                    away = match db::Failure::of(&error) {
                        db::Failure::Unavailable => away.saturating_add(1),
                        _ => 0,
                    };
                    tracing::warn!(%error, "could not send the receipts owed");
                }
            }
            let pause = (POLL * 2u32.pow(away.min(4))).min(MAX_PAUSE);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Makes the receipts claimed by instances that are gone due again now; see
    /// [`release_orphaned`].
    pub async fn release_orphaned_claims(&self) {
        match release_orphaned(&self.db).await {
            Ok(0) => {}
            Ok(released) => tracing::warn!(
                released,
                "receipts claimed by an instance that is gone are due again (one may have been \
                 delivered just before it went: it is sent again with the same Message-ID)"
            ),
            Err(error) => {
                tracing::warn!(%error, "could not look for receipt claims of instances gone")
            }
        }
    }

    /// Claims the receipts due and tries each once; how many were claimed.
    pub async fn send_due(&self, stop: &watch::Receiver<bool>) -> sqlx::Result<usize> {
        // One connection for the batch's few statements; no transaction or lock is held.
        let mut conn = self.db.acquire().await?;
        let token = Uuid::new_v4().to_string();
        let claimed = sqlx::query_scalar!(
            r#"WITH due AS (
                   SELECT id FROM receipts
                   WHERE status = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at
                   LIMIT $1
                   FOR UPDATE SKIP LOCKED)
               UPDATE receipts r
               SET claimed_by = $2, claimed_until = now() + make_interval(secs => $3),
                   next_attempt_at = now() + make_interval(secs => $3),
                   claimed_instance = $4,
                   attempts = r.attempts + 1
               FROM due WHERE r.id = due.id
               RETURNING r.id"#,
            BATCH,
            token,
            LEASE.as_secs_f64(),
            self.instance.name()
        )
        .fetch_all(&mut *conn)
        .await?;
        for (done, id) in claimed.iter().enumerate() {
            if *stop.borrow() {
                // What is left is due again at once; nothing of it was sent.
                self.release(&mut conn, &claimed[done..], &token).await?;
                break;
            }
            self.send_one(&mut conn, *id, &token).await?;
        }
        Ok(claimed.len())
    }

    async fn send_one(&self, conn: &mut PgConnection, id: Uuid, token: &str) -> sqlx::Result<()> {
        let Some(row) = sqlx::query!(
            r#"SELECT r.id, r.kind, r.message_id, r.attempts, d.donor_email, d.donor_first_name,
                      d.donor_last_name, d.amount, d.cover_fees_amount, d.total_amount,
                      d.refunded_amount, d.currency,
                      d.personal_data_erased_at IS NOT NULL AS "erased!",
                      coalesce(d.payment_status_at, d.created_at) AS "paid_at!",
                      c.title AS campaign_title,
                      EXISTS (SELECT 1 FROM gift_aid_declarations g
                              WHERE g.donation_id = d.id AND g.cancelled_at IS NULL
                                AND g.personal_data_erased_at IS NULL) AS "gift_aid!"
               FROM receipts r
               JOIN donations d ON d.id = r.donation_id
               JOIN campaigns c ON c.slug = d.campaign
               WHERE r.id = $1 AND r.claimed_by = $2 AND r.status = 'pending'"#,
            id,
            token
        )
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(());
        };
        if row.erased {
            sqlx::query!(
                r#"UPDATE receipts
                   SET status = 'canceled', claimed_by = NULL, claimed_until = NULL,
                       claimed_instance = NULL
                   WHERE id = $1"#,
                id
            )
            .execute(&mut *conn)
            .await?;
            tracing::info!(receipt = %id, "receipt not sent: the donor's data was erased");
            return Ok(());
        }
        let receipt = Receipt {
            id: row.id,
            kind: row.kind.clone(),
            message_id: row.message_id,
            donor_email: row.donor_email,
            donor_first_name: row.donor_first_name,
            donor_last_name: row.donor_last_name,
            campaign_title: row.campaign_title,
            amount: row.amount,
            cover_fees_amount: row.cover_fees_amount,
            total_amount: row.total_amount,
            refunded_amount: row.refunded_amount,
            currency: row.currency,
            paid_at: row.paid_at,
            gift_aid_declared: row.gift_aid,
        };
        let message = match compose(&receipt, &self.charity) {
            Ok(message) => message,
            Err(_) => {
                // Not worth retrying: the same data makes the same message.
                return self
                    .failed(
                        conn,
                        id,
                        token,
                        "could not make the message (the address?)",
                        true,
                    )
                    .await;
            }
        };
        match self.transport.deliver(id, &message).await {
            Ok(()) => {
                // Recorded even if the lease ran out meanwhile: it was sent.
                sqlx::query!(
                    r#"UPDATE receipts
                       SET status = 'sent', sent_at = now(), claimed_by = NULL,
                           claimed_until = NULL, claimed_instance = NULL, last_error = NULL
                       WHERE id = $1 AND status = 'pending'"#,
                    id
                )
                .execute(&mut *conn)
                .await?;
                tracing::info!(receipt = %id, kind = %row.kind, "receipt sent");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    receipt = %id,
                    kind = %row.kind,
                    attempts = row.attempts,
                    %error,
                    "could not send a receipt; it is tried again later"
                );
                self.failed(conn, id, token, &error, false).await
            }
        }
    }

    /// Records a failed attempt: due again after a back-off, or set aside after the last.
    async fn failed(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        token: &str,
        error: &str,
        give_up: bool,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            r#"UPDATE receipts
               SET status = CASE WHEN $4 OR attempts >= $5 THEN 'failed' ELSE 'pending' END,
                   next_attempt_at = now() + make_interval(
                       secs => least(3600, power(2, greatest(attempts - 1, 0))::float8)),
                   last_error = $3, claimed_by = NULL, claimed_until = NULL,
                   claimed_instance = NULL
               WHERE id = $1 AND claimed_by = $2"#,
            id,
            token,
            error,
            give_up,
            MAX_ATTEMPTS
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn release(
        &self,
        conn: &mut PgConnection,
        ids: &[Uuid],
        token: &str,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            r#"UPDATE receipts
               SET next_attempt_at = now(), attempts = greatest(attempts - 1, 0),
                   claimed_by = NULL, claimed_until = NULL, claimed_instance = NULL
               WHERE id = ANY($1) AND claimed_by = $2"#,
            ids,
            token
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Releases the claims of senders whose instance's lease has run out or was given up (see
/// `db::Instance`): their receipts are due again at once instead of when the claim's own
/// lease runs out. The attempt stays counted: it may have delivered the message. A live
/// instance renews its lease while it sends, whatever its connections (a pooler may hand its
/// statements to any server session), so its claim is never taken for a dead one's unless
/// its heartbeats are lost for a whole `INSTANCE_LEASE`.
pub async fn release_orphaned(db: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE receipts r
           SET next_attempt_at = now(), claimed_by = NULL, claimed_until = NULL,
               claimed_instance = NULL
           WHERE r.status = 'pending' AND r.claimed_by IS NOT NULL
             AND r.claimed_instance IS NOT NULL
             AND r.claimed_instance NOT IN (
                 SELECT name FROM instances WHERE alive_until > now())"#
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
