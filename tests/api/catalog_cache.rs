//! The in-process catalogue: one Okya read for a burst on a cold cache, dropped by Okya's
//! `menu.updated` webhook, served stale while Okya is down up to `catalog.max_stale_secs`
//! and then refused.

use crate::helpers::{Db, Sim, TestApp, spawn_app_with};
use serde_json::json;
use std::time::Duration;

const CATALOGUE: &str =
    "{ stores { id name isOpen products { id name price { amount currencyCode } } } }";

/// Okya's catalogue reads (`GET /v1/stores`, `GET /v1/products`) since the last reset.
async fn catalogue_reads(app: &TestApp) -> (u64, u64) {
    let calls = app.calls(Sim::Okya).await;
    (
        calls.get("GET /v1/stores").copied().unwrap_or(0),
        calls.get("GET /v1/products").copied().unwrap_or(0),
    )
}

#[tokio::test]
async fn a_burst_of_catalogue_queries_on_a_cold_cache_reads_okya_once() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    // Slow enough that every query of the burst arrives while the first read runs.
    app.faults(Sim::Okya, json!({"latency_ms": 300})).await;
    app.reset_calls(Sim::Okya).await;
    let burst = (0..40).map(|_| app.gql(CATALOGUE, json!({})));
    let bodies = futures_util::future::join_all(burst).await;
    for body in &bodies {
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(body["data"]["stores"].as_array().map(Vec::len), Some(4));
    }
    assert_eq!(bodies[0], bodies[39]);
    assert_eq!(catalogue_reads(&app).await, (1, 1));

    // Warm: more queries, no more reads.
    for _ in 0..5 {
        app.data(CATALOGUE, json!({})).await;
    }
    app.data(
        r#"{ store(id: "str_pasadena") { name } product(id: "prd_latte") { name } }"#,
        json!({}),
    )
    .await;
    assert_eq!(catalogue_reads(&app).await, (1, 1));
}

#[tokio::test]
async fn okyas_menu_updated_webhook_drops_the_catalogue() {
    // Fresh for an hour: only the webhook can explain a change.
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.catalog.fresh_secs = 3_600;
        s.catalog.max_stale_secs = 3_600;
    })
    .await;
    let before = app.data(CATALOGUE, json!({})).await;
    assert_eq!(before["stores"][0]["products"][0]["name"], "Caffè Latte");
    assert_eq!(before["stores"][0]["isOpen"], true);

    app.sandbox(
        reqwest::Method::PATCH,
        Sim::Okya,
        "products/prd_latte",
        json!({"name": "Caffè Latte (new recipe)"}),
    )
    .await;
    app.eventually("the renamed product", || async {
        let data = app.data(CATALOGUE, json!({})).await;
        data["stores"][0]["products"][0]["name"] == "Caffè Latte (new recipe)"
    })
    .await;

    app.sandbox(
        reqwest::Method::PUT,
        Sim::Okya,
        "stores/str_pasadena",
        json!({"is_open": false}),
    )
    .await;
    app.eventually("the closed store", || async {
        let data = app
            .data(r#"{ store(id: "str_pasadena") { isOpen } }"#, json!({}))
            .await;
        data["store"]["isOpen"] == false
    })
    .await;

    // The webhooks were delivered and answered 204.
    let hooks = app.sandbox_get(Sim::Okya, "webhooks").await;
    let menu: Vec<_> = hooks["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "menu.updated")
        .collect();
    assert_eq!(menu.len(), 2, "{hooks}");
    assert!(menu.iter().all(|d| d["status"] == 204), "{hooks}");
}

#[tokio::test]
async fn while_okya_is_down_the_stale_catalogue_is_served_up_to_the_bound_then_an_error() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.catalog.fresh_secs = 1;
        s.catalog.max_stale_secs = 4;
        // The breaker is not what this test is about.
        s.breaker.min_calls = 1_000_000;
    })
    .await;
    let fresh = app.data(CATALOGUE, json!({})).await;
    let read_at = std::time::Instant::now();
    app.faults(Sim::Okya, json!({"error_rate": 1.0})).await;

    // Stale (older than fresh_secs): still served, while the background reads fail.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.reset_calls(Sim::Okya).await;
    for _ in 0..3 {
        assert_eq!(app.data(CATALOGUE, json!({})).await, fresh);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (stores, _) = catalogue_reads(&app).await;
    assert!(stores >= 1, "a stale copy starts a background read");

    // Past max_stale_secs: never served.
    let past = Duration::from_millis(4_300).saturating_sub(read_at.elapsed());
    tokio::time::sleep(past).await;
    let body = app.gql(CATALOGUE, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE",
        "{body}"
    );

    // Okya is back: read again.
    app.faults(Sim::Okya, json!({"error_rate": 0.0})).await;
    assert_eq!(app.data(CATALOGUE, json!({})).await, fresh);
}

#[tokio::test]
async fn a_stale_catalogue_is_read_again_in_the_background_once() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.catalog.fresh_secs = 1;
        s.catalog.max_stale_secs = 60;
    })
    .await;
    app.data(CATALOGUE, json!({})).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    app.faults(Sim::Okya, json!({"latency_ms": 300})).await;
    app.reset_calls(Sim::Okya).await;
    // Answered from the stale copy at once (one background read starts), and the burst
    // does not start more while it runs.
    let burst = (0..20).map(|_| app.gql(CATALOGUE, json!({})));
    for body in futures_util::future::join_all(burst).await {
        assert!(body.get("errors").is_none(), "{body}");
    }
    app.eventually("the background read", || async {
        catalogue_reads(&app).await == (1, 1)
    })
    .await;
    assert_eq!(catalogue_reads(&app).await, (1, 1));
}

#[tokio::test]
async fn a_cart_is_read_from_okya_every_time() {
    let app = crate::helpers::spawn_app().await;
    let cart = app.new_cart("str_pasadena").await;
    app.reset_calls(Sim::Okya).await;
    for _ in 0..3 {
        app.data(
            "query($c: ID!) { cart(id: $c) { id store { name } total { amount } } }",
            json!({"c": cart}),
        )
        .await;
    }
    let calls = app.calls(Sim::Okya).await;
    assert_eq!(calls.get("GET /v1/carts/{cart_id}"), Some(&3), "{calls:?}");
}
