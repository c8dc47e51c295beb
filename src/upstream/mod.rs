//! One typed reqwest client per upstream system. Each is built once at start and shared:
//! reqwest keeps a keep-alive pool per client, and every call has a connect and a total
//! timeout and its own `tracing` span.

mod call;
#[cfg(test)]
mod contract_tests;
pub mod epoint;
pub mod guard;
pub mod okya;
pub mod sessionm;
pub mod signature;
pub mod stripe;

pub(crate) use call::{Call, join, parse_plain_error};
pub use call::{Rejection, System, UpstreamError};
pub use guard::{Guard, Guards};

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
    /// Okya's catalogue held in process (bounded staleness), shared by every request.
    pub catalog: okya::catalog::CatalogCache,
    /// Each system's circuit breaker and retry budget, shared with its client.
    pub guards: Guards,
}

/// Where each upstream is: the configured URL or its simulator's, decided by `app`.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub okya: String,
    pub okya_auth: String,
    pub stripe: String,
    pub epoint: String,
    pub sessionm: sessionm::SessionmEndpoints,
}

impl Upstreams {
    /// One client per system, aimed at `endpoints`.
    ///
    /// # Errors
    /// `Setup` when a URL does not parse or a client cannot be built.
    pub fn new(
        endpoints: Endpoints,
        settings: &crate::config::Settings,
    ) -> Result<Self, UpstreamError> {
        let guards = Guards::new(&settings.breaker, &settings.retry_budget, |system| {
            // A call waits for a slot at most its upstream's whole-call timeout.
            let (max, timeouts) = match system {
                System::Okya | System::OkyaAuth => {
                    (settings.okya.max_concurrent_calls, settings.okya.timeouts())
                }
                System::Stripe => (
                    settings.stripe.max_concurrent_calls,
                    settings.stripe.timeouts(),
                ),
                System::Epoint => (
                    settings.epoint.max_concurrent_calls,
                    settings.epoint.timeouts(),
                ),
                System::Sessionm => (
                    settings.sessionm.max_concurrent_calls,
                    settings.sessionm.timeouts(),
                ),
            };
            guard::Slots {
                max,
                wait: timeouts.total,
            }
        })?;
        let okya = okya::OkyaClient::new(
            &endpoints.okya,
            &endpoints.okya_auth,
            &settings.okya,
            &guards,
        )?;
        Ok(Self {
            catalog: okya::catalog::CatalogCache::new(okya.clone(), &settings.catalog),
            okya,
            stripe: stripe::StripeClient::new(&endpoints.stripe, &settings.stripe, &guards)?,
            epoint: epoint::EpointClient::new(&endpoints.epoint, &settings.epoint, &guards)?,
            sessionm: sessionm::SessionmClient::new(
                endpoints.sessionm,
                &settings.sessionm,
                &guards,
            )?,
            guards,
        })
    }
}
