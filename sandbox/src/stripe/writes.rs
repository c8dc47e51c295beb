//! Writes: authentication, idempotency, then the operation.

use super::{
    API_VERSION, PROCESSING,
    errors::{ApiError, api_key, idempotency_key, new_id, reply},
    model::{Fingerprint, Sim, Stored},
    params::Params,
    webhooks::publish,
};
use crate::{
    faults::{FaultPlan, LostAs},
    unix_now,
};
use axum::{
    body::Bytes,
    extract::{Extension, Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};

enum Op {
    CreateIntent,
    Capture(String),
    Cancel(String),
    CreateRefund,
}

/// What an operation sees: its parameters, and where it leaves the events it caused.
pub(super) struct Ctx {
    pub(super) params: Params,
    pub(super) idempotency_key: Option<String>,
    pub(super) request_id: String,
    pub(super) now: i64,
    pub(super) events: Vec<Value>,
}

impl Ctx {
    pub(super) fn emit(&mut self, kind: &str, object: Value) {
        self.events.push(json!({
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": kind,
            "data": {"object": object},
        }));
    }
}

/// The fault layer's plan for this request, if it has one.
type Plan = Option<Extension<Arc<FaultPlan>>>;

pub(super) async fn create_intent(
    State(sim): State<Arc<Sim>>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v1/payment_intents".to_owned();
    write(sim, plan, &headers, path, &body, Op::CreateIntent).await
}

pub(super) async fn capture_intent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/capture");
    write(sim, plan, &headers, path, &body, Op::Capture(id)).await
}

pub(super) async fn cancel_intent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/cancel");
    write(sim, plan, &headers, path, &body, Op::Cancel(id)).await
}

pub(super) async fn create_refund(
    State(sim): State<Arc<Sim>>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v1/refunds".to_owned();
    write(sim, plan, &headers, path, &body, Op::CreateRefund).await
}

/// How the request's work goes, besides its parameters: extra processing time (the key
/// stays in flight meanwhile) and whether Stripe "fails" with a 5xx after acting, which
/// it then saves under the key like any other result of a started request.
#[derive(Default)]
struct RequestFaults {
    slow: Option<Duration>,
    server_error: Option<StatusCode>,
}

impl RequestFaults {
    fn of(plan: &Plan) -> Self {
        let Some(Extension(plan)) = plan else {
            return Self::default();
        };
        Self {
            slow: plan.take_slow(),
            server_error: match plan.lost() {
                Some(LostAs::Status(status)) if status >= 500 => StatusCode::from_u16(status).ok(),
                _ => None,
            },
        }
    }
}

async fn write(
    sim: Arc<Sim>,
    plan: Plan,
    headers: &HeaderMap,
    path: String,
    body: &[u8],
    op: Op,
) -> Response {
    let request_id = new_id("req");
    let prepared = api_key(&sim.config, headers)
        .and_then(|api_key| Ok((api_key, Params::parse(body)?, idempotency_key(headers)?)));
    let (api_key, params, key) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return e.into_response(&request_id),
    };
    let fingerprint = params.fingerprint(format!("POST {path}"));
    let mut echo = Vec::new();
    if let Some(key) = &key {
        echo.push(("idempotency-key", key.clone()));
        let slot = (api_key.clone(), key.clone());
        let mut ledger = sim.lock();
        *ledger.requests_per_key.entry(key.clone()).or_default() += 1;
        match ledger.idempotency.get(&slot) {
            Some(Stored::InFlight) => {
                // https://docs.stripe.com/error-codes#idempotency-key-in-use: the first
                // request is still running; nothing is saved for this one.
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_error",
                    "There is currently another in-progress request using this Idempotent \
                     Key (that probably means you submitted twice, and the other request is \
                     still going through). Please try again later.",
                )
                .code("idempotency_key_in_use")
                .into_response(&request_id);
            }
            Some(Stored::Done {
                fingerprint: first, ..
            }) if *first != fingerprint => {
                let mut mismatch = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    format!(
                        "Keys for idempotent requests can only be used with the same \
                         parameters they were first used with. Try using a key other than \
                         '{key}' if you meant to execute a different request."
                    ),
                );
                mismatch.should_retry = Some(false);
                return mismatch.into_response(&request_id);
            }
            Some(Stored::Done { status, body, .. }) => {
                // Every saved result is replayed, a 500 included, for the key's lifetime.
                echo.push(("idempotent-replayed", "true".to_owned()));
                return reply(*status, body, &request_id, &echo);
            }
            None => {
                ledger.idempotency.insert(slot.clone(), Stored::InFlight);
            }
        }
    } else {
        sim.lock().posts_without_key += 1;
    }

    let ctx = Ctx {
        params,
        idempotency_key: key.clone(),
        request_id: request_id.clone(),
        now: unix_now(),
        events: Vec::new(),
    };
    // In its own task so that a client hanging up mid-charge cannot leave the key stuck
    // in flight: the charge finishes and is saved, as at Stripe.
    let behaviour = RequestFaults::of(&plan);
    let task = tokio::spawn(run(
        sim.clone(),
        op,
        ctx,
        api_key.clone(),
        fingerprint,
        behaviour,
    ));
    match task.await {
        Ok((status, body)) => reply(status, &body, &request_id, &echo),
        Err(_) => {
            if let Some(key) = key {
                sim.lock().idempotency.remove(&(api_key, key));
            }
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "An unknown error occurred in the simulator.",
            )
            .into_response(&request_id)
        }
    }
}

async fn run(
    sim: Arc<Sim>,
    op: Op,
    mut ctx: Ctx,
    api_key: String,
    fingerprint: Fingerprint,
    faults: RequestFaults,
) -> (StatusCode, Value) {
    tokio::time::sleep(PROCESSING + faults.slow.unwrap_or_default()).await;
    let (status, body) = {
        let mut ledger = sim.lock();
        let outcome = match &op {
            Op::CreateIntent => ledger.create_intent(&mut ctx),
            Op::Capture(id) => ledger.capture(id, &mut ctx),
            Op::Cancel(id) => ledger.cancel(id, &mut ctx),
            Op::CreateRefund => ledger.refund(&mut ctx),
        };
        let (status, body, saved) = match (outcome, faults.server_error) {
            // The operation happened, then Stripe failed to answer: the 500 is what the
            // key saves and replays.
            (_, Some(status)) => (
                status,
                ApiError::new(
                    status,
                    "api_error",
                    "An unknown error occurred while processing your request.",
                )
                .body(),
                true,
            ),
            (Ok(body), None) => (StatusCode::OK, body, true),
            (Err(e), None) => (e.status, e.body(), e.saved),
        };
        if let Some(key) = ctx.idempotency_key.clone() {
            let slot = (api_key, key);
            if saved {
                ledger.idempotency.insert(
                    slot,
                    Stored::Done {
                        fingerprint,
                        status,
                        body: body.clone(),
                    },
                );
            } else {
                ledger.idempotency.remove(&slot);
            }
        }
        (status, body)
    };
    publish(&sim, std::mem::take(&mut ctx.events));
    (status, body)
}
