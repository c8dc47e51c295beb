//! A page of orders costs the same database queries and upstream calls whatever its size:
//! stores and products come from the catalogue (one read of each when it is cold), status
//! histories from one query for the page.

use crate::helpers::{Sim, TestApp};
use crate::shop::{placed, shop};
use serde_json::json;
use std::collections::BTreeMap;

const PAGE: &str = "query($n: Int!) { me { orders(first: $n) { edges { node { store { name } lines { product { name } } statusHistory { status } } } } } }";

/// Statements and upstream calls of one page of `n` orders, on a cold catalogue. The
/// fewest statements and calls of a few tries: the service's background work (the sweeper,
/// the job runner, reconciliation) shares the counters.
async fn cost(app: &TestApp, n: usize) -> (u64, BTreeMap<String, u64>) {
    let mut fewest = u64::MAX;
    let mut calls: Option<BTreeMap<String, u64>> = None;
    for _ in 0..5 {
        app.app.state().upstreams.catalog.invalidate();
        for sim in [Sim::Okya, Sim::Stripe, Sim::Sessionm, Sim::Epoint] {
            app.reset_calls(sim).await;
        }
        let before = app.app.state().db_statements.get();
        let data = app.data(PAGE, json!({"n": n})).await;
        let statements = app.app.state().db_statements.get() - before;
        let edges = data["me"]["orders"]["edges"].as_array().expect("edges");
        assert_eq!(edges.len(), n);
        for edge in edges {
            let node = &edge["node"];
            assert!(node["store"]["name"].is_string(), "{node}");
            assert!(node["lines"][0]["product"]["name"].is_string(), "{node}");
            assert!(
                !node["statusHistory"].as_array().unwrap().is_empty(),
                "{node}"
            );
        }
        fewest = fewest.min(statements);
        let mut all = BTreeMap::new();
        for (sim, name) in [
            (Sim::Okya, "okya"),
            (Sim::Stripe, "stripe"),
            (Sim::Sessionm, "sessionm"),
            (Sim::Epoint, "epoint"),
        ] {
            for (route, count) in app.calls(sim).await {
                all.insert(format!("{name} {route}"), count);
            }
        }
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        if calls.as_ref().is_none_or(|c| total(&all) < total(c)) {
            calls = Some(all);
        }
    }
    (fewest, calls.unwrap_or_default())
}

#[tokio::test]
async fn a_page_of_50_orders_costs_what_a_page_of_5_does() {
    // The default background pace (a poll a second) rather than the shop's 50 ms, so that
    // a page's statements are rarely counted with a poll's.
    let shop = shop(|s| {
        s.orders.sweep_interval_ms = 1_000;
        s.jobs.poll_interval_ms = 1_000;
        // Each idle worker polls on its own: one, so a poll rarely lands in a page.
        s.jobs.workers = 1;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let cart = shop.filled_cart("str_pasadena").await;
        ids.push(placed(
            &shop
                .checkout(&cart, "pm_card_visa", None, &format!("k{i}"))
                .await,
        ));
    }
    // The orders' own background work (acceptance, the POS, SessionM) would be counted
    // with the page's statements: let it finish first.
    for id in &ids {
        shop.wait_until_settled(id).await;
    }
    let (five, five_calls) = cost(&shop, 5).await;
    let (fifty, fifty_calls) = cost(&shop, 50).await;
    println!("page of 5: {five} statements, calls {five_calls:?}");
    println!("page of 50: {fifty} statements, calls {fifty_calls:?}");
    assert_eq!(five, fifty, "statements grow with the page");
    assert_eq!(five_calls, fifty_calls, "upstream calls grow with the page");
    // At most one call per resource type: the catalogue's stores and products.
    assert!(fifty_calls.values().all(|&n| n <= 1), "{fifty_calls:?}");
    assert!(fifty <= 6, "{fifty} statements for one page");
}
