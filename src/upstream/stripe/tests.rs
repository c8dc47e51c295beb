//! The client against the Stripe simulator over HTTP, and its webhooks.

use super::*;
use crate::domain::Currency;
use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
use cbtl_sandbox::{
    Simulator,
    faults::{FaultUpdate, Faults, Loss, LostAs},
    stripe::StripeSimConfig,
};
use std::time::Duration;
use tokio::sync::mpsc;

const WEBHOOK_SECRET: &str = "whsec_test_secret";

async fn simulator(webhook_url: Option<String>) -> (Simulator, StripeClient) {
    let sim = cbtl_sandbox::stripe::start(
        StripeSimConfig {
            webhook_url,
            webhook_secret: WEBHOOK_SECRET.to_owned(),
            ..StripeSimConfig::default()
        },
        Faults::new(0, 0.0),
    )
    .await
    .unwrap();
    let settings = StripeSettings::default();
    let client = StripeClient::new(
        &sim.base_url,
        &settings,
        &crate::upstream::Guards::for_tests(),
    )
    .unwrap();
    (sim, client)
}

fn charge(amount: i64, payment_method: &str, capture: CaptureMethod) -> CreatePaymentIntent {
    CreatePaymentIntent {
        amount: Money::new(amount, Currency::usd()),
        payment_method: payment_method.to_owned(),
        capture_method: capture,
        description: Some("CBTL order".to_owned()),
        metadata: [("order_id".to_owned(), "ord_1".to_owned())].into(),
    }
}

