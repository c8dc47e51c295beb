//! Rate limits on the mutations abuse repeats: codes sent and tried, sign-in, checkout and
//! declined payments. Each test sends the hostile stream, gets `RATE_LIMITED` with
//! `extensions.retryAfterSeconds`, sees another customer or address served at once, and
//! (where the wait is short) the same one served again after waiting the hinted time.
//!
//! The tests stand behind a trusted proxy (the harness's 127.0.0.1) and name the client in
//! `X-Forwarded-For`, as a load balancer would, so each test can be several clients.

use crate::helpers::{
    Db, TestApp, TestDb, error_code, error_codes, init_ws, next_json, send_json,
    spawn_with_settings, test_settings,
};
use crate::routes::SEND_OTP;
use crate::shop::{checkout_mutation, shop};
use cbtl_bff::config::{ProxyNet, Rate, Settings};
use serde_json::{Value, json};
use std::time::Duration;

const SEND: &str =
    "mutation($i: SignInRequestOtpInput!) { signInRequestOtp(input: $i) { userErrors { code } } }";
const SIGN_IN: &str =
    "mutation($i: SignInInput!) { signIn(input: $i) { accessToken userErrors { code } } }";

/// One request every second after the burst, so a test waits the hint in about a second.
fn per_second(burst: u32) -> Rate {
    Rate::new(burst, 3_600)
}

/// The harness's own address is a proxy we trust.
fn behind_proxy(s: &mut Settings) {
    s.rate_limits.trusted_proxies = vec![ProxyNet::try_from("127.0.0.1".to_owned()).unwrap()];
    // Our own per-phone spacing of codes is another limit, tested elsewhere.
    s.auth.otp_resend_interval_secs = 0;
    s.auth.otp_sends_per_hour = 1_000;
}

/// A GraphQL POST from the client `from` (through the trusted proxy), with `token` if any.
async fn post_from(
    app: &TestApp,
    from: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = app
        .http
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("x-forwarded-for", from)
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON body")
}

async fn send_code(app: &TestApp, from: &str, phone: &str) -> Value {
    post_from(app, from, None, SEND, json!({"i": {"phone": phone}})).await
}

async fn sign_in(app: &TestApp, from: &str, phone: &str, code: &str) -> Value {
    post_from(
        app,
        from,
        None,
        SIGN_IN,
        json!({"i": {"phone": phone, "code": code}}),
    )
    .await
}

/// The body is one `RATE_LIMITED` error with a whole number of seconds to wait, at least
/// 1; returns the wait.
fn limited(body: &Value) -> Duration {
    assert_eq!(error_code(body), "RATE_LIMITED", "{body}");
    let hint = &body["errors"][0]["extensions"]["retryAfterSeconds"];
    let secs = hint
        .as_u64()
        .unwrap_or_else(|| panic!("an integer retryAfterSeconds: {body}"));
    assert!(secs >= 1, "{body}");
    Duration::from_secs(secs)
}

fn served(body: &Value, field: &str) {
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"][field]["userErrors"], json!([]), "{body}");
}

#[tokio::test]
async fn codes_sent_from_one_address_are_limited_and_another_address_is_served() {
    let (_db, url) = TestDb::new(Db::Sqlite).await;
    let mut settings = test_settings(url);
    behind_proxy(&mut settings);
    settings.rate_limits.otp_send_per_address = per_second(3);
    let app = spawn_with_settings(settings).await;

    // SMS pumping: codes to many phones from one address, until refused (a slow machine
    // may see a second pass, and a token back, before the burst is spent).
    let attacker = "203.0.113.7";
    let mut sent: u64 = 0;
    let refused = loop {
        let body = send_code(&app, attacker, &format!("+162655502{sent:02}")).await;
        if body.get("errors").is_some() {
            break body;
        }
        served(&body, "signInRequestOtp");
        sent += 1;
        assert!(sent < 10, "never refused");
    };
    assert!(sent >= 3, "the burst is served: {sent}");
    let wait = limited(&refused);
    assert!(wait <= Duration::from_secs(1), "one per second: {refused}");
    assert_eq!(
        app.call_count(SEND_OTP).await,
        sent,
        "a refused request sends no code"
    );
    // Registration sends a code too.
    let registered = post_from(
        &app,
        attacker,
        None,
        crate::helpers::REGISTER,
        json!({"i": {"email": "eve@example.com", "phone": "+16265550299", "firstName": "Eve", "lastName": "Attacker"}}),
    )
    .await;
    let wait = limited(&registered);

    // Someone else, at once.
    let other = send_code(&app, "198.51.100.20", "+16265550298").await;
    served(&other, "signInRequestOtp");
    assert_eq!(app.call_count(SEND_OTP).await, sent + 1);

    // The attacker, after waiting the hint.
    tokio::time::sleep(wait).await;
    let again = send_code(&app, attacker, "+16265550297").await;
    served(&again, "signInRequestOtp");
    assert_eq!(app.call_count(SEND_OTP).await, sent + 2);
}

