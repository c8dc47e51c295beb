//! The scenarios, one module each, sharing a [`Ctx`]: the options, the binaries, the stack
//! most of them measure (started on first use), and what they found.

mod added_latency;
mod catalogue;
mod checkout;
mod fan_out;
mod live_status;
mod memory_start;
mod typename;

use crate::{
    Args, Error, Scenario,
    client::{self, Customer, Gql},
    procs::{Binaries, Database, Pinning, Stack},
};
use bench::{
    load::{Outcome, Plan},
    table::Row,
};
use serde_json::{Map, Value};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// `{ __typename }`'s body, the same from all three servers.
pub const TYPENAME_BODY: &str = r#"{"data":{"__typename":"Query"}}"#;

/// Memory and start figures of the checkout scenario's SQLite service.
#[derive(Debug, Clone, Default)]
pub struct MemoryFigures {
    pub start_to_ready: Duration,
    pub rss_at_rest_kib: Option<u64>,
    pub rss_after_checkout_kib: Option<u64>,
    pub orders: u64,
}

/// What the scenarios share.
pub struct Ctx {
    pub args: Args,
    pub binaries: Binaries,
    pub pinning: Pinning,
    pub work_dir: PathBuf,
    pub rows: Vec<Row>,
    pub raw: Map<String, Value>,
    /// The service settings that differ from its defaults, printed with the table.
    pub settings_note: Vec<String>,
    pub memory: Option<MemoryFigures>,
    stack: Option<Stack>,
    customer: Option<Customer>,
    next_customer: u32,
}

impl Ctx {
    pub fn new(args: Args, binaries: Binaries, pinning: Pinning, work_dir: PathBuf) -> Self {
        Self {
            args,
            binaries,
            pinning,
            work_dir,
            rows: Vec::new(),
            raw: Map::new(),
            settings_note: Vec::new(),
            memory: None,
            stack: None,
            customer: None,
            next_customer: 1,
        }
    }

    /// The throughput plan: closed loop, the run's connections and durations.
    pub fn closed_plan(&self) -> Plan {
        Plan {
            connections: self.args.connections,
            warmup: self.args.warmup(),
            duration: self.args.duration(),
            rate: None,
        }
    }

    /// Starts a service stack named `name` and notes its non-default settings once.
    pub async fn start_stack(&mut self, name: &str, database: &Database) -> Result<Stack, Error> {
        let stack =
            Stack::start(&self.binaries, self.pinning, &self.work_dir, name, database).await?;
        for note in &stack.non_defaults {
            if !self.settings_note.contains(note) {
                self.settings_note.push(note.clone());
            }
        }
        println!(
            "started {name}: service at {} ready {:.0} ms after spawn",
            stack.addr,
            stack.start_to_ready.as_secs_f64() * 1000.0
        );
        Ok(stack)
    }

    /// The shared stack (SQLite), started on first use.
    pub async fn stack(&mut self) -> Result<&Stack, Error> {
        if self.stack.is_none() {
            let stack = self.start_stack("main", &Database::Sqlite).await?;
            self.stack = Some(stack);
        }
        self.stack.as_ref().ok_or_else(|| "no stack".into())
    }

    /// The shared stack's address.
    pub async fn service_addr(&mut self) -> Result<SocketAddr, Error> {
        Ok(self.stack().await?.addr)
    }

    /// A GraphQL client of the shared stack.
    pub async fn gql(&mut self) -> Result<Gql, Error> {
        let addr = self.service_addr().await?;
        Ok(Gql::new(&format!("http://{addr}")))
    }

    /// The shared stack's signed-in customer (SessionM linked), signed up on first use.
    pub async fn customer(&mut self) -> Result<Customer, Error> {
        if let Some(c) = &self.customer {
            return Ok(c.clone());
        }
        let gql = self.gql().await?;
        let n = self.fresh_customer_number();
        let customer = client::sign_up(&gql, n).await?;
        self.customer = Some(customer.clone());
        Ok(customer)
    }

    /// A customer number no one used in this run (phones are unique per simulator).
    pub fn fresh_customer_number(&mut self) -> u32 {
        let n = self.next_customer;
        self.next_customer += 1;
        n
    }

    /// Records `outcome` under `key` in the raw results and prints it.
    pub fn record(&mut self, key: &str, outcome: &Outcome) {
        println!("{key}: {}", outcome.summary());
        for reason in &outcome.failure_reasons {
            println!("  failure: {reason}");
        }
        self.raw.insert(key.to_owned(), outcome_json(outcome));
    }

    pub async fn stop(&mut self) {
        if let Some(stack) = self.stack.take() {
            stack.stop().await;
        }
    }
}

/// An outcome as JSON for the raw results.
pub fn outcome_json(o: &Outcome) -> Value {
    serde_json::json!({
        "served": o.served,
        "failures": o.failures,
        "failure_reasons": o.failure_reasons,
        "seconds": o.elapsed.as_secs_f64(),
        "rps": o.rps(),
        "p50_ms": o.latency_ms(0.5),
        "p90_ms": o.latency_ms(0.9),
        "p99_ms": o.latency_ms(0.99),
        "max_ms": o.latency_us.max() as f64 / 1000.0,
    })
}

/// A figure with its failures, if any, e.g. `70.1k req/s (3 failures)`.
pub fn with_failures(text: String, failures: u64) -> String {
    if failures == 0 {
        text
    } else {
        format!("{text} ({failures} failures)")
    }
}

/// The cargo target directory this binary runs from (`target/release/bench` → `target`).
pub fn target_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or("no target directory")?
        .to_owned())
}

/// The socket address of a URL like `http://127.0.0.1:8085`.
pub fn addr_of(url: &str) -> Result<SocketAddr, Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    Ok(host_port.parse()?)
}

/// Runs one scenario.
pub async fn run(ctx: &mut Ctx, scenario: Scenario) -> Result<(), Error> {
    match scenario {
        Scenario::Typename => typename::run(ctx).await,
        Scenario::Catalogue => catalogue::run(ctx).await,
        Scenario::AddedLatency => added_latency::run(ctx).await,
        Scenario::FanOut => fan_out::run(ctx).await,
        Scenario::Checkout => checkout::run(ctx).await,
        Scenario::MemoryStart => memory_start::run(ctx).await,
        Scenario::LiveStatus => live_status::run(ctx).await,
        Scenario::LiveStatusPg => live_status::run_two_on_postgres(ctx).await,
    }
}
