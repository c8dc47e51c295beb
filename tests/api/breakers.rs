//! Circuit breakers and retry budgets (`upstream::guard`): an upstream that fails every
//! call trips its breaker, which then fails fast with `UPSTREAM_UNAVAILABLE` (naming the
//! upstream, with a retry-after hint) without calling it, shows in `/readyz`, and closes by
//! itself once a probe after the cool-down succeeds; the retry budget bounds the calls an
//! outage gets; and an order caught by an open Stripe breaker is charged once after it.

use crate::helpers::{Db, Sim, TestApp, spawn_app_with};
use crate::routes::INTENTS;
use crate::shop::{ORDER_FIELDS, StoreAction::Accept, placed, shop};
use cbtl_bff::config::{BreakerSettings, RetryBudgetSettings, Settings};
use serde_json::{Value, json};
use std::time::Duration;

const STORES: &str = "{ stores { id } }";

/// A breaker that opens after `min_calls` failing calls and cools down for `open_secs`.
fn quick_breaker(min_calls: usize, open_secs: u64) -> BreakerSettings {
    BreakerSettings {
        failure_ratio: 0.5,
        min_calls,
        window_secs: 30,
        open_secs,
    }
}

/// The Okya simulator's calls to its store list.
async fn store_calls(app: &TestApp) -> u64 {
    app.calls(Sim::Okya)
        .await
        .get("GET /v1/stores")
        .copied()
        .unwrap_or(0)
}

/// The first error of a response.
fn first_error(body: &Value) -> &Value {
    &body["errors"][0]
}

