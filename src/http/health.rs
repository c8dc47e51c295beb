//! Liveness and readiness probes for load balancers and orchestrators.

use crate::{context::AppState, store};
use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

/// The process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The process can do its work: the database answers. Also reports the job queue, so an
/// operator sees work piling up (pending) or needing a look (dead), the orders whose
/// flow stopped for an operator (`orders.needing_attention`), and each upstream's circuit
/// breaker (`breakers.stripe.state`: `closed`, `open` or `half_open`, with the window's
/// `calls` and `failures`, and `retry_after_secs` while open), and what reconciliation found and handled since start, by
/// kind (`reconciliation`).
///
/// An open breaker does not make the instance unready: the upstream is down for every
/// instance alike, and taking them all out of the load balancer would only turn the
/// answers the service can still give (the menu, orders, `UPSTREAM_UNAVAILABLE` with a
/// hint) into connection errors.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if store::ping(&state.db).await {
        let pending = store::jobs::count(&state.db, store::jobs::PENDING)
            .await
            .ok();
        let dead = store::jobs::count(&state.db, store::jobs::DEAD).await.ok();
        let attention = store::orders::needing_attention(&state.db).await.ok();
        let breakers = state.upstreams.guards.statuses().await;
        (
            StatusCode::OK,
            Json(json!({
                "status": "ready",
                "database": "ok",
                "jobs": {"pending": pending, "dead": dead},
                "orders": {"needing_attention": attention},
                "breakers": breakers,
                "reconciliation": state.reconciliation.to_json(),
            })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": "unreachable"})),
        )
    }
}
