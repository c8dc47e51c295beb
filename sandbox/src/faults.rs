//! Fault injection and call recording, shared by every simulator. Tests read the counters
//! and the call log to prove batching and idempotency, and turn the knobs to drive failure
//! branches, over HTTP:
//!
//! - `GET /_sandbox/calls` → `{"GET /v1/products": 1, …}` (method and route template)
//! - `GET /_sandbox/calls/log` (optionally `?route=POST%20/v1/refunds`) → every request in
//!   arrival order, with the idempotency key it carried and what the fault layer did:
//!   `[{"seq": 1, "route": "POST /v1/refunds", "key": "ord_…:refund", "fault": "lost",
//!   "status": 503}]`. Faulted requests are included, so a test sees every retry's key.
//! - `GET /_sandbox/calls/in_flight` → `{"now": 0, "peak": 3}`: requests being handled
//!   now, and the most at once since the last reset (a client's concurrency bound shows here)
//! - `DELETE /_sandbox/calls` → counters, log and peak back to empty
//! - `PUT /_sandbox/faults` → `{"latency_ms": 0, "error_rate": 0.1,
//!   "fail_next": {"POST /v1/carts": 2},
//!   "refuse_next": {"POST /v1/refunds": {"status": 409, "code": "invalid_state", "times": 1}},
//!   "lose_next": {"POST /v1/orders": {"times": 1, "status": 503}},
//!   "slow_next": {"POST /v1/payment_intents": {"ms": 3000, "times": 1}}}`
//!
//! `PUT /_sandbox/faults` with `{"chaos": {"rate": 0.1, "hang_ms": 12000, "webhook_rate": 0.1}}`
//! turns on random faults for soaks: each call (outside `/_sandbox`) meets one with
//! probability `rate`, drawn evenly from [`ChaosFault`]'s kinds (503, 429 with
//! `Retry-After`, a hang past the client's timeout, a dropped connection, a slow answer,
//! an answer lost after the upstream acted, a hang after it acted); each webhook meets
//! one of [`WebhookFate`]'s faults with probability `webhook_rate` (lost, sent twice,
//! delayed so that later events overtake it). `{"chaos": null}` turns it off.
//!
//! `fail_next` answers 503 before the handler runs (transient: clients retry; nothing
//! happened). `refuse_next` answers a definite refusal (a 4xx with the given code) before
//! the handler runs. `lose_next` runs the handler (the upstream acts and records its
//! answer under the request's idempotency key) and then loses the answer: the client gets
//! `status` (503 by default) or, with `"status": "drop"`, a connection that breaks before
//! the body arrives. `slow_next` makes the call take `ms` longer: a simulator that keeps
//! an idempotency key "in flight" while it works (Stripe) holds the key that long, so a
//! retry meets its `409 idempotency_key_in_use`; the others answer that much later.

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{MatchedPath, Query, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// How many requests the call log keeps (the oldest are dropped first), so a long-running
/// sandbox holds bounded memory.
const LOG_CAPACITY: usize = 20_000;
/// The most body the call log reads to find a `request_id`.
const MAX_LOGGED_BODY: usize = 1 << 20;

/// Knobs, counters and the call log of one simulator.
#[derive(Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    /// Requests being handled now (outside `/_sandbox`), and the most at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// Error rate in parts per million, so it fits an atomic.
    error_ppm: AtomicU64,
    state: Mutex<FaultState>,
}

/// Random faults for soaks: see the module's documentation.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    /// Share of calls that meet a fault, 0.0 to 1.0.
    #[serde(default)]
    pub rate: f64,
    /// How long a hanging call hangs before it answers 503, in ms: longer than the
    /// client's timeout, so the client gives up first.
    #[serde(default = "default_hang_ms")]
    pub hang_ms: u64,
    /// Share of webhook events that are lost, duplicated or delayed, 0.0 to 1.0.
    #[serde(default)]
    pub webhook_rate: f64,
}

fn default_hang_ms() -> u64 {
    15_000
}

