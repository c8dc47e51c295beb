//! Liveness and readiness probes for load balancers and orchestrators.

use crate::{context::AppState, store};
use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

/// The process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The process can do its work: the database answers. Also reports the job queue, so an
/// operator sees work piling up (pending) or needing a look (dead), and the orders whose
/// flow stopped for an operator (`orders.needing_attention`), and what reconciliation
/// found and handled since start, by kind (`reconciliation`).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if store::ping(&state.db).await {
        let pending = store::jobs::count(&state.db, store::jobs::PENDING)
            .await
            .ok();
        let dead = store::jobs::count(&state.db, store::jobs::DEAD).await.ok();
        let attention = store::orders::needing_attention(&state.db).await.ok();
        (
            StatusCode::OK,
            Json(json!({
                "status": "ready",
                "database": "ok",
                "jobs": {"pending": pending, "dead": dead},
                "orders": {"needing_attention": attention},
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
