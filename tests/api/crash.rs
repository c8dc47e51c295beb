//! The process dies between an upstream call and its bookkeeping, at each step of Place
//! Order in turn; a restarted service (same database, same upstreams) must finish or
//! compensate the order, with every upstream effect happening exactly once.

use crate::helpers::{
    Db, ExternalUpstreams, TestApp, TestDb, free_port, spawn_with_settings, test_settings,
};
use serde_json::{Value, json};
use std::time::Duration;

/// Upstreams that outlive the service, as real ones do.
struct World {
    upstreams: ExternalUpstreams,
    settings: cbtl_bff::config::Settings,
    _db: TestDb,
}

async fn world(capture: cbtl_bff::domain::CaptureMode) -> World {
    let port = free_port();
    let upstreams = ExternalUpstreams::start(port).await;
    let (db, url) = TestDb::new(Db::Sqlite).await;
    let mut settings = test_settings(url);
    settings.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
    upstreams.configure(&mut settings);
    settings.orders.capture = capture;
    settings.orders.lease_ms = 1_000;
    settings.orders.sweep_interval_ms = 100;
    settings.orders.checkout_wait_ms = 2_000;
    settings.jobs.lease_ms = 1_000;
    settings.jobs.poll_interval_ms = 50;
    World {
        upstreams,
        settings,
        _db: db,
    }
}

