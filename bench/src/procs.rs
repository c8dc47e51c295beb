//! The processes a run starts: the `cbtl-sandbox` simulators, the service (`cbtl-bff`) on a
//! SQLite file or a fresh PostgreSQL database, and the two baselines. Each server is pinned
//! to the server core and the simulators and this process to the other (`taskset`), when
//! the machine has two cores or more.

use crate::Error;
use serde_json::Value;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The core the server under test runs on, and the one for everything else.
#[derive(Clone, Copy, Debug)]
pub struct Pinning {
    pub server: Option<usize>,
    pub load: Option<usize>,
}

impl Pinning {
    /// Server on core 0, load generator and simulators on core 1, when there are two cores
    /// and `taskset` exists; else nothing is pinned.
    pub fn choose(enabled: bool) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let taskset = std::process::Command::new("taskset")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if enabled && cores >= 2 && taskset {
            Self {
                server: Some(0),
                load: Some(1),
            }
        } else {
            Self {
                server: None,
                load: None,
            }
        }
    }

    /// Pins this process (before its runtime starts threads, which inherit the mask).
    pub fn pin_self(&self) -> Result<(), Error> {
        if let Some(core) = self.load {
            let status = std::process::Command::new("taskset")
                .args([
                    "-p",
                    "-c",
                    &core.to_string(),
                    &std::process::id().to_string(),
                ])
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                return Err("taskset could not pin the load generator".into());
            }
        }
        Ok(())
    }

    /// A command for `program` on `core` (through `taskset`), or plain.
    fn command(core: Option<usize>, program: &Path) -> Command {
        match core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &core.to_string()]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    pub fn describe(&self) -> String {
        match (self.server, self.load) {
            (Some(s), Some(l)) => format!(
                "servers under test (service, bare axum, bare async-graphql) pinned to core {s}; \
                 the load generator and the simulators (cbtl-sandbox) to core {l} (taskset)"
            ),
            _ => "nothing pinned (fewer than 2 cores, no taskset, or --no-pin)".to_owned(),
        }
    }
}

/// The binaries a run starts.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub service: PathBuf,
    pub sandbox: PathBuf,
    pub bare_axum: PathBuf,
    pub bare_graphql: PathBuf,
}

