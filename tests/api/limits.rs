//! The public endpoint's limits: each hostile request gets a clear error with a code, and
//! the server answers everyone else at once.

use crate::helpers::{Db, Sim, TestApp, spawn_app_with};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// POSTs `body` as `application/graphql-response+json`: the status and the body.
async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.graphql_url())
        .header("accept", "application/graphql-response+json")
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

/// Another client is answered at once, while or right after a hostile request.
async fn still_serving(app: &TestApp) {
    let started = Instant::now();
    let (status, body) = post(app, json!({"query": "{ __typename }"})).await;
    assert_eq!(
        (status, &body["data"]["__typename"]),
        (200, &json!("Query"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another request waited {:?}",
        started.elapsed()
    );
}

/// `body` is refused before it runs, with `GRAPHQL_VALIDATION_FAILED` and a message naming
/// the limit (`names`), and another client is served at once.
async fn refused(app: &TestApp, body: Value, names: &str) {
    let (status, answer) = post(app, body).await;
    assert_eq!(
        (status, code(&answer)),
        (400, "GRAPHQL_VALIDATION_FAILED"),
        "{answer}"
    );
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(names), "{answer}");
    still_serving(app).await;
}

async fn accepted(app: &TestApp, body: Value) {
    let (status, answer) = post(app, body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("errors").is_none(), "{answer}");
}

#[tokio::test]
async fn too_many_aliases_root_fields_or_operations_are_refused_before_running() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    // 30 aliased fields pass (at most 20 at the root, the rest one level down); the 31st
    // is refused, as are 32 aliases hidden in a fragment spread twice.
    let aliases = |n: usize| {
        (0..n)
            .map(|i| format!("a{i}: __typename"))
            .collect::<Vec<_>>()
    };
    let nested = |n: usize| {
        let fields = aliases(n);
        let (root, below) = fields.split_at(n.min(10));
        format!("{{ {} stores {{ {} }} }}", root.join(" "), below.join(" "))
    };
    accepted(&app, json!({"query": nested(30)})).await;
    refused(&app, json!({"query": nested(31)}), "aliased").await;
    let fragment = format!(
        "query {{ ...A ...A }} fragment A on Query {{ {} }}",
        aliases(16).join(" ")
    );
    refused(&app, json!({"query": fragment}), "aliased").await;

    // 21 fields at the root (no aliases needed) are refused; 20 pass.
    let root = |n: usize| format!("{{ {} }}", vec!["__typename"; n].join(" "));
    accepted(&app, json!({"query": root(20)})).await;
    refused(&app, json!({"query": root(21)}), "root").await;

    // A document defining 21 operations is refused, even though one would run.
    let operations = |n: usize| {
        (0..n)
            .map(|i| format!("query Q{i} {{ __typename }}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    accepted(
        &app,
        json!({"query": operations(20), "operationName": "Q0"}),
    )
    .await;
    refused(
        &app,
        json!({"query": operations(21), "operationName": "Q0"}),
        "operations",
    )
    .await;
}

#[tokio::test]
async fn a_slow_operation_is_answered_with_timeout_and_others_are_served_meanwhile() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.graphql.operation_timeout_secs = 1;
    })
    .await;
    // Okya takes 5 s to list the stores: the query is cut at 1 s.
    app.faults(Sim::Okya, json!({"latency_ms": 5_000})).await;
    let slow = {
        let app_url = app.graphql_url();
        let http = app.http.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http
                .post(app_url)
                .header("accept", "application/graphql-response+json")
                .json(&json!({"query": "{ stores { id } }"}))
                .send()
                .await
                .expect("request");
            let body: Value = response.json().await.expect("JSON");
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serving(&app).await;
    let (took, body) = slow.await.expect("the slow request");
    assert_eq!(code(&body), "TIMEOUT", "{body}");
    assert!(
        took < Duration::from_secs(4),
        "answered after {took:?}, not at the timeout"
    );
    app.faults(Sim::Okya, json!({"latency_ms": 0})).await;
    still_serving(&app).await;
}

#[tokio::test]
async fn introspection_can_be_switched_off_by_a_setting() {
    let query = json!({"query": "{ __schema { queryType { name } } }"});
    let on = spawn_app_with(Db::Sqlite, |_| {}).await;
    let (status, body) = post(&on, query.clone()).await;
    assert_eq!(
        (status, &body["data"]["__schema"]["queryType"]["name"]),
        (200, &json!("Query")),
        "{body}"
    );
    let off = spawn_app_with(Db::Sqlite, |s| s.graphql.introspection = Some(false)).await;
    let (status, body) = post(&off, query).await;
    assert_eq!(
        (status, code(&body)),
        (400, "GRAPHQL_VALIDATION_FAILED"),
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Introspection is disabled"),
        "{body}"
    );
    // `__typename` is not introspection of the schema: clients' caches need it.
    still_serving(&off).await;
}
