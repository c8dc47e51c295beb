//! The process dies between an upstream call and its bookkeeping, at each step of Place
//! Order in turn; a restarted service (same database, same upstreams, same port) must
//! finish or compensate the order. The step it died in is sent again: the simulators'
//! call logs must show that second request under the first one's idempotency key, since
//! their ledgers (which refuse or replay duplicates) cannot tell.

use crate::helpers::{Db, ExternalUpstreams, Port, Sim, TestDb, spawn_on, test_settings};
use crate::shop::Shop;
use cbtl_bff::domain::{
    CaptureMode::{self, Immediate, OnAcceptance},
    Step,
};
use serde_json::json;

/// Upstreams that outlive the service, as real ones do, and the port every incarnation
/// of the service listens on (Okya's webhooks are sent there).
struct World {
    upstreams: ExternalUpstreams,
    settings: cbtl_bff::config::Settings,
    port: Port,
    _db: TestDb,
}

async fn world(capture: CaptureMode) -> World {
    let port = Port::bind();
    let upstreams = ExternalUpstreams::start(port.number()).await;
    let (db, url) = TestDb::new(Db::Sqlite).await;
    let mut settings = test_settings(url);
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
        port,
        _db: db,
    }
}

async fn cart_with_coffee(shop: &Shop, store: &str) -> String {
    let cart = shop.new_cart(store).await;
    let added = shop
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

/// The restarted service with its order, settled, and the world it runs in.
struct Survivor {
    shop: Shop,
    id: String,
    cart: String,
    /// Bind it (`world: _world`): the simulators stop when it is dropped.
    world: World,
}

const CHECKOUT: &str = "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status } userErrors { code } } }";

/// Runs one order, dying once before recording `step`, then restarts and waits for
/// `expected` and for the flow to have nothing left to do.
async fn die_before(
    step: Step,
    card: &str,
    store: Store,
    capture: CaptureMode,
    expected: &str,
) -> Survivor {
    die_before_with(step, card, store, capture, expected, None).await
}

/// Like [`die_before`], with a voucher of the given kind (`PERCENTAGE`, …) on the order.
async fn die_before_with(
    step: Step,
    card: &str,
    store: Store,
    capture: CaptureMode,
    expected: &str,
    voucher: Option<&str>,
) -> Survivor {
    let world = world(capture).await;
    let shop = Shop {
        app: spawn_on(world.settings.clone(), &world.port).await,
    };
    let customer = shop.sign_up("+16265550140", "ada@example.com").await;
    shop.use_token(Some(&customer.access_token));
    let store_id = if matches!(store, Store::PosOffline) {
        "str_burbank"
    } else {
        "str_pasadena"
    };
    let cart = cart_with_coffee(&shop, store_id).await;
    let voucher = match voucher {
        Some(kind) => {
            shop.eventually("the SessionM link", || async {
                shop.gql("{ me { loyalty { pointsBalance } } }", json!({}))
                    .await["data"]["me"]["loyalty"]
                    .is_object()
            })
            .await;
            Some(shop.voucher(kind, "AVAILABLE").await)
        }
        None => None,
    };
    shop.app.app.state().crash_points.arm(step);
    let checkout = shop
        .gql(
            CHECKOUT,
            json!({"i": {"cartId": cart, "paymentMethodId": card, "voucherId": voucher, "idempotencyKey": "crash"}}),
        )
        .await;
    if shop.app.app.state().crash_points.fired() == 0 {
        // The crash comes later, after the store's decision.
        assert!(
            shop.okya_order(&cart).await.is_object(),
            "no Okya order: {checkout}"
        );
        let action = if matches!(store, Store::Rejects) {
            "reject"
        } else {
            "accept"
        };
        shop.store_action(&cart, action).await;
        shop.eventually("the crash", || async {
            shop.app.app.state().crash_points.fired() == 1
        })
        .await;
    }
    drop(shop);

    let shop = Shop {
        app: spawn_on(world.settings.clone(), &world.port).await,
    };
    shop.use_token(Some(&customer.access_token));
    // The app retries its checkout with the same key: it gets the same order.
    let retried = shop
        .gql(
            CHECKOUT,
            json!({"i": {"cartId": cart, "paymentMethodId": card, "voucherId": voucher, "idempotencyKey": "crash"}}),
        )
        .await;
    let Some(id) = retried["data"]["checkout"]["order"]["id"].as_str() else {
        panic!("the retried checkout found no order after dying before {step:?}: {retried}");
    };
    let id = id.to_owned();
    shop.wait_for_status(&id, expected).await;
    shop.wait_until_settled(&id).await;
    let okya: serde_json::Value = shop
        .http
        .get(format!("{}/_sandbox/orders", world.upstreams.okya.base_url))
        .send()
        .await
        .expect("okya orders")
        .json()
        .await
        .expect("okya orders JSON");
    assert_eq!(
        okya["orders"].as_array().map(Vec::len),
        Some(1),
        "one Okya order after dying before {step:?}"
    );
    shop.assert_sent_once(Sim::Okya, Shop::ORDERS, &id, 1).await;
    shop.assert_money_invariants().await;
    Survivor {
        shop,
        id,
        cart,
        world,
    }
}

#[tokio::test]
async fn dying_before_recording_the_okya_order_submits_and_charges_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before(
        Step::Charge,
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "AWAITING_ACCEPTANCE",
    )
    .await;
    shop.assert_sent_once(Sim::Okya, Shop::ORDERS, &id, 2).await;
    shop.assert_sent_once(Sim::Stripe, Shop::INTENTS, &id, 1)
        .await;
    assert_eq!(shop.intents_for(&id).await.len(), 1);
}

