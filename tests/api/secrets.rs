//! No secret reaches the logs (issue 11, item 7): the logs of sign-up, sign-in, token
//! refresh, a paid order through the store, a decline, a 3-D Secure wait and a wrong code,
//! at debug level for our crates, hold no token, one-time code, PaymentIntent client
//! secret, API key, webhook secret or signing key.
//!
//! The test runs on a current-thread runtime with its own subscriber as the thread's
//! default, so every task the service and its simulators spawn logs into this buffer.

use crate::shop::{StoreAction, placed, shop};
use cbtl_bff::config::sandbox_credentials as sandbox;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Where `secret` stands in `logs` as a whole value (not inside a longer run of letters
/// or digits, so a six-digit code does not match inside a timestamp).
fn leaks(logs: &str, secret: &str) -> Vec<String> {
    let part = |c: char| c.is_ascii_alphanumeric();
    logs.match_indices(secret)
        .filter(|(at, _)| {
            let before = logs[..*at].chars().next_back();
            let after = logs[at + secret.len()..].chars().next();
            !before.is_some_and(part) && !after.is_some_and(part)
        })
        .map(|(at, _)| {
            let line_start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            logs[line_start..line_end].to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn the_logs_of_every_flow_hold_no_secret() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new(
            "info,cbtl_bff=debug,cbtl_sandbox=debug,sqlx=warn,sea_orm=warn",
        ))
        .with(fmt::layer().with_ansi(false).with_writer(captured.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    // A member with a linked SessionM account, signed in (`shop` signs one up).
    let app = shop(|_| {}).await;
    let member_token = app.token().expect("a signed-in member");
    let code = app.last_code("+16265550150").await;

    // Sign-in by code, a wrong code, and a token refresh.
    let other = app.sign_up("+16265550151", "linus@example.com").await;
    let wrong = app.confirm("+16265550151", "000000").await;
    assert!(wrong.get("data").is_some(), "{wrong}");
    let refreshed = app
        .gql_as(
            None,
            "mutation($i: TokenRefreshInput!) { tokenRefresh(input: $i) { accessToken refreshToken userErrors { code } } }",
            json!({"i": {"refreshToken": other.refresh_token}}),
        )
        .await;
    let new_refresh = refreshed["data"]["tokenRefresh"]["refreshToken"]
        .as_str()
        .expect("a new refresh token")
        .to_owned();

    // A paid order through the store, a decline and a 3-D Secure wait.
    let cart = app.filled_cart("str_pasadena").await;
    let id = placed(&app.checkout(&cart, "pm_card_visa", None, "paid").await);
    app.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
    app.store_action(&cart, StoreAction::Accept).await;
    app.wait_for_status(&id, "IN_PREPARATION").await;
    let declined = app.filled_cart("str_pasadena").await;
    app.checkout(&declined, "pm_card_chargeDeclined", None, "declined")
        .await;
    let secure = app.filled_cart("str_pasadena").await;
    let waiting = app
        .checkout_selecting(
            "id status payment { clientSecret }",
            &secure,
            "pm_card_authenticationRequired",
            None,
            "3ds",
        )
        .await;
    let client_secret = waiting["order"]["payment"]["clientSecret"]
        .as_str()
        .expect("a 3-D Secure order's client secret")
        .to_owned();

    // The failure branches: a POS that refuses (recall and refund), a store that rejects
    // an order with a voucher (refund and the voucher released).
    let refused = app
        .filled_cart(cbtl_sandbox::okya::catalog::POS_OFFLINE_STORE)
        .await;
    let recalled = placed(&app.checkout(&refused, "pm_card_visa", None, "pos").await);
    app.store_action(&refused, StoreAction::Accept).await;
    app.wait_for_status(&recalled, "CANCELLED").await;
    let voucher = app.voucher("PERCENTAGE", "AVAILABLE").await;
    let rejected_cart = app.filled_cart("str_pasadena").await;
    let rejected = placed(
        &app.checkout(&rejected_cart, "pm_card_visa", Some(&voucher), "voucher")
            .await,
    );
    app.store_action(&rejected_cart, StoreAction::Reject).await;
    app.wait_for_status(&rejected, "REJECTED").await;
    app.wait_until_settled(&rejected).await;

    let logs = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(
        logs.contains("order status changed"),
        "the flows' logs were captured"
    );
    let secrets = [
        ("the member's access token", member_token.as_str()),
        ("an access token", other.access_token.as_str()),
        ("a refresh token", other.refresh_token.as_str()),
        ("a refreshed refresh token", new_refresh.as_str()),
        ("a one-time code", code.as_str()),
        ("a PaymentIntent client secret", client_secret.as_str()),
        ("Okya's API key", sandbox::OKYA_API_KEY),
        ("Stripe's secret key", sandbox::STRIPE_SECRET_KEY),
        ("Epoint's API key", sandbox::EPOINT_API_KEY),
        ("SessionM's API secret", sandbox::SESSIONM_API_SECRET),
        (
            "SessionM's POS API secret",
            sandbox::SESSIONM_POS_API_SECRET,
        ),
        ("Okya's webhook secret", sandbox::OKYA_WEBHOOK_SECRET),
        ("Stripe's webhook secret", sandbox::STRIPE_WEBHOOK_SECRET),
        ("the token signing key", sandbox::JWT_SECRET),
    ];
    let found: Vec<String> = secrets
        .iter()
        .flat_map(|(what, secret)| {
            leaks(&logs, secret)
                .into_iter()
                .map(move |line| format!("{what}: {line}"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "secrets in the logs:\n{}",
        found.join("\n")
    );
}
