//! Generated inputs, black-box: proptest sends the running service operations whose
//! variables are generated (ids of every kind, quantities in and far out of range and of
//! the wrong JSON type, emails, phones, names, codes, payment method ids, idempotency
//! keys), and every answer must be a well-formed GraphQL response: HTTP 200, `data` or
//! `errors`, every error with a known `extensions.code` (never `INTERNAL`), every
//! `userErrors` code one the schema lists, and the service still answering another
//! request at once. `PROPTEST_CASES` raises the count (48 by default, a few seconds).

use crate::helpers::{TestApp, spawn_app};
use async_graphql::resolver_utils::EnumType;
use cbtl_bff::graphql::errors::{ErrorCode, UserErrorCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use strum::IntoEnumIterator;

/// A string for an `ID!` or `String!` variable: the real shapes, the edges and junk.
fn text() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!("str_pasadena")),
        Just(json!("prd_latte")),
        Just(json!("opt_size_large")),
        Just(json!("pm_card_visa")),
        Just(json!("")),
        Just(json!(" ")),
        Just(json!("../../v1/orders")),
        Just(json!("a".repeat(300))),
        Just(json!("ord_\u{0}\u{202e}")),
        "[A-Za-z0-9_.-]{1,40}".prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
    .boxed()
}

/// A value for an `Int!` variable: in range, out of range, beyond 32 bits, and not a
/// whole number at all.
fn quantity() -> BoxedStrategy<Value> {
    prop_oneof![
        (0_i64..=100).prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!(-0.0)),
        Just(json!(1e300)),
        Just(json!("2")),
        Just(Value::Null),
        Just(json!([1])),
    ]
    .boxed()
}

/// Any JSON for a variable of the wrong type entirely.
fn wrong_type() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!({"nested": {"deeper": []}})),
        any::<f64>().prop_map(|f| json!(f)),
    ]
    .boxed()
}

fn maybe_wrong(strategy: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![9 => strategy, 1 => wrong_type()].boxed()
}

fn id() -> BoxedStrategy<Value> {
    maybe_wrong(text())
}

fn email() -> BoxedStrategy<Value> {
    maybe_wrong(
        prop_oneof![
            "[a-zA-Z0-9._%+-]{1,20}@[a-z0-9-]{1,10}\\.[a-z]{2,4}".prop_map(Value::from),
            text(),
        ]
        .boxed(),
    )
}

fn phone() -> BoxedStrategy<Value> {
    maybe_wrong(
        prop_oneof![
            "\\+1626555[0-9]{4}".prop_map(Value::from),
            "\\+?[0-9 ()-]{0,20}".prop_map(Value::from),
            text(),
        ]
        .boxed(),
    )
}