#[tokio::test]
async fn dying_before_recording_the_charge_charges_once() {
    let Survivor {
        shop,
        id,
        cart,
        world: _world,
        ..
    } = die_before(
        Step::RecordPayment,
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "AWAITING_ACCEPTANCE",
    )
    .await;
    shop.assert_sent_once(Sim::Stripe, Shop::INTENTS, &id, 2)
        .await;
    let intents = shop.intents_for(&id).await;
    assert_eq!(intents.len(), 1);
    assert_eq!(
        shop.okya_order(&cart).await["payment"]["reference"],
        intents[0]["id"]
    );
}

#[tokio::test]
async fn dying_before_recording_the_saved_payment_saves_it_once() {
    let Survivor {
        shop,
        id,
        cart,
        world: _world,
        ..
    } = die_before(
        Step::AwaitAcceptance,
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "AWAITING_ACCEPTANCE",
    )
    .await;
    shop.assert_sent_once(Sim::Okya, Shop::PAYMENTS, &id, 2)
        .await;
    shop.assert_sent_once(Sim::Stripe, Shop::INTENTS, &id, 1)
        .await;
    assert!(shop.okya_order(&cart).await["payment"].is_object());
}

#[tokio::test]
async fn dying_before_recording_a_decline_still_cancels_the_okya_order() {
    let Survivor {
        shop,
        id,
        cart,
        world: _world,
        ..
    } = die_before(
        Step::CancelOkya,
        "pm_card_chargeDeclined",
        Store::Accepts,
        Immediate,
        "PAYMENT_FAILED",
    )
    .await;
    let intents = shop.intents_for(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["amount_received"], 0);
    shop.assert_sent_once(Sim::Stripe, Shop::INTENTS, &id, 2)
        .await;
    shop.assert_sent_once(Sim::Okya, Shop::CANCEL, &id, 1).await;
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
}

#[tokio::test]
async fn dying_before_recording_the_injection_injects_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before(
        Step::Done,
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "IN_PREPARATION",
    )
    .await;
    shop.assert_sent_once(Sim::Epoint, Shop::INJECT, &id, 2)
        .await;
    shop.assert_sent_once(Sim::Stripe, Shop::INTENTS, &id, 1)
        .await;
}

#[tokio::test]
async fn dying_before_recording_the_injection_of_an_authorised_order_injects_and_captures_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before(
        Step::Capture,
        "pm_card_visa",
        Store::Accepts,
        OnAcceptance,
        "IN_PREPARATION",
    )
    .await;
    shop.assert_sent_once(Sim::Epoint, Shop::INJECT, &id, 2)
        .await;
    assert_eq!(
        shop.assert_sent_once(Sim::Stripe, Shop::CAPTURE, &id, 1)
            .await,
        1
    );
    let intent = &shop.intents_for(&id).await[0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], intent["amount"]);
}

