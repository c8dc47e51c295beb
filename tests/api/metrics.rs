//! `GET /metrics` shows the database query counter in Prometheus's text format, and a
//! request that reads the database moves it.

use crate::helpers::{Db, spawn_app_with};
use serde_json::json;

/// `cbtl_db_queries_total`'s value in the service's `/metrics` (counted for every app of
/// this test process, which share one recorder, so only growth is asserted).
async fn queries(app: &crate::helpers::TestApp) -> f64 {
    let response = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("cbtl_db_queries_total "))
        .unwrap_or_else(|| panic!("no cbtl_db_queries_total in {text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn the_database_query_counter_counts_the_queries_a_request_makes() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    let before = queries(&app).await;
    // Registration writes the customer (and its code) to the database.
    let body = app.register("+16265550177", "metrics@example.com").await;
    assert_eq!(
        body["data"]["accountRegister"]["userErrors"],
        json!([]),
        "{body}"
    );
    let after = queries(&app).await;
    assert!(after > before, "{before} → {after}");
}
