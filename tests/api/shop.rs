//! A customer's shop for order tests: carts, checkout, the store's decisions in Okya's
//! order manager, waiting for an order, and the checks every order test ends with: what
//! the service *sent* (the simulators' call logs, with each request's idempotency key) and
//! what money moved (Stripe's ledger against the service's own orders).

use crate::helpers::{Db, Sim, TestApp, spawn_app_with};
use crate::routes::Route;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const ORDER_FIELDS: &str =
    "id number status total { amount } payment { status } voucher { id name } pointsEarned";

/// A running service with a signed-in customer whose SessionM link is done; the store
/// decides when the test says, and background work is picked up quickly.
pub async fn shop(tweak: impl FnOnce(&mut cbtl_bff::config::Settings)) -> TestApp {
    shop_on(Db::Sqlite, tweak).await
}

/// Like [`shop`], on the given database.
pub async fn shop_on(kind: Db, tweak: impl FnOnce(&mut cbtl_bff::config::Settings)) -> TestApp {
    let app = spawn_app_with(kind, |s| {
        s.sandbox.auto_accept_delay_ms = 0;
        s.orders.sweep_interval_ms = 50;
        s.jobs.poll_interval_ms = 50;
        tweak(s);
    })
    .await;
    let customer = app
        .sign_up_and_use("+16265550150", "grace@example.com")
        .await;
    app.wait_for_link(&customer.access_token).await;
    app
}

/// The `checkout` mutation, with `fields` selected on the order.
pub fn checkout_mutation(fields: &str) -> String {
    format!(
        "mutation($i: CheckoutInput!) {{ checkout(input: $i) {{ order {{ {fields} }} userErrors {{ code field message }} }} }}"
    )
}

/// The id of the order a `checkout` payload carries.
pub fn placed(payload: &Value) -> String {
    payload["order"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an order: {payload}"))
        .to_owned()
}

/// What a store does with an order in Okya's order manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreAction {
    Accept,
    Reject,
    Ready,
    Complete,
}

impl StoreAction {
    fn path(self) -> &'static str {
        match self {
            StoreAction::Accept => "accept",
            StoreAction::Reject => "reject",
            StoreAction::Ready => "ready",
            StoreAction::Complete => "complete",
        }
    }
}

/// Carts and checkout.
impl TestApp {
    /// Two large oat lattes (2 × 6.75) and a croissant (3.50): 17.00 + 10.25% tax = 18.74.
    pub async fn filled_cart(&self, store: &str) -> String {
        self.cart_with(
            store,
            json!([
                {"productId": "prd_latte", "quantity": 2, "modifierOptionIds": ["opt_size_large", "opt_milk_oat"]},
                {"productId": "prd_croissant", "quantity": 1}
            ]),
        )
        .await
    }

    /// The whole response to a `checkout` of `cart`, with `fields` selected on the order.
    pub async fn checkout_body(
        &self,
        fields: &str,
        cart: &str,
        card: &str,
        voucher: Option<&str>,
        key: &str,
    ) -> Value {
        self.gql(
            &checkout_mutation(fields),
            json!({"i": {"cartId": cart, "paymentMethodId": card, "voucherId": voucher, "idempotencyKey": key}}),
        )
        .await
    }

    /// The `checkout` payload (`order`, `userErrors`), with `fields` selected on the order;
    /// the request itself raised no error.
    pub async fn checkout_selecting(
        &self,
        fields: &str,
        cart: &str,
        card: &str,
        voucher: Option<&str>,
        key: &str,
    ) -> Value {
        let body = self.checkout_body(fields, cart, card, voucher, key).await;
        assert!(body.get("errors").is_none(), "{body}");
        body["data"]["checkout"].clone()
    }

    /// The `checkout` payload (`order`, `userErrors`), with [`ORDER_FIELDS`].
    pub async fn checkout(
        &self,
        cart: &str,
        card: &str,
        voucher: Option<&str>,
        key: &str,
    ) -> Value {
        self.checkout_selecting(ORDER_FIELDS, cart, card, voucher, key)
            .await
    }