/// One operation with generated variables: its document and variables.
fn operation() -> impl Strategy<Value = (&'static str, Value)> {
    let line = (
        id(),
        maybe_wrong(quantity()),
        prop::collection::vec(id(), 0..3),
    )
        .prop_map(|(p, q, m)| json!({"productId": p, "quantity": q, "modifierOptionIds": m}));
    let update =
        (id(), maybe_wrong(quantity())).prop_map(|(l, q)| json!({"lineId": l, "quantity": q}));
    prop_oneof![
        id().prop_map(|s| (
            "mutation($v: ID!) { cartCreate(input: {storeId: $v}) { cart { id } userErrors { code field message } } }",
            json!({"v": s}),
        )),
        (id(), prop::collection::vec(line, 0..4)).prop_map(|(c, l)| (
            "mutation($c: ID!, $v: [CartLineInput!]!) { cartLinesAdd(cartId: $c, lines: $v) { cart { id totalQuantity } userErrors { code field message } } }",
            json!({"c": c, "v": l}),
        )),
        (id(), prop::collection::vec(update, 0..4)).prop_map(|(c, l)| (
            "mutation($c: ID!, $v: [CartLineUpdateInput!]!) { cartLinesUpdate(cartId: $c, lines: $v) { cart { id } userErrors { code field message } } }",
            json!({"c": c, "v": l}),
        )),
        (id(), prop::collection::vec(id(), 0..4)).prop_map(|(c, l)| (
            "mutation($c: ID!, $v: [ID!]!) { cartLinesRemove(cartId: $c, lineIds: $v) { cart { id } userErrors { code field message } } }",
            json!({"c": c, "v": l}),
        )),
        (email(), phone(), id(), id()).prop_map(|(e, p, f, l)| (
            "mutation($v: AccountRegisterInput!) { accountRegister(input: $v) { customer { id } userErrors { code field message } } }",
            json!({"v": {"email": e, "phone": p, "firstName": f, "lastName": l}}),
        )),
        (phone(), id()).prop_map(|(p, c)| (
            "mutation($v: SignInInput!) { signIn(input: $v) { accessToken userErrors { code field message } } }",
            json!({"v": {"phone": p, "code": c}}),
        )),
        (phone(), id()).prop_map(|(p, c)| (
            "mutation($v: AccountConfirmInput!) { accountConfirm(input: $v) { accessToken userErrors { code field message } } }",
            json!({"v": {"phone": p, "code": c}}),
        )),
        id().prop_map(|t| (
            "mutation($v: TokenRefreshInput!) { tokenRefresh(input: $v) { accessToken userErrors { code field message } } }",
            json!({"v": {"refreshToken": t}}),
        )),
        (id(), id(), prop::option::of(id()), id()).prop_map(|(c, pm, v, k)| (
            "mutation($v: CheckoutInput!) { checkout(input: $v) { order { id status } userErrors { code field message } } }",
            json!({"v": {"cartId": c, "paymentMethodId": pm, "voucherId": v, "idempotencyKey": k}}),
        )),
        id().prop_map(|o| ("query($v: ID!) { order(id: $v) { id status } }", json!({"v": o}))),
        id().prop_map(|o| ("query($v: ID!) { cart(id: $v) { id } }", json!({"v": o}))),
        id().prop_map(|o| ("query($v: ID!) { product(id: $v) { id name } }", json!({"v": o}))),
        id().prop_map(|o| ("query($v: ID!) { store(id: $v) { id name } }", json!({"v": o}))),
        prop::collection::vec(id(), 0..5).prop_map(|o| (
            "query($v: [ID!]!) { products(ids: $v) { id } }",
            json!({"v": o}),
        )),
    ]
}

/// Checks one answer: a GraphQL response whose every code is known and none `INTERNAL`.
fn well_formed(
    body: &Value,
    known: &BTreeSet<&str>,
    user_codes: &BTreeSet<&str>,
) -> Result<(), String> {
    let object = body.as_object().ok_or("not a JSON object")?;
    if !object.contains_key("data") && !object.contains_key("errors") {
        return Err("neither data nor errors".into());
    }
    for error in body["errors"].as_array().into_iter().flatten() {
        let code = error["extensions"]["code"]
            .as_str()
            .ok_or("an error without a code")?;
        if !known.contains(code) || code == ErrorCode::Internal.as_str() {
            return Err(format!("error code {code}"));
        }
        if error["message"].as_str().is_none_or(str::is_empty) {
            return Err("an error without a message".into());
        }
    }
    if let Some(data) = body["data"].as_object() {
        for payload in data.values() {
            for user_error in payload["userErrors"].as_array().into_iter().flatten() {
                let code = user_error["code"].as_str().unwrap_or("");
                if !user_codes.contains(code) {
                    return Err(format!("userError code {code:?}"));
                }
            }
        }
    }
    Ok(())
}

async fn ask(app: &TestApp, query: &str, variables: &Value) -> Result<Value, String> {
    let token = app.token();
    let mut request = app
        .http
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("not JSON: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(body)
}

#[test]
fn generated_inputs_get_well_formed_answers_and_the_service_keeps_serving() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let app = runtime.block_on(spawn_app());
    let known: BTreeSet<&str> = ErrorCode::iter().map(ErrorCode::as_str).collect();
    let user_codes: BTreeSet<&str> = UserErrorCode::items().iter().map(|i| i.name).collect();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(operation(), any::<bool>()),
            |((query, variables), signed_in)| {
                runtime.block_on(async {
                    // Half the requests come from the signed-in customer, half anonymously.
                    let saved = app.token();
                    if !signed_in {
                        app.use_token(None);
                    }
                    let answer = ask(&app, query, &variables).await;
                    app.use_token(saved.as_deref());
                    let body = answer.map_err(TestCaseError::fail)?;
                    well_formed(&body, &known, &user_codes).map_err(|e| {
                        TestCaseError::fail(format!("{e}: {query} {variables} -> {body}"))
                    })?;
                    // And the service serves the next request at once.
                    let next = ask(&app, "{ __typename }", &json!({}))
                        .await
                        .map_err(TestCaseError::fail)?;
                    prop_assert_eq!(&next["data"]["__typename"], "Query");
                    Ok(())
                })
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
}
