//! `spawn_app` and a small typed client, in the manner of zero2prod.

use cbtl_bff::{app::Application, config::Settings};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use std::collections::BTreeMap;

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

/// Test settings: random port, no automatic store acceptance unless asked.
pub fn test_settings(database_url: String) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        database_url,
        ..Settings::default()
    }
}

/// A running app with a signed-in customer whose token `gql` sends.
pub async fn spawn_app() -> TestApp {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    let customer = app.sign_up("+16265550100", "ada@example.com").await;
    app.use_token(Some(&customer.access_token));
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

#[derive(Clone, Copy)]
#[allow(dead_code)] // Stripe's and Epoint's ledgers are read once checkout exists.
pub enum Sim {
    Okya,
    Stripe,
    Epoint,
    Sessionm,
}

impl TestApp {
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.url)
    }

    /// A graphql-transport-ws socket signed in with `token`, subscribed (operation id
    /// `"s"`) to `orderStatusChanged` of `order_id` with `selection`.
    pub async fn subscribe_to_order(&self, token: &str, order_id: &str, selection: &str) -> Ws {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::{
            Message, client::IntoClientRequest, http::HeaderValue,
        };
        let mut request = self
            .graphql_url()
            .replace("http://", "ws://")
            .into_client_request()
            .expect("a websocket request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the websocket opens");
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        ws.send(Message::Text(init.to_string().into()))
            .await
            .expect("connection_init");
        let query = format!(
            "subscription($o: ID!) {{ orderStatusChanged(orderId: $o) {{ {selection} }} }}"
        );
        let subscribe = json!({"id": "s", "type": "subscribe", "payload": {"query": query, "variables": {"o": order_id}}});
        ws.send(Message::Text(subscribe.to_string().into()))
            .await
            .expect("subscribe");
        ws
    }

    pub fn use_token(&self, token: Option<&str>) {
        *self.token.lock().unwrap() = token.map(str::to_owned);
    }

    /// Sends a GraphQL request the way the app does and returns the JSON body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let token = self.token.lock().unwrap().clone();
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

    /// Calls per route the simulator received.
    pub async fn calls(&self, sim: Sim) -> BTreeMap<String, u64> {
        self.http
            .get(format!("{}/_sandbox/calls", self.sim_url(sim)))
            .send()
            .await
            .expect("calls")
            .json()
            .await
            .expect("calls JSON")
    }

    pub async fn call_count(&self, sim: Sim, route: &str) -> u64 {
        self.calls(sim).await.get(route).copied().unwrap_or(0)
    }

    pub async fn reset_calls(&self, sim: Sim) {
        self.http
            .delete(format!("{}/_sandbox/calls", self.sim_url(sim)))
            .send()
            .await
            .expect("reset calls");
    }

    pub async fn faults(&self, sim: Sim, update: Value) {
        let status = self
            .http
            .put(format!("{}/_sandbox/faults", self.sim_url(sim)))
            .json(&update)
            .send()
            .await
            .expect("faults")
            .status();
        assert!(status.is_success());
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
            .unwrap_or_default()
    }

    /// Registers and confirms a customer through the API, as the app would.
    pub async fn sign_up(&self, phone: &str, email: &str) -> Customer {
        let registered = self
            .gql_as(
                None,
                "mutation($i: AccountRegisterInput!) { accountRegister(input: $i) { customer { id } userErrors { code message } } }",
                json!({"i": {"email": email, "phone": phone, "firstName": "Ada", "lastName": "Lovelace"}}),
            )
            .await;
        assert_eq!(
            registered["data"]["accountRegister"]["userErrors"],
            json!([]),
            "{registered}"
        );
        let code = self.sent_codes(phone).await.pop().expect("a code was sent");
        let confirmed = self
            .gql_as(
                None,
                "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { customer { id } accessToken refreshToken userErrors { code } } }",
                json!({"i": {"phone": phone, "code": code}}),
            )
            .await;
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

    /// Confirms an already registered phone with the code it was sent; returns the token.
    pub async fn sign_up_confirm_only(&self, phone: &str) -> String {
        let code = self.sent_codes(phone).await.pop().expect("a code was sent");
        let confirmed = self
            .gql_as(
                None,
                "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { accessToken userErrors { code } } }",
                json!({"i": {"phone": phone, "code": code}}),
            )
            .await;
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

    pub async fn ledger(&self, sim: Sim) -> Value {
        self.http
            .get(format!("{}/_sandbox/ledger", self.sim_url(sim)))
            .send()
            .await
            .expect("ledger")
            .json()
            .await
            .expect("ledger JSON")
    }

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