    /// A filled cart at `store`, paid with a Visa card under the key `k`, and its order
    /// waiting for the store: the cart and the order's id.
    pub async fn awaiting_acceptance(&self, store: &str) -> (String, String) {
        let cart = self.filled_cart(store).await;
        let id = placed(&self.checkout(&cart, "pm_card_visa", None, "k").await);
        self.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
        (cart, id)
    }
}

/// The order, as the app and the service's database see it.
impl TestApp {
    /// The order with [`ORDER_FIELDS`].
    pub async fn order(&self, id: &str) -> Value {
        self.order_selecting(ORDER_FIELDS, id).await
    }

    /// The order, with `fields` selected.
    pub async fn order_selecting(&self, fields: &str, id: &str) -> Value {
        self.data(
            &format!("query($o: ID!) {{ order(id: $o) {{ {fields} }} }}"),
            json!({"o": id}),
        )
        .await["order"]
            .clone()
    }

    /// The order's row in the service's database.
    pub async fn row(&self, id: &str) -> cbtl_bff::store::orders::Order {
        let order_id = cbtl_bff::domain::OrderId::parse(id).expect("an order id");
        cbtl_bff::store::orders::find(&self.app.state().db, &order_id)
            .await
            .expect("database")
            .unwrap_or_else(|| panic!("no order {id}"))
    }

    /// The ids of every order in the database, the ones the app was not shown included.
    pub async fn order_ids(&self) -> Vec<String> {
        use sea_orm::EntityTrait;
        cbtl_bff::store::entities::order::Entity::find()
            .all(&self.app.state().db)
            .await
            .expect("orders")
            .into_iter()
            .map(|o| o.id.to_string())
            .collect()
    }

    /// The id of the one order in the database (a refused checkout shows none to the app).
    pub async fn only_order_id(&self) -> String {
        let ids = self.order_ids().await;
        assert_eq!(ids.len(), 1, "one order: {ids:?}");
        ids[0].clone()
    }

    /// Waits until the order shows `status` (a background step may take it there).
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self.order(id).await;
            if last["status"] == status {
                return last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("order {id} never reached {status}: {last}");
    }

