//! Every customer-scoped operation needs a valid token, and one customer's objects are
//! indistinguishable from missing ones to another.

use crate::helpers::{
    Db, TestApp, Ws, error_code, error_codes, next_frame, send_json, spawn_app_with,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CART_OPS: [(&str, &str); 4] = [
    ("cart", "query($c: ID!) { cart(id: $c) { id } }"),
    (
        "cartLinesAdd",
        "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_water\", quantity: 1}]) { cart { id } userErrors { code field message } } }",
    ),
    (
        "cartLinesUpdate",
        "mutation($c: ID!) { cartLinesUpdate(cartId: $c, lines: [{lineId: \"ln_x\", quantity: 1}]) { cart { id } userErrors { code field message } } }",
    ),
    (
        "cartLinesRemove",
        "mutation($c: ID!) { cartLinesRemove(cartId: $c, lineIds: [\"ln_x\"]) { cart { id } userErrors { code field message } } }",
    ),
];

async fn two_customers() -> (TestApp, String, String, String) {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    let ada = app.sign_up_and_use("+16265550120", "ada@example.com").await;
    let bob = app.sign_up("+16265550121", "bob@example.com").await;
    let cart = app.new_cart("str_pasadena").await;
    (app, ada.access_token, bob.access_token, cart)
}

#[tokio::test]
async fn without_a_token_every_customer_operation_is_unauthenticated() {
    let (app, _, _, cart) = two_customers().await;
    let create = app
        .gql_as(
            None,
            "mutation { cartCreate(input: {storeId: \"str_pasadena\"}) { cart { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&create), "UNAUTHENTICATED");
    for (name, query) in CART_OPS {
        let body = app.gql_as(None, query, json!({"c": cart})).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{name}: {body}");
        for token in ["garbage", "eyJhbGciOiJIUzI1NiJ9.e30.x"] {
            let body = app.gql_as(Some(token), query, json!({"c": cart})).await;
            assert_eq!(
                error_code(&body),
                "UNAUTHENTICATED",
                "{name} with a bad token: {body}"
            );
        }
    }
    assert_eq!(
        app.gql_as(None, "{ me { id } }", json!({})).await["data"]["me"],
        json!(null)
    );
}

#[tokio::test]
async fn another_customers_cart_looks_exactly_like_a_missing_one() {
    let (app, ada, bob, cart) = two_customers().await;
    for (name, query) in CART_OPS {
        let foreign = app.gql_as(Some(&bob), query, json!({"c": cart})).await;
        let missing = app
            .gql_as(Some(&bob), query, json!({"c": "crt_0000009999"}))
            .await;
        assert!(foreign.get("errors").is_none(), "{name}: {foreign}");
        assert_eq!(foreign, missing, "{name}");
        if name != "cart" {
            assert_eq!(error_codes(&foreign["data"][name]), vec!["CART_NOT_FOUND"]);
        } else {
            assert_eq!(foreign["data"]["cart"], json!(null));
        }
    }
    // Checking out someone else's cart is checking out a cart that does not exist.
    let checkout = "mutation($c: ID!) { checkout(input: {cartId: $c, paymentMethodId: \"pm_card_visa\", idempotencyKey: \"k\"}) { order { id } userErrors { code } } }";
    let foreign = app.gql_as(Some(&bob), checkout, json!({"c": cart})).await;
    assert_eq!(
        error_codes(&foreign["data"]["checkout"]),
        vec!["CART_NOT_FOUND"]
    );
    assert_eq!(foreign["data"]["checkout"]["order"], json!(null));
    // The owner still has it, untouched.
    let own = app
        .gql_as(
            Some(&ada),
            "query($c: ID!) { cart(id: $c) { id lines { id } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(own["data"]["cart"], json!({"id": cart, "lines": []}));
    // `me` is always the caller.
    let me = app.gql_as(Some(&bob), "{ me { email } }", json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "bob@example.com");
}

/// A socket speaking `protocol` that has sent `connection_init` with `payload`, its answer
/// unread.
async fn ws_init(app: &TestApp, protocol: &str, payload: Value) -> Ws {
    let mut ws = app.connect_ws(protocol).await;
    send_json(
        &mut ws,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    ws
}

#[tokio::test]
async fn websockets_authenticate_in_connection_init() {
    let (app, ada, _, _) = two_customers().await;
    let mut ws = ws_init(
        &app,
        "graphql-transport-ws",
        json!({"Authorization": "Bearer not-a-token"}),
    )
    .await;
    match next_frame(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (4403, "Forbidden")
        ),
        other => panic!("expected 4403, got {other:?}"),
    }

    let mut ws = ws_init(
        &app,
        "graphql-transport-ws",
        json!({"Authorization": format!("Bearer {ada}")}),
    )
    .await;
    assert!(matches!(next_frame(&mut ws).await, Message::Text(t) if t.contains("connection_ack")));
    send_json(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ me { email } }"}}),
    )
    .await;
    let Message::Text(next) = next_frame(&mut ws).await else {
        panic!("expected next")
    };
    let next: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(next["payload"]["data"]["me"]["email"], "ada@example.com");

    // Without a token the socket works, but customer data needs one.
    let mut ws = ws_init(&app, "graphql-transport-ws", json!({})).await;
    assert!(matches!(next_frame(&mut ws).await, Message::Text(t) if t.contains("connection_ack")));
    send_json(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ cart(id: \"crt_1\") { id } }"}}),
    )
    .await;
    let Message::Text(next) = next_frame(&mut ws).await else {
        panic!("expected next")
    };
    let next: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(
        next["payload"]["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );

    // The legacy protocol reports a refused init with connection_error before closing.
    let mut ws = ws_init(&app, "graphql-ws", json!({"Authorization": "Bearer nope"})).await;
    assert!(
        matches!(next_frame(&mut ws).await, Message::Text(t) if t.contains("connection_error"))
    );
}

/// Reads the answer to `connection_init`: the ack's type, or the close code.
async fn init_answer(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(text) => serde_json::from_str::<Value>(&text).unwrap()["type"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        Message::Close(Some(frame)) => format!("close {}", u16::from(frame.code)),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn connection_init_takes_credentials_in_the_shapes_clients_send() {
    let (app, ada, _, _) = two_customers().await;
    let bearer = format!("Bearer {ada}");
    let shapes = [
        json!({"Authorization": bearer}),
        json!({"authorization": bearer}),
        json!({"headers": {"Authorization": bearer}}),
        json!({"headers": {"authorization": bearer}}),
        json!({"authToken": ada}),
        json!({"authToken": bearer}),
        json!({"Authorization": format!("bearer  {ada}")}),
    ];
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        for payload in &shapes {
            let mut ws = ws_init(&app, protocol, payload.clone()).await;
            assert_eq!(
                init_answer(&mut ws).await,
                "connection_ack",
                "{protocol} {payload}"
            );
            let (subscribe, next) = if protocol == "graphql-ws" {
                ("start", "data")
            } else {
                ("subscribe", "next")
            };
            send_json(
                &mut ws,
                json!({"id": "1", "type": subscribe, "payload": {"query": "{ me { email } }"}}),
            )
            .await;
            let answer = loop {
                let Message::Text(text) = next_frame(&mut ws).await else {
                    panic!("{protocol} {payload}: expected an answer");
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] != "ka" {
                    break value;
                }
            };
            assert_eq!(answer["type"], next, "{protocol} {payload}: {answer}");
            assert_eq!(
                answer["payload"]["data"]["me"]["email"], "ada@example.com",
                "{protocol} {payload}: {answer}"
            );
        }
    }

    // A credential that is there but is not one is refused, whatever its shape.
    for payload in [
        json!({"Authorization": "Bearer not-a-token"}),
        json!({"headers": {"Authorization": "Bearer not-a-token"}}),
        json!({"authToken": "not-a-token"}),
        json!({"Authorization": 42}),
        json!({"headers": "Bearer x"}),
        json!({"Authorization": format!("Basic {ada}")}),
    ] {
        let mut ws = ws_init(&app, "graphql-transport-ws", payload.clone()).await;
        assert_eq!(init_answer(&mut ws).await, "close 4403", "{payload}");
    }
}

#[tokio::test]
async fn the_authorization_header_is_read_as_http_defines_it() {
    let (app, ada, _, _) = two_customers().await;
    let me = |header: String| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(app.graphql_url())
                .header("content-type", "application/json")
                .header("authorization", header)
                .json(&json!({"query": "{ me { email } }"}))
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    };
    // RFC 9110 §11.1: the scheme is case-insensitive; §11.4: one or more spaces before the
    // token68 of RFC 6750 §2.1; §5.5: surrounding whitespace is not part of the value.
    for header in [
        format!("Bearer {ada}"),
        format!("bearer {ada}"),
        format!("BEARER {ada}"),
        format!("bEaReR {ada}"),
        format!("Bearer    {ada}"),
        format!("  Bearer {ada}  "),
    ] {
        let body = me(header.clone()).await;
        assert_eq!(
            body["data"]["me"]["email"], "ada@example.com",
            "{header:?}: {body}"
        );
    }
    for header in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer{ada}"),
        format!("Bearer\t{ada}"),
        format!("Bearer {ada} extra"),
        format!("Bearer \"{ada}\""),
        format!("Basic {ada}"),
        format!("Token {ada}"),
    ] {
        let body = me(header.clone()).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{header:?}: {body}");
    }
}

#[tokio::test]
async fn a_session_lookup_that_fails_is_an_internal_error_not_unauthenticated() {
    let (app, ada, _, cart) = two_customers().await;
    let db = sea_orm::Database::connect(&app.app.state().settings.database_url)
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    // The database cannot answer for sessions (as when its pool is exhausted).
    db.execute_unprepared("ALTER TABLE sessions RENAME TO sessions_away")
        .await
        .unwrap();

    let me = app.gql_as(Some(&ada), "{ me { email } }", json!({})).await;
    assert_eq!(error_code(&me), "INTERNAL", "{me}");
    let own = app
        .gql_as(
            Some(&ada),
            "query($c: ID!) { cart(id: $c) { id } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(error_code(&own), "INTERNAL", "{own}");
    let signed_out = app
        .gql_as(
            Some(&ada),
            "mutation { signOut { userErrors { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&signed_out), "INTERNAL", "{signed_out}");
    // A websocket is told to come back later (1013), not that its token is bad (4403).
    let mut ws = ws_init(
        &app,
        "graphql-transport-ws",
        json!({"Authorization": format!("Bearer {ada}")}),
    )
    .await;
    assert_eq!(init_answer(&mut ws).await, "close 1013");
    // A token that is not one is still refused without asking the database.
    let bad = app
        .gql_as(Some("garbage"), "{ me { email } }", json!({}))
        .await;
    assert_eq!(error_code(&bad), "UNAUTHENTICATED", "{bad}");

    db.execute_unprepared("ALTER TABLE sessions_away RENAME TO sessions")
        .await
        .unwrap();
    let me = app.gql_as(Some(&ada), "{ me { email } }", json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "ada@example.com", "{me}");
}
