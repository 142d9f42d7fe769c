use serde_json::{Value, json};

use crate::helpers::{assert_problem, donation_body, spawn_app, stripe_creates_payment_intents};

#[tokio::test]
async fn the_kashmir_campaign_is_served_from_the_catalogue() {
    let app = spawn_app().await;
    let response = app.get("/v1/campaigns/kashmir").await;
    assert_eq!(response.status(), 200);
    let campaign: Value = response.json().await.unwrap();
    assert_eq!(
        campaign,
        json!({
            "slug": "kashmir",
            "title": "Kashmir Campaign",
            "currency": "gbp",
            "suggested_amounts": [1000, 2500, 5000, 10000],
            "min_amount": 200,
            "max_amount": 1000000,
            "goal_amount": null,
            "raised_amount": 0,
            "donation_count": 0,
            "active": true
        })
    );
}

#[tokio::test]
async fn an_unknown_campaign_is_a_404_problem() {
    let app = spawn_app().await;
    let response = app.get("/v1/campaigns/atlantis").await;
    assert_problem(response, 404, "not-found").await;
}

#[tokio::test]
async fn pending_donations_never_count_in_the_total() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    for _ in 0..3 {
        let response = app.post_donation("kashmir", &donation_body(), None).await;
        assert_eq!(response.status(), 201);
    }
    assert_eq!(app.donation_count().await, 3);
    let campaign: Value = app.get("/v1/campaigns/kashmir").await.json().await.unwrap();
    assert_eq!(campaign["raised_amount"], 0);
    assert_eq!(campaign["donation_count"], 0);
}

#[tokio::test]
async fn an_inactive_campaign_refuses_donations_with_a_409_and_stores_nothing() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    sqlx::query("UPDATE campaigns SET active = false WHERE slug = 'kashmir'")
        .execute(&app.db)
        .await
        .unwrap();
    let response = app.post_donation("kashmir", &donation_body(), None).await;
    assert_problem(response, 409, "campaign-inactive").await;
    assert_eq!(app.donation_count().await, 0);
    assert!(app.stripe_requests("/v1/payment_intents").await.is_empty());
}

#[tokio::test]
async fn a_campaign_left_out_of_the_catalogue_is_deleted_or_retired_but_never_loses_donations() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    sqlx::query(
        "INSERT INTO campaigns (slug, title, currency, min_amount, max_amount)
         VALUES ('old-appeal', 'Old appeal', 'gbp', 100, 1000),
                ('empty-appeal', 'Empty appeal', 'gbp', 100, 1000)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let response = app
        .post_donation(
            "old-appeal",
            &json!({
                "amount": 500, "frequency": "one_off",
                "donor": {"email": "a@example.org", "first_name": "A", "last_name": "B"}
            }),
            None,
        )
        .await;
    assert_eq!(response.status(), 201);

    let campaigns = quickdonate::campaigns::catalogue::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/campaigns.toml"
    )))
    .unwrap();
    quickdonate::campaigns::catalogue::sync(&app.db, &campaigns)
        .await
        .unwrap();

    let old: Value = app
        .get("/v1/campaigns/old-appeal")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        old["active"], false,
        "a campaign with donations is kept, inactive"
    );
    assert_eq!(app.get("/v1/campaigns/empty-appeal").await.status(), 404);
    assert_eq!(app.donation_count().await, 1);
}

/// Another instance's worker moves the total; this instance has not heard.
async fn move_total_elsewhere(app: &crate::helpers::TestApp) {
    sqlx::query(
        "UPDATE campaigns SET raised_amount = 777, donation_count = 1 WHERE slug = 'kashmir'",
    )
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_campaign_read_is_served_from_the_instances_cache() {
    let app = crate::helpers::spawn_app_with(|s| s.campaign_cache_ms = 60_000).await;
    let before: Value = app.get("/v1/campaigns/kashmir").await.json().await.unwrap();
    move_total_elsewhere(&app).await;
    let cached: Value = app.get("/v1/campaigns/kashmir").await.json().await.unwrap();
    assert_eq!(cached, before);
}

#[tokio::test]
async fn a_campaign_read_is_never_older_than_the_cache_time() {
    let app = crate::helpers::spawn_app_with(|s| s.campaign_cache_ms = 200).await;
    app.get("/v1/campaigns/kashmir").await;
    move_total_elsewhere(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let fresh: Value = app.get("/v1/campaigns/kashmir").await.json().await.unwrap();
    assert_eq!(fresh["raised_amount"], 777);
}

#[tokio::test]
async fn the_catalogue_lists_the_active_campaigns_as_each_is_shown() {
    let app = spawn_app().await;
    sqlx::query(
        "INSERT INTO campaigns (slug, title, currency, min_amount, max_amount, active)
         VALUES ('autumn-appeal', 'Autumn appeal', 'gbp', 100, 1000, true),
                ('retired-appeal', 'Retired appeal', 'gbp', 100, 1000, false)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let response = app.get("/v1/campaigns").await;
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.unwrap();
    let campaigns = listed["campaigns"].as_array().unwrap();
    let slugs: Vec<&str> = campaigns
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        ["autumn-appeal", "kashmir"],
        "active ones only, by slug"
    );
    for campaign in campaigns {
        let slug = campaign["slug"].as_str().unwrap();
        let shown: Value = app
            .get(&format!("/v1/campaigns/{slug}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            *campaign, shown,
            "the same fields as GET /v1/campaigns/{slug}"
        );
    }
}
