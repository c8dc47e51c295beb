//! A model-based test of the order state machine, black-box: proptest generates a run of
//! commands (checkouts with good, declined and 3-D Secure cards at a store whose POS works
//! and one whose POS is offline; the store accepting, rejecting, readying and completing
//! in Okya's order manager; Okya's `order.updated` webhooks delivered late, out of order,
//! twice or never; Stripe's events delivered or lost; 3-D Secure passed or failed; faults
//! armed on every upstream route the flow writes to: `fail_next`, `lose_next` and the POS
//! refusing; and the service restarted on the same database), runs it against the real
//! service, and checks what must hold against a small model:
//!
//! - each order's statuses, as observed after every command and as its history records
//!   them, only make moves `OrderStatus::successors` allows, and a final one never changes;
//! - once every flow has settled, each order's status is the one Okya's own copy of the
//!   order implies (the store's decision, the fulfilment, who cancelled it and why);
//! - money: one PaymentIntent per order, at most one refund, captured − refunded is 0 or
//!   the total and 0 unless the order is live or completed, no authorisation left held,
//!   at most one POS ticket per order (`assert_money_invariants`);
//! - no order needs an operator, and every webhook is answered 204 throughout.
//!
//! The test delivers Okya's and Stripe's webhooks itself (the simulators are started
//! without a webhook URL), so loss, duplication and reordering are the test's choice;
//! the service's reconciliation with Okya must make up for what was lost.
//!
//! `PROPTEST_CASES` sets the number of runs (6 by default, about half a minute); see the
//! README for the long run.

use crate::helpers::{
    Db, ExternalUpstreams, Port, Sim, TestApp, TestDb, sessionm_simulator, spawn_on, test_settings,
};
use crate::routes::{
    CANCEL, CAPTURE, INJECT, INTENTS, ORDERS, PAYMENTS, RECALL, REFUNDS, RELEASE, Route,
};
use cbtl_bff::{
    config::Settings,
    domain::{CaptureMode, OrderStatus},
    upstream::signature,
};
use proptest::prelude::*;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Card {
    Visa,
    Declined,
    ThreeDSecure,
}

