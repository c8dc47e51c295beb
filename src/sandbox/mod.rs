//! In-process HTTP simulators of the four upstreams, for `cargo run` and the tests.
//!
//! Each is a real axum server on a loopback port; the production clients talk to it over
//! HTTP exactly as they would to the real system. Production code never calls into this
//! module: it only learns the simulators' base URLs.

pub mod epoint;
pub mod faults;
pub mod okya;
pub mod sessionm;
pub mod stripe;

use axum::Router;
use faults::Faults;
use std::{net::SocketAddr, sync::Arc};
use tokio::{net::TcpListener, task::JoinHandle};

/// A running simulator.
pub struct Simulator {
    pub base_url: String,
    pub faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `routes` (wrapped with fault injection and the `/_sandbox` knobs) on a free
/// loopback port.
pub async fn serve(
    name: &'static str,
    routes: Router,
    faults: Arc<Faults>,
) -> std::io::Result<Simulator> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
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

/// The simulators running for this process: one per upstream whose URL is not configured.
#[derive(Default)]
pub struct Sandbox {
    pub okya: Option<Simulator>,
    pub stripe: Option<Simulator>,
    pub epoint: Option<Simulator>,
    pub sessionm: Option<Simulator>,
    /// The SessionM Core host (interim wiring: `sessionm` holds the POS host).
    pub sessionm_core: Option<Simulator>,
}

/// Starts a simulator for each upstream without a configured URL. `app_url` is where the
/// simulators deliver webhooks.
pub async fn start(settings: &crate::config::Settings, app_url: &str) -> std::io::Result<Sandbox> {
    use secrecy::ExposeSecret;
    let knobs = &settings.sandbox;
    let faults = || Faults::new(knobs.latency_ms, knobs.error_rate);
    let mut sandbox = Sandbox::default();
    if settings.okya.base_url.is_none() {
        let config = okya::OkyaSimConfig {
            api_key: settings.okya.api_key.expose_secret().to_owned(),
            otp_code: settings.sandbox.otp_code.clone(),
            auto_accept_delay_ms: settings.sandbox.auto_accept_delay_ms,
            webhook_url: Some(format!("{}/webhooks/okya", app_url.trim_end_matches('/'))),
            webhook_secret: settings
                .webhooks
                .okya_secrets
                .first()
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default(),
        };
        sandbox.okya = Some(okya::start(config, faults()).await?);
    }
    if settings.stripe.base_url.is_none() {
        let config = stripe::StripeSimConfig {
            webhook_url: Some(format!("{app_url}/webhooks/stripe")),
            webhook_secret: settings
                .webhooks
                .stripe_secrets
                .first()
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default(),
        };
        sandbox.stripe = Some(stripe::start(config, faults()).await?);
    }
    if settings.epoint.base_url.is_none() {
        let config = epoint::EpointSimConfig {
            offline_locations: vec![okya::catalog::POS_OFFLINE_STORE.to_owned()],
        };
        sandbox.epoint = Some(epoint::start(config, faults()).await?);
    }
    if settings.sessionm.base_url.is_none() {
        // Interim wiring so the new simulator builds; the final wiring comes with the
        // client's rewrite.
        let config = sessionm::SessionmSimConfig {
            api_key: crate::config::sandbox_credentials::SESSIONM_API_KEY.to_owned(),
            api_secret: crate::config::sandbox_credentials::SESSIONM_API_SECRET.to_owned(),
            pos_api_key: settings.sessionm.client_id.clone(),
            pos_api_secret: crate::config::sandbox_credentials::SESSIONM_CLIENT_SECRET.to_owned(),
            client_id: settings.sessionm.client_id.clone(),
            okya_store_ids: okya::catalog::stores().into_iter().map(|s| s.id).collect(),
        };
        let sessionm = sessionm::start(config, faults()).await?;
        sandbox.sessionm = Some(sessionm.pos);
        sandbox.sessionm_core = Some(sessionm.core);
    }
    Ok(sandbox)
}
