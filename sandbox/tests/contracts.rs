//! The simulators against their contracts' documented examples (`tests/fixtures/`, see its
//! README): each takes every documented request, and answers in the documented shape. The
//! clients' side of the same fixtures is `src/upstream/contract_tests.rs` in cbtl-bff.

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use cbtl_sandbox::{
    contract::{self, same_shape, within},
    credentials, epoint,
    faults::Faults,
    okya::{self, wire},
    signature, stripe,
};
use reqwest::Method;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn fixture(upstream: &str, name: &str) -> Value {
    contract::fixture(upstream, name).unwrap_or_else(|e| panic!("{e}"))
}

fn check(result: Result<(), String>, what: &str) {
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
}

/// Every ```json block of `docs/upstreams/<name>`, in order.
fn examples(name: &str) -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/upstreams/").to_owned() + name;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split("```json\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .map(|block| serde_json::from_str(block).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// The fixture of each example of `docs/upstreams/okya.md`, in the document's order.
const OKYA_EXAMPLES: [&str; 24] = [
    "error.response.json",
    "stores.response.json",
    "products.response.json",
    "create_cart.request.json",
    "create_cart.response.json",
    "add_lines.request.json",
    "add_lines.response.json",
    "update_lines.request.json",
    "remove_lines.request.json",
    "sandbox_faults.request.json",
    "order.response.json",
    "create_order.request.json",
    "add_adjustment.request.json",
    "record_payment.request.json",
    "cancel.request.json",
    "recall.request.json",
    "order_updated.webhook.json",
    "menu_updated.webhook.json",
    "register.request.json",
    "register.response.json",
    "send_otp.request.json",
    "otp_throttled.response.json",
    "verify_otp.request.json",
    "save_loyalty.request.json",
];

#[test]
fn okya_fixtures_are_the_contracts_examples() {
    let examples = examples("okya.md");
    assert_eq!(
        examples.len(),
        OKYA_EXAMPLES.len(),
        "each example of docs/upstreams/okya.md has a fixture"
    );
    for (example, name) in examples.iter().zip(OKYA_EXAMPLES) {
        let fixture = fixture("okya", name);
        if name == "order_updated.webhook.json" {
            // The document elides the order; every field it shows is the fixture's.
            let mut envelope = fixture.clone();
            envelope["data"] = Value::Null;
            let mut shown = example.clone();
            shown["data"] = Value::Null;
            assert_eq!(envelope, shown, "{name}");
            let order = example["data"]["order"].as_object().expect("an order");
            for (key, value) in order.iter().filter(|(key, _)| *key != "…") {
                assert_eq!(&fixture["data"]["order"][key], value, "{name}: {key}");
            }
        } else {
            assert_eq!(&fixture, example, "{name}");
        }
    }
}

#[test]
fn epoint_fixtures_are_the_contracts_examples() {
    let names = [
        "inject.request.json",
        "inject.response.json",
        "status.response.json",
    ];
    let examples = examples("epoint.md");
    assert_eq!(examples.len(), names.len());
    for (example, name) in examples.iter().zip(names) {
        assert_eq!(&fixture("epoint", name), example, "{name}");
    }
}

/// Reads `value` as `T` and writes it back.
fn round_trip<T: DeserializeOwned + Serialize>(value: &Value, what: &str) -> Value {
    let read: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    serde_json::to_value(read).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn the_okya_wire_types_read_every_documented_body_and_write_the_documented_shape() {
    // Requests: each reads (what the handlers do first).
    let okya = |name: &str| fixture("okya", name);
    round_trip::<wire::CreateCart>(&okya("create_cart.request.json"), "create cart");
    round_trip::<wire::AddLines>(&okya("add_lines.request.json"), "add lines");
    round_trip::<wire::UpdateLines>(&okya("update_lines.request.json"), "update lines");
    round_trip::<wire::RemoveLines>(&okya("remove_lines.request.json"), "remove lines");
    round_trip::<wire::CreateOrder>(&okya("create_order.request.json"), "create order");
    round_trip::<wire::NewAdjustment>(&okya("add_adjustment.request.json"), "adjustment");
    round_trip::<wire::NewPayment>(&okya("record_payment.request.json"), "payment");
    round_trip::<wire::Reason>(&okya("cancel.request.json"), "cancel");
    round_trip::<wire::Reason>(&okya("recall.request.json"), "recall");
    round_trip::<wire::NewAccount>(&okya("register.request.json"), "register");
    round_trip::<wire::SendOtp>(&okya("send_otp.request.json"), "send otp");
    round_trip::<wire::VerifyOtp>(&okya("verify_otp.request.json"), "verify otp");
    round_trip::<wire::SaveLoyalty>(&okya("save_loyalty.request.json"), "save loyalty");
    let faults = okya("sandbox_faults.request.json");
    serde_json::from_value::<cbtl_sandbox::faults::FaultUpdate>(faults).expect("faults");

    // Objects: each reads, and writes back with exactly the documented keys.
    let written = |value: &Value, out: Value, what: &str| check(same_shape(value, &out), what);
    let stores = okya("stores.response.json");
    written(
        &stores["stores"],
        round_trip::<Vec<wire::Store>>(&stores["stores"], "stores"),
        "stores",
    );
    let products = okya("products.response.json");
    written(
        &products["products"],
        round_trip::<Vec<wire::Product>>(&products["products"], "products"),
        "products",
    );
    for name in ["create_cart.response.json", "add_lines.response.json"] {
        let cart = okya(name);
        written(&cart, round_trip::<wire::Cart>(&cart, name), name);
    }
    let order = okya("order.response.json");
    written(&order, round_trip::<wire::Order>(&order, "order"), "order");
    let event = okya("order_updated.webhook.json");
    written(
        &event,
        round_trip::<wire::OrderEvent>(&event, "event"),
        "event",
    );
    for name in ["register.response.json", "account.response.json"] {
        let account = &okya(name)["account"];
        written(account, round_trip::<wire::Account>(account, name), name);
    }
}

// ---------------------------------------------------------------------------------------
// Over HTTP
// ---------------------------------------------------------------------------------------

/// What a webhook receiver got: each delivery's headers, raw body and parsed body.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes, Value)>>>;

/// A receiver for webhooks at `/hook`; returns its URL and what it received.
async fn receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(received): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    received
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((headers, body, parsed));
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received, task)
}

/// Waits for a delivery that `pick` accepts.
async fn delivery(received: &Received, pick: impl Fn(&Value) -> bool) -> (HeaderMap, Bytes, Value) {
    for _ in 0..100 {
        let found = received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(_, _, body)| pick(body))
            .cloned();
        if let Some(found) = found {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such delivery");
}

struct Client {
    base: String,
    http: reqwest::Client,
    keys: std::sync::atomic::AtomicU64,
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            keys: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn key(&self) -> String {
        let n = self.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("contract-{n}")
    }

    /// An Okya call with the sandbox key and a fresh `Idempotency-Key`.
    async fn okya(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(credentials::OKYA_API_KEY)
            .header("Idempotency-Key", self.key());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the simulator answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn the_okya_simulator_takes_every_documented_request_and_answers_in_the_documented_shape() {
    let (hook, received, _receiver) = receiver().await;
    let sim = okya::start(
        okya::OkyaSimConfig {
            webhook_url: Some(hook),
            ..okya::OkyaSimConfig::default()
        },
        Faults::new(0, 0.0),
    )
    .await
    .expect("okya starts");
    let api = Client::new(&sim.base_url);
    let doc = |name: &str| fixture("okya", name);
    let exact = |name: &str, answer: &Value| check(same_shape(&doc(name), answer), name);

    // Catalogue.
    let (status, stores) = api.okya(Method::GET, "/v1/stores", None).await;
    assert_eq!(status, 200);
    exact("stores.response.json", &stores);
    let (status, products) = api
        .okya(Method::GET, "/v1/products?ids=prd_cortado", None)
        .await;
    assert_eq!(status, 200);
    exact("products.response.json", &products);

    // A cart as the document builds it: its totals are the document's too.
    let cart = |answer: &Value| answer["id"].as_str().expect("a cart id").to_owned();
    let line = |answer: &Value, product: &str| {
        answer["lines"]
            .as_array()
            .and_then(|lines| lines.iter().find(|l| l["product_id"] == product))
            .and_then(|l| l["id"].as_str())
            .expect("a line")
            .to_owned()
    };
    let documented_cart = || async {
        let (status, created) = api
            .okya(
                Method::POST,
                "/v1/carts",
                Some(&doc("create_cart.request.json")),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        exact("create_cart.response.json", &created);
        let id = cart(&created);
        let (status, added) = api
            .okya(
                Method::POST,
                &format!("/v1/carts/{id}/lines"),
                Some(&doc("add_lines.request.json")),
            )
            .await;
        assert_eq!(status, 200, "{added}");
        exact("add_lines.response.json", &added);
        let documented = doc("add_lines.response.json");
        for total in ["subtotal", "discount", "tax", "total"] {
            assert_eq!(added[total], documented[total], "{total}");
        }
        (id, added)
    };
    let (first, added) = documented_cart().await;
    // The document's PATCH takes the latte to one, which makes the order example's basket.
    let mut update = doc("update_lines.request.json");
    update["lines"][0]["line_id"] = json!(line(&added, "prd_latte"));
    let (status, updated) = api
        .okya(
            Method::PATCH,
            &format!("/v1/carts/{first}/lines"),
            Some(&update),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    exact("add_lines.response.json", &updated);
    let (second, added) = documented_cart().await;
    let mut remove = doc("remove_lines.request.json");
    remove["line_ids"][0] = json!(line(&added, "prd_croissant"));
    let (status, removed) = api
        .okya(
            Method::POST,
            &format!("/v1/carts/{second}/lines/remove"),
            Some(&remove),
        )
        .await;
    assert_eq!(status, 200, "{removed}");
    exact("add_lines.response.json", &removed);
    // The refusal the document shows, exactly: a latte without a size.
    let (status, refused) = api
        .okya(
            Method::POST,
            &format!("/v1/carts/{second}/lines"),
            Some(&json!({"lines": [{"product_id": "prd_latte", "quantity": 1}]})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(refused, doc("error.response.json"));

    // Orders: the first cart is the order example's basket.
    let submit = |cart: String| {
        let mut body = doc("create_order.request.json");
        body["cart_id"] = json!(cart);
        body
    };
    let (status, order) = api
        .okya(Method::POST, "/v1/orders", Some(&submit(first)))
        .await;
    assert_eq!(status, 201, "{order}");
    exact("order.response.json", &order);
    let documented = doc("order.response.json");
    for total in ["subtotal", "discount", "tax", "total"] {
        assert_eq!(order[total], documented[total], "{total}");
    }
    let order_id = order["id"].as_str().expect("an order id").to_owned();
    let (status, paid) = api
        .okya(
            Method::POST,
            &format!("/v1/orders/{order_id}/payments"),
            Some(&doc("record_payment.request.json")),
        )
        .await;
    assert_eq!(status, 200, "{paid}");
    exact("order.response.json", &paid);
    let webhook = doc("order_updated.webhook.json");
    check(
        same_shape(&webhook["data"]["order"]["payment"], &paid["payment"]),
        "payment",
    );
    let (status, accepted) = api
        .okya(
            Method::POST,
            &format!("/_sandbox/orders/{order_id}/accept"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{accepted}");
    let (status, recalled) = api
        .okya(
            Method::POST,
            &format!("/v1/orders/{order_id}/recall"),
            Some(&doc("recall.request.json")),
        )
        .await;
    assert_eq!(status, 200, "{recalled}");
    exact("order.response.json", &recalled);
    // "The order object": `{"kind": …, "reason": "…", "at": "<RFC 3339>"}`.
    let cancellation = json!({"kind": "recalled", "reason": "…", "at": "2026-11-25T11:07:00Z"});
    check(
        same_shape(&cancellation, &recalled["cancellation"]),
        "cancellation",
    );

    // The adjustment example on the order example: the totals the document works out.
    let (third, added) = documented_cart().await;
    update["lines"][0]["line_id"] = json!(line(&added, "prd_latte"));
    api.okya(
        Method::PATCH,
        &format!("/v1/carts/{third}/lines"),
        Some(&update),
    )
    .await;
    let (_, order) = api
        .okya(Method::POST, "/v1/orders", Some(&submit(third)))
        .await;
    let order_id = order["id"].as_str().expect("an order id").to_owned();
    let (status, adjusted) = api
        .okya(
            Method::POST,
            &format!("/v1/orders/{order_id}/adjustments"),
            Some(&doc("add_adjustment.request.json")),
        )
        .await;
    assert_eq!(status, 200, "{adjusted}");
    exact("order.response.json", &adjusted);
    for (total, amount) in [("discount", 625), ("tax", 36), ("total", 386)] {
        assert_eq!(adjusted[total]["amount"], amount, "{total}");
    }
    // "{"id": "adj_…", "source", "reference", "description", "amount", "created_at"}".
    let mut adjustment = doc("add_adjustment.request.json");
    adjustment["id"] = json!("adj_…");
    adjustment["created_at"] = json!("2026-11-25T11:06:01Z");
    check(
        same_shape(&adjustment, &adjusted["adjustments"][0]),
        "adjustment",
    );
    let (status, cancelled) = api
        .okya(
            Method::POST,
            &format!("/v1/orders/{order_id}/cancel"),
            Some(&doc("cancel.request.json")),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    exact("order.response.json", &cancelled);

    // The webhook of the accepted order, signed as the contract says.
    let (headers, raw, event) = delivery(&received, |event| {
        event["data"]["order"]["approval"] == "APPROVED"
            && event["data"]["order"]["fulfilment"] == "IN_PREPARATION"
    })
    .await;
    check(same_shape(&webhook, &event), "order.updated");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header("x-okya-event-id"),
        event["id"].as_str().unwrap_or("?")
    );
    assert_eq!(header("x-okya-event-type"), "order.updated");
    let signed = header("x-okya-signature");
    let timestamp: i64 = signed
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("t=");
    assert_eq!(
        signed,
        signature::header(credentials::OKYA_WEBHOOK_SECRET, timestamp, &raw)
    );

    // Okya Auth, in the order a customer goes through it.
    let (status, registered) = api
        .okya(
            Method::POST,
            "/auth/v1/accounts",
            Some(&doc("register.request.json")),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    exact("register.response.json", &registered);
    let account = registered["account"]["id"].as_str().expect("an account");
    let (status, linked) = api
        .okya(
            Method::PUT,
            &format!("/auth/v1/accounts/{account}/loyalty"),
            Some(&doc("save_loyalty.request.json")),
        )
        .await;
    assert_eq!(status, 200, "{linked}");
    exact("account.response.json", &linked);
    let mut other_provider = doc("save_loyalty.request.json");
    other_provider["provider"] = json!("other");
    let (status, _) = api
        .okya(
            Method::PUT,
            &format!("/auth/v1/accounts/{account}/loyalty"),
            Some(&other_provider),
        )
        .await;
    assert_eq!(status, 400, "only sessionm is a provider");
    let (status, sent) = api
        .okya(
            Method::POST,
            "/auth/v1/otp",
            Some(&doc("send_otp.request.json")),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    exact("otp.response.json", &sent);
    let (status, verified) = api
        .okya(
            Method::POST,
            "/auth/v1/otp/verify",
            Some(&doc("verify_otp.request.json")),
        )
        .await;
    assert_eq!(status, 200, "{verified}");
    exact("account.response.json", &verified);
    assert_eq!(verified["account"]["confirmed"], true);
    let throttled = loop {
        let (status, answer) = api
            .okya(
                Method::POST,
                "/auth/v1/otp",
                Some(&doc("send_otp.request.json")),
            )
            .await;
        if status != 200 {
            assert_eq!(status, 422, "{answer}");
            break answer;
        }
    };
    exact("otp_throttled.response.json", &throttled);

    // The knobs.
    let status = api
        .http
        .put(format!("{}/_sandbox/faults", sim.base_url))
        .json(&doc("sandbox_faults.request.json"))
        .send()
        .await
        .expect("faults")
        .status();
    assert_eq!(status, 204);
}

#[tokio::test]
async fn the_epoint_simulator_takes_the_documented_order_and_answers_in_the_documented_shape() {
    let sim = epoint::start(epoint::EpointSimConfig::default(), Faults::new(0, 0.0))
        .await
        .expect("epoint starts");
    let http = reqwest::Client::new();
    let doc = |name: &str| fixture("epoint", name);
    let call = |method: Method, path: &str, key: Option<&str>, body: Option<&Value>| {
        let mut request = http
            .request(method, format!("{}{path}", sim.base_url))
            .header("X-Api-Key", credentials::EPOINT_API_KEY);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        async move {
            let response = request.send().await.expect("the simulator answers");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let order = doc("inject.request.json");
    let (status, receipt) = call(
        Method::POST,
        "/v1/locations/loc_1/orders",
        Some("inject-ord_01JH8Z"),
        Some(&order),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    check(
        same_shape(&doc("inject.response.json"), &receipt),
        "receipt",
    );
    let documented = doc("inject.response.json");
    for field in ["external_id", "location_id", "status", "printed"] {
        assert_eq!(receipt[field], documented[field], "{field}");
    }
    let (status, found) = call(
        Method::GET,
        "/v1/locations/loc_1/orders/ord_01JH8Z",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    check(same_shape(&documented, &found), "found");
    let (status, pos) = call(Method::GET, "/v1/locations/loc_1/status", None, None).await;
    assert_eq!(status, 200);
    check(same_shape(&doc("status.response.json"), &pos), "status");
    // The error example names `lines[0].quantity`: an order with a quantity of 0.
    let mut bad = order.clone();
    bad["external_id"] = json!("ord_02");
    bad["lines"][0]["quantity"] = json!(0);
    let (status, refused) = call(
        Method::POST,
        "/v1/locations/loc_1/orders",
        Some("inject-ord_02"),
        Some(&bad),
    )
    .await;
    assert_eq!(status, 422);
    check(same_shape(&doc("error.response.json"), &refused), "error");
    assert_eq!(refused["error"]["field"], "lines[0].quantity");
}

#[tokio::test]
async fn the_stripe_simulator_answers_within_stripes_documented_objects() {
    let (hook, received, _receiver) = receiver().await;
    let sim = stripe::start(
        stripe::StripeSimConfig {
            webhook_url: Some(hook),
            ..stripe::StripeSimConfig::default()
        },
        Faults::new(0, 0.0),
    )
    .await
    .expect("stripe starts");
    let http = reqwest::Client::new();
    let doc = |name: &str| fixture("stripe", name);
    let parameters = doc("parameters.json");
    let documented = |route: &str, form: &[(&str, &str)]| {
        for (name, _) in form {
            assert!(
                contract::documented_parameter(&parameters[route], name),
                "{route}: {name}"
            );
        }
    };
    let keys = std::sync::atomic::AtomicU64::new(0);
    let send = |route: &'static str, path: String, form: &[(&str, &str)]| {
        documented(route, form);
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let get = route.starts_with("GET");
        let url = format!("{}{path}", sim.base_url);
        let mut request = if get {
            http.get(url).query(&form)
        } else {
            let key = keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            http.post(url)
                .header("Idempotency-Key", format!("contract-{key}"))
                .form(&form)
        };
        request = request.bearer_auth(credentials::STRIPE_SECRET_KEY);
        async move {
            let response = request.send().await.expect("the simulator answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let intent = doc("payment_intent.json");
    let charge = doc("charge.json");
    let is_intent = |answer: &Value, what: &str| {
        check(within(answer, &intent), what);
        if answer["latest_charge"].is_object() {
            check(within(&answer["latest_charge"], &charge), what);
        }
        if answer["last_payment_error"].is_object() {
            check(
                within(&answer["last_payment_error"], &doc("error.json")["error"]),
                what,
            );
        }
    };
    let create = |payment_method: &str, capture: &str| {
        send(
            "POST /v1/payment_intents",
            "/v1/payment_intents".to_owned(),
            &[
                ("amount", "1075"),
                ("currency", "usd"),
                ("payment_method", payment_method),
                ("confirm", "true"),
                ("capture_method", capture),
                ("automatic_payment_methods[enabled]", "true"),
                ("automatic_payment_methods[allow_redirects]", "never"),
                ("expand[]", "latest_charge"),
                ("description", "CBTL order"),
                ("metadata[order_id]", "ord_contract"),
            ],
        )
    };

    let (status, paid) = create("pm_card_visa", "automatic").await;
    assert_eq!(status, 200, "{paid}");
    is_intent(&paid, "create");
    assert!(paid["latest_charge"].is_object());
    let id = paid["id"].as_str().expect("an id").to_owned();
    let (status, read) = send(
        "GET /v1/payment_intents/{id}",
        format!("/v1/payment_intents/{id}"),
        &[("expand[]", "latest_charge")],
    )
    .await;
    assert_eq!(status, 200);
    is_intent(&read, "retrieve");
    let (status, found) = send(
        "GET /v1/payment_intents/search",
        "/v1/payment_intents/search".to_owned(),
        &[
            ("query", "metadata['order_id']:'ord_contract'"),
            ("limit", "10"),
            ("expand[]", "data.latest_charge"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    check(within(&found, &doc("search_result.json")), "search");
    is_intent(&found["data"][0], "search");
    let (status, refund) = send(
        "POST /v1/refunds",
        "/v1/refunds".to_owned(),
        &[("payment_intent", &id)],
    )
    .await;
    assert_eq!(status, 200, "{refund}");
    check(within(&refund, &doc("refund.json")), "refund");

    let (status, held) = create("pm_card_visa", "manual").await;
    assert_eq!(status, 200);
    let id = held["id"].as_str().expect("an id").to_owned();
    let (status, captured) = send(
        "POST /v1/payment_intents/{id}/capture",
        format!("/v1/payment_intents/{id}/capture"),
        &[("expand[]", "latest_charge")],
    )
    .await;
    assert_eq!(status, 200, "{captured}");
    is_intent(&captured, "capture");
    let (_, held) = create("pm_card_visa", "manual").await;
    let id = held["id"].as_str().expect("an id").to_owned();
    let (status, cancelled) = send(
        "POST /v1/payment_intents/{id}/cancel",
        format!("/v1/payment_intents/{id}/cancel"),
        &[
            ("cancellation_reason", "abandoned"),
            ("expand[]", "latest_charge"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    is_intent(&cancelled, "cancel");

    // A decline: Stripe's error object, carrying the intent.
    let (status, declined) = create("pm_card_chargeDeclinedInsufficientFunds", "automatic").await;
    assert_eq!(status, 402);
    check(within(&declined, &doc("error.json")), "decline");
    is_intent(&declined["error"]["payment_intent"], "decline");
    let (status, missing) = send(
        "GET /v1/payment_intents/{id}",
        "/v1/payment_intents/pi_missing".to_owned(),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    check(within(&missing, &doc("error.json")), "missing");

    // Events, as delivered.
    let (_, _, event) = delivery(&received, |event| {
        event["type"] == "payment_intent.succeeded"
    })
    .await;
    check(within(&event, &doc("event.json")), "event");
    is_intent(&event["data"]["object"], "event");
}
