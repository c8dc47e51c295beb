//! The process dies between an upstream call and its bookkeeping, at each step of Place
//! Order in turn; a restarted service (same database, same upstreams, same port) must
//! finish or compensate the order. The step it died in is sent again: the simulators'
//! call logs must show that second request under the first one's idempotency key, since
//! their ledgers (which refuse or replay duplicates) cannot tell.

use crate::helpers::{Db, Sim, TestApp, World};
use crate::routes::{
    ADJUST, CANCEL, CAPTURE, INJECT, INTENTS, LOCK, ORDERS, PAYMENTS, RECALL, REFUNDS, RELEASE,
    Route, UNLOCK,
};
use crate::shop::StoreAction::{Accept, Reject};
use cbtl_bff::domain::{
    CaptureMode::{self, Immediate, OnAcceptance},
    Step,
};
use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Store {
    Accepts,
    Rejects,
    PosOffline,
}

/// One order of two small americanos through a service that dies once, before recording
/// `before` (the crash point armed with that step), and is started again.
struct Crash {
    before: Step,
    card: &'static str,
    store: Store,
    capture: CaptureMode,
    /// The status the order must reach after the restart.
    ends: &'static str,
    /// A voucher of this kind (`PERCENTAGE`, …) on the order.
    voucher: Option<&'static str>,
}

/// The restarted service with its order, settled, and the world it runs in (the
/// simulators stop when it is dropped).
struct Survivor {
    shop: TestApp,
    id: String,
    cart: String,
    _world: World,
}

impl Survivor {
    /// `route` was asked for the order's effect under one key, by at least `at_least`
    /// requests; how many there were.
    async fn sent_once(&self, route: Route, at_least: usize) -> usize {
        self.shop.assert_sent_once(route, &self.id, at_least).await
    }

    /// `route` was never sent a request about the order.
    async fn not_sent(&self, route: Route) {
        self.shop.assert_not_sent(route, &self.id).await
    }

    /// The order's PaymentIntents at Stripe.
    async fn intents(&self) -> Vec<Value> {
        self.shop.intents_for(&self.id).await
    }

    /// The Okya simulator's copy of the order.
    async fn okya_order(&self) -> Value {
        self.shop.okya_order(&self.cart).await
    }
}

impl Crash {
    /// Paid by Visa at a store that accepts, captured at once, without a voucher.
    fn before(step: Step, ends: &'static str) -> Self {
        Crash {
            before: step,
            card: "pm_card_visa",
            store: Store::Accepts,
            capture: Immediate,
            ends,
            voucher: None,
        }
    }

