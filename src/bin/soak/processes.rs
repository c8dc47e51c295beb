//! The processes of a soak: the simulators (`cbtl-sandbox`), the service instances
//! (`cbtl-bff`), a private PostgreSQL cluster, and a small balancer in this process that
//! spreads the customers' requests and the webhooks over the instances that are up, as a
//! load balancer in front of a real deployment does.

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The two binaries a soak starts.
pub struct Binaries {
    service: PathBuf,
    sandbox: PathBuf,
}

impl Binaries {
    /// The given paths, else `cbtl-bff` and `cbtl-sandbox` next to this binary; under
    /// `cargo run` (which sets `CARGO`), cargo builds those first with this binary's
    /// profile, so they are never older than the sources.
    pub fn locate(service: Option<PathBuf>, sandbox: Option<PathBuf>) -> Result<Self, Error> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().ok_or("this binary has no directory")?;
        let sibling = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        if (service.is_none() || sandbox.is_none())
            && let Ok(cargo) = std::env::var("CARGO")
        {
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(other) => other,
            };
            let target_dir = dir.parent().ok_or("no target directory")?;
            let status = std::process::Command::new(cargo)
                .args(["build", "--profile", profile, "--bin", "cbtl-bff"])
                .args(["--bin", "cbtl-sandbox", "--package", "cbtl-bff"])
                .args(["--package", "cbtl-sandbox", "--target-dir"])
                .arg(target_dir)
                .status()?;
            if !status.success() {
                return Err("cargo could not build cbtl-bff and cbtl-sandbox".into());
            }
        }
        let binaries = Self {
            service: service.unwrap_or_else(|| sibling("cbtl-bff")),
            sandbox: sandbox.unwrap_or_else(|| sibling("cbtl-sandbox")),
        };
        for path in [&binaries.service, &binaries.sandbox] {
            if !path.exists() {
                return Err(format!(
                    "{} is missing: build it (cargo build --release --bins --workspace) or pass its path",
                    path.display()
                )
                .into());
            }
        }
        Ok(binaries)
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One service instance: its fixed port (kept over restarts) and its process, if up.
struct Instance {
    port: u16,
    child: Option<Child>,
    starts: u32,
}

/// Everything running for one soak.
pub struct Cluster {
    binaries_service: PathBuf,
    work_dir: PathBuf,
    sandbox: Child,
    env: BTreeMap<String, String>,
    database_url: String,
    postgres: Option<Postgres>,
    instances: Vec<Instance>,
    balancer_port: u16,
    settled: CancellationToken,
    /// What happened to the processes, in order, for the report.
    pub events: Vec<String>,
}

