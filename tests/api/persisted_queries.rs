//! Automatic persisted queries, replaying the requests `@apollo/client` 4's
//! `PersistedQueryLink` sends (recorded from the real link against this service): the
//! hash alone, then on `PersistedQueryNotFound` the query with its hash, then the hash
//! alone again, by POST, and by GET with `useGETForHashedQueries`.

use crate::helpers::{TestApp, error_code, spawn_app};
use serde_json::{Value, json};

const QUERY: &str = "query StoresGet {\n  stores {\n    id\n    name\n    __typename\n  }\n}";

/// The hash the link computes: SHA-256 of the query text, lowercase hex.
fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The extensions the link sends; Apollo Client adds `clientLibrary` to every request.
fn extensions(hash: &str) -> Value {
    json!({
        "clientLibrary": {"name": "@apollo/client", "version": "4.3.8"},
        "persistedQuery": {"version": 1, "sha256Hash": hash}
    })
}

async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header(
            "accept",
            "application/graphql-response+json,application/json;q=0.9",
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get(app: &TestApp, operation: &str, extensions: &Value) -> (u16, Value) {
    let response = app
        .http
        .get(app.graphql_url())
        .query(&[
            ("operationName", operation),
            ("variables", "{}"),
            ("extensions", &extensions.to_string()),
        ])
        .header(
            "accept",
            "application/graphql-response+json,application/json;q=0.9",
        )
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_apollo_link_sequence_registers_then_runs_by_hash_over_post_and_get() {
    let app = spawn_app().await;
    let post_query = QUERY.replace("StoresGet", "StoresPost");
    let hash = sha256(&post_query);
    let hash_only =
        json!({"operationName": "StoresPost", "variables": {}, "extensions": extensions(&hash)});

    let (_, body) = post(&app, hash_only.clone()).await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");

    let mut with_query = hash_only.clone();
    with_query["query"] = json!(post_query);
    let (status, body) = post(&app, with_query).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["stores"][0]["id"].is_string(), "{body}");

    let (status, body) = post(&app, hash_only).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["stores"][0]["id"].is_string(), "{body}");

    // useGETForHashedQueries: the hash by GET, the registration by POST, then GET again.
    let hash = sha256(QUERY);
    let (_, body) = get(&app, "StoresGet", &extensions(&hash)).await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    let (status, _) = post(
        &app,
        json!({"operationName": "StoresGet", "variables": {}, "extensions": extensions(&hash), "query": QUERY}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = get(&app, "StoresGet", &extensions(&hash)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["stores"][0]["name"].is_string(), "{body}");
}

#[tokio::test]
async fn a_hash_that_does_not_match_its_query_is_refused_and_not_registered() {
    let app = spawn_app().await;
    let other = sha256("{ stores { id } }");
    let (status, body) = post(
        &app,
        json!({"query": "{ me { id email } }", "extensions": extensions(&other)}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "BAD_REQUEST", "{body}");
    let (_, body) = post(&app, json!({"extensions": extensions(&other)})).await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");

    // A document that does not validate is not kept either.
    let invalid = "{ nope }";
    let (_, body) = post(
        &app,
        json!({"query": invalid, "extensions": extensions(&sha256(invalid))}),
    )
    .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    let (_, body) = post(&app, json!({"extensions": extensions(&sha256(invalid))})).await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
}

#[tokio::test]
async fn other_versions_are_not_supported_and_malformed_extensions_are_bad_requests() {
    let app = spawn_app().await;
    let hash = sha256("{ stores { id } }");
    let (_, body) = post(
        &app,
        json!({"extensions": {"persistedQuery": {"version": 2, "sha256Hash": hash}}}),
    )
    .await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_SUPPORTED", "{body}");
    for malformed in [
        json!({"version": 1}),
        json!({"version": 1, "sha256Hash": "abc"}),
        json!("yes"),
    ] {
        let (status, body) = post(&app, json!({"extensions": {"persistedQuery": malformed}})).await;
        assert_eq!((status, error_code(&body)), (400, "BAD_REQUEST"), "{body}");
    }
}

#[tokio::test]
async fn a_registered_mutation_cannot_run_by_get() {
    let app = spawn_app().await;
    let mutation = "mutation { signOut { userErrors { code } } }";
    let hash = sha256(mutation);
    let (status, body) = post(
        &app,
        json!({"query": mutation, "extensions": extensions(&hash)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let response = app
        .http
        .get(app.graphql_url())
        .query(&[("extensions", extensions(&hash).to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}