async fn ledger(sim: &Simulator) -> serde_json::Value {
    reqwest::get(format!("{}/_sandbox/ledger", sim.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn rejection(err: &UpstreamError) -> (u16, Rejection) {
    let (status, rejection) = err.rejection().expect("a rejection");
    (status, rejection.clone())
}

/// The simulator's events claim the version this client pins.
#[test]
fn the_simulator_speaks_the_pinned_api_version() {
    assert_eq!(cbtl_sandbox::stripe::API_VERSION, API_VERSION);
}

#[tokio::test]
async fn automatic_capture_succeeds_with_card_details() {
    let (sim, client) = simulator(None).await;
    let pi = client
        .create_payment_intent(&charge(450, "pm_card_visa", CaptureMethod::Automatic), "k1")
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
    assert_eq!(pi.amount, 450);
    assert_eq!(pi.amount_received, 450);
    assert_eq!(pi.currency, "usd");
    assert_eq!(pi.card(), Some(("visa", "4242")));
    assert_eq!(pi.metadata["order_id"], "ord_1");
    assert!(pi.client_secret.as_deref().unwrap().starts_with(&pi.id));
    assert!(!format!("{pi:?}").contains("secret"));

    let again = client.retrieve_payment_intent(&pi.id).await.unwrap();
    assert_eq!(again.status, PaymentIntentStatus::Succeeded);
    assert_eq!(again.card(), Some(("visa", "4242")));

    let ledger = ledger(&sim).await;
    assert_eq!(ledger["payment_intents"][0]["idempotency_key"], "k1");
    assert_eq!(ledger["payment_intents"][0]["amount_received"], 450);
}

#[tokio::test]
async fn manual_capture_holds_then_captures() {
    let (_sim, client) = simulator(None).await;
    let pi = client
        .create_payment_intent(
            &charge(900, "pm_card_mastercard", CaptureMethod::Manual),
            "hold-1",
        )
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresCapture);
    assert_eq!(pi.amount_capturable, 900);
    assert_eq!(pi.amount_received, 0);
    assert_eq!(pi.card(), Some(("mastercard", "4444")));
    let hold = pi.capture_before().unwrap() - chrono::Utc::now().timestamp();
    assert!((6 * 86_400..=7 * 86_400).contains(&hold), "{hold}");

    let too_much = client
        .capture_payment_intent(&pi.id, Some(901), "cap-0")
        .await
        .unwrap_err();
    assert_eq!(rejection(&too_much).0, 400);

    let captured = client
        .capture_payment_intent(&pi.id, Some(800), "cap-1")
        .await
        .unwrap();
    assert_eq!(captured.status, PaymentIntentStatus::Succeeded);
    assert_eq!(captured.amount_received, 800);

    let twice = client
        .capture_payment_intent(&pi.id, None, "cap-2")
        .await
        .unwrap_err();
    let (status, refusal) = rejection(&twice);
    assert_eq!(status, 400);
    assert_eq!(refusal.code, "payment_intent_unexpected_state");
    assert!(decline(&refusal).is_none());
}

#[tokio::test]
async fn declines_are_parsed_with_the_failed_intent() {
    let (sim, client) = simulator(None).await;
    let err = client
        .create_payment_intent(
            &charge(450, "pm_card_chargeDeclined", CaptureMethod::Automatic),
            "d1",
        )
        .await
        .unwrap_err();
    let (status, refusal) = rejection(&err);
    assert_eq!(status, 402);
    assert_eq!(refusal.code, "card_declined");
    let declined = decline(&refusal).unwrap();
    assert_eq!(declined.decline_code.as_deref(), Some("generic_decline"));
    assert_eq!(
        declined.payment_intent_status,
        Some(PaymentIntentStatus::RequiresPaymentMethod)
    );
    let pi_id = declined.payment_intent_id.clone().unwrap();
    assert!(pi_id.starts_with("pi_"));
    assert!(refusal.detail["payment_intent"]["client_secret"].is_null());

    let insufficient = client
        .create_payment_intent(
            &charge(
                450,
                "pm_card_chargeDeclinedInsufficientFunds",
                CaptureMethod::Automatic,
            ),
            "d2",
        )
        .await
        .unwrap_err();
    assert_eq!(
        decline_of(&insufficient).unwrap().decline_code.as_deref(),
        Some("insufficient_funds")
    );

    // Stripe replays a decline for the same key rather than trying the card again.
    let replay = client
        .create_payment_intent(
            &charge(450, "pm_card_chargeDeclined", CaptureMethod::Automatic),
            "d1",
        )
        .await
        .unwrap_err();
    assert_eq!(decline_of(&replay), Some(declined));

    let failed = client.retrieve_payment_intent(&pi_id).await.unwrap();
    assert_eq!(failed.status, PaymentIntentStatus::RequiresPaymentMethod);
    let last = failed.last_payment_error.unwrap();
    assert_eq!(last.code.as_deref(), Some("card_declined"));
    assert_eq!(ledger(&sim).await["idempotency_keys"]["d1"], 2);

    let unknown = client
        .create_payment_intent(&charge(450, "pm_card_nope", CaptureMethod::Automatic), "d3")
        .await
        .unwrap_err();
    let (status, refusal) = rejection(&unknown);
    assert_eq!(status, 400);
    assert_eq!(refusal.code, "resource_missing");
    assert_eq!(refusal.field.as_deref(), Some("payment_method"));
    assert!(decline(&refusal).is_none());
}

#[tokio::test]
async fn three_d_secure_is_completed_through_the_sandbox() {
    let (sim, client) = simulator(None).await;
    let http = reqwest::Client::new();
    for (key, capture, outcome, expected) in [
        (
            "3ds-1",
            CaptureMethod::Automatic,
            "succeed",
            PaymentIntentStatus::Succeeded,
        ),
        (
            "3ds-2",
            CaptureMethod::Manual,
            "succeed",
            PaymentIntentStatus::RequiresCapture,
        ),
        (
            "3ds-3",
            CaptureMethod::Automatic,
            "fail",
            PaymentIntentStatus::RequiresPaymentMethod,
        ),
    ] {
        let pi = client
            .create_payment_intent(&charge(450, "pm_card_authenticationRequired", capture), key)
            .await
            .unwrap();
        assert_eq!(pi.status, PaymentIntentStatus::RequiresAction);
        assert_eq!(pi.next_action.as_ref().unwrap()["type"], "use_stripe_sdk");
        let secret = pi.client_secret.clone().unwrap();
        assert!(secret.starts_with(&format!("{}_secret_", pi.id)));

        let response = http
            .post(format!(
                "{}/_sandbox/payment_intents/{}/authenticate",
                sim.base_url, pi.id
            ))
            .json(&serde_json::json!({ "outcome": outcome }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let after = client.retrieve_payment_intent(&pi.id).await.unwrap();
        assert_eq!(after.status, expected, "{key}");
        if outcome == "fail" {
            assert_eq!(
                after.last_payment_error.unwrap().code.as_deref(),
                Some("payment_intent_authentication_failure")
            );
        } else {
            assert_eq!(after.card().map(|c| c.0), Some("visa"));
        }
    }
}

#[tokio::test]
async fn cancel_releases_a_hold_once() {
    let (_sim, client) = simulator(None).await;
    let pi = client
        .create_payment_intent(&charge(450, "pm_card_visa", CaptureMethod::Manual), "c1")
        .await
        .unwrap();
    let canceled = client
        .cancel_payment_intent(&pi.id, Some("requested_by_customer"), "c1-cancel")
        .await
        .unwrap();
    assert_eq!(canceled.status, PaymentIntentStatus::Canceled);
    assert_eq!(
        canceled.cancellation_reason.as_deref(),
        Some("requested_by_customer")
    );
    let err = client
        .cancel_payment_intent(&pi.id, None, "c1-cancel-again")
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).1.code, "payment_intent_unexpected_state");
    let err = client
        .capture_payment_intent(&pi.id, None, "c1-capture")
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).1.code, "payment_intent_unexpected_state");
}