#[tokio::test]
async fn a_client_cannot_choose_its_address_without_a_trusted_proxy() {
    let (_db, url) = TestDb::new(Db::Sqlite).await;
    let mut settings = test_settings(url);
    behind_proxy(&mut settings);
    // The default: no proxy is trusted, so the header is the client's own invention.
    settings.rate_limits.trusted_proxies = Vec::new();
    settings.rate_limits.otp_send_per_address = per_second(2);
    let app = spawn_with_settings(settings).await;

    for n in 0..2 {
        let body = send_code(&app, &format!("192.0.2.{n}"), &format!("+1626555030{n}")).await;
        served(&body, "signInRequestOtp");
    }
    // A fresh address in the header each time changes nothing: the peer is 127.0.0.1.
    let body = send_code(&app, "192.0.2.99", "+16265550309").await;
    limited(&body);
}

#[tokio::test]
async fn codes_tried_against_one_phone_are_limited_from_any_address() {
    let (_db, url) = TestDb::new(Db::Sqlite).await;
    let mut settings = test_settings(url);
    behind_proxy(&mut settings);
    settings.rate_limits.otp_verify_per_phone = per_second(3);
    let app = spawn_with_settings(settings).await;
    let victim = "+16265550400";
    app.sign_up(victim, "ada@example.com").await;
    served(
        &send_code(&app, "198.51.100.1", victim).await,
        "signInRequestOtp",
    );

    // A botnet guessing the sign-in code of one phone, each guess from another address,
    // until refused.
    let mut guesses = 0;
    let refused = loop {
        let body = sign_in(&app, &format!("203.0.113.{guesses}"), victim, "000000").await;
        if body.get("errors").is_some() {
            break body;
        }
        assert_eq!(
            error_codes(&body["data"]["signIn"]),
            ["OTP_INVALID"],
            "{body}"
        );
        guesses += 1;
        assert!(guesses < 5, "never refused");
    };
    assert!(guesses >= 2, "the burst (less the confirmation) is served");
    let wait = limited(&refused);
    // Even the right code waits: the limit cannot tell a guess from the owner.
    let code = app.last_code(victim).await;
    limited(&sign_in(&app, "203.0.113.51", victim, &code).await);

    // Another customer signs in at once.
    let other = "+16265550401";
    app.sign_up(other, "grace@example.com").await;
    served(
        &send_code(&app, "198.51.100.2", other).await,
        "signInRequestOtp",
    );
    let other_code = app.last_code(other).await;
    let signed_in = sign_in(&app, "198.51.100.2", other, &other_code).await;
    served(&signed_in, "signIn");
    assert!(signed_in["data"]["signIn"]["accessToken"].is_string());

    // After the hint, the owner signs in with the right code.
    tokio::time::sleep(wait).await;
    let owner = sign_in(&app, "198.51.100.3", victim, &code).await;
    served(&owner, "signIn");
    assert!(owner["data"]["signIn"]["accessToken"].is_string());
}

