//! The `cbtl-sandbox` binary, black box: it starts the four simulators where it is told,
//! prints the environment a service needs, and the simulators accept exactly the
//! credentials it printed. (`tests/api/sandbox_binary.rs` in the service starts a cbtl-bff
//! with that environment.)

use cbtl_sandbox::service_env;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Every simulator on a free loopback port.
const ANY_PORT: [&str; 10] = [
    "--okya-addr",
    "127.0.0.1:0",
    "--stripe-addr",
    "127.0.0.1:0",
    "--epoint-addr",
    "127.0.0.1:0",
    "--sessionm-core-addr",
    "127.0.0.1:0",
    "--sessionm-pos-addr",
    "127.0.0.1:0",
];

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cbtl-sandbox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SANDBOX_") {
            command.env_remove(key);
        }
    }
    command.kill_on_drop(true);
    command
}

/// Starts the binary with `args` and reads the environment it prints (until the last
/// variable, the service's token key).
async fn start(args: &[&str]) -> (Child, BTreeMap<String, String>) {
    let mut child = binary()
        .args(ANY_PORT)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cbtl-sandbox starts");
    let stdout = child.stdout.take().expect("stdout");
    let env = tokio::time::timeout(Duration::from_secs(30), service_env::read(stdout))
        .await
        .expect("the environment is printed in time")
        .expect("the environment is printed");
    (child, env)
}

#[tokio::test]
async fn it_prints_every_setting_a_service_needs_and_its_simulators_take_those_credentials() {
    let (_child, env) = start(&[
        "--okya-api-key",
        "okya_staging",
        "--sessionm-client-id",
        "cbtl-staging",
    ])
    .await;
    let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
    keys.retain(|k| !k.starts_with("CBTL_SESSIONM__STORE_IDS__"));
    assert_eq!(
        keys,
        [
            "CBTL_AUTH__JWT_SECRET",
            "CBTL_EPOINT__API_KEY",
            "CBTL_EPOINT__BASE_URL",
            "CBTL_GRAPHQL__INTROSPECTION",
            "CBTL_OKYA__API_KEY",
            "CBTL_OKYA__BASE_URL",
            "CBTL_SESSIONM__API_KEY",
            "CBTL_SESSIONM__API_SECRET",
            "CBTL_SESSIONM__CLIENT_ID",
            "CBTL_SESSIONM__CORE_URL",
            "CBTL_SESSIONM__ECOMMERCE_STORE_ID",
            "CBTL_SESSIONM__POS_API_KEY",
            "CBTL_SESSIONM__POS_API_SECRET",
            "CBTL_SESSIONM__POS_URL",
            "CBTL_STRIPE__BASE_URL",
            "CBTL_STRIPE__SECRET_KEY",
            "CBTL_WEBHOOKS__OKYA_SECRETS",
            "CBTL_WEBHOOKS__STRIPE_SECRETS",
        ]
    );
    // One SessionM store per Okya store.
    let stores: Vec<&str> = env
        .keys()
        .filter_map(|k| k.strip_prefix("CBTL_SESSIONM__STORE_IDS__"))
        .collect();
    assert_eq!(
        stores,
        [
            "str_burbank",
            "str_pasadena",
            "str_santa_monica",
            "str_sunset"
        ]
    );
    // Given credentials are used; the rest are generated, never the published ones.
    assert_eq!(env["CBTL_OKYA__API_KEY"], "okya_staging");
    assert_eq!(env["CBTL_SESSIONM__CLIENT_ID"], "cbtl-staging");
    let published = [
        cbtl_sandbox::credentials::EPOINT_API_KEY,
        cbtl_sandbox::credentials::STRIPE_SECRET_KEY,
        cbtl_sandbox::credentials::SESSIONM_API_KEY,
        cbtl_sandbox::credentials::SESSIONM_API_SECRET,
        cbtl_sandbox::credentials::SESSIONM_POS_API_KEY,
        cbtl_sandbox::credentials::SESSIONM_POS_API_SECRET,
    ];
    for value in env.values() {
        assert!(!published.contains(&value.as_str()), "{value}");
        assert!(!value.contains("sandbox"), "{value}");
    }
    assert!(env["CBTL_STRIPE__SECRET_KEY"].starts_with("sk_test_"));
    assert!(env["CBTL_WEBHOOKS__OKYA_SECRETS"].starts_with("[whsec_"));
    assert!(env["CBTL_AUTH__JWT_SECRET"].len() >= 32);
    assert_eq!(env["CBTL_GRAPHQL__INTROSPECTION"], "true");

    let http = reqwest::Client::new();
    let status = |request: reqwest::RequestBuilder| async move {
        request
            .send()
            .await
            .expect("the simulator answers")
            .status()
            .as_u16()
    };
    // Okya: the printed key, not the published one.
    let stores = format!("{}/v1/stores", env["CBTL_OKYA__BASE_URL"]);
    assert_eq!(
        status(http.get(&stores).bearer_auth("okya_staging")).await,
        200
    );
    let published_okya = cbtl_sandbox::credentials::OKYA_API_KEY;
    assert_eq!(
        status(http.get(&stores).bearer_auth(published_okya)).await,
        401
    );
    // Stripe: only the printed secret key (an unknown intent is a 404 past authentication).
    let intent = format!(
        "{}/v1/payment_intents/pi_none",
        env["CBTL_STRIPE__BASE_URL"]
    );
    let stripe_key = &env["CBTL_STRIPE__SECRET_KEY"];
    assert_eq!(status(http.get(&intent).bearer_auth(stripe_key)).await, 404);
    assert_eq!(
        status(http.get(&intent).bearer_auth("sk_test_other")).await,
        401
    );
    // Epoint.
    let pos = format!(
        "{}/v1/locations/str_pasadena/status",
        env["CBTL_EPOINT__BASE_URL"]
    );
    let epoint_key = &env["CBTL_EPOINT__API_KEY"];
    assert_eq!(
        status(http.get(&pos).header("X-Api-Key", epoint_key)).await,
        200
    );
    let published_epoint = cbtl_sandbox::credentials::EPOINT_API_KEY;
    assert_eq!(
        status(http.get(&pos).header("X-Api-Key", published_epoint)).await,
        401
    );
    // SessionM Core: the key in the path and Basic auth.
    let (key, secret) = (
        &env["CBTL_SESSIONM__API_KEY"],
        &env["CBTL_SESSIONM__API_SECRET"],
    );
    let member = format!(
        "{}/priv/v1/apps/{key}/external/users/nobody",
        env["CBTL_SESSIONM__CORE_URL"]
    );
    assert_eq!(
        status(http.get(&member).basic_auth(key, Some(secret))).await,
        404
    );
    assert_eq!(
        status(http.get(&member).basic_auth(key, Some("wrong"))).await,
        401
    );
}