impl Binaries {
    /// The binaries next to this one; under `cargo run` (which sets `CARGO`), cargo first
    /// builds them with this binary's profile, so they are never older than the sources.
    pub fn locate() -> Result<Self, Error> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().ok_or("this binary has no directory")?;
        if let Ok(cargo) = std::env::var("CARGO") {
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(other) => other,
            };
            let target_dir = dir.parent().ok_or("no target directory")?;
            eprintln!("building the binaries it starts (cargo build --profile {profile})…");
            let status = std::process::Command::new(cargo)
                .args(["build", "--profile", profile])
                .args(["--package", "cbtl-bff", "--bin", "cbtl-bff"])
                .args(["--package", "cbtl-sandbox", "--bin", "cbtl-sandbox"])
                .args([
                    "--package",
                    "bench",
                    "--bin",
                    "bare-axum",
                    "--bin",
                    "bare-graphql",
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .status()?;
            if !status.success() {
                return Err("cargo could not build the binaries the benchmark starts".into());
            }
        }
        let sibling = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let binaries = Self {
            service: sibling("cbtl-bff"),
            sandbox: sibling("cbtl-sandbox"),
            bare_axum: sibling("bare-axum"),
            bare_graphql: sibling("bare-graphql"),
        };
        for path in [
            &binaries.service,
            &binaries.sandbox,
            &binaries.bare_axum,
            &binaries.bare_graphql,
        ] {
            if !path.exists() {
                return Err(format!(
                    "{} is missing: run through `cargo run --release -p bench`, or build it \
                     (cargo build --release --workspace --bins)",
                    path.display()
                )
                .into());
            }
        }
        Ok(binaries)
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Where a stack keeps its data.
#[derive(Clone, Debug)]
pub enum Database {
    /// A SQLite file in the work directory.
    Sqlite,
    /// A fresh database created on this PostgreSQL server (admin URL, no database part),
    /// dropped when the stack stops.
    Postgres { admin_url: String },
}

/// A running service with its own simulators.
pub struct Stack {
    pub service: Child,
    pub sandbox: Child,
    pub addr: SocketAddr,
    /// What the sandbox printed: the service's upstream URLs and credentials.
    pub env: BTreeMap<String, String>,
    /// Settings given to the service that differ from its defaults, and why.
    pub non_defaults: Vec<String>,
    /// From spawning the service to its first `/readyz` 200.
    pub start_to_ready: Duration,
    /// Resident memory right after it became ready, in KiB.
    pub rss_at_rest_kib: Option<u64>,
    postgres_db: Option<(String, String)>,
    /// The service's variables (its listen address apart), for more instances.
    vars: Vec<(String, String)>,
    /// Instances started after the first ([`Stack::add_instance`]).
    more: Vec<Child>,
}

/// Spawns the service with `vars` on `addr`, logging to the work directory, and waits
/// until `/readyz` answers 200; the time that took.
async fn spawn_service(
    binaries: &Binaries,
    pinning: Pinning,
    work_dir: &Path,
    name: &str,
    vars: &[(String, String)],
    addr: SocketAddr,
) -> Result<(Child, Duration), Error> {
    let mut service = Pinning::command(pinning.server, &binaries.service);
    for (key, _) in std::env::vars() {
        if key.starts_with("CBTL_") || key == "DATABASE_URL" || key == "RUST_LOG" {
            service.env_remove(key);
        }
    }
    for (key, value) in vars {
        service.env(key, value);
    }
    let spawned = Instant::now();
    let mut service = service
        .env("CBTL_LISTEN_ADDR", addr.to_string())
        .stdout(std::fs::File::create(
            work_dir.join(format!("{name}-service.log")),
        )?)
        .stderr(std::fs::File::create(
            work_dir.join(format!("{name}-service.stderr.log")),
        )?)
        .kill_on_drop(true)
        .spawn()?;
    let http = reqwest::Client::new();
    let deadline = spawned + Duration::from_secs(60);
    loop {
        if let Some(status) = service.try_wait()? {
            return Err(format!(
                "the service exited ({status}) before it was ready; see {}",
                work_dir.join(format!("{name}-service.log")).display()
            )
            .into());
        }
        let ready = http
            .get(format!("http://{addr}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return Ok((service, spawned.elapsed()));
        }
        if Instant::now() > deadline {
            return Err("the service was not ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every rate limit a benchmark's sign-ups and checkouts from one address would hit.
const RAISED_LIMITS: [&str; 5] = [
    "OTP_SEND_PER_ADDRESS",
    "OTP_VERIFY_PER_PHONE",
    "OTP_VERIFY_PER_ADDRESS",
    "CHECKOUT_PER_CUSTOMER",
    "CHECKOUT_PER_ADDRESS",
];

impl Stack {
    /// Starts the simulators (webhooks to the service's port) and the service, and waits
    /// until `/readyz` answers 200.
    pub async fn start(
        binaries: &Binaries,
        pinning: Pinning,
        work_dir: &Path,
        name: &str,
        database: &Database,
    ) -> Result<Self, Error> {
        Self::start_with(binaries, pinning, work_dir, name, database, &[]).await
    }

    /// As [`Stack::start`], with `extra` settings (`CBTL_…` variables and why) for the service.
    pub async fn start_with(
        binaries: &Binaries,
        pinning: Pinning,
        work_dir: &Path,
        name: &str,
        database: &Database,
        extra: &[(&str, &str, &str)],
    ) -> Result<Self, Error> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut sandbox = Pinning::command(pinning.load, &binaries.sandbox);
        for (key, _) in std::env::vars() {
            if key.starts_with("SANDBOX_") || key.starts_with("CBTL_") {
                sandbox.env_remove(key);
            }
        }
        for flag in [
            "--okya-addr",
            "--stripe-addr",
            "--epoint-addr",
            "--sessionm-core-addr",
            "--sessionm-pos-addr",
        ] {
            sandbox.args([flag, "127.0.0.1:0"]);
        }
        // No store actor: orders stay AWAITING_ACCEPTANCE, so no webhook traffic runs
        // beside what is measured.
        let mut sandbox = sandbox
            .args(["--app-url", &format!("http://{addr}")])
            .args(["--auto-accept-delay-ms", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(
                work_dir.join(format!("{name}-sandbox.log")),
            )?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = sandbox.stdout.take().ok_or("no stdout from cbtl-sandbox")?;
        let env = tokio::time::timeout(
            Duration::from_secs(30),
            cbtl_sandbox::service_env::read(stdout),
        )
        .await??;

        let (database_url, postgres_db) = match database {
            Database::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    work_dir.join(format!("{name}.db")).display()
                ),
                None,
            ),
            Database::Postgres { admin_url } => {
                let db = format!(
                    "cbtl_bench_{}_{}",
                    std::process::id(),
                    name.replace('-', "_")
                );
                psql(admin_url, &format!("CREATE DATABASE {db}")).await?;
                (
                    format!("{}/{db}", admin_url.trim_end_matches('/')),
                    Some((admin_url.clone(), db)),
                )
            }
        };

        // Every variable the service is given, kept to start more instances alike.
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut non_defaults = vec![
            "upstream URLs and credentials: the cbtl-sandbox binary's (as in production, real URLs)".to_owned(),
        ];
        for (key, value) in &env {
            // The sandbox turns introspection on for app developers; production leaves
            // it off, which is the default with upstream URLs set.
            if key != "CBTL_GRAPHQL__INTROSPECTION" {
                vars.push((key.clone(), value.clone()));
            }
        }
        for limit in RAISED_LIMITS {
            for part in ["BURST", "PER_HOUR"] {
                vars.push((
                    format!("CBTL_RATE_LIMITS__{limit}__{part}"),
                    "1000000".to_owned(),
                ));
            }
        }
        non_defaults.push(format!(
            "rate_limits.{{{}}} = 1000000/1000000 (one address signs up 20+ customers and checks out hundreds of times; queries are not rate-limited)",
            RAISED_LIMITS.map(str::to_lowercase).join(",")
        ));
        for (key, value, why) in extra {
            vars.push(((*key).to_owned(), (*value).to_owned()));
            non_defaults.push(format!("{key}={value} ({why})"));
        }
        non_defaults.push(format!(
            "database_url = {}",
            match database {
                Database::Sqlite => "a SQLite file in the work directory",
                Database::Postgres { .. } => "a fresh PostgreSQL database",
            }
        ));
        vars.push(("DATABASE_URL".to_owned(), database_url));
        let (service, start_to_ready) =
            spawn_service(binaries, pinning, work_dir, name, &vars, addr).await?;
        let mut stack = Self {
            service,
            sandbox,
            addr,
            env,
            non_defaults,
            start_to_ready,
            rss_at_rest_kib: None,
            postgres_db,
            vars,
            more: Vec::new(),
        };
        // Let the first background sweeps run before "at rest".
        tokio::time::sleep(Duration::from_secs(2)).await;
        stack.rss_at_rest_kib = stack.rss_kib();
        Ok(stack)
    }

    /// The service's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.service.id()?)
    }

    /// An upstream's base URL as the sandbox printed it, e.g. `CBTL_STRIPE__BASE_URL`.
    pub fn url(&self, key: &str) -> Result<String, Error> {
        self.env
            .get(key)
            .cloned()
            .ok_or_else(|| format!("the sandbox printed no {key}").into())
    }

    /// Starts another instance of the service, alike (same database, simulators and
    /// settings) on a port of its own, and waits until it is ready; the simulators'
    /// webhooks still go to the first. Its pid and address.
    pub async fn add_instance(
        &mut self,
        binaries: &Binaries,
        pinning: Pinning,
        work_dir: &Path,
        name: &str,
    ) -> Result<(u32, SocketAddr), Error> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let (child, _) = spawn_service(binaries, pinning, work_dir, name, &self.vars, addr).await?;
        let pid = child.id().ok_or("the new instance has no pid")?;
        self.more.push(child);
        Ok((pid, addr))
    }

    /// Stops every process and drops a PostgreSQL database it created.
    pub async fn stop(mut self) {
        for mut instance in self.more.drain(..) {
            let _ = instance.kill().await;
        }
        let _ = self.service.kill().await;
        let _ = self.sandbox.kill().await;
        if let Some((admin_url, db)) = self.postgres_db.take()
            && let Err(e) = psql(&admin_url, &format!("DROP DATABASE IF EXISTS {db}")).await
        {
            eprintln!("could not drop {db}: {e}");
        }
    }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn psql(admin_url: &str, sql: &str) -> Result<(), Error> {
    let url = format!("{}/postgres", admin_url.trim_end_matches('/'));
    let out = Command::new("psql")
        .args([&url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .await
        .map_err(|e| format!("psql: {e} (is the PostgreSQL client installed?)"))?;
    if !out.status.success() {
        return Err(format!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// A baseline server (bare axum or bare async-graphql) on the server core.
pub struct Baseline {
    child: Child,
    pub addr: SocketAddr,
}

impl Baseline {
    /// Starts `binary` with `args` after the listen address and waits for its
    /// `listening <addr>` line.
    pub async fn start(binary: &Path, pinning: Pinning, args: &[&str]) -> Result<Self, Error> {
        let mut child = Pinning::command(pinning.server, binary)
            .arg("127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await??
            .ok_or("the baseline exited before listening")?;
        let addr = line
            .strip_prefix("listening ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(Self { child, addr })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `PUT /_sandbox/faults` with `body` on every simulator (SessionM's on its POS port).
pub async fn set_faults(stack: &Stack, http: &reqwest::Client, body: &Value) -> Result<(), Error> {
    for key in SIMULATORS.map(|(_, key)| key) {
        let url = format!("{}/_sandbox/faults", stack.url(key)?);
        let status = http.put(&url).json(body).send().await?.status();
        if !status.is_success() {
            return Err(format!("PUT {url}: {status}").into());
        }
    }
    Ok(())
}

/// The simulators by system, with the variable naming each one's URL (SessionM's
/// `/_sandbox` routes are on its POS port).
pub const SIMULATORS: [(&str, &str); 4] = [
    ("okya", "CBTL_OKYA__BASE_URL"),
    ("stripe", "CBTL_STRIPE__BASE_URL"),
    ("epoint", "CBTL_EPOINT__BASE_URL"),
    ("sessionm", "CBTL_SESSIONM__POS_URL"),
];