impl Cluster {
    /// Starts the balancer, the simulators (webhooks to the balancer), the database and
    /// the instances, and waits until every instance answers `/readyz`.
    pub async fn start(
        binaries: &Binaries,
        work_dir: &Path,
        postgres: bool,
        instances: usize,
    ) -> Result<Self, Error> {
        let ports: Vec<u16> = (0..instances)
            .map(|_| free_port())
            .collect::<Result<_, _>>()?;
        let balancer_port = start_balancer(ports.clone()).await?;
        let mut sandbox = Command::new(&binaries.sandbox);
        for (key, _) in std::env::vars() {
            if key.starts_with("SANDBOX_") {
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
        let app_url = format!("http://127.0.0.1:{balancer_port}");
        // The soak's store actor accepts and rejects orders itself.
        let mut sandbox = sandbox
            .args(["--app-url", &app_url, "--auto-accept-delay-ms", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(work_dir.join("sandbox.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = sandbox.stdout.take().ok_or("no stdout")?;
        let env = tokio::time::timeout(
            Duration::from_secs(30),
            cbtl_sandbox::service_env::read(stdout),
        )
        .await??;
        let postgres = if postgres {
            Some(Postgres::start(work_dir).await?)
        } else {
            None
        };
        let database_url = match &postgres {
            Some(pg) => pg.url(),
            None => format!("sqlite://{}?mode=rwc", work_dir.join("cbtl.db").display()),
        };
        let mut cluster = Self {
            binaries_service: binaries.service.clone(),
            work_dir: work_dir.to_owned(),
            sandbox,
            env,
            database_url,
            postgres,
            instances: ports
                .into_iter()
                .map(|port| Instance {
                    port,
                    child: None,
                    starts: 0,
                })
                .collect(),
            balancer_port,
            settled: CancellationToken::new(),
            events: Vec::new(),
        };
        // One at a time, so the first applies the migrations alone.
        for i in 0..cluster.instances.len() {
            cluster.start_instance(i).await?;
            cluster.wait_ready(i).await?;
        }
        Ok(cluster)
    }

    /// The simulators' addresses.
    pub fn simulators(&self) -> Simulators {
        let url = |key: &str| self.env.get(key).cloned().unwrap_or_default();
        Simulators {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            okya: url("CBTL_OKYA__BASE_URL"),
            stripe: url("CBTL_STRIPE__BASE_URL"),
            epoint: url("CBTL_EPOINT__BASE_URL"),
            sessionm: url("CBTL_SESSIONM__CORE_URL"),
            sessionm_pos: url("CBTL_SESSIONM__POS_URL"),
        }
    }

    /// Where customers send their requests.
    pub fn balancer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.balancer_port)
    }

    /// The service's database, as its instances use it.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Cancelled once every flow has finished (the store actor stops then).
    pub fn settled_signal(&self) -> CancellationToken {
        self.settled.clone()
    }

    pub fn signal_settled(&self) {
        self.settled.cancel();
    }

    async fn start_instance(&mut self, i: usize) -> Result<(), Error> {
        // Each start draws its capture mode: orders keep the mode they were placed with,
        // so both modes' flows are resumed by instances of either.
        let capture = if fastrand::bool() {
            "immediate"
        } else {
            "on_acceptance"
        };
        let instance = &mut self.instances[i];
        instance.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work_dir.join(format!("service-{i}.log")))?;
        let mut command = Command::new(&self.binaries_service);
        for (key, _) in std::env::vars() {
            if key.starts_with("CBTL_") || key == "DATABASE_URL" {
                command.env_remove(key);
            }
        }
        let settings = [
            ("CBTL_LISTEN_ADDR", format!("127.0.0.1:{}", instance.port)),
            ("DATABASE_URL", self.database_url.clone()),
            ("CBTL_ORDERS__CAPTURE", capture.to_owned()),
            // Short enough that abandoned 3-D Secure checkouts end within the bound.
            ("CBTL_ORDERS__AUTHENTICATION_TIMEOUT_SECS", "20".to_owned()),
            ("CBTL_ORDERS__RECONCILE_INTERVAL_SECS", "5".to_owned()),
            ("CBTL_ORDERS__LEASE_MS", "5000".to_owned()),
            ("CBTL_JOBS__LEASE_MS", "5000".to_owned()),
            // Under the simulators' hang (6 s), so a hung call times out.
            ("CBTL_OKYA__TIMEOUT_MS", "3000".to_owned()),
            ("CBTL_STRIPE__TIMEOUT_MS", "4000".to_owned()),
            ("CBTL_EPOINT__TIMEOUT_MS", "3000".to_owned()),
            ("CBTL_SESSIONM__TIMEOUT_MS", "3000".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        // Every customer comes from 127.0.0.1 (the balancer): the per-address limits
        // would refuse the crowd, which is not what this measures.
        let unlimited = cbtl_bff::config::RateLimitSettings::default()
            .rates()
            .into_iter()
            .flat_map(|(name, _)| {
                let rate = name.trim_start_matches("rate_limits.").to_uppercase();
                [
                    (
                        format!("CBTL_RATE_LIMITS__{rate}__BURST"),
                        "1000000".to_owned(),
                    ),
                    (
                        format!("CBTL_RATE_LIMITS__{rate}__PER_HOUR"),
                        "1000000".to_owned(),
                    ),
                ]
            });
        let child = command
            .envs(&self.env)
            .envs(settings)
            .envs(unlimited)
            .arg("serve")
            // The service logs to stdout.
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        instance.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self, i: usize) -> Result<(), Error> {
        let url = format!("http://127.0.0.1:{}/healthz", self.instances[i].port);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("instance {i} did not start: see service-{i}.log").into())
    }

    /// `kill -9` of instance `i`.
    async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.instances[i].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Over `window`: `kills` × `kill -9` of a random instance at random moments, each
    /// restarted 0.5 to 3 s later; with PostgreSQL, a crash restart of the database
    /// halfway through.
    pub async fn disturb(
        &mut self,
        window: Duration,
        kills: usize,
        restart_database: bool,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut moments: Vec<(Duration, bool)> = (0..kills)
            .map(|_| (window.mul_f64(0.1 + 0.8 * fastrand::f64()), false))
            .collect();
        if restart_database {
            moments.push((window.mul_f64(0.5), true));
        }
        moments.sort();
        for (at, database) in moments {
            tokio::time::sleep_until((started + at).into()).await;
            if database {
                let took = match &self.postgres {
                    Some(pg) => pg.crash_restart().await?,
                    None => continue,
                };
                self.log(format!(
                    "{:>6.1} s  PostgreSQL crash-restarted (immediate stop) in {:.1} s",
                    at.as_secs_f64(),
                    took.as_secs_f64()
                ));
                continue;
            }
            let i = fastrand::usize(0..self.instances.len());
            self.kill(i).await;
            let down = Duration::from_millis(fastrand::u64(500..3_000));
            tokio::time::sleep(down).await;
            self.start_instance(i).await?;
            self.log(format!(
                "{:>6.1} s  instance {i} killed with SIGKILL, restarted {:.1} s later",
                at.as_secs_f64(),
                down.as_secs_f64()
            ));
        }
        tokio::time::sleep_until((started + window).into()).await;
        Ok(())
    }

    fn log(&mut self, event: String) {
        println!("soak: {event}");
        self.events.push(event);
    }

    /// Restarts any instance that is down and waits until all are ready.
    pub async fn ensure_all_up(&mut self) -> Result<(), Error> {
        for i in 0..self.instances.len() {
            let exited = match self.instances[i].child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited {
                self.log(format!("instance {i} was down at the end; restarted"));
                self.start_instance(i).await?;
            }
            self.wait_ready(i).await?;
        }
        Ok(())
    }

    /// How many times each instance was started.
    pub fn starts(&self) -> Vec<u32> {
        self.instances.iter().map(|i| i.starts).collect()
    }

    pub async fn stop(&mut self) {
        for i in 0..self.instances.len() {
            self.kill(i).await;
        }
        let _ = self.sandbox.start_kill();
        if let Some(pg) = &self.postgres {
            pg.stop().await;
        }
    }
}

/// A private PostgreSQL cluster in the work directory, on a free port, so that restarting
/// it disturbs nothing else on the machine. Run as the `postgres` user when this runs as
/// root (PostgreSQL refuses root).
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    async fn start(work_dir: &Path) -> Result<Self, Error> {
        let bin = postgres_bin()?;
        let data = work_dir.join("pgdata");
        let as_postgres = run_plain("id", &["-u"]).await?.trim() == "0";
        let pg = Self {
            bin,
            data,
            port: free_port()?,
            as_postgres,
        };
        std::fs::create_dir_all(&pg.data)?;
        if as_postgres {
            run_plain(
                "chown",
                &["-R", "postgres:postgres", &pg.data.to_string_lossy()],
            )
            .await?;
        }
        let data = pg.data.to_string_lossy().into_owned();
        pg.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )
        .await?;
        pg.ctl_start().await?;
        Ok(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn ctl_start(&self) -> Result<(), Error> {
        let data = self.data.to_string_lossy().into_owned();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off",
            self.port, data
        );
        let log = self
            .data
            .join("postgres.log")
            .to_string_lossy()
            .into_owned();
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )
        .await
    }

    /// Stops the server the way a crash does (`-m immediate`: no checkpoint, every
    /// connection cut) and starts it again; how long it was away.
    async fn crash_restart(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        let data = self.data.to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.ctl_start().await?;
        Ok(started.elapsed())
    }

    async fn stop(&self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = self
            .run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
            .await;
    }

    async fn run(&self, tool: &str, args: &[&str]) -> Result<(), Error> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into())
        }
    }
}

