//! The branches only a lost answer reaches: an upstream acted, its answer never arrived
//! (the simulators' `lose_next` runs the handler, then answers 503), and the service must
//! find out what happened rather than do it again or undo it.

use crate::helpers::{Db, Sim, error_codes, spawn_app_with};
use crate::shop::{Shop, shop};
use serde_json::{Value, json};

const REGISTER_ROUTE: &str = "POST /auth/v1/accounts";
const SESSIONM_USERS: &str = "POST /priv/v1/apps/{api_key}/users";
const REGISTER: &str = "mutation($i: AccountRegisterInput!) { accountRegister(input: $i) { customer { id confirmed } userErrors { code field message } } }";
const CONFIRM: &str = "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { customer { id } accessToken userErrors { code } } }";

#[tokio::test]
async fn a_pos_that_took_the_order_but_lost_every_answer_keeps_it_and_nothing_is_recalled() {
    // Two attempts of three tries each, every answer lost: the POS printed the ticket on
    // the first try, and the service has given up on hearing so.
    let shop = shop(|s| s.orders.pos_max_attempts = 2).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = shop.checkout(&cart, "pm_card_visa", None, "k").await;
    let id = payload["order"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an order: {payload}"))
        .to_owned();
    shop.faults(
        Sim::Epoint,
        json!({"lose_next": {Shop::INJECT: {"times": 6, "status": 503}}}),
    )
    .await;
    shop.store_action(&cart, "accept").await;
    let prepared = shop.wait_for_status(&id, "IN_PREPARATION").await;
    assert_eq!(prepared["payment"]["status"], "CAPTURED");
    let settled = shop.wait_until_settled(&id).await;
    assert_eq!(settled.failure_code, None, "{settled:?}");

    // Every try was lost, and under one key, so the POS has one ticket.
    let tries = shop
        .assert_sent_once(Sim::Epoint, Shop::INJECT, &id, 6)
        .await;
    assert_eq!(tries, 6);
    let faults: Vec<Value> = shop
        .log(Sim::Epoint, Shop::INJECT)
        .await
        .into_iter()
        .map(|r| r["fault"].clone())
        .collect();
    assert_eq!(faults, vec![json!("lost"); 6]);
    // The POS's own record decided: the order was found there, and kept.
    let asked = shop.log(Sim::Epoint, Shop::FIND_TICKET).await;
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
    shop.assert_not_sent(Sim::Okya, Shop::RECALL, &id).await;
    shop.assert_not_sent(Sim::Stripe, Shop::REFUNDS, &id).await;
    shop.assert_money_invariants().await;
}

/// An app with nobody signed in, wrapped for its call logs.
async fn anonymous() -> Shop {
    Shop {
        app: spawn_app_with(Db::Sqlite, |_| {}).await,
    }
}

async fn register(shop: &Shop, phone: &str) -> Value {
    shop.gql_as(
        None,
        REGISTER,
        json!({"i": {"email": "ada@example.com", "phone": phone, "firstName": "Ada", "lastName": "Lovelace"}}),
    )
    .await
}

/// Confirms with the one code sent, waits for the SessionM link, and checks that Okya and
/// SessionM each hold one account for the customer, created under one key each.
async fn confirm_and_check_one_account(shop: &Shop, phone: &str, customer: &Value) {
    let codes = shop.sent_codes(phone).await;
    assert_eq!(codes.len(), 1, "one code sent: {codes:?}");
    let confirmed = shop
        .gql_as(
            None,
            CONFIRM,
            json!({"i": {"phone": phone, "code": codes[0]}}),
        )
        .await;
    let payload = &confirmed["data"]["accountConfirm"];
    assert_eq!(payload["userErrors"], json!([]), "{confirmed}");
    assert_eq!(payload["customer"]["id"], customer["id"]);
    let token = payload["accessToken"].as_str().expect("a token").to_owned();
    shop.eventually("the SessionM link", || async {
        shop.gql_as(
            Some(&token),
            "{ me { loyalty { pointsBalance } } }",
            json!({}),
        )
        .await["data"]["me"]["loyalty"]
            .is_object()
    })
    .await;
    let accounts: Value = shop
        .http
        .get(format!("{}/_sandbox/accounts", shop.sim_url(Sim::Okya)))
        .send()
        .await
        .expect("accounts")
        .json()
        .await
        .expect("accounts JSON");
    let accounts = accounts["accounts"].as_array().expect("an account list");
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0]["id"], customer["id"]);
    let sessionm = shop.ledger(Sim::Sessionm).await;
    let users = sessionm["users"].as_array().expect("SessionM's users");
    assert_eq!(users.len(), 1, "{sessionm}");
    let linked = accounts[0]["loyalty_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the account is linked: {accounts:?}"));
    assert_eq!(users[0]["id"], linked, "{users:?}");
    shop.assert_one_key(Sim::Sessionm, SESSIONM_USERS, 1).await;
}

#[tokio::test]
async fn a_registration_whose_answer_is_lost_is_retried_under_its_key() {
    let shop = anonymous().await;
    shop.faults(
        Sim::Okya,
        json!({"lose_next": {REGISTER_ROUTE: {"times": 1, "status": 503}}}),
    )
    .await;
    let registered = register(&shop, "+16265550160").await;
    let payload = &registered["data"]["accountRegister"];
    assert_eq!(payload["userErrors"], json!([]), "{registered}");
    // Okya created the account on the first try; the retry under the same key got that
    // account back instead of `account_exists`.
    shop.assert_one_key(Sim::Okya, REGISTER_ROUTE, 2).await;
    confirm_and_check_one_account(&shop, "+16265550160", &payload["customer"]).await;
}

#[tokio::test]
async fn a_registration_whose_answers_are_all_lost_is_answered_when_the_app_retries() {
    let shop = anonymous().await;
    shop.faults(
        Sim::Okya,
        json!({"lose_next": {REGISTER_ROUTE: {"times": 3, "status": 503}}}),
    )
    .await;
    let lost = register(&shop, "+16265550161").await;
    assert_eq!(
        lost["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE",
        "{lost}"
    );
    assert_eq!(lost["data"]["accountRegister"], Value::Null);
    // The app sends the same registration again: the service sends it under the key of
    // the first, and Okya answers with the account it made then.
    let again = register(&shop, "+16265550161").await;
    let payload = &again["data"]["accountRegister"];
    assert_eq!(error_codes(payload), Vec::<String>::new(), "{again}");
    assert_eq!(payload["customer"]["confirmed"], false);
    shop.assert_one_key(Sim::Okya, REGISTER_ROUTE, 4).await;
    confirm_and_check_one_account(&shop, "+16265550161", &payload["customer"]).await;
}
