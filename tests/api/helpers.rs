//! `spawn_app` and a small typed client, in the manner of zero2prod: the service with its
//! simulators and a fresh database, a customer, the GraphQL and websockets the app speaks,
//! and what the simulators were sent and hold. Orders have their own helpers in `shop`.

use crate::routes::Route;
use cbtl_bff::{app::Application, config::Settings};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio_tungstenite::tungstenite::Message;

/// A client websocket, as the tests open them.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub enum Db {
    Sqlite,
    Postgres,
}

/// Where the local PostgreSQL answers; a fresh database is made per test.
fn postgres_admin_url() -> String {
    std::env::var("CBTL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that disappears with the test.
pub enum TestDb {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub async fn new(kind: Db) -> (Self, String) {
        match kind {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                (TestDb::Sqlite(dir), url)
            }
            Db::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("cbtl_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("PostgreSQL must be running for these tests");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(&admin_url)
                    .to_owned();
                let url = format!("{base}/{name}");
                (TestDb::Postgres { admin_url, name }, url)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; a thread with its own runtime can block.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub app: Application,
    pub url: String,
    pub http: reqwest::Client,
    pub db: Option<TestDb>,
    /// The bearer token `gql` sends, if any.
    pub token: std::sync::Mutex<Option<String>>,
}

/// A customer signed in through the real Create Account flow.
#[derive(Clone, Debug)]
pub struct Customer {
    pub id: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// Test settings: random port, no automatic store acceptance unless asked, and rate limits
/// out of the way (every test's customers come from 127.0.0.1, many of them at once);
/// `rate_limits.rs` sets its own.
pub fn test_settings(database_url: String) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        database_url,
        rate_limits: unlimited(),
        ..Settings::default()
    }
}

/// Rate limits no test reaches by accident.
pub fn unlimited() -> cbtl_bff::config::RateLimitSettings {
    use cbtl_bff::config::Rate;
    let high = Rate::new(1_000_000, 1_000_000);
    cbtl_bff::config::RateLimitSettings {
        trusted_proxies: Vec::new(),
        otp_send_per_address: high,
        otp_verify_per_phone: high,
        otp_verify_per_address: high,
        checkout_per_customer: high,
        checkout_per_address: high,
        declines_per_customer: high,
        declines_per_address: high,
    }
}

/// A running app with a signed-in customer whose token `gql` sends.
pub async fn spawn_app() -> TestApp {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    app.sign_up_and_use("+16265550100", "ada@example.com").await;
    app
}

pub async fn spawn_app_with(kind: Db, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (db, url) = TestDb::new(kind).await;
    let mut settings = test_settings(url);
    tweak(&mut settings);
    let mut app = spawn_with_settings(settings).await;
    app.db = Some(db);
    app
}

pub async fn spawn_with_settings(settings: Settings) -> TestApp {
    // Logs go to the captured output, shown when a test fails.
    cbtl_bff::telemetry::init_for_tests();
    let app = cbtl_bff::app::build(settings)
        .await
        .unwrap_or_else(|e| panic!("app starts: {e}"));
    test_app(app)
}

/// Starts an incarnation of the service on `port`, which the test holds for all of them.
pub async fn spawn_on(settings: Settings, port: &Port) -> TestApp {
    cbtl_bff::telemetry::init_for_tests();
    let app = cbtl_bff::app::build_on(settings, port.handle())
        .await
        .unwrap_or_else(|e| panic!("app starts: {e}"));
    test_app(app)
}

fn test_app(app: Application) -> TestApp {
    let url = app.url();
    TestApp {
        app,
        url,
        http: reqwest::Client::new(),
        db: None,
        token: std::sync::Mutex::new(None),
    }
}

/// An upstream, as the tests reach its simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sim {
    Okya,
    Stripe,
    Epoint,
    Sessionm,
}

/// `accountRegister` with `$i` as its input and the whole customer selected.
pub const REGISTER: &str = "mutation($i: AccountRegisterInput!) { accountRegister(input: $i) { customer { id email phone firstName lastName confirmed } userErrors { code field message } } }";
const CONFIRM: &str = "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { customer { id confirmed } accessToken accessTokenExpiresAt refreshToken userErrors { code field message } } }";
const LOYALTY: &str = "{ me { loyalty { pointsBalance } } }";
const ADD_LINES: &str = "mutation($c: ID!, $l: [CartLineInput!]!) { cartLinesAdd(cartId: $c, lines: $l) { userErrors { code message } } }";

/// GraphQL, as the app sends it.
impl TestApp {
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.url)
    }

    pub fn use_token(&self, token: Option<&str>) {
        *self.token.lock().unwrap() = token.map(str::to_owned);
    }

    /// The bearer token `gql` sends, if any.
    pub fn token(&self) -> Option<String> {
        self.token.lock().unwrap().clone()
    }

    /// Sends a GraphQL request the way the app does and returns the JSON body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let token = self.token();
        self.gql_as(token.as_deref(), query, variables).await
    }

    /// Sends a GraphQL request with the given bearer token (or none).
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(self.graphql_url())
            .header("content-type", "application/json")
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), 200, "GraphQL over HTTP status");
        response.json().await.expect("JSON body")
    }

    /// Like `gql`, but asserts there are no GraphQL errors and returns `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }
}