#[tokio::test]
async fn the_limit_holds_across_two_instances_on_one_postgresql() {
    let (_db, url) = TestDb::new(Db::Postgres).await;
    let mut settings = test_settings(url);
    behind_proxy(&mut settings);
    // Slow enough that nothing refills during the test.
    settings.rate_limits.otp_verify_per_address = Rate::new(4, 1);
    let a = spawn_with_settings(settings.clone()).await;
    let b = spawn_with_settings(settings).await;

    // Guesses from one address, alternating between the instances: each instance alone
    // has seen only two, within its own burst of four.
    let attacker = "203.0.113.9";
    for n in 0..4 {
        let app = if n % 2 == 0 { &a } else { &b };
        let body = sign_in(app, attacker, &format!("+1626555050{n}"), "000000").await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(error_codes(&body["data"]["signIn"]), ["OTP_INVALID"]);
    }
    for app in [&a, &b] {
        let body = sign_in(app, attacker, "+16265550509", "000000").await;
        let wait = limited(&body);
        // One guess an hour once the burst is spent.
        assert!(wait > Duration::from_secs(3_000), "{body}");
    }
    // Another address is served by both.
    for app in [&a, &b] {
        let body = sign_in(app, "198.51.100.9", "+16265550510", "000000").await;
        assert_eq!(
            error_codes(&body["data"]["signIn"]),
            ["OTP_INVALID"],
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_websocket_draws_on_the_same_limit_as_http() {
    let (_db, url) = TestDb::new(Db::Sqlite).await;
    let mut settings = test_settings(url);
    behind_proxy(&mut settings);
    // No proxy in front of these sockets: the peer is the client.
    settings.rate_limits.trusted_proxies = Vec::new();
    settings.rate_limits.otp_send_per_address = per_second(2);
    let app = spawn_with_settings(settings).await;

    // Two codes over HTTP use up the burst of 127.0.0.1...
    for n in 0..2 {
        let body = app
            .gql_as(
                None,
                SEND,
                json!({"i": {"phone": format!("+1626555060{n}")}}),
            )
            .await;
        served(&body, "signInRequestOtp");
    }
    // ...so the same mutation over a websocket from the same address is refused.
    let mut ws = app.connect_ws("graphql-transport-ws").await;
    init_ws(&mut ws, json!({})).await;
    send_json(
        &mut ws,
        json!({"id": "m", "type": "subscribe", "payload": {"query": SEND, "variables": {"i": {"phone": "+16265550609"}}}}),
    )
    .await;
    let message = next_json(&mut ws).await;
    assert_eq!(message["type"], "next", "{message}");
    let wait = limited(&message["payload"]);
    assert!(app.sent_codes("+16265550609").await.is_empty());
    assert_eq!(next_json(&mut ws).await["type"], "complete");

    // After the hint the socket is served like anyone else.
    tokio::time::sleep(wait).await;
    send_json(
        &mut ws,
        json!({"id": "m2", "type": "subscribe", "payload": {"query": SEND, "variables": {"i": {"phone": "+16265550609"}}}}),
    )
    .await;
    let message = next_json(&mut ws).await;
    served(&message["payload"], "signInRequestOtp");
}

#[tokio::test]
async fn card_testing_is_stopped_after_a_few_declines_and_others_still_check_out() {
    let app = shop(|s| {
        behind_proxy(s);
        s.rate_limits.declines_per_customer = per_second(2);
    })
    .await;
    let tester = app.token().expect("the shop's customer");
    let checkout = |cart: String, card: &'static str, key: String, token: String| {
        let app = &app;
        async move {
            post_from(
                app,
                "203.0.113.30",
                Some(&token),
                &checkout_mutation("id status"),
                json!({"i": {"cartId": cart, "paymentMethodId": card, "idempotencyKey": key}}),
            )
            .await
        }
    };

    // Cards tried one after another, each declined.
    for n in 0..2 {
        let cart = app.filled_cart("str_pasadena").await;
        let body = checkout(
            cart,
            "pm_card_chargeDeclined",
            format!("d{n}"),
            tester.clone(),
        )
        .await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(
            error_codes(&body["data"]["checkout"]),
            ["CARD_DECLINED"],
            "{body}"
        );
    }
    // The next card is not even tried, good or not.
    let cart = app.filled_cart("str_pasadena").await;
    let refused = checkout(cart.clone(), "pm_card_visa", "d2".into(), tester.clone()).await;
    let wait = limited(&refused);
    assert_eq!(
        app.order_ids().await.len(),
        2,
        "no order was made for the refused checkout"
    );

    // Another customer, from the same address, pays at once.
    let other = app.sign_up("+16265550700", "grace.other@example.com").await;
    app.use_token(Some(&other.access_token));
    let other_cart = app.filled_cart("str_pasadena").await;
    app.use_token(Some(&tester));
    let body = checkout(
        other_cart,
        "pm_card_visa",
        "o1".into(),
        other.access_token.clone(),
    )
    .await;
    assert_eq!(
        body["data"]["checkout"]["order"]["status"], "AWAITING_ACCEPTANCE",
        "{body}"
    );

    // After the hint, the first customer may try once more.
    tokio::time::sleep(wait).await;
    let body = checkout(cart, "pm_card_visa", "d3".into(), tester.clone()).await;
    assert_eq!(
        body["data"]["checkout"]["order"]["status"], "AWAITING_ACCEPTANCE",
        "{body}"
    );
}

#[tokio::test]
async fn checkouts_are_limited_per_customer() {
    let app = shop(|s| {
        behind_proxy(s);
        s.rate_limits.checkout_per_customer = per_second(2);
    })
    .await;
    let cart = app.filled_cart("str_pasadena").await;
    // The same checkout sent again and again (each answer the same order).
    for _ in 0..2 {
        let body = app
            .checkout_body("id status", &cart, "pm_card_visa", None, "k1")
            .await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    let body = app
        .checkout_body("id status", &cart, "pm_card_visa", None, "k1")
        .await;
    limited(&body);
}
