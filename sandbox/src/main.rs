//! `cbtl-sandbox`: the four simulators alone, on fixed ports, so an app team can point a
//! staging cbtl-bff at them.
//!
//! A service reaches them by URL, so it treats them as real upstreams and refuses the
//! published sandbox credentials: the binary takes its own (flags or `SANDBOX_…`
//! variables; each one not given is generated at start) and prints, on stdout, the
//! `CBTL_…` environment a service needs to use them. Logs go to stderr, so
//! `cbtl-sandbox > sandbox.env` keeps the environment in a file.
//!
//! Its own variables are not named `CBTL_…`: a service reads every `CBTL_` variable as a
//! setting and refuses one it does not know.

use cbtl_sandbox::{Sandbox, SandboxConfig, credentials, okya, service_env};
use clap::Parser;
use std::{io::Write as _, net::SocketAddr, process::ExitCode};

/// Runs the Okya, Stripe, Epoint and SessionM simulators on fixed ports and prints the
/// environment that points a cbtl-bff at them.
#[derive(Debug, Parser)]
#[command(name = "cbtl-sandbox", version)]
struct Args {
    /// Where the Okya simulator (commerce and Auth) listens.
    #[arg(long, env = "SANDBOX_OKYA_ADDR", default_value = "127.0.0.1:8081")]
    okya_addr: SocketAddr,
    /// Where the Stripe simulator listens.
    #[arg(long, env = "SANDBOX_STRIPE_ADDR", default_value = "127.0.0.1:8082")]
    stripe_addr: SocketAddr,
    /// Where the Epoint simulator listens.
    #[arg(long, env = "SANDBOX_EPOINT_ADDR", default_value = "127.0.0.1:8083")]
    epoint_addr: SocketAddr,
    /// Where SessionM's Core API host listens.
    #[arg(
        long,
        env = "SANDBOX_SESSIONM_CORE_ADDR",
        default_value = "127.0.0.1:8084"
    )]
    sessionm_core_addr: SocketAddr,
    /// Where SessionM's POS/eCommerce API host listens.
    #[arg(
        long,
        env = "SANDBOX_SESSIONM_POS_ADDR",
        default_value = "127.0.0.1:8085"
    )]
    sessionm_pos_addr: SocketAddr,
    /// The host the printed URLs name; by default each simulator's bound IP (127.0.0.1
    /// for an unspecified address such as 0.0.0.0).
    #[arg(long, env = "SANDBOX_PUBLIC_HOST")]
    public_host: Option<String>,
    /// The service's base URL: Okya's webhooks go to `{app_url}/webhooks/okya`, Stripe's
    /// to `{app_url}/webhooks/stripe`.
    #[arg(long, env = "SANDBOX_APP_URL", default_value = "http://127.0.0.1:8080")]
    app_url: String,

    /// Okya's API key (`Authorization: Bearer`).
    #[arg(long, env = "SANDBOX_OKYA_API_KEY", hide_env_values = true)]
    okya_api_key: Option<String>,
    /// The secret that signs Okya's webhooks.
    #[arg(long, env = "SANDBOX_OKYA_WEBHOOK_SECRET", hide_env_values = true)]
    okya_webhook_secret: Option<String>,
    /// The Stripe secret key accepted (`sk_test_…`).
    #[arg(long, env = "SANDBOX_STRIPE_SECRET_KEY", hide_env_values = true)]
    stripe_secret_key: Option<String>,
    /// The secret that signs Stripe's webhooks (`whsec_…`).
    #[arg(long, env = "SANDBOX_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    stripe_webhook_secret: Option<String>,
    /// Epoint's `X-Api-Key`.
    #[arg(long, env = "SANDBOX_EPOINT_API_KEY", hide_env_values = true)]
    epoint_api_key: Option<String>,
    /// SessionM Core API key.
    #[arg(long, env = "SANDBOX_SESSIONM_API_KEY", hide_env_values = true)]
    sessionm_api_key: Option<String>,
    /// SessionM Core API secret.
    #[arg(long, env = "SANDBOX_SESSIONM_API_SECRET", hide_env_values = true)]
    sessionm_api_secret: Option<String>,
    /// SessionM POS/eCommerce API key.
    #[arg(long, env = "SANDBOX_SESSIONM_POS_API_KEY", hide_env_values = true)]
    sessionm_pos_api_key: Option<String>,
    /// SessionM POS/eCommerce API secret.
    #[arg(long, env = "SANDBOX_SESSIONM_POS_API_SECRET", hide_env_values = true)]
    sessionm_pos_api_secret: Option<String>,
    /// The client id SessionM requires in every POS body.
    #[arg(long, env = "SANDBOX_SESSIONM_CLIENT_ID")]
    sessionm_client_id: Option<String>,

    /// The code every one-time password carries; empty for random codes (read them from
    /// Okya's `GET /_sandbox/outbox`).
    #[arg(long, env = "SANDBOX_OTP_CODE", default_value = credentials::OTP_CODE)]
    otp_code: String,
    /// How long after its payment the sandbox store accepts an order, in ms; 0 never (use
    /// `POST /_sandbox/orders/{id}/accept`).
    #[arg(long, env = "SANDBOX_AUTO_ACCEPT_DELAY_MS", default_value_t = okya::AUTO_ACCEPT_DELAY_MS)]
    auto_accept_delay_ms: u64,
    /// Latency added to every call, in ms.
    #[arg(long, env = "SANDBOX_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Share of calls answered 503, 0.0 to 1.0.
    #[arg(long, env = "SANDBOX_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
}

