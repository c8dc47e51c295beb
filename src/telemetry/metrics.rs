//! Prometheus metrics, rendered at `GET /metrics` (`http::metrics`).
//!
//! For now one counter, `cbtl_db_queries_total`: every statement sea-orm runs on the
//! service's pool (transactions included), so a benchmark can read database queries per
//! request from outside. Issue 13 adds the rest.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sea_orm::DatabaseConnection;
use std::sync::OnceLock;

/// The counter's name, as Prometheus shows it.
pub const DB_QUERIES: &str = "cbtl_db_queries_total";

/// The process's recorder, installed on first use. One per process: several apps in one
/// test process share it (their counts add up), and a recorder some other code installed
/// first leaves this one rendering nothing rather than failing the start.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        handle
    })
}

/// Counts every statement `db` runs (and the transactions begun from it) in
/// [`DB_QUERIES`], failed ones included.
pub fn count_queries(db: &mut DatabaseConnection) -> crate::store::StatementCount {
    // Installed before the first query so none goes uncounted.
    handle();
    let counter = metrics::counter!(DB_QUERIES);
    crate::store::count_statements(db, move || counter.increment(1))
}