/// The kinds of fault [`Chaos`] draws from, evenly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter)]
pub enum ChaosFault {
    /// `503` before the handler: nothing happened.
    Unavailable,
    /// `429` with `Retry-After: 1` before the handler: nothing happened.
    RateLimited,
    /// No answer until the client has given up, then `503`; nothing happened.
    Hang,
    /// The connection breaks before the handler: nothing happened, and the client cannot
    /// tell.
    Dropped,
    /// The answer comes 100 to 1,500 ms late.
    Slow,
    /// The handler acts, then the answer is lost (a 5xx, a dropped connection or a
    /// garbled body).
    Lost,
    /// The handler acts, then no answer until the client has given up.
    HangAfter,
}

/// What happens to one webhook delivery under [`Chaos`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFate {
    /// Delivered as usual.
    Deliver,
    /// Never sent: the receiver must find out another way (reconciliation).
    Lose,
    /// Sent twice.
    Duplicate,
    /// Sent this much later, after the events that follow it.
    Delay(Duration),
}

#[derive(Default)]
struct FaultState {
    calls: BTreeMap<String, u64>,
    log: VecDeque<CallRecord>,
    seq: u64,
    fail_next: BTreeMap<String, u32>,
    refuse_next: BTreeMap<String, Refusal>,
    lose_next: BTreeMap<String, Loss>,
    slow_next: BTreeMap<String, Slow>,
    chaos: Option<Chaos>,
}

/// One request as the simulator received it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallRecord {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Method and route template, e.g. `POST /v1/payment_intents/{id}/capture`.
    pub route: String,
    /// The request's path as sent (ids filled in).
    pub path: String,
    /// The idempotency key it carried: the `Idempotency-Key` header, else `Message-ID`,
    /// else `X-Request-Id`, else a JSON body's `request_id`.
    pub key: Option<String>,
    /// What the fault layer did: `none`, `failed` (503 before the handler), `refused`,
    /// `lost` (handled, answer lost) or `slow`.
    pub fault: String,
    /// The status the client was sent (`0` for a dropped connection).
    pub status: u16,
}

/// A definite refusal to answer instead of the real one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// The 4xx to answer.
    pub status: u16,
    /// The upstream's refusal code in its error shape, e.g. `invalid_state`.
    pub code: String,
    /// How many of the route's next calls get it (1 unless said).
    #[serde(default = "one")]
    pub times: u32,
}

/// An answer lost after the handler acted.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loss {
    /// How many of the route's next answers are lost (1 unless said).
    #[serde(default = "one")]
    pub times: u32,
    /// The status the client gets instead of the real answer, or `"drop"`.
    #[serde(default)]
    pub status: LostAs,
}

/// How an answer is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostAs {
    /// This status (4xx or 5xx) instead of the answer.
    Status(u16),
    /// The connection breaks before the body: the client cannot tell what happened.
    Drop,
    /// A `200` whose JSON body is not the upstream's answer (`{"garbled": true}`): the
    /// upstream acted, and what came back cannot be read.
    Garbled,
}

impl Default for LostAs {
    fn default() -> Self {
        LostAs::Status(503)
    }
}

impl<'de> Deserialize<'de> for LostAs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Status(u16),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Status(status) if (400..=599).contains(&status) => Ok(LostAs::Status(status)),
            Raw::Word(word) if word == "drop" => Ok(LostAs::Drop),
            Raw::Word(word) if word == "garble" => Ok(LostAs::Garbled),
            _ => Err(serde::de::Error::custom(
                "status is a 4xx/5xx code, \"drop\" or \"garble\"",
            )),
        }
    }
}

/// Extra time a call takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slow {
    /// The extra time, in ms.
    pub ms: u64,
    /// How many of the route's next calls take it (1 unless said).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// What the fault layer decided for one request, handed to the handler as a request