#[tokio::test]
async fn an_upstream_failing_every_call_trips_its_breaker_which_fails_fast_then_closes_by_itself() {
    let app = spawn_app_with(Db::Sqlite, |s| s.breaker = quick_breaker(6, 3)).await;
    assert_eq!(app.readiness().await["breakers"]["okya"]["state"], "closed");
    app.faults(Sim::Okya, json!({"error_rate": 1.0})).await;

    // Each failing query costs Okya three tries until six have failed; the breaker opens.
    for _ in 0..2 {
        let body = app.gql(STORES, json!({})).await;
        assert_eq!(
            first_error(&body)["extensions"]["code"],
            "UPSTREAM_UNAVAILABLE",
            "{body}"
        );
        assert!(
            first_error(&body)["extensions"].get("upstream").is_none(),
            "{body}"
        );
    }
    let reached = store_calls(&app).await;
    assert_eq!(reached, 6, "two queries, three tries each");
    let ready = app.readiness().await;
    assert_eq!(ready["breakers"]["okya"]["state"], "open", "{ready}");
    let wait = ready["breakers"]["okya"]["retry_after_secs"].as_u64();
    assert!(wait.is_some_and(|w| (1..=3).contains(&w)), "{ready}");
    assert_eq!(ready["breakers"]["stripe"]["state"], "closed", "{ready}");

    // While it is open, queries fail fast, say which upstream and when to come back, and
    // Okya is not called at all.
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let body = app.gql(STORES, json!({})).await;
        let extensions = &first_error(&body)["extensions"];
        assert_eq!(extensions["code"], "UPSTREAM_UNAVAILABLE", "{body}");
        assert_eq!(extensions["upstream"], "okya", "{body}");
        let retry_after = extensions["retryAfterSeconds"].as_u64().expect("a hint");
        assert!((1..=3).contains(&retry_after), "{body}");
        assert!(started.elapsed() < Duration::from_millis(500), "not fast");
    }
    assert_eq!(
        store_calls(&app).await,
        reached,
        "calls reached Okya while open"
    );

    // Okya recovers; after the cool-down the next call is a probe, which closes it.
    app.faults(Sim::Okya, json!({"error_rate": 0.0})).await;
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let body = app.gql(STORES, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(store_calls(&app).await, reached + 1);
    assert_eq!(app.readiness().await["breakers"]["okya"]["state"], "closed");
    let body = app.gql(STORES, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test]
async fn refusals_prove_the_upstream_is_up_and_do_not_trip_its_breaker() {
    let app = spawn_app_with(Db::Sqlite, |s| s.breaker = quick_breaker(3, 30)).await;
    let refused = crate::routes::Route {
        sim: Sim::Okya,
        name: "GET /v1/stores",
    };
    app.refuse_next(refused, 409, "invalid_state", 6).await;
    for _ in 0..6 {
        let body = app.gql(STORES, json!({})).await;
        assert!(body.get("errors").is_some(), "{body}");
    }
    assert_eq!(store_calls(&app).await, 6, "a refusal is not retried");
    assert_eq!(app.readiness().await["breakers"]["okya"]["state"], "closed");
    let body = app.gql(STORES, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
}

/// Okya calls made by `queries` store lists while Okya answers every call with a 503, with
/// the breaker kept out of the way.
async fn calls_during_outage(budget: RetryBudgetSettings, queries: u64) -> u64 {
    let tweak = move |s: &mut Settings| {
        s.breaker.min_calls = 1_000_000;
        s.retry_budget = budget;
    };
    let app = spawn_app_with(Db::Sqlite, tweak).await;
    app.faults(Sim::Okya, json!({"error_rate": 1.0})).await;
    for _ in 0..queries {
        let body = app.gql(STORES, json!({})).await;
        assert_eq!(
            first_error(&body)["extensions"]["code"],
            "UPSTREAM_UNAVAILABLE",
            "{body}"
        );
    }
    store_calls(&app).await
}

#[tokio::test]
async fn the_retry_budget_bounds_the_calls_an_outage_gets() {
    let queries = 20;
    let unbounded = calls_during_outage(
        RetryBudgetSettings {
            ratio: 0.1,
            min_per_sec: 1_000,
            window_secs: 10,
        },
        queries,
    )
    .await;
    assert_eq!(unbounded, 3 * queries, "every query tried three times");
    // A tenth of the calls may be retried, and nothing more: 20 calls earn 2 retries.
    let budgeted = calls_during_outage(
        RetryBudgetSettings {
            ratio: 0.1,
            min_per_sec: 0,
            window_secs: 10,
        },
        queries,
    )
    .await;
    assert!(
        (queries..=queries + 2).contains(&budgeted),
        "{budgeted} calls for {queries} queries"
    );
}

#[tokio::test]
async fn an_order_caught_by_an_open_stripe_breaker_is_charged_once_after_it_closes() {
    let shop = shop(|s| {
        s.breaker = quick_breaker(3, 3);
        s.orders.checkout_wait_ms = 1_000;
    })
    .await;
    let cart = shop.filled_cart("str_pasadena").await;
    shop.faults(Sim::Stripe, json!({"error_rate": 1.0})).await;

    // The charge fails three times, which opens Stripe's breaker; the step's own retries
    // are then refused without reaching Stripe, and checkout says why.
    let body = shop
        .checkout_body(ORDER_FIELDS, &cart, "pm_card_visa", None, "k")
        .await;
    let extensions = &first_error(&body)["extensions"];
    assert_eq!(extensions["code"], "UPSTREAM_UNAVAILABLE", "{body}");
    assert_eq!(extensions["upstream"], "stripe", "{body}");
    assert_eq!(
        shop.readiness().await["breakers"]["stripe"]["state"],
        "open"
    );
    let tried = shop.log(INTENTS).await.len();
    assert_eq!(tried, 3, "one charge, three tries, then the breaker");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(shop.log(INTENTS).await.len(), tried, "charged while open");
    let id = shop.only_order_id().await;
    let row = shop.row(&id).await;
    assert!(row.step.is_active() && row.attention.is_none(), "{row:?}");
    assert!(row.payment_intent_id.is_none(), "{row:?}");

    // Stripe recovers; the breaker's probe is the flow's next try, and the order goes on.
    shop.faults(Sim::Stripe, json!({"error_rate": 0.0})).await;
    shop.wait_for_status(&id, "AWAITING_ACCEPTANCE").await;
    assert_eq!(
        shop.readiness().await["breakers"]["stripe"]["state"],
        "closed"
    );
    shop.store_action(&cart, Accept).await;
    shop.wait_for_status(&id, "IN_PREPARATION").await;
    // The same checkout answers with the order.
    assert_eq!(
        placed(&shop.checkout(&cart, "pm_card_visa", None, "k").await),
        id
    );
    // Every charge request carried the first one's key, and one intent holds the money.
    shop.assert_one_key(INTENTS, tried + 1).await;
    let intents = shop.intents_for(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["amount_received"], 1874, "{intents:?}");
    shop.assert_money_invariants().await;
}

const ORDER_STATUS: &str = "query($id: ID!) { order(id: $id) { status } }";

/// Sends `n` `order(id)` queries at once; every one must answer with a status.
async fn order_burst(shop: &TestApp, id: &str, n: usize) {
    let burst = (0..n).map(|_| shop.data(ORDER_STATUS, json!({"id": id})));
    for data in futures_util::future::join_all(burst).await {
        assert!(data["order"]["status"].is_string(), "{data}");
    }
}

/// The sum of the simulator's calls on every route.
async fn all_calls(shop: &TestApp, sim: Sim) -> u64 {
    shop.calls(sim).await.values().sum()
}

#[tokio::test]
async fn calls_in_flight_to_one_upstream_are_bounded_and_the_rest_wait_their_turn() {
    let shop = shop(|s| s.okya.max_concurrent_calls = 3).await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&shop.checkout(&cart, "pm_card_visa", None, "k").await);
    shop.wait_until_settled(&id).await;
    shop.faults(Sim::Okya, json!({"latency_ms": 150})).await;
    shop.reset_calls(Sim::Okya).await;

    // Twenty queries at once each read the order at Okya: three at a time, all answered.
    order_burst(&shop, &id, 20).await;
    assert_eq!(all_calls(&shop, Sim::Okya).await, 20, "every read was sent");
    let peak = shop.peak_in_flight(Sim::Okya).await;
    assert!((1..=3).contains(&peak), "{peak} Okya calls at once");
}

#[tokio::test]
async fn a_call_that_finds_no_free_slot_in_time_is_not_sent_and_the_order_is_read_from_our_copy() {
    // One slot, and a call waits for it at most 400 ms, while Okya takes 300 ms a call:
    // of five at once, the first two are sent and the rest give up without being sent.
    let shop = shop(|s| {
        s.okya.max_concurrent_calls = 1;
        s.okya.timeout_ms = 400;
    })
    .await;
    let cart = shop.filled_cart("str_pasadena").await;
    let id = placed(&shop.checkout(&cart, "pm_card_visa", None, "k").await);
    shop.wait_until_settled(&id).await;
    shop.faults(Sim::Okya, json!({"latency_ms": 300})).await;
    shop.reset_calls(Sim::Okya).await;

    order_burst(&shop, &id, 5).await;
    let sent = all_calls(&shop, Sim::Okya).await;
    assert!((1..5).contains(&sent), "{sent} of 5 reads sent");
    assert_eq!(shop.peak_in_flight(Sim::Okya).await, 1);
    // Being full is not Okya failing: its breaker stays closed.
    let ready = shop.readiness().await;
    assert_eq!(ready["breakers"]["okya"]["state"], "closed", "{ready}");
}