    /// Waits until the flow has nothing left to do on its own: its step waits for someone
    /// else or is final, and no job is pending.
    pub async fn wait_until_settled(&self, id: &str) -> cbtl_bff::store::orders::Order {
        for _ in 0..200 {
            let row = self.row(id).await;
            let pending = self.pending_jobs().await;
            if (!row.step.is_active() || row.attention.is_some()) && pending == 0 {
                return row;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("order {id} never settled: {:?}", self.row(id).await);
    }
}

/// The store, in Okya's order manager, and Okya's webhooks.
impl TestApp {
    /// Every order the Okya simulator holds.
    pub async fn okya_orders(&self) -> Vec<Value> {
        self.sandbox_get(Sim::Okya, "orders").await["orders"]
            .as_array()
            .cloned()
            .expect("Okya's orders")
    }

    /// The Okya simulator's copy of the order placed from `cart`, or null.
    pub async fn okya_order(&self, cart: &str) -> Value {
        self.okya_orders()
            .await
            .into_iter()
            .find(|o| o["cart_id"] == cart)
            .unwrap_or(Value::Null)
    }

    /// The store acts on the order placed from `cart`.
    pub async fn store_action(&self, cart: &str, action: StoreAction) {
        let id = self.okya_order(cart).await["id"]
            .as_str()
            .expect("an Okya order for the cart")
            .to_owned();
        self.sandbox(
            reqwest::Method::POST,
            Sim::Okya,
            &format!("orders/{id}/{}", action.path()),
            json!({"reason": "test"}),
        )
        .await;
    }

    /// Posts `body` to our Okya webhook, with `signature` as its `X-Okya-Signature`; the
    /// status we answer.
    pub async fn post_okya_webhook(&self, body: &str, signature: Option<String>) -> u16 {
        let mut request = self
            .http
            .post(format!("{}/webhooks/okya", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("x-okya-signature", signature);
        }
        request.send().await.expect("webhook").status().as_u16()
    }
}

/// The customer's SessionM wallet.
impl TestApp {
    /// A voucher of the customer's wallet, by kind and status.
    pub async fn voucher(&self, kind: &str, status: &str) -> String {
        self.vouchers()
            .await
            .into_iter()
            .find(|v| v["discount"]["kind"] == kind && v["status"] == status)
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {status} {kind} voucher"))
    }

    pub async fn voucher_status(&self, id: &str) -> String {
        self.vouchers()
            .await
            .into_iter()
            .find(|v| v["id"] == id)
            .and_then(|v| v["status"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    async fn vouchers(&self) -> Vec<Value> {
        self.data("{ vouchers { id status discount { kind } } }", json!({}))
            .await["vouchers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Stripe, as the service and a support agent in Stripe's Dashboard use it.
impl TestApp {
    /// The Stripe PaymentIntents made for one of our orders.
    pub async fn intents_for(&self, order: &str) -> Vec<Value> {
        self.ledger(Sim::Stripe).await["payment_intents"]
            .as_array()
            .cloned()
            .expect("the Stripe ledger lists payment_intents")
            .into_iter()
            .filter(|pi| pi["metadata"]["order_id"] == order)
            .collect()
    }

    /// The id of the order's first PaymentIntent.
    pub async fn intent_id(&self, order: &str) -> String {
        self.intents_for(order).await[0]["id"]
            .as_str()
            .expect("an intent")
            .to_owned()
    }

    /// Refunds an order's charge straight at Stripe, as a support agent would in the
    /// Dashboard.
    pub async fn refund_outside(&self, order: &str) {
        let intent = self.intent_id(order).await;
        let status = self
            .http
            .post(format!("{}/v1/refunds", self.sim_url(Sim::Stripe)))
            .bearer_auth("sk_test_dashboard")
            .header("Idempotency-Key", "dashboard-refund")
            .form(&[("payment_intent", intent.as_str())])
            .send()
            .await
            .expect("refund")
            .status();
        assert!(status.is_success(), "{status}");
    }

    /// Cancels an order's authorisation straight at Stripe.
    pub async fn release_outside(&self, order: &str) {
        let intent = self.intent_id(order).await;
        let status = self
            .http
            .post(format!(
                "{}/v1/payment_intents/{intent}/cancel",
                self.sim_url(Sim::Stripe)
            ))
            .bearer_auth("sk_test_dashboard")
            .header("Idempotency-Key", "dashboard-cancel")
            .send()
            .await
            .expect("cancel")
            .status();
        assert!(status.is_success(), "{status}");
    }
}

/// What the service sent about an order, and what money moved.
impl TestApp {
    /// The requests to `route` that were about `order`, oldest first, faulted ones
    /// included. The service derives every order write's idempotency key from the order's
    /// id (`{order}:{step}`), so that is how a request is told to be the order's; and so
    /// a retry sent under a fresh key cannot hide, every request to the route must carry
    /// a key that names one of our orders.
    pub async fn requests_about(&self, route: Route, order: &str) -> Vec<Value> {
        let log = self.log(route).await;
        let mut ours = Vec::new();
        for request in log {
            let key = request["key"]
                .as_str()
                .unwrap_or_else(|| panic!("{route}: a request without a key: {request}"));
            let named = key
                .split_once(':')
                .map(|(named, _)| named)
                .unwrap_or_else(|| panic!("{route}: a key that names no order: {request}"));
            let db = &self.app.state().db;
            let order_id = cbtl_bff::domain::OrderId::parse(named)
                .unwrap_or_else(|| panic!("{route}: a key that names no order id: {request}"));
            assert!(
                cbtl_bff::store::orders::find(db, &order_id)
                    .await
                    .expect("database")
                    .is_some(),
                "{route}: a key that names no order of ours: {request}"
            );
            if named == order {
                ours.push(request);
            }
        }
        ours
    }

    /// The service asked `route` for `order`'s effect at least `at_least` times and every
    /// time under the same idempotency key: however often it was sent, it was asked for
    /// once. Returns how many requests there were.
    pub async fn assert_sent_once(&self, route: Route, order: &str, at_least: usize) -> usize {
        let keys = self.keys_sent(route, order).await;
        let sent: usize = keys.values().sum();
        assert!(
            sent >= at_least,
            "{route}: expected at least {at_least} requests for {order}: {keys:?}"
        );
        assert_eq!(
            keys.len(),
            1,
            "{route}: {order}'s effect asked for under several keys: {keys:?}"
        );
        sent
    }

    /// How many requests to `route` about `order` carried each key.
    pub async fn keys_sent(&self, route: Route, order: &str) -> BTreeMap<String, usize> {
        let mut keys = BTreeMap::new();
        for request in self.requests_about(route, order).await {
            let key = request["key"].as_str().unwrap_or_default().to_owned();
            *keys.entry(key).or_default() += 1;
        }
        keys
    }

    /// The service never sent `route` a request about `order`.
    pub async fn assert_not_sent(&self, route: Route, order: &str) {
        let requests = self.requests_about(route, order).await;
        assert!(
            requests.is_empty(),
            "{route}: sent for {order}: {requests:?}"
        );
    }

    /// What the ledgers must say after any order test: every Stripe write carried a key;
    /// no order has more than one PaymentIntent or refund; an order that is not live or
    /// completed kept no money and holds none; the POS has at most one ticket per order.
    pub async fn assert_money_invariants(&self) {
        let stripe = self.ledger(Sim::Stripe).await;
        assert_eq!(
            stripe["requests_without_idempotency_key"], 0,
            "a Stripe write without an Idempotency-Key: {stripe}"
        );
        // A ledger without its lists would make every check below pass: it is a failure.
        let intents = stripe["payment_intents"]
            .as_array()
            .cloned()
            .expect("the Stripe ledger lists payment_intents");
        let refunds = stripe["refunds"]
            .as_array()
            .cloned()
            .expect("the Stripe ledger lists refunds");
        let mut per_order: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for intent in &intents {
            let order = intent["metadata"]["order_id"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            per_order.entry(order).or_default().push(intent.clone());
        }
        for (order_id, intents) in &per_order {
            assert_eq!(
                intents.len(),
                1,
                "order {order_id} has several intents: {intents:?}"
            );
            let intent = &intents[0];
            let refunds_of: Vec<&Value> = refunds
                .iter()
                .filter(|r| r["payment_intent"] == intent["id"])
                .collect();
            assert!(refunds_of.len() <= 1, "refunded twice: {refunds_of:?}");
            let kept = intent["amount_captured"].as_i64().unwrap_or(0)
                - intent["amount_refunded"].as_i64().unwrap_or(0);
            let row = self.row(order_id).await;
            let live = matches!(
                row.status.as_str(),
                "AWAITING_ACCEPTANCE" | "IN_PREPARATION" | "READY_FOR_PICKUP" | "COMPLETED"
            );
            if live {
                assert!(
                    kept == 0 || Some(kept) == row.total_minor,
                    "order {order_id} ({}) kept {kept} of {:?}",
                    row.status,
                    row.total_minor
                );
            } else if row.attention.is_none() {
                assert_eq!(
                    kept, 0,
                    "order {order_id} ({}) kept money: {intent}",
                    row.status
                );
                assert_ne!(
                    intent["status"], "requires_capture",
                    "order {order_id} ({}) still holds an authorisation",
                    row.status
                );
            }
        }
        let epoint = self.ledger(Sim::Epoint).await;
        let mut tickets: BTreeMap<String, usize> = BTreeMap::new();
        let orders = epoint["orders"]
            .as_array()
            .cloned()
            .expect("the Epoint ledger lists orders");
        for ticket in orders {
            *tickets
                .entry(ticket["external_id"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
        assert!(
            tickets.values().all(|n| *n == 1),
            "a ticket twice: {tickets:?}"
        );
    }
}