/// extension so a simulator can act it out where it matters (Stripe keeps the key in
/// flight while it is slow, and saves a 5xx it "produced" under the key).
#[derive(Debug, Default)]
pub struct FaultPlan {
    slow: Mutex<Option<Duration>>,
    slowed: bool,
    lost: Option<LostAs>,
    /// Chaos: how long the lost answer hangs before it is sent.
    hang_after: Option<Duration>,
}

impl FaultPlan {
    /// The extra processing time, if the handler takes it on itself (then the fault layer
    /// does not add it again).
    pub fn take_slow(&self) -> Option<Duration> {
        self.slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// How the answer will be lost, if it will.
    pub fn lost(&self) -> Option<LostAs> {
        self.lost
    }
}

enum Admission {
    Pass(FaultPlan),
    Fail,
    Refuse(Refusal),
    /// Chaos: `429` with `Retry-After`.
    RateLimited,
    /// Chaos: no answer for this long, then `503`.
    Hang(Duration),
    /// Chaos: the connection breaks before the handler.
    Dropped,
}

/// The body of `PUT /_sandbox/faults`: each field given replaces its knob.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    /// Latency added to every call, in ms.
    pub latency_ms: Option<u64>,
    /// Share of calls answered 503, 0.0 to 1.0 (clamped).
    pub error_rate: Option<f64>,
    /// Route key (`"POST /v1/carts"`) → how many of its next calls fail with a 503.
    #[serde(default)]
    pub fail_next: BTreeMap<String, u32>,
    /// Route key → a refusal its next calls get, `times` times.
    #[serde(default)]
    pub refuse_next: BTreeMap<String, Refusal>,
    /// Route key → its next calls are handled, then their answers lost.
    #[serde(default)]
    pub lose_next: BTreeMap<String, Loss>,
    /// Route key → its next calls take longer.
    #[serde(default)]
    pub slow_next: BTreeMap<String, Slow>,
    /// Random faults (`null` turns them off; absent leaves them as they are).
    #[serde(default, deserialize_with = "some_or_null")]
    pub chaos: Option<Option<Chaos>>,
}

/// `null` → `Some(None)` (off), a value → `Some(Some(_))`; an absent field stays `None`.
fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Chaos>>, D::Error> {
    Option::<Chaos>::deserialize(d).map(Some)
}

impl Faults {
    /// Knobs starting at `latency_ms` and `error_rate` (0.0 to 1.0), with no call yet.
    pub fn new(latency_ms: u64, error_rate: f64) -> Arc<Self> {
        let faults = Arc::new(Self::default());
        faults.apply(FaultUpdate {
            latency_ms: Some(latency_ms),
            error_rate: Some(error_rate),
            ..FaultUpdate::default()
        });
        faults
    }

    /// Turns the knobs `update` names, as `PUT /_sandbox/faults` does.
    pub fn apply(&self, update: FaultUpdate) {
        if let Some(ms) = update.latency_ms {
            self.latency_ms.store(ms, Ordering::Relaxed);
        }
        if let Some(rate) = update.error_rate {
            let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u64;
            self.error_ppm.store(ppm, Ordering::Relaxed);
        }
        let mut state = self.lock();
        state.fail_next.extend(update.fail_next);
        state.refuse_next.extend(update.refuse_next);
        state.lose_next.extend(update.lose_next);
        state.slow_next.extend(update.slow_next);
        if let Some(chaos) = update.chaos {
            state.chaos = chaos.filter(|c| c.rate > 0.0 || c.webhook_rate > 0.0);
        }
    }

    /// What happens to the next webhook this simulator sends.
    pub fn webhook_fate(&self) -> WebhookFate {
        let Some(chaos) = self.lock().chaos else {
            return WebhookFate::Deliver;
        };
        if fastrand::f64() >= chaos.webhook_rate {
            return WebhookFate::Deliver;
        }
        match fastrand::u8(0..3) {
            0 => WebhookFate::Lose,
            1 => WebhookFate::Duplicate,
            _ => WebhookFate::Delay(Duration::from_millis(fastrand::u64(500..4_000))),
        }
    }

