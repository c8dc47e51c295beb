//! One typed reqwest client per upstream system. Each is built once at start and shared:
//! reqwest keeps a keep-alive pool per client, and every call has a connect and a total
//! timeout and its own `tracing` span.

mod call;
pub mod epoint;
pub mod okya;
pub mod sessionm;
pub mod signature;
pub mod stripe;

pub(crate) use call::{Call, join, parse_plain_error};
pub use call::{Rejection, System, UpstreamError};

use crate::config::Timeouts;

/// Builds the shared HTTP client of one upstream.
pub(crate) fn http_client(timeouts: Timeouts) -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .user_agent(concat!("cbtl-bff/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::Setup(e.to_string()))
}

/// The upstream clients, shared by every request and flow.
#[derive(Clone)]
pub struct Upstreams {
    pub okya: okya::OkyaClient,
    pub stripe: stripe::StripeClient,
    pub epoint: epoint::EpointClient,
    pub sessionm: sessionm::SessionmClient,
}

impl Upstreams {
    /// One client per system, aimed at the configured URL or else at its simulator.
    pub fn new(
        settings: &crate::config::Settings,
        sandbox: &crate::sandbox::Sandbox,
    ) -> Result<Self, UpstreamError> {
        let url = |configured: &Option<String>, simulated: &Option<crate::sandbox::Simulator>| {
            configured
                .clone()
                .or_else(|| simulated.as_ref().map(|s| s.base_url.clone()))
                .ok_or_else(|| UpstreamError::Setup("no URL and no simulator".into()))
        };
        let okya_url = url(&settings.okya.base_url, &sandbox.okya)?;
        let okya_auth_url = settings
            .okya
            .auth_base_url
            .clone()
            .unwrap_or_else(|| okya_url.clone());
        Ok(Self {
            okya: okya::OkyaClient::new(&okya_url, &okya_auth_url, &settings.okya)?,
            stripe: stripe::StripeClient::new(
                &url(&settings.stripe.base_url, &sandbox.stripe)?,
                &settings.stripe,
            )?,
            epoint: epoint::EpointClient::new(
                &url(&settings.epoint.base_url, &sandbox.epoint)?,
                &settings.epoint,
            )?,
            sessionm: sessionm::SessionmClient::new(
                sessionm_endpoints(&settings.sessionm, sandbox.sessionm.as_ref())?,
                &settings.sessionm,
            )?,
        })
    }
}

/// SessionM's two hosts and store mapping: the configured ones, or else the simulator's.
fn sessionm_endpoints(
    settings: &crate::config::SessionmSettings,
    simulated: Option<&crate::sandbox::sessionm::SessionmSandbox>,
) -> Result<sessionm::SessionmEndpoints, UpstreamError> {
    match (&settings.core_url, &settings.pos_url, simulated) {
        (Some(core_url), Some(pos_url), _) => Ok(sessionm::SessionmEndpoints {
            core_url: core_url.clone(),
            pos_url: pos_url.clone(),
            store_ids: settings.store_ids.clone(),
            ecommerce_store_id: settings.ecommerce_store_id.clone().ok_or_else(|| {
                UpstreamError::Setup("sessionm.ecommerce_store_id is not set".into())
            })?,
        }),
        (None, None, Some(sim)) => {
            // The simulator's own stores, unless the settings map some themselves.
            let mut store_ids = sim.store_ids.clone();
            store_ids.extend(settings.store_ids.clone());
            Ok(sessionm::SessionmEndpoints {
                core_url: sim.core.base_url.clone(),
                pos_url: sim.pos.base_url.clone(),
                store_ids,
                ecommerce_store_id: settings
                    .ecommerce_store_id
                    .clone()
                    .unwrap_or_else(|| sim.ecommerce_store_id.clone()),
            })
        }
        _ => Err(UpstreamError::Setup(
            "sessionm.core_url and sessionm.pos_url must be set together".into(),
        )),
    }
}
