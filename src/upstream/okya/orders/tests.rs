//! The order client against the Okya simulator over HTTP, and the `order.updated`
//! webhook body.

use super::*;
use crate::config::OkyaSettings;
use crate::domain::{ModifierOptionId, ProductId, StoreId};
use crate::upstream::signature;
use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use cbtl_sandbox::{
    Simulator,
    faults::{FaultUpdate, Faults, Loss, LostAs},
    okya as sim,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Env {
    sim: Simulator,
    okya: OkyaClient,
    http: reqwest::Client,
}

async fn env_with(config: sim::OkyaSimConfig) -> Env {
    let sim = sim::start(config, Faults::new(0, 0.0)).await.unwrap();
    let okya = OkyaClient::new(
        &sim.base_url,
        &sim.base_url,
        &OkyaSettings::default(),
        &crate::upstream::Guards::for_tests(),
    )
    .unwrap();
    Env {
        sim,
        okya,
        http: reqwest::Client::new(),
    }
}

async fn env() -> Env {
    env_with(sim::OkyaSimConfig::default()).await
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn usd(amount: i64) -> WireMoney {
    WireMoney {
        amount,
        currency: "USD".to_owned(),
    }
}

fn code(err: &UpstreamError) -> (u16, String, Option<String>) {
    let (status, rejection) = err.rejection().expect("a refusal");
    (status, rejection.code.clone(), rejection.field.clone())
}

impl Env {
    /// A cart at `store` with an oat-milk regular latte and a croissant: 975 + 100 tax.
    async fn cart(&self, store: &str) -> CartId {
        let cart = self
            .okya
            .create_cart(&StoreId::from_upstream(store.to_owned()), None, &key())
            .await
            .unwrap();
        let cart_id = CartId::from_upstream(cart.id);
        let option = |o: &str| ModifierOptionId::from_upstream(o.to_owned());
        let lines = [
            (
                ProductId::from_upstream("prd_latte".to_owned()),
                1,
                vec![option("opt_size_regular"), option("opt_milk_oat")],
            ),
            (
                ProductId::from_upstream("prd_croissant".to_owned()),
                1,
                vec![],
            ),
        ];
        self.okya.add_lines(&cart_id, &lines, &key()).await.unwrap();
        cart_id
    }

    async fn order(&self) -> Order {
        let cart = self.cart("str_pasadena").await;
        self.okya
            .create_order(&cart, "acc_ada", &key())
            .await
            .unwrap()
    }

    async fn pay(&self, order: &Order, status: PaymentRecordStatus) -> Order {
        self.okya
            .record_payment(&order.id, &payment(order, status), &key())
            .await
            .unwrap()
    }

    async fn manage(&self, order_id: &str, action: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.post(format!(
            "{}/_sandbox/orders/{order_id}/{action}",
            self.sim.base_url
        ));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn sandbox(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/_sandbox/{path}", self.sim.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn raw_post(&self, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.sim.base_url))
            .bearer_auth("okya_sandbox_key")
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

fn payment(order: &Order, status: PaymentRecordStatus) -> NewPayment {
    NewPayment {
        provider: "stripe".to_owned(),
        reference: format!("pi_{}", order.id),
        amount: order.total.clone(),
        status,
        card: Some(Card {
            brand: "visa".to_owned(),
            last4: "4242".to_owned(),
        }),
    }
}

fn reward(reference: &str, amount: i64) -> NewAdjustment {
    NewAdjustment {
        source: "sessionm".to_owned(),
        reference: reference.to_owned(),
        description: "Free drink reward".to_owned(),
        amount: usd(amount),
    }
}

#[tokio::test]
async fn submitting_a_cart_makes_one_order_per_cart() {
    let env = env().await;
    let cart = env.cart("str_pasadena").await;
    let submit = key();
    let order = env
        .okya
        .create_order(&cart, "acc_ada", &submit)
        .await
        .unwrap();
    assert_eq!(order.cart_id, cart.as_str());
    assert_eq!(order.store_id, "str_pasadena");
    assert_eq!(order.customer_ref, "acc_ada");
    assert_eq!(order.number, "101");
    assert_eq!(
        (order.status, order.approval, order.fulfilment),
        (
            OrderState::Open,
            Approval::NeedsApproval,
            Fulfilment::Received
        )
    );
    assert_eq!(order.lines.len(), 2);
    assert_eq!(
        (
            order.subtotal.amount,
            order.discount.amount,
            order.tax.amount,
            order.total.amount
        ),
        (975, 0, 100, 1075)
    );
    assert_eq!(order.version, 1);
    assert!(order.payment.is_none() && order.cancellation.is_none());

    // A lost response is recovered with the same key; another key is a second order.
    let again = env
        .okya
        .create_order(&cart, "acc_ada", &submit)
        .await
        .unwrap();
    assert_eq!((again.id.as_str(), again.version), (order.id.as_str(), 1));
    let second = env
        .okya
        .create_order(&cart, "acc_ada", &key())
        .await
        .unwrap_err();
    assert_eq!(
        code(&second),
        (
            422,
            codes::CART_ALREADY_ORDERED.to_owned(),
            Some("cart_id".to_owned())
        )
    );

    // Numbers count per store.
    assert_eq!(env.order().await.number, "102");
    let elsewhere = env.cart("str_santa_monica").await;
    let other = env
        .okya
        .create_order(&elsewhere, "acc_ada", &key())
        .await
        .unwrap();
    assert_eq!(other.number, "101");

    assert_eq!(
        env.okya.order(&order.id).await.unwrap().unwrap().id,
        order.id
    );
    assert!(env.okya.order("ord_nope").await.unwrap().is_none());
}

/// Okya made the order, then its answer was lost: the retry must carry the first
/// try's key, so Okya answers with that order (under another key it would refuse the
/// cart as already ordered).
#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_key() {
    let env = env().await;
    let cart = env.cart("str_pasadena").await;
    env.sim.faults.apply(FaultUpdate {
        lose_next: [(
            "POST /v1/orders".to_owned(),
            Loss {
                times: 1,
                status: LostAs::Status(503),
            },
        )]
        .into(),
        ..FaultUpdate::default()
    });
    let order = env
        .okya
        .create_order(&cart, "acc_ada", "submit-1")
        .await
        .unwrap();
    let sent: Vec<(Option<String>, String)> = env
        .sim
        .faults
        .log(Some("POST /v1/orders"))
        .into_iter()
        .map(|r| (r.key, r.fault))
        .collect();
    let key = Some("submit-1".to_owned());
    assert_eq!(
        sent,
        [(key.clone(), "lost".to_owned()), (key, "none".to_owned())]
    );
    let ledger = env.sandbox("orders").await;
    let orders = ledger["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{ledger}");
    assert_eq!(orders[0]["id"], order.id.as_str());
    assert_eq!(order.version, 1);
}

#[tokio::test]
async fn submitting_refuses_missing_empty_and_closed() {
    let env = env().await;
    let missing = env
        .okya
        .create_order(
            &CartId::from_upstream("crt_nope".to_owned()),
            "acc_ada",
            &key(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&missing),
        (
            404,
            codes::CART_NOT_FOUND.to_owned(),
            Some("cart_id".to_owned())
        )
    );

    let empty = env
        .okya
        .create_cart(
            &StoreId::from_upstream("str_pasadena".to_owned()),
            None,
            &key(),
        )
        .await
        .unwrap();
    let err = env
        .okya
        .create_order(&CartId::from_upstream(empty.id), "acc_ada", &key())
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (
            422,
            codes::CART_EMPTY.to_owned(),
            Some("cart_id".to_owned())
        )
    );

    let cart = env.cart("str_burbank").await;
    let closed = env
        .http
        .put(format!("{}/_sandbox/stores/str_burbank", env.sim.base_url))
        .json(&json!({"is_open": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let err = env
        .okya
        .create_order(&cart, "acc_ada", &key())
        .await
        .unwrap_err();
    assert_eq!(code(&err), (422, codes::STORE_CLOSED.to_owned(), None));

    // Order writes need a key, and malformed bodies are refused in Okya's shape.
    let cart = env.cart("str_pasadena").await;
    let body = json!({"cart_id": cart.as_str(), "customer_ref": "acc_ada"}).to_string();
    let (status, error) = env.raw_post("/v1/orders", None, &body).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], codes::INVALID_REQUEST);
    assert_eq!(error["error"]["field"], "Idempotency-Key");
    let (status, error) = env
        .raw_post(
            "/v1/orders",
            Some("k"),
            &json!({"cart_id": cart.as_str()}).to_string(),
        )
        .await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (400, &json!("customer_ref"))
    );
    let (status, error) = env.raw_post("/v1/orders", Some("k"), "{not json").await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &json!("invalid_request"))
    );
    // Validation is not stored: the same key works once the request is right.
    let (status, _) = env.raw_post("/v1/orders", Some("k"), &body).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn an_ordered_cart_is_frozen() {
    let env = env().await;
    let cart = env.cart("str_pasadena").await;
    env.okya
        .create_order(&cart, "acc_ada", &key())
        .await
        .unwrap();
    let water = [(ProductId::from_upstream("prd_water".to_owned()), 1, vec![])];
    let err = env.okya.add_lines(&cart, &water, &key()).await.unwrap_err();
    assert_eq!(
        code(&err),
        (422, codes::CART_ALREADY_ORDERED.to_owned(), None)
    );
    let read = env.okya.cart(&cart).await.unwrap().unwrap();
    let line = crate::domain::CartLineId::from_upstream(read.lines[0].id.clone());
    let err = env
        .okya
        .remove_lines(&cart, &[line], &key())
        .await
        .unwrap_err();
    assert_eq!(code(&err).1, codes::CART_ALREADY_ORDERED);
}

#[tokio::test]
async fn adjustments_discount_before_tax_once_per_reference() {
    let env = env().await;
    let order = env.order().await;
    let adjusted = env
        .okya
        .add_adjustment(&order.id, &reward("sm_txn_1:free", 625), &key())
        .await
        .unwrap();
    assert_eq!(
        (
            adjusted.discount.amount,
            adjusted.tax.amount,
            adjusted.total.amount
        ),
        (625, 36, 386)
    );
    assert_eq!(adjusted.version, 2);
    assert_eq!(adjusted.adjustments.len(), 1);
    assert!(adjusted.adjustments[0].id.starts_with("adj_"));

    // The same reference with another key changes nothing; other content is refused.
    let again = env
        .okya
        .add_adjustment(&order.id, &reward("sm_txn_1:free", 625), &key())
        .await
        .unwrap();
    assert_eq!((again.version, again.adjustments.len()), (2, 1));
    let reused = env
        .okya
        .add_adjustment(&order.id, &reward("sm_txn_1:free", 100), &key())
        .await
        .unwrap_err();
    assert_eq!(
        code(&reused),
        (
            422,
            codes::ADJUSTMENT_REFERENCE_REUSED.to_owned(),
            Some("reference".to_owned())
        )
    );

    let too_large = env
        .okya
        .add_adjustment(&order.id, &reward("sm_txn_2", 351), &key())
        .await
        .unwrap_err();
    assert_eq!(
        code(&too_large),
        (
            422,
            codes::ADJUSTMENT_TOO_LARGE.to_owned(),
            Some("amount".to_owned())
        )
    );
    let all = env
        .okya
        .add_adjustment(&order.id, &reward("sm_txn_2", 350), &key())
        .await
        .unwrap();
    assert_eq!(
        (all.discount.amount, all.tax.amount, all.total.amount),
        (975, 0, 0)
    );

    let order = env.order().await;
    for amount in [
        usd(0),
        WireMoney {
            amount: 100,
            currency: "EUR".to_owned(),
        },
    ] {
        let adjustment = NewAdjustment {
            amount,
            ..reward("sm_txn_3", 1)
        };
        let err = env
            .okya
            .add_adjustment(&order.id, &adjustment, &key())
            .await
            .unwrap_err();
        assert_eq!(code(&err).1, codes::INVALID_AMOUNT);
    }
    let paid = env.pay(&order, PaymentRecordStatus::Authorized).await;
    let late = env
        .okya
        .add_adjustment(&paid.id, &reward("sm_txn_4", 100), &key())
        .await
        .unwrap_err();
    assert_eq!(code(&late), (409, codes::INVALID_STATE.to_owned(), None));
    let unknown = env
        .okya
        .add_adjustment("ord_nope", &reward("sm_txn_5", 100), &key())
        .await
        .unwrap_err();
    assert_eq!(code(&unknown).1, codes::ORDER_NOT_FOUND);
}

#[tokio::test]
async fn payments_are_recorded_once_and_may_be_captured_later() {
    let env = env().await;
    let order = env.order().await;
    let short = NewPayment {
        amount: usd(order.total.amount - 1),
        ..payment(&order, PaymentRecordStatus::Authorized)
    };
    let err = env
        .okya
        .record_payment(&order.id, &short, &key())
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (
            422,
            codes::PAYMENT_AMOUNT_MISMATCH.to_owned(),
            Some("amount".to_owned())
        )
    );

    let paid = env.pay(&order, PaymentRecordStatus::Authorized).await;
    let record = paid.payment.clone().unwrap();
    assert_eq!(record.status, PaymentRecordStatus::Authorized);
    assert_eq!(record.card.unwrap().last4, "4242");
    assert_eq!(paid.version, 2);
    // The same payment again changes nothing.
    assert_eq!(
        env.pay(&order, PaymentRecordStatus::Authorized)
            .await
            .version,
        2
    );

    let captured = env.pay(&order, PaymentRecordStatus::Captured).await;
    assert_eq!(
        (captured.payment.unwrap().status, captured.version),
        (PaymentRecordStatus::Captured, 3)
    );
    let back = env
        .okya
        .record_payment(
            &order.id,
            &payment(&order, PaymentRecordStatus::Authorized),
            &key(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&back),
        (
            409,
            codes::INVALID_STATE.to_owned(),
            Some("status".to_owned())
        )
    );
    let other = NewPayment {
        reference: "pi_other".to_owned(),
        ..payment(&order, PaymentRecordStatus::Captured)
    };
    let err = env
        .okya
        .record_payment(&order.id, &other, &key())
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (
            409,
            codes::PAYMENT_EXISTS.to_owned(),
            Some("reference".to_owned())
        )
    );

    let (status, error) = env
        .raw_post(
            &format!("/v1/orders/{}/payments", order.id),
            Some(&key()),
            &json!({"provider": "stripe", "reference": "pi_x", "amount": order.total,
                    "status": "captured", "card": {"brand": "visa", "last4": "42"}})
            .to_string(),
        )
        .await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (400, &json!("card.last4"))
    );

    // A first payment after the order was cancelled, and on an unknown order.
    let cancelled = env.order().await;
    env.okya
        .cancel_order(&cancelled.id, "customer gave up", &key())
        .await
        .unwrap();
    let err = env
        .okya
        .record_payment(
            &cancelled.id,
            &payment(&cancelled, PaymentRecordStatus::Authorized),
            &key(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), (409, codes::INVALID_STATE.to_owned(), None));
}

