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
                &url(&settings.sessionm.base_url, &sandbox.sessionm)?,
                &settings.sessionm,
            )?,
        })
    }
}
