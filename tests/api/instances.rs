//! Which instances are alive, by their leases, never by their database sessions: behind a
//! transaction-pooling proxy an instance alive may have no session of its own, and its claims
//! (an event's, a receipt's) must stand; a killed one's are released once its lease runs out.

use quickdonate::receipts::sender;
use quickdonate::webhooks::queue;
use uuid::Uuid;

use crate::helpers::{
    TestApp, event, objects, spawn_app_with, spawn_stoppable_app, stripe_creates_payment_intents,
};

const ELSEWHERE: &str = "quickdonate elsewhere";

/// A donation's receipt and its payment's event, both claimed by instance [`ELSEWHERE`], which
/// has no session on the database.
async fn claimed_elsewhere(app: &TestApp) -> (Uuid, String) {
    let (donation, pi) = app.create_donation(2500).await;
    let receipt = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO receipts (id, donation_id, kind, message_id, claimed_by, claimed_until,
                               claimed_instance, attempts)
         VALUES ($1, $2, 'thank_you', 'm', 'token', now() + interval '2 minutes', $3, 1)",
    )
    .bind(receipt)
    .bind(donation)
    .bind(ELSEWHERE)
    .execute(&app.db)
    .await
    .unwrap();
    let paid = objects::payment_intent(&pi, Some(donation), "succeeded", 2500);
    let delivered = event("payment_intent.succeeded", paid, 1_800_000_000);
    assert_eq!(app.deliver(&delivered).await.status(), 200);
    let id = delivered["id"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE stripe_events SET claimed_by = gen_random_uuid(),
                claimed_until = now() + interval '5 minutes',
                next_attempt_at = now() + interval '5 minutes', claimed_instance = $2
         WHERE id = $1",
    )
    .bind(&id)
    .bind(ELSEWHERE)
    .execute(&app.db)
    .await
    .unwrap();
    (receipt, id)
}

async fn still_claimed(app: &TestApp, receipt: Uuid, event: &str) -> (bool, bool) {
    let receipt: bool =
        sqlx::query_scalar("SELECT claimed_by IS NOT NULL FROM receipts WHERE id = $1")
            .bind(receipt)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let event: bool =
        sqlx::query_scalar("SELECT claimed_by IS NOT NULL FROM stripe_events WHERE id = $1")
            .bind(event)
            .fetch_one(&app.db)
            .await
            .unwrap();
    (receipt, event)
}

#[tokio::test]
async fn an_instance_with_no_session_keeps_its_claims_while_its_lease_runs() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let (receipt, event) = claimed_elsewhere(&app).await;

    // Alive by its lease, with no session at all (as behind a pooler).
    sqlx::query(
        "INSERT INTO instances (name, alive_until) VALUES ($1, now() + interval '15 seconds')",
    )
    .bind(ELSEWHERE)
    .execute(&app.db)
    .await
    .unwrap();
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(ELSEWHERE)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(sessions, 0);
    assert_eq!(sender::release_orphaned(&app.db).await.unwrap(), 0);
    assert_eq!(queue::release_orphaned(&app.db).await.unwrap(), 0);
    assert_eq!(still_claimed(&app, receipt, &event).await, (true, true));

    // Its lease runs out (killed, or its machine lost): the claims are the others' now.
    sqlx::query("UPDATE instances SET alive_until = now() - interval '1 second' WHERE name = $1")
        .bind(ELSEWHERE)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(sender::release_orphaned(&app.db).await.unwrap(), 1);
    assert_eq!(queue::release_orphaned(&app.db).await.unwrap(), 1);
    assert_eq!(still_claimed(&app, receipt, &event).await, (false, false));
}

#[tokio::test]
async fn a_running_instance_holds_a_lease_and_gives_it_up_when_it_stops() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (app, served) = spawn_stoppable_app(|s| s.instance_lease = "3s".into(), async move {
        let _ = stopped.await;
    })
    .await;
    let leases = |db: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, bool)>(
            "SELECT name, alive_until > now() FROM instances ORDER BY name",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..100 {
        held = leases(app.db.clone()).await;
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held.len(), 1, "taken as it starts: {held:?}");
    assert!(held[0].1, "alive: {held:?}");
    // Renewed: still alive after more than a whole lease.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(leases(app.db.clone()).await, held);

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    // The app's own pool is closed now.
    let db = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    assert_eq!(leases(db.clone()).await, [], "given up on a clean shutdown");
    db.close().await;
}