    /// Calls received per route since start or the last reset.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.lock().calls.clone()
    }

    /// Every request received (up to the log's capacity), oldest first; only `route`'s
    /// when given.
    pub fn log(&self, route: Option<&str>) -> Vec<CallRecord> {
        self.lock()
            .log
            .iter()
            .filter(|r| route.is_none_or(|route| r.route == route))
            .cloned()
            .collect()
    }

    /// Empties the counters and the call log, as `DELETE /_sandbox/calls` does; the peak
    /// of requests in flight starts again from those in flight now.
    pub fn reset_calls(&self) {
        let mut state = self.lock();
        state.calls.clear();
        state.log.clear();
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Requests being handled now, and the most at once since the last reset.
    pub fn in_flight(&self) -> InFlight {
        InFlight {
            now: self.in_flight.load(Ordering::SeqCst),
            peak: self.peak_in_flight.load(Ordering::SeqCst),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the call and decides whether it fails (tests read it as a yes or no).
    #[cfg(test)]
    fn admit(&self, route: &str) -> bool {
        matches!(self.decide(route), Admission::Pass(_))
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
        let mut plan = FaultPlan::default();
        if let Some(loss) = state.lose_next.get_mut(route)
            && loss.times > 0
        {
            loss.times -= 1;
            plan.lost = Some(loss.status);
        }
        if let Some(slow) = state.slow_next.get_mut(route)
            && slow.times > 0
        {
            slow.times -= 1;
            plan.slow = Mutex::new(Some(Duration::from_millis(slow.ms)));
            plan.slowed = true;
        }
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        if plan.lost.is_none() && ppm != 0 && fastrand::u64(0..1_000_000) < ppm {
            return Admission::Fail;
        }
        if let Some(chaos) = state.chaos
            && !plan.slowed
            && plan.lost.is_none()
            && !route.contains(" /_sandbox/")
            && fastrand::f64() < chaos.rate
        {
            let hang = Duration::from_millis(chaos.hang_ms);
            let kinds: Vec<ChaosFault> = <ChaosFault as strum::IntoEnumIterator>::iter().collect();
            match kinds[fastrand::usize(0..kinds.len())] {
                ChaosFault::Unavailable => return Admission::Fail,
                ChaosFault::RateLimited => return Admission::RateLimited,
                ChaosFault::Hang => return Admission::Hang(hang),
                ChaosFault::Dropped => return Admission::Dropped,
                ChaosFault::Slow => {
                    plan.slow = Mutex::new(Some(Duration::from_millis(fastrand::u64(100..1_500))));
                    plan.slowed = true;
                }
                ChaosFault::Lost => {
                    plan.lost = Some(match fastrand::u8(0..3) {
                        0 => LostAs::Status(if fastrand::bool() { 500 } else { 502 }),
                        1 => LostAs::Drop,
                        _ => LostAs::Garbled,
                    });
                }
                ChaosFault::HangAfter => {
                    plan.hang_after = Some(hang);
                    plan.lost = Some(LostAs::Status(504));
                }
            }
        }
        Admission::Pass(plan)
    }

    fn record(&self, route: String, path: String, key: Option<String>, fault: &str, status: u16) {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        if state.log.len() >= LOG_CAPACITY {
            state.log.pop_front();
        }
        state.log.push_back(CallRecord {
            seq,
            route,
            path,
            key,
            fault: fault.to_owned(),
            status,
        });
    }
}

/// The idempotency key a request carries, in whichever place its system puts it.
fn idempotency_key(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    for name in ["idempotency-key", "message-id", "x-request-id"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(value.to_owned());
        }
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json["request_id"].as_str().map(str::to_owned)
}

fn fault_body(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    // Shaped so every client's error parser reads the code (Stripe's `type` included).
    (
        status,
        Json(serde_json::json!({
            "error": {"type": kind, "code": code, "message": message}
        })),
    )
        .into_response()
}

/// An answer whose body never arrives: the connection breaks mid-response.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox fault: connection dropped"))
    });
    Response::new(Body::from_stream(stream))
}

