//! Every error the service returns carries an `extensions.code` from the one documented
//! list: the README's "Error codes" section, which is also `ErrorCode` in the code.

use crate::helpers::{TestApp, send_json, spawn_app};
use cbtl_bff::graphql::errors::ErrorCode;
use futures_util::StreamExt;
use serde_json::{Value, json};
use strum::IntoEnumIterator;
use tokio_tungstenite::tungstenite::Message;

/// The codes the README documents, read from its "Error codes" table.
fn documented_codes() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Error codes"))
        .expect("a section \"Error codes\"");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_documents_exactly_the_codes_of_the_code() {
    let documented = documented_codes();
    let in_code: Vec<String> = ErrorCode::iter().map(|c| c.as_str().to_owned()).collect();
    for code in &in_code {
        assert!(documented.contains(code), "{code} is not in the README");
    }
    for code in &documented {
        assert!(
            in_code.contains(code),
            "the README lists {code}, the code does not"
        );
    }
}

/// Asserts every error of a GraphQL response has a documented code; returns the codes.
fn codes(body: &Value) -> Vec<String> {
    let documented = documented_codes();
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {body}"));
    assert!(!errors.is_empty(), "{body}");
    errors
        .iter()
        .map(|e| {
            let code = e["extensions"]["code"]
                .as_str()
                .unwrap_or_else(|| panic!("an error without a code: {body}"));
            assert!(documented.contains(&code.to_owned()), "{code} undocumented");
            code.to_owned()
        })
        .collect()
}

async fn post_json(app: &TestApp, body: Value) -> Value {
    let token = app.token().unwrap_or_default();
    app.http
        .post(app.graphql_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const ADD: &str = "mutation($c: ID!, $q: Int!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_latte\", quantity: $q, modifierOptionIds: [\"opt_size_small\"]}]) { userErrors { code } } }";

#[tokio::test]
async fn parse_validation_and_coercion_errors_carry_codes() {
    let app = spawn_app().await;
    let cart = app.new_cart("str_pasadena").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"query": "{"}), "GRAPHQL_PARSE_FAILED"),
        (json!({"query": "{ stores { id "}), "GRAPHQL_PARSE_FAILED"),
        (json!({"query": "{ nope }"}), "GRAPHQL_VALIDATION_FAILED"),
        (
            json!({"query": "query($x: Int!) { stores { id } }"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (json!({"query": "{ stores }"}), "GRAPHQL_VALIDATION_FAILED"),
        (
            json!({"query": "query A { stores { id } } query B { stores { id } }"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            json!({"query": "{ stores { id } }", "operationName": "Missing"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            json!({"query": format!("mutation {{ cartLinesAdd(cartId: \"{cart}\", lines: [{{productId: \"prd_latte\", quantity: 99999999999}}]) {{ userErrors {{ code }} }} }}")}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"query": ADD, "variables": {"c": cart, "q": 99999999999_i64}}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"query": ADD, "variables": {"c": cart, "q": "two"}}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"query": "query($ids: [ID!]!) { products(ids: $ids) { id } }", "variables": {"ids": vec!["prd_latte"; 101]}}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"query": "{ me { orders(first: 500) { edges { cursor } } } }"}),
            "BAD_USER_INPUT",
        ),
    ];
    for (request, expected) in cases {
        let body = post_json(&app, request.clone()).await;
        let codes = codes(&body);
        assert!(
            codes.iter().all(|c| c == expected),
            "{request}: expected {expected}, got {body}"
        );
    }
}

#[tokio::test]
async fn refusals_before_graphql_carry_codes() {
    let app = spawn_app().await;
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let url = app.graphql_url();
    let cases = [
        (
            app.http
                .post(&url)
                .header("content-type", "application/json")
                .body("nope"),
            400,
            "BAD_REQUEST",
        ),
        (
            app.http
                .post(&url)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            app.http
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "text/csv")
                .body(r#"{"query": "{ stores { id } }"}"#),
            406,
            "NOT_ACCEPTABLE",
        ),
        (app.http.delete(&url), 405, "METHOD_NOT_ALLOWED"),
        (
            app.http
                .get(&url)
                .query(&[("query", "mutation { signOut { userErrors { code } } }")]),
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) = send(request).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(codes(&body), vec![code], "{body}");
    }
}

/// Errors over a websocket come from the same schema and carry the same codes.
#[tokio::test]
async fn errors_over_websockets_carry_codes_too() {
    let app = spawn_app().await;
    let token = app.token().unwrap();
    let mut socket = app.connect_ws("graphql-transport-ws").await;
    for message in [
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
        json!({"type": "subscribe", "id": "1", "payload": {"query": "{ nope }"}}),
        json!({"type": "subscribe", "id": "2", "payload": {"query": "subscription { orderStatusChanged(orderId: \"ord_missing\") { id } }"}}),
        json!({"type": "subscribe", "id": "3", "payload": {"query": "{"}}),
    ] {
        send_json(&mut socket, message).await;
    }
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 3 {
        let Some(Ok(Message::Text(text))) = socket.next().await else {
            panic!("socket ended early: {seen:?}");
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        let errors = match message["type"].as_str() {
            Some("error") => json!({"errors": message["payload"]}),
            Some("next") if message["payload"].get("errors").is_some() => {
                message["payload"].clone()
            }
            _ => continue,
        };
        seen.insert(message["id"].as_str().unwrap().to_owned(), codes(&errors));
    }
    assert_eq!(seen["1"], vec!["GRAPHQL_VALIDATION_FAILED"]);
    assert_eq!(seen["2"], vec!["NOT_FOUND"]);
    assert_eq!(seen["3"], vec!["GRAPHQL_PARSE_FAILED"]);
}
