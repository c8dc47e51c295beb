//! A service started with exactly the environment the `cbtl-sandbox` binary prints works
//! against the stand-alone simulators, as an app team's staging service would: it starts
//! (so none of the printed credentials is a refused sandbox value, and SessionM knows every
//! Okya store), lists the stores from the binary's Okya, signs a customer up (Okya Auth,
//! SessionM), and takes an order through Stripe, Okya's signed webhook and Epoint.
//!
//! Both are separate processes. A test of this package cannot name another package's
//! binary (`CARGO_BIN_EXE_…` covers only its own), so the sandbox's binary is found where
//! cargo puts it, next to this test's own directory (`target/<profile>/cbtl-sandbox`);
//! `cargo test --workspace` builds it, and it is built here when it is missing or older
//! than its sources.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};
use tokio::process::{Child, Command};

/// The newest modification time under `path`.
fn newest(path: &Path) -> SystemTime {
    let own = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if !path.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .expect("a sandbox folder")
        .map(|entry| newest(&entry.expect("an entry").path()))
        .fold(own, SystemTime::max)
}

/// `target/<profile>/cbtl-sandbox`, built first if it is missing or stale.
pub fn sandbox_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("this test's path");
        // target/<profile>/deps/api-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the profile directory");
        let binary = profile_dir.join(format!("cbtl-sandbox{}", std::env::consts::EXE_SUFFIX));
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox");
        let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
        if built.is_none_or(|built| built < newest(&sources)) {
            let profile = profile_dir
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a profile name");
            let profile = if profile == "debug" { "dev" } else { profile };
            let target_dir = profile_dir.parent().expect("the target directory");
            let status = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()),
            )
            .args([
                "build",
                "--package",
                "cbtl-sandbox",
                "--bin",
                "cbtl-sandbox",
            ])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("cargo runs");
            assert!(status.success(), "cargo build -p cbtl-sandbox");
        }
        binary
    })
}

