//! HTTP simulators of the four upstreams of cbtl-bff (Okya, Stripe, Epoint and SessionM),
//! for `cargo run`, the tests, and staging.
//!
//! Each is a real axum server; the service's production clients talk to it over HTTP
//! exactly as they would to the real system. The service starts them in process (one per
//! upstream whose URL is unset) and only learns their base URLs; the `cbtl-sandbox` binary
//! runs all four alone on fixed ports.
//!
//! The simulators speak the contracts in `docs/upstreams/*.md` (and Stripe's and
//! SessionM's published APIs) with wire types of their own, and this crate imports nothing
//! from the service, so a change to a client's request shape cannot quietly change the
//! simulator too: the fixture tests in `tests/fixtures/` pin both sides.

#![warn(missing_docs)]

pub mod contract;
pub mod credentials;
pub mod epoint;
pub mod faults;
pub mod money;
pub mod okya;
pub mod service_env;
pub mod sessionm;
pub mod signature;
pub mod stripe;

use axum::Router;
use faults::Faults;
use std::{net::SocketAddr, sync::Arc};
use tokio::{net::TcpListener, task::JoinHandle};

/// A running simulator. Dropping it stops it.
pub struct Simulator {
    /// Where it listens, e.g. `http://127.0.0.1:41235`.
    pub base_url: String,
    /// Its fault knobs and call log (also reachable over HTTP under `/_sandbox`).
    pub faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Any free port on loopback: where the simulators listen unless told otherwise.
pub const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Serves `routes` (wrapped with fault injection and the `/_sandbox` knobs) on `addr`
/// (port 0 picks a free port; [`Simulator::base_url`] tells which).
pub async fn serve(
    name: &'static str,
    addr: SocketAddr,
    routes: Router,
    faults: Arc<Faults>,
) -> std::io::Result<Simulator> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = faults::instrument(routes, faults.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(simulator = name, error = %e, "simulator stopped");
        }
    });
    tracing::info!(simulator = name, %addr, "sandbox simulator listening");
    Ok(Simulator {
        base_url: format!("http://{addr}"),
        faults,
        task,
    })
}

/// Unix seconds now; simulators stamp their objects like the real systems do.
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The simulators running: one per upstream the [`SandboxConfig`] asked for.
#[derive(Default)]
pub struct Sandbox {
    /// Okya commerce and Okya Auth (one host).
    pub okya: Option<Simulator>,
    /// Stripe.
    pub stripe: Option<Simulator>,
    /// The Epoint POS gateway.
    pub epoint: Option<Simulator>,
    /// SessionM's two hosts (Core and POS) and the stores it knows.
    pub sessionm: Option<sessionm::SessionmSandbox>,
}

/// Where each simulator listens. Every address defaults to a free loopback port.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// Okya (commerce and Auth).
    pub okya: SocketAddr,
    /// Stripe.
    pub stripe: SocketAddr,
    /// Epoint.
    pub epoint: SocketAddr,
    /// SessionM's Core API host.
    pub sessionm_core: SocketAddr,
    /// SessionM's POS/eCommerce API host.
    pub sessionm_pos: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            okya: LOOPBACK_ANY_PORT,
            stripe: LOOPBACK_ANY_PORT,
            epoint: LOOPBACK_ANY_PORT,
            sessionm_core: LOOPBACK_ANY_PORT,
            sessionm_pos: LOOPBACK_ANY_PORT,
        }
    }
}

/// Which simulators to start, with what credentials and knobs, and where. `None` leaves an
/// upstream out (the service sets it to `None` for an upstream whose URL is configured).
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Okya, or `None`.
    pub okya: Option<okya::OkyaSimConfig>,
    /// Stripe, or `None`.
    pub stripe: Option<stripe::StripeSimConfig>,
    /// Epoint, or `None`.
    pub epoint: Option<epoint::EpointSimConfig>,
    /// SessionM, or `None`.
    pub sessionm: Option<sessionm::SessionmSimConfig>,
    /// Latency added to every simulator call, in ms.
    pub latency_ms: u64,
    /// Share of simulator calls answered 503, 0.0 to 1.0.
    pub error_rate: f64,
    /// Where each listens.
    pub listen: Listen,
}

/// Where cbtl-bff receives Okya's `order.updated` webhooks, under its base URL.
pub const OKYA_WEBHOOK_PATH: &str = "/webhooks/okya";
/// Where cbtl-bff receives Stripe's events, under its base URL.
pub const STRIPE_WEBHOOK_PATH: &str = "/webhooks/stripe";

impl SandboxConfig {
    /// All four simulators with the sandbox credentials ([`credentials`]), the sandbox
    /// store's automatic acceptance after 2 s, `str_burbank`'s POS offline, and Okya's and
    /// Stripe's webhooks delivered to the service at `app_url`
    /// (`{app_url}/webhooks/okya`, `{app_url}/webhooks/stripe`), on free loopback ports.
    pub fn for_app(app_url: &str) -> Self {
        let app_url = app_url.trim_end_matches('/');
        Self {
            okya: Some(okya::OkyaSimConfig {
                auto_accept_delay_ms: okya::AUTO_ACCEPT_DELAY_MS,
                webhook_url: Some(format!("{app_url}{OKYA_WEBHOOK_PATH}")),
                ..okya::OkyaSimConfig::default()
            }),
            stripe: Some(stripe::StripeSimConfig {
                webhook_url: Some(format!("{app_url}{STRIPE_WEBHOOK_PATH}")),
                ..stripe::StripeSimConfig::default()
            }),
            epoint: Some(epoint::EpointSimConfig {
                offline_locations: vec![okya::catalog::POS_OFFLINE_STORE.to_owned()],
                ..epoint::EpointSimConfig::default()
            }),
            sessionm: Some(sessionm::SessionmSimConfig::default()),
            latency_ms: 0,
            error_rate: 0.0,
            listen: Listen::default(),
        }
    }
}

/// Starts the simulators `config` asks for. Each has its own fault knobs, starting at
/// `config.latency_ms` and `config.error_rate` (SessionM's two hosts share one).
pub async fn start(config: SandboxConfig) -> std::io::Result<Sandbox> {
    let SandboxConfig {
        okya,
        stripe,
        epoint,
        sessionm,
        latency_ms,
        error_rate,
        listen,
    } = config;
    let faults = || Faults::new(latency_ms, error_rate);
    let mut sandbox = Sandbox::default();
    if let Some(config) = okya {
        sandbox.okya = Some(okya::start_on(listen.okya, config, faults()).await?);
    }
    if let Some(config) = stripe {
        sandbox.stripe = Some(stripe::start_on(listen.stripe, config, faults()).await?);
    }
    if let Some(config) = epoint {
        sandbox.epoint = Some(epoint::start_on(listen.epoint, config, faults()).await?);
    }
    if let Some(config) = sessionm {
        let hosts = sessionm::Hosts {
            core: listen.sessionm_core,
            pos: listen.sessionm_pos,
        };
        sandbox.sessionm = Some(sessionm::start_on(hosts, config, faults()).await?);
    }
    Ok(sandbox)
}