#[tokio::test]
async fn cancel_is_before_acceptance_and_recall_after() {
    let env = env().await;
    let order = env.order().await;
    let err = env
        .okya
        .recall_order(&order.id, "pos_offline", &key())
        .await
        .unwrap_err();
    assert_eq!(code(&err), (409, codes::INVALID_STATE.to_owned(), None));
    let cancelled = env
        .okya
        .cancel_order(&order.id, "payment_failed: card_declined", &key())
        .await
        .unwrap();
    assert_eq!(
        (
            cancelled.status,
            cancelled.approval,
            cancelled.fulfilment,
            cancelled.version
        ),
        (
            OrderState::Canceled,
            Approval::NeedsApproval,
            Fulfilment::Void,
            2
        )
    );
    let cancellation = cancelled.cancellation.unwrap();
    assert_eq!(cancellation.kind, CancellationKind::Cancelled);
    assert_eq!(cancellation.reason, "payment_failed: card_declined");
    // Repeating it is a no-op, even with another key.
    let again = env
        .okya
        .cancel_order(&order.id, "again", &key())
        .await
        .unwrap();
    assert_eq!(again.version, 2);
    let err = env
        .okya
        .recall_order(&order.id, "pos_offline", &key())
        .await
        .unwrap_err();
    assert_eq!(code(&err).1, codes::INVALID_STATE);

    let accepted = env.order().await;
    env.pay(&accepted, PaymentRecordStatus::Authorized).await;
    assert_eq!(env.manage(&accepted.id, "accept", None).await.0, 200);
    let err = env
        .okya
        .cancel_order(&accepted.id, "too late", &key())
        .await
        .unwrap_err();
    assert_eq!(code(&err), (409, codes::INVALID_STATE.to_owned(), None));
    let recalled = env
        .okya
        .recall_order(&accepted.id, "pos_offline: Epoint refused", &key())
        .await
        .unwrap();
    assert_eq!(
        (recalled.status, recalled.approval, recalled.fulfilment),
        (OrderState::Canceled, Approval::Approved, Fulfilment::Void)
    );
    assert_eq!(
        recalled.cancellation.unwrap().kind,
        CancellationKind::Recalled
    );
    let again = env
        .okya
        .recall_order(&accepted.id, "pos_offline", &key())
        .await
        .unwrap();
    assert_eq!(again.version, recalled.version);

    let collected = env.order().await;
    env.pay(&collected, PaymentRecordStatus::Captured).await;
    for action in ["accept", "ready", "complete"] {
        assert_eq!(env.manage(&collected.id, action, None).await.0, 200);
    }
    let err = env
        .okya
        .recall_order(&collected.id, "pos_offline", &key())
        .await
        .unwrap_err();
    assert_eq!(code(&err).1, codes::INVALID_STATE);
    let err = env
        .okya
        .cancel_order("ord_nope", "x", &key())
        .await
        .unwrap_err();
    assert_eq!(code(&err).1, codes::ORDER_NOT_FOUND);
    let (status, error) = env
        .raw_post(
            &format!("/v1/orders/{}/cancel", collected.id),
            Some(&key()),
            &json!({"reason": ""}).to_string(),
        )
        .await;
    assert_eq!((status, &error["error"]["field"]), (400, &json!("reason")));
}

