//! Place Order end to end: checkout, payment, the store's decision, POS injection, live
//! status, and every compensation. Each test checks what the service *sent* (the
//! simulators' call logs: each effect asked for under one idempotency key) as well as
//! what the ledgers hold, and ends with the money invariants.

use crate::helpers::{Db, Sim, TestApp, World, error_codes, next_json, next_status};
use crate::routes::{
    CANCEL, CAPTURE, INJECT, INTENTS, ORDERS, PAYMENTS, RECALL, REFUNDS, RELEASE, SALE, UNLOCK,
};
use crate::shop::{
    StoreAction::{self, Accept, Complete, Ready, Reject},
    checkout_mutation, placed, shop, shop_on,
};
use cbtl_bff::domain::CaptureMode;
use serde_json::{Value, json};

const ORDER_FIELDS: &str = "id number status store { id } total { amount currencyCode } subtotal { amount } tax { amount } payment { status amount { amount } brand last4 clientSecret } statusHistory { status } pointsEarned lines { quantity product { id } }";

/// The `checkout` payload with this file's order fields.
async fn checkout(shop: &TestApp, cart: &str, card: &str, key: &str) -> Value {
    shop.checkout_selecting(ORDER_FIELDS, cart, card, None, key)
        .await
}

#[tokio::test]
async fn an_order_is_paid_accepted_injected_prepared_and_collected() {
    let shop = shop(|_| {}).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = checkout(&shop, &cart, "pm_card_visa", "key-1").await;
    assert_eq!(payload["userErrors"], json!([]));
    let placed_order = &payload["order"];
    assert_eq!(placed_order["status"], "AWAITING_ACCEPTANCE");
    assert_eq!(
        placed_order["total"],
        json!({"amount": "18.74", "currencyCode": "USD"})
    );
    assert_eq!(placed_order["payment"]["status"], "CAPTURED");
    assert_eq!(placed_order["payment"]["amount"]["amount"], "18.74");
    assert_eq!(
        (
            placed_order["payment"]["brand"].as_str(),
            placed_order["payment"]["last4"].as_str()
        ),
        (Some("visa"), Some("4242"))
    );
    assert_eq!(placed_order["payment"]["clientSecret"], json!(null));
    let id = placed(&payload);

    let charged = shop.intents_for(&id).await;
    assert_eq!(charged.len(), 1);
    assert_eq!(charged[0]["amount"], 1874);
    assert_eq!(charged[0]["status"], "succeeded");
    let okya = shop.okya_order(&cart).await;
    assert_eq!(okya["payment"]["reference"], charged[0]["id"]);

    shop.store_action(&cart, Accept).await;
    let prepared = shop.wait_for_status(&id, "IN_PREPARATION").await;
    assert_eq!(prepared["payment"]["status"], "CAPTURED");
    let epoint = shop.ledger(Sim::Epoint).await;
    assert_eq!(epoint["orders"][0]["external_id"], id.as_str(), "{epoint}");

    shop.store_action(&cart, Ready).await;
    shop.wait_for_status(&id, "READY_FOR_PICKUP").await;
    shop.store_action(&cart, Complete).await;
    shop.wait_for_status(&id, "COMPLETED").await;
    let done = shop.order_selecting("statusHistory { status }", &id).await;
    let history: Vec<&str> = done["statusHistory"]
        .as_array()
        .expect("a history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(
        history,
        [
            "AWAITING_ACCEPTANCE",
            "IN_PREPARATION",
            "READY_FOR_PICKUP",
            "COMPLETED"
        ]
    );

    // SessionM gets the order and credits a point per whole dollar paid.
    shop.eventually("points", || async {
        shop.order(&id).await["pointsEarned"] == 18
    })
    .await;
    shop.wait_until_settled(&id).await;
    // Nothing failed, so every effect was asked for by exactly one request.
    for route in [ORDERS, INTENTS, PAYMENTS, INJECT, SALE] {
        assert_eq!(shop.assert_sent_once(route, &id, 1).await, 1, "{route}");
    }
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_declined_card_fails_the_order_and_no_store_sees_it() {
    let shop = shop(|_| {}).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = checkout(&shop, &cart, "pm_card_chargeDeclined", "key-1").await;
    assert_eq!(error_codes(&payload), vec!["CARD_DECLINED"]);
    assert_eq!(
        payload["userErrors"][0]["field"],
        json!(["input", "paymentMethodId"])
    );
    assert_eq!(payload["order"]["status"], "PAYMENT_FAILED");
    assert_eq!(payload["order"]["payment"]["status"], "FAILED");
    let id = placed(&payload);
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    let intents = shop.intents_for(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["status"], "requires_payment_method");
    assert_eq!(intents[0]["amount_received"], 0);
    shop.wait_until_settled(&id).await;
    shop.assert_sent_once(CANCEL, &id, 1).await;
    shop.assert_not_sent(PAYMENTS, &id).await;
    shop.assert_not_sent(INJECT, &id).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn okya_refusals_are_user_errors_with_nothing_charged() {
    let shop = shop(|_| {}).await;
    let empty = shop.new_cart("str_pasadena").await;
    let payload = checkout(&shop, &empty, "pm_card_visa", "key-empty").await;
    assert_eq!(error_codes(&payload), vec!["CART_EMPTY"]);
    assert_eq!(payload["order"], json!(null));

    let cart = shop.filled_cart("str_pasadena").await;
    let first = checkout(&shop, &cart, "pm_card_visa", "key-1").await;
    assert_eq!(first["userErrors"], json!([]));
    let id = placed(&first);
    let again = checkout(&shop, &cart, "pm_card_visa", "key-2").await;
    assert_eq!(error_codes(&again), vec!["CART_ALREADY_ORDERED"]);
    // Only the first order asked Stripe for money, and only once.
    assert_eq!(shop.log(INTENTS).await.len(), 1);
    shop.assert_sent_once(INTENTS, &id, 1).await;

    // An ordered cart cannot change any more.
    let frozen = shop
        .data(
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_water\", quantity: 1}]) { cart { id } userErrors { code } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(
        error_codes(&frozen["cartLinesAdd"]),
        vec!["CART_ALREADY_ORDERED"]
    );

    let missing = checkout(&shop, "crt_missing", "pm_card_visa", "key-3").await;
    assert_eq!(error_codes(&missing), vec!["CART_NOT_FOUND"]);
    let bad_key = checkout(&shop, &cart, "pm_card_visa", "   ").await;
    assert_eq!(error_codes(&bad_key), vec!["INVALID_INPUT"]);
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn the_same_key_returns_the_same_order_and_charges_once() {
    let shop = shop(|_| {}).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let first = checkout(&shop, &cart, "pm_card_visa", "key-1").await;
    let second = checkout(&shop, &cart, "pm_card_visa", "key-1").await;
    let id = placed(&first);
    assert_eq!(second["order"]["id"], id.as_str());
    assert_eq!(shop.intents_for(&id).await.len(), 1);
    shop.assert_sent_once(ORDERS, &id, 1).await;
    shop.assert_sent_once(INTENTS, &id, 1).await;

    let other_cart = shop.filled_cart("str_pasadena").await;
    let reused = checkout(&shop, &other_cart, "pm_card_visa", "key-1").await;
    assert_eq!(error_codes(&reused), vec!["IDEMPOTENCY_KEY_REUSED"]);
    assert_eq!(reused["order"], json!(null));
    assert_eq!(shop.log(ORDERS).await.len(), 1);
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn ten_simultaneous_checkouts_with_one_key_charge_once() {
    let shop = shop(|_| {}).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let attempts = (0..10).map(|_| checkout(&shop, &cart, "pm_card_visa", "same-key"));
    let results = futures_util::future::join_all(attempts).await;
    let ids: std::collections::BTreeSet<String> = results.iter().map(placed).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    let statuses: Vec<&str> = results
        .iter()
        .filter_map(|r| r["order"]["status"].as_str())
        .collect();
    assert_eq!(statuses, ["AWAITING_ACCEPTANCE"; 10]);
    let id = ids.into_iter().next().expect("one order");
    assert_eq!(shop.intents_for(&id).await.len(), 1);
    // Okya and Stripe would each refuse a second order or replay a second charge, so
    // their ledgers cannot tell; what was sent can.
    shop.assert_sent_once(ORDERS, &id, 1).await;
    shop.assert_sent_once(INTENTS, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_rejected_order_is_refunded() {
    let shop = shop(|_| {}).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_visa", "k").await);
    shop.store_action(&cart, Reject).await;
    let rejected = shop.wait_for_status(&id, "REJECTED").await;
    assert_eq!(rejected["payment"]["status"], "REFUNDED");
    shop.wait_until_settled(&id).await;
    let stripe = shop.ledger(Sim::Stripe).await;
    assert_eq!(stripe["refunds"][0]["amount"], 1874, "{stripe}");
    shop.assert_sent_once(REFUNDS, &id, 1).await;
    shop.assert_not_sent(INJECT, &id).await;
    assert_eq!(shop.ledger(Sim::Epoint).await["orders"], json!([]));
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn when_the_pos_refuses_the_order_is_recalled_and_refunded() {
    let shop = shop(|s| s.orders.pos_max_attempts = 2).await;
    let cart = shop.filled_cart("str_burbank").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_visa", "k").await);
    shop.store_action(&cart, Accept).await;
    let cancelled = shop.wait_for_status(&id, "CANCELLED").await;
    assert_eq!(cancelled["payment"]["status"], "REFUNDED");
    shop.wait_until_settled(&id).await;
    let okya = shop.okya_order(&cart).await;
    assert_eq!(okya["cancellation"]["kind"], "recalled", "{okya}");
    let stripe = shop.ledger(Sim::Stripe).await;
    assert_eq!(stripe["refunds"][0]["amount"], 1874, "{stripe}");
    shop.assert_sent_once(INJECT, &id, 1).await;
    shop.assert_sent_once(RECALL, &id, 1).await;
    shop.assert_sent_once(REFUNDS, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn capture_on_acceptance_authorises_then_captures_or_releases() {
    let shop = shop(|s| s.orders.capture = CaptureMode::OnAcceptance).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = checkout(&shop, &cart, "pm_card_visa", "k1").await;
    assert_eq!(payload["order"]["payment"]["status"], "AUTHORIZED");
    let captured = placed(&payload);
    shop.store_action(&cart, Accept).await;
    let prepared = shop.wait_for_status(&captured, "IN_PREPARATION").await;
    assert_eq!(prepared["payment"]["status"], "CAPTURED");

    let cart = shop.filled_cart("str_pasadena").await;
    let released = placed(&checkout(&shop, &cart, "pm_card_visa", "k2").await);
    shop.store_action(&cart, Reject).await;
    let rejected = shop.wait_for_status(&released, "REJECTED").await;
    assert_eq!(rejected["payment"]["status"], "CANCELLED");
    shop.wait_until_settled(&captured).await;
    shop.wait_until_settled(&released).await;
    assert_eq!(shop.intents_for(&captured).await[0]["status"], "succeeded");
    assert_eq!(
        shop.intents_for(&released).await[0]["status"],
        "canceled",
        "released, not refunded"
    );
    assert_eq!(shop.ledger(Sim::Stripe).await["refunds"], json!([]));
    shop.assert_sent_once(CAPTURE, &captured, 1).await;
    shop.assert_sent_once(RELEASE, &released, 1).await;
    shop.assert_not_sent(CAPTURE, &released).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn three_d_secure_waits_for_stripe_and_then_carries_on_or_fails() {
    let shop = shop(|_| {}).await;
    for (outcome, expected) in [
        ("succeed", "AWAITING_ACCEPTANCE"),
        ("fail", "PAYMENT_FAILED"),
    ] {
        let cart = shop.filled_cart("str_pasadena").await;
        let payload = checkout(&shop, &cart, "pm_card_authenticationRequired", outcome).await;
        let order_json = &payload["order"];
        assert_eq!(order_json["status"], "AWAITING_PAYMENT");
        assert_eq!(order_json["payment"]["status"], "REQUIRES_ACTION");
        assert!(
            order_json["payment"]["clientSecret"]
                .as_str()
                .is_some_and(|s| s.contains("_secret_")),
            "{order_json}"
        );
        let id = placed(&payload);
        let intent = shop.intent_id(&id).await;
        shop.sandbox(
            reqwest::Method::POST,
            Sim::Stripe,
            &format!("payment_intents/{intent}/authenticate"),
            json!({"outcome": outcome}),
        )
        .await;
        shop.wait_for_status(&id, expected).await;
        let after = shop.order_selecting(ORDER_FIELDS, &id).await;
        assert_eq!(after["payment"]["clientSecret"], json!(null));
        shop.wait_until_settled(&id).await;
        shop.assert_sent_once(INTENTS, &id, 1).await;
        if expected == "PAYMENT_FAILED" {
            assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
            shop.assert_sent_once(CANCEL, &id, 1).await;
        } else {
            shop.assert_sent_once(PAYMENTS, &id, 1).await;
        }
    }
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn an_abandoned_authentication_is_cancelled_after_the_timeout() {
    let shop = shop(|s| s.orders.authentication_timeout_secs = 1).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_authenticationRequired", "k").await);
    let failed = shop.wait_for_status(&id, "PAYMENT_FAILED").await;
    assert_eq!(failed["payment"]["status"], "CANCELLED");
    shop.wait_until_settled(&id).await;
    assert_eq!(shop.intents_for(&id).await[0]["status"], "canceled");
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    shop.assert_sent_once(RELEASE, &id, 1).await;
    shop.assert_sent_once(CANCEL, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn forged_stale_repeated_and_reordered_webhooks_change_nothing_they_should_not() {
    use cbtl_bff::upstream::signature::sign;
    let shop = shop(|_| {}).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_visa", "k").await);
    let mut okya = shop.okya_order(&cart).await;
    okya["approval"] = json!("APPROVED");
    okya["fulfilment"] = json!("IN_PREPARATION");
    okya["version"] = json!(okya["version"].as_i64().expect("a version") + 100);
    let event = json!({"id": "evt_forged", "type": "order.updated", "created_at": chrono::Utc::now(), "data": {"order": okya}}).to_string();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(shop.post_okya_webhook(&event, None).await, 401);
    assert_eq!(
        shop.post_okya_webhook(&event, Some(sign("wrong-secret", now, event.as_bytes())))
            .await,
        401
    );
    assert_eq!(
        shop.post_okya_webhook(
            &event,
            Some(sign("whsec_okya_sandbox", now - 301, event.as_bytes()))
        )
        .await,
        401
    );
    assert_eq!(
        shop.post_okya_webhook(&event, Some("t=abc,v1=00".into()))
            .await,
        401
    );
    // Whatever the refused webhooks might have started has run its course.
    let settled = shop.wait_until_settled(&id).await;
    assert_eq!(settled.step, cbtl_bff::domain::Step::AwaitAcceptance);
    assert_eq!(
        shop.order(&id).await["status"],
        "AWAITING_ACCEPTANCE",
        "a forged acceptance does nothing"
    );
    shop.assert_not_sent(INJECT, &id).await;

    // The real store accepts; then an old event (a lower version) arrives late, twice.
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    let mut stale = shop.okya_order(&cart).await;
    stale["approval"] = json!("NEEDS_APPROVAL");
    stale["fulfilment"] = json!("RECEIVED");
    stale["version"] = json!(1);
    let old = json!({"id": "evt_old", "type": "order.updated", "created_at": chrono::Utc::now(), "data": {"order": stale}}).to_string();
    let signature = sign(
        "whsec_okya_sandbox",
        chrono::Utc::now().timestamp(),
        old.as_bytes(),
    );
    assert_eq!(
        shop.post_okya_webhook(&old, Some(signature.clone())).await,
        204
    );
    assert_eq!(shop.post_okya_webhook(&old, Some(signature)).await, 204);
    // The accepted webhooks' jobs have been applied before we look.
    shop.wait_until_settled(&id).await;
    assert_eq!(shop.order(&id).await["status"], "IN_PREPARATION");
    assert_eq!(
        shop.assert_sent_once(INJECT, &id, 1).await,
        1,
        "injected once"
    );
    shop.assert_money_invariants().await;
}

async fn subscribe(app: &TestApp, token: &str, order_id: &str) -> crate::helpers::Ws {
    app.subscribe_to_order(token, order_id, "id status statusHistory { status }")
        .await
}

/// Subscribers of one order share its feed; a change to another order wakes none of them.
#[tokio::test]
async fn many_subscribers_of_one_order_each_see_every_change_and_only_theirs() {
    let shop = shop(|_| {}).await;
    let token = shop.token().expect("signed in");
    let followed_cart = shop.filled_cart("str_pasadena").await;
    let followed = placed(&checkout(&shop, &followed_cart, "pm_card_visa", "k1").await);
    let other_cart = shop.filled_cart("str_pasadena").await;
    let other = placed(&checkout(&shop, &other_cart, "pm_card_visa", "k2").await);

    let mut many = Vec::new();
    for _ in 0..20 {
        let mut ws = subscribe(&shop, &token, &followed).await;
        assert_eq!(next_status(&mut ws).await, "AWAITING_ACCEPTANCE");
        many.push(ws);
    }
    let mut lone = subscribe(&shop, &token, &other).await;
    assert_eq!(next_status(&mut lone).await, "AWAITING_ACCEPTANCE");

    shop.store_action(&followed_cart, Accept).await;
    for ws in &mut many {
        assert_eq!(next_status(ws).await, "IN_PREPARATION");
    }
    // The other order's subscriber was not sent the followed order's change: the next
    // thing it hears is its own order's.
    shop.store_action(&other_cart, Accept).await;
    let own = next_json(&mut lone).await;
    assert_eq!(
        own["payload"]["data"]["orderStatusChanged"]["id"], other,
        "{own}"
    );
    assert_eq!(
        own["payload"]["data"]["orderStatusChanged"]["status"],
        "IN_PREPARATION"
    );
    // A subscriber that comes late is sent the order as it is now, history included.
    let mut late = subscribe(&shop, &token, &followed).await;
    let now = next_json(&mut late).await;
    assert_eq!(
        now["payload"]["data"]["orderStatusChanged"]["statusHistory"],
        json!([{"status": "AWAITING_ACCEPTANCE"}, {"status": "IN_PREPARATION"}]),
        "{now}"
    );
    shop.store_action(&followed_cart, Ready).await;
    for ws in many.iter_mut().chain(std::iter::once(&mut late)) {
        assert_eq!(next_status(ws).await, "READY_FOR_PICKUP");
    }
}

#[tokio::test]
async fn the_subscription_follows_the_order_live_and_ends_when_it_is_final() {
    let shop = shop(|_| {}).await;
    let token = shop.token().expect("signed in");
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_visa", "k").await);
    let mut ws = subscribe(&shop, &token, &id).await;
    assert_eq!(
        next_json(&mut ws).await["payload"]["data"]["orderStatusChanged"]["status"],
        "AWAITING_ACCEPTANCE"
    );
    let mut seen = Vec::new();
    // How fast each change reaches the subscriber is the benchmarks' business.
    for action in [Accept, Ready, Complete] {
        shop.store_action(&cart, action).await;
        let event = next_json(&mut ws).await;
        seen.push(
            event["payload"]["data"]["orderStatusChanged"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(seen, ["IN_PREPARATION", "READY_FOR_PICKUP", "COMPLETED"]);
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "complete", "id": "s"})
    );

    // Another customer cannot follow it.
    let other = shop.sign_up("+16265550131", "bob@example.com").await;
    let mut ws = subscribe(&shop, &other.access_token, &id).await;
    let refused = next_json(&mut ws).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
    assert_eq!(refused["payload"]["data"], json!(null));
    shop.wait_until_settled(&id).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn orders_are_listed_newest_first_and_kept_to_their_customer() {
    let shop = shop(|_| {}).await;
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        let cart = shop.filled_cart("str_pasadena").await;
        ids.push(placed(&checkout(&shop, &cart, "pm_card_visa", key).await));
    }
    let page = shop.data("{ me { orders(first: 2) { edges { cursor node { id status } } pageInfo { hasNextPage } } } }", json!({})).await;
    let edges = page["me"]["orders"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert_eq!(edges.len(), 2);
    assert_eq!(edges[0]["node"]["id"], ids[2].as_str());
    assert_eq!(edges[1]["node"]["id"], ids[1].as_str());
    assert_eq!(page["me"]["orders"]["pageInfo"]["hasNextPage"], true);
    let after = edges[1]["cursor"].clone();
    let rest = shop
        .data("query($a: String) { me { orders(first: 2, after: $a) { edges { node { id } } pageInfo { hasNextPage } } } }", json!({"a": after}))
        .await;
    assert_eq!(
        rest["me"]["orders"]["edges"][0]["node"]["id"],
        ids[0].as_str()
    );
    assert_eq!(rest["me"]["orders"]["pageInfo"]["hasNextPage"], false);

    let other = shop.sign_up("+16265550131", "bob@example.com").await;
    let theirs = shop
        .gql_as(
            Some(&other.access_token),
            "query($o: ID!) { order(id: $o) { id } }",
            json!({"o": ids[0]}),
        )
        .await;
    assert_eq!(theirs["data"]["order"], json!(null));
    let anonymous = shop
        .gql_as(
            None,
            "query($o: ID!) { order(id: $o) { id } }",
            json!({"o": ids[0]}),
        )
        .await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let anonymous = shop
        .gql_as(None, &checkout_mutation(ORDER_FIELDS), json!({"i": {"cartId": "crt_x", "paymentMethodId": "pm_card_visa", "idempotencyKey": "k"}}))
        .await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    for id in &ids {
        shop.assert_sent_once(INTENTS, id, 1).await;
    }
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn stripe_webhooks_need_a_valid_signature() {
    use cbtl_bff::upstream::signature::sign;
    let app = shop(|_| {}).await;
    let event = json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_unknown"}}}).to_string();
    let post = |signature: Option<String>| {
        let mut request = app
            .http
            .post(format!("{}/webhooks/stripe", app.url))
            .body(event.clone());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send()
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(sign("whsec_other", now, event.as_bytes())))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(Some(sign(
            "whsec_stripe_sandbox",
            now - 400,
            event.as_bytes()
        )))
        .await
        .unwrap()
        .status(),
        401
    );
    assert_eq!(
        post(Some(sign("whsec_stripe_sandbox", now, event.as_bytes())))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        post(Some(sign("whsec_stripe_sandbox", now, event.as_bytes())))
            .await
            .unwrap()
            .status(),
        204,
        "a repeat is acknowledged"
    );
    let garbage = "not json";
    let response = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .header(
            "stripe-signature",
            sign("whsec_stripe_sandbox", now, garbage.as_bytes()),
        )
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// One order the store rejects, or accepts; `card` pays for it.
async fn decided(
    shop: &TestApp,
    store: &str,
    card: &str,
    action: StoreAction,
    key: &str,
) -> String {
    let cart = shop.filled_cart(store).await;
    let payload = checkout(shop, &cart, card, key).await;
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    let id = placed(&payload);
    shop.store_action(&cart, action).await;
    id
}

/// Every compensation of Place Order, on PostgreSQL: the flow's bookkeeping (leases,
/// jobs, history) is the same code on both databases, but not the same SQL.
#[tokio::test]
async fn every_compensation_also_runs_on_postgres() {
    compensations_capturing_at_once(Db::Postgres).await;
    compensations_capturing_on_acceptance(Db::Postgres).await;
}

/// A declined card (with a voucher), a rejection, an offline POS and Okya refusing the
/// payment, each undone; and an order that goes through.
async fn compensations_capturing_at_once(kind: Db) {
    let shop = shop_on(kind, |s| s.orders.pos_max_attempts = 2).await;

    // A declined card with a voucher: the Okya order cancelled, the voucher released.
    let voucher = shop.voucher("FIXED_AMOUNT", "AVAILABLE").await;
    let cart = shop.filled_cart("str_pasadena").await;
    let declined = shop
        .checkout(&cart, "pm_card_chargeDeclined", Some(&voucher), "declined")
        .await;
    assert_eq!(error_codes(&declined), ["CARD_DECLINED"], "{declined}");
    let declined = placed(&declined);
    assert_eq!(shop.order(&declined).await["status"], "PAYMENT_FAILED");
    shop.wait_until_settled(&declined).await;
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    assert_eq!(shop.voucher_status(&voucher).await, "AVAILABLE");
    shop.assert_sent_once(CANCEL, &declined, 1).await;
    shop.assert_sent_once(UNLOCK, &declined, 1).await;

    // The store rejects: refunded.
    let rejected = decided(&shop, "str_pasadena", "pm_card_visa", Reject, "rejected").await;
    let order = shop.wait_for_status(&rejected, "REJECTED").await;
    assert_eq!(order["payment"]["status"], "REFUNDED");
    shop.wait_until_settled(&rejected).await;
    shop.assert_sent_once(REFUNDS, &rejected, 1).await;

    // The POS is offline: recalled and refunded.
    let recalled = decided(&shop, "str_burbank", "pm_card_visa", Accept, "recalled").await;
    let order = shop.wait_for_status(&recalled, "CANCELLED").await;
    assert_eq!(order["payment"]["status"], "REFUNDED");
    shop.wait_until_settled(&recalled).await;
    shop.assert_sent_once(RECALL, &recalled, 1).await;
    shop.assert_sent_once(REFUNDS, &recalled, 1).await;

    // Okya will not record the payment: refunded, and the Okya order cancelled.
    shop.refuse_next(PAYMENTS, 409, "invalid_state", 5).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let unrecorded = checkout(&shop, &cart, "pm_card_visa", "unrecorded").await;
    assert_eq!(
        error_codes(&unrecorded),
        ["ORDER_NOT_ACCEPTED"],
        "{unrecorded}"
    );
    let unrecorded = placed(&unrecorded);
    let order = shop.wait_for_status(&unrecorded, "PAYMENT_FAILED").await;
    assert_eq!(order["payment"]["status"], "REFUNDED");
    shop.wait_until_settled(&unrecorded).await;
    shop.refuse_next(PAYMENTS, 409, "invalid_state", 0).await;
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    shop.assert_sent_once(REFUNDS, &unrecorded, 1).await;
    shop.assert_sent_once(CANCEL, &unrecorded, 1).await;

    // And an order that goes through, whose checkout is answered again by its key.
    let cart = shop.filled_cart("str_pasadena").await;
    let happy = placed(&checkout(&shop, &cart, "pm_card_visa", "happy").await);
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&happy, "IN_PREPARATION").await;
    let again = checkout(&shop, &cart, "pm_card_visa", "happy").await;
    assert_eq!(again["order"]["id"], happy.as_str());
    shop.wait_until_settled(&happy).await;
    shop.assert_sent_once(INTENTS, &happy, 1).await;
    shop.assert_not_sent(REFUNDS, &happy).await;
    shop.assert_money_invariants().await;
}

/// Capturing on acceptance: a refused capture is recalled and released; a rejected order
/// is released, not refunded.
async fn compensations_capturing_on_acceptance(kind: Db) {
    let shop = shop_on(kind, |s| s.orders.capture = CaptureMode::OnAcceptance).await;
    shop.refuse_next(CAPTURE, 400, "charge_expired_for_capture", 5)
        .await;
    let uncaptured = decided(&shop, "str_pasadena", "pm_card_visa", Accept, "uncaptured").await;
    let order = shop.wait_for_status(&uncaptured, "CANCELLED").await;
    assert_eq!(order["payment"]["status"], "CANCELLED");
    shop.wait_until_settled(&uncaptured).await;
    shop.refuse_next(CAPTURE, 400, "charge_expired_for_capture", 0)
        .await;
    assert_eq!(shop.intents_for(&uncaptured).await[0]["status"], "canceled");
    shop.assert_sent_once(RECALL, &uncaptured, 1).await;
    shop.assert_sent_once(RELEASE, &uncaptured, 1).await;

    let released = decided(&shop, "str_pasadena", "pm_card_visa", Reject, "released").await;
    let order = shop.wait_for_status(&released, "REJECTED").await;
    assert_eq!(order["payment"]["status"], "CANCELLED");
    shop.wait_until_settled(&released).await;
    shop.assert_sent_once(RELEASE, &released, 1).await;
    assert_eq!(shop.ledger(Sim::Stripe).await["refunds"], json!([]));
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn lost_webhooks_are_made_up_for_by_reconciliation() {
    // Okya's webhooks go to the world's port, which no incarnation of the service serves:
    // a socket that never accepts, so every one of them is lost.
    let world = World::start(Db::Sqlite, |s| {
        s.orders.reconcile_interval_secs = 1;
        s.orders.sweep_interval_ms = 100;
    })
    .await;
    let shop = crate::helpers::spawn_with_settings(world.settings.clone()).await;
    shop.sign_up_and_use("+16265550190", "ada@example.com")
        .await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_visa", "k").await);
    shop.store_action(&cart, Accept).await;
    // Only the timer can notice: nothing reads the order through the API meanwhile (a
    // read asks Okya too); the service's own row is read straight from its database.
    shop.eventually("reconciliation to inject the accepted order", || async {
        shop.row(&id).await.status == cbtl_bff::domain::OrderStatus::InPreparation
    })
    .await;
    let delivered = shop.sandbox_get(Sim::Okya, "webhooks").await;
    assert!(
        !delivered.to_string().contains("\"delivered\":true"),
        "no webhook may have arrived: {delivered}"
    );
    shop.wait_until_settled(&id).await;
    shop.assert_sent_once(INJECT, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn a_pos_that_keeps_failing_is_given_up_on_after_bounded_retries_and_refunded() {
    let shop = shop(|s| s.orders.pos_max_attempts = 3).await;
    // The POS answers 503 to every injection (each attempt is itself retried by the client).
    shop.fail_next(INJECT, 100).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_visa", "k").await);
    shop.store_action(&cart, Accept).await;
    let cancelled = shop.wait_for_status(&id, "CANCELLED").await;
    assert_eq!(cancelled["payment"]["status"], "REFUNDED");
    shop.wait_until_settled(&id).await;
    assert_eq!(
        shop.okya_order(&cart).await["cancellation"]["kind"],
        "recalled"
    );
    assert_eq!(shop.ledger(Sim::Epoint).await["orders"], json!([]));
    // Three attempts of three tries each, all under the order's one key.
    let tries = shop.assert_sent_once(INJECT, &id, 3).await;
    assert_eq!(tries, 9, "bounded: 3 attempts × 3 tries");
    shop.assert_sent_once(RECALL, &id, 1).await;
    shop.assert_sent_once(REFUNDS, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn when_okya_will_not_record_the_payment_the_charge_is_refunded() {
    let shop = shop(|_| {}).await;
    shop.refuse_next(PAYMENTS, 409, "invalid_state", 5).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let payload = checkout(&shop, &cart, "pm_card_visa", "k").await;
    assert_eq!(payload["order"]["status"], "PAYMENT_FAILED");
    assert_eq!(payload["order"]["payment"]["status"], "REFUNDED");
    // Okya's refusal is not the card's fault: no "try another card".
    assert_eq!(error_codes(&payload), vec!["ORDER_NOT_ACCEPTED"]);
    let id = placed(&payload);
    shop.wait_until_settled(&id).await;
    // And the Okya order is not left open without a payment.
    assert_eq!(shop.okya_order(&cart).await["status"], "CANCELED");
    let stripe = shop.ledger(Sim::Stripe).await;
    assert_eq!(stripe["refunds"][0]["amount"], 1874, "{stripe}");
    shop.assert_sent_once(PAYMENTS, &id, 1).await;
    shop.assert_sent_once(REFUNDS, &id, 1).await;
    shop.assert_sent_once(CANCEL, &id, 1).await;
    shop.assert_money_invariants().await;
}

#[tokio::test]
async fn when_the_capture_is_refused_the_order_is_recalled_and_the_authorisation_released() {
    let shop = shop(|s| s.orders.capture = CaptureMode::OnAcceptance).await;
    shop.refuse_next(CAPTURE, 400, "charge_expired_for_capture", 5)
        .await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&checkout(&shop, &cart, "pm_card_visa", "k").await);
    shop.store_action(&cart, Accept).await;
    let cancelled = shop.wait_for_status(&id, "CANCELLED").await;
    assert_eq!(cancelled["payment"]["status"], "CANCELLED");
    shop.wait_until_settled(&id).await;
    assert_eq!(
        shop.okya_order(&cart).await["cancellation"]["kind"],
        "recalled"
    );
    assert_eq!(
        shop.intents_for(&id).await[0]["status"],
        "canceled",
        "released, never captured"
    );
    assert_eq!(shop.ledger(Sim::Stripe).await["refunds"], json!([]));
    shop.assert_sent_once(CAPTURE, &id, 1).await;
    shop.assert_sent_once(RECALL, &id, 1).await;
    shop.assert_sent_once(RELEASE, &id, 1).await;
    shop.assert_money_invariants().await;
}