/// The capture is recorded the moment Stripe answers, before Okya is told of it; dying
/// after telling Okya sends Okya's update again, and never the capture.
#[tokio::test]
async fn dying_after_a_capture_before_recording_okyas_update_captures_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before(
        Step::Done,
        "pm_card_visa",
        Store::Accepts,
        OnAcceptance,
        "IN_PREPARATION",
    )
    .await;
    assert_eq!(
        shop.assert_sent_once(Sim::Stripe, Shop::CAPTURE, &id, 1)
            .await,
        1,
        "captured by one request"
    );
    assert_eq!(
        shop.assert_sent_once(Sim::Epoint, Shop::INJECT, &id, 1)
            .await,
        1
    );
    // Okya hears of the payment twice under two keys, authorised then captured; the
    // captured update, sent again after the restart, under its first key.
    let mut sent: Vec<usize> = shop
        .keys_sent(Sim::Okya, Shop::PAYMENTS, &id)
        .await
        .into_values()
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, [1, 2], "requests per key");
    let intent = &shop.intents_for(&id).await[0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], intent["amount"]);
}

#[tokio::test]
async fn dying_before_recording_a_recall_still_refunds_once() {
    let Survivor {
        shop,
        id,
        cart,
        world: _world,
        ..
    } = die_before(
        Step::Refund,
        "pm_card_visa",
        Store::PosOffline,
        Immediate,
        "CANCELLED",
    )
    .await;
    assert_eq!(shop.ledger(Sim::Epoint).await["orders"], json!([]));
    assert_eq!(
        shop.okya_order(&cart).await["cancellation"]["kind"],
        "recalled"
    );
    shop.assert_sent_once(Sim::Okya, Shop::RECALL, &id, 2).await;
    shop.assert_sent_once(Sim::Stripe, Shop::REFUNDS, &id, 1)
        .await;
}

#[tokio::test]
async fn dying_before_recording_a_refund_refunds_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before(
        Step::Done,
        "pm_card_visa",
        Store::Rejects,
        Immediate,
        "REJECTED",
    )
    .await;
    shop.assert_sent_once(Sim::Stripe, Shop::REFUNDS, &id, 2)
        .await;
    let intent = &shop.intents_for(&id).await[0];
    assert_eq!(intent["amount_refunded"], intent["amount"]);
}

#[tokio::test]
async fn dying_before_recording_a_release_releases_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before(
        Step::Done,
        "pm_card_visa",
        Store::Rejects,
        OnAcceptance,
        "REJECTED",
    )
    .await;
    shop.assert_sent_once(Sim::Stripe, Shop::RELEASE, &id, 2)
        .await;
    shop.assert_not_sent(Sim::Stripe, Shop::REFUNDS, &id).await;
    assert_eq!(shop.intents_for(&id).await[0]["status"], "canceled");
}

#[tokio::test]
async fn dying_after_the_voucher_lock_and_adjustment_locks_and_adjusts_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before_with(
        Step::Charge,
        "pm_card_visa",
        Store::Accepts,
        Immediate,
        "AWAITING_ACCEPTANCE",
        Some("PERCENTAGE"),
    )
    .await;
    // The discount step ran again after the restart: its wallet read, lock and Okya
    // adjustment went under their first keys, and the charge was of the discounted total.
    shop.assert_sent_once(Sim::Sessionm, Shop::LOCK, &id, 2)
        .await;
    shop.assert_sent_once(Sim::Okya, Shop::ADJUST, &id, 2).await;
    shop.assert_sent_once(Sim::Stripe, Shop::INTENTS, &id, 1)
        .await;
    let order = shop
        .order_selecting("discount { amount } total { amount }", &id)
        .await;
    assert_ne!(order["discount"]["amount"], "0.00", "{order}");
}

#[tokio::test]
async fn dying_after_a_declined_voucher_order_released_its_voucher_releases_once() {
    let Survivor {
        shop,
        id,
        world: _world,
        ..
    } = die_before_with(
        Step::Done,
        "pm_card_chargeDeclined",
        Store::Accepts,
        Immediate,
        "PAYMENT_FAILED",
        Some("PERCENTAGE"),
    )
    .await;
    shop.assert_sent_once(Sim::Sessionm, Shop::UNLOCK, &id, 2)
        .await;
    shop.assert_sent_once(Sim::Okya, Shop::CANCEL, &id, 2).await;
    let wallet = shop
        .data("{ vouchers { status discount { kind } } }", json!({}))
        .await;
    let percent = wallet["vouchers"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["discount"]["kind"] == "PERCENTAGE"))
        .map(|v| v["status"].clone());
    assert_eq!(percent, Some(json!("AVAILABLE")), "released: {wallet}");
}