/// Customers: Create Account, sign-in and the SessionM link.
impl TestApp {
    /// `accountRegister` for Ada Lovelace with this phone and email, sent anonymously: the
    /// whole response body.
    pub async fn register(&self, phone: &str, email: &str) -> Value {
        let input =
            json!({"email": email, "phone": phone, "firstName": "Ada", "lastName": "Lovelace"});
        self.gql_as(None, REGISTER, json!({"i": input})).await
    }

    /// `accountConfirm` of `phone` with `code`, sent anonymously: the whole response body.
    pub async fn confirm(&self, phone: &str, code: &str) -> Value {
        self.gql_as(None, CONFIRM, json!({"i": {"phone": phone, "code": code}}))
            .await
    }

    /// The last code the Okya simulator sent to `phone`.
    pub async fn last_code(&self, phone: &str) -> String {
        self.sent_codes(phone).await.pop().expect("a code was sent")
    }

    /// Registers and confirms a customer through the API, as the app would.
    pub async fn sign_up(&self, phone: &str, email: &str) -> Customer {
        let registered = self.register(phone, email).await;
        assert_eq!(
            registered["data"]["accountRegister"]["userErrors"],
            json!([]),
            "{registered}"
        );
        let code = self.last_code(phone).await;
        let confirmed = self.confirm(phone, &code).await;
        let payload = &confirmed["data"]["accountConfirm"];
        assert_eq!(payload["userErrors"], json!([]), "{confirmed}");
        Customer {
            id: payload["customer"]["id"].as_str().expect("id").to_owned(),
            access_token: payload["accessToken"].as_str().expect("token").to_owned(),
            refresh_token: payload["refreshToken"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        }
    }

    /// Signs a customer up, as [`TestApp::sign_up`], and makes them the one `gql` speaks for.
    pub async fn sign_up_and_use(&self, phone: &str, email: &str) -> Customer {
        let customer = self.sign_up(phone, email).await;
        self.use_token(Some(&customer.access_token));
        customer
    }

    /// Signs a customer up, as [`TestApp::sign_up`], and waits for their SessionM link.
    pub async fn member(&self, phone: &str, email: &str) -> Customer {
        let customer = self.sign_up(phone, email).await;
        self.wait_for_link(&customer.access_token).await;
        customer
    }

    /// Confirms an already registered phone with the code it was sent; returns the token.
    pub async fn sign_up_confirm_only(&self, phone: &str) -> String {
        let code = self.last_code(phone).await;
        let confirmed = self.confirm(phone, &code).await;
        assert_eq!(
            confirmed["data"]["accountConfirm"]["userErrors"],
            json!([]),
            "{confirmed}"
        );
        confirmed["data"]["accountConfirm"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Waits until the customer whose token this is has a loyalty account: the SessionM
    /// link, which the service makes in the background, is done. Meanwhile `me` answers
    /// without errors (no loyalty account yet is `null`, not an error).
    pub async fn wait_for_link(&self, token: &str) {
        self.eventually("the SessionM link", || async {
            let body = self.gql_as(Some(token), LOYALTY, json!({})).await;
            assert!(body.get("errors").is_none(), "unexpected errors: {body}");
            body["data"]["me"]["loyalty"].is_object()
        })
        .await;
    }

    /// The signed-in customer's points balance.
    pub async fn points_balance(&self) -> Value {
        self.data(LOYALTY, json!({})).await["me"]["loyalty"]["pointsBalance"].clone()
    }
}

/// Carts.
impl TestApp {
    /// Creates a cart at an open store and returns its id.
    pub async fn new_cart(&self, store_id: &str) -> String {
        let data = self
            .data(
                "mutation($s: ID!) { cartCreate(input: {storeId: $s}) { cart { id } userErrors { code } } }",
                json!({"s": store_id}),
            )
            .await;
        assert_eq!(data["cartCreate"]["userErrors"], json!([]));
        data["cartCreate"]["cart"]["id"]
            .as_str()
            .expect("cart id")
            .to_owned()
    }

    /// Adds `lines` (a list of `CartLineInput`s) to the cart, which must take them.
    pub async fn add_lines(&self, cart: &str, lines: Value) {
        let added = self.data(ADD_LINES, json!({"c": cart, "l": lines})).await;
        assert_eq!(added["cartLinesAdd"]["userErrors"], json!([]), "{added}");
    }

    /// A new cart at `store` with `lines` in it.
    pub async fn cart_with(&self, store: &str, lines: Value) -> String {
        let cart = self.new_cart(store).await;
        self.add_lines(&cart, lines).await;
        cart
    }
}

/// Waiting for the service's background work.
impl TestApp {
    /// Polls until `check` holds, for work the service finishes in the background.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..100 {
            if check().await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// How many jobs are waiting to run (or running) in the service's queue.
    pub async fn pending_jobs(&self) -> i64 {
        cbtl_bff::store::jobs::count(&self.app.state().db, cbtl_bff::store::jobs::PENDING)
            .await
            .expect("jobs")
    }

    /// `/readyz`'s body; it answers 200.
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
}

/// The simulators: their `/_sandbox` routes, call logs, faults and ledgers.
impl TestApp {
    pub fn sim_url(&self, sim: Sim) -> String {
        let sandbox = self.app.sandbox();
        // SessionM's admin routes (ledger, faults, call log) are on its POS host.
        let simulator = match sim {
            Sim::Okya => sandbox.okya.as_ref(),
            Sim::Stripe => sandbox.stripe.as_ref(),
            Sim::Epoint => sandbox.epoint.as_ref(),
            Sim::Sessionm => sandbox.sessionm.as_ref().map(|s| &s.pos),
        };
        let settings = &self.app.state().settings;
        let configured = match sim {
            Sim::Okya => &settings.okya.base_url,
            Sim::Stripe => &settings.stripe.base_url,
            Sim::Epoint => &settings.epoint.base_url,
            Sim::Sessionm => &settings.sessionm.pos_url,
        };
        // A simulator the test started itself is reached through the configured URL.
        simulator
            .map(|s| s.base_url.clone())
            .or_else(|| configured.clone())
            .expect("a simulator for this upstream")
    }

    /// `GET /_sandbox/{path}` of the simulator: its JSON answer.
    pub async fn sandbox_get(&self, sim: Sim, path: &str) -> Value {
        self.http
            .get(format!("{}/_sandbox/{path}", self.sim_url(sim)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /_sandbox/{path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET /_sandbox/{path} JSON: {e}"))
    }

    /// Sends `body` to `/_sandbox/{path}` of the simulator, which must take it.
    pub async fn sandbox(&self, method: reqwest::Method, sim: Sim, path: &str, body: Value) {
        let status = self
            .http
            .request(
                method.clone(),
                format!("{}/_sandbox/{path}", self.sim_url(sim)),
            )
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} /_sandbox/{path}: {e}"))
            .status();
        assert!(status.is_success(), "{method} /_sandbox/{path}: {status}");
    }

    /// Calls per route the simulator received.
    pub async fn calls(&self, sim: Sim) -> BTreeMap<String, u64> {
        serde_json::from_value(self.sandbox_get(sim, "calls").await).expect("calls JSON")
    }

    /// How many calls the route's simulator received on it.
    pub async fn call_count(&self, route: Route) -> u64 {
        self.calls(route.sim)
            .await
            .get(route.name)
            .copied()
            .unwrap_or(0)
    }

    /// The most requests the simulator handled at once since its calls were last reset.
    pub async fn peak_in_flight(&self, sim: Sim) -> u64 {
        self.sandbox_get(sim, "calls/in_flight").await["peak"]
            .as_u64()
            .expect("in_flight JSON")
    }

    pub async fn reset_calls(&self, sim: Sim) {
        self.http
            .delete(format!("{}/_sandbox/calls", self.sim_url(sim)))
            .send()
            .await
            .expect("reset calls");
    }

    /// The requests the route's simulator received on it, oldest first, faulted ones
    /// included.
    pub async fn log(&self, route: Route) -> Vec<Value> {
        self.http
            .get(format!("{}/_sandbox/calls/log", self.sim_url(route.sim)))
            .query(&[("route", route.name)])
            .send()
            .await
            .expect("call log")
            .json()
            .await
            .expect("call log JSON")
    }

    /// Every request to `route` carried the same idempotency key, and there were at least
    /// `at_least` of them: a retry, whatever answer it followed, repeated the first try.
    pub async fn assert_one_key(&self, route: Route, at_least: usize) -> String {
        let log = self.log(route).await;
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

    /// Changes the simulator's faults (`/_sandbox/faults`): latency, error rate, or the
    /// faults of the next calls of a route, for which the methods below read better.
    pub async fn faults(&self, sim: Sim, update: Value) {
        self.sandbox(reqwest::Method::PUT, sim, "faults", update)
            .await;
    }

    /// The next `times` calls of `route` fail with a 503 before doing anything.
    pub async fn fail_next(&self, route: Route, times: u64) {
        self.faults(route.sim, json!({"fail_next": {route.name: times}}))
            .await;
    }

    /// The next `times` calls of `route` are refused with `status` and the upstream's
    /// `code`; 0 times ends a refusal.
    pub async fn refuse_next(&self, route: Route, status: u16, code: &str, times: u32) {
        let refusal = json!({"status": status, "code": code, "times": times});
        self.faults(route.sim, json!({"refuse_next": {route.name: refusal}}))
            .await;
    }

    /// The next `times` calls of `route` are done, then their answer is lost: replaced by
    /// `status` (a status code, `"drop"` for a broken connection, `"garble"`).
    pub async fn lose_next(&self, route: Route, times: u32, status: impl Into<Value>) {
        let loss = json!({"times": times, "status": status.into()});
        self.faults(route.sim, json!({"lose_next": {route.name: loss}}))
            .await;
    }

    /// The next call of `route` is answered after `ms` milliseconds.
    pub async fn slow_next(&self, route: Route, ms: u64) {
        self.faults(route.sim, json!({"slow_next": {route.name: {"ms": ms}}}))
            .await;
    }

    /// What the simulator holds (`/_sandbox/ledger`): Stripe's intents and refunds,
    /// Epoint's tickets, SessionM's members and transactions.
    pub async fn ledger(&self, sim: Sim) -> Value {
        self.sandbox_get(sim, "ledger").await
    }

    /// The codes the Okya simulator "sent" to a phone, oldest first.
    pub async fn sent_codes(&self, phone: &str) -> Vec<String> {
        let body: Value = self
            .http
            .get(format!("{}/_sandbox/outbox", self.sim_url(Sim::Okya)))
            .query(&[("phone", phone)])
            .send()
            .await
            .expect("outbox")
            .json()
            .await
            .expect("outbox JSON");
        body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .expect("the outbox lists messages")
    }

    /// The Okya simulator's own accounts, as another app of Okya's would see them.
    pub async fn okya_accounts(&self) -> Vec<Value> {
        self.sandbox_get(Sim::Okya, "accounts").await["accounts"]
            .as_array()
            .cloned()
            .expect("an account list")
    }

    /// SessionM's members with this email.
    pub async fn sessionm_users(&self, email: &str) -> Vec<Value> {
        let ledger = self.ledger(Sim::Sessionm).await;
        ledger["users"]
            .as_array()
            .unwrap_or_else(|| panic!("SessionM's users: {ledger}"))
            .iter()
            .filter(|u| u["email"] == email)
            .cloned()
            .collect()
    }
}

/// Websockets to `/graphql`.
impl TestApp {
    /// A websocket to `/graphql` speaking `protocol`, which the service agreed to.
    pub async fn connect_ws(&self, protocol: &str) -> Ws {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
        let mut request = self
            .graphql_url()
            .replace("http://", "ws://")
            .into_client_request()
            .expect("a websocket request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocol).expect("a protocol name"),
        );
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the websocket opens");
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        ws
    }

    /// A graphql-transport-ws socket signed in with `token`, subscribed (operation id
    /// `"s"`) to `orderStatusChanged` of `order_id` with `selection`.
    pub async fn subscribe_to_order(&self, token: &str, order_id: &str, selection: &str) -> Ws {
        let mut ws = self.connect_ws("graphql-transport-ws").await;
        init_ws(&mut ws, json!({"Authorization": format!("Bearer {token}")})).await;
        let query = format!(
            "subscription($o: ID!) {{ orderStatusChanged(orderId: $o) {{ {selection} }} }}"
        );
        send_json(
            &mut ws,
            json!({"id": "s", "type": "subscribe", "payload": {"query": query, "variables": {"o": order_id}}}),
        )
        .await;
        ws
    }
}

/// Sends one JSON message.
pub async fn send_json(ws: &mut Ws, message: Value) {
    use futures_util::SinkExt;
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("a message sent");
}

/// Sends `connection_init` with `payload` and reads the `connection_ack`.
pub async fn init_ws(ws: &mut Ws, payload: Value) {
    send_json(ws, json!({"type": "connection_init", "payload": payload})).await;
    assert_eq!(next_json(ws).await["type"], "connection_ack");
}

/// The next frame but pings and pongs, within 10 s.
pub async fn next_frame(ws: &mut Ws) -> Message {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .expect("the socket open")
            .expect("a valid frame");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next JSON message, skipping pings; any other frame fails the test.
pub async fn next_json(ws: &mut Ws) -> Value {
    match next_frame(ws).await {
        Message::Text(text) => serde_json::from_str(&text).expect("a JSON message"),
        other => panic!("unexpected frame {other:?}"),
    }
}

/// The status in the next `next` message of an `orderStatusChanged` subscription.
pub async fn next_status(ws: &mut Ws) -> String {
    loop {
        let message = next_json(ws).await;
        if message["type"] == "next" {
            return message["payload"]["data"]["orderStatusChanged"]["status"]
                .as_str()
                .expect("a status")
                .to_owned();
        }
    }
}

/// The `userErrors` codes of a mutation payload.
pub fn error_codes(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `extensions.code` of a response's first error; empty when there is none.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// Simulators started by the test itself, so they outlive the service (restarts, several
/// instances), as real upstreams do.
pub struct ExternalUpstreams {
    pub okya: cbtl_sandbox::Simulator,
    pub stripe: cbtl_sandbox::Simulator,
    pub epoint: cbtl_sandbox::Simulator,
    pub sessionm: cbtl_sandbox::sessionm::SessionmSandbox,
}

/// A SessionM simulator with the sandbox credentials and one store per Okya sandbox store.
pub async fn sessionm_simulator(
    faults: std::sync::Arc<cbtl_sandbox::faults::Faults>,
) -> cbtl_sandbox::sessionm::SessionmSandbox {
    use cbtl_bff::config::sandbox_credentials as creds;
    use cbtl_sandbox::{okya, sessionm};
    sessionm::start(
        sessionm::SessionmSimConfig {
            api_key: creds::SESSIONM_API_KEY.to_owned(),
            api_secret: creds::SESSIONM_API_SECRET.to_owned(),
            pos_api_key: creds::SESSIONM_POS_API_KEY.to_owned(),
            pos_api_secret: creds::SESSIONM_POS_API_SECRET.to_owned(),
            client_id: cbtl_bff::config::SessionmSettings::default().client_id,
            okya_store_ids: okya::catalog::store_ids(),
        },
        faults,
    )
    .await
    .expect("sessionm simulator")
}

/// Points `settings` at a SessionM simulator the test started, as a real SessionM is
/// configured: both hosts, and its store for each Okya store.
pub fn configure_sessionm(settings: &mut Settings, sim: &cbtl_sandbox::sessionm::SessionmSandbox) {
    settings.sessionm.core_url = Some(sim.core.base_url.clone());
    settings.sessionm.pos_url = Some(sim.pos.base_url.clone());
    settings.sessionm.store_ids = sim.store_ids.clone();
    settings.sessionm.ecommerce_store_id = Some(sim.ecommerce_store_id.clone());
}

impl ExternalUpstreams {
    /// Okya's webhooks go to the service on `app_port`; `str_burbank`'s POS is offline.
    pub async fn start(app_port: u16) -> Self {
        use cbtl_sandbox::{epoint, faults::Faults, okya, stripe};
        let okya = okya::start(
            okya::OkyaSimConfig {
                webhook_url: Some(format!("http://127.0.0.1:{app_port}/webhooks/okya")),
                webhook_secret: "whsec_okya_sandbox".to_owned(),
                ..okya::OkyaSimConfig::default()
            },
            Faults::new(0, 0.0),
        )
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
        Self {
            okya,
            stripe,
            epoint,
            sessionm,
        }
    }

    /// Points `settings` at these simulators, with the keys real upstreams would need.
    pub fn configure(&self, settings: &mut Settings) {
        settings.okya.base_url = Some(self.okya.base_url.clone());
        settings.stripe.base_url = Some(self.stripe.base_url.clone());
        settings.stripe.secret_key = "sk_test_external_simulators".to_owned().into();
        settings.epoint.base_url = Some(self.epoint.base_url.clone());
        configure_sessionm(settings, &self.sessionm);
        settings.auth.jwt_secret = "a-shared-signing-key-of-at-least-32-bytes"
            .to_owned()
            .into();
    }
}

/// The world a service runs in when it must be stopped and started again, or run twice:
/// upstreams that outlive it, as real ones do, its database, and the port every
/// incarnation of it listens on (Okya's webhooks are sent there).
pub struct World {
    pub upstreams: ExternalUpstreams,
    /// The settings every incarnation starts with.
    pub settings: Settings,
    pub port: Port,
    _db: TestDb,
}

impl World {
    /// Starts the upstreams and makes the database; `tweak` adjusts the settings.
    pub async fn start(kind: Db, tweak: impl FnOnce(&mut Settings)) -> Self {
        let port = Port::bind();
        let upstreams = ExternalUpstreams::start(port.number()).await;
        let (db, url) = TestDb::new(kind).await;
        let mut settings = test_settings(url);
        upstreams.configure(&mut settings);
        tweak(&mut settings);
        World {
            upstreams,
            settings,
            port,
            _db: db,
        }
    }

    /// An incarnation of the service on the world's port.
    pub async fn spawn(&self) -> TestApp {
        spawn_on(self.settings.clone(), &self.port).await
    }
}

/// An Okya simulator the test starts itself, with the sandbox key and a fixed code, so it
/// outlives the service as the real Okya would.
pub async fn okya_simulator() -> cbtl_sandbox::Simulator {
    use cbtl_sandbox::{faults::Faults, okya};
    okya::start(okya::OkyaSimConfig::default(), Faults::new(0, 0.0))
        .await
        .expect("okya simulator")
}

/// A port the test binds once and keeps, so the service can be stopped and started again
/// on it (upstream simulators send webhooks to it) without a moment in which another
/// process could take it: a port merely checked free and bound later can be.
///
/// Each incarnation serves on a handle to the same listening socket. Between two
/// incarnations the socket stays open, so connections made then wait in its backlog for
/// the next incarnation (as behind a supervisor that holds the socket) rather than being
/// refused; an upstream's delivery retries cover either.
pub struct Port {
    listener: std::net::TcpListener,
}

impl Port {
    pub fn bind() -> Self {
        Self {
            listener: std::net::TcpListener::bind("127.0.0.1:0").expect("a port"),
        }
    }

    pub fn number(&self) -> u16 {
        self.listener.local_addr().expect("a bound port").port()
    }

    /// A handle on the socket for one incarnation; the socket closes when the last
    /// handle (this `Port`'s included) is dropped.
    pub fn handle(&self) -> std::net::TcpListener {
        self.listener.try_clone().expect("a handle on the listener")
    }
}