    /// Runs the order, dying once before recording the step, then restarts and waits for
    /// the order to end as it must and for the flow to have nothing left to do.
    async fn run(self) -> Survivor {
        let step = self.before;
        let world = World::start(Db::Sqlite, |s| {
            s.orders.capture = self.capture;
            s.orders.lease_ms = 1_000;
            s.orders.sweep_interval_ms = 100;
            s.orders.checkout_wait_ms = 2_000;
            s.jobs.lease_ms = 1_000;
            s.jobs.poll_interval_ms = 50;
        })
        .await;
        let shop = world.spawn().await;
        let customer = shop
            .sign_up_and_use("+16265550140", "ada@example.com")
            .await;
        let store_id = if matches!(self.store, Store::PosOffline) {
            "str_burbank"
        } else {
            "str_pasadena"
        };
        let cart = shop
            .cart_with(
                store_id,
                json!([{"productId": "prd_americano", "quantity": 2, "modifierOptionIds": ["opt_size_small"]}]),
            )
            .await;
        let voucher = match self.voucher {
            Some(kind) => {
                shop.wait_for_link(&customer.access_token).await;
                Some(shop.voucher(kind, "AVAILABLE").await)
            }
            None => None,
        };
        shop.app.state().crash_points.arm(step);
        let first = shop
            .checkout_body("id status", &cart, self.card, voucher.as_deref(), "crash")
            .await;
        if shop.app.state().crash_points.fired() == 0 {
            // The crash comes later, after the store's decision.
            assert!(
                shop.okya_order(&cart).await.is_object(),
                "no Okya order: {first}"
            );
            let action = if matches!(self.store, Store::Rejects) {
                Reject
            } else {
                Accept
            };
            shop.store_action(&cart, action).await;
            shop.eventually("the crash", || async {
                shop.app.state().crash_points.fired() == 1
            })
            .await;
        }
        drop(shop);

        let shop = world.spawn().await;
        shop.use_token(Some(&customer.access_token));
        // The app retries its checkout with the same key: it gets the same order.
        let retried = shop
            .checkout_body("id status", &cart, self.card, voucher.as_deref(), "crash")
            .await;
        let Some(id) = retried["data"]["checkout"]["order"]["id"].as_str() else {
            panic!("the retried checkout found no order after dying before {step:?}: {retried}");
        };
        let id = id.to_owned();
        shop.wait_for_status(&id, self.ends).await;
        shop.wait_until_settled(&id).await;
        assert_eq!(
            shop.okya_orders().await.len(),
            1,
            "one Okya order after dying before {step:?}"
        );
        shop.assert_sent_once(ORDERS, &id, 1).await;
        shop.assert_money_invariants().await;
        Survivor {
            shop,
            id,
            cart,
            _world: world,
        }
    }
}

#[tokio::test]
async fn dying_before_recording_the_okya_order_submits_and_charges_once() {
    let order = Crash::before(Step::Charge, "AWAITING_ACCEPTANCE")
        .run()
        .await;
    order.sent_once(ORDERS, 2).await;
    order.sent_once(INTENTS, 1).await;
    assert_eq!(order.intents().await.len(), 1);
}

#[tokio::test]
async fn dying_before_recording_the_charge_charges_once() {
    let order = Crash::before(Step::RecordPayment, "AWAITING_ACCEPTANCE")
        .run()
        .await;
    order.sent_once(INTENTS, 2).await;
    let intents = order.intents().await;
    assert_eq!(intents.len(), 1);
    assert_eq!(
        order.okya_order().await["payment"]["reference"],
        intents[0]["id"]
    );
}

#[tokio::test]
async fn dying_before_recording_the_saved_payment_saves_it_once() {
    let order = Crash::before(Step::AwaitAcceptance, "AWAITING_ACCEPTANCE")
        .run()
        .await;
    order.sent_once(PAYMENTS, 2).await;
    order.sent_once(INTENTS, 1).await;
    assert!(order.okya_order().await["payment"].is_object());
}

#[tokio::test]
async fn dying_before_recording_a_decline_still_cancels_the_okya_order() {
    let order = Crash {
        card: "pm_card_chargeDeclined",
        ..Crash::before(Step::CancelOkya, "PAYMENT_FAILED")
    }
    .run()
    .await;
    let intents = order.intents().await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["amount_received"], 0);
    order.sent_once(INTENTS, 2).await;
    order.sent_once(CANCEL, 1).await;
    assert_eq!(order.okya_order().await["status"], "CANCELED");
}

#[tokio::test]
async fn dying_before_recording_the_injection_injects_once() {
    let order = Crash::before(Step::Done, "IN_PREPARATION").run().await;
    order.sent_once(INJECT, 2).await;
    order.sent_once(INTENTS, 1).await;
}

#[tokio::test]
async fn dying_before_recording_the_injection_of_an_authorised_order_injects_and_captures_once() {
    let order = Crash {
        capture: OnAcceptance,
        ..Crash::before(Step::Capture, "IN_PREPARATION")
    }
    .run()
    .await;
    order.sent_once(INJECT, 2).await;
    assert_eq!(order.sent_once(CAPTURE, 1).await, 1);
    let intent = &order.intents().await[0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], intent["amount"]);
}

