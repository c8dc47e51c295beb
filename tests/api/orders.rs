//! Place Order end to end: checkout, payment, the store's decision, POS injection, live
//! status, and every compensation, read back from the sandbox ledgers.

use crate::helpers::{Db, Sim, TestApp, error_codes, spawn_app_with};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

const ORDER_FIELDS: &str = "id number status store { id } total { amount currencyCode } subtotal { amount } tax { amount } payment { status amount { amount } brand last4 clientSecret } statusHistory { status } pointsEarned lines { quantity product { id } }";

fn checkout_query() -> String {
    format!(
        "mutation($i: CheckoutInput!) {{ checkout(input: $i) {{ order {{ {ORDER_FIELDS} }} userErrors {{ code field message }} }} }}"
    )
}

/// A signed-in customer's app with store acceptance left to the test.
async fn shop(tweak: impl FnOnce(&mut cbtl_bff::config::Settings)) -> TestApp {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.sandbox.auto_accept_delay_ms = 0;
        s.orders.sweep_interval_ms = 100;
        s.jobs.poll_interval_ms = 50;
        tweak(s);
    })
    .await;
    let customer = app.sign_up("+16265550130", "ada@example.com").await;
    app.use_token(Some(&customer.access_token));
    app
}

/// A cart with two large oat lattes (2 × 6.75) and a croissant (3.50): 17.00 + 10.25% tax = 18.74.
async fn filled_cart(app: &TestApp, store: &str) -> String {
    let cart = app.new_cart(store).await;
    let added = app
        .data(
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_latte\", quantity: 2, modifierOptionIds: [\"opt_size_large\", \"opt_milk_oat\"]}, {productId: \"prd_croissant\", quantity: 1}]) { userErrors { code } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(added["cartLinesAdd"]["userErrors"], json!([]));
    cart
}

async fn checkout(app: &TestApp, cart: &str, pm: &str, key: &str) -> Value {
    let body = app
        .gql(
            &checkout_query(),
            json!({"i": {"cartId": cart, "paymentMethodId": pm, "idempotencyKey": key}}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["checkout"].clone()
}

async fn order(app: &TestApp, id: &str) -> Value {
    app.data(
        &format!("query($o: ID!) {{ order(id: $o) {{ {ORDER_FIELDS} }} }}"),
        json!({"o": id}),
    )
    .await["order"]
        .clone()
}

async fn wait_for_status(app: &TestApp, id: &str, status: &str) -> Value {
    for _ in 0..100 {
        let current = order(app, id).await;
        if current["status"] == status {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "order {id} never reached {status}: {}",
        order(app, id).await
    );
}

/// The Okya simulator's copy of the order placed from `cart`.
async fn okya_order(app: &TestApp, cart: &str) -> Value {
    let ledger: Value = app
        .http
        .get(format!("{}/_sandbox/orders", app.sim_url(Sim::Okya)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ledger["orders"]
        .as_array()
        .and_then(|orders| orders.iter().find(|o| o["cart_id"] == cart).cloned())
        .unwrap_or(Value::Null)
}

/// Plays the store: accept, reject, ready or complete, through the simulator.
async fn store_action(app: &TestApp, cart: &str, action: &str) {
    let okya = okya_order(app, cart).await;
    let id = okya["id"].as_str().expect("Okya order");
    let response = app
        .http
        .post(format!(
            "{}/_sandbox/orders/{id}/{action}",
            app.sim_url(Sim::Okya)
        ))
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{action}: {}",
        response.status()
    );
}

fn intents(ledger: &Value) -> Vec<Value> {
    ledger["payment_intents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_order_is_paid_accepted_injected_prepared_and_collected() {
    let app = shop(|_| {}).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let payload = checkout(&app, &cart, "pm_card_visa", "key-1").await;
    assert_eq!(payload["userErrors"], json!([]));
    let placed = &payload["order"];
    assert_eq!(placed["status"], "AWAITING_ACCEPTANCE");
    assert_eq!(
        placed["total"],
        json!({"amount": "18.74", "currencyCode": "USD"})
    );
    assert_eq!(placed["payment"]["status"], "CAPTURED");
    assert_eq!(placed["payment"]["amount"]["amount"], "18.74");
    assert_eq!(
        (
            placed["payment"]["brand"].as_str(),
            placed["payment"]["last4"].as_str()
        ),
        (Some("visa"), Some("4242"))
    );
    assert_eq!(placed["payment"]["clientSecret"], json!(null));
    let id = placed["id"].as_str().unwrap().to_owned();

    let stripe = app.ledger(Sim::Stripe).await;
    let charged = intents(&stripe);
    assert_eq!(charged.len(), 1);
    assert_eq!(charged[0]["amount"], 1874);
    assert_eq!(charged[0]["status"], "succeeded");
    let okya = okya_order(&app, &cart).await;
    assert_eq!(okya["payment"]["reference"], charged[0]["id"]);

    store_action(&app, &cart, "accept").await;
    let prepared = wait_for_status(&app, &id, "IN_PREPARATION").await;
    let epoint = app.ledger(Sim::Epoint).await;
    assert_eq!(
        epoint["orders"].as_array().map(Vec::len),
        Some(1),
        "{epoint}"
    );
    assert_eq!(prepared["payment"]["status"], "CAPTURED");

    store_action(&app, &cart, "ready").await;
    wait_for_status(&app, &id, "READY_FOR_PICKUP").await;
    store_action(&app, &cart, "complete").await;
    let done = wait_for_status(&app, &id, "COMPLETED").await;
    let history: Vec<&str> = done["statusHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [
            "AWAITING_ACCEPTANCE",
            "IN_PREPARATION",
            "READY_FOR_PICKUP",
            "COMPLETED"
        ]
    );

    // SessionM gets the order and credits a point per whole dollar paid.
    app.eventually("points", || async {
        order(&app, &id).await["pointsEarned"] == 18
    })
    .await;
}

#[tokio::test]
async fn a_declined_card_fails_the_order_and_no_store_sees_it() {
    let app = shop(|_| {}).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let payload = checkout(&app, &cart, "pm_card_chargeDeclined", "key-1").await;
    assert_eq!(error_codes(&payload), vec!["CARD_DECLINED"]);
    assert_eq!(
        payload["userErrors"][0]["field"],
        json!(["input", "paymentMethodId"])
    );
    assert_eq!(payload["order"]["status"], "PAYMENT_FAILED");
    assert_eq!(payload["order"]["payment"]["status"], "FAILED");
    assert_eq!(okya_order(&app, &cart).await["status"], "CANCELED");
    let stripe = app.ledger(Sim::Stripe).await;
    assert!(
        intents(&stripe)
            .iter()
            .all(|pi| pi["status"] != "succeeded"),
        "{stripe}"
    );
}

#[tokio::test]
async fn okya_refusals_are_user_errors_with_nothing_charged() {
    let app = shop(|_| {}).await;
    let empty = app.new_cart("str_pasadena").await;
    let payload = checkout(&app, &empty, "pm_card_visa", "key-empty").await;
    assert_eq!(error_codes(&payload), vec!["CART_EMPTY"]);
    assert_eq!(payload["order"], json!(null));

    let cart = filled_cart(&app, "str_pasadena").await;
    assert_eq!(
        checkout(&app, &cart, "pm_card_visa", "key-1").await["userErrors"],
        json!([])
    );
    let again = checkout(&app, &cart, "pm_card_visa", "key-2").await;
    assert_eq!(error_codes(&again), vec!["CART_ALREADY_ORDERED"]);
    assert_eq!(
        intents(&app.ledger(Sim::Stripe).await).len(),
        1,
        "only the first order was charged"
    );

    // An ordered cart cannot change any more.
    let frozen = app
        .data(
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_water\", quantity: 1}]) { cart { id } userErrors { code } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(
        error_codes(&frozen["cartLinesAdd"]),
        vec!["CART_ALREADY_ORDERED"]
    );

    let missing = checkout(&app, "crt_missing", "pm_card_visa", "key-3").await;
    assert_eq!(error_codes(&missing), vec!["CART_NOT_FOUND"]);
    let bad_key = checkout(&app, &cart, "pm_card_visa", "   ").await;
    assert_eq!(error_codes(&bad_key), vec!["INVALID_INPUT"]);
}

#[tokio::test]
async fn the_same_key_returns_the_same_order_and_charges_once() {
    let app = shop(|_| {}).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let first = checkout(&app, &cart, "pm_card_visa", "key-1").await;
    let second = checkout(&app, &cart, "pm_card_visa", "key-1").await;
    assert_eq!(first["order"]["id"], second["order"]["id"]);
    assert_eq!(intents(&app.ledger(Sim::Stripe).await).len(), 1);

    let other_cart = filled_cart(&app, "str_pasadena").await;
    let reused = checkout(&app, &other_cart, "pm_card_visa", "key-1").await;
    assert_eq!(error_codes(&reused), vec!["IDEMPOTENCY_KEY_REUSED"]);
    assert_eq!(reused["order"], json!(null));
}

#[tokio::test]
async fn ten_simultaneous_checkouts_with_one_key_charge_once() {
    let app = shop(|_| {}).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let attempts = (0..10).map(|_| checkout(&app, &cart, "pm_card_visa", "same-key"));
    let results = futures_util::future::join_all(attempts).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|r| {
            r["order"]["id"]
                .as_str()
                .expect("every caller gets the order")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r["order"]["status"] == "AWAITING_ACCEPTANCE")
    );
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(intents(&stripe).len(), 1, "{stripe}");
}

#[tokio::test]
async fn a_rejected_order_is_refunded() {
    let app = shop(|_| {}).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "reject").await;
    let rejected = wait_for_status(&app, &id, "REJECTED").await;
    assert_eq!(rejected["payment"]["status"], "REFUNDED");
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(
        stripe["refunds"].as_array().map(Vec::len),
        Some(1),
        "{stripe}"
    );
    assert_eq!(stripe["refunds"][0]["amount"], 1874);
    assert_eq!(app.ledger(Sim::Epoint).await["orders"], json!([]));
}

#[tokio::test]
async fn when_the_pos_refuses_the_order_is_recalled_and_refunded() {
    let app = shop(|s| s.orders.pos_max_attempts = 2).await;
    let cart = filled_cart(&app, "str_burbank").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "accept").await;
    let cancelled = wait_for_status(&app, &id, "CANCELLED").await;
    assert_eq!(cancelled["payment"]["status"], "REFUNDED");
    let okya = okya_order(&app, &cart).await;
    assert_eq!(okya["cancellation"]["kind"], "recalled", "{okya}");
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(stripe["refunds"][0]["amount"], 1874);
}

#[tokio::test]
async fn capture_on_acceptance_authorises_then_captures_or_releases() {
    let app = shop(|s| s.orders.capture = cbtl_bff::domain::CaptureMode::OnAcceptance).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let placed = checkout(&app, &cart, "pm_card_visa", "k1").await;
    assert_eq!(placed["order"]["payment"]["status"], "AUTHORIZED");
    let id = placed["order"]["id"].as_str().unwrap().to_owned();
    store_action(&app, &cart, "accept").await;
    let prepared = wait_for_status(&app, &id, "IN_PREPARATION").await;
    assert_eq!(prepared["payment"]["status"], "CAPTURED");

    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k2").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "reject").await;
    let rejected = wait_for_status(&app, &id, "REJECTED").await;
    assert_eq!(rejected["payment"]["status"], "CANCELLED");
    let stripe = app.ledger(Sim::Stripe).await;
    let all = intents(&stripe);
    let statuses: Vec<&str> = all
        .iter()
        .map(|pi| pi["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["succeeded", "canceled"],
        "released, not refunded: {stripe}"
    );
    assert_eq!(stripe["refunds"], json!([]));
}

#[tokio::test]
async fn three_d_secure_waits_for_stripe_and_then_carries_on_or_fails() {
    let app = shop(|_| {}).await;
    for (outcome, expected) in [
        ("succeed", "AWAITING_ACCEPTANCE"),
        ("fail", "PAYMENT_FAILED"),
    ] {
        let cart = filled_cart(&app, "str_pasadena").await;
        let placed = checkout(&app, &cart, "pm_card_authenticationRequired", outcome).await;
        let order_json = &placed["order"];
        assert_eq!(order_json["status"], "AWAITING_PAYMENT");
        assert_eq!(order_json["payment"]["status"], "REQUIRES_ACTION");
        assert!(
            order_json["payment"]["clientSecret"]
                .as_str()
                .is_some_and(|s| s.contains("_secret_"))
        );
        let id = order_json["id"].as_str().unwrap().to_owned();
        let stripe = app.ledger(Sim::Stripe).await;
        let intent = intents(&stripe).last().cloned().unwrap();
        let response = app
            .http
            .post(format!(
                "{}/_sandbox/payment_intents/{}/authenticate",
                app.sim_url(Sim::Stripe),
                intent["id"].as_str().unwrap()
            ))
            .json(&json!({"outcome": outcome}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let after = wait_for_status(&app, &id, expected).await;
        assert_eq!(after["payment"]["clientSecret"], json!(null));
        if expected == "PAYMENT_FAILED" {
            assert_eq!(okya_order(&app, &cart).await["status"], "CANCELED");
        }
    }
}

#[tokio::test]
async fn an_abandoned_authentication_is_cancelled_after_the_timeout() {
    let app = shop(|s| s.orders.authentication_timeout_secs = 1).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_authenticationRequired", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = wait_for_status(&app, &id, "PAYMENT_FAILED").await;
    assert_eq!(failed["payment"]["status"], "CANCELLED");
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(intents(&stripe)[0]["status"], "canceled");
    assert_eq!(okya_order(&app, &cart).await["status"], "CANCELED");
}

async fn post_webhook(app: &TestApp, body: &str, signature: Option<String>) -> u16 {
    let mut request = app
        .http
        .post(format!("{}/webhooks/okya", app.url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("x-okya-signature", signature);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn forged_stale_repeated_and_reordered_webhooks_change_nothing_they_should_not() {
    use cbtl_bff::upstream::signature::sign;
    let app = shop(|_| {}).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut okya = okya_order(&app, &cart).await;
    okya["approval"] = json!("APPROVED");
    okya["fulfilment"] = json!("IN_PREPARATION");
    okya["version"] = json!(okya["version"].as_i64().unwrap() + 100);
    let event = json!({"id": "evt_forged", "type": "order.updated", "created_at": chrono::Utc::now(), "data": {"order": okya}}).to_string();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(post_webhook(&app, &event, None).await, 401);
    assert_eq!(
        post_webhook(
            &app,
            &event,
            Some(sign("wrong-secret", now, event.as_bytes()))
        )
        .await,
        401
    );
    assert_eq!(
        post_webhook(
            &app,
            &event,
            Some(sign("whsec_okya_sandbox", now - 301, event.as_bytes()))
        )
        .await,
        401
    );
    assert_eq!(
        post_webhook(&app, &event, Some("t=abc,v1=00".into())).await,
        401
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        order(&app, &id).await["status"],
        "AWAITING_ACCEPTANCE",
        "a forged acceptance does nothing"
    );

    // The real store accepts; then an old event (a lower version) arrives late, twice.
    store_action(&app, &cart, "accept").await;
    wait_for_status(&app, &id, "IN_PREPARATION").await;
    let mut stale = okya_order(&app, &cart).await;
    stale["approval"] = json!("NEEDS_APPROVAL");
    stale["fulfilment"] = json!("RECEIVED");
    stale["version"] = json!(1);
    let old = json!({"id": "evt_old", "type": "order.updated", "created_at": chrono::Utc::now(), "data": {"order": stale}}).to_string();
    let signature = sign(
        "whsec_okya_sandbox",
        chrono::Utc::now().timestamp(),
        old.as_bytes(),
    );
    assert_eq!(post_webhook(&app, &old, Some(signature.clone())).await, 204);
    assert_eq!(post_webhook(&app, &old, Some(signature)).await, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(order(&app, &id).await["status"], "IN_PREPARATION");
    assert_eq!(
        app.ledger(Sim::Epoint).await["orders"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "injected once"
    );
}

async fn subscribe(
    app: &TestApp,
    token: &str,
    order_id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = app
        .graphql_url()
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = connect_async(request).await.unwrap();
    ws.send(Message::Text(
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let query = "subscription($o: ID!) { orderStatusChanged(orderId: $o) { id status statusHistory { status } } }";
    ws.send(Message::Text(json!({"id": "s", "type": "subscribe", "payload": {"query": query, "variables": {"o": order_id}}}).to_string().into()))
        .await
        .unwrap();
    ws
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "connection_ack" {
                return value;
            }
        }
    }
}

#[tokio::test]
async fn the_subscription_follows_the_order_live_and_ends_when_it_is_final() {
    let app = shop(|_| {}).await;
    let token = app.token.lock().unwrap().clone().unwrap();
    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = subscribe(&app, &token, &id).await;
    assert_eq!(
        next_json(&mut ws).await["payload"]["data"]["orderStatusChanged"]["status"],
        "AWAITING_ACCEPTANCE"
    );
    let mut seen = Vec::new();
    for action in ["accept", "ready", "complete"] {
        let started = std::time::Instant::now();
        store_action(&app, &cart, action).await;
        let event = next_json(&mut ws).await;
        seen.push(
            event["payload"]["data"]["orderStatusChanged"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        // The store's action to the subscriber (Okya's webhook, our job, the POS call, the
        // fan-out): reported with --nocapture, not asserted tightly; timing is for benchmarks.
        eprintln!(
            "{action}: store action to subscriber {:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{action} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(seen, ["IN_PREPARATION", "READY_FOR_PICKUP", "COMPLETED"]);
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "complete", "id": "s"})
    );

    // Another customer cannot follow it.
    let other = app.sign_up("+16265550131", "bob@example.com").await;
    let mut ws = subscribe(&app, &other.access_token, &id).await;
    let refused = next_json(&mut ws).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
    assert_eq!(refused["payload"]["data"], json!(null));
}

#[tokio::test]
async fn orders_are_listed_newest_first_and_kept_to_their_customer() {
    let app = shop(|_| {}).await;
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        let cart = filled_cart(&app, "str_pasadena").await;
        ids.push(
            checkout(&app, &cart, "pm_card_visa", key).await["order"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let page = app.data("{ me { orders(first: 2) { edges { cursor node { id status } } pageInfo { hasNextPage } } } }", json!({})).await;
    let edges = page["me"]["orders"]["edges"].as_array().unwrap().clone();
    assert_eq!(edges.len(), 2);
    assert_eq!(edges[0]["node"]["id"], ids[2].as_str());
    assert_eq!(edges[1]["node"]["id"], ids[1].as_str());
    assert_eq!(page["me"]["orders"]["pageInfo"]["hasNextPage"], true);
    let after = edges[1]["cursor"].clone();
    let rest = app
        .data("query($a: String) { me { orders(first: 2, after: $a) { edges { node { id } } pageInfo { hasNextPage } } } }", json!({"a": after}))
        .await;
    assert_eq!(
        rest["me"]["orders"]["edges"][0]["node"]["id"],
        ids[0].as_str()
    );
    assert_eq!(rest["me"]["orders"]["pageInfo"]["hasNextPage"], false);

    let other = app.sign_up("+16265550131", "bob@example.com").await;
    let theirs = app
        .gql_as(
            Some(&other.access_token),
            "query($o: ID!) { order(id: $o) { id } }",
            json!({"o": ids[0]}),
        )
        .await;
    assert_eq!(theirs["data"]["order"], json!(null));
    let anonymous = app
        .gql_as(
            None,
            "query($o: ID!) { order(id: $o) { id } }",
            json!({"o": ids[0]}),
        )
        .await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let anonymous = app
        .gql_as(None, &checkout_query(), json!({"i": {"cartId": "crt_x", "paymentMethodId": "pm_card_visa", "idempotencyKey": "k"}}))
        .await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn stripe_webhooks_need_a_valid_signature() {
    use cbtl_bff::upstream::signature::sign;
    let app = shop(|_| {}).await;
    let event = json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_unknown"}}}).to_string();
    let post = |signature: Option<String>| {
        let mut request = app
            .http
            .post(format!("{}/webhooks/stripe", app.url))
            .body(event.clone());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send()
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(sign("whsec_other", now, event.as_bytes())))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(Some(sign(
            "whsec_stripe_sandbox",
            now - 400,
            event.as_bytes()
        )))
        .await
        .unwrap()
        .status(),
        401
    );
    assert_eq!(
        post(Some(sign("whsec_stripe_sandbox", now, event.as_bytes())))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        post(Some(sign("whsec_stripe_sandbox", now, event.as_bytes())))
            .await
            .unwrap()
            .status(),
        204,
        "a repeat is acknowledged"
    );
    let garbage = "not json";
    let response = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .header(
            "stripe-signature",
            sign("whsec_stripe_sandbox", now, garbage.as_bytes()),
        )
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn every_compensation_also_runs_on_postgres() {
    let app = spawn_app_with(Db::Postgres, |s| {
        s.sandbox.auto_accept_delay_ms = 0;
        s.orders.sweep_interval_ms = 100;
        s.orders.pos_max_attempts = 2;
        s.jobs.poll_interval_ms = 50;
    })
    .await;
    let customer = app.sign_up("+16265550170", "ada@example.com").await;
    app.use_token(Some(&customer.access_token));

    let cart = filled_cart(&app, "str_pasadena").await;
    let declined = checkout(&app, &cart, "pm_card_chargeDeclined", "declined").await;
    assert_eq!(declined["order"]["status"], "PAYMENT_FAILED");

    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "rejected").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "reject").await;
    assert_eq!(
        wait_for_status(&app, &id, "REJECTED").await["payment"]["status"],
        "REFUNDED"
    );

    let cart = filled_cart(&app, "str_burbank").await;
    let id = checkout(&app, &cart, "pm_card_visa", "recalled").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "accept").await;
    assert_eq!(
        wait_for_status(&app, &id, "CANCELLED").await["payment"]["status"],
        "REFUNDED"
    );

    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "happy").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "accept").await;
    wait_for_status(&app, &id, "IN_PREPARATION").await;
    let again = checkout(&app, &cart, "pm_card_visa", "happy").await;
    assert_eq!(again["order"]["id"], id.as_str());

    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(stripe["refunds"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        intents(&stripe)
            .iter()
            .filter(|pi| pi["status"] == "succeeded")
            .count(),
        3
    );
}

#[tokio::test]
async fn lost_webhooks_are_made_up_for_by_reconciliation() {
    use crate::helpers::{
        ExternalUpstreams, TestDb, free_port, spawn_with_settings, test_settings,
    };
    // Okya's webhooks go to a port nobody listens on: every one of them is lost.
    let upstreams = ExternalUpstreams::start(free_port()).await;
    let (_db, url) = TestDb::new(Db::Sqlite).await;
    let mut settings = test_settings(url);
    upstreams.configure(&mut settings);
    settings.orders.reconcile_interval_secs = 1;
    settings.orders.sweep_interval_ms = 100;
    let app = spawn_with_settings(settings).await;
    let customer = app.sign_up("+16265550190", "ada@example.com").await;
    app.use_token(Some(&customer.access_token));
    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "accept").await;
    // Only the timer can notice: nothing reads the order meanwhile.
    let epoint = format!("{}/_sandbox/ledger", upstreams.epoint.base_url);
    let mut injected = false;
    for _ in 0..60 {
        let ledger: Value = app
            .http
            .get(&epoint)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ledger["orders"].as_array().map(Vec::len) == Some(1) {
            injected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(injected, "reconciliation injected the accepted order");
    assert_eq!(order(&app, &id).await["status"], "IN_PREPARATION");
}

#[tokio::test]
async fn a_pos_that_keeps_failing_is_given_up_on_after_bounded_retries_and_refunded() {
    let app = shop(|s| s.orders.pos_max_attempts = 3).await;
    // The POS answers 503 to every injection (each attempt is itself retried by the client).
    app.faults(
        Sim::Epoint,
        json!({"fail_next": {"POST /v1/locations/{location_id}/orders": 100}}),
    )
    .await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "accept").await;
    let cancelled = wait_for_status(&app, &id, "CANCELLED").await;
    assert_eq!(cancelled["payment"]["status"], "REFUNDED");
    assert_eq!(
        okya_order(&app, &cart).await["cancellation"]["kind"],
        "recalled"
    );
    assert_eq!(app.ledger(Sim::Epoint).await["orders"], json!([]));
    assert_eq!(
        app.ledger(Sim::Stripe).await["refunds"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn when_okya_will_not_record_the_payment_the_charge_is_refunded() {
    let app = shop(|_| {}).await;
    app.faults(Sim::Okya, json!({"refuse_next": {"POST /v1/orders/{order_id}/payments": {"status": 409, "code": "invalid_state", "times": 5}}})).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let payload = checkout(&app, &cart, "pm_card_visa", "k").await;
    assert_eq!(payload["order"]["status"], "PAYMENT_FAILED");
    assert_eq!(payload["order"]["payment"]["status"], "REFUNDED");
    // Okya's refusal is not the card's fault: no "try another card".
    assert_eq!(error_codes(&payload), vec!["ORDER_NOT_ACCEPTED"]);
    // And the Okya order is not left open without a payment.
    assert_eq!(okya_order(&app, &cart).await["status"], "CANCELED");
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(
        stripe["refunds"].as_array().map(Vec::len),
        Some(1),
        "{stripe}"
    );
    assert_eq!(stripe["refunds"][0]["amount"], 1874);
}

#[tokio::test]
async fn when_the_capture_is_refused_the_order_is_recalled_and_the_authorisation_released() {
    let app = shop(|s| s.orders.capture = cbtl_bff::domain::CaptureMode::OnAcceptance).await;
    app.faults(Sim::Stripe, json!({"refuse_next": {"POST /v1/payment_intents/{id}/capture": {"status": 400, "code": "charge_expired_for_capture", "times": 5}}})).await;
    let cart = filled_cart(&app, "str_pasadena").await;
    let id = checkout(&app, &cart, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store_action(&app, &cart, "accept").await;
    let cancelled = wait_for_status(&app, &id, "CANCELLED").await;
    assert_eq!(cancelled["payment"]["status"], "CANCELLED");
    assert_eq!(
        okya_order(&app, &cart).await["cancellation"]["kind"],
        "recalled"
    );
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(
        intents(&stripe)[0]["status"],
        "canceled",
        "released, never captured: {stripe}"
    );
    assert_eq!(stripe["refunds"], json!([]));
}
