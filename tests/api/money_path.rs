//! The money path's hard cases, each from a reported failure: a refusal while giving money
//! back, Stripe refusing requests of ours, a catalogue that changes under a POS retry, and
//! Stripe's idempotency as Stripe documents it (slow first requests, saved 500s).

use crate::helpers::{Sim, error_code, error_codes};
use crate::routes::{CAPTURE, INJECT, INTENT_SEARCH, INTENTS, PAYMENTS, REFUNDS};
use crate::shop::{
    StoreAction::{Accept, Reject},
    placed, shop,
};
use cbtl_bff::domain::CaptureMode;
use serde_json::json;

/// Item A2: a support agent refunds the charge in Stripe's Dashboard before the POS at
/// `str_burbank` refuses the order. Our refund is refused (`charge_already_refunded`); the
/// order must read Stripe's truth and end refunded, not ask Stripe again forever.
#[tokio::test]
async fn a_charge_refunded_by_support_before_a_pos_refusal_ends_cancelled_once() {
    let shop = shop(|s| s.orders.pos_max_attempts = 1).await;
    let (cart, id) = shop.awaiting_acceptance("str_burbank").await;
    shop.refund_outside(&id).await;
    shop.store_action(&cart, Accept).await;
    let order = shop.wait_for_status(&id, "CANCELLED").await;
    assert_eq!(order["payment"]["status"], "REFUNDED");
    let row = shop.wait_until_settled(&id).await;
    assert_eq!(row.attention, None);
    // The Dashboard's refund and our one refused try; the step is over, so no more.
    let refunds = shop.log(REFUNDS).await;
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    assert_eq!(refunds[1]["status"], 400, "ours was refused: {refunds:?}");
    shop.assert_money_invariants().await;
}

/// Item A2, capture on acceptance: the authorisation is cancelled outside the service, then
/// the store accepts. The capture is refused; Stripe says the hold is gone, so the order
/// is recalled (nothing to take, nothing to give back), not captured-and-forgotten or
/// looping on a release Stripe refuses.
#[tokio::test]
async fn an_authorisation_cancelled_outside_is_recalled_not_captured() {
    let shop = shop(|s| s.orders.capture = CaptureMode::OnAcceptance).await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    shop.release_outside(&id).await;
    shop.store_action(&cart, Accept).await;
    let order = shop.wait_for_status(&id, "CANCELLED").await;
    assert_eq!(order["payment"]["status"], "CANCELLED");
    let row = shop.wait_until_settled(&id).await;
    assert_eq!(row.attention, None);
    assert_eq!(row.failure_code.as_deref(), Some("authorization_lost"));
    assert_eq!(
        shop.okya_order(&cart).await["cancellation"]["kind"],
        "recalled"
    );
    assert_eq!(shop.log(CAPTURE).await.len(), 1);
    shop.assert_money_invariants().await;
}

/// Item A2's bound: a refusal Stripe's own record cannot explain (the charge is still
/// captured) is not retried forever: the order is marked for an operator, counted by
/// `/readyz`, and Stripe is not asked again.
#[tokio::test]
async fn a_refund_refusal_stripe_cannot_explain_goes_to_an_operator() {
    let shop = shop(|s| s.orders.max_step_attempts = 3).await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    shop.refuse_next(REFUNDS, 400, "charge_disputed", 1000)
        .await;
    shop.store_action(&cart, Reject).await;
    shop.eventually("the order marked for an operator", || async {
        shop.row(&id).await.attention.is_some()
    })
    .await;
    let ready = shop.readiness().await;
    assert_eq!(ready["orders"]["needing_attention"], 1, "{ready}");
    let tries = shop.log(REFUNDS).await.len();
    assert!((1..=3).contains(&tries), "bounded: {tries}");
    // The sweeper leaves it alone: another sweep sends nothing.
    let settled = shop.wait_until_settled(&id).await;
    assert!(
        settled
            .attention
            .as_deref()
            .unwrap_or("")
            .contains("charge_disputed"),
        "{settled:?}"
    );
    assert_eq!(shop.log(REFUNDS).await.len(), tries);
    assert_eq!(shop.order(&id).await["status"], "AWAITING_ACCEPTANCE");
}

