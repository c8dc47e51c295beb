//! Graceful shutdown as operators see it: the binary, sent a real SIGTERM, against the
//! stand-alone simulators (a process of their own, so they outlive it, as real upstreams
//! do) and a database a second instance shares.

use crate::helpers::init_ws;
use crate::sandbox_binary::{Service, ledger, start_sandbox};
use crate::websocket::close_code;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, http::HeaderValue},
};

/// A port free now, for a service told to listen on it (the simulators need the
/// service's address before it starts, to send it webhooks).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// cbtl-bff on `port` with the simulators' environment `env`, the database at `database`
/// and `extra` settings; logs to `log`. Returns once it is ready.
async fn start_service(
    env: &BTreeMap<String, String>,
    port: u16,
    database: &str,
    extra: &[(&str, &str)],
    log: &Path,
) -> (Child, Service) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cbtl-bff"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CBTL_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    let mut child = command
        .envs(env)
        .envs(extra.iter().copied())
        .env("CBTL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "info")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("cbtl-bff starts");
    let service = Service {
        url: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the service stopped ({status}): {log}");
        }
        let ready = service
            .http
            .get(format!("{}/readyz", service.url))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return (child, service);
        }
        assert!(Instant::now() < deadline, "the service is not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("a running service").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

/// Waits for the service to exit, at most `within`, and returns how long it took.
async fn exits_0(child: &mut Child, within: Duration, log: &Path) -> Duration {
    let start = Instant::now();
    let status = tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the service did not stop within {within:?}: {log}")
        })
        .expect("the service's status");
    assert!(status.success(), "{status:?}");
    start.elapsed()
}

/// Sets a simulator's fault knobs.
async fn faults(base_url: &str, update: Value) {
    let answer = reqwest::Client::new()
        .put(format!("{base_url}/_sandbox/faults"))
        .json(&update)
        .send()
        .await
        .expect("the simulator answers");
    assert!(answer.status().is_success(), "{answer:?}");
}

