//! `checkout`: `--customers` (20) signed-in customers, each looping cart → add a line →
//! checkout with a card that pays, simulators at zero latency, for `--checkout-secs`, on a
//! fresh SQLite service and then a fresh PostgreSQL one (each with its own simulators).
//! Orders per second count only checkouts answered `AWAITING_ACCEPTANCE`; p50/p99 are the
//! checkout mutation's own latency. The SQLite service's start time and memory feed
//! `memory-start`.

use super::{Ctx, MemoryFigures};
use crate::{
    Error,
    client::{self, Customer, Gql},
    procs::Database,
};
use bench::{load::new_histogram, table::Row};
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::{Duration, Instant};

struct Loop {
    orders: u64,
    failures: u64,
    reasons: Vec<String>,
    checkout_us: Histogram<u64>,
}

pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    let mut databases = vec![("SQLite", Database::Sqlite)];
    if !ctx.args.no_postgres {
        databases.push((
            "PostgreSQL",
            Database::Postgres {
                admin_url: ctx.args.postgres_url.clone(),
            },
        ));
    }
    for (label, database) in databases {
        let name = format!("checkout-{}", label.to_lowercase());
        let stack = ctx.start_stack(&name, &database).await?;
        let result = measure(ctx, label, &stack).await;
        if label == "SQLite" {
            ctx.memory = Some(MemoryFigures {
                start_to_ready: stack.start_to_ready,
                rss_at_rest_kib: stack.rss_at_rest_kib,
                rss_after_checkout_kib: stack.rss_kib(),
                orders: result.as_ref().map_or(0, |r| *r),
            });
        }
        stack.stop().await;
        result?;
    }
    Ok(())
}

async fn measure(ctx: &mut Ctx, label: &str, stack: &crate::procs::Stack) -> Result<u64, Error> {
    let gql = Gql::new(&format!("http://{}", stack.addr));
    let started = Instant::now();
    let mut customers = Vec::new();
    for chunk in (1..=ctx.args.customers).collect::<Vec<_>>().chunks(5) {
        let mut tasks = Vec::new();
        for &n in chunk {
            let gql = gql.clone();
            tasks.push(tokio::spawn(async move { client::sign_up(&gql, n).await }));
        }
        for task in tasks {
            customers.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    // One untimed order each: connections, caches and the first writes are warm.
    let mut warm = Vec::new();
    for c in &customers {
        let gql = gql.clone();
        let c = c.clone();
        warm.push(tokio::spawn(async move {
            client::place_order(&gql, &c, "pm_card_visa").await
        }));
    }
    for task in warm {
        task.await.map_err(|e| e.to_string())??;
    }
    println!(
        "{label}: {} customers signed up and warmed in {:.1} s",
        customers.len(),
        started.elapsed().as_secs_f64()
    );
    let duration = ctx.args.checkout_duration();
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in customers {
        let gql = gql.clone();
        tasks.push(tokio::spawn(customer_loop(gql, c, end)));
    }
    let mut total = Loop {
        orders: 0,
        failures: 0,
        reasons: Vec::new(),
        checkout_us: new_histogram(),
    };
    for task in tasks {
        let one = task.await.map_err(|e| e.to_string())?;
        total.orders += one.orders;
        total.failures += one.failures;
        for r in one.reasons {
            if total.reasons.len() < 5 {
                total.reasons.push(r);
            }
        }
        let _ = total.checkout_us.add(&one.checkout_us);
    }
    let secs = duration.as_secs_f64();
    let per_sec = total.orders as f64 / secs;
    let p50 = total.checkout_us.value_at_quantile(0.5) as f64 / 1000.0;
    let p99 = total.checkout_us.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "{label}: {} orders in {secs:.0} s = {per_sec:.1} orders/s, checkout p50 {p50:.1} ms, p99 {p99:.1} ms, {} failures",
        total.orders, total.failures
    );
    for r in &total.reasons {
        println!("  failure: {r}");
    }
    ctx.raw.insert(
        format!("checkout.{}", label.to_lowercase()),
        json!({"orders": total.orders, "seconds": secs, "orders_per_sec": per_sec,
               "p50_ms": p50, "p99_ms": p99, "failures": total.failures,
               "failure_reasons": total.reasons, "customers": ctx.args.customers}),
    );
    let mut service = format!("{per_sec:.1} orders/s, checkout p50 {p50:.1} ms, p99 {p99:.1} ms");
    if total.failures > 0 {
        service.push_str(&format!(" ({} failures)", total.failures));
    }
    ctx.rows.push(Row {
        what: format!(
            "checkout, {label}: {} customers looping cart → line → checkout (zero upstream latency), {secs:.0} s",
            ctx.args.customers
        ),
        service,
        judged: Some(if total.failures == 0 { p50 } else { f64::NAN }),
        judged_text: Some(format!("p50 {p50:.1} ms")),
        target: Some((bench::table::Goal::AtMost(30.0), " ms".into())),
        ..Row::default()
    });
    Ok(total.orders)
}

async fn customer_loop(gql: Gql, customer: Customer, end: Instant) -> Loop {
    let mut out = Loop {
        orders: 0,
        failures: 0,
        reasons: Vec::new(),
        checkout_us: new_histogram(),
    };
    let fail = |out: &mut Loop, reason: String| {
        out.failures += 1;
        if out.reasons.len() < 3 {
            out.reasons.push(reason);
        }
    };
    while Instant::now() < end {
        let cart = match client::cart_with_a_line(&gql, &customer).await {
            Ok(cart) => cart,
            Err(e) => {
                fail(&mut out, format!("cart: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let t = Instant::now();
        let order = client::checkout(&gql, &customer, &cart, "pm_card_visa").await;
        let took = t.elapsed();
        match order {
            Ok(order) if order["status"] == "AWAITING_ACCEPTANCE" => {
                out.orders += 1;
                let _ = out
                    .checkout_us
                    .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
            }
            Ok(order) => fail(&mut out, format!("checkout answered {order}")),
            Err(e) => fail(&mut out, format!("checkout: {e}")),
        }
    }
    out
}
