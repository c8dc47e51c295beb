//! cbtl-bff: the GraphQL backend-for-frontend of the CBTL mobile ordering app.

pub mod app;
pub mod auth;
pub mod config;
pub mod context;
#[cfg(feature = "crash-points")]
pub mod crash;
pub mod domain;
pub mod events;
pub mod flows;
/// The fuzz targets' bodies (`fuzz/`), run by the tests on stable too; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod graphql;
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod quota;
pub mod rate_limit;
pub mod retry;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod worker;
