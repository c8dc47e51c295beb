//! Every active step of Place Order × the three ways an upstream call goes wrong:
//!
//! - **transient**: an outage (503s) that lasts until the flow has tried the step at least
//!   twice (each try is 3 inline requests) and every webhook job has been applied, then
//!   ends: only the flow's own retry can finish the order;
//! - **refusal**: the upstream says no, definitely;
//! - **lost**: the upstream acts, then its answer is lost (a 503 or a dropped connection
//!   instead of the answer), more times than the inline retries.
//!
//! Each case must end with the order completed or compensated, nothing charged twice,
//! nothing left open; every retry must have carried the first try's idempotency key (read
//! from the simulator's call log, faulted requests included).

use crate::helpers::{Sim, TestApp, error_codes};
use crate::routes::{
    ADJUST, CANCEL, CAPTURE, INJECT, INTENTS, LOCK, ORDERS, PAYMENTS, RECALL, REFUNDS, RELEASE,
    Route, SALE, UNLOCK,
};
use crate::shop::{
    StoreAction::{Accept, Reject},
    placed, shop,
};
use cbtl_bff::domain::CaptureMode;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Fault {
    Transient,
    Refusal,
    Lost,
}

/// Arms `fault` on `route`. An outage lasts until [`lift`] ends it; a lost answer lasts 5
/// requests: the first call's 3 inline tries, and 2 of the flow's own retry.
async fn arm(shop: &TestApp, route: Route, fault: Fault, refusal: (u16, &str)) {
    match fault {
        Fault::Transient => shop.fail_next(route, 1_000_000).await,
        Fault::Refusal => shop.refuse_next(route, refusal.0, refusal.1, 1).await,
        // Stripe saves a 5xx it answers under the key, so a lost Stripe answer is a broken
        // connection (the 5xx case has tests of its own); the others lose it as a 503.
        Fault::Lost if matches!(route.sim, Sim::Stripe) => shop.lose_next(route, 5, "drop").await,
        Fault::Lost => shop.lose_next(route, 5, 503).await,
    }
}

