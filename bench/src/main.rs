//! `cargo run --release -p bench`: issue 12's benchmarks. Starts what it compares as child
//! processes (the service with its simulators in their own process, bare axum, bare
//! async-graphql), pins the server under test and the load generator to separate cores,
//! checks every answer, and prints a Markdown table with the machine it ran on; the raw
//! results go to `target/bench/`. `--help` lists the options.

mod client;
mod procs;
mod scenarios;

use bench::{machine::Machine, table};
use clap::{Parser, ValueEnum};
use scenarios::Ctx;
use std::{path::PathBuf, time::Duration};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `{ __typename }`: req/s of bare axum, bare async-graphql and the service.
    Typename,
    /// The catalogue query: req/s of bare async-graphql and the service, same body.
    Catalogue,
    /// p99 through the service minus p99 of the same upstream call made directly.
    AddedLatency,
    /// Three upstreams at 50 ms each, and the 50-order page's calls and queries.
    FanOut,
    /// 20 customers looping cart → line → checkout, SQLite and PostgreSQL.
    Checkout,
    /// RSS at rest and after checkout, time from start to ready.
    MemoryStart,
    /// Item 6's live status at scale: written by the lead (scenarios/live_status.rs).
    LiveStatus,
    /// Live status with two instances on one PostgreSQL database, half the subscribers on
    /// each.
    LiveStatusPg,
}

const ALL: [Scenario; 8] = [
    Scenario::Typename,
    Scenario::Catalogue,
    Scenario::AddedLatency,
    Scenario::FanOut,
    Scenario::Checkout,
    Scenario::MemoryStart,
    Scenario::LiveStatus,
    Scenario::LiveStatusPg,
];

/// Issue 12's benchmarks: the service against bare axum and bare async-graphql 7.2.1, in
/// one run, server and load generator on separate cores.
#[derive(Parser, Debug, Clone)]
#[command(name = "bench")]
pub struct Args {
    /// A short run of everything (under 2 minutes): 1 s warm-up, 3 s per measurement.
    #[arg(long)]
    pub quick: bool,
    /// Only these scenarios (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Seconds measured per throughput figure (default 10, 3 with --quick).
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Seconds of warm-up before each measurement (default 2, 1 with --quick).
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    /// Seconds the checkout loop runs per database (default 20, 5 with --quick).
    #[arg(long)]
    pub checkout_secs: Option<f64>,
    /// Customers looping in the checkout scenario.
    #[arg(long, default_value_t = 20)]
    pub customers: u32,
    /// Live-status: idle `orderStatusChanged` subscriptions, one websocket each (2,000
    /// with `--quick`).
    #[arg(long)]
    pub subscriptions: Option<usize>,
    /// PostgreSQL server for the checkout scenario (a fresh database is created and dropped).
    #[arg(
        long,
        env = "CBTL_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    /// Skip PostgreSQL.
    #[arg(long)]
    pub no_postgres: bool,
    /// Pin nothing, even on a machine with two cores or more.
    #[arg(long)]
    pub no_pin: bool,
    /// Where logs, databases and the catalogue file go (default: a new temporary directory,
    /// kept).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

impl Args {
    pub fn duration(&self) -> Duration {
        secs(self.duration_secs, if self.quick { 3.0 } else { 10.0 })
    }
    pub fn warmup(&self) -> Duration {
        secs(self.warmup_secs, if self.quick { 1.0 } else { 2.0 })
    }
    pub fn checkout_duration(&self) -> Duration {
        secs(self.checkout_secs, if self.quick { 5.0 } else { 20.0 })
    }
    fn selected(&self, s: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

fn secs(given: Option<f64>, default: f64) -> Duration {
    Duration::from_secs_f64(given.unwrap_or(default).max(0.1))
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let binaries = procs::Binaries::locate()?;
    let pinning = procs::Pinning::choose(!args.no_pin);
    // The live-status scenario holds 20,000 sockets on each side; children inherit this.
    // Raising the hard limit needs privileges; without them the soft limit goes as high
    // as the hard one allows and the scenario says how many sockets it could open.
    let wanted = 65_536;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted).is_err() {
        let _ = rlimit::increase_nofile_limit(wanted);
    }
    // Before the runtime exists, so its threads inherit the mask.
    pinning.pin_self()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, binaries, pinning))
}

async fn run(args: Args, binaries: procs::Binaries, pinning: procs::Pinning) -> Result<(), Error> {
    let machine = Machine::detect();
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("cbtl-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir)?;
    println!(
        "# cbtl-bff benchmarks{}",
        if args.quick { " (--quick)" } else { "" }
    );
    println!("machine: {}", machine.line());
    println!("pinning: {}", pinning.describe());
    println!(
        "load: {} keep-alive connections, {:.0} s warm-up, {:.0} s measured per figure; work dir {}",
        args.connections,
        args.warmup().as_secs_f64(),
        args.duration().as_secs_f64(),
        work_dir.display()
    );
    let started = std::time::Instant::now();
    let mut ctx = Ctx::new(args.clone(), binaries, pinning, work_dir);
    for scenario in ALL {
        if !args.selected(scenario) {
            continue;
        }
        println!("\n## {scenario:?}");
        if let Err(e) = scenarios::run(&mut ctx, scenario).await {
            println!("FAILED: {e}");
            ctx.rows.push(table::Row::info(
                format!("{scenario:?}"),
                format!("failed: {e}"),
            ));
            ctx.raw
                .insert(format!("{scenario:?}_error"), e.to_string().into());
        }
    }
    ctx.stop().await;
    let markdown = table::markdown(&ctx.rows);
    println!("\n## Results\n");
    if !ctx.settings_note.is_empty() {
        println!("Service settings that differ from its defaults:");
        for note in &ctx.settings_note {
            println!("- {note}");
        }
        println!();
    }
    print!("{markdown}");
    println!("\nMachine: {}", machine.line());
    println!("Pinning: {}", pinning.describe());
    println!("Took {:.0} s.", started.elapsed().as_secs_f64());
    let out_dir = scenarios::target_dir()?.join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let json = serde_json::json!({
        "when": chrono::Utc::now().to_rfc3339(),
        "quick": args.quick,
        "args": format!("{args:?}"),
        "machine": machine,
        "pinning": pinning.describe(),
        "settings_differing_from_defaults": ctx.settings_note,
        "rows": ctx.rows,
        "raw": ctx.raw,
        "table": markdown,
    });
    let text = serde_json::to_string_pretty(&json)?;
    let path = out_dir.join(format!("results-{stamp}.json"));
    std::fs::write(&path, &text)?;
    std::fs::write(out_dir.join("latest.json"), &text)?;
    println!("Raw results: {}", path.display());
    Ok(())
}
