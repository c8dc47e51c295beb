//! Several instances on one PostgreSQL behave as one service: a webhook received by one
//! reaches subscribers connected to another (LISTEN/NOTIFY), and background work is done
//! once however many instances are running (leases, `FOR UPDATE SKIP LOCKED`).

use crate::helpers::{
    Db, ExternalUpstreams, Port, Sim, TestApp, TestDb, spawn_on, spawn_with_settings, test_settings,
};
use crate::shop::Shop;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn get(app: &TestApp, url: String) -> Value {
    app.http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_instances_share_one_database_as_one_service() {
    let port = Port::bind();
    let upstreams = ExternalUpstreams::start(port.number()).await;
    let (db, url) = TestDb::new(Db::Postgres).await;
    let mut settings = test_settings(url);
    upstreams.configure(&mut settings);
    settings.orders.sweep_interval_ms = 50;
    settings.jobs.poll_interval_ms = 20;

    // A receives Okya's webhooks; B serves the subscriber.
    let a = spawn_on(settings.clone(), &port).await;
    let b = spawn_with_settings(settings).await;

    let customer = a.sign_up("+16265550150", "ada@example.com").await;
    a.use_token(Some(&customer.access_token));
    b.use_token(Some(&customer.access_token));
    let mut orders = Vec::new();
    for n in 0..4 {
        let cart = if n % 2 == 0 {
            a.new_cart("str_pasadena").await
        } else {
            b.new_cart("str_pasadena").await
        };
        let app = if n % 2 == 0 { &a } else { &b };
        app.data(
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_water\", quantity: 3}]) { userErrors { code } } }",
            json!({"c": cart}),
        )
        .await;
        let placed = app
            .data(
                "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status } userErrors { code } } }",
                json!({"i": {"cartId": cart, "paymentMethodId": "pm_card_visa", "idempotencyKey": format!("k{n}")}}),
            )
            .await;
        assert_eq!(
            placed["checkout"]["order"]["status"], "AWAITING_ACCEPTANCE",
            "{placed}"
        );
        orders.push(
            placed["checkout"]["order"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // Follow the first order through B.
    let mut ws = b
        .subscribe_to_order(&customer.access_token, &orders[0], "status")
        .await;
    let mut statuses = Vec::new();
    statuses.push(next_status(&mut ws).await);

    // The store accepts every order; A gets the webhooks.
    let okya_orders = get(&a, format!("{}/_sandbox/orders", upstreams.okya.base_url)).await;
    let okya_orders = okya_orders["orders"].as_array().expect("Okya's orders");
    assert_eq!(okya_orders.len(), 4);
    for order in okya_orders {
        let id = order["id"].as_str().expect("an Okya order id");
        let accepted = a
            .http
            .post(format!(
                "{}/_sandbox/orders/{id}/accept",
                upstreams.okya.base_url
            ))
            .send()
            .await
            .expect("accept");
        assert!(accepted.status().is_success(), "{}", accepted.status());
    }
    // How fast the change crosses instances is the benchmarks' business.
    statuses.push(next_status(&mut ws).await);
    assert_eq!(statuses, ["AWAITING_ACCEPTANCE", "IN_PREPARATION"]);

    // Every order was injected, charged and sent to SessionM exactly once, with two
    // instances' workers and sweepers running: no step ran on both. The simulators'
    // ledgers would hide a second run (each replays a repeated key); the requests cannot.
    let shop = Shop { app: a };
    for id in &orders {
        shop.wait_for_status(id, "IN_PREPARATION").await;
        shop.eventually("the order sent to SessionM", || async {
            shop.order(id).await["pointsEarned"].is_number()
        })
        .await;
        shop.wait_until_settled(id).await;
        for (sim, route) in [
            (Sim::Okya, Shop::ORDERS),
            (Sim::Stripe, Shop::INTENTS),
            (Sim::Okya, Shop::PAYMENTS),
            (Sim::Epoint, Shop::INJECT),
            (Sim::Sessionm, Shop::SALE),
        ] {
            let sent = shop.assert_sent_once(sim, route, id, 1).await;
            assert_eq!(sent, 1, "{route} sent {sent} times for {id}");
        }
        let seen_by_b = b
            .data(
                "query($o: ID!) { order(id: $o) { status } }",
                json!({"o": id}),
            )
            .await;
        assert_eq!(seen_by_b["order"]["status"], "IN_PREPARATION");
    }
    shop.assert_money_invariants().await;
    drop(shop);
    drop(b);
    drop(db);
}

async fn next_status(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "next" {
                return value["payload"]["data"]["orderStatusChanged"]["status"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
        }
    }
}
