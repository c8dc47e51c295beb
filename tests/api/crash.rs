//! The process dies between an upstream call and its bookkeeping, at each step of Place
//! Order in turn; a restarted service (same database, same upstreams, same port) must
//! finish or compensate the order. The step it died in is sent again: the simulators'
//! call logs must show that second request under the first one's idempotency key, since
//! their ledgers (which refuse or replay duplicates) cannot tell.

use crate::helpers::{Db, Sim, TestApp, World};
use crate::routes::{
    ADJUST, CANCEL, CAPTURE, INJECT, INTENTS, LOCK, ORDERS, PAYMENTS, RECALL, REFUNDS, RELEASE,
    UNLOCK,
};
use crate::shop::StoreAction::{Accept, Reject};
use cbtl_bff::domain::{
    CaptureMode::{self, Immediate, OnAcceptance},
    Step,
};
use serde_json::json;

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

/// The restarted service with its order, settled, and the world it runs in.
struct Survivor {
    shop: TestApp,
    id: String,
    cart: String,
    /// Bind it (`_world`): the simulators stop when it is dropped.
    _world: World,
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
    let crash = Crash::before(Step::Charge, "AWAITING_ACCEPTANCE");
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    shop.assert_sent_once(ORDERS, &id, 2).await;
    shop.assert_sent_once(INTENTS, &id, 1).await;
    assert_eq!(shop.intents_for(&id).await.len(), 1);
}

#[tokio::test]
async fn dying_before_recording_the_charge_charges_once() {
    let crash = Crash::before(Step::RecordPayment, "AWAITING_ACCEPTANCE");
    let Survivor {
        shop,
        id,
        cart,
        _world,
    } = crash.run().await;
    shop.assert_sent_once(INTENTS, &id, 2).await;
    let intents = shop.intents_for(&id).await;
    assert_eq!(intents.len(), 1);
    assert_eq!(
        shop.okya_order(&cart).await["payment"]["reference"],
        intents[0]["id"]
    );
}

#[tokio::test]
async fn dying_before_recording_the_saved_payment_saves_it_once() {
    let crash = Crash::before(Step::AwaitAcceptance, "AWAITING_ACCEPTANCE");
    let Survivor {
        shop,
        id,
        cart,
        _world,
    } = crash.run().await;
    shop.assert_sent_once(PAYMENTS, &id, 2).await;
    shop.assert_sent_once(INTENTS, &id, 1).await;
    assert!(shop.okya_order(&cart).await["payment"].is_object());
}

#[tokio::test]
async fn dying_before_recording_a_decline_still_cancels_the_okya_order() {
    let crash = Crash {
        card: "pm_card_chargeDeclined",
        ..Crash::before(Step::CancelOkya, "PAYMENT_FAILED")
    };
    let Survivor {
        shop,
        id,
        cart,
        _world,
    } = crash.run().await;
    let intents = shop.intents_for(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["amount_received"], 0);
    shop.assert_sent_once(INTENTS, &id, 2).await;
    shop.assert_sent_once(CANCEL, &id, 1).await;
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
}

#[tokio::test]
async fn dying_before_recording_the_injection_injects_once() {
    let crash = Crash::before(Step::Done, "IN_PREPARATION");
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    shop.assert_sent_once(INJECT, &id, 2).await;
    shop.assert_sent_once(INTENTS, &id, 1).await;
}

#[tokio::test]
async fn dying_before_recording_the_injection_of_an_authorised_order_injects_and_captures_once() {
    let crash = Crash {
        capture: OnAcceptance,
        ..Crash::before(Step::Capture, "IN_PREPARATION")
    };
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    shop.assert_sent_once(INJECT, &id, 2).await;
    assert_eq!(shop.assert_sent_once(CAPTURE, &id, 1).await, 1);
    let intent = &shop.intents_for(&id).await[0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], intent["amount"]);
}

