//! `memory-start`: the service's resident memory (`VmRSS`) right after start (2 s after
//! `/readyz` first answered 200), after the checkout scenario's SQLite run, and the time
//! from spawning the process to that first 200. Taken from the checkout scenario's fresh
//! SQLite service when it ran; otherwise a fresh service is started for the first two.

use super::{Ctx, MemoryFigures};
use crate::{Error, procs::Database};
use bench::table::Row;
use serde_json::json;

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    let figures = match ctx.memory.clone() {
        Some(f) => f,
        None => {
            let stack = ctx.start_stack("memory", &Database::Sqlite).await?;
            let f = MemoryFigures {
                start_to_ready: stack.start_to_ready,
                rss_at_rest_kib: stack.rss_at_rest_kib,
                rss_after_checkout_kib: None,
                orders: 0,
            };
            stack.stop().await;
            f
        }
    };
    let start_ms = figures.start_to_ready.as_secs_f64() * 1000.0;
    println!(
        "start to ready {start_ms:.0} ms; RSS at rest {}, after checkout {} ({} orders)",
        mib(figures.rss_at_rest_kib),
        mib(figures.rss_after_checkout_kib),
        figures.orders
    );
    ctx.raw.insert(
        "memory_start".into(),
        json!({"start_to_ready_ms": start_ms, "rss_at_rest_kib": figures.rss_at_rest_kib,
               "rss_after_checkout_kib": figures.rss_after_checkout_kib, "orders": figures.orders}),
    );
    ctx.rows.push(Row::info(
        "service start → `/readyz` 200 (SQLite, migrations applied)",
        format!("{start_ms:.0} ms"),
    ));
    ctx.rows.push(Row::info(
        "service RSS at rest",
        mib(figures.rss_at_rest_kib),
    ));
    ctx.rows.push(Row::info(
        format!(
            "service RSS after the SQLite checkout run ({} orders)",
            figures.orders
        ),
        mib(figures.rss_after_checkout_kib),
    ));
    Ok(())
}
