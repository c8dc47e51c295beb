//! What we store survives restarts, on SQLite and on PostgreSQL.

use crate::helpers::{Db, TestApp, TestDb, spawn_app_with, spawn_with_settings, test_settings};
use cbtl_sandbox::{faults::Faults, okya};
use serde_json::{Value, json};

/// `/readyz` says the service can work: the database answers, and the job queue and the
/// orders table can be counted (a count that fails is reported as `null`), with nothing
/// dead and nothing waiting for an operator.
async fn assert_ready(app: &TestApp) {
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("readyz JSON");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert!(body["jobs"]["pending"].is_u64(), "{body}");
    assert_eq!(body["jobs"]["dead"], 0, "{body}");
    assert_eq!(body["orders"]["needing_attention"], 0, "{body}");
}

async fn cart_survives_a_restart(kind: Db) {
    // Okya outlives the service here, as the real one would.
    let okya_sim = okya::start(
        okya::OkyaSimConfig {
            api_key: "okya_sandbox_key".to_owned(),
            otp_code: "123456".to_owned(),
            ..okya::OkyaSimConfig::default()
        },
        Faults::new(0, 0.0),
    )
    .await
    .unwrap();
    let (db, url) = TestDb::new(kind).await;
    let mut settings = test_settings(url);
    settings.okya.base_url = Some(okya_sim.base_url.clone());

    let app = spawn_with_settings(settings.clone()).await;
    let customer = app.sign_up("+16265550100", "ada@example.com").await;
    app.use_token(Some(&customer.access_token));
    let cart = app.new_cart("str_pasadena").await;
    let added = app
        .data(
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_water\", quantity: 2}]) { userErrors { code } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(added["cartLinesAdd"]["userErrors"], json!([]));
    drop(app);

    let app = spawn_with_settings(settings).await;
    // The token outlives the restart: the session is in the database.
    app.use_token(Some(&customer.access_token));
    let read = app
        .data(
            "query($c: ID!) { cart(id: $c) { id total { amount } lines { quantity } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(read["cart"]["id"], cart.as_str());
    assert_eq!(read["cart"]["lines"][0]["quantity"], 2);
    assert_ready(&app).await;
    drop(app);
    drop(db);
}

#[tokio::test]
async fn carts_survive_a_restart_on_sqlite() {
    cart_survives_a_restart(Db::Sqlite).await;
}

#[tokio::test]
async fn carts_survive_a_restart_on_postgres() {
    cart_survives_a_restart(Db::Postgres).await;
}

#[tokio::test]
async fn the_whole_cart_story_runs_on_postgres() {
    let app = spawn_app_with(Db::Postgres, |_| {}).await;
    let customer = app.sign_up("+16265550100", "ada@example.com").await;
    app.use_token(Some(&customer.access_token));
    let cart = app.new_cart("str_santa_monica").await;
    let data = app
        .data(
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_cold_brew\", quantity: 1, modifierOptionIds: [\"opt_size_regular\"]}]) { cart { subtotal { amount } } userErrors { code } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(data["cartLinesAdd"]["cart"]["subtotal"]["amount"], "4.95");
    let missing = app
        .data("{ cart(id: \"crt_unknown\") { id } }", json!({}))
        .await;
    assert_eq!(missing["cart"], json!(null));
}

#[tokio::test]
async fn migrations_are_idempotent_across_starts_on_postgres() {
    let (db, url) = TestDb::new(Db::Postgres).await;
    let first = spawn_with_settings(test_settings(url.clone())).await;
    drop(first);
    let second = spawn_with_settings(test_settings(url)).await;
    // Every table is there and answers: the job and order counts are read from them.
    assert_ready(&second).await;
    drop(second);
    drop(db);
}

#[tokio::test]
async fn housekeeping_forgets_only_what_no_longer_matters() {
    use cbtl_bff::store::housekeeping::purge;
    for kind in [Db::Sqlite, Db::Postgres] {
        let app = spawn_app_with(kind, |_| {}).await;
        let customer = app.sign_up("+16265550199", "ada@example.com").await;
        app.eventually("the link job done", || async {
            app.gql_as(
                Some(&customer.access_token),
                "{ me { loyalty { pointsBalance } } }",
                json!({}),
            )
            .await["data"]["me"]["loyalty"]
                .is_object()
        })
        .await;
        let db = &app.app.state().db;
        // The link is visible once SessionM's id is saved; the job ends after Okya is told.
        app.eventually("the link job finished", || async {
            cbtl_bff::store::jobs::count(db, cbtl_bff::store::jobs::PENDING)
                .await
                .unwrap()
                == 0
        })
        .await;
        let now = chrono::Utc::now().timestamp_millis();
        // Today nothing is old enough.
        let today = purge(db, now).await.unwrap();
        assert_eq!(
            (today.jobs, today.sessions, today.refresh_tokens),
            (0, 0, 0),
            "{today:?}"
        );
        // A year on, the finished link job, the sent code and the long-expired session go.
        let later = purge(db, now + 365 * 86_400_000).await.unwrap();
        assert_eq!(later.jobs, 1, "{later:?}");
        assert_eq!(later.sessions, 1);
        assert_eq!(later.refresh_tokens, 1);
        assert!(later.otp_sends >= 1);
        // The customer is kept, and the ended session no longer signs anything in.
        let me = app
            .gql_as(Some(&customer.access_token), "{ me { id } }", json!({}))
            .await;
        assert_eq!(me["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
}
