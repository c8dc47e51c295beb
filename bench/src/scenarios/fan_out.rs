//! `fan-out`: (1) with every simulator slowed to 50 ms a call (`PUT /_sandbox/faults`), a
//! query needing Okya, Stripe and SessionM against the slowest of the same three calls
//! made directly; (2) at zero latency, the 50-order page query's upstream calls per
//! request by system (the simulators' `/_sandbox/calls` counters) and database queries per
//! request (`cbtl_db_queries_total` from `/metrics`, less what the service's background
//! work ran in an idle window of the same length).
//!
//! The fan-out query is `order(id)` of an order waiting for 3-D Secure (Okya: the order's
//! fresh status; Stripe: `payment.clientSecret` retrieves the PaymentIntent) beside
//! `me { loyalty { pointsBalance } }` (SessionM: the wallet lookup): the only Stripe read
//! the schema has is that client secret.

use super::{Ctx, addr_of, with_failures};
use crate::{
    Error,
    client::{self, Gql},
    procs::{self, SIMULATORS, Stack},
};
use base64::Engine;
use bench::{
    check::{self, Expected},
    load::{self, Outcome, Plan, Target},
    table::{Goal, Row, ratio_text},
};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const FAN_OUT: &str = "query($id: ID!) { order(id: $id) { status payment { status clientSecret } } me { loyalty { pointsBalance } } }";
/// The page query.
pub const PAGE: &str = "{ me { orders(first: 50) { edges { node { store { name } lines { product { name } } statusHistory { status } } } } } }";
const PAGE_ORDERS: usize = 50;
const LATENCY_MS: u64 = 50;

/// Calls per route on every simulator since the last reset.
async fn calls(http: &reqwest::Client, stack: &Stack) -> Result<Map<String, Value>, Error> {
    let mut all = Map::new();
    for (system, key) in SIMULATORS {
        let v: Value = http
            .get(format!("{}/_sandbox/calls", stack.url(key)?))
            .send()
            .await?
            .json()
            .await?;
        all.insert(system.to_owned(), v);
    }
    Ok(all)
}