#[tokio::test]
async fn the_store_accepts_paid_orders_on_its_own() {
    let env = env_with(sim::OkyaSimConfig {
        auto_accept_delay_ms: 50,
        ..sim::OkyaSimConfig::default()
    })
    .await;
    let unpaid = env.order().await;
    let paid = env.order().await;
    let paid = env.pay(&paid, PaymentRecordStatus::Authorized).await;
    assert_eq!(paid.approval, Approval::NeedsApproval);
    let mut accepted = paid.clone();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        accepted = env.okya.order(&paid.id).await.unwrap().unwrap();
        if accepted.approval != Approval::NeedsApproval {
            break;
        }
    }
    assert_eq!(
        (accepted.approval, accepted.fulfilment, accepted.version),
        (
            Approval::Approved,
            Fulfilment::InPreparation,
            paid.version + 1
        )
    );
    // The unpaid order was made before the paid one was paid, so a timer it had
    // started (with the same delay) would have fired by now.
    let still = env.okya.order(&unpaid.id).await.unwrap().unwrap();
    assert_eq!(
        (still.approval, still.version),
        (Approval::NeedsApproval, 1)
    );

    // An order cancelled before the delay ends is left alone.
    let slow = env.order().await;
    let slow = env.pay(&slow, PaymentRecordStatus::Authorized).await;
    let (status, _) = env
        .manage(
            &slow.id,
            "reject",
            Some(json!({"reason": "out of oat milk"})),
        )
        .await;
    assert_eq!(status, 200);
    // A later order paid after the rejection, accepted on its own: the rejected one's
    // timer (started earlier, with the same delay) has fired too.
    let canary = env.order().await;
    let canary = env.pay(&canary, PaymentRecordStatus::Authorized).await;
    let mut canary_now = canary.clone();
    for _ in 0..100 {
        canary_now = env.okya.order(&canary.id).await.unwrap().unwrap();
        if canary_now.approval != Approval::NeedsApproval {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(canary_now.approval, Approval::Approved);
    let rejected = env.okya.order(&slow.id).await.unwrap().unwrap();
    assert_eq!(
        (rejected.approval, rejected.status, rejected.version),
        (
            Approval::NotApproved,
            OrderState::Canceled,
            slow.version + 1
        )
    );
}

#[tokio::test]
async fn the_order_manager_moves_orders_on_demand() {
    let env = env().await;
    let order = env.order().await;
    // The store never sees an unpaid order.
    let (status, error) = env.manage(&order.id, "accept", None).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (409, &json!("invalid_state"))
    );
    assert_eq!(env.manage(&order.id, "ready", None).await.0, 409);
    env.pay(&order, PaymentRecordStatus::Authorized).await;
    assert_eq!(env.manage(&order.id, "complete", None).await.0, 409);
    let (status, accepted) = env.manage(&order.id, "accept", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &accepted["approval"],
            &accepted["fulfilment"],
            &accepted["version"]
        ),
        (&json!("APPROVED"), &json!("IN_PREPARATION"), &json!(3))
    );
    assert_eq!(env.manage(&order.id, "accept", None).await.0, 409);
    assert_eq!(env.manage(&order.id, "reject", None).await.0, 409);
    let (_, ready) = env.manage(&order.id, "ready", None).await;
    assert_eq!(ready["fulfilment"], "READY_FOR_PICKUP");
    let (_, done) = env.manage(&order.id, "complete", None).await;
    assert_eq!(
        (&done["status"], &done["fulfilment"], &done["version"]),
        (&json!("COMPLETED"), &json!("COMPLETED"), &json!(5))
    );

    let rejected = env.order().await;
    env.pay(&rejected, PaymentRecordStatus::Captured).await;
    let (status, body) = env.manage(&rejected.id, "reject", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["approval"], &body["fulfilment"], &body["status"]),
        (&json!("NOT_APPROVED"), &json!("VOID"), &json!("CANCELED"))
    );
    assert_eq!(body["cancellation"]["kind"], "rejected");
    assert_eq!(env.manage("ord_nope", "accept", None).await.0, 404);

    let ledger = env.sandbox("orders").await;
    let ids: Vec<&str> = ledger["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [order.id.as_str(), rejected.id.as_str()]);
    let listed = env
        .okya
        .orders(&[rejected.id.clone(), "ord_nope".to_owned(), order.id.clone()])
        .await
        .unwrap();
    let listed: Vec<(&str, i64)> = listed.iter().map(|o| (o.id.as_str(), o.version)).collect();
    assert_eq!(listed, [(rejected.id.as_str(), 3), (order.id.as_str(), 5)]);
}