/// The credentials the simulators accept, each given or generated.
struct Credentials {
    okya_api_key: String,
    okya_webhook_secret: String,
    stripe_secret_key: String,
    stripe_webhook_secret: String,
    epoint_api_key: String,
    sessionm_api_key: String,
    sessionm_api_secret: String,
    sessionm_pos_api_key: String,
    sessionm_pos_api_secret: String,
    sessionm_client_id: String,
}

/// `prefix` and 24 random letters and digits.
fn generated(prefix: &str) -> String {
    format!("{prefix}{}", random(24))
}

/// `len` random letters and digits.
fn random(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

impl Credentials {
    /// The given credentials, and a fresh one for each not given; or the flags that hold
    /// a published sandbox value, which a service pointed at a URL refuses.
    fn from_args(args: &Args) -> Result<Self, Vec<&'static str>> {
        let mut published = Vec::new();
        let mut take =
            |given: &Option<String>, flag: &'static str, sandbox: &str, prefix: &str| match given {
                Some(value) if value == sandbox => {
                    published.push(flag);
                    value.clone()
                }
                Some(value) => value.clone(),
                None => generated(prefix),
            };
        let credentials = Self {
            okya_api_key: take(
                &args.okya_api_key,
                "--okya-api-key",
                credentials::OKYA_API_KEY,
                "okya_",
            ),
            okya_webhook_secret: take(
                &args.okya_webhook_secret,
                "--okya-webhook-secret",
                credentials::OKYA_WEBHOOK_SECRET,
                "whsec_",
            ),
            stripe_secret_key: take(
                &args.stripe_secret_key,
                "--stripe-secret-key",
                credentials::STRIPE_SECRET_KEY,
                "sk_test_",
            ),
            stripe_webhook_secret: take(
                &args.stripe_webhook_secret,
                "--stripe-webhook-secret",
                credentials::STRIPE_WEBHOOK_SECRET,
                "whsec_",
            ),
            epoint_api_key: take(
                &args.epoint_api_key,
                "--epoint-api-key",
                credentials::EPOINT_API_KEY,
                "epoint_",
            ),
            sessionm_api_key: take(
                &args.sessionm_api_key,
                "--sessionm-api-key",
                credentials::SESSIONM_API_KEY,
                "sessionm_",
            ),
            sessionm_api_secret: take(
                &args.sessionm_api_secret,
                "--sessionm-api-secret",
                credentials::SESSIONM_API_SECRET,
                "",
            ),
            sessionm_pos_api_key: take(
                &args.sessionm_pos_api_key,
                "--sessionm-pos-api-key",
                credentials::SESSIONM_POS_API_KEY,
                "sessionm_pos_",
            ),
            sessionm_pos_api_secret: take(
                &args.sessionm_pos_api_secret,
                "--sessionm-pos-api-secret",
                credentials::SESSIONM_POS_API_SECRET,
                "",
            ),
            sessionm_client_id: take(
                &args.sessionm_client_id,
                "--sessionm-client-id",
                credentials::SESSIONM_CLIENT_ID,
                "client-",
            ),
        };
        if published.is_empty() {
            Ok(credentials)
        } else {
            Err(published)
        }
    }
}

