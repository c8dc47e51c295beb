//! `soak`: the chaos soak. Many customers run the three flows at once against the
//! simulators (the `cbtl-sandbox` binary, a process of its own) while every upstream
//! injects faults, webhooks are lost, repeated and reordered, the service is killed with
//! `kill -9` and restarted, and (on PostgreSQL) the database restarts and two instances
//! share it. When the faults stop, every flow must finish within a bound; then the
//! invariants are checked against the simulators' ledgers and the database and printed as
//! a table. Exit status 0 only with zero violations.
//!
//! ```sh
//! cargo run --release --bin soak -- --customers 200 --minutes 5                  # SQLite
//! cargo run --release --bin soak -- --customers 200 --minutes 5 --database postgres
//! ```

mod client;
mod customers;
mod invariants;
mod processes;

use clap::{Parser, ValueEnum};
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

/// Which database the service instances use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Database {
    /// One SQLite file, one instance.
    Sqlite,
    /// A private PostgreSQL cluster started for the run (restarted once mid-run), shared by
    /// `--instances` instances.
    Postgres,
}

/// Runs the chaos soak and prints the invariants table.
#[derive(Debug, Parser)]
#[command(name = "soak", version)]
struct Args {
    /// How many customers run the flows at once.
    #[arg(long, default_value_t = 200)]
    customers: usize,
    /// How long the faults last, in minutes (then the flows get `--settle-secs` to finish).
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// The database.
    #[arg(long, value_enum, default_value_t = Database::Sqlite)]
    database: Database,
    /// Service instances (PostgreSQL only; SQLite runs one).
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Share of upstream calls that meet a fault, and of webhooks lost, sent twice or
    /// delayed.
    #[arg(long, default_value_t = 0.1)]
    fault_rate: f64,
    /// How many times an instance is killed with `kill -9` (spread over the run).
    #[arg(long, default_value_t = 6)]
    kills: usize,
    /// The bound: once the faults stop, every flow must finish within this many seconds.
    #[arg(long, default_value_t = 240)]
    settle_secs: u64,
    /// Where the run keeps its database, logs and the private PostgreSQL cluster (a new
    /// temporary directory when not given; kept after the run for reading).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The `cbtl-bff` binary (by default the one next to this binary, built by cargo first
    /// when this runs under `cargo run`).
    #[arg(long)]
    service_bin: Option<PathBuf>,
    /// The `cbtl-sandbox` binary (by default the one next to this binary, built likewise).
    #[arg(long)]
    sandbox_bin: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(violations) => {
            eprintln!("soak: {violations} violation(s)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err("--fault-rate must be between 0.0 and 1.0".into());
    }
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("cbtl-soak-{}", uuid::Uuid::new_v4())),
    };
    std::fs::create_dir_all(&work_dir)?;
    let instances = match args.database {
        Database::Sqlite => 1,
        Database::Postgres => args.instances.max(1),
    };
    println!(
        "soak: {} customers, {} min of faults at {:.0}%, {} on {:?}, {} kill -9, work dir {}",
        args.customers,
        args.minutes,
        args.fault_rate * 100.0,
        plural(instances, "instance"),
        args.database,
        args.kills,
        work_dir.display()
    );
    let binaries = processes::Binaries::locate(args.service_bin.clone(), args.sandbox_bin.clone())?;
    let mut cluster = processes::Cluster::start(
        &binaries,
        &work_dir,
        args.database == Database::Postgres,
        instances,
    )
    .await?;
    let sims = Arc::new(cluster.simulators());
    let client = client::Client::new(cluster.balancer_url());
    sims.chaos(args.fault_rate).await?;

    let fault_window = Duration::from_secs_f64(args.minutes * 60.0);
    let started = Instant::now();
    let stop_ordering = started + fault_window;
    let store = tokio::spawn(customers::run_store(sims.clone(), cluster.settled_signal()));
    let mut tasks = Vec::new();
    for n in 0..args.customers {
        let client = client.clone();
        let sims = sims.clone();
        tasks.push(tokio::spawn(async move {
            customers::run_customer(n, client, sims, stop_ordering).await
        }));
    }
    // Chaos on the processes: kill -9 at random moments, a database restart halfway.
    cluster
        .disturb(
            fault_window,
            args.kills,
            args.database == Database::Postgres,
        )
        .await?;
    sims.calm().await?;
    let settle_started = Instant::now();
    cluster.ensure_all_up().await?;
    println!(
        "soak: faults stopped after {:.0} s; waiting for the customers and the flows",
        started.elapsed().as_secs_f64()
    );
    let mut stats = customers::Stats::default();
    for task in tasks {
        match task.await {
            Ok(s) => stats.add(&s),
            Err(e) => eprintln!("soak: a customer task panicked: {e}"),
        }
    }
    println!("soak: {stats}");
    // The bound runs from the moment the faults stopped.
    let bound = Duration::from_secs(args.settle_secs);
    let finished =
        invariants::wait_until_settled(&cluster, bound.saturating_sub(settle_started.elapsed()))
            .await?;
    let settle_took = settle_started.elapsed();
    cluster.signal_settled();
    let _ = store.await;
    let report = invariants::check(&cluster, &sims, finished, settle_took, bound).await?;
    report.print();
    cluster.stop().await;
    println!("soak: logs and database kept in {}", work_dir.display());
    Ok(report.violations())
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