/// A customer signed up through Okya Auth; their access token.
async fn sign_up(app: &Service, phone: &str) -> String {
    let registered = app
        .gql(
            None,
            "mutation($i: AccountRegisterInput!) { accountRegister(input: $i) { userErrors { code } } }",
            json!({"i": {"email": "grace@example.com", "phone": phone, "firstName": "Grace", "lastName": "Hopper"}}),
        )
        .await;
    assert_eq!(registered["accountRegister"]["userErrors"], json!([]));
    let confirmed = app
        .gql(
            None,
            "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { accessToken } }",
            json!({"i": {"phone": phone, "code": cbtl_sandbox::credentials::OTP_CODE}}),
        )
        .await;
    confirmed["accountConfirm"]["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// A cart at Pasadena with a bottle of water; its id.
async fn cart(app: &Service, token: &str) -> String {
    let cart = app
        .gql(
            Some(token),
            "mutation { cartCreate(input: {storeId: \"str_pasadena\"}) { cart { id } } }",
            json!({}),
        )
        .await;
    let cart_id = cart["cartCreate"]["cart"]["id"]
        .as_str()
        .expect("a cart id")
        .to_owned();
    let added = app.gql(
        Some(token),
        "mutation($c: ID!) { cartLinesAdd(cartId: $c, lines: [{productId: \"prd_water\", quantity: 1}]) { userErrors { code } } }",
        json!({"c": cart_id}),
    )
    .await;
    assert_eq!(added["cartLinesAdd"]["userErrors"], json!([]), "{added}");
    cart_id
}

const CHECKOUT: &str = "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status } userErrors { code } } }";

/// SIGTERM: the request in flight is answered, the listener is closed at once (a new
/// connection is refused), the websocket gets 1001 Going Away, and the process exits 0.
#[tokio::test]
async fn on_sigterm_requests_in_flight_finish_new_connections_are_refused_and_it_exits_0() {
    let port = free_port();
    let (_sandbox, env) = start_sandbox(&format!("http://127.0.0.1:{port}")).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("service.log");
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("cbtl.db").display());
    let (mut child, app) = start_service(
        &env,
        port,
        &database,
        &[("CBTL_SHUTDOWN_GRACE_SECS", "10")],
        &log,
    )
    .await;

    let mut request = format!("ws://127.0.0.1:{port}/graphql")
        .into_client_request()
        .expect("a websocket request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = connect_async(request).await.expect("websocket connects");
    init_ws(&mut ws, json!({})).await;

    // A request that takes 2 s at Okya is in flight when the signal comes.
    let okya = &env["CBTL_OKYA__BASE_URL"];
    faults(okya, json!({"slow_next": {"GET /v1/stores": {"ms": 2000}}})).await;
    let in_flight = tokio::spawn({
        let http = app.http.clone();
        let url = format!("{}/graphql", app.url);
        async move {
            http.post(url)
                .json(&json!({"query": "{ stores { id } }"}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child);

    assert_eq!(close_code(&mut ws).await.0, 1001, "Going Away");
    // The listener closes while the request is still being served.
    let refused_at = Instant::now();
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {}
        }
        assert!(
            refused_at.elapsed() < Duration::from_secs(1),
            "new connections are still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!in_flight.is_finished(), "the request was still in flight");
    let answer = in_flight
        .await
        .expect("the request task")
        .expect("the request in flight is answered");
    assert!(answer.status().is_success(), "{answer:?}");
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(
        body["data"]["stores"].as_array().map(Vec::len),
        Some(4),
        "{body}"
    );
    exits_0(&mut child, Duration::from_secs(10), &log).await;
}

/// A request that outlasts `shutdown_grace_secs` does not hold the process: it exits 0
/// when the grace is over.
#[tokio::test]
async fn shutdown_is_bounded_by_its_grace() {
    let port = free_port();
    let (_sandbox, env) = start_sandbox(&format!("http://127.0.0.1:{port}")).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("service.log");
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("cbtl.db").display());
    let (mut child, app) = start_service(
        &env,
        port,
        &database,
        &[
            ("CBTL_SHUTDOWN_GRACE_SECS", "1"),
            ("CBTL_OKYA__TIMEOUT_MS", "60000"),
        ],
        &log,
    )
    .await;
    let okya = &env["CBTL_OKYA__BASE_URL"];
    faults(
        okya,
        json!({"slow_next": {"GET /v1/stores": {"ms": 30000}}}),
    )
    .await;
    let http = app.http.clone();
    let url = format!("{}/graphql", app.url);
    let _in_flight = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"query": "{ stores { id } }"}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child);
    let took = exits_0(&mut child, Duration::from_secs(10), &log).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Two instances on one database. The first is charging a card for an order (its flow
/// holds the order's lease, for a minute) when it is told to stop: it lets the charge
/// finish, starts no further step, releases the lease and exits 0; the second goes on
/// with the order at once, long before the lease would have run out, and nothing is
/// charged twice.
#[tokio::test]
async fn after_sigterm_another_instance_resumes_the_flows_it_held_at_once() {
    let (port_a, port_b) = (free_port(), free_port());
    let (_sandbox, env) = start_sandbox(&format!("http://127.0.0.1:{port_a}")).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("cbtl.db").display());
    let settings = [
        ("CBTL_ORDERS__LEASE_MS", "60000"),
        ("CBTL_ORDERS__SWEEP_INTERVAL_MS", "100"),
        ("CBTL_SHUTDOWN_GRACE_SECS", "10"),
    ];
    let log_a = dir.path().join("a.log");
    let (mut a, service_a) = start_service(&env, port_a, &database, &settings, &log_a).await;
    let (_b, service_b) = start_service(
        &env,
        port_b,
        &database,
        &settings,
        &dir.path().join("b.log"),
    )
    .await;

    let token = sign_up(&service_a, "+13105550190").await;
    let cart_id = cart(&service_a, &token).await;
    let stripe = &env["CBTL_STRIPE__BASE_URL"];
    faults(
        stripe,
        json!({"slow_next": {"POST /v1/payment_intents": {"ms": 3000}}}),
    )
    .await;
    // The app gives up waiting; the charge goes on in A's flow runner.
    let gave_up = service_a
        .http
        .post(format!("{}/graphql", service_a.url))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(700))
        .json(&json!({"query": CHECKOUT, "variables": {"i": {"cartId": cart_id, "paymentMethodId": "pm_card_visa", "idempotencyKey": "k1"}}}))
        .send()
        .await;
    if let Ok(answer) = gave_up {
        panic!("the checkout was still running: {:?}", answer.text().await);
    }
    sigterm(&a);
    exits_0(&mut a, Duration::from_secs(10), &log_a).await;
    let stopped = Instant::now();

    let orders = service_b
        .until(
            &token,
            "{ me { orders(first: 5) { edges { node { id status } } } } }",
            json!({}),
            |data| data["me"]["orders"]["edges"][0]["node"]["status"] == "AWAITING_ACCEPTANCE",
        )
        .await;
    let resumed = stopped.elapsed();
    assert!(
        resumed < Duration::from_secs(10),
        "resumed after {resumed:?}, as if the lease (60 s) had to run out: {orders}"
    );
    let calls = ledger(stripe, "calls").await;
    assert_eq!(calls["POST /v1/payment_intents"], 1, "{calls}");
}

/// What a shutdown releases: the leases its instance holds, but not another instance's,
/// and not those of work still running (its lease runs out instead, so it never runs
/// twice at once).
#[tokio::test]
async fn a_shutdown_releases_its_own_idle_leases_only() {
    use cbtl_bff::store;
    let (_db, url) = crate::helpers::TestDb::new(crate::helpers::Db::Sqlite).await;
    let db = store::connect(&url, &cbtl_bff::config::DatabaseSettings::default())
        .await
        .expect("the database");
    store::migrate(&db).await.expect("migrations");
    let now = cbtl_bff::auth::now_ms();
    for n in 0..3 {
        store::jobs::enqueue(&db, "link_loyalty", &format!("k{n}"), &json!({}), now)
            .await
            .expect("a job");
    }
    let lease = 60_000;
    let mine_running = store::jobs::claim(&db, "me", now, lease)
        .await
        .unwrap()
        .unwrap();
    let mine_idle = store::jobs::claim(&db, "me", now, lease)
        .await
        .unwrap()
        .unwrap();
    let theirs = store::jobs::claim(&db, "them", now, lease)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store::jobs::claim(&db, "other", now, lease)
            .await
            .unwrap()
            .is_none()
    );

    let released =
        store::jobs::release_all_held_by(&db, "me", std::slice::from_ref(&mine_running.id))
            .await
            .expect("released");
    assert_eq!(released, 1);
    let next = store::jobs::claim(&db, "other", now, lease).await.unwrap();
    assert_eq!(next.map(|j| j.id), Some(mine_idle.id));
    assert!(
        store::jobs::claim(&db, "other", now, lease)
            .await
            .unwrap()
            .is_none()
    );
    let _ = theirs;
}