async fn inject(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let _handling = Handling::start(&faults);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| format!("{} {}", request.method(), p.as_str()))
        .unwrap_or_else(|| format!("{} {}", request.method(), request.uri().path()));
    let path = request.uri().path().to_owned();
    // Read the body once to log its key, then hand the same bytes on.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_LOGGED_BODY)
        .await
        .unwrap_or_default();
    let key = idempotency_key(&parts.headers, &bytes);
    let mut request = Request::from_parts(parts, Body::from(bytes));
    let latency = faults.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match faults.decide(&route) {
        Admission::Fail => {
            faults.record(route, path, key, "failed", 503);
            fault_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "sandbox_fault",
                "injected fault",
            )
        }
        Admission::RateLimited => {
            faults.record(route, path, key, "rate_limited", 429);
            let mut response = fault_body(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit",
                "injected rate limit",
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            response
        }
        Admission::Hang(hang) => {
            faults.record(route, path, key, "hung", 503);
            tokio::time::sleep(hang).await;
            fault_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "sandbox_fault",
                "injected hang",
            )
        }
        Admission::Dropped => {
            faults.record(route, path, key, "dropped", 0);
            dropped()
        }
        Admission::Refuse(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::CONFLICT);
            faults.record(route, path, key, "refused", status.as_u16());
            fault_body(
                status,
                "invalid_request_error",
                &refusal.code,
                "injected refusal",
            )
        }
        Admission::Pass(plan) => {
            let plan = Arc::new(plan);
            request.extensions_mut().insert(plan.clone());
            let response = next.run(request).await;
            if let Some(slow) = plan.take_slow() {
                tokio::time::sleep(slow).await;
            }
            if let Some(hang) = plan.hang_after {
                tokio::time::sleep(hang).await;
            }
            let fault = match (plan.lost(), plan.slowed) {
                (Some(_), _) => "lost",
                (None, true) => "slow",
                (None, false) => "none",
            };
            match plan.lost() {
                None => {
                    faults.record(route, path, key, fault, response.status().as_u16());
                    response
                }
                Some(LostAs::Status(status)) => {
                    faults.record(route, path, key, fault, status);
                    fault_body(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        "api_error",
                        "sandbox_lost_answer",
                        "the answer was lost after the request was handled",
                    )
                }
                Some(LostAs::Drop) => {
                    faults.record(route, path, key, fault, 0);
                    dropped()
                }
                Some(LostAs::Garbled) => {
                    faults.record(route, path, key, fault, 200);
                    Json(serde_json::json!({"garbled": true})).into_response()
                }
            }
        }
    }
}

/// `GET /_sandbox/calls/in_flight`'s answer.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InFlight {
    /// Requests being handled now.
    pub now: u64,
    /// The most handled at once since the last `DELETE /_sandbox/calls`.
    pub peak: u64,
}

/// Counts a request in flight for as long as it lives.
struct Handling<'a>(&'a Faults);

