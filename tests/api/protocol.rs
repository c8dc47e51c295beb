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
    // No Accept, or only `*/*`: application/json (graphql-http's audits 47DE and 80D8).
    let cases = [
        (None, JSON),
        (Some("*/*"), JSON),
        (Some("application/*"), JSON),
        (
            Some("application/graphql-response+json, */*;q=0.5"),
            GRAPHQL_RESPONSE,
        ),
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
    let (status, _, body) = post(&app, Some("text/html"), Some("application/json"), STORES).await;
    assert_eq!(status, 406);
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_ACCEPTABLE");
}

/// Sends a request as raw HTTP/1.1 and returns the status and the body.
async fn raw_http(app: &crate::helpers::TestApp, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.app.addr())
        .await
        .expect("connect");
    socket.write_all(request).await.expect("request written");
    let mut answer = Vec::new();
    // The server may answer before it has read everything and then close: read what came.
    let _ = socket.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn an_over_long_chunked_body_is_413_like_a_declared_one() {
    let app = spawn_app_with(Db::Sqlite, |s| s.graphql.max_body_bytes = 4096).await;
    let query =
        json!({"query": format!("{{ stores {{ id }} }} # {}", "x".repeat(10_000))}).to_string();
    let mut chunked = b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for piece in query.as_bytes().chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_http(&app, &chunked).await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(body.trim()).expect("a GraphQL-shaped body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");

    let declared = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{query}",
        query.len()
    );
    let (status, body) = raw_http(&app, declared.as_bytes()).await;
    assert_eq!(status, 413);
    // The same GraphQL-shaped answer, however the body was framed.
    let body: Value = serde_json::from_str(body.trim()).expect("a GraphQL-shaped body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");

    // A chunked body within the limit runs.
    let small = r#"{"query": "{ stores { id } }"}"#;
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        small.len()
    );
    let (status, body) = raw_http(&app, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn content_types_are_parsed_as_http_defines_them() {
    let app = spawn_app().await;
    for content_type in [
        "application/json ; charset=utf-8",
        "Application/JSON;charset=\"UTF-8\"",
        "application/json ;charset=utf-8",
    ] {
        let (status, _, body) = post(&app, None, Some(content_type), STORES).await;
        assert_eq!(status, 200, "{content_type}: {body}");
        assert!(body["data"]["stores"].is_array());
    }
    for content_type in [
        "application/json; charset=iso-8859-1",
        "application/jsonx",
        "text/plain",
    ] {
        let (status, _, body) = post(&app, None, Some(content_type), STORES).await;
        assert_eq!(status, 415, "{content_type}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "UNSUPPORTED_MEDIA_TYPE"
        );
    }
}

/// The same GraphQL-over-HTTP request sent by POST and by GET, answered alike.
async fn both_ways(app: &crate::helpers::TestApp, params: &[(&str, &str)]) -> [(u16, Value); 2] {
    let mut body = serde_json::Map::new();
    for (name, value) in params {
        let value = match *name {
            "variables" | "extensions" => serde_json::from_str(value).unwrap_or(json!(value)),
            _ => json!(value),
        };
        body.insert((*name).to_owned(), value);
    }
    let posted = app
        .http
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .body(Value::Object(body).to_string())
        .send()
        .await
        .unwrap();
    let got = app
        .http
        .get(app.graphql_url())
        .query(params)
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .unwrap();
    let mut answers = Vec::new();
    for response in [posted, got] {
        let status = response.status().as_u16();
        answers.push((status, response.json().await.unwrap_or(Value::Null)));
    }
    [answers.remove(0), answers.remove(0)]
}

#[tokio::test]
async fn get_follows_the_same_rules_as_post() {
    let app = spawn_app().await;
    let two =
        "query Stores { stores { id } } query Products { products(ids: [\"prd_latte\"]) { id } }";
    let [post, get] = both_ways(&app, &[("query", two), ("operationName", "Products")]).await;
    assert_eq!(post, get);
    assert_eq!(get.0, 200);
    assert_eq!(get.1["data"], json!({"products": [{"id": "prd_latte"}]}));

    let [post, get] = both_ways(&app, &[("query", two), ("operationName", "")]).await;
    assert_eq!(post.0, 400, "several operations and no name: {}", post.1);
    assert_eq!(post, get);

    let [post, get] = both_ways(
        &app,
        &[
            (
                "query",
                "query($ids: [ID!]!) { products(ids: $ids) { id } }",
            ),
            ("variables", r#"{"ids": ["prd_mocha"]}"#),
        ],
    )
    .await;
    assert_eq!(post, get);
    assert_eq!(get.1["data"]["products"][0]["id"], "prd_mocha");

    let [post, get] = both_ways(
        &app,
        &[("query", "{ stores { id } }"), ("variables", "[1]")],
    )
    .await;
    assert_eq!((post.0, get.0), (400, 400), "variables must be an object");
    assert_eq!(get.1["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    // A mutation picked by operationName from a document that also holds a query: GET
    // refuses it (405), while the query of the same document runs.
    let mixed = "query Q { stores { id } } mutation M { cartCreate(input: {storeId: \"str_pasadena\"}) { cart { id } } }";
    let get_operation = |name: &'static str| {
        app.http
            .get(app.graphql_url())
            .query(&[("query", mixed), ("operationName", name)])
            .send()
    };
    let refused = get_operation("M").await.unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "POST");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "METHOD_NOT_ALLOWED"
    );
    let allowed = get_operation("Q").await.unwrap();
    assert_eq!(allowed.status(), 200);
    // No Accept on GET: application/json (audit 80D8).
    assert_eq!(allowed.headers()["content-type"], JSON);
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
    // Introspection has limits of its own, which 50 levels of `ofType` exceed.
    let nested = format!(
        "{{ __schema {{ types {{ {} name {} }} }} }}",
        "ofType { ".repeat(50),
        "} ".repeat(50)
    );
    let (status, _, json) = post(
        &app,
        Some("application/graphql-response+json"),
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
    // Aliases and root fields have their own caps (tests/api/limits.rs); lifted here so
    // the complexity limit is what refuses these 400 fields.
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.graphql.max_aliases = 1_000;
        s.graphql.max_root_fields = 1_000;
    })
    .await;
    let (status, _, json) = post(
        &app,
        Some("application/graphql-response+json"),
        Some("application/json"),
        &body,
    )
    .await;
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
    let body = app.readiness().await;
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