/// Ends an outage on `route` once it has outlasted two tries of the step (6 requests) and
/// no job is pending, so nothing but the flow's own retry is left to resume the order.
/// Does nothing for other faults.
async fn lift(shop: &TestApp, route: Route, fault: Fault) {
    if !matches!(fault, Fault::Transient) {
        return;
    }
    for _ in 0..400 {
        let tried = shop.log(route).await.len();
        let pending = shop.pending_jobs().await;
        if tried >= 6 && pending == 0 {
            shop.fail_next(route, 0).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the step was not tried again during the outage on {route}");
}

/// The requests that carried a fault on `route` used one key, and there was a retry.
async fn assert_retried_with_one_key(shop: &TestApp, route: Route, fault: Fault) {
    match fault {
        Fault::Transient | Fault::Lost => {
            shop.assert_one_key(route, 6).await;
        }
        Fault::Refusal => {}
    }
}

/// A filled cart checked out with `card` (and `voucher`) at `str_pasadena` while `fault`
/// is on `route` (armed just before), lifted once the step was tried again: the cart and
/// the `checkout` payload.
async fn checkout_through(
    shop: &TestApp,
    (route, fault): (Route, Fault),
    card: &str,
    voucher: Option<&str>,
) -> (String, Value) {
    let cart = shop.filled_cart("str_pasadena").await;
    let (payload, ()) = tokio::join!(
        shop.checkout(&cart, card, voucher, "k"),
        lift(shop, route, fault)
    );
    (cart, payload)
}

/// A paid order the store accepts while `fault` is on `route` (armed just before).
async fn accepted(
    shop: &TestApp,
    store: &str,
    (route, fault, refusal): (Route, Fault, (u16, &str)),
) -> (String, String) {
    let cart = shop.filled_cart(store).await;
    let payload = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    let id = placed(&payload);
    shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
    arm(shop, route, fault, refusal).await;
    tokio::join!(shop.store_action(&cart, Accept), lift(shop, route, fault));
    (cart, id)
}

async fn submit(fault: Fault) {
    let shop = shop(|_| {}).await;
    arm(&shop, ORDERS, fault, (400, "invalid_request")).await;
    let (cart, payload) = checkout_through(&shop, (ORDERS, fault), "pm_card_visa", None).await;
    match fault {
        Fault::Refusal => {
            // Our request, not the customer's cart: nothing charged, told to try again.
            assert_eq!(error_codes(&payload), ["SERVICE_UNAVAILABLE"], "{payload}");
            assert_eq!(payload["order"], Value::Null);
            assert_eq!(shop.ledger(Sim::Stripe).await["payment_intents"], json!([]));
        }
        Fault::Transient | Fault::Lost => {
            let id = placed(&payload);
            shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
            shop.store_action(&cart, Accept).await;
            shop.wait_for_status(&id, "IN_PREPARATION").await;
            let okya = shop.okya_orders().await;
            assert_eq!(okya.len(), 1, "one Okya order: {okya:?}");
        }
    }
    assert_retried_with_one_key(&shop, ORDERS, fault).await;
    shop.assert_money_invariants().await;
}

async fn discount(fault: Fault, route: Route) {
    let shop = shop(|_| {}).await;
    let voucher = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    arm(&shop, route, fault, (422, "offer_not_applicable")).await;
    let (cart, payload) =
        checkout_through(&shop, (route, fault), "pm_card_visa", Some(&voucher)).await;
    match fault {
        Fault::Refusal => {
            assert_eq!(
                error_codes(&payload),
                ["VOUCHER_NOT_APPLICABLE"],
                "{payload}"
            );
            assert_eq!(shop.ledger(Sim::Stripe).await["payment_intents"], json!([]));
            assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
            assert_eq!(shop.voucher_status(&voucher).await, "AVAILABLE");
        }
        Fault::Transient | Fault::Lost => {
            let id = placed(&payload);
            let order = shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
            assert_eq!(
                order["total"]["amount"], "16.54",
                "the discount applied: {order}"
            );
            shop.store_action(&cart, Accept).await;
            shop.wait_for_status(&id, "IN_PREPARATION").await;
            shop.eventually("the voucher redeemed", || async {
                shop.voucher_status(&voucher).await == "REDEEMED"
            })
            .await;
        }
    }
    assert_retried_with_one_key(&shop, route, fault).await;
    shop.assert_money_invariants().await;
}

async fn charge(fault: Fault) {
    let shop = shop(|_| {}).await;
    arm(&shop, INTENTS, fault, (400, "parameter_invalid_integer")).await;
    let (cart, payload) = checkout_through(&shop, (INTENTS, fault), "pm_card_visa", None).await;
    let id = placed(&payload);
    if let Fault::Refusal = fault {
        // Our request was at fault: nothing charged, not the card's fault, retryable.
        assert_eq!(error_codes(&payload), ["PAYMENT_UNAVAILABLE"], "{payload}");
        assert_eq!(payload["order"]["status"], "AWAITING_PAYMENT");
        assert!(shop.intents_for(&id).await.is_empty());
        let again = shop.checkout(&cart, "pm_card_visa", None, "k").await;
        assert_eq!(again["userErrors"], json!([]), "{again}");
        assert_eq!(again["order"]["id"], id.as_str());
    }
    shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    assert_eq!(shop.intents_for(&id).await.len(), 1);
    assert_retried_with_one_key(&shop, INTENTS, fault).await;
    shop.assert_money_invariants().await;
}

async fn record_payment(fault: Fault) {
    let shop = shop(|_| {}).await;
    arm(&shop, PAYMENTS, fault, (409, "invalid_state")).await;
    let (cart, payload) = checkout_through(&shop, (PAYMENTS, fault), "pm_card_visa", None).await;
    let id = placed(&payload);
    match fault {
        Fault::Refusal => {
            let order = shop.wait_for_status(&id, "PAYMENT_FAILED").await;
            assert_eq!(order["payment"]["status"], "REFUNDED");
            assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
        }
        Fault::Transient | Fault::Lost => {
            shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
            shop.store_action(&cart, Accept).await;
            shop.wait_for_status(&id, "IN_PREPARATION").await;
            assert_eq!(
                shop.okya_order(&cart).await["payment"]["status"],
                "captured"
            );
        }
    }
    assert_retried_with_one_key(&shop, PAYMENTS, fault).await;
    shop.assert_money_invariants().await;
}

async fn inject(fault: Fault) {
    // Enough tries that the outage ends before the POS is given up on.
    let shop = shop(|s| s.orders.pos_max_attempts = 10).await;
    let fault_on = (INJECT, fault, (409, "pos_offline"));
    let (cart, id) = accepted(&shop, "str_pasadena", fault_on).await;
    match fault {
        Fault::Refusal => {
            let order = shop.wait_for_status(&id, "CANCELLED").await;
            assert_eq!(order["payment"]["status"], "REFUNDED");
            assert_eq!(
                shop.okya_order(&cart).await["cancellation"]["kind"],
                "recalled"
            );
        }
        Fault::Transient | Fault::Lost => {
            shop.wait_for_status(&id, "IN_PREPARATION").await;
            let epoint = shop.ledger(Sim::Epoint).await;
            assert_eq!(
                epoint["orders"].as_array().map(Vec::len),
                Some(1),
                "{epoint}"
            );
        }
    }
    assert_retried_with_one_key(&shop, INJECT, fault).await;
    shop.assert_money_invariants().await;
}

async fn capture(fault: Fault) {
    let shop = shop(|s| s.orders.capture = CaptureMode::OnAcceptance).await;
    let fault_on = (CAPTURE, fault, (400, "charge_expired_for_capture"));
    let (cart, id) = accepted(&shop, "str_pasadena", fault_on).await;
    match fault {
        Fault::Refusal => {
            let order = shop.wait_for_status(&id, "CANCELLED").await;
            assert_eq!(order["payment"]["status"], "CANCELLED");
            assert_eq!(
                shop.okya_order(&cart).await["cancellation"]["kind"],
                "recalled"
            );
        }
        Fault::Transient | Fault::Lost => {
            let order = shop.wait_for_status(&id, "IN_PREPARATION").await;
            assert_eq!(order["payment"]["status"], "CAPTURED");
            assert_eq!(shop.intents_for(&id).await[0]["status"], "succeeded");
        }
    }
    assert_retried_with_one_key(&shop, CAPTURE, fault).await;
    shop.assert_money_invariants().await;
}

async fn recall(fault: Fault) {
    let shop = shop(|s| s.orders.pos_max_attempts = 1).await;
    let fault_on = (RECALL, fault, (409, "invalid_state"));
    let (_cart, id) = accepted(&shop, "str_burbank", fault_on).await;
    let order = shop.wait_for_status(&id, "CANCELLED").await;
    assert_eq!(order["payment"]["status"], "REFUNDED");
    assert_eq!(
        shop.ledger(Sim::Stripe).await["refunds"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_retried_with_one_key(&shop, RECALL, fault).await;
    shop.assert_money_invariants().await;
}

async fn refund(fault: Fault) {
    let shop = shop(|_| {}).await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    match fault {
        // The refusal as it happens: a support agent refunded the charge in Stripe's
        // Dashboard first, so Stripe refuses ours (`charge_already_refunded`).
        Fault::Refusal => shop.refund_outside(&id).await,
        Fault::Transient | Fault::Lost => arm(&shop, REFUNDS, fault, (0, "")).await,
    }
    tokio::join!(
        shop.store_action(&cart, Reject),
        lift(&shop, REFUNDS, fault)
    );
    let order = shop.wait_for_status(&id, "REJECTED").await;
    assert_eq!(order["payment"]["status"], "REFUNDED");
    let settled = shop.wait_until_settled(&id).await;
    assert_eq!(settled.attention, None);
    let refunds = shop.ledger(Sim::Stripe).await["refunds"].clone();
    assert_eq!(refunds.as_array().map(Vec::len), Some(1), "{refunds}");
    assert_retried_with_one_key(&shop, REFUNDS, fault).await;
    shop.assert_money_invariants().await;
}

async fn release(fault: Fault) {
    let shop = shop(|s| s.orders.capture = CaptureMode::OnAcceptance).await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    match fault {
        Fault::Refusal => shop.release_outside(&id).await,
        Fault::Transient | Fault::Lost => arm(&shop, RELEASE, fault, (0, "")).await,
    }
    tokio::join!(
        shop.store_action(&cart, Reject),
        lift(&shop, RELEASE, fault)
    );
    let order = shop.wait_for_status(&id, "REJECTED").await;
    assert_eq!(order["payment"]["status"], "CANCELLED");
    assert_eq!(shop.wait_until_settled(&id).await.attention, None);
    assert_eq!(shop.intents_for(&id).await[0]["status"], "canceled");
    assert_retried_with_one_key(&shop, RELEASE, fault).await;
    shop.assert_money_invariants().await;
}

async fn cancel_okya(fault: Fault) {
    let shop = shop(|_| {}).await;
    arm(&shop, CANCEL, fault, (409, "invalid_state")).await;
    let (cart, payload) =
        checkout_through(&shop, (CANCEL, fault), "pm_card_chargeDeclined", None).await;
    let id = placed(&payload);
    assert_eq!(
        shop.wait_for_status(&id, "PAYMENT_FAILED").await["payment"]["status"],
        "FAILED"
    );
    assert_eq!(shop.wait_until_settled(&id).await.attention, None);
    if !matches!(fault, Fault::Refusal) {
        assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    }
    assert_retried_with_one_key(&shop, CANCEL, fault).await;
    shop.assert_money_invariants().await;
}

async fn unlock(fault: Fault) {
    let shop = shop(|_| {}).await;
    let voucher = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    arm(&shop, UNLOCK, fault, (422, "offer_not_locked")).await;
    let (_cart, payload) = checkout_through(
        &shop,
        (UNLOCK, fault),
        "pm_card_chargeDeclined",
        Some(&voucher),
    )
    .await;
    let id = placed(&payload);
    shop.wait_for_status(&id, "PAYMENT_FAILED").await;
    assert_eq!(shop.wait_until_settled(&id).await.attention, None);
    if !matches!(fault, Fault::Refusal) {
        assert_eq!(shop.voucher_status(&voucher).await, "AVAILABLE");
    }
    assert_retried_with_one_key(&shop, UNLOCK, fault).await;
    shop.assert_money_invariants().await;
}

/// Step 25 (the sale to SessionM) is a durable job, not a step, but it is an upstream write all the same.
async fn sale(fault: Fault) {
    let shop = shop(|_| {}).await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    match fault {
        // A durable job retries on its own schedule: its outage is a count of 503s that
        // outlasts one run's inline tries.
        Fault::Transient => shop.fail_next(SALE, 5).await,
        Fault::Refusal | Fault::Lost => arm(&shop, SALE, fault, (422, "validation")).await,
    }
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    shop.wait_until_settled(&id).await;
    let order = shop.order(&id).await;
    match fault {
        // SessionM will never take this sale: the job is dead, for an operator.
        Fault::Refusal => {
            assert_eq!(order["pointsEarned"], Value::Null);
            let ready = shop.readiness().await;
            assert_eq!(ready["jobs"]["dead"], 1, "{ready}");
        }
        Fault::Transient | Fault::Lost => {
            assert!(
                order["pointsEarned"].as_i64().is_some_and(|p| p > 0),
                "{order}"
            );
            let sessionm = shop.ledger(Sim::Sessionm).await;
            let sales = sessionm["transactions"].as_array().map(Vec::len);
            assert_eq!(sales, Some(1), "{sessionm}");
        }
    }
    assert_retried_with_one_key(&shop, SALE, fault).await;
    shop.assert_money_invariants().await;
}

macro_rules! matrix {
    ($($name:ident => $run:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $run.await
            }
        )*
    };
}

matrix! {
    submit_transient => submit(Fault::Transient);
    submit_refused => submit(Fault::Refusal);
    submit_lost => submit(Fault::Lost);
    discount_lock_transient => discount(Fault::Transient, LOCK);
    discount_lock_refused => discount(Fault::Refusal, LOCK);
    discount_lock_lost => discount(Fault::Lost, LOCK);
    discount_adjust_transient => discount(Fault::Transient, ADJUST);
    discount_adjust_lost => discount(Fault::Lost, ADJUST);
    charge_transient => charge(Fault::Transient);
    charge_refused => charge(Fault::Refusal);
    charge_lost => charge(Fault::Lost);
    record_payment_transient => record_payment(Fault::Transient);
    record_payment_refused => record_payment(Fault::Refusal);
    record_payment_lost => record_payment(Fault::Lost);
    inject_transient => inject(Fault::Transient);
    inject_refused => inject(Fault::Refusal);
    inject_lost => inject(Fault::Lost);
    capture_transient => capture(Fault::Transient);
    capture_refused => capture(Fault::Refusal);
    capture_lost => capture(Fault::Lost);
    recall_transient => recall(Fault::Transient);
    recall_refused => recall(Fault::Refusal);
    recall_lost => recall(Fault::Lost);
    refund_transient => refund(Fault::Transient);
    refund_refused => refund(Fault::Refusal);
    refund_lost => refund(Fault::Lost);
    release_transient => release(Fault::Transient);
    release_refused => release(Fault::Refusal);
    release_lost => release(Fault::Lost);
    cancel_okya_transient => cancel_okya(Fault::Transient);
    cancel_okya_refused => cancel_okya(Fault::Refusal);
    cancel_okya_lost => cancel_okya(Fault::Lost);
    unlock_transient => unlock(Fault::Transient);
    unlock_refused => unlock(Fault::Refusal);
    unlock_lost => unlock(Fault::Lost);
    sale_transient => sale(Fault::Transient);
    sale_refused => sale(Fault::Refusal);
    sale_lost => sale(Fault::Lost);
}