/// The capture is recorded the moment Stripe answers, before Okya is told of it; dying
/// after telling Okya sends Okya's update again, and never the capture.
#[tokio::test]
async fn dying_after_a_capture_before_recording_okyas_update_captures_once() {
    let order = Crash {
        capture: OnAcceptance,
        ..Crash::before(Step::Done, "IN_PREPARATION")
    }
    .run()
    .await;
    assert_eq!(
        order.sent_once(CAPTURE, 1).await,
        1,
        "captured by one request"
    );
    assert_eq!(order.sent_once(INJECT, 1).await, 1);
    // Okya hears of the payment twice under two keys, authorised then captured; the
    // captured update, sent again after the restart, under its first key.
    let mut sent: Vec<usize> = order
        .shop
        .keys_sent(PAYMENTS, &order.id)
        .await
        .into_values()
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, [1, 2], "requests per key");
    let intent = &order.intents().await[0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], intent["amount"]);
}

#[tokio::test]
async fn dying_before_recording_a_recall_still_refunds_once() {
    let order = Crash {
        store: Store::PosOffline,
        ..Crash::before(Step::Refund, "CANCELLED")
    }
    .run()
    .await;
    assert_eq!(order.shop.ledger(Sim::Epoint).await["orders"], json!([]));
    assert_eq!(order.okya_order().await["cancellation"]["kind"], "recalled");
    order.sent_once(RECALL, 2).await;
    order.sent_once(REFUNDS, 1).await;
}

#[tokio::test]
async fn dying_before_recording_a_refund_refunds_once() {
    let order = Crash {
        store: Store::Rejects,
        ..Crash::before(Step::Done, "REJECTED")
    }
    .run()
    .await;
    order.sent_once(REFUNDS, 2).await;
    let intent = &order.intents().await[0];
    assert_eq!(intent["amount_refunded"], intent["amount"]);
}

#[tokio::test]
async fn dying_before_recording_a_release_releases_once() {
    let order = Crash {
        store: Store::Rejects,
        capture: OnAcceptance,
        ..Crash::before(Step::Done, "REJECTED")
    }
    .run()
    .await;
    order.sent_once(RELEASE, 2).await;
    order.not_sent(REFUNDS).await;
    assert_eq!(order.intents().await[0]["status"], "canceled");
}

#[tokio::test]
async fn dying_after_the_voucher_lock_and_adjustment_locks_and_adjusts_once() {
    let order = Crash {
        voucher: Some("PERCENTAGE"),
        ..Crash::before(Step::Charge, "AWAITING_ACCEPTANCE")
    }
    .run()
    .await;
    // The discount step ran again after the restart: its wallet read, lock and Okya
    // adjustment went under their first keys, and the charge was of the discounted total.
    order.sent_once(LOCK, 2).await;
    order.sent_once(ADJUST, 2).await;
    order.sent_once(INTENTS, 1).await;
    let shown = order
        .shop
        .order_selecting("discount { amount } total { amount }", &order.id)
        .await;
    assert_ne!(shown["discount"]["amount"], "0.00", "{shown}");
}

#[tokio::test]
async fn dying_after_a_declined_voucher_order_released_its_voucher_releases_once() {
    let order = Crash {
        card: "pm_card_chargeDeclined",
        voucher: Some("PERCENTAGE"),
        ..Crash::before(Step::Done, "PAYMENT_FAILED")
    }
    .run()
    .await;
    order.sent_once(UNLOCK, 2).await;
    order.sent_once(CANCEL, 2).await;
    let wallet = order
        .shop
        .data("{ vouchers { status discount { kind } } }", json!({}))
        .await;
    let percent = wallet["vouchers"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["discount"]["kind"] == "PERCENTAGE"))
        .map(|v| v["status"].clone());
    assert_eq!(percent, Some(json!("AVAILABLE")), "released: {wallet}");
}