async fn reset_calls(http: &reqwest::Client, stack: &Stack) -> Result<(), Error> {
    for (_, key) in SIMULATORS {
        http.delete(format!("{}/_sandbox/calls", stack.url(key)?))
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(())
}

/// `cbtl_db_queries_total` from the service's `/metrics`.
async fn db_queries(http: &reqwest::Client, stack: &Stack) -> Result<f64, Error> {
    let text = http
        .get(format!("http://{}/metrics", stack.addr))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    parse_counter(&text, "cbtl_db_queries_total")
        .ok_or_else(|| "no cbtl_db_queries_total in /metrics".into())
}

/// A counter's value in Prometheus text (summed over its label sets).
pub fn parse_counter(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

fn sequential(duration: Duration) -> Plan {
    Plan {
        connections: 1,
        warmup: Duration::from_millis(300),
        duration,
        rate: None,
    }
}

pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    let customer = ctx.customer().await?;
    let gql = ctx.gql().await?;
    let page_customer = client::sign_up(&gql, ctx.fresh_customer_number()).await?;
    let window = if ctx.args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let stack = ctx.stack().await?;
    let http = reqwest::Client::new();
    procs::set_faults(stack, &http, &json!({"latency_ms": 0})).await?;

    // The page customer's 50 orders, five at a time.
    let started = Instant::now();
    for _ in 0..PAGE_ORDERS / 5 {
        let mut batch = Vec::new();
        for _ in 0..5 {
            let gql = gql.clone();
            let c = page_customer.clone();
            batch.push(tokio::spawn(async move {
                client::place_order(&gql, &c, "pm_card_visa").await
            }));
        }
        for task in batch {
            let order = task.await.map_err(|e| e.to_string())??;
            if order["status"] != "AWAITING_ACCEPTANCE" {
                return Err(format!("a page order ended {order}").into());
            }
        }
    }
    println!(
        "placed {PAGE_ORDERS} orders for the page customer in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // An order waiting for 3-D Secure: its PaymentIntent is read from Stripe.
    let order = client::place_order(&gql, &customer, "pm_card_authenticationRequired").await?;
    let order_id = order["id"].as_str().ok_or("no order id")?.to_owned();
    let secret = order["payment"]["clientSecret"]
        .as_str()
        .ok_or_else(|| format!("no client secret: {order}"))?;
    let intent = secret
        .split("_secret_")
        .next()
        .ok_or("client secret without an intent")?
        .to_owned();
    let okya = stack.url("CBTL_OKYA__BASE_URL")?;
    let okya_orders: Value = http
        .get(format!("{okya}/_sandbox/orders"))
        .send()
        .await?
        .json()
        .await?;
    let okya_order = okya_orders["orders"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|o| o["id"].as_str())
        .ok_or("no Okya order")?
        .to_owned();

    let body = json!({"query": FAN_OUT, "variables": {"id": order_id}}).to_string();
    let first = gql
        .http
        .post(&gql.url)
        .bearer_auth(&customer.token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?
        .bytes()
        .await?;
    let data = check::graphql_data(&first)?;
    if data["order"]["payment"]["clientSecret"].is_null() || data["me"]["loyalty"].is_null() {
        return Err(format!("the fan-out query lacks a part: {data}").into());
    }
    // Which upstream calls one fan-out query makes.
    reset_calls(&http, stack).await?;
    gql.http
        .post(&gql.url)
        .bearer_auth(&customer.token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?
        .error_for_status()?;
    let one = calls(&http, stack).await?;
    println!("one fan-out query calls: {}", Value::Object(one.clone()));

    let service_target = Target {
        body: Bytes::from(body),
        ..Target::graphql(stack.addr, FAN_OUT, Expected::graphql_data())
    }
    .with_header("authorization", &format!("Bearer {}", customer.token));
    let okya_key = stack.url("CBTL_OKYA__API_KEY")?;
    let stripe = stack.url("CBTL_STRIPE__BASE_URL")?;
    let stripe_key = stack.url("CBTL_STRIPE__SECRET_KEY")?;
    let pos_url = stack.url("CBTL_SESSIONM__POS_URL")?;
    let pos_auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        stack.url("CBTL_SESSIONM__POS_API_KEY")?,
        stack.url("CBTL_SESSIONM__POS_API_SECRET")?
    ));
    let accounts: Value = http
        .get(format!("{okya}/_sandbox/accounts"))
        .send()
        .await?
        .json()
        .await?;
    let user_id = accounts
        .as_array()
        .or_else(|| accounts["accounts"].as_array())
        .into_iter()
        .flatten()
        .find(|a| a["phone"] == customer.phone.as_str())
        .and_then(|a| a["loyalty_id"].as_str())
        .ok_or("no SessionM id")?
        .to_owned();
    let ok_json = || {
        Expected::Test(std::sync::Arc::new(|body: &[u8]| {
            serde_json::from_slice::<Value>(body)
                .map(|_| ())
                .map_err(|e| format!("not JSON ({e}): {}", check::excerpt(body)))
        }))
    };
    let get = |url: &str, path: String, auth: String| -> Result<Target, Error> {
        Ok(Target {
            addr: addr_of(url)?,
            method: hyper::Method::GET,
            path,
            headers: vec![("authorization".into(), auth)],
            body: Bytes::new(),
            unique: None,
            expected: ok_json(),
        })
    };
    let directs = vec![
        (
            "Okya GET /v1/orders/{id}",
            get(
                &okya,
                format!("/v1/orders/{okya_order}"),
                format!("Bearer {okya_key}"),
            )?,
        ),
        (
            "Stripe GET /v1/payment_intents/{id}",
            get(
                &stripe,
                format!("/v1/payment_intents/{intent}?expand[]=latest_charge"),
                format!("Bearer {stripe_key}"),
            )?,
        ),
        (
            "SessionM POST /api/2.0/lookup",
            Target {
                addr: addr_of(&pos_url)?,
                method: hyper::Method::POST,
                path: "/api/2.0/lookup".into(),
                headers: vec![("authorization".into(), format!("Basic {pos_auth}"))],
                body: Bytes::from(
                    json!({
                        "store_id": stack.url("CBTL_SESSIONM__ECOMMERCE_STORE_ID")?,
                        "client_id": stack.url("CBTL_SESSIONM__CLIENT_ID")?,
                        "request_id": "bench-fanout-{n}",
                        "culture": "en-US",
                        "request_payload": {"user_id": user_id},
                    })
                    .to_string(),
                ),
                unique: Some("{n}"),
                expected: ok_json(),
            },
        ),
    ];

    procs::set_faults(stack, &http, &json!({"latency_ms": LATENCY_MS})).await?;
    let through = load::run(&service_target, sequential(window)).await;
    let mut slowest: Option<(&str, Outcome)> = None;
    let mut direct_json = Map::new();
    for (name, target) in &directs {
        let outcome = load::run(target, sequential(window)).await;
        println!("direct {name}: {}", outcome.summary());
        direct_json.insert((*name).to_owned(), super::outcome_json(&outcome));
        if slowest
            .as_ref()
            .is_none_or(|(_, s)| outcome.latency_ms(0.5) > s.latency_ms(0.5))
        {
            slowest = Some((*name, outcome));
        }
    }
    procs::set_faults(stack, &http, &json!({"latency_ms": 0})).await?;
    let (slowest_name, slowest) = slowest.ok_or("no direct call")?;
    let ctx_through = through;
    let ratio = ctx_through.latency_ms(0.5) / slowest.latency_ms(0.5);
    println!(
        "fan-out query at {LATENCY_MS} ms per upstream: {}; slowest single upstream {slowest_name} p50 {:.1} ms; ratio {}",
        ctx_through.summary(),
        slowest.latency_ms(0.5),
        ratio_text(ratio)
    );

    // The page query: calls and queries per request at zero latency.
    let page_requests: u32 = 5;
    let page_data = gql
        .send(Some(&page_customer.token), PAGE, json!({}))
        .await?;
    let edges = page_data["me"]["orders"]["edges"]
        .as_array()
        .map_or(0, Vec::len);
    if edges != PAGE_ORDERS {
        return Err(format!("the page has {edges} orders, not {PAGE_ORDERS}").into());
    }
    // What the service's background work queries meanwhile, over an idle window as long
    // as the measured one.
    let idle_from = db_queries(&http, stack).await?;
    let idle_start = Instant::now();
    time_page(&gql, &page_customer.token, page_requests).await?;
    let measured_len = idle_start.elapsed();
    let q_before_idle = db_queries(&http, stack).await?;
    let measured_queries = q_before_idle - idle_from;
    tokio::time::sleep(measured_len).await;
    let idle_queries = db_queries(&http, stack).await? - q_before_idle;
    // Calls: counted over the same requests again, after a reset.
    reset_calls(&http, stack).await?;
    let timing = time_page(&gql, &page_customer.token, page_requests).await?;
    let page_calls = calls(&http, stack).await?;
    let per_request = (measured_queries - idle_queries) / f64::from(page_requests);
    let mut by_system = Vec::new();
    for (system, routes) in &page_calls {
        // Counted from +0.0: an empty float sum is -0.0.
        let total = routes
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, n)| n.as_f64())
            .fold(0.0, |a, b| a + b);
        by_system.push(format!("{system} {}", total / f64::from(page_requests)));
    }
    println!(
        "page query ({PAGE_ORDERS} orders): upstream calls per request: {}; routes: {}",
        by_system.join(", "),
        Value::Object(page_calls.clone())
    );
    println!(
        "page query: database queries per request {per_request:.1} ({measured_queries} in {page_requests} requests, {idle_queries} in an idle window as long); p50 {:.1} ms",
        timing
    );
    ctx.raw.insert(
        "fan_out".into(),
        json!({
            "query": FAN_OUT,
            "latency_ms_per_upstream": LATENCY_MS,
            "calls_of_one_query": one,
            "through_service": super::outcome_json(&ctx_through),
            "direct": direct_json,
            "slowest": slowest_name,
            "ratio_p50": ratio,
            "page": {
                "query": PAGE,
                "requests": page_requests,
                "upstream_calls": page_calls,
                "db_queries_measured": measured_queries,
                "db_queries_idle_window": idle_queries,
                "db_queries_per_request": per_request,
                "p50_ms": timing,
            },
        }),
    );
    ctx.rows.push(Row {
        what: format!(
            "fan-out: `order(id) {{ payment {{ clientSecret }} }}` + `me {{ loyalty {{ pointsBalance }} }}` (Okya, Stripe, SessionM at {LATENCY_MS} ms each), p50 vs the slowest single upstream direct ({slowest_name})"
        ),
        service: with_failures(
            format!(
                "p50 {:.1} ms (slowest upstream p50 {:.1} ms)",
                ctx_through.latency_ms(0.5),
                slowest.latency_ms(0.5)
            ),
            ctx_through.failures,
        ),
        judged: Some(if ctx_through.failures == 0 { ratio } else { f64::NAN }),
        judged_text: Some(ratio_text(ratio)),
        target: Some((Goal::AtMost(1.2), "×".into())),
        ..Row::default()
    });
    ctx.rows.push(Row::info(
        "page `me { orders(first: 50) … }` (50 orders): upstream calls per request, by system"
            .to_owned(),
        by_system.join(", "),
    ));
    ctx.rows.push(Row {
        what: "page (50 orders): database queries per request (background work subtracted)".into(),
        service: format!("{per_request:.1} (p50 {timing:.1} ms at zero upstream latency)"),
        ..Row::default()
    });
    Ok(())
}

/// Sends the page query `n` times in a row; the median latency in ms.
async fn time_page(gql: &Gql, token: &str, n: u32) -> Result<f64, Error> {
    let mut ms = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        gql.send(Some(token), PAGE, json!({})).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_counter_is_read_from_prometheus_text() {
        let text = "# TYPE cbtl_db_queries_total counter\ncbtl_db_queries_total 1234\ncbtl_db_queries_total_other 5\n";
        assert_eq!(
            super::parse_counter(text, "cbtl_db_queries_total"),
            Some(1234.0)
        );
        let labelled = "cbtl_db_queries_total{a=\"1\"} 2\ncbtl_db_queries_total{a=\"2\"} 3\n";
        assert_eq!(
            super::parse_counter(labelled, "cbtl_db_queries_total"),
            Some(5.0)
        );
        assert_eq!(super::parse_counter("", "cbtl_db_queries_total"), None);
    }
}