#[tokio::test]
async fn refunds_stop_at_the_amount_received() {
    let (sim, client) = simulator(None).await;
    let pi = client
        .create_payment_intent(
            &charge(1000, "pm_card_visa", CaptureMethod::Automatic),
            "r1",
        )
        .await
        .unwrap();
    let partial = client
        .create_refund(&pi.id, Some(300), "r1-refund-1")
        .await
        .unwrap();
    assert_eq!(partial.status, RefundStatus::Succeeded);
    assert_eq!(partial.amount, 300);
    assert_eq!(partial.payment_intent.as_deref(), Some(pi.id.as_str()));

    let over = client
        .create_refund(&pi.id, Some(701), "r1-refund-2")
        .await
        .unwrap_err();
    let (status, refusal) = rejection(&over);
    assert_eq!(status, 400);
    assert_eq!(refusal.code, "amount_too_large");

    let rest = client
        .create_refund(&pi.id, None, "r1-refund-3")
        .await
        .unwrap();
    assert_eq!(rest.amount, 700);
    let again = client
        .create_refund(&pi.id, None, "r1-refund-4")
        .await
        .unwrap_err();
    assert_eq!(rejection(&again).1.code, "charge_already_refunded");

    let ledger = ledger(&sim).await;
    assert_eq!(ledger["payment_intents"][0]["amount_refunded"], 1000);
    assert_eq!(ledger["refunds"].as_array().unwrap().len(), 2);

    let held = client
        .create_payment_intent(&charge(1000, "pm_card_visa", CaptureMethod::Manual), "r2")
        .await
        .unwrap();
    let err = client
        .create_refund(&held.id, None, "r2-refund")
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).0, 400);
}

#[tokio::test]
async fn a_repeated_key_replays_the_first_intent() {
    let (sim, client) = simulator(None).await;
    let params = charge(450, "pm_card_visa", CaptureMethod::Automatic);
    let first = client.create_payment_intent(&params, "same").await.unwrap();
    let second = client.create_payment_intent(&params, "same").await.unwrap();
    assert_eq!(first.id, second.id);
    let ledger = ledger(&sim).await;
    assert_eq!(ledger["payment_intents"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["idempotency_keys"]["same"], 2);

    let other = charge(451, "pm_card_visa", CaptureMethod::Automatic);
    let err = client
        .create_payment_intent(&other, "same")
        .await
        .unwrap_err();
    let (status, refusal) = rejection(&err);
    assert_eq!(status, 400);
    assert!(is_idempotency_error(&refusal));
    assert!(decline(&refusal).is_none());
}

#[tokio::test]
async fn concurrent_duplicates_create_one_intent() {
    let (sim, client) = simulator(None).await;
    let params = charge(450, "pm_card_visa", CaptureMethod::Automatic);
    let attempts = (0..10).map(|_| {
        let (client, params) = (client.clone(), params.clone());
        tokio::spawn(async move { client.create_payment_intent(&params, "race").await })
    });
    let mut ids = std::collections::BTreeSet::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(pi) => {
                ids.insert(pi.id);
            }
            // A request still colliding after the client's retries is refused, never
            // charged: acceptable, as long as no second intent exists.
            Err(err) => assert!(is_idempotency_error(&rejection(&err).1), "{err}"),
        }
    }
    assert_eq!(ids.len(), 1);
    let ledger = ledger(&sim).await;
    assert_eq!(ledger["payment_intents"].as_array().unwrap().len(), 1);
}