/// The capture is recorded the moment Stripe answers, before Okya is told of it; dying
/// after telling Okya sends Okya's update again, and never the capture.
#[tokio::test]
async fn dying_after_a_capture_before_recording_okyas_update_captures_once() {
    let crash = Crash {
        capture: OnAcceptance,
        ..Crash::before(Step::Done, "IN_PREPARATION")
    };
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    assert_eq!(
        shop.assert_sent_once(CAPTURE, &id, 1).await,
        1,
        "captured by one request"
    );
    assert_eq!(shop.assert_sent_once(INJECT, &id, 1).await, 1);
    // Okya hears of the payment twice under two keys, authorised then captured; the
    // captured update, sent again after the restart, under its first key.
    let mut sent: Vec<usize> = shop.keys_sent(PAYMENTS, &id).await.into_values().collect();
    sent.sort_unstable();
    assert_eq!(sent, [1, 2], "requests per key");
    let intent = &shop.intents_for(&id).await[0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], intent["amount"]);
}

#[tokio::test]
async fn dying_before_recording_a_recall_still_refunds_once() {
    let crash = Crash {
        store: Store::PosOffline,
        ..Crash::before(Step::Refund, "CANCELLED")
    };
    let Survivor {
        shop,
        id,
        cart,
        _world,
    } = crash.run().await;
    assert_eq!(shop.ledger(Sim::Epoint).await["orders"], json!([]));
    assert_eq!(
        shop.okya_order(&cart).await["cancellation"]["kind"],
        "recalled"
    );
    shop.assert_sent_once(RECALL, &id, 2).await;
    shop.assert_sent_once(REFUNDS, &id, 1).await;
}

#[tokio::test]
async fn dying_before_recording_a_refund_refunds_once() {
    let crash = Crash {
        store: Store::Rejects,
        ..Crash::before(Step::Done, "REJECTED")
    };
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    shop.assert_sent_once(REFUNDS, &id, 2).await;
    let intent = &shop.intents_for(&id).await[0];
    assert_eq!(intent["amount_refunded"], intent["amount"]);
}

#[tokio::test]
async fn dying_before_recording_a_release_releases_once() {
    let crash = Crash {
        store: Store::Rejects,
        capture: OnAcceptance,
        ..Crash::before(Step::Done, "REJECTED")
    };
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    shop.assert_sent_once(RELEASE, &id, 2).await;
    shop.assert_not_sent(REFUNDS, &id).await;
    assert_eq!(shop.intents_for(&id).await[0]["status"], "canceled");
}

#[tokio::test]
async fn dying_after_the_voucher_lock_and_adjustment_locks_and_adjusts_once() {
    let crash = Crash {
        voucher: Some("PERCENTAGE"),
        ..Crash::before(Step::Charge, "AWAITING_ACCEPTANCE")
    };
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    // The discount step ran again after the restart: its wallet read, lock and Okya
    // adjustment went under their first keys, and the charge was of the discounted total.
    shop.assert_sent_once(LOCK, &id, 2).await;
    shop.assert_sent_once(ADJUST, &id, 2).await;
    shop.assert_sent_once(INTENTS, &id, 1).await;
    let order = shop
        .order_selecting("discount { amount } total { amount }", &id)
        .await;
    assert_ne!(order["discount"]["amount"], "0.00", "{order}");
}

#[tokio::test]
async fn dying_after_a_declined_voucher_order_released_its_voucher_releases_once() {
    let crash = Crash {
        card: "pm_card_chargeDeclined",
        voucher: Some("PERCENTAGE"),
        ..Crash::before(Step::Done, "PAYMENT_FAILED")
    };
    let Survivor {
        shop, id, _world, ..
    } = crash.run().await;
    shop.assert_sent_once(UNLOCK, &id, 2).await;
    shop.assert_sent_once(CANCEL, &id, 2).await;
    let wallet = shop
        .data("{ vouchers { status discount { kind } } }", json!({}))
        .await;
    let percent = wallet["vouchers"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["discount"]["kind"] == "PERCENTAGE"))
        .map(|v| v["status"].clone());
    assert_eq!(percent, Some(json!("AVAILABLE")), "released: {wallet}");
}
