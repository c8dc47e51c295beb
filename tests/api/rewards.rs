//! Use Reward: vouchers priced and locked by SessionM, the adjustment on the Okya order,
//! the adjusted total charged, points credited, and every voucher used once or released.
//! SessionM answers a repeated lock or sale with its first answer, so what proves "once"
//! is what the service sent: each effect under one key (the simulators' call logs).

use crate::helpers::{Db, Sim, TestApp, error_codes};
use crate::routes::{ADJUST, INJECT, INTENTS, LOCK, REFUNDS, SALE, UNLOCK};
use crate::shop::{
    StoreAction::{Accept, Reject},
    placed, shop, shop_on,
};
use serde_json::{Value, json};

const ORDER_FIELDS: &str = "id status subtotal { amount } discount { amount } tax { amount } total { amount } payment { status amount { amount } } voucher { id voucherId name discount { amount } }";

/// The `checkout` payload with this file's order fields, using `voucher`.
async fn checkout(shop: &TestApp, cart: &str, voucher: &str, card: &str, key: &str) -> Value {
    shop.checkout_selecting(ORDER_FIELDS, cart, card, Some(voucher), key)
        .await
}

#[tokio::test]
async fn a_voucher_discounts_the_okya_order_the_adjusted_total_is_charged_and_points_follow() {
    let shop = shop(|_| {}).await;
    let fixed = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    // Two large oat lattes and a croissant: subtotal 17.00.
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = checkout(&shop, &cart, &fixed, "pm_card_visa", "k").await;
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
    let id = placed(&payload);
    assert_eq!(shop.intents_for(&id).await[0]["amount"], 1654);
    let adjustments = shop.okya_order(&cart).await["adjustments"].clone();
    assert_eq!(
        adjustments.as_array().map(Vec::len),
        Some(1),
        "{adjustments}"
    );
    assert_eq!(shop.voucher_status(&fixed).await, "LOCKED");

    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    shop.eventually("points credited", || async {
        shop.order(&id).await["pointsEarned"] == 16
    })
    .await;
    assert_eq!(shop.points_balance().await, 16);
    assert_eq!(shop.voucher_status(&fixed).await, "REDEEMED");
    shop.wait_until_settled(&id).await;
    // Locked, put on the Okya order, charged and sold once each, by one request each.
    for route in [LOCK, ADJUST, INTENTS, SALE] {
        assert_eq!(shop.assert_sent_once(route, &id, 1).await, 1, "{route}");
    }

    // Used once: a second order cannot use it, and is neither charged nor shown.
    let again = shop.filled_cart("str_pasadena").await;
    let refused = checkout(&shop, &again, &fixed, "pm_card_visa", "k2").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_ALREADY_USED"]);
    assert_eq!(
        refused["userErrors"][0]["field"],
        json!(["input", "voucherId"])
    );
    assert_eq!(refused["order"], json!(null));
    assert_eq!(shop.okya_order(&again).await["status"], "CANCELED");
    assert_eq!(
        shop.log(INTENTS).await.len(),
        1,
        "the refused order asked Stripe for nothing"
    );
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_free_drink_that_covers_the_order_charges_nothing() {
    let shop = shop(|_| {}).await;
    let free = shop.voucher("FREE_ITEM", "AVAILABLE").await;
    let cart = shop
        .cart_with(
            "str_pasadena",
            json!([{"productId": "prd_latte", "quantity": 1, "modifierOptionIds": ["opt_size_small"]}]),
        )
        .await;
    let payload = checkout(&shop, &cart, &free, "pm_card_visa", "free").await;
    assert_eq!(payload["userErrors"], json!([]));
    assert_eq!(payload["order"]["total"]["amount"], "0.00");
    assert_eq!(payload["order"]["status"], "AWAITING_ACCEPTANCE");
    assert_eq!(payload["order"]["payment"], json!(null));
    let id = placed(&payload);
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    shop.wait_until_settled(&id).await;
    assert_eq!(
        shop.log(INTENTS).await,
        Vec::<Value>::new(),
        "nothing asked of Stripe at all"
    );
    shop.assert_sent_once(INJECT, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn expired_foreign_and_unknown_vouchers_are_refused_with_nothing_charged() {
    let shop = shop(|_| {}).await;
    let expired = shop.voucher("FIXED_AMOUNT", "EXPIRED").await;
    let cart1 = shop.filled_cart("str_pasadena").await;
    let refused = checkout(&shop, &cart1, &expired, "pm_card_visa", "a").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_EXPIRED"]);
    assert_eq!(shop.okya_order(&cart1).await["status"], "CANCELED");

    let bob = shop
        .member("+16265550181", "bob@example.com")
        .await
        .access_token;
    let bobs: Value = shop
        .gql_as(Some(&bob), "{ vouchers { id status } }", json!({}))
        .await;
    let foreign = bobs["data"]["vouchers"][0]["id"]
        .as_str()
        .expect("Bob has a voucher")
        .to_owned();
    let cart2 = shop.filled_cart("str_pasadena").await;
    assert_eq!(
        error_codes(&checkout(&shop, &cart2, &foreign, "pm_card_visa", "b").await),
        vec!["VOUCHER_NOT_FOUND"]
    );
    let cart3 = shop.filled_cart("str_pasadena").await;
    assert_eq!(
        error_codes(&checkout(&shop, &cart3, "uo_nope", "pm_card_visa", "c").await),
        vec!["VOUCHER_NOT_FOUND"]
    );
    assert_eq!(shop.log(INTENTS).await, Vec::<Value>::new());
    // Bob's voucher is untouched.
    let after: Value = shop
        .gql_as(Some(&bob), "{ vouchers { id status } }", json!({}))
        .await;
    assert_eq!(
        after["data"]["vouchers"][0]["status"],
        bobs["data"]["vouchers"][0]["status"]
    );
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_declined_payment_releases_the_voucher() {
    let shop = shop(|_| {}).await;
    let percent = shop.voucher("PERCENTAGE", "AVAILABLE").await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = checkout(&shop, &cart, &percent, "pm_card_chargeDeclined", "k").await;
    assert_eq!(error_codes(&payload), vec!["CARD_DECLINED"]);
    assert_eq!(payload["order"]["status"], "PAYMENT_FAILED");
    let id = placed(&payload);
    shop.wait_until_settled(&id).await;
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    assert_eq!(
        shop.voucher_status(&percent).await,
        "AVAILABLE",
        "usable again"
    );
    shop.assert_sent_once(LOCK, &id, 1).await;
    shop.assert_sent_once(UNLOCK, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_rejected_order_gives_its_voucher_back() {
    let shop = shop(|_| {}).await;
    let percent = shop.voucher("PERCENTAGE", "AVAILABLE").await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, &percent, "pm_card_visa", "k").await);
    shop.store_action(&cart, Reject).await;
    let rejected = shop.wait_for_status(&id, "REJECTED").await;
    assert_eq!(rejected["payment"]["status"], "REFUNDED");
    shop.wait_until_settled(&id).await;
    assert_eq!(shop.voucher_status(&percent).await, "AVAILABLE");
    shop.assert_sent_once(REFUNDS, &id, 1).await;
    shop.assert_sent_once(UNLOCK, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn two_checkouts_racing_for_one_voucher_charge_only_one() {
    let shop = shop(|_| {}).await;
    let fixed = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    let (a, b) = (
        shop.filled_cart("str_pasadena").await,
        shop.filled_cart("str_pasadena").await,
    );
    let (first, second) = tokio::join!(
        checkout(&shop, &a, &fixed, "pm_card_visa", "race-a"),
        checkout(&shop, &b, &fixed, "pm_card_visa", "race-b"),
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
    let winner = placed(won[0]);
    shop.assert_sent_once(INTENTS, &winner, 1).await;
    assert_eq!(
        shop.log(INTENTS).await.len(),
        1,
        "only the winner asked Stripe for money"
    );
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_transaction_whose_answers_are_lost_is_retried_under_its_key_until_points_land_once() {
    let shop = shop(|_| {}).await;
    // SessionM records the sale every time, then its answer is lost, eight times over:
    // only the same `request_id` on every try keeps that one sale.
    shop.lose_next(SALE, 8, 503).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let voucher = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    let id = placed(&checkout(&shop, &cart, &voucher, "pm_card_visa", "k").await);
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    shop.eventually("points after the retries", || async {
        shop.points_balance().await == 16
    })
    .await;
    shop.wait_until_settled(&id).await;
    let sent = shop.assert_sent_once(SALE, &id, 9).await;
    assert_eq!(sent, 9, "eight lost answers, then the one that arrived");
    let ledger = shop.ledger(Sim::Sessionm).await;
    assert_eq!(
        ledger["transactions"].as_array().map(Vec::len),
        Some(1),
        "{ledger}"
    );
    assert_eq!(shop.order(&id).await["pointsEarned"], 16);
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn use_reward_runs_on_postgres() {
    let shop = shop_on(Db::Postgres, |_| {}).await;
    let fixed = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    let first = shop.filled_cart("str_pasadena").await;
    let payload = checkout(&shop, &first, &fixed, "pm_card_visa", "pg-1").await;
    assert_eq!(payload["order"]["total"]["amount"], "16.54");
    let second = shop.filled_cart("str_pasadena").await;
    assert_eq!(
        error_codes(&checkout(&shop, &second, &fixed, "pm_card_visa", "pg-2").await),
        vec!["VOUCHER_IN_USE"]
    );
    let id = placed(&payload);
    shop.store_action(&first, Reject).await;
    shop.wait_for_status(&id, "REJECTED").await;
    shop.wait_until_settled(&id).await;
    assert_eq!(shop.voucher_status(&fixed).await, "AVAILABLE");
    shop.assert_sent_once(LOCK, &id, 1).await;
    shop.assert_sent_once(UNLOCK, &id, 1).await;
    shop.assert_sent_once(REFUNDS, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_voucher_that_does_not_apply_to_the_basket_is_refused_and_kept() {
    let shop = shop(|_| {}).await;
    let fixed = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    // $2 off needs a $4 basket; a bottle of water is $2.25.
    let cart = shop
        .cart_with(
            "str_pasadena",
            json!([{"productId": "prd_water", "quantity": 1}]),
        )
        .await;
    let refused = checkout(&shop, &cart, &fixed, "pm_card_visa", "small").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_NOT_APPLICABLE"]);
    assert_eq!(refused["order"], json!(null));
    assert_eq!(shop.log(INTENTS).await, Vec::<Value>::new());
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    assert_eq!(shop.voucher_status(&fixed).await, "AVAILABLE");
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn when_okya_refuses_the_discount_the_voucher_is_released_and_nothing_charged() {
    let shop = shop(|_| {}).await;
    shop.refuse_next(ADJUST, 422, "adjustment_too_large", 5)
        .await;
    let fixed = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    let cart = shop.filled_cart("str_pasadena").await;
    let refused = checkout(&shop, &cart, &fixed, "pm_card_visa", "k").await;
    assert_eq!(error_codes(&refused), vec!["VOUCHER_NOT_APPLICABLE"]);
    assert_eq!(refused["order"], json!(null));
    assert_eq!(shop.log(INTENTS).await, Vec::<Value>::new());
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    assert_eq!(
        shop.voucher_status(&fixed).await,
        "AVAILABLE",
        "the lock was released"
    );
    // The only order of the shop: its lock, and the one release of it.
    shop.assert_one_key(LOCK, 1).await;
    shop.assert_one_key(UNLOCK, 1).await;
    shop.assert_money_invariants().await;
}
