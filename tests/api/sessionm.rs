//! SessionM as SessionM documents it: two hosts with their own credentials, SessionM's
//! store ids, the Discount object of the lock passed back unchanged, a queued sale whose
//! points appear later, and a lock whose answer cannot be read released like one that
//! may have happened.

use crate::helpers::{Db, Sim, TestApp, World, error_codes, spawn_app_with};
use crate::routes::{CREATE_MEMBER, FIND_MEMBER, LOCK, LOOKUP, SALE, UNLOCK};
use crate::shop::{StoreAction::Accept, placed, shop, shop_on};
use serde_json::{Value, json};

/// Checks `cart` out with `voucher`, which the service refuses with `code`: the `checkout`
/// payload, and the id of the refused order (kept, though the app is shown none, for its
/// compensation), once the flow has nothing left to do.
async fn refused(shop: &TestApp, cart: &str, voucher: &str, code: &str) -> (Value, String) {
    let payload = shop
        .checkout_selecting("id status", cart, "pm_card_visa", Some(voucher), "k")
        .await;
    assert_eq!(error_codes(&payload), vec![code], "{payload}");
    let id = shop.only_order_id().await;
    shop.wait_until_settled(&id).await;
    (payload, id)
}

#[tokio::test]
async fn a_lock_whose_answer_cannot_be_read_is_asked_again_and_the_order_keeps_its_voucher() {
    let shop = shop(|_| {}).await;
    let voucher = shop.voucher("PERCENTAGE", "AVAILABLE").await;
    let cart = shop.filled_cart("str_pasadena").await;
    // SessionM locks the offer, and what comes back is not an answer anyone can read: the
    // lock may have happened, so the same request id asks again and SessionM's own record
    // answers (before, the order was given up and the voucher released on a guess).
    shop.lose_next(LOCK, 1, "garble").await;
    let payload = shop
        .checkout_selecting("id status", &cart, "pm_card_visa", Some(&voucher), "k")
        .await;
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    let id = shop.only_order_id().await;
    let keys = shop.keys_sent(LOCK, &id).await;
    assert_eq!(keys.len(), 1, "one request id for the lock: {keys:?}");
    assert_eq!(keys.values().sum::<usize>(), 2, "{keys:?}");
    shop.assert_not_sent(UNLOCK, &id).await;
    assert_eq!(shop.voucher_status(&voucher).await, "LOCKED");
    assert_eq!(shop.intents_for(&id).await.len(), 1, "charged once");
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_refused_lock_releases_nothing_another_order_may_hold() {
    let shop = shop(|_| {}).await;
    let voucher = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    // $2 off needs a 4.00 basket; a lookup does not check that, the lock does.
    let cart = shop
        .cart_with(
            "str_pasadena",
            json!([{"productId": "prd_espresso", "quantity": 1}]),
        )
        .await;
    let (_, id) = refused(&shop, &cart, &voucher, "VOUCHER_NOT_APPLICABLE").await;
    shop.assert_sent_once(LOCK, &id, 1).await;
    // SessionM's unlock names only the offer: an order that knows it holds no lock must
    // not send one, or it would free a lock another order holds.
    shop.assert_not_sent(UNLOCK, &id).await;
    assert_eq!(shop.voucher_status(&voucher).await, "AVAILABLE");
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn points_show_once_sessionm_has_processed_the_queued_sale() {
    points_land_after_processing(Db::Sqlite).await;
}

#[tokio::test]
async fn use_reward_and_the_points_credit_run_on_postgres() {
    points_land_after_processing(Db::Postgres).await;
}

async fn points_land_after_processing(kind: Db) {
    let shop = shop_on(kind, |_| {}).await;
    // SessionM takes its time over the queued transaction.
    shop.sandbox(
        reqwest::Method::PUT,
        Sim::Sessionm,
        "settings",
        json!({"transaction_delay_ms": 3000}),
    )
    .await;
    let voucher = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(
        &shop
            .checkout_selecting("id", &cart, "pm_card_visa", Some(&voucher), "k")
            .await,
    );
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    shop.eventually("the sale queued at SessionM", || async {
        !shop.requests_about(SALE, &id).await.is_empty()
    })
    .await;
    // Queued for 3 s at SessionM: not processed, so no points shown yet.
    let ledger = shop.ledger(Sim::Sessionm).await;
    assert_eq!(ledger["transactions"], json!([]), "{ledger}");
    assert_eq!(
        shop.order(&id).await["pointsEarned"],
        json!(null),
        "queued is not processed: no points yet"
    );
    shop.eventually("the points, once processed", || async {
        shop.order(&id).await["pointsEarned"] == 16
    })
    .await;
    let ledger = shop.ledger(Sim::Sessionm).await;
    // SessionM accepted the sale: the Discount object went back as the lock gave it.
    assert_eq!(ledger["rejected"], json!([]), "{ledger}");
    assert_eq!(shop.voucher_status(&voucher).await, "REDEEMED");
    shop.assert_sent_once(SALE, &id, 1).await;
}

#[tokio::test]
async fn a_store_sessionm_does_not_know_stops_the_start() {
    let world = World::start(Db::Sqlite, |s| {
        s.sessionm.store_ids.remove("str_burbank");
    })
    .await;
    let mut settings = world.settings.clone();
    let result = cbtl_bff::app::build_on(settings.clone(), world.port.handle()).await;
    let Err(err) = result else {
        panic!("started without a SessionM store for str_burbank");
    };
    assert!(
        matches!(err, cbtl_bff::app::StartError::Configuration(_)),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("sessionm.store_ids"), "{message}");
    assert!(message.contains("str_burbank"), "{message}");

    // With every store mapped it starts.
    world.upstreams.configure(&mut settings);
    let app = cbtl_bff::app::build_on(settings, world.port.handle())
        .await
        .expect("starts with every store mapped");
    drop(app);
}

#[tokio::test]
async fn a_voucher_sessionm_describes_in_new_terms_is_unusable_and_the_rest_of_the_wallet_stays() {
    let shop = shop(|_| {}).await;
    let free = shop.voucher("FREE_ITEM", "AVAILABLE").await;
    let percent = shop.voucher("PERCENTAGE", "AVAILABLE").await;
    for (id, change) in [
        (&free, json!({"status": "ISSUED"})),
        (&percent, json!({"discount_type": "BUY_ONE_GET_ONE"})),
    ] {
        shop.sandbox(
            reqwest::Method::PATCH,
            Sim::Sessionm,
            &format!("offers/{id}"),
            change,
        )
        .await;
    }
    let wallet = shop
        .data(
            "{ vouchers { id status unusableReason discount { kind } } }",
            json!({}),
        )
        .await["vouchers"]
        .clone();
    let vouchers = wallet.as_array().expect("vouchers");
    assert_eq!(vouchers.len(), 4, "the whole wallet: {wallet}");
    let of = |id: &str| {
        vouchers
            .iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {wallet}"))
            .clone()
    };
    assert_eq!(of(&free)["status"], "UNUSABLE");
    assert!(
        of(&free)["unusableReason"]
            .as_str()
            .is_some_and(|r| r.contains("ISSUED")),
        "{wallet}"
    );
    assert_eq!(of(&percent)["status"], "UNUSABLE");
    assert_eq!(of(&percent)["discount"]["kind"], "OTHER");
    assert!(
        vouchers
            .iter()
            .filter(|v| v["status"] != "UNUSABLE")
            .all(|v| v["unusableReason"].is_null()),
        "{wallet}"
    );
    assert_eq!(
        vouchers
            .iter()
            .filter(|v| v["status"] == "UNUSABLE")
            .count(),
        2
    );

    // Checking out with it is refused before anything is locked or charged.
    let cart = shop.filled_cart("str_pasadena").await;
    let (_, id) = refused(&shop, &cart, &percent, "VOUCHER_NOT_APPLICABLE").await;
    shop.assert_not_sent(LOCK, &id).await;
    shop.assert_not_sent(UNLOCK, &id).await;
    assert!(shop.intents_for(&id).await.is_empty());
    // Compensated: the Okya order made for it is cancelled.
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
}

#[tokio::test]
async fn a_wallet_sessionm_will_not_show_cancels_the_order_and_locks_nothing() {
    let shop = shop(|_| {}).await;
    let voucher = shop.voucher("PERCENTAGE", "AVAILABLE").await;
    let cart = shop.filled_cart("str_pasadena").await;
    // SessionM refuses our own wallet lookup (a fault of ours, not the voucher's).
    shop.refuse_next(LOOKUP, 401, "access_denied", 1).await;
    let (_, id) = refused(&shop, &cart, &voucher, "SERVICE_UNAVAILABLE").await;
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    shop.assert_not_sent(LOCK, &id).await;
    shop.assert_not_sent(UNLOCK, &id).await;
    assert!(shop.intents_for(&id).await.is_empty(), "nothing charged");
    assert_eq!(shop.voucher_status(&voucher).await, "AVAILABLE");
}

#[tokio::test]
async fn a_points_balance_sessionm_did_not_give_is_an_error_never_zero() {
    let shop = shop(|_| {}).await;
    shop.sandbox(
        reqwest::Method::PUT,
        Sim::Sessionm,
        "settings",
        json!({"omit_points": true}),
    )
    .await;
    let body = shop
        .gql(
            "{ me { loyalty { pointsBalance tier vouchers { id } } } }",
            json!({}),
        )
        .await;
    let loyalty = &body["data"]["me"]["loyalty"];
    assert!(
        loyalty.is_null() || loyalty["pointsBalance"].is_null(),
        "no balance shown: {body}"
    );
    let errors = body["errors"].as_array().expect("an error");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["path"], json!(["me", "loyalty", "pointsBalance"]));
    assert_eq!(errors[0]["extensions"]["code"], "INTERNAL", "{body}");
    // The wallet itself still answers.
    let vouchers = shop.data("{ vouchers { id } }", json!({})).await;
    assert_eq!(vouchers["vouchers"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn a_member_made_but_never_answered_is_found_by_our_customer_id() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.jobs.poll_interval_ms = 50;
        s.jobs.max_backoff_ms = 100;
    })
    .await;
    // SessionM makes the member every time it is asked, and every answer is lost: more
    // than the inline retries under one Message-ID can make up for.
    app.lose_next(CREATE_MEMBER, 3, 503).await;
    app.member("+16265550170", "lin@example.com").await;
    let ledger = app.ledger(Sim::Sessionm).await;
    let users = ledger["users"].as_array().expect("members");
    assert_eq!(
        users.len(),
        1,
        "one member however often it was asked: {ledger}"
    );
    // Every creation carried one Message-ID; SessionM replayed the repeats, and the next
    // attempt found the member by our customer id instead of creating another.
    let keys: Vec<_> = ledger["message_ids"]
        .as_object()
        .expect("message ids")
        .values()
        .collect();
    assert_eq!(keys.len(), 1, "{ledger}");
    let log = app.log(FIND_MEMBER).await;
    assert!(
        log.len() >= 2,
        "looked up by external id before each creation attempt: {log:?}"
    );
}

#[tokio::test]
async fn a_voucher_another_order_holds_is_refused_and_its_lock_left_alone() {
    let shop = shop(|_| {}).await;
    let fixed = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    let (a, b) = (
        shop.filled_cart("str_pasadena").await,
        shop.filled_cart("str_pasadena").await,
    );
    let first = shop
        .checkout_selecting("id status", &a, "pm_card_visa", Some(&fixed), "a")
        .await;
    assert_eq!(first["userErrors"], json!([]), "{first}");
    let holder = placed(&first);
    assert_eq!(shop.voucher_status(&fixed).await, "LOCKED");

    let second = shop
        .checkout_selecting("id status", &b, "pm_card_visa", Some(&fixed), "b")
        .await;
    assert_eq!(error_codes(&second), vec!["VOUCHER_IN_USE"], "{second}");
    let orders: Vec<String> = shop
        .order_ids()
        .await
        .into_iter()
        .filter(|id| id != &holder)
        .collect();
    let refused = &orders[0];
    shop.wait_until_settled(refused).await;
    // Refused from the wallet: no lock asked for, and no unlock that would free the
    // holder's lock (SessionM's unlock names only the offer).
    shop.assert_not_sent(LOCK, refused).await;
    shop.assert_not_sent(UNLOCK, refused).await;
    assert_eq!(
        shop.voucher_status(&fixed).await,
        "LOCKED",
        "still the holder's"
    );
    shop.store_action(&a, Accept).await;
    shop.wait_for_status(&holder, "IN_PREPARATION").await;
    shop.eventually("the holder's sale redeems it", || async {
        shop.voucher_status(&fixed).await == "REDEEMED"
    })
    .await;
    shop.assert_money_invariants().await;
}