/// Item A3: a 401 from Stripe (a revoked key) is ours, not the card's: no "try another
/// card", nothing charged, and the same checkout sent again tries again.
#[tokio::test]
async fn a_revoked_stripe_key_is_not_the_customers_card_and_the_checkout_can_be_retried() {
    let shop = shop(|_| {}).await;
    shop.refuse_next(INTENTS, 401, "api_key_expired", 1).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let first = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    assert_eq!(error_codes(&first), ["PAYMENT_UNAVAILABLE"], "{first}");
    assert_ne!(error_codes(&first), ["PAYMENT_FAILED"]);
    assert_eq!(first["order"]["status"], "AWAITING_PAYMENT");
    let id = placed(&first);
    assert!(shop.intents_for(&id).await.is_empty());
    let again = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    assert_eq!(again["userErrors"], json!([]), "{again}");
    assert_eq!(again["order"]["status"], "AWAITING_ACCEPTANCE");
    assert_eq!(again["order"]["id"], id.as_str());
    shop.assert_money_invariants().await;
}

/// Item A3: a checkout Stripe refused for our reasons and never sent again is cancelled
/// after the authentication timeout, with nothing charged and nothing left open.
#[tokio::test]
async fn an_unretried_payment_is_cancelled_after_the_timeout() {
    let shop = shop(|s| s.orders.authentication_timeout_secs = 1).await;
    shop.refuse_next(INTENTS, 400, "parameter_unknown", 1).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let first = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    assert_eq!(error_codes(&first), ["PAYMENT_UNAVAILABLE"], "{first}");
    let id = placed(&first);
    shop.wait_for_status(&id, "PAYMENT_FAILED").await;
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    let again = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    assert_eq!(error_codes(&again), ["PAYMENT_UNAVAILABLE"], "{again}");
    assert!(shop.intents_for(&id).await.is_empty());
}

/// Item A4: the store renames a product between two tries of the POS injection. The
/// retry must send the same ticket under the same key (Epoint refuses a key reused with
/// another body, which used to get a good order recalled and refunded).
#[tokio::test]
async fn a_product_renamed_between_two_pos_tries_does_not_change_the_ticket() {
    // A slow sweeper leaves a wide gap between the first try and the flow's retry.
    let shop = shop(|s| {
        s.orders.sweep_interval_ms = 1_500;
        s.orders.pos_max_attempts = 5;
    })
    .await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    // The POS takes the first try; all three of its answers are lost.
    shop.lose_next(INJECT, 3, "drop").await;
    shop.store_action(&cart, Accept).await;
    shop.eventually("the first try", || async {
        shop.log(INJECT).await.len() >= 3
    })
    .await;
    shop.sandbox(
        reqwest::Method::PATCH,
        Sim::Okya,
        "products/prd_latte",
        json!({"name": "Caffè Latte (new recipe)"}),
    )
    .await;
    let order = shop.wait_for_status(&id, "IN_PREPARATION").await;
    assert_eq!(order["payment"]["status"], "CAPTURED");
    let tries = shop.log(INJECT).await;
    assert!(tries.len() >= 4, "{tries:?}");
    assert!(
        tries.iter().all(|t| t["status"] != 422),
        "a try was refused: {tries:?}"
    );
    shop.assert_one_key(INJECT, 4).await;
    shop.assert_money_invariants().await;
}

/// Item A5, from the report: a 1 s Stripe timeout and a charge Stripe answers after 3 s.
/// The retries meet `409 idempotency_key_in_use` while the first runs; the order must not
/// end PAYMENT_FAILED while the card is charged, and must be charged exactly once.
#[tokio::test]
async fn a_charge_slower_than_the_timeout_is_charged_once_and_kept() {
    let shop = shop(|s| s.stripe.timeout_ms = 1_000).await;
    shop.slow_next(INTENTS, 3_000).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    let id = placed(&payload);
    let order = shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
    assert_eq!(order["payment"]["status"], "CAPTURED");
    let tries = shop.log(INTENTS).await;
    assert!(
        tries.iter().any(|t| t["status"] == 409),
        "a retry met the key in use: {tries:?}"
    );
    shop.assert_one_key(INTENTS, 2).await;
    assert_eq!(shop.intents_for(&id).await.len(), 1);
    assert_eq!(shop.ledger(Sim::Stripe).await["refunds"], json!([]));
    shop.assert_money_invariants().await;
}

/// Item A5: Stripe charged, then answered 500 and saved that 500 under the key, so every
/// retry gets it replayed. The flow finds the intent by the order's metadata.
#[tokio::test]
async fn a_charge_whose_saved_500_is_replayed_is_found_by_its_metadata() {
    let shop = shop(|_| {}).await;
    shop.lose_next(INTENTS, 1, 500).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    let id = placed(&payload);
    assert_eq!(
        shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await["payment"]["status"],
        "CAPTURED"
    );
    assert_eq!(shop.intents_for(&id).await.len(), 1);
    assert!(!shop.log(INTENT_SEARCH).await.is_empty());
    shop.assert_money_invariants().await;
}