#[tokio::test]
async fn large_id_lists_are_split_into_calls_of_200() {
    let env = env().await;
    let order = env.order().await;
    let mut ids: Vec<String> = (0..450).map(|i| format!("ord_missing_{i}")).collect();
    ids.push(order.id.clone());
    env.http
        .delete(format!("{}/_sandbox/calls", env.sim.base_url))
        .send()
        .await
        .unwrap();
    let found = env.okya.orders(&ids).await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(env.okya.orders(&[]).await.unwrap().is_empty());
    let calls = env.sandbox("calls").await;
    assert_eq!(calls["GET /v1/orders"], 3);
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// Answers 500 to the first delivery and 204 to every later one.
async fn receiver() -> (String, Received) {
    async fn hook(
        State(seen): State<Received>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::http::StatusCode {
        let mut seen = seen.lock().unwrap();
        seen.push((headers, body));
        if seen.len() == 1 {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            axum::http::StatusCode::NO_CONTENT
        }
    }
    let seen = Received::default();
    let app = Router::new()
        .route("/webhooks/okya", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/webhooks/okya"), seen)
}

#[tokio::test]
async fn every_change_is_delivered_signed_in_version_order() {
    let (url, seen) = receiver().await;
    let env = env_with(sim::OkyaSimConfig {
        webhook_url: Some(url),
        webhook_secret: "whsec_test".to_owned(),
        ..sim::OkyaSimConfig::default()
    })
    .await;
    let order = env.order().await;
    env.okya
        .add_adjustment(&order.id, &reward("sm_1", 100), &key())
        .await
        .unwrap();
    let adjusted = env.okya.order(&order.id).await.unwrap().unwrap();
    env.pay(&adjusted, PaymentRecordStatus::Authorized).await;
    env.manage(&order.id, "accept", None).await;
    env.manage(&order.id, "ready", None).await;

    // Versions 1–5, the first one twice (the receiver failed it once).
    for _ in 0..150 {
        if seen.lock().unwrap().len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    let secrets = [SecretString::from("whsec_test")];
    let mut versions = Vec::new();
    let mut event_ids = Vec::new();
    for (headers, body) in &seen {
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        signature::verify(
            &header("x-okya-signature"),
            body,
            &secrets,
            chrono::Utc::now().timestamp(),
            300,
        )
        .unwrap();
        assert!(header("content-type").starts_with("application/json"));
        let event: OrderEvent = serde_json::from_slice(body).unwrap();
        assert_eq!(header("x-okya-event-id"), event.id);
        assert_eq!(header("x-okya-event-type"), ORDER_UPDATED);
        assert_eq!(event.r#type, ORDER_UPDATED);
        assert!(event.id.starts_with("evt_"));
        assert_eq!(event.data.order.id, order.id);
        versions.push(event.data.order.version);
        event_ids.push(event.id);
    }
    assert_eq!(versions, [1, 1, 2, 3, 4, 5]);
    assert_eq!(event_ids[0], event_ids[1]);
    let last: OrderEvent = serde_json::from_slice(&seen[5].1).unwrap();
    assert_eq!(last.data.order.fulfilment, Fulfilment::ReadyForPickup);

    let log = env.sandbox("webhooks").await;
    assert_eq!(log["events"].as_array().unwrap().len(), 5);
    let attempts: Vec<(i64, i64, Value)> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_i64().unwrap(),
                d["attempt"].as_i64().unwrap(),
                d["status"].clone(),
            )
        })
        .collect();
    assert_eq!(attempts[0], (1, 1, json!(500)));
    assert_eq!(attempts[1], (1, 2, json!(204)));
    assert_eq!(attempts.len(), 6);
}

#[test]
fn the_webhook_body_parses() {
    let body = json!({
        "id": "evt_1", "type": "order.updated", "created_at": "2026-11-25T11:06:02Z",
        "data": {"order": {
            "id": "ord_1", "number": "217", "cart_id": "crt_1", "store_id": "str_pasadena",
            "customer_ref": "acc_1", "status": "OPEN", "approval": "APPROVED",
            "fulfilment": "IN_PREPARATION", "currency": "USD", "lines": [],
            "subtotal": {"amount": 975, "currency": "USD"},
            "discount": {"amount": 0, "currency": "USD"},
            "tax": {"amount": 100, "currency": "USD"},
            "total": {"amount": 1075, "currency": "USD"},
            "adjustments": [],
            "payment": {"provider": "stripe", "reference": "pi_1",
                        "amount": {"amount": 1075, "currency": "USD"}, "status": "captured",
                        "card": null, "recorded_at": "2026-11-25T11:06:01Z"},
            "cancellation": null,
            "created_at": "2026-11-25T11:06:00Z", "updated_at": "2026-11-25T11:06:02Z",
            "version": 4
        }}
    });
    let event: OrderEvent = serde_json::from_value(body).unwrap();
    assert_eq!(event.data.order.approval, Approval::Approved);
    assert_eq!(
        event.data.order.payment.unwrap().status,
        PaymentRecordStatus::Captured
    );
    assert_eq!(event.data.order.version, 4);
}