/// The four simulators as the arguments ask, accepting `credentials`.
fn config(args: &Args, credentials: &Credentials) -> SandboxConfig {
    let mut config = SandboxConfig::for_app(&args.app_url);
    if let Some(okya) = &mut config.okya {
        okya.api_key = credentials.okya_api_key.clone();
        okya.webhook_secret = credentials.okya_webhook_secret.clone();
        okya.otp_code = args.otp_code.clone();
        okya.auto_accept_delay_ms = args.auto_accept_delay_ms;
    }
    if let Some(stripe) = &mut config.stripe {
        stripe.secret_keys = vec![credentials.stripe_secret_key.clone()];
        stripe.webhook_secret = credentials.stripe_webhook_secret.clone();
    }
    if let Some(epoint) = &mut config.epoint {
        epoint.api_key = credentials.epoint_api_key.clone();
    }
    if let Some(sessionm) = &mut config.sessionm {
        sessionm.api_key = credentials.sessionm_api_key.clone();
        sessionm.api_secret = credentials.sessionm_api_secret.clone();
        sessionm.pos_api_key = credentials.sessionm_pos_api_key.clone();
        sessionm.pos_api_secret = credentials.sessionm_pos_api_secret.clone();
        sessionm.client_id = credentials.sessionm_client_id.clone();
    }
    config.latency_ms = args.latency_ms;
    config.error_rate = args.error_rate;
    config.listen = cbtl_sandbox::Listen {
        okya: args.okya_addr,
        stripe: args.stripe_addr,
        epoint: args.epoint_addr,
        sessionm_core: args.sessionm_core_addr,
        sessionm_pos: args.sessionm_pos_addr,
    };
    config
}

/// A simulator's URL as a service should name it: `public_host` (if given) with the bound
/// port; else the bound address, loopback standing for an unspecified one (`0.0.0.0`).
fn public_url(base_url: &str, public_host: Option<&str>) -> String {
    let port = base_url.rsplit(':').next().unwrap_or_default();
    match public_host {
        Some(host) => format!("http://{host}:{port}"),
        None if base_url.starts_with("http://0.0.0.0:") => format!("http://127.0.0.1:{port}"),
        None if base_url.starts_with("http://[::]:") => format!("http://[::1]:{port}"),
        None => base_url.to_owned(),
    }
}

