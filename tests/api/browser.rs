//! A real browser for the tests: Debian's headless Chromium, driven over W3C WebDriver by
//! chromedriver, through fantoccini. Both programs must be installed (`apt-get install
//! chromium chromium-driver`; `.ci/run` does it): a test that needs them fails without them,
//! it does not skip.

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};
use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::{io::AsyncReadExt, process::Child};

/// How long any one condition may take before the test fails. Generous for a loaded CI
/// machine; a passing run waits only as long as the page needs.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Between two looks at a condition.
const POLL: Duration = Duration::from_millis(50);

pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_port: u16,
    _profile: tempfile::TempDir,
}

/// The path in the environment variable `env`, or else the first of `names` on `PATH`.
fn program(env: &str, names: &[&str]) -> PathBuf {
    let found = match std::env::var_os(env) {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
                .find(|candidate| candidate.is_file())
        }
    };
    found.unwrap_or_else(|| {
        panic!(
            "{} not found (looked at ${env}, else PATH): the browser tests need Debian's \
             chromium and chromium-driver; install them with `apt-get install chromium \
             chromium-driver` (.ci/run does)",
            names.join(" or ")
        )
    })
}

impl Browser {
    /// Starts chromedriver on a port it picks itself, and through it a headless Chromium
    /// with a fresh profile that resolves no host name: it reaches loopback addresses only,
    /// as a browser in an air-gapped network would reach only the service.
    pub async fn start() -> Self {
        let chromium = program("CHROMIUM", &["chromium", "chromium-browser"]);
        let chromedriver = program("CHROMEDRIVER", &["chromedriver"]);
        let (driver, driver_port) = start_driver(&chromedriver).await;
        let profile = tempfile::tempdir().expect("a profile folder");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--window-size=1280,900",
            // Every host but the loopback address the service listens on fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .unwrap_or_else(|e| panic!("chromedriver opens a Chromium session: {e}"));
        Browser {
            client,
            driver,
            driver_port,
            _profile: profile,
        }
    }

    /// Ends the browser session (closing Chromium) and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) until it returns something
    /// other than `null`, `false` or `""`, and returns that.
    pub async fn until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self
                .client
                .execute(script, args.clone())
                .await
                .unwrap_or_else(|e| panic!("script for {what} runs: {e}"));
            let done = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if done {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {what}; last saw {value}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The element `locator` finds once it exists.
    pub async fn element(&self, what: &str, locator: Locator<'_>) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .every(POLL)
            .for_element(locator)
            .await
            .unwrap_or_else(|e| panic!("{what} appears: {e}"))
    }

    /// Saves a PNG of the window where `GRAPHIQL_SCREENSHOT` points, if it is set: how
    /// `docs/graphiql.png` is made, by hand.
    pub async fn screenshot_if_asked(&self) {
        if let Some(path) = std::env::var_os("GRAPHIQL_SCREENSHOT") {
            let png = self.client.screenshot().await.expect("a screenshot");
            std::fs::write(&path, png).expect("screenshot written");
        }
    }
}

impl Browser {
    /// Saves what the window shows to a temporary file and says where, for a test that failed.
    pub async fn screenshot_for_failure(&self) {
        let path = std::env::temp_dir().join(format!(
            "browser-failure-{}.png",
            uuid::Uuid::new_v4().simple()
        ));
        match self.client.screenshot().await {
            Ok(png) if std::fs::write(&path, &png).is_ok() => {
                eprintln!("the browser's window at the failure: {}", path.display());
            }
            _ => eprintln!("no screenshot of the failure could be taken"),
        }
    }
}

impl Drop for Browser {
    /// A test that panicked never reached `close`: ask chromedriver to shut down, which
    /// closes its browsers (killing chromedriver alone would leave Chromium running).
    fn drop(&mut self) {
        // Only a chromedriver still running holds its port: once it has ended (after
        // `close`), the port may already be another test's driver.
        if !matches!(self.driver.try_wait(), Ok(None)) {
            return;
        }
        let port = self.driver_port;
        let shutdown = || -> std::io::Result<()> {
            let mut stream = std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_secs(2),
            )?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.write_all(
                format!(
                    "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).map(|_| ())
        };
        let _ = shutdown();
        let _ = self.driver.start_kill();
    }
}

/// Starts chromedriver with `--port=0` and reads the port it chose from what it prints
/// ("ChromeDriver was started successfully on port 41234."), so no port is picked free
/// and bound later by someone else.
async fn start_driver(chromedriver: &Path) -> (Child, u16) {
    let mut driver = tokio::process::Command::new(chromedriver)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", chromedriver.display()));
    let mut stdout = driver.stdout.take().expect("piped stdout");
    const MARK: &str = "started successfully on port ";
    let port = tokio::time::timeout(PATIENCE, async {
        let mut printed = String::new();
        let mut chunk = [0u8; 1024];
        loop {
            let read = stdout.read(&mut chunk).await.expect("chromedriver output");
            assert!(
                read > 0,
                "chromedriver ended before it said its port: {printed}"
            );
            printed.push_str(&String::from_utf8_lossy(&chunk[..read]));
            if let Some(at) = printed.find(MARK) {
                let digits: String = printed[at + MARK.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                // The number is whole once a non-digit follows it.
                if printed.len() > at + MARK.len() + digits.len() {
                    break digits.parse::<u16>().expect("a port number");
                }
            }
        }
    })
    .await
    .expect("chromedriver says its port in time");
    // Keep reading what it prints, so a full pipe never blocks it.
    tokio::spawn(async move {
        let mut sink = [0u8; 1024];
        while matches!(stdout.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    (driver, port)
}
