//! Use Reward: vouchers priced and locked by SessionM, the adjustment on the Okya order,
//! the adjusted total charged, points credited, and every voucher used once or released.

use crate::helpers::{Db, Sim, TestApp, error_codes, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;

const CHECKOUT: &str = "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status subtotal { amount } discount { amount } tax { amount } total { amount } payment { status amount { amount } } voucher { id voucherId name discount { amount } } } userErrors { code field message } } }";

async fn member(phone: &str, email: &str, app: &TestApp) -> String {
    let customer = app.sign_up(phone, email).await;
    let token = customer.access_token.clone();
    app.eventually("the SessionM link", || async {
        app.gql_as(
            Some(&token),
            "{ me { loyalty { pointsBalance } } }",
            json!({}),
        )
        .await["data"]["me"]["loyalty"]
            .is_object()
    })
    .await;
    token
}

async fn shop() -> (TestApp, String) {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.sandbox.auto_accept_delay_ms = 0;
        s.orders.sweep_interval_ms = 100;
        s.jobs.poll_interval_ms = 50;
    })
    .await;
    let token = member("+16265550180", "ada@example.com", &app).await;
    app.use_token(Some(&token));
    (app, token)
}

async fn vouchers(app: &TestApp) -> Vec<Value> {
    app.data("{ vouchers { id status discount { kind } } }", json!({}))
        .await["vouchers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn voucher(app: &TestApp, kind: &str, status: &str) -> String {
    vouchers(app)
        .await
        .into_iter()
        .find(|v| v["discount"]["kind"] == kind && v["status"] == status)
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {status} {kind} voucher"))
}

async fn status_of(app: &TestApp, id: &str) -> String {
    vouchers(app)
        .await
        .into_iter()
        .find(|v| v["id"] == id)
        .map(|v| v["status"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// Two large oat lattes and a croissant: subtotal 17.00.
async fn cart(app: &TestApp) -> String {
    let cart = app.new_cart("str_pasadena").await;
    app.data(
        "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_latte\", quantity: 2, modifierOptionIds: [\"opt_size_large\", \"opt_milk_oat\"]}, {productId: \"prd_croissant\", quantity: 1}]) { userErrors { code } } }",
        json!({"c": cart}),
    )
    .await;
    cart
}

async fn checkout(app: &TestApp, cart: &str, voucher: &str, card: &str, key: &str) -> Value {
    let body = app
        .gql(CHECKOUT, json!({"i": {"cartId": cart, "paymentMethodId": card, "voucherId": voucher, "idempotencyKey": key}}))
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["checkout"].clone()
}

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
        .and_then(|o| o.iter().find(|o| o["cart_id"] == cart).cloned())
        .unwrap_or(Value::Null)
}

async fn store(app: &TestApp, cart: &str, action: &str) {
    let id = okya_order(app, cart).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.http
        .post(format!(
            "{}/_sandbox/orders/{id}/{action}",
            app.sim_url(Sim::Okya)
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
}

async fn wait_for(app: &TestApp, id: &str, status: &str) -> Value {
    for _ in 0..100 {
        let order = app
            .data(
                "query($o: ID!) { order(id: $o) { status pointsEarned payment { status } } }",
                json!({"o": id}),
            )
            .await;
        if order["order"]["status"] == status {
            return order["order"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never reached {status}");
}

#[tokio::test]
async fn a_voucher_discounts_the_okya_order_the_adjusted_total_is_charged_and_points_follow() {
    let (app, _) = shop().await;
    let fixed = voucher(&app, "FIXED_AMOUNT", "AVAILABLE").await;
    let cart = cart(&app).await;
    let payload = checkout(&app, &cart, &fixed, "pm_card_visa", "k").await;
    assert_eq!(payload["userErrors"], json!([]));
    let order = &payload["order"];
    // 17.00 less 2.00 is 15.00; tax 10.25% is 1.5375, so 1.54; total 16.54.
    assert_eq!(order["subtotal"]["amount"], "17.00");
    assert_eq!(order["discount"]["amount"], "2.00");
    assert_eq!(order["tax"]["amount"], "1.54");
    assert_eq!(order["total"]["amount"], "16.54");
    assert_eq!(order["payment"]["amount"]["amount"], "16.54");
    assert_eq!(order["voucher"]["voucherId"], fixed.as_str());
    assert_eq!(order["voucher"]["discount"]["amount"], "2.00");
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(stripe["payment_intents"][0]["amount"], 1654);
    assert_eq!(
        okya_order(&app, &cart).await["adjustments"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(status_of(&app, &fixed).await, "LOCKED");

    let id = order["id"].as_str().unwrap().to_owned();
    store(&app, &cart, "accept").await;
    wait_for(&app, &id, "IN_PREPARATION").await;
    app.eventually("points credited", || async {
        app.data(
            "query($o: ID!) { order(id: $o) { pointsEarned } }",
            json!({"o": id}),
        )
        .await["order"]["pointsEarned"]
            == 16
    })
    .await;
    assert_eq!(
        app.data("{ me { loyalty { pointsBalance } } }", json!({}))
            .await["me"]["loyalty"]["pointsBalance"],
        16
    );
    assert_eq!(status_of(&app, &fixed).await, "REDEEMED");

    // Used once: a second order cannot use it, and is neither charged nor shown.
    let again = cart_again(&app).await;
    let refused = checkout(&app, &again, &fixed, "pm_card_visa", "k2").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_ALREADY_USED"]);
    assert_eq!(
        refused["userErrors"][0]["field"],
        json!(["input", "voucherId"])
    );
    assert_eq!(refused["order"], json!(null));
    assert_eq!(
        app.ledger(Sim::Stripe).await["payment_intents"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(okya_order(&app, &again).await["status"], "CANCELED");
}

async fn cart_again(app: &TestApp) -> String {
    cart(app).await
}

#[tokio::test]
async fn a_free_drink_that_covers_the_order_charges_nothing() {
    let (app, _) = shop().await;
    let free = voucher(&app, "FREE_ITEM", "AVAILABLE").await;
    let cart = app.new_cart("str_pasadena").await;
    app.data(
        "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_latte\", quantity: 1, modifierOptionIds: [\"opt_size_small\"]}]) { userErrors { code } } }",
        json!({"c": cart}),
    )
    .await;
    let payload = checkout(&app, &cart, &free, "pm_card_visa", "free").await;
    assert_eq!(payload["userErrors"], json!([]));
    assert_eq!(payload["order"]["total"]["amount"], "0.00");
    assert_eq!(payload["order"]["status"], "AWAITING_ACCEPTANCE");
    assert_eq!(payload["order"]["payment"], json!(null));
    assert_eq!(
        app.ledger(Sim::Stripe).await["payment_intents"],
        json!([]),
        "no Stripe charge at all"
    );
    let id = payload["order"]["id"].as_str().unwrap().to_owned();
    store(&app, &cart, "accept").await;
    wait_for(&app, &id, "IN_PREPARATION").await;
}

#[tokio::test]
async fn expired_foreign_and_unknown_vouchers_are_refused_with_nothing_charged() {
    let (app, _) = shop().await;
    let expired = voucher(&app, "FIXED_AMOUNT", "EXPIRED").await;
    let cart1 = cart(&app).await;
    let refused = checkout(&app, &cart1, &expired, "pm_card_visa", "a").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_EXPIRED"]);
    assert_eq!(okya_order(&app, &cart1).await["status"], "CANCELED");

    let bob = member("+16265550181", "bob@example.com", &app).await;
    let bobs: Value = app
        .gql_as(Some(&bob), "{ vouchers { id status } }", json!({}))
        .await;
    let foreign = bobs["data"]["vouchers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cart2 = cart(&app).await;
    assert_eq!(
        error_codes(&checkout(&app, &cart2, &foreign, "pm_card_visa", "b").await),
        vec!["VOUCHER_NOT_FOUND"]
    );
    let cart3 = cart(&app).await;
    assert_eq!(
        error_codes(&checkout(&app, &cart3, "uo_nope", "pm_card_visa", "c").await),
        vec!["VOUCHER_NOT_FOUND"]
    );
    assert_eq!(app.ledger(Sim::Stripe).await["payment_intents"], json!([]));
    // Bob's voucher is untouched.
    let after: Value = app
        .gql_as(Some(&bob), "{ vouchers { id status } }", json!({}))
        .await;
    assert_eq!(
        after["data"]["vouchers"][0]["status"],
        bobs["data"]["vouchers"][0]["status"]
    );
}

#[tokio::test]
async fn a_declined_payment_releases_the_voucher() {
    let (app, _) = shop().await;
    let percent = voucher(&app, "PERCENTAGE", "AVAILABLE").await;
    let cart = cart(&app).await;
    let payload = checkout(&app, &cart, &percent, "pm_card_chargeDeclined", "k").await;
    assert_eq!(error_codes(&payload), vec!["CARD_DECLINED"]);
    assert_eq!(payload["order"]["status"], "PAYMENT_FAILED");
    assert_eq!(okya_order(&app, &cart).await["status"], "CANCELED");
    assert_eq!(status_of(&app, &percent).await, "AVAILABLE", "usable again");
}

#[tokio::test]
async fn a_rejected_order_gives_its_voucher_back() {
    let (app, _) = shop().await;
    let percent = voucher(&app, "PERCENTAGE", "AVAILABLE").await;
    let cart = cart(&app).await;
    let id = checkout(&app, &cart, &percent, "pm_card_visa", "k").await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store(&app, &cart, "reject").await;
    let rejected = wait_for(&app, &id, "REJECTED").await;
    assert_eq!(rejected["payment"]["status"], "REFUNDED");
    assert_eq!(status_of(&app, &percent).await, "AVAILABLE");
}

#[tokio::test]
async fn two_checkouts_racing_for_one_voucher_charge_only_one() {
    let (app, _) = shop().await;
    let fixed = voucher(&app, "FIXED_AMOUNT", "AVAILABLE").await;
    let (a, b) = (cart(&app).await, cart(&app).await);
    let (first, second) = tokio::join!(
        checkout(&app, &a, &fixed, "pm_card_visa", "race-a"),
        checkout(&app, &b, &fixed, "pm_card_visa", "race-b"),
    );
    let outcomes = [&first, &second];
    let won: Vec<_> = outcomes
        .iter()
        .filter(|o| o["userErrors"] == json!([]))
        .collect();
    let lost: Vec<_> = outcomes
        .iter()
        .filter(|o| o["userErrors"] != json!([]))
        .collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{first} {second}");
    assert_eq!(error_codes(lost[0]), vec!["VOUCHER_IN_USE"]);
    assert_eq!(lost[0]["order"], json!(null));
    let stripe = app.ledger(Sim::Stripe).await;
    assert_eq!(
        stripe["payment_intents"].as_array().map(Vec::len),
        Some(1),
        "{stripe}"
    );
}

#[tokio::test]
async fn a_transaction_send_that_fails_is_retried_until_points_land_once() {
    let (app, _) = shop().await;
    app.faults(
        Sim::Sessionm,
        json!({"fail_next": {"POST /api/2.0/send_transaction": 8}}),
    )
    .await;
    let cart = cart(&app).await;
    let id = checkout(
        &app,
        &cart,
        &voucher(&app, "FIXED_AMOUNT", "AVAILABLE").await,
        "pm_card_visa",
        "k",
    )
    .await["order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    store(&app, &cart, "accept").await;
    wait_for(&app, &id, "IN_PREPARATION").await;
    app.eventually("points after the retries", || async {
        app.data("{ me { loyalty { pointsBalance } } }", json!({}))
            .await["me"]["loyalty"]["pointsBalance"]
            == 16
    })
    .await;
    let ledger = app.ledger(Sim::Sessionm).await;
    assert_eq!(
        ledger["transactions"].as_array().map(Vec::len),
        Some(1),
        "{ledger}"
    );
    assert!(
        app.call_count(Sim::Sessionm, "POST /api/2.0/send_transaction")
            .await
            > 1
    );
}

#[tokio::test]
async fn use_reward_runs_on_postgres() {
    let app = spawn_app_with(Db::Postgres, |s| {
        s.sandbox.auto_accept_delay_ms = 0;
        s.orders.sweep_interval_ms = 100;
        s.jobs.poll_interval_ms = 50;
    })
    .await;
    let token = member("+16265550182", "ada@example.com", &app).await;
    app.use_token(Some(&token));
    let fixed = voucher(&app, "FIXED_AMOUNT", "AVAILABLE").await;
    let first = cart(&app).await;
    let payload = checkout(&app, &first, &fixed, "pm_card_visa", "pg-1").await;
    assert_eq!(payload["order"]["total"]["amount"], "16.54");
    let second = cart(&app).await;
    assert_eq!(
        error_codes(&checkout(&app, &second, &fixed, "pm_card_visa", "pg-2").await),
        vec!["VOUCHER_IN_USE"]
    );
    let id = payload["order"]["id"].as_str().unwrap().to_owned();
    store(&app, &first, "reject").await;
    wait_for(&app, &id, "REJECTED").await;
    assert_eq!(status_of(&app, &fixed).await, "AVAILABLE");
}

#[tokio::test]
async fn a_voucher_that_does_not_apply_to_the_basket_is_refused_and_kept() {
    let (app, _) = shop().await;
    let fixed = voucher(&app, "FIXED_AMOUNT", "AVAILABLE").await;
    // $2 off needs a $4 basket; a bottle of water is $2.25.
    let cart = app.new_cart("str_pasadena").await;
    app.data(
        "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_water\", quantity: 1}]) { userErrors { code } } }",
        json!({"c": cart}),
    )
    .await;
    let refused = checkout(&app, &cart, &fixed, "pm_card_visa", "small").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_NOT_APPLICABLE"]);
    assert_eq!(refused["order"], json!(null));
    assert_eq!(app.ledger(Sim::Stripe).await["payment_intents"], json!([]));
    assert_eq!(okya_order(&app, &cart).await["status"], "CANCELED");
    assert_eq!(status_of(&app, &fixed).await, "AVAILABLE");
}

#[tokio::test]
async fn when_okya_refuses_the_discount_the_voucher_is_released_and_nothing_charged() {
    let (app, _) = shop().await;
    app.faults(Sim::Okya, json!({"refuse_next": {"POST /v1/orders/{order_id}/adjustments": {"status": 422, "code": "adjustment_too_large", "times": 5}}})).await;
    let fixed = voucher(&app, "FIXED_AMOUNT", "AVAILABLE").await;
    let cart = cart(&app).await;
    let refused = checkout(&app, &cart, &fixed, "pm_card_visa", "k").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_NOT_APPLICABLE"]);
    assert_eq!(refused["order"], json!(null));
    assert_eq!(app.ledger(Sim::Stripe).await["payment_intents"], json!([]));
    assert_eq!(okya_order(&app, &cart).await["status"], "CANCELED");
    assert_eq!(
        status_of(&app, &fixed).await,
        "AVAILABLE",
        "the lock was released"
    );
}