/// Stripe charged, then the connection broke before its answer arrived: the retry
/// must carry the first try's key, so Stripe replays that charge instead of making a
/// second one.
#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_key() {
    let (sim, client) = simulator(None).await;
    sim.faults.apply(FaultUpdate {
        lose_next: [(
            "POST /v1/payment_intents".to_owned(),
            Loss {
                times: 1,
                status: LostAs::Drop,
            },
        )]
        .into(),
        ..FaultUpdate::default()
    });
    let pi = client
        .create_payment_intent(
            &charge(450, "pm_card_visa", CaptureMethod::Automatic),
            "charge-1",
        )
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
    let sent: Vec<(Option<String>, String)> = sim
        .faults
        .log(Some("POST /v1/payment_intents"))
        .into_iter()
        .map(|r| (r.key, r.fault))
        .collect();
    assert_eq!(
        sent,
        [
            (Some("charge-1".to_owned()), "lost".to_owned()),
            (Some("charge-1".to_owned()), "none".to_owned())
        ]
    );
    let ledger = ledger(&sim).await;
    assert_eq!(ledger["payment_intents"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["payment_intents"][0]["id"], pi.id.as_str());
    assert_eq!(ledger["idempotency_keys"]["charge-1"], 2, "replayed");
}

#[tokio::test]
async fn an_unsendable_idempotency_key_is_refused_before_sending() {
    let (sim, client) = simulator(None).await;
    let params = charge(450, "pm_card_visa", CaptureMethod::Automatic);
    for key in ["", "line\nbreak", &"k".repeat(256)] {
        let err = client
            .create_payment_intent(&params, key)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Setup(_)), "{err}");
    }
    assert!(sim.faults.calls().is_empty());
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let (sim, _) = simulator(None).await;
    let settings = StripeSettings {
        secret_key: SecretString::from("pk_test_nope"),
        ..StripeSettings::default()
    };
    let client = StripeClient::new(
        &sim.base_url,
        &settings,
        &crate::upstream::Guards::for_tests(),
    )
    .unwrap();
    let err = client.retrieve_payment_intent("pi_x").await.unwrap_err();
    assert_eq!(rejection(&err).0, 401);
    assert!(!err.to_string().contains("pk_test_nope"));
}

#[tokio::test]
async fn webhooks_arrive_signed() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
    let receiver = Router::new().route(
        "/webhooks/stripe",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let signature = headers
                    .get("stripe-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send((signature, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });
    let (_sim, client) = simulator(Some(format!("http://{addr}/webhooks/stripe"))).await;

    let pi = client
        .create_payment_intent(&charge(450, "pm_card_visa", CaptureMethod::Manual), "w1")
        .await
        .unwrap();
    client
        .capture_payment_intent(&pi.id, None, "w1-capture")
        .await
        .unwrap();

    let secrets = [SecretString::from(WEBHOOK_SECRET)];
    let mut types = Vec::new();
    while types.len() < 2 {
        let (signature, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        crate::upstream::signature::verify(
            &signature,
            &body,
            &secrets,
            chrono::Utc::now().timestamp(),
            300,
        )
        .unwrap();
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["object"], "event");
        assert_eq!(event["data"]["object"]["id"], pi.id.as_str());
        types.push(event["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    assert_eq!(
        types,
        [
            "payment_intent.amount_capturable_updated",
            "payment_intent.succeeded"
        ]
    );
    server.abort();
}
