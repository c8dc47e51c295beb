//! Introspection as tools send it works at the default limits, while hostile nesting along
//! introspection's cycles is refused. The fixtures are the exact text of graphql-js 16's
//! `getIntrospectionQuery()` (what Apollo's and The Guild's codegen and Apollo Studio
//! send), GraphiQL's variant (`inputValueDeprecation`, `schemaDescription`) and one with
//! every option on.

use crate::helpers::{Db, spawn_app_with};
use serde_json::{Value, json};

const FIXTURES: [(&str, &str); 3] = [
    (
        "graphql-js",
        include_str!("../fixtures/introspection/graphql-js.graphql"),
    ),
    (
        "graphiql",
        include_str!("../fixtures/introspection/graphiql.graphql"),
    ),
    (
        "all-options",
        include_str!("../fixtures/introspection/all-options.graphql"),
    ),
];

async fn post(app: &crate::helpers::TestApp, query: &str) -> (u16, Value) {
    let response = app
        .http
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": query, "operationName": "IntrospectionQuery"}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_standard_introspection_queries_work_at_the_default_limits() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    for (name, query) in FIXTURES {
        let (status, body) = post(&app, query).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.get("errors").is_none(), "{name}: {body}");
        let types = body["data"]["__schema"]["types"].as_array().unwrap();
        let order = types.iter().find(|t| t["name"] == "Order").expect("Order");
        assert!(
            order["fields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == "statusHistory"),
            "{name}"
        );
        assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    }
}

#[tokio::test]
async fn hostile_nesting_through_introspection_is_refused() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    // 50 levels along the schema's cycle: a type's fields, their types, their fields…
    let cycle = format!(
        "query IntrospectionQuery {{ __type(name: \"Order\") {{ {} name {} }} }}",
        "fields { type { ".repeat(25),
        "} } ".repeat(25)
    );
    for query in [
        cycle,
        format!(
            "query IntrospectionQuery {{ __type(name: \"Order\") {{ {} name {} }} }}",
            "ofType { ".repeat(50),
            "} ".repeat(50)
        ),
        // Short but geometric: each `fields` multiplies the answer.
        "query IntrospectionQuery { __schema { types { fields { type { fields { type { fields { name } } } } } } } }".to_owned(),
    ] {
        let (status, body) = post(&app, &query).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{body}"
        );
    }
}

#[tokio::test]
async fn introspection_does_not_lift_the_depth_limit_of_other_fields() {
    let app = spawn_app_with(Db::Sqlite, |s| s.graphql.max_depth = 4).await;
    let (status, body) = post(
        &app,
        "query IntrospectionQuery { __typename stores { products { modifierGroups { options { id } } } } }",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep")
    );
    let (status, body) = post(&app, FIXTURES[0].1).await;
    assert_eq!(status, 200, "introspection keeps its own limits: {body}");
}
