//! Fault injection and call counting, shared by every simulator. Tests read the counters
//! to prove batching and turn the knobs to drive failure branches, over HTTP:
//!
//! - `GET /_sandbox/calls` → `{"GET /v1/products": 1, …}` (method and route template)
//! - `DELETE /_sandbox/calls` → counters back to zero
//! - `PUT /_sandbox/faults` → `{"latency_ms": 0, "error_rate": 0.1, "fail_next": {"POST /v1/carts": 2},
//!   "refuse_next": {"POST /v1/refunds": {"status": 409, "code": "invalid_state", "times": 1}}}`
//!
//! `fail_next` answers 503 (transient: clients retry); `refuse_next` answers a definite
//! refusal (a 4xx with the given code), to drive the branches where an upstream says no.

use axum::{
    Json, Router,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Knobs and counters of one simulator.
#[derive(Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    /// Error rate in parts per million, so it fits an atomic.
    error_ppm: AtomicU64,
    state: Mutex<FaultState>,
}

#[derive(Default)]
struct FaultState {
    calls: BTreeMap<String, u64>,
    fail_next: BTreeMap<String, u32>,
    refuse_next: BTreeMap<String, Refusal>,
}

/// A definite refusal to answer instead of the real one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

enum Admission {
    Pass,
    Fail,
    Refuse(Refusal),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    /// Route key (`"POST /v1/carts"`) → how many of its next calls fail with a 503.
    #[serde(default)]
    pub fail_next: BTreeMap<String, u32>,
    /// Route key → a refusal its next calls get, `times` times.
    #[serde(default)]
    pub refuse_next: BTreeMap<String, Refusal>,
}

impl Faults {
    pub fn new(latency_ms: u64, error_rate: f64) -> Arc<Self> {
        let faults = Arc::new(Self::default());
        faults.apply(FaultUpdate {
            latency_ms: Some(latency_ms),
            error_rate: Some(error_rate),
            ..FaultUpdate::default()
        });
        faults
    }

    pub fn apply(&self, update: FaultUpdate) {
        if let Some(ms) = update.latency_ms {
            self.latency_ms.store(ms, Ordering::Relaxed);
        }
        if let Some(rate) = update.error_rate {
            let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u64;
            self.error_ppm.store(ppm, Ordering::Relaxed);
        }
        let mut state = self.lock();
        for (route, n) in update.fail_next {
            state.fail_next.insert(route, n);
        }
        for (route, refusal) in update.refuse_next {
            state.refuse_next.insert(route, refusal);
        }
    }

    /// Calls received per route since start or the last reset.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.lock().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the call and decides whether it fails (tests read it as a yes or no).
    #[cfg(test)]
    fn admit(&self, route: &str) -> bool {
        matches!(self.decide(route), Admission::Pass)
    }

    fn decide(&self, route: &str) -> Admission {
        let mut state = self.lock();
        *state.calls.entry(route.to_owned()).or_default() += 1;
        if let Some(refusal) = state.refuse_next.get_mut(route)
            && refusal.times > 0
        {
            refusal.times -= 1;
            return Admission::Refuse(refusal.clone());
        }
        if let Some(n) = state.fail_next.get_mut(route)
            && *n > 0
        {
            *n -= 1;
            return Admission::Fail;
        }
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        if ppm == 0 || fastrand::u64(0..1_000_000) >= ppm {
            Admission::Pass
        } else {
            Admission::Fail
        }
    }
}

async fn inject(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| format!("{} {}", request.method(), p.as_str()))
        .unwrap_or_else(|| format!("{} {}", request.method(), request.uri().path()));
    let latency = faults.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match faults.decide(&route) {
        Admission::Pass => next.run(request).await,
        Admission::Fail => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "error": {"type": "api_error", "code": "sandbox_fault", "message": "injected fault"}
            })),
        )
            .into_response(),
        // Shaped so every client's error parser reads the code (Stripe's `type` included).
        Admission::Refuse(refusal) => (
            StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::CONFLICT),
            Json(serde_json::json!({
                "error": {"type": "invalid_request_error", "code": refusal.code, "message": "injected refusal"}
            })),
        )
            .into_response(),
    }
}

/// Wraps a simulator's routes with fault injection and adds the `/_sandbox` knobs.
pub fn instrument(routes: Router, faults: Arc<Faults>) -> Router {
    let admin = Router::new()
        .route(
            "/_sandbox/calls",
            get(|State(f): State<Arc<Faults>>| async move { Json(f.calls()) }).delete(
                |State(f): State<Arc<Faults>>| async move {
                    f.reset_calls();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/_sandbox/faults",
            axum::routing::put(
                |State(f): State<Arc<Faults>>, Json(update): Json<FaultUpdate>| async move {
                    f.apply(update);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(faults.clone());
    routes
        .route_layer(middleware::from_fn_with_state(faults, inject))
        .merge(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_fails_exactly_that_many_calls() {
        let faults = Faults::new(0, 0.0);
        faults.apply(FaultUpdate {
            fail_next: [("GET /x".to_owned(), 2)].into(),
            ..FaultUpdate::default()
        });
        assert!(!faults.admit("GET /x"));
        assert!(!faults.admit("GET /x"));
        assert!(faults.admit("GET /x"));
        assert!(faults.admit("GET /y"));
        assert_eq!(faults.calls()["GET /x"], 3);
    }

    #[test]
    fn full_error_rate_fails_everything() {
        let faults = Faults::new(0, 1.0);
        assert!((0..100).all(|_| !faults.admit("GET /x")));
    }
}
