//! Exports never starve the webhooks: finance's reads and exports have a pool of their own
//! (`FINANCE_MAX_CONNECTIONS`), here on a real streaming standby (`DATABASE_READ_URL`,
//! started with `pg_basebackup -R`); ten exports whose clients stop reading hold none of the
//! main pool's connections and no snapshot on the primary, webhooks are stored meanwhile, and
//! each stalled export is cut off after `FINANCE_EXPORT_STALL`, its snapshot released.

use std::time::Duration;

use quickdonate::operators::access::Role;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::finance_access::token;
use crate::helpers::{TestApp, event, fresh_database_url, objects, spawn_app_on, start_standby};

const DONATIONS: i64 = 60_000;
const EXPORTS: usize = 10;

/// Sessions of `app`'s instance on `db` that hold a transaction open (a snapshot).
async fn open_transactions(db: &PgPool, app_db: &PgPool) -> i64 {
    let instance: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(app_db)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = $1 AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
    )
    .bind(instance)
    .fetch_one(db)
    .await
    .unwrap()
}

/// A CSV export of every donation asked for by a client that reads the answer's first bytes
/// and then stops reading, its socket open (and its receive buffer small, so the server's
/// writes soon block).
async fn stalled_export(app: &TestApp, token: &str) -> tokio::net::TcpStream {
    let address = app.address.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /v1/finance/donations HTTP/1.1\r\nHost: {address}\r\nAccept: text/csv\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the export starts");
    stream
}

#[tokio::test]
async fn stalled_exports_on_a_standby_leave_the_webhooks_their_pool_and_are_cut_off() {
    let root = tempfile::tempdir().unwrap();
    let standby = start_standby(root.path());
    let (name, _) = fresh_database_url().await;
    let read_url = standby.pg.url(&name);
    let app = spawn_app_on(name, move |s| {
        s.database_read_url = Some(read_url.into());
        s.finance_max_connections = 2;
        // Long enough that a busy machine (the whole suite at once) stores the webhooks below
        // before any stalled export is cut off.
        s.finance_export_stall = "8s".to_owned();
        s.apply_events = false;
    })
    .await;
    let finance = token(&app, "treasurer", Role::Finance).await;
    sqlx::query(
        "INSERT INTO donations (id, campaign, frequency, amount, cover_fees_amount, total_amount,
                                currency, donor_email, donor_first_name, donor_last_name,
                                created_at)
         SELECT gen_random_uuid(), 'kashmir', 'one_off', 1000 + n, 0, 1000 + n, 'gbp',
                'donor' || n || '@example.org', 'Donor', 'Number ' || n,
                now() - make_interval(secs => n)
         FROM generate_series(1, $1) AS n",
    )
    .bind(DONATIONS)
    .execute(&app.db)
    .await
    .unwrap();

    // The standby has replayed them (and the token) before the exports read it.
    let replica = PgPool::connect(&standby.pg.url(&app.db_name))
        .await
        .unwrap();
    for _ in 0..200 {
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM donations")
            .fetch_one(&replica)
            .await
            .unwrap();
        if seen == DONATIONS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&replica)
        .await
        .unwrap();
    assert!(in_recovery, "a real standby");

    // Ten exports whose clients stop reading: two hold the finance pool, the rest wait for it.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(stalled_export(&app, &finance).await);
    }
    let waiting: Vec<_> = (2..EXPORTS)
        .map(|_| {
            let http = app.http.clone();
            let url = format!("{}/v1/finance/donations", app.address);
            let finance = finance.clone();
            tokio::spawn(async move {
                http.get(url)
                    .bearer_auth(finance)
                    .header("accept", "text/csv")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for _ in 0..100 {
        if open_transactions(&replica, &app.db).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        open_transactions(&replica, &app.db).await,
        2,
        "the stalled exports' snapshots are on the standby"
    );

    // Webhooks meanwhile: every one stored, none waiting on an export.
    let deliveries: Vec<_> = (0..100)
        .map(|i| {
            let intent = objects::payment_intent(&format!("pi_other_{i}"), None, "succeeded", 500);
            event("payment_intent.succeeded", intent, 1_790_000_000 + i)
        })
        .collect();
    let answers = futures_util::future::join_all(deliveries.iter().map(|e| app.deliver(e))).await;
    assert!(answers.iter().all(|a| a.status() == 200));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 100);
    assert_eq!(
        open_transactions(&app.db, &app.db).await,
        0,
        "no snapshot held on the primary"
    );
    assert_eq!(
        open_transactions(&replica, &app.db).await,
        2,
        "the exports were still stalled while the webhooks were stored"
    );

    // Cut off after the stall they are allowed: every snapshot released, each export's end
    // recorded with fewer rows than it would have sent.
    for _ in 0..300 {
        if open_transactions(&replica, &app.db).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open_transactions(&replica, &app.db).await, 0);
    for waited in waiting {
        let status = waited.await.unwrap();
        assert!(
            matches!(status, Ok(200 | 503)),
            "a waiting export starts late or is told to retry: {status:?}"
        );
    }
    let ends: Vec<i64> = sqlx::query_scalar(
        "SELECT row_count FROM finance_audit_log
         WHERE ends IS NOT NULL AND what = 'GET /v1/finance/donations (csv)'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(ends.len() >= 2, "{ends:?}");
    assert!(ends.iter().all(|rows| *rows < DONATIONS), "{ends:?}");
    drop(stalled);
    replica.close().await;
}
