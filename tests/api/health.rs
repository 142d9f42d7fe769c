use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn healthz_answers_while_the_process_is_up() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readyz_says_ready_while_the_database_answers_and_503_when_it_does_not() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Take the database away under the running app.
    app.db.close().await;
    let response = app.get("/readyz").await;
    assert_problem(response, 503, "service-unavailable").await;
}
