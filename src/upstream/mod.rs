//! One typed reqwest client per upstream system. Each is built once at start and shared:
//! reqwest keeps a keep-alive pool per client, and every call has a connect and a total
//! timeout and its own `tracing` span.

mod call;
pub mod epoint;
pub mod okya;
pub mod sessionm;
pub mod signature;
pub mod stripe;

pub(crate) use call::{Call, Retry, join, parse_plain_error};
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
