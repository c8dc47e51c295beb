//! The simulator over HTTP: idempotency, faults, refusals and the ledger.

use super::{StripeSimConfig, start};
use crate::{Simulator, faults::Faults};
use serde_json::{Value, json};
use std::time::Duration;

async fn sim() -> Simulator {
    start(StripeSimConfig::default(), Faults::new(0, 0.0))
        .await
        .unwrap()
}

fn create(
    http: &reqwest::Client,
    sim: &Simulator,
    key: &str,
    form: &str,
) -> reqwest::RequestBuilder {
    create_as(http, sim, "sk_test_sim", key, form)
}

fn create_as(
    http: &reqwest::Client,
    sim: &Simulator,
    api_key: &str,
    key: &str,
    form: &str,
) -> reqwest::RequestBuilder {
    http.post(format!("{}/v1/payment_intents", sim.base_url))
        .bearer_auth(api_key)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
}

const VISA: &str = "amount=450&currency=usd&payment_method=pm_card_visa&confirm=true\
    &automatic_payment_methods[enabled]=true&automatic_payment_methods[allow_redirects]=never";

#[tokio::test]
async fn a_duplicate_in_flight_gets_409_idempotency_key_in_use() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let (a, b) = tokio::join!(
        create(&http, &sim, "dup", VISA).send(),
        create(&http, &sim, "dup", VISA).send()
    );
    let mut answers = Vec::new();
    for response in [a.unwrap(), b.unwrap()] {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        answers.push((status, body["error"]["code"].as_str().map(str::to_owned)));
    }
    answers.sort();
    assert_eq!(
        answers,
        [
            (200, None),
            (409, Some("idempotency_key_in_use".to_owned()))
        ]
    );

    let replay = create(&http, &sim, "dup", VISA).send().await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}

async fn faults(sim: &Simulator, update: Value) {
    let status = reqwest::Client::new()
        .put(format!("{}/_sandbox/faults", sim.base_url))
        .json(&update)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
}