/// Starts the stand-alone simulators on free ports, delivering webhooks to `app_url`, and
/// reads the environment they print.
pub(crate) async fn start_sandbox(app_url: &str) -> (Child, BTreeMap<String, String>) {
    let mut command = Command::new(sandbox_binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("SANDBOX_") {
            command.env_remove(key);
        }
    }
    for flag in [
        "--okya-addr",
        "--stripe-addr",
        "--epoint-addr",
        "--sessionm-core-addr",
        "--sessionm-pos-addr",
    ] {
        command.args([flag, "127.0.0.1:0"]);
    }
    let mut child = command
        .args(["--app-url", app_url, "--auto-accept-delay-ms", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cbtl-sandbox starts");
    let stdout = child.stdout.take().expect("stdout");
    let env = tokio::time::timeout(
        Duration::from_secs(30),
        cbtl_sandbox::service_env::read(stdout),
    )
    .await
    .expect("the environment is printed in time")
    .expect("the environment is printed");
    (child, env)
}

/// cbtl-bff with only `env` (and its own database and address) for settings, logging to
/// `log`.
fn start_service(
    env: &BTreeMap<String, String>,
    listen: &str,
    database: &Path,
    log: &Path,
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cbtl-bff"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CBTL_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command
        .envs(env)
        .env("CBTL_LISTEN_ADDR", listen)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", database.display()),
        )
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("cbtl-bff starts")
}

pub(crate) struct Service {
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
}

impl Service {
    pub(crate) async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body: Value = request
            .send()
            .await
            .expect("the service answers")
            .json()
            .await
            .expect("JSON");
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// Asks `query` until `done` holds of its data, for at most 30 s.
    pub(crate) async fn until(
        &self,
        token: &str,
        query: &str,
        variables: Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let data = self.gql(Some(token), query, variables.clone()).await;
            if done(&data) {
                return data;
            }
            assert!(Instant::now() < deadline, "still {data}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub(crate) async fn ledger(url: &str, path: &str) -> Value {
    reqwest::get(format!("{url}/_sandbox/{path}"))
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn a_service_started_with_the_printed_environment_works_against_the_stand_alone_simulators() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let app_url = format!("http://127.0.0.1:{port}");
    let (_sandbox, env) = start_sandbox(&app_url).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("service.log");
    let mut service = start_service(
        &env,
        &format!("127.0.0.1:{port}"),
        &dir.path().join("cbtl.db"),
        &log,
    );
    let app = Service {
        url: app_url,
        http: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = service.try_wait() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the service stopped ({status}): {log}");
        }
        let ready = app.http.get(format!("{}/readyz", app.url)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the service is not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let okya = &env["CBTL_OKYA__BASE_URL"];
    let calls_before = ledger(okya, "calls").await["GET /v1/stores"]
        .as_u64()
        .unwrap_or(0);

    // With real upstream URLs introspection is off by default; the printed environment
    // turns it on, so GraphiQL and codegen work against a staging service.
    let schema = app
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query", "{schema}");

    // The catalogue comes from the binary's Okya.
    let stores = app.gql(None, "{ stores { id name } }", json!({})).await;
    let ids: Vec<&str> = stores["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "str_pasadena",
            "str_santa_monica",
            "str_sunset",
            "str_burbank"
        ]
    );
    let calls = ledger(okya, "calls").await["GET /v1/stores"]
        .as_u64()
        .unwrap_or(0);
    assert!(calls > calls_before, "the stand-alone Okya was asked");

    // Okya Auth registers and confirms; SessionM's Core links a member in the background.
    let phone = "+13105550188";
    let registered = app
        .gql(
            None,
            "mutation($i: AccountRegisterInput!) { accountRegister(input: $i) { customer { id } userErrors { code } } }",
            json!({"i": {"email": "grace@example.com", "phone": phone, "firstName": "Grace", "lastName": "Hopper"}}),
        )
        .await;
    assert_eq!(registered["accountRegister"]["userErrors"], json!([]));
    let confirmed = app
        .gql(
            None,
            "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { accessToken userErrors { code } } }",
            json!({"i": {"phone": phone, "code": cbtl_sandbox::credentials::OTP_CODE}}),
        )
        .await;
    let token = confirmed["accountConfirm"]["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned();
    app.until(
        &token,
        "{ me { loyalty { pointsBalance } } }",
        json!({}),
        |data| data["me"]["loyalty"].is_object(),
    )
    .await;
    // SessionM's POS host answers the wallet, with the printed client and store ids.
    let vouchers = app
        .gql(Some(&token), "{ vouchers { id } }", json!({}))
        .await;
    assert!(
        !vouchers["vouchers"]
            .as_array()
            .expect("vouchers")
            .is_empty()
    );

    // An order: Okya's cart and order, Stripe's charge, the store's acceptance as Okya's
    // signed webhook, and Epoint's ticket.
    let cart = app
        .gql(
            Some(&token),
            "mutation { cartCreate(input: {storeId: \"str_pasadena\"}) { cart { id } userErrors { code } } }",
            json!({}),
        )
        .await;
    let cart_id = cart["cartCreate"]["cart"]["id"]
        .as_str()
        .expect("a cart id");
    let lines = app
        .gql(
            Some(&token),
            "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_latte\", quantity: 1, modifierOptionIds: [\"opt_size_large\"]}]) { userErrors { code } } }",
            json!({"c": cart_id}),
        )
        .await;
    assert_eq!(lines["cartLinesAdd"]["userErrors"], json!([]));
    let checkout = app
        .gql(
            Some(&token),
            "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status } userErrors { code } } }",
            json!({"i": {"cartId": cart_id, "paymentMethodId": "pm_card_visa", "idempotencyKey": "staging-1"}}),
        )
        .await;
    assert_eq!(checkout["checkout"]["userErrors"], json!([]), "{checkout}");
    let order_id = checkout["checkout"]["order"]["id"]
        .as_str()
        .expect("an order id");
    app.until(
        &token,
        "query($id: ID!) { order(id: $id) { status } }",
        json!({"id": order_id}),
        |data| data["order"]["status"] == "IN_PREPARATION",
    )
    .await;
    let tickets = ledger(&env["CBTL_EPOINT__BASE_URL"], "ledger").await;
    assert_eq!(tickets["orders"].as_array().map(Vec::len), Some(1));
    let payments = ledger(&env["CBTL_STRIPE__BASE_URL"], "ledger").await;
    assert_eq!(
        payments["payment_intents"].as_array().map(Vec::len),
        Some(1),
        "{payments}"
    );
    // The service took every webhook: each signature verified with the printed secrets.
    let delivered = |events: &Value, id: &str, delivered: &Value| {
        let events = events.as_array().cloned().unwrap_or_default();
        !events.is_empty()
            && events.iter().all(|e| {
                delivered
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|d| d[id] == e["id"] && d["delivered"] == true)
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let okya_hooks = ledger(okya, "webhooks").await;
        let stripe_events = ledger(&env["CBTL_STRIPE__BASE_URL"], "ledger").await["events"].clone();
        let okya_done = delivered(&okya_hooks["events"], "event_id", &okya_hooks["deliveries"]);
        let stripe_done = stripe_events
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["delivered"] == true));
        if okya_done && stripe_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks not all taken: {okya_hooks} {stripe_events}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