impl<'a> Handling<'a> {
    fn start(faults: &'a Faults) -> Self {
        let now = faults.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        faults.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(faults)
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize)]
struct LogQuery {
    route: Option<String>,
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
            "/_sandbox/calls/in_flight",
            get(|State(f): State<Arc<Faults>>| async move { Json(f.in_flight()) }),
        )
        .route(
            "/_sandbox/calls/log",
            get(
                |State(f): State<Arc<Faults>>, Query(q): Query<LogQuery>| async move {
                    Json(f.log(q.route.as_deref()))
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
    fn lose_next_lets_the_call_through_then_loses_it() {
        let faults = Faults::new(0, 1.0);
        faults.apply(FaultUpdate {
            lose_next: [(
                "POST /x".to_owned(),
                Loss {
                    times: 1,
                    status: LostAs::Drop,
                },
            )]
            .into(),
            ..FaultUpdate::default()
        });
        // A lost answer is handled first, even at a full error rate.
        match faults.decide("POST /x") {
            Admission::Pass(plan) => assert_eq!(plan.lost(), Some(LostAs::Drop)),
            _ => panic!("a lost call must reach its handler"),
        }
        assert!(!faults.admit("POST /x"));
    }

    #[test]
    fn lost_answers_read_a_status_or_drop() {
        let update: FaultUpdate = serde_json::from_str(
            r#"{"lose_next": {"POST /a": {"status": "drop"}, "POST /b": {"times": 2, "status": 500}, "POST /c": {}}}"#,
        )
        .expect("parses");
        assert_eq!(update.lose_next["POST /a"].status, LostAs::Drop);
        assert_eq!(update.lose_next["POST /b"].status, LostAs::Status(500));
        assert_eq!(update.lose_next["POST /c"].status, LostAs::Status(503));
        for refused in [r#"200"#, r#""later""#, r#"600"#] {
            let err = serde_json::from_str::<FaultUpdate>(&format!(
                r#"{{"lose_next": {{"POST /a": {{"status": {refused}}}}}}}"#
            ))
            .expect_err(refused);
            assert!(
                err.to_string()
                    .contains("status is a 4xx/5xx code, \"drop\" or \"garble\""),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn keys_are_read_from_headers_or_the_body() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            idempotency_key(&headers, br#"{"request_id": "r1"}"#),
            Some("r1".into())
        );
        headers.insert("idempotency-key", "k1".parse().expect("value"));
        assert_eq!(idempotency_key(&headers, b""), Some("k1".into()));
    }

    #[test]
    fn chaos_draws_every_kind_of_fault_and_spares_the_sandbox_routes() {
        let faults = Faults::new(0, 0.0);
        let update: FaultUpdate =
            serde_json::from_str(r#"{"chaos": {"rate": 1.0, "hang_ms": 5, "webhook_rate": 1.0}}"#)
                .expect("parses");
        faults.apply(update);
        let (mut failed, mut limited, mut hung, mut dropped, mut slow, mut lost, mut hang_after) =
            (0, 0, 0, 0, 0, 0, 0);
        for _ in 0..2_000 {
            match faults.decide("POST /v1/orders") {
                Admission::Fail => failed += 1,
                Admission::RateLimited => limited += 1,
                Admission::Hang(d) => {
                    assert_eq!(d, Duration::from_millis(5));
                    hung += 1
                }
                Admission::Dropped => dropped += 1,
                Admission::Refuse(_) => panic!("chaos never refuses: a refusal is definite"),
                Admission::Pass(plan) => match (plan.lost(), plan.hang_after, plan.slowed) {
                    (Some(_), Some(_), _) => hang_after += 1,
                    (Some(_), None, _) => lost += 1,
                    (None, _, true) => slow += 1,
                    (None, _, false) => panic!("a call at rate 1.0 met no fault"),
                },
            }
        }
        for (kind, n) in [
            ("503", failed),
            ("429", limited),
            ("hang", hung),
            ("drop", dropped),
            ("slow", slow),
            ("lost", lost),
            ("hang after", hang_after),
        ] {
            assert!(n > 150, "{kind} drawn {n} times of 2,000");
        }
        assert!(
            matches!(faults.decide("GET /_sandbox/outbox"), Admission::Pass(p) if p.lost().is_none() && !p.slowed)
        );
        let fates: Vec<WebhookFate> = (0..300).map(|_| faults.webhook_fate()).collect();
        assert!(fates.contains(&WebhookFate::Lose));
        assert!(fates.contains(&WebhookFate::Duplicate));
        assert!(fates.iter().any(|f| matches!(f, WebhookFate::Delay(_))));
        assert!(!fates.contains(&WebhookFate::Deliver));
        faults.apply(serde_json::from_str(r#"{"chaos": null}"#).expect("parses"));
        assert!((0..100).all(|_| faults.admit("POST /v1/orders")));
        assert_eq!(faults.webhook_fate(), WebhookFate::Deliver);
    }

    #[test]
    fn full_error_rate_fails_everything() {
        let faults = Faults::new(0, 1.0);
        assert!((0..100).all(|_| !faults.admit("GET /x")));
    }
}
