//! The branches only a lost answer reaches: an upstream acted, its answer never arrived
//! (the simulators' `lose_next` runs the handler, then answers 503), and the service must
//! find out what happened rather than do it again or undo it.

use crate::helpers::{Db, Sim, TestApp, error_code, error_codes, spawn_app_with};
use crate::routes::{
    ADJUST, CREATE_ACCOUNT, CREATE_MEMBER, FIND_TICKET, INJECT, INTENTS, LOCK, ORDERS, PAYMENTS,
    RECALL, REFUNDS, Route, SALE,
};
use crate::shop::{StoreAction::Accept, placed, shop};
use serde_json::{Value, json};

#[tokio::test]
async fn a_pos_that_took_the_order_but_lost_every_answer_keeps_it_and_nothing_is_recalled() {
    // Two attempts of three tries each, every answer lost: the POS printed the ticket on
    // the first try, and the service has given up on hearing so.
    let shop = shop(|s| s.orders.pos_max_attempts = 2).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&shop.checkout(&cart, "pm_card_visa", None, "k").await);
    shop.lose_next(INJECT, 6, 503).await;
    shop.store_action(&cart, Accept).await;
    let prepared = shop.wait_for_status(&id, "IN_PREPARATION").await;
    assert_eq!(prepared["payment"]["status"], "CAPTURED");
    let settled = shop.wait_until_settled(&id).await;
    assert_eq!(settled.failure_code, None, "{settled:?}");

    // Every try was lost, and under one key, so the POS has one ticket.
    let tries = shop.assert_sent_once(INJECT, &id, 6).await;
    assert_eq!(tries, 6);
    let faults: Vec<Value> = shop
        .log(INJECT)
        .await
        .into_iter()
        .map(|r| r["fault"].clone())
        .collect();
    assert_eq!(faults, vec![json!("lost"); 6]);
    // The POS's own record decided: the order was found there, and kept.
    let asked = shop.log(FIND_TICKET).await;
    assert!(
        asked
            .iter()
            .any(|r| r["path"].as_str().is_some_and(|p| p.ends_with(&id))),
        "the POS was asked for the order: {asked:?}"
    );
    let epoint = shop.ledger(Sim::Epoint).await;
    assert_eq!(epoint["orders"][0]["external_id"], id.as_str(), "{epoint}");
    assert_eq!(
        settled.pos_ticket_id,
        epoint["orders"][0]["ticket_id"].as_str().map(str::to_owned)
    );
    assert_eq!(shop.okya_order(&cart).await["cancellation"], Value::Null);
    shop.assert_not_sent(RECALL, &id).await;
    shop.assert_not_sent(REFUNDS, &id).await;
    shop.assert_money_invariants().await;
}

/// Confirms with the one code sent, waits for the SessionM link, and checks that Okya and
/// SessionM each hold one account for the customer, created under one key each.
async fn confirm_and_check_one_account(shop: &TestApp, phone: &str, customer: &Value) {
    let codes = shop.sent_codes(phone).await;
    assert_eq!(codes.len(), 1, "one code sent: {codes:?}");
    let confirmed = shop.confirm(phone, &codes[0]).await;
    let payload = &confirmed["data"]["accountConfirm"];
    assert_eq!(payload["userErrors"], json!([]), "{confirmed}");
    assert_eq!(payload["customer"]["id"], customer["id"]);
    let token = payload["accessToken"].as_str().expect("a token").to_owned();
    shop.wait_for_link(&token).await;
    let accounts = shop.okya_accounts().await;
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0]["id"], customer["id"]);
    let sessionm = shop.ledger(Sim::Sessionm).await;
    let users = sessionm["users"].as_array().expect("SessionM's users");
    assert_eq!(users.len(), 1, "{sessionm}");
    let linked = accounts[0]["loyalty_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the account is linked: {accounts:?}"));
    assert_eq!(users[0]["id"], linked, "{users:?}");
    shop.assert_one_key(CREATE_MEMBER, 1).await;
}

#[tokio::test]
async fn a_registration_whose_answer_is_lost_is_retried_under_its_key() {
    let shop = spawn_app_with(Db::Sqlite, |_| {}).await;
    shop.lose_next(CREATE_ACCOUNT, 1, 503).await;
    let registered = shop.register("+16265550160", "ada@example.com").await;
    let payload = &registered["data"]["accountRegister"];
    assert_eq!(payload["userErrors"], json!([]), "{registered}");
    // Okya created the account on the first try; the retry under the same key got that
    // account back instead of `account_exists`.
    shop.assert_one_key(CREATE_ACCOUNT, 2).await;
    confirm_and_check_one_account(&shop, "+16265550160", &payload["customer"]).await;
}

#[tokio::test]
async fn a_registration_whose_answers_are_all_lost_is_answered_when_the_app_retries() {
    let shop = spawn_app_with(Db::Sqlite, |_| {}).await;
    shop.lose_next(CREATE_ACCOUNT, 3, 503).await;
    let lost = shop.register("+16265550161", "ada@example.com").await;
    assert_eq!(error_code(&lost), "UPSTREAM_UNAVAILABLE", "{lost}");
    assert_eq!(lost["data"]["accountRegister"], Value::Null);
    // The app sends the same registration again: the service sends it under the key of
    // the first, and Okya answers with the account it made then.
    let again = shop.register("+16265550161", "ada@example.com").await;
    let payload = &again["data"]["accountRegister"];
    assert_eq!(error_codes(payload), Vec::<String>::new(), "{again}");
    assert_eq!(payload["customer"]["confirmed"], false);
    shop.assert_one_key(CREATE_ACCOUNT, 4).await;
    confirm_and_check_one_account(&shop, "+16265550161", &payload["customer"]).await;
}

/// Every write on a paid order's way, answered with a body that cannot be read after the
/// upstream acted (found by the chaos soak: a garbled answer to Okya's order creation left
/// the checkout refused and Okya's order open and unpaid). Each is asked again under the
/// same key, and the order goes on to the POS, charged once, its voucher redeemed once.
#[tokio::test]
async fn an_unreadable_answer_to_any_write_is_asked_again_under_the_same_key() {
    let routes: [Route; 7] = [ORDERS, LOCK, ADJUST, INTENTS, PAYMENTS, INJECT, SALE];
    for route in routes {
        let shop = shop(|_| {}).await;
        let voucher = shop.voucher("PERCENTAGE", "AVAILABLE").await;
        let cart = shop.filled_cart("str_pasadena").await;
        shop.lose_next(route, 1, "garble").await;
        let payload = shop
            .checkout(&cart, "pm_card_visa", Some(&voucher), "k")
            .await;
        let id = placed(&payload);
        shop.store_action(&cart, Accept).await;
        shop.wait_for_status(&id, "IN_PREPARATION").await;
        let settled = shop.wait_until_settled(&id).await;
        assert_eq!(settled.failure_code, None, "{}: {settled:?}", route.name);
        let keys = shop.keys_sent(route, &id).await;
        assert_eq!(keys.len(), 1, "{}: one key: {keys:?}", route.name);
        assert!(
            keys.values().sum::<usize>() >= 2,
            "{}: asked again: {keys:?}",
            route.name
        );
        assert_eq!(shop.intents_for(&id).await.len(), 1, "{}", route.name);
        assert_eq!(
            shop.voucher_status(&voucher).await,
            "REDEEMED",
            "{}",
            route.name
        );
        shop.assert_money_invariants().await;
    }
}