/// PostgreSQL's server binaries: `pg_config --bindir`, else Debian's
/// `/usr/lib/postgresql/<version>/bin` (the newest).
fn postgres_bin() -> Result<PathBuf, Error> {
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server binaries (initdb) found".into())
}

async fn run_plain(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = Command::new(program).args(args).output().await?;
    if !output.status.success() {
        return Err(format!("{program} failed").into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------
// The balancer

struct Balancer {
    http: reqwest::Client,
    ports: Vec<u16>,
}

/// Serves the balancer on a free port: each request goes to a random instance, and to the
/// next one when that one refuses the connection (it is down).
async fn start_balancer(ports: Vec<u16>) -> Result<u16, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let balancer = Arc::new(Balancer {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        ports,
    });
    let app = Router::new().fallback(forward).with_state(balancer);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("soak: balancer stopped: {e}");
        }
    });
    Ok(port)
}

async fn forward(State(balancer): State<Arc<Balancer>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 4 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let first = fastrand::usize(0..balancer.ports.len());
    for k in 0..balancer.ports.len() {
        let port = balancer.ports[(first + k) % balancer.ports.len()];
        let mut request = balancer
            .http
            .request(
                parts.method.clone(),
                format!("http://127.0.0.1:{port}{path}"),
            )
            .body(Bytes::clone(&body));
        for (name, value) in &parts.headers {
            if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                let Ok(bytes) = response.bytes().await else {
                    return StatusCode::BAD_GATEWAY.into_response();
                };
                let mut out = Response::new(Body::from(bytes));
                *out.status_mut() = status;
                for (name, value) in &headers {
                    if name != axum::http::header::TRANSFER_ENCODING
                        && name != axum::http::header::CONTENT_LENGTH
                    {
                        out.headers_mut().insert(name, value.clone());
                    }
                }
                return out;
            }
            // Down: try the next instance. Anything else (a timeout) may have been acted
            // on, so the client is told, as a real balancer would.
            Err(e) if e.is_connect() => continue,
            Err(_) => return StatusCode::GATEWAY_TIMEOUT.into_response(),
        }
    }
    StatusCode::BAD_GATEWAY.into_response()
}

