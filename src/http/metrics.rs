//! `GET /metrics`: the Prometheus text exposition of `telemetry::metrics`.

use crate::telemetry;
use axum::http::header;

/// The metrics in Prometheus's text format (version 0.0.4), e.g.
/// `cbtl_db_queries_total 1234`: counters since the process started.
pub async fn render() -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::metrics::handle().render(),
    )
}