async fn ledger(app: &TestApp, base: &str, path: &str) -> Value {
    app.http
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn cart_with_coffee(app: &TestApp, store: &str) -> String {
    let cart = app.new_cart(store).await;
    let added = app
        .data(
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_americano\", quantity: 2, modifierOptionIds: [\"opt_size_small\"]}]) { userErrors { code } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(added["cartLinesAdd"]["userErrors"], json!([]));
    cart
}

#[derive(Clone, Copy)]
enum Store {
    Accepts,
    Rejects,
    PosOffline,
}

/// Runs one order, dying once before recording `step`, then restarts and waits for
/// `expected`; returns the Stripe and Epoint ledgers.
async fn die_before(
    step: &str,
    card: &str,
    store: Store,
    capture: cbtl_bff::domain::CaptureMode,
    expected: &str,
) -> (Value, Value, Value) {
    let world = world(capture).await;
    let app = spawn_with_settings(world.settings.clone()).await;
    let customer = app.sign_up("+16265550140", "ada@example.com").await;
    app.use_token(Some(&customer.access_token));
    let store_id = if matches!(store, Store::PosOffline) {
        "str_burbank"
    } else {
        "str_pasadena"
    };
    let cart = cart_with_coffee(&app, store_id).await;
    app.app.state().crash_points.arm(step);
    let checkout = app
        .gql(
            "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status } userErrors { code } } }",
            json!({"i": {"cartId": cart, "paymentMethodId": card, "idempotencyKey": "crash"}}),
        )
        .await;
    if app.app.state().crash_points.fired() == 0 {
        // The crash comes later, after the store's decision.
        let okya_orders = ledger(&app, &world.upstreams.okya.base_url, "/_sandbox/orders").await;
        let okya_id = okya_orders["orders"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no Okya order: {checkout}"))
            .to_owned();
        let action = if matches!(store, Store::Rejects) {
            "reject"
        } else {
            "accept"
        };
        app.http
            .post(format!(
                "{}/_sandbox/orders/{okya_id}/{action}",
                world.upstreams.okya.base_url
            ))
            .json(&json!({"reason": "test"}))
            .send()
            .await
            .unwrap();
        app.eventually("the crash", || async {
            app.app.state().crash_points.fired() == 1
        })
        .await;
    }
    let token = customer.access_token.clone();
    drop(app);

    let app = spawn_with_settings(world.settings.clone()).await;
    app.use_token(Some(&token));
    // The app retries its checkout with the same key: it gets the same order.
    let retried = app
        .gql(
            "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status } userErrors { code } } }",
            json!({"i": {"cartId": cart, "paymentMethodId": card, "idempotencyKey": "crash"}}),
        )
        .await;
    let id = retried["data"]["checkout"]["order"]["id"]
        .as_str()
        .map(str::to_owned);
    let Some(id) = id else {
        panic!("the retried checkout found no order after dying before {step}: {retried}");
    };
    let mut last = Value::Null;
    for _ in 0..100 {
        last = app
            .data(
                "query($o: ID!) { order(id: $o) { status payment { status } } }",
                json!({"o": id}),
            )
            .await;
        if last["order"]["status"] == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last["order"]["status"], expected,
        "after dying before {step}"
    );
    let stripe = ledger(&app, &world.upstreams.stripe.base_url, "/_sandbox/ledger").await;
    let epoint = ledger(&app, &world.upstreams.epoint.base_url, "/_sandbox/ledger").await;
    let okya = ledger(&app, &world.upstreams.okya.base_url, "/_sandbox/orders").await;
    assert_eq!(
        okya["orders"].as_array().map(Vec::len),
        Some(1),
        "one Okya order after dying before {step}"
    );
    (stripe, epoint, okya)
}

fn count(ledger: &Value, key: &str) -> usize {
    ledger[key].as_array().map(Vec::len).unwrap_or(0)
}

use cbtl_bff::domain::CaptureMode::{Immediate, OnAcceptance};

#[tokio::test]
async fn dying_before_recording_the_okya_order_submits_and_charges_once() {
    let (stripe, _, _) = die_before(
        "charge",
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "AWAITING_ACCEPTANCE",
    )
    .await;
    assert_eq!(count(&stripe, "payment_intents"), 1);
}

#[tokio::test]
async fn dying_before_recording_the_charge_charges_once() {
    let (stripe, _, okya) = die_before(
        "record_payment",
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "AWAITING_ACCEPTANCE",
    )
    .await;
    assert_eq!(count(&stripe, "payment_intents"), 1);
    assert_eq!(
        okya["orders"][0]["payment"]["reference"],
        stripe["payment_intents"][0]["id"]
    );
}

#[tokio::test]
async fn dying_before_recording_the_saved_payment_saves_it_once() {
    let (stripe, _, okya) = die_before(
        "await_acceptance",
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "AWAITING_ACCEPTANCE",
    )
    .await;
    assert_eq!(count(&stripe, "payment_intents"), 1);
    assert!(okya["orders"][0]["payment"].is_object());
}

#[tokio::test]
async fn dying_before_recording_a_decline_still_cancels_the_okya_order() {
    let (stripe, _, okya) = die_before(
        "cancel_okya",
        "pm_card_chargeDeclined",
        Store::Accepts,
        Immediate,
        "PAYMENT_FAILED",
    )
    .await;
    assert!(
        stripe["payment_intents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|pi| pi["status"] != "succeeded")
    );
    assert_eq!(okya["orders"][0]["status"], "CANCELED");
}

#[tokio::test]
async fn dying_before_recording_the_injection_injects_once() {
    let (stripe, epoint, _) = die_before(
        "done",
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "IN_PREPARATION",
    )
    .await;
    assert_eq!(count(&epoint, "orders"), 1, "{epoint}");
    assert_eq!(count(&stripe, "payment_intents"), 1);
}

#[tokio::test]
async fn dying_before_recording_the_capture_captures_once() {
    let (stripe, epoint, _) = die_before(
        "done",
        "pm_card_visa",
        Store::Accepts,
        OnAcceptance,
        "IN_PREPARATION",
    )
    .await;
    assert_eq!(count(&epoint, "orders"), 1);
    assert_eq!(stripe["payment_intents"][0]["status"], "succeeded");
    assert_eq!(
        stripe["payment_intents"][0]["amount_received"],
        stripe["payment_intents"][0]["amount"]
    );
}

#[tokio::test]
async fn dying_before_recording_a_recall_still_refunds_once() {
    let (stripe, epoint, okya) = die_before(
        "refund",
        "pm_card_visa",
        Store::PosOffline,
        Immediate,
        "CANCELLED",
    )
    .await;
    assert_eq!(count(&epoint, "orders"), 0);
    assert_eq!(okya["orders"][0]["cancellation"]["kind"], "recalled");
    assert_eq!(count(&stripe, "refunds"), 1, "{stripe}");
}

#[tokio::test]
async fn dying_before_recording_a_refund_refunds_once() {
    let (stripe, _, _) = die_before(
        "done",
        "pm_card_visa",
        Store::Rejects,
        Immediate,
        "REJECTED",
    )
    .await;
    assert_eq!(count(&stripe, "refunds"), 1, "{stripe}");
    assert_eq!(
        stripe["refunds"][0]["amount"],
        stripe["payment_intents"][0]["amount"]
    );
}

#[tokio::test]
async fn dying_before_recording_a_release_releases_once() {
    let (stripe, _, _) = die_before(
        "done",
        "pm_card_visa",
        Store::Rejects,
        OnAcceptance,
        "REJECTED",
    )
    .await;
    assert_eq!(count(&stripe, "refunds"), 0);
    assert_eq!(stripe["payment_intents"][0]["status"], "canceled");
}
