//! GraphQL over HTTP, per the specification, and the health probes.

use crate::helpers::{Db, spawn_app, spawn_app_with};
use serde_json::{Value, json};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

async fn post(
    app: &crate::helpers::TestApp,
    accept: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String, Value) {
    let mut request = app.http.post(app.graphql_url()).body(body.to_owned());
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, ct, body)
}

const STORES: &str = r#"{"query": "{ stores { id } }"}"#;

#[tokio::test]
async fn accept_chooses_the_response_media_type() {
    let app = spawn_app().await;
    let cases = [
        (None, GRAPHQL_RESPONSE),
        (Some("*/*"), GRAPHQL_RESPONSE),
        (Some("application/graphql-response+json"), GRAPHQL_RESPONSE),
        (Some("application/json"), JSON),
        (
            Some("application/graphql-response+json;q=0.5, application/json"),
            JSON,
        ),
        (
            Some("application/json, application/graphql-response+json"),
            GRAPHQL_RESPONSE,
        ),
    ];
    for (accept, expected) in cases {
        let (status, ct, body) = post(&app, accept, Some("application/json"), STORES).await;
        assert_eq!((status, ct.as_str()), (200, expected), "{accept:?}");
        assert!(body["data"]["stores"].is_array());
    }
    let (status, _, _) = post(&app, Some("text/html"), Some("application/json"), STORES).await;
    assert_eq!(status, 406);
}

#[tokio::test]
async fn request_errors_are_400_with_graphql_response_json_and_200_with_json() {
    let app = spawn_app().await;
    for body in [
        r#"{"query": "{ stores { id "}"#,                    // parse error
        r#"{"query": "{ stores { nope } }"}"#,               // validation error
        r#"{"query": "query($x: Int!) { stores { id } }"}"#, // unused variable
    ] {
        let (status, ct, json) = post(
            &app,
            Some("application/graphql-response+json"),
            Some("application/json"),
            body,
        )
        .await;
        assert_eq!((status, ct.as_str()), (400, GRAPHQL_RESPONSE), "{body}");
        assert!(
            json.get("data").is_none(),
            "request errors carry no data: {json}"
        );
        assert!(json["errors"][0]["message"].is_string());

        let (status, ct, json) = post(
            &app,
            Some("application/json"),
            Some("application/json"),
            body,
        )
        .await;
        assert_eq!((status, ct.as_str()), (200, JSON), "{body}");
        assert!(json["errors"].is_array());
    }
}

#[tokio::test]
async fn bodies_that_are_not_graphql_requests_are_400_and_bad_content_types_415() {
    let app = spawn_app().await;
    for body in [
        "not json",
        "[]",
        r#"{"query": 5}"#,
        r#"{"variables": {}}"#,
        "",
    ] {
        let (status, _, json) = post(&app, None, Some("application/json"), body).await;
        assert_eq!(status, 400, "{body}");
        assert!(json["errors"][0]["message"].is_string());
    }
    let (status, _, _) = post(&app, None, None, STORES).await;
    assert_eq!(status, 415);
    let (status, _, _) = post(&app, None, Some("text/plain"), STORES).await;
    assert_eq!(status, 415);
    let (status, _, _) = post(&app, None, Some("application/json; charset=utf-8"), STORES).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn get_runs_queries_refuses_mutations_and_serves_graphiql_to_browsers() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!(
            "{}?query=%7B%20stores%20%7B%20id%20%7D%20%7D",
            app.graphql_url()
        ))
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["data"]["stores"].is_array());

    let mutation = "mutation%20%7B%20cartCreate(input%3A%20%7BstoreId%3A%20%22str_pasadena%22%7D)%20%7B%20cart%20%7B%20id%20%7D%20%7D%20%7D";
    let response = app
        .http
        .get(format!("{}?query={mutation}", app.graphql_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");

    let page = app
        .http
        .get(app.graphql_url())
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("graphiql"), "GraphiQL page");

    let response = app.http.put(app.graphql_url()).send().await.unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn deep_huge_and_expensive_queries_are_refused_cleanly() {
    let app = spawn_app_with(Db::Sqlite, |s| s.graphql.max_body_bytes = 4096).await;
    let deep = "{ stores { products { modifierGroups { options { id } } } } }";
    let (status, _, _) = post(
        &app,
        None,
        Some("application/json"),
        &json!({"query": deep}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    // Nesting beyond the depth limit through introspection, which allows any depth.
    let nested = format!(
        "{{ __schema {{ types {{ {} name {} }} }} }}",
        "ofType { ".repeat(14),
        "} ".repeat(14)
    );
    let (status, _, json) = post(
        &app,
        None,
        Some("application/json"),
        &json!({"query": nested}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("nested too deep"),
        "{json}"
    );

    let huge =
        json!({"query": format!("{{ stores {{ id }} }} # {}", "x".repeat(10_000))}).to_string();
    let (status, _, _) = post(&app, None, Some("application/json"), &huge).await;
    assert_eq!(status, 413);

    let many = format!(
        "{{ {} }}",
        (0..400)
            .map(|i| format!("a{i}: stores {{ id name }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let body = json!({"query": many}).to_string();
    let app = spawn_app().await;
    let (status, _, json) = post(&app, None, Some("application/json"), &body).await;
    assert_eq!(status, 400, "{json}");
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("complex"),
        "{json}"
    );
}

#[tokio::test]
async fn health_and_readiness_probes_answer() {
    let app = spawn_app().await;
    let health = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert!(
        body["jobs"]["pending"].is_u64() && body["jobs"]["dead"] == 0,
        "{body}"
    );
    let missing = app
        .http
        .get(format!("{}/nope", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