/// The environment that points a cbtl-bff at `sandbox`: every upstream's URL, the
/// credentials it accepts, SessionM's stores, and a signing key for the service's own
/// tokens (required once any upstream has a URL).
fn service_env(
    sandbox: &Sandbox,
    credentials: &Credentials,
    public_host: Option<&str>,
) -> Vec<(String, String)> {
    let url = |sim: &Option<cbtl_sandbox::Simulator>| {
        sim.as_ref()
            .map(|s| public_url(&s.base_url, public_host))
            .unwrap_or_default()
    };
    let list = |secret: &str| format!("[{secret}]");
    let mut env: Vec<(String, String)> = [
        ("CBTL_OKYA__BASE_URL", url(&sandbox.okya)),
        ("CBTL_OKYA__API_KEY", credentials.okya_api_key.clone()),
        (
            "CBTL_WEBHOOKS__OKYA_SECRETS",
            list(&credentials.okya_webhook_secret),
        ),
        ("CBTL_STRIPE__BASE_URL", url(&sandbox.stripe)),
        (
            "CBTL_STRIPE__SECRET_KEY",
            credentials.stripe_secret_key.clone(),
        ),
        (
            "CBTL_WEBHOOKS__STRIPE_SECRETS",
            list(&credentials.stripe_webhook_secret),
        ),
        ("CBTL_EPOINT__BASE_URL", url(&sandbox.epoint)),
        ("CBTL_EPOINT__API_KEY", credentials.epoint_api_key.clone()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    if let Some(sessionm) = &sandbox.sessionm {
        let url = |sim: &cbtl_sandbox::Simulator| public_url(&sim.base_url, public_host);
        env.extend(
            [
                ("CBTL_SESSIONM__CORE_URL", url(&sessionm.core)),
                (
                    "CBTL_SESSIONM__API_KEY",
                    credentials.sessionm_api_key.clone(),
                ),
                (
                    "CBTL_SESSIONM__API_SECRET",
                    credentials.sessionm_api_secret.clone(),
                ),
                ("CBTL_SESSIONM__POS_URL", url(&sessionm.pos)),
                (
                    "CBTL_SESSIONM__POS_API_KEY",
                    credentials.sessionm_pos_api_key.clone(),
                ),
                (
                    "CBTL_SESSIONM__POS_API_SECRET",
                    credentials.sessionm_pos_api_secret.clone(),
                ),
                (
                    "CBTL_SESSIONM__CLIENT_ID",
                    credentials.sessionm_client_id.clone(),
                ),
                (
                    "CBTL_SESSIONM__ECOMMERCE_STORE_ID",
                    sessionm.ecommerce_store_id.clone(),
                ),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value)),
        );
        env.extend(sessionm.store_ids.iter().map(|(okya, sessionm)| {
            (
                format!("CBTL_SESSIONM__STORE_IDS__{okya}"),
                sessionm.clone(),
            )
        }));
    }
    // A service with upstream URLs turns introspection off by default (it may be serving
    // real customers); against these simulators an app team explores in GraphiQL.
    env.push(("CBTL_GRAPHQL__INTROSPECTION".to_owned(), "true".to_owned()));
    // Last, as `service_env::read` expects; the service wants at least 32 bytes.
    env.push((service_env::LAST.to_owned(), random(48)));
    env
}

/// What the printed environment is, for whoever reads the file later.
fn comment(app_url: &str) -> String {
    format!(
        "cbtl-sandbox: the environment that points a cbtl-bff at these simulators.\n\
         The service must be reachable at {app_url} (SANDBOX_APP_URL) for the webhooks.\n\
         CBTL_AUTH__JWT_SECRET is the service's own token key, generated here because any\n\
         upstream URL requires one: keep one value for every instance of the service."
    )
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.error_rate) {
        eprintln!("cbtl-sandbox: --error-rate must be between 0.0 and 1.0");
        return ExitCode::from(2);
    }
    let credentials = match Credentials::from_args(&args) {
        Ok(credentials) => credentials,
        Err(flags) => {
            eprintln!(
                "cbtl-sandbox: {} hold the published sandbox credentials, which a service \
                 pointed at a URL refuses: give other values, or none to have them generated",
                flags.join(", ")
            );
            return ExitCode::from(2);
        }
    };
    let sandbox = match cbtl_sandbox::start(config(&args, &credentials)).await {
        Ok(sandbox) => sandbox,
        Err(e) => {
            eprintln!("cbtl-sandbox: cannot start the simulators: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = service_env(&sandbox, &credentials, args.public_host.as_deref());
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(service_env::write(&comment(&args.app_url), &env).as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("cbtl-sandbox: cannot print the environment: {e}");
        return ExitCode::FAILURE;
    }
    drop(stdout);
    tracing::info!(
        okya = %url_of(&sandbox.okya),
        stripe = %url_of(&sandbox.stripe),
        epoint = %url_of(&sandbox.epoint),
        sessionm_core = %sandbox.sessionm.as_ref().map(|s| s.core.base_url.as_str()).unwrap_or_default(),
        sessionm_pos = %sandbox.sessionm.as_ref().map(|s| s.pos.base_url.as_str()).unwrap_or_default(),
        "cbtl-sandbox running; the service's environment is on stdout"
    );
    shutdown_signal().await;
    tracing::info!("cbtl-sandbox stopping");
    drop(sandbox);
    ExitCode::SUCCESS
}

fn url_of(sim: &Option<cbtl_sandbox::Simulator>) -> &str {
    sim.as_ref()
        .map(|s| s.base_url.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::public_url;

    #[test]
    fn printed_urls_name_a_host_a_service_can_reach() {
        let url = |base, host| public_url(base, host);
        assert_eq!(url("http://127.0.0.1:8081", None), "http://127.0.0.1:8081");
        assert_eq!(url("http://0.0.0.0:8081", None), "http://127.0.0.1:8081");
        assert_eq!(url("http://[::]:8081", None), "http://[::1]:8081");
        assert_eq!(
            url("http://0.0.0.0:8081", Some("sims.staging.internal")),
            "http://sims.staging.internal:8081"
        );
    }
}
