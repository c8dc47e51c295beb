//! A customer's shop for order tests: carts, checkout, the store's decisions, and the
//! checks every order test ends with: what the service *sent* (the simulators' call logs,
//! with each request's idempotency key) and what money moved (Stripe's ledger against the
//! service's own orders).

use crate::helpers::{Db, Sim, TestApp, spawn_app_with};
use serde_json::{Value, json};
use std::{collections::BTreeMap, ops::Deref};

pub const ORDER_FIELDS: &str =
    "id number status total { amount } payment { status } voucher { id name } pointsEarned";

/// A running service with a signed-in customer whose SessionM link is done.
pub struct Shop {
    pub app: TestApp,
}

impl Deref for Shop {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// Settings every order test shares: the store decides when the test says, and background
/// work is picked up quickly.
pub async fn shop(tweak: impl FnOnce(&mut cbtl_bff::config::Settings)) -> Shop {
    Shop::start(Db::Sqlite, tweak).await
}

impl Shop {
    /// Two large oat lattes (2 × 6.75) and a croissant (3.50): 17.00 + 10.25% tax = 18.74.
    pub async fn filled_cart(&self, store: &str) -> String {
        let cart = self.new_cart(store).await;
        let added = self
            .data(
                "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_latte\", quantity: 2, modifierOptionIds: [\"opt_size_large\", \"opt_milk_oat\"]}, {productId: \"prd_croissant\", quantity: 1}]) { userErrors { code } } }",
                json!({"c": cart}),
            )
            .await;
        assert_eq!(added["cartLinesAdd"]["userErrors"], json!([]));
        cart
    }

    /// The `checkout` payload (`order`, `userErrors`).
    pub async fn checkout(
        &self,
        cart: &str,
        card: &str,
        voucher: Option<&str>,
        key: &str,
    ) -> Value {
        let body = self
            .gql(
                &format!("mutation($i: CheckoutInput!) {{ checkout(input: $i) {{ order {{ {ORDER_FIELDS} }} userErrors {{ code field message }} }} }}"),
                json!({"i": {"cartId": cart, "paymentMethodId": card, "voucherId": voucher, "idempotencyKey": key}}),
            )
            .await;
        assert!(body.get("errors").is_none(), "{body}");
        body["data"]["checkout"].clone()
    }

    pub async fn order(&self, id: &str) -> Value {
        self.data(
            &format!("query($o: ID!) {{ order(id: $o) {{ {ORDER_FIELDS} }} }}"),
            json!({"o": id}),
        )
        .await["order"]
            .clone()
    }