/// Item A5: a capture Stripe made, then answered with a saved 500: the intent says it is
/// captured, and the order goes on (not recalled, not captured twice).
#[tokio::test]
async fn a_capture_whose_saved_500_is_replayed_is_read_from_the_intent() {
    let shop = shop(|s| s.orders.capture = CaptureMode::OnAcceptance).await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    shop.lose_next(CAPTURE, 1, 500).await;
    shop.store_action(&cart, Accept).await;
    let order = shop.wait_for_status(&id, "IN_PREPARATION").await;
    assert_eq!(order["payment"]["status"], "CAPTURED");
    shop.assert_money_invariants().await;
}

/// Found by the step matrix: a checkout waiting for its order drove the flow every 25 ms,
/// so a step backing off after a failure was tried again at once, over and over, and used
/// up its attempts in seconds. Whoever drives the flow, a step waits for its retry time.
#[tokio::test]
async fn a_waiting_checkout_keeps_the_retry_pace_of_a_failing_step() {
    let shop = shop(|s| s.orders.checkout_wait_ms = 2_000).await;
    shop.fail_next(PAYMENTS, 1_000_000).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let body = shop
        .checkout_body("id", &cart, "pm_card_visa", None, "k")
        .await;
    assert_eq!(error_code(&body), "UPSTREAM_UNAVAILABLE", "{body}");
    // Backing off from 200 ms, about 4 tries fit in 2 s (3 requests each), a webhook's
    // run included; driven every 25 ms it was over a hundred.
    let tries = shop.log(PAYMENTS).await.len();
    assert!((3..=18).contains(&tries), "{tries} requests in 2 s");
}

/// A stored value the flow needs is missing (here the order's store, blanked in the row):
/// the order goes to an operator with the reason, and nothing is sent upstream with an
/// empty location, no POS ticket and no recall or refund guessed from a corrupt row.
#[tokio::test]
async fn an_order_without_its_store_goes_to_an_operator_and_sends_the_pos_nothing() {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
    let shop = shop(|_| {}).await;
    let (cart, id) = shop.awaiting_acceptance("str_pasadena").await;
    let mut row = shop.row(&id).await.into_active_model();
    row.store_id = Set(String::new());
    row.update(&shop.app.state().db)
        .await
        .expect("the row blanked");
    shop.store_action(&cart, Accept).await;
    shop.eventually("the order marked for an operator", || async {
        shop.row(&id).await.attention.is_some()
    })
    .await;
    let settled = shop.wait_until_settled(&id).await;
    assert!(
        settled
            .attention
            .as_deref()
            .unwrap_or("")
            .contains("has no store"),
        "{settled:?}"
    );
    assert!(
        shop.log(INJECT).await.is_empty(),
        "no ticket for an empty location"
    );
    assert!(
        shop.log(REFUNDS).await.is_empty(),
        "nothing refunded on a guess"
    );
    let ready = shop.readiness().await;
    assert_eq!(ready["orders"]["needing_attention"], 1, "{ready}");
}

/// A step slower than the lease (Stripe answering a PaymentIntent creation after 2 s, the
/// lease 600 ms, the sweeper looking every 100 ms) keeps its order: the runner renews its
/// lease, so no second runner takes the order and sends the charge again or writes over
/// the first one's work (found by the chaos soak: an order completed at the store was set
/// back to awaiting acceptance by a runner whose lease had lapsed).
#[tokio::test]
async fn a_step_slower_than_the_lease_keeps_its_order_and_is_not_run_twice() {
    let shop = shop(|s| {
        s.orders.lease_ms = 600;
        s.orders.sweep_interval_ms = 100;
    })
    .await;
    let cart = shop.filled_cart("str_pasadena").await;
    shop.slow_next(INTENTS, 2_000).await;
    let id = placed(&shop.checkout(&cart, "pm_card_visa", None, "k").await);
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    shop.wait_until_settled(&id).await;
    let sent = shop.keys_sent(INTENTS, &id).await;
    assert_eq!(
        sent.values().sum::<usize>(),
        1,
        "one runner sent the charge, once: {sent:?}"
    );
    let history = shop.order_selecting("statusHistory { status }", &id).await;
    assert_eq!(
        history["statusHistory"],
        json!([{"status": "AWAITING_ACCEPTANCE"}, {"status": "IN_PREPARATION"}]),
        "{history}"
    );
    shop.assert_money_invariants().await;
}