// ---------------------------------------------------------------------------------------
// The simulators, over HTTP

/// The simulators' base URLs and the `/_sandbox` calls a soak makes.
#[derive(Clone)]
pub struct Simulators {
    pub http: reqwest::Client,
    pub okya: String,
    pub stripe: String,
    pub epoint: String,
    pub sessionm: String,
    pub sessionm_pos: String,
}

impl Simulators {
    fn all(&self) -> [&str; 5] {
        [
            &self.okya,
            &self.stripe,
            &self.epoint,
            &self.sessionm,
            &self.sessionm_pos,
        ]
    }

    /// Turns on random faults at `rate` on every simulator (calls and webhooks); hangs
    /// last 6 s, past the service's upstream timeouts.
    pub async fn chaos(&self, rate: f64) -> Result<(), Error> {
        let chaos = json!({"chaos": {"rate": rate, "hang_ms": 6000, "webhook_rate": rate}});
        for url in self.all() {
            self.put_faults(url, &chaos).await?;
        }
        Ok(())
    }

    /// Turns every fault off.
    pub async fn calm(&self) -> Result<(), Error> {
        for url in self.all() {
            self.put_faults(url, &json!({"chaos": null, "error_rate": 0.0}))
                .await?;
        }
        Ok(())
    }

    async fn put_faults(&self, url: &str, body: &Value) -> Result<(), Error> {
        let response = self
            .http
            .put(format!("{url}/_sandbox/faults"))
            .json(body)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("{url}/_sandbox/faults: {}", response.status()).into());
        }
        Ok(())
    }

    /// `GET {base}{path}` as JSON.
    pub async fn get(&self, base: &str, path: &str) -> Result<Value, Error> {
        Ok(self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// `POST {base}{path}` with an empty JSON body; the status.
    pub async fn post(&self, base: &str, path: &str) -> Result<StatusCode, Error> {
        Ok(self
            .http
            .post(format!("{base}{path}"))
            .json(&json!({}))
            .send()
            .await?
            .status())
    }
}