    /// The order's row in the service's database.
    pub async fn row(&self, id: &str) -> cbtl_bff::store::orders::Order {
        cbtl_bff::store::orders::find(&self.app.app.state().db, id)
            .await
            .expect("database")
            .unwrap_or_else(|| panic!("no order {id}"))
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
        let db = &self.app.app.state().db;
        for _ in 0..200 {
            let row = self.row(id).await;
            let step = row.step;
            let pending = cbtl_bff::store::jobs::count(db, cbtl_bff::store::jobs::PENDING)
                .await
                .expect("jobs");
            if (!step.is_active() || row.attention.is_some()) && pending == 0 {
                return row;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("order {id} never settled: {:?}", self.row(id).await);
    }

    /// The Okya simulator's copy of the order placed from `cart`.
    pub async fn okya_order(&self, cart: &str) -> Value {
        let ledger: Value = self
            .http
            .get(format!("{}/_sandbox/orders", self.sim_url(Sim::Okya)))
            .send()
            .await
            .expect("okya orders")
            .json()
            .await
            .expect("okya orders JSON");
        ledger["orders"]
            .as_array()
            .and_then(|orders| orders.iter().find(|o| o["cart_id"] == cart).cloned())
            .unwrap_or(Value::Null)
    }

    /// The store's order manager: `accept`, `reject`, `ready` or `complete`.
    pub async fn store_action(&self, cart: &str, action: &str) {
        let id = self.okya_order(cart).await["id"]
            .as_str()
            .expect("an Okya order for the cart")
            .to_owned();
        let status = self
            .http
            .post(format!(
                "{}/_sandbox/orders/{id}/{action}",
                self.sim_url(Sim::Okya)
            ))
            .json(&json!({"reason": "test"}))
            .send()
            .await
            .expect("store action")
            .status();
        assert!(status.is_success(), "{action}: {status}");
    }

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

    /// The id of the one order in the database (a refused checkout shows none to the app).
    pub async fn only_order_id(&self) -> String {
        use sea_orm::EntityTrait;
        let rows = cbtl_bff::store::entities::order::Entity::find()
            .all(&self.app.app.state().db)
            .await
            .expect("orders");
        assert_eq!(rows.len(), 1, "one order: {rows:?}");
        rows[0].id.clone()
    }

    /// The Stripe PaymentIntents made for one of our orders.
    pub async fn intents_for(&self, order: &str) -> Vec<Value> {
        self.ledger(Sim::Stripe).await["payment_intents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|pi| pi["metadata"]["order_id"] == order)
            .collect()
    }

    /// Refunds an order's charge straight at Stripe, as a support agent would in the
    /// Dashboard.
    pub async fn refund_outside(&self, order: &str) {
        let intent = self.intents_for(order).await[0]["id"]
            .as_str()
            .expect("an intent")
            .to_owned();
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
        let intent = self.intents_for(order).await[0]["id"]
            .as_str()
            .expect("an intent")
            .to_owned();
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

    /// `/readyz`'s body.
    pub async fn readiness(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .expect("readyz");
        assert_eq!(response.status(), 200);
        response.json().await.expect("readyz JSON")
    }

    /// The requests a simulator received on `route`, oldest first, faulted ones included.
    pub async fn log(&self, sim: Sim, route: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/_sandbox/calls/log", self.sim_url(sim)))
            .query(&[("route", route)])
            .send()
            .await
            .expect("call log")
            .json()
            .await
            .expect("call log JSON")
    }

    /// Every request to `route` carried the same idempotency key, and there were at least
    /// `at_least` of them: a retry, whatever answer it followed, repeated the first try.
    pub async fn assert_one_key(&self, sim: Sim, route: &str, at_least: usize) -> String {
        let log = self.log(sim, route).await;
        assert!(
            log.len() >= at_least,
            "{route}: expected at least {at_least} requests: {log:?}"
        );
        let mut keys: Vec<&str> = log.iter().filter_map(|r| r["key"].as_str()).collect();
        assert_eq!(
            keys.len(),
            log.len(),
            "{route}: a request without a key: {log:?}"
        );
        keys.dedup();
        assert_eq!(
            keys.len(),
            1,
            "{route}: several keys for one effect: {log:?}"
        );
        keys[0].to_owned()
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
        let intents = stripe["payment_intents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let refunds = stripe["refunds"].as_array().cloned().unwrap_or_default();
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
        for ticket in epoint["orders"].as_array().cloned().unwrap_or_default() {
            *tickets
                .entry(ticket["external_id"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
        assert!(
            tickets.values().all(|n| *n == 1),
            "a ticket twice: {tickets:?}"
        );
    }

    /// The write routes of Place Order, as the simulators' call logs name them.
    pub const ORDERS: &'static str = "POST /v1/orders";
    pub const ADJUST: &'static str = "POST /v1/orders/{order_id}/adjustments";
    pub const PAYMENTS: &'static str = "POST /v1/orders/{order_id}/payments";
    pub const CANCEL: &'static str = "POST /v1/orders/{order_id}/cancel";
    pub const RECALL: &'static str = "POST /v1/orders/{order_id}/recall";
    pub const INTENTS: &'static str = "POST /v1/payment_intents";
    pub const CAPTURE: &'static str = "POST /v1/payment_intents/{id}/capture";
    pub const RELEASE: &'static str = "POST /v1/payment_intents/{id}/cancel";
    pub const REFUNDS: &'static str = "POST /v1/refunds";
    pub const INJECT: &'static str = "POST /v1/locations/{location_id}/orders";
    pub const FIND_TICKET: &'static str = "GET /v1/locations/{location_id}/orders/{external_id}";
    pub const LOCK: &'static str = "POST /api/2.0/lock";
    pub const UNLOCK: &'static str = "POST /api/2.0/unlock";
    pub const SALE: &'static str = "POST /api/2.0/send_transaction";

    /// Like [`shop`], on the given database.
    pub async fn start(kind: Db, tweak: impl FnOnce(&mut cbtl_bff::config::Settings)) -> Shop {
        let app = spawn_app_with(kind, |s| {
            s.sandbox.auto_accept_delay_ms = 0;
            s.orders.sweep_interval_ms = 50;
            s.jobs.poll_interval_ms = 50;
            tweak(s);
        })
        .await;
        let customer = app.sign_up("+16265550150", "grace@example.com").await;
        app.use_token(Some(&customer.access_token));
        let shop = Shop { app };
        shop.eventually("the SessionM link", || async {
            shop.gql("{ me { loyalty { pointsBalance } } }", json!({}))
                .await["data"]["me"]["loyalty"]
                .is_object()
        })
        .await;
        shop
    }

    /// The `checkout` payload, with `fields` selected on the order.
    pub async fn checkout_selecting(
        &self,
        fields: &str,
        cart: &str,
        card: &str,
        voucher: Option<&str>,
        key: &str,
    ) -> Value {
        let body = self
            .gql(
                &format!("mutation($i: CheckoutInput!) {{ checkout(input: $i) {{ order {{ {fields} }} userErrors {{ code field message }} }} }}"),
                json!({"i": {"cartId": cart, "paymentMethodId": card, "voucherId": voucher, "idempotencyKey": key}}),
            )
            .await;
        assert!(body.get("errors").is_none(), "{body}");
        body["data"]["checkout"].clone()
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

    /// The requests to `route` that were about `order`, oldest first, faulted ones
    /// included. The service derives every order write's idempotency key from the order's
    /// id (`{order}:{step}`), so that is how a request is told to be the order's; and so
    /// a retry sent under a fresh key cannot hide, every request to the route must carry
    /// a key that names one of our orders.
    pub async fn requests_about(&self, sim: Sim, route: &str, order: &str) -> Vec<Value> {
        let log = self.log(sim, route).await;
        let mut ours = Vec::new();
        for request in log {
            let key = request["key"]
                .as_str()
                .unwrap_or_else(|| panic!("{route}: a request without a key: {request}"));
            let named = key
                .split_once(':')
                .map(|(named, _)| named)
                .unwrap_or_else(|| panic!("{route}: a key that names no order: {request}"));
            let db = &self.app.app.state().db;
            assert!(
                cbtl_bff::store::orders::find(db, named)
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
    pub async fn assert_sent_once(
        &self,
        sim: Sim,
        route: &str,
        order: &str,
        at_least: usize,
    ) -> usize {
        let keys = self.keys_sent(sim, route, order).await;
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
    pub async fn keys_sent(&self, sim: Sim, route: &str, order: &str) -> BTreeMap<String, usize> {
        let mut keys = BTreeMap::new();
        for request in self.requests_about(sim, route, order).await {
            let key = request["key"].as_str().unwrap_or_default().to_owned();
            *keys.entry(key).or_default() += 1;
        }
        keys
    }

    /// The service never sent `route` a request about `order`.
    pub async fn assert_not_sent(&self, sim: Sim, route: &str, order: &str) {
        let requests = self.requests_about(sim, route, order).await;
        assert!(
            requests.is_empty(),
            "{route}: sent for {order}: {requests:?}"
        );
    }
}