#[tokio::test]
async fn a_slow_charge_holds_its_key_in_flight_for_as_long_as_it_takes() {
    let sim = sim().await;
    faults(
        &sim,
        json!({"slow_next": {"POST /v1/payment_intents": {"ms": 400}}}),
    )
    .await;
    let http = reqwest::Client::new();
    let first = tokio::spawn(create(&http, &sim, "slow", VISA).send());
    // The second request goes once the first has arrived and holds the key.
    let ledger_url = format!("{}/_sandbox/ledger", sim.base_url);
    for _ in 0..200 {
        let ledger: Value = http
            .get(&ledger_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ledger["idempotency_keys"]["slow"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = create(&http, &sim, "slow", VISA).send().await.unwrap();
    assert_eq!(second.status(), 409);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200);
    let after = create(&http, &sim, "slow", VISA).send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(after.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_500_after_acting_is_saved_and_replayed_and_the_intent_is_found_by_search() {
    let sim = sim().await;
    faults(
        &sim,
        json!({"lose_next": {"POST /v1/payment_intents": {"status": 500}}}),
    )
    .await;
    let http = reqwest::Client::new();
    let form = format!("{VISA}&metadata[order_id]=ord_1");
    let first = create(&http, &sim, "k500", &form).send().await.unwrap();
    assert_eq!(first.status(), 500);
    let again = create(&http, &sim, "k500", &form).send().await.unwrap();
    assert_eq!(again.status(), 500, "the saved 500 is replayed");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let found: Value = http
        .get(format!("{}/v1/payment_intents/search", sim.base_url))
        .bearer_auth("sk_test_sim")
        .query(&[("query", "metadata['order_id']:'ord_1'")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["object"], "search_result");
    assert_eq!(found["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(found["data"][0]["status"], "succeeded");
    let none: Value = http
        .get(format!("{}/v1/payment_intents/search", sim.base_url))
        .bearer_auth("sk_test_sim")
        .query(&[(
            "query",
            "metadata['order_id']:'ord_2' AND status:'succeeded'",
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"], json!([]));
}

#[tokio::test]
async fn stripe_refusals_have_stripe_shapes() {
    let sim = sim().await;
    let http = reqwest::Client::new();

    let anonymous = http
        .post(format!("{}/v1/payment_intents", sim.base_url))
        .body(VISA)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let typo = create(&http, &sim, "t1", &format!("{VISA}&ammount=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(typo.status(), 400);
    let body: Value = typo.json().await.unwrap();
    assert_eq!(body["error"]["code"], "parameter_unknown");
    assert_eq!(body["error"]["param"], "ammount");
    // A validation failure is not saved: the same key works once the request is fixed.
    assert_eq!(
        create(&http, &sim, "t1", VISA)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let redirects = "amount=450&currency=usd&payment_method=pm_card_visa&confirm=true";
    let body: Value = create(&http, &sim, "t2", redirects)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["param"], "return_url");

    let small = create(&http, &sim, "t3", &VISA.replace("amount=450", "amount=10"))
        .send()
        .await
        .unwrap();
    let body: Value = small.json().await.unwrap();
    assert_eq!(body["error"]["code"], "amount_too_small");

    let nowhere = http
        .get(format!("{}/v1/charges", sim.base_url))
        .bearer_auth("sk_test_sim")
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    let body: Value = nowhere.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_api_key() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let first: Value = create(&http, &sim, "shared", VISA)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_account: Value = create_as(&http, &sim, "sk_test_other", "shared", VISA)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(first["id"], other_account["id"]);
    // Unexpanded, latest_charge is the charge id, as at Stripe.
    assert!(first["latest_charge"].as_str().unwrap().starts_with("ch_"));
}

#[tokio::test]
async fn events_are_listed_even_without_a_webhook_url() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let form = VISA.replace("pm_card_visa", "pm_card_chargeDeclined");
    let declined = create(&http, &sim, "e1", &form).send().await.unwrap();
    assert_eq!(declined.status(), 402);
    let unkeyed = http
        .post(format!("{}/v1/payment_intents", sim.base_url))
        .bearer_auth("sk_test_sim")
        .body(VISA)
        .send()
        .await
        .unwrap();
    assert_eq!(unkeyed.status(), 200);
    let ledger: Value = http
        .get(format!("{}/_sandbox/ledger", sim.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = ledger["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["payment_intent.payment_failed", "payment_intent.succeeded"]
    );
    assert_eq!(ledger["requests_without_idempotency_key"], 1);
    assert_eq!(
        ledger["payment_intents"][0]["status"],
        "requires_payment_method"
    );
    assert_eq!(
        ledger["payment_intents"][0]["payment_method"],
        "pm_card_chargeDeclined"
    );
    assert_eq!(ledger["events"][0]["delivered"], false);
}

/// `GET /v1/payment_intents` as Stripe documents it: newest first, `limit`, paging with
/// `starting_after`/`ending_before` and `has_more`, `created[…]` bounds.
#[tokio::test]
async fn payment_intents_are_listed_newest_first_in_pages() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..5 {
        let intent: Value = create(&http, &sim, &format!("list-{n}"), VISA)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(intent["id"].as_str().unwrap().to_owned());
    }
    let list = |query: String| {
        let http = http.clone();
        let url = format!("{}/v1/payment_intents?{query}", sim.base_url);
        async move {
            let answer = http
                .get(url)
                .bearer_auth("sk_test_sim")
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap())
        }
    };
    let page_ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, first) = list("limit=2&expand[]=data.latest_charge".to_owned()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "list");
    assert_eq!(first["has_more"], true);
    assert_eq!(page_ids(&first), [ids[4].clone(), ids[3].clone()]);
    assert_eq!(first["data"][0]["latest_charge"]["object"], "charge");
    let (_, second) = list(format!("limit=2&starting_after={}", ids[3])).await;
    assert_eq!(page_ids(&second), [ids[2].clone(), ids[1].clone()]);
    let (_, last) = list(format!("limit=2&starting_after={}", ids[1])).await;
    assert_eq!(page_ids(&last), [ids[0].clone()]);
    assert_eq!(last["has_more"], false);
    let (_, before) = list(format!("limit=2&ending_before={}", ids[1])).await;
    assert_eq!(page_ids(&before), [ids[3].clone(), ids[2].clone()]);
    let created = first["data"][0]["created"].as_i64().unwrap();
    let (_, future) = list(format!("created[gte]={}", created + 3600)).await;
    assert_eq!(page_ids(&future), Vec::<String>::new());
    let (_, recent) = list(format!("created[gte]={}", created - 3600)).await;
    assert_eq!(page_ids(&recent).len(), 5);
    let (status, refused) = list("limit=101".to_owned()).await;
    assert_eq!((status, &refused["error"]["param"]), (400, &json!("limit")));
}