#[tokio::test]
async fn published_sandbox_credentials_are_refused_naming_each_flag() {
    let output = binary()
        .args(ANY_PORT)
        .args(["--okya-api-key", cbtl_sandbox::credentials::OKYA_API_KEY])
        .args([
            "--stripe-webhook-secret",
            cbtl_sandbox::credentials::STRIPE_WEBHOOK_SECRET,
        ])
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--okya-api-key"), "{stderr}");
    assert!(stderr.contains("--stripe-webhook-secret"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn fixed_ports_are_the_defaults_and_each_can_be_moved() {
    let help = binary().arg("--help").output().await.expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for (flag, default) in [
        ("--okya-addr", "127.0.0.1:8081"),
        ("--stripe-addr", "127.0.0.1:8082"),
        ("--epoint-addr", "127.0.0.1:8083"),
        ("--sessionm-core-addr", "127.0.0.1:8084"),
        ("--sessionm-pos-addr", "127.0.0.1:8085"),
        ("--app-url", "http://127.0.0.1:8080"),
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
        assert!(
            help.contains(&format!("[default: {default}]")),
            "{default} in {help}"
        );
    }
    // A taken port stops the start instead of moving elsewhere.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("an address").to_string();
    let mut args = ANY_PORT;
    args[5] = &port;
    assert_eq!(args[4], "--epoint-addr");
    let output = binary().args(args).output().await.expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot start"));
}