impl Card {
    fn id(self) -> &'static str {
        match self {
            Card::Visa => "pm_card_visa",
            Card::Declined => "pm_card_chargeDeclined",
            Card::ThreeDSecure => "pm_card_authenticationRequired",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shop {
    /// Its POS takes orders.
    Pasadena,
    /// Its POS is offline: an accepted order is recalled.
    Burbank,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreAction {
    Accept,
    Reject,
    Ready,
    Complete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// 503 before the upstream acts.
    Fail,
    /// The upstream acts; its answer is lost.
    Lose,
    /// The POS refuses the injection (only armed on that route).
    Refuse,
}

/// The routes of Place Order that write, where faults are armed.
const FAULT_ROUTES: [Route; 9] = [
    ORDERS, INTENTS, PAYMENTS, INJECT, CAPTURE, REFUNDS, RELEASE, CANCEL, RECALL,
];

/// One step of a run. Orders are named by their index among the orders placed so far
/// (modulo their number; a command about an order when there is none does nothing).
#[derive(Clone, Debug)]
enum Command {
    Checkout(Card, Shop),
    Store(usize, StoreAction),
    /// Delivers Okya's copy of the order as it was `back` versions ago (0: the newest
    /// seen), as a new event.
    DeliverOkya {
        order: usize,
        back: usize,
    },
    /// Delivers an event sent before again: same id, same body.
    Redeliver(usize),
    /// A Stripe event prompting the order's PaymentIntent to be read again.
    DeliverStripe(usize),
    /// The customer passes (or fails) 3-D Secure.
    Authenticate(usize, bool),
    Fault(usize, Fault),
    /// The service stops and starts again on the same database and port.
    Restart,
    Pause(u64),
}

fn command() -> impl Strategy<Value = Command> {
    let card = prop_oneof![
        3 => Just(Card::Visa),
        1 => Just(Card::Declined),
        1 => Just(Card::ThreeDSecure),
    ];
    let shop = prop_oneof![3 => Just(Shop::Pasadena), 1 => Just(Shop::Burbank)];
    let action = prop_oneof![
        3 => Just(StoreAction::Accept),
        1 => Just(StoreAction::Reject),
        2 => Just(StoreAction::Ready),
        2 => Just(StoreAction::Complete),
    ];
    let fault = prop_oneof![
        2 => Just(Fault::Fail),
        2 => Just(Fault::Lose),
        1 => Just(Fault::Refuse),
    ];
    prop_oneof![
        2 => (card, shop).prop_map(|(c, s)| Command::Checkout(c, s)),
        5 => (any::<usize>(), action).prop_map(|(o, a)| Command::Store(o, a)),
        4 => (any::<usize>(), 0_usize..3).prop_map(|(order, back)| Command::DeliverOkya { order, back }),
        2 => any::<usize>().prop_map(Command::Redeliver),
        1 => any::<usize>().prop_map(Command::DeliverStripe),
        1 => (any::<usize>(), prop::bool::weighted(0.7)).prop_map(|(o, ok)| Command::Authenticate(o, ok)),
        2 => (0..FAULT_ROUTES.len(), fault).prop_map(|(r, f)| Command::Fault(r, f)),
        1 => Just(Command::Restart),
        1 => (20_u64..300).prop_map(Command::Pause),
    ]
}

/// A run: the capture mode, a first checkout (so most commands have an order to act on),
/// then the rest.
fn run() -> impl Strategy<Value = (CaptureMode, Card, Vec<Command>)> {
    (
        prop_oneof![
            Just(CaptureMode::Immediate),
            Just(CaptureMode::OnAcceptance)
        ],
        prop_oneof![3 => Just(Card::Visa), 1 => Just(Card::ThreeDSecure)],
        prop::collection::vec(command(), 6..16),
    )
}

/// An order the run placed, and what the test has seen of it.
struct Placed {
    id: String,
    cart: String,
    /// Okya's copies of the order, one per version seen, oldest first.
    versions: Vec<Value>,
    /// The statuses observed after each command, consecutive repeats dropped.
    observed: Vec<OrderStatus>,
}

/// The world of one run: simulators that outlive the service, its database and port.
struct Model {
    // Kept so the simulators outlive every incarnation of the service.
    _upstreams: ExternalUpstreams,
    settings: Settings,
    port: Port,
    _db: TestDb,
    app: Option<TestApp>,
    token: String,
    orders: Vec<Placed>,
    /// Webhook deliveries made, for redelivery: path, event id and body.
    sent: Vec<(&'static str, String)>,
    next_event: u64,
}

/// Every status reachable from `from` by allowed moves (`from` included).
fn reachable(from: OrderStatus) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::from([from.as_str()]);
    let mut frontier = vec![from];
    while let Some(status) = frontier.pop() {
        for next in status.successors() {
            if seen.insert(next.as_str()) {
                frontier.push(*next);
            }
        }
    }
    seen
}

impl Model {
    async fn start(capture: CaptureMode) -> Self {
        use cbtl_sandbox::{epoint, faults::Faults, okya, stripe};
        let port = Port::bind();
        // No webhook URLs: the test is the courier.
        let okya = okya::start(okya::OkyaSimConfig::default(), Faults::new(0, 0.0))
            .await
            .expect("okya simulator");
        let stripe = stripe::start(stripe::StripeSimConfig::default(), Faults::new(0, 0.0))
            .await
            .expect("stripe simulator");
        let epoint = epoint::start(
            epoint::EpointSimConfig {
                offline_locations: vec!["str_burbank".to_owned()],
                ..epoint::EpointSimConfig::default()
            },
            Faults::new(0, 0.0),
        )
        .await
        .expect("epoint simulator");
        let sessionm = sessionm_simulator(Faults::new(0, 0.0)).await;
        let upstreams = ExternalUpstreams {
            okya,
            stripe,
            epoint,
            sessionm,
        };
        let (db, url) = TestDb::new(Db::Sqlite).await;
        let mut settings = test_settings(url);
        upstreams.configure(&mut settings);
        settings.orders.capture = capture;
        settings.orders.lease_ms = 1_000;
        settings.orders.sweep_interval_ms = 50;
        settings.orders.checkout_wait_ms = 2_000;
        settings.orders.reconcile_interval_secs = 1;
        settings.orders.authentication_timeout_secs = 2;
        settings.jobs.lease_ms = 1_000;
        settings.jobs.poll_interval_ms = 50;
        let app = spawn_on(settings.clone(), &port).await;
        let customer = app.member("+16265550177", "model@example.com").await;
        app.use_token(Some(&customer.access_token));
        Model {
            _upstreams: upstreams,
            settings,
            port,
            _db: db,
            app: Some(app),
            token: customer.access_token,
            orders: Vec::new(),
            sent: Vec::new(),
            next_event: 0,
        }
    }

    fn app(&self) -> &TestApp {
        self.app.as_ref().expect("a running service")
    }

    fn order(&self, index: usize) -> Option<&Placed> {
        (!self.orders.is_empty()).then(|| &self.orders[index % self.orders.len()])
    }

    async fn apply(&mut self, command: &Command) {
        match command {
            Command::Checkout(card, shop) => self.checkout(*card, *shop).await,
            Command::Store(i, action) => {
                let Some(okya_id) = self.okya_id(*i).await else {
                    return;
                };
                let path = match action {
                    StoreAction::Accept => "accept",
                    StoreAction::Reject => "reject",
                    StoreAction::Ready => "ready",
                    StoreAction::Complete => "complete",
                };
                // Okya refuses actions that do not fit the order's state (409): fine.
                let _ = self
                    .app()
                    .http
                    .post(format!(
                        "{}/_sandbox/orders/{okya_id}/{path}",
                        self.app().sim_url(Sim::Okya)
                    ))
                    .json(&json!({"reason": "model"}))
                    .send()
                    .await
                    .expect("the order manager answers");
            }
            Command::DeliverOkya { order, back } => {
                let Some(placed) = self.order(*order) else {
                    return;
                };
                let Some(snapshot) = placed
                    .versions
                    .len()
                    .checked_sub(1 + back)
                    .or_else(|| placed.versions.len().checked_sub(1))
                    .map(|at| placed.versions[at].clone())
                else {
                    return;
                };
                self.next_event += 1;
                let event = json!({
                    "id": format!("evt_model_{}", self.next_event),
                    "type": "order.updated",
                    "created_at": chrono::Utc::now(),
                    "data": {"order": snapshot},
                });
                self.deliver("okya", event.to_string()).await;
            }
            Command::Redeliver(i) => {
                if self.sent.is_empty() {
                    return;
                }
                let (source, body) = self.sent[i % self.sent.len()].clone();
                self.deliver(source, body).await;
            }
            Command::DeliverStripe(i) => {
                let Some(placed) = self.order(*i) else {
                    return;
                };
                let id = placed.id.clone();
                for intent in self.app().intents_for(&id).await {
                    self.next_event += 1;
                    let event = json!({
                        "id": format!("evt_stripe_model_{}", self.next_event),
                        "type": format!("payment_intent.{}", intent["status"].as_str().unwrap_or("updated")),
                        "data": {"object": {"id": intent["id"], "object": "payment_intent"}},
                    });
                    self.deliver("stripe", event.to_string()).await;
                }
            }
            Command::Authenticate(i, succeed) => {
                let Some(placed) = self.order(*i) else {
                    return;
                };
                let id = placed.id.clone();
                for intent in self.app().intents_for(&id).await {
                    let outcome = if *succeed { "succeed" } else { "fail" };
                    // Refused unless the intent awaits authentication: fine.
                    let _ = self
                        .app()
                        .http
                        .post(format!(
                            "{}/_sandbox/payment_intents/{}/authenticate",
                            self.app().sim_url(Sim::Stripe),
                            intent["id"].as_str().unwrap_or_default()
                        ))
                        .json(&json!({"outcome": outcome}))
                        .send()
                        .await
                        .expect("the Stripe simulator answers");
                }
            }
            Command::Fault(route, fault) => {
                let route = FAULT_ROUTES[*route];
                match fault {
                    Fault::Fail => self.app().fail_next(route, 2).await,
                    Fault::Lose => self.app().lose_next(route, 1, 503).await,
                    Fault::Refuse => self.app().refuse_next(INJECT, 409, "pos_offline", 1).await,
                }
            }
            Command::Restart => {
                drop(self.app.take());
                let app = spawn_on(self.settings.clone(), &self.port).await;
                app.use_token(Some(&self.token));
                self.app = Some(app);
            }
            Command::Pause(ms) => {
                tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
            }
        }
    }

    async fn checkout(&mut self, card: Card, shop: Shop) {
        let store = match shop {
            Shop::Pasadena => "str_pasadena",
            Shop::Burbank => "str_burbank",
        };
        let app = self.app();
        let before: BTreeSet<String> = app.order_ids().await.into_iter().collect();
        let cart = app.filled_cart(store).await;
        let key = format!("model-{}", self.orders.len());
        let body = app
            .checkout_body("id status", &cart, card.id(), None, &key)
            .await;
        // Whatever the faults, the answer is a GraphQL response: an order, userErrors, or
        // an error with a code.
        let answered = body["data"]["checkout"]["order"].is_object()
            || body["data"]["checkout"]["userErrors"].is_array()
            || body["errors"][0]["extensions"]["code"].is_string();
        assert!(answered, "checkout answered {body}");
        let created: Vec<String> = app
            .order_ids()
            .await
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        assert!(created.len() <= 1, "one checkout made {created:?}");
        if let Some(id) = created.into_iter().next() {
            self.orders.push(Placed {
                id,
                cart,
                versions: Vec::new(),
                observed: Vec::new(),
            });
        }
    }

    /// Signs `body` as its sender would, now, and posts it: the service must take it (or
    /// recognise it) with 204, restarts and faults notwithstanding.
    async fn deliver(&mut self, source: &'static str, body: String) {
        let webhooks = &self.settings.webhooks;
        let (secret, header) = match source {
            "okya" => (&webhooks.okya_secrets[0], "x-okya-signature"),
            _ => (&webhooks.stripe_secrets[0], "stripe-signature"),
        };
        let signed = signature::sign(
            secret.expose_secret(),
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        let app = self.app();
        let status = app
            .http
            .post(format!("{}/webhooks/{source}", app.url))
            .header("content-type", "application/json")
            .header(header, signed)
            .body(body.clone())
            .send()
            .await
            .expect("the webhook is answered")
            .status();
        assert_eq!(status, 204, "{source} webhook {body}");
        self.sent.push((source, body));
    }

    async fn okya_id(&self, index: usize) -> Option<String> {
        let placed = self.order(index)?;
        let order = self.app().okya_order(&placed.cart).await;
        order["id"].as_str().map(str::to_owned)
    }

    /// Records Okya's newest copy of each order and each order's status, and checks that
    /// the status moved only as allowed since it was last seen.
    async fn observe(&mut self) {
        let okya = self.app().okya_orders().await;
        let mut rows = Vec::new();
        for placed in &self.orders {
            rows.push(self.app().row(&placed.id).await);
        }
        for (placed, row) in self.orders.iter_mut().zip(rows) {
            if let Some(copy) = okya.iter().find(|o| o["cart_id"] == placed.cart.as_str()) {
                let newest = placed.versions.last().map(|v| v["version"].clone());
                if newest.as_ref() != Some(&copy["version"]) {
                    placed.versions.push(copy.clone());
                }
            }
            if let Some(&last) = placed.observed.last() {
                assert!(
                    reachable(last).contains(row.status.as_str()),
                    "order {} moved {last} -> {} (observed {:?})",
                    placed.id,
                    row.status,
                    placed.observed
                );
            }
            if placed.observed.last() != Some(&row.status) {
                placed.observed.push(row.status);
            }
        }
    }

    /// Ends the faults, delivers the newest state of everything once (as Okya and Stripe
    /// eventually do; reconciliation covers Okya anyway), and waits until every flow rests
    /// with Okya's newest version recorded.
    async fn settle(&mut self) {
        for sim in [Sim::Okya, Sim::Stripe, Sim::Epoint] {
            let routes: Vec<&str> = FAULT_ROUTES
                .iter()
                .filter(|r| r.sim == sim)
                .map(|r| r.name)
                .collect();
            let zero = |value: Value| {
                routes
                    .iter()
                    .map(|r| ((*r).to_owned(), value.clone()))
                    .collect::<serde_json::Map<_, _>>()
            };
            self.app()
                .faults(
                    sim,
                    json!({
                        "fail_next": zero(json!(0)),
                        "lose_next": zero(json!({"times": 0, "status": 503})),
                        "refuse_next": zero(json!({"status": 409, "code": "pos_offline", "times": 0})),
                    }),
                )
                .await;
        }
        self.observe().await;
        for i in 0..self.orders.len() {
            self.apply(&Command::DeliverOkya { order: i, back: 0 })
                .await;
            self.apply(&Command::DeliverStripe(i)).await;
        }
        let mut last = String::new();
        for _ in 0..200 {
            self.observe().await;
            let okya = self.app().okya_orders().await;
            let mut unsettled = Vec::new();
            for placed in &self.orders {
                let row = self.app().row(&placed.id).await;
                let newest = okya
                    .iter()
                    .find(|o| o["cart_id"] == placed.cart.as_str())
                    .and_then(|o| o["version"].as_i64())
                    .unwrap_or(0);
                let resting = !row.step.is_active() || row.attention.is_some();
                // A 3-D Secure wait ends by its timeout, so it is not left mid-way.
                let waiting = row.step.as_str() == "await_authentication";
                if !resting || waiting || newest > row.okya_version {
                    unsettled.push(format!(
                        "{} at {} (okya v{} of v{newest})",
                        placed.id, row.step, row.okya_version
                    ));
                }
            }
            if unsettled.is_empty() && self.app().pending_jobs().await == 0 {
                return;
            }
            last = unsettled.join(", ");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the orders never settled: {last}");
    }

    /// What must hold once everything settled.
    async fn check(&self) {
        let app = self.app();
        let okya = app.okya_orders().await;
        for placed in &self.orders {
            let row = app.row(&placed.id).await;
            assert_eq!(
                row.attention, None,
                "order {} needs an operator (observed {:?})",
                placed.id, placed.observed
            );
            // The history the app is shown makes allowed moves only, from a first status
            // an order may start with.
            let history = app
                .order_selecting("statusHistory { status }", &placed.id)
                .await["statusHistory"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let statuses: Vec<OrderStatus> = history
                .iter()
                .map(|h| {
                    OrderStatus::all()
                        .find(|s| h["status"] == s.as_str())
                        .unwrap_or_else(|| panic!("an unknown status in {history:?}"))
                })
                .collect();
            if let Some(first) = statuses.first() {
                assert!(
                    matches!(
                        first,
                        OrderStatus::AwaitingPayment
                            | OrderStatus::AwaitingAcceptance
                            | OrderStatus::PaymentFailed
                    ),
                    "order {} starts at {first}",
                    placed.id
                );
            }
            for pair in statuses.windows(2) {
                assert!(
                    pair[0].can_become(pair[1]),
                    "order {} history {:?}",
                    placed.id,
                    statuses
                );
            }
            assert_eq!(statuses.last().copied().unwrap_or(row.status), row.status);
            // The model: Okya's copy of the order says where ours must be.
            let copy = okya.iter().find(|o| o["cart_id"] == placed.cart.as_str());
            let expected = expected_statuses(copy);
            assert!(
                expected.contains(&row.status.as_str()),
                "order {} is {} but Okya's copy implies {expected:?}: {copy:?} (observed {:?})",
                placed.id,
                row.status,
                placed.observed
            );
        }
        app.assert_money_invariants().await;
    }
}

/// The statuses our order may show, given Okya's copy of it once everything settled.
fn expected_statuses(okya: Option<&Value>) -> Vec<&'static str> {
    let Some(order) = okya else {
        // Never submitted (refused before any Okya order): never shown as anything else.
        return vec!["AWAITING_PAYMENT"];
    };
    match (
        order["status"].as_str(),
        order["cancellation"]["kind"].as_str(),
        order["approval"].as_str(),
        order["fulfilment"].as_str(),
    ) {
        (Some("CANCELED"), Some("cancelled"), _, _) => vec!["PAYMENT_FAILED"],
        (Some("CANCELED"), Some("recalled"), _, _) => vec!["CANCELLED"],
        (Some("CANCELED"), Some("rejected"), _, _) => vec!["REJECTED"],
        (_, _, Some("NEEDS_APPROVAL"), _) => vec!["AWAITING_ACCEPTANCE"],
        (_, _, Some("APPROVED"), Some("COMPLETED")) => vec!["COMPLETED"],
        (_, _, Some("APPROVED"), Some("READY_FOR_PICKUP")) => vec!["READY_FOR_PICKUP"],
        (_, _, Some("APPROVED"), _) => vec!["IN_PREPARATION"],
        _ => vec![],
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Each case starts a service and its simulators: shrink briefly.
        max_shrink_iters: 24,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_runs_of_webhooks_faults_and_restarts_keep_the_order_model(
        (capture, first, commands) in run(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let mut model = Model::start(capture).await;
            model.apply(&Command::Checkout(first, Shop::Pasadena)).await;
            model.observe().await;
            for command in &commands {
                model.apply(command).await;
                model.observe().await;
            }
            model.settle().await;
            model.check().await;
            let counts: BTreeMap<&str, usize> = model.orders.iter().fold(BTreeMap::new(), |mut m, o| {
                *m.entry(o.observed.last().map_or("none", |s| s.as_str())).or_default() += 1;
                m
            });
            tracing::info!(?counts, "a model run ended");
        });
    }
}
