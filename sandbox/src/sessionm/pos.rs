//! The POS / eCommerce host (`/api/2.0/…`): Basic `pos_api_key:pos_api_secret`, the
//! request and response containers of General DTO Definitions, and `request_id`
//! idempotency ("A given request will only be processed once").

use super::state::RequestRecord;
use super::wire::{Reply, codes, pos_error};
use super::{Shared, offers, transactions};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State as Extract,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::Utc;
use serde_json::Value;
use std::{sync::Arc, time::Duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Lookup,
    Lock,
    Unlock,
    Redeem,
    Reinstate,
    SendTransaction,
}

/// The POS API's routes.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/2.0/lookup", post(lookup))
        .route("/api/2.0/lock", post(lock))
        .route("/api/2.0/unlock", post(unlock))
        .route("/api/2.0/redeem", post(redeem))
        .route("/api/2.0/reinstate", post(reinstate))
        .route("/api/2.0/send_transaction", post(send_transaction))
}

// One small handler per route (rather than a closure factory) keeps axum's matched path,
// and so the fault layer's route keys, exactly the documented paths.
async fn lookup(s: Extract<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    pos(s.0, h, b, Op::Lookup).await
}
async fn lock(s: Extract<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    pos(s.0, h, b, Op::Lock).await
}
async fn unlock(s: Extract<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    pos(s.0, h, b, Op::Unlock).await
}
async fn redeem(s: Extract<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    pos(s.0, h, b, Op::Redeem).await
}
async fn reinstate(s: Extract<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    pos(s.0, h, b, Op::Reinstate).await
}
async fn send_transaction(s: Extract<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    pos(s.0, h, b, Op::SendTransaction).await
}

fn respond((status, body): Reply) -> Response {
    (status, Json(body)).into_response()
}

/// Clears a pending `request_id` if its request is dropped before it finishes (the caller
/// hung up), so the id does not stay pending for ever.
struct PendingGuard {
    sim: Arc<Shared>,
    request_id: String,
    armed: bool,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.sim.lock();
            if matches!(
                state.requests.get(&self.request_id),
                Some(RequestRecord::Pending)
            ) {
                state.requests.remove(&self.request_id);
            }
        }
    }
}

/// A required, non-empty string field of the request container.
fn field<'a>(envelope: &'a Value, name: &str) -> Result<&'a str, Reply> {
    match envelope.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(pos_error(
            codes::VALIDATION,
            format!("{name} must be a non-empty string"),
        )),
        None => Err(pos_error(codes::VALIDATION, format!("{name} is required"))),
    }
}

async fn pos(sim: Arc<Shared>, headers: HeaderMap, body: Bytes, op: Op) -> Response {
    if !sim.pos_authorised(&headers) {
        return respond((
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"status": "error", "errors": {"code": codes::ACCESS_DENIED,
                "message": "invalid credentials"}}),
        ));
    }
    let envelope: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return respond(pos_error(codes::VALIDATION, format!("body: {e}"))),
    };
    let request_id = match field(&envelope, "request_id") {
        Ok(id) => id.to_owned(),
        Err(refusal) => return respond(refusal),
    };
    // Who is asking is settled before the request_id is honoured: ids belong to a client,
    // and a refusal of credentials is not an answer to the request.
    match field(&envelope, "client_id") {
        Ok(client_id) if client_id == sim.config.client_id => {}
        Ok(_) => {
            return respond(pos_error(
                codes::ACCESS_DENIED,
                "client_id does not match the credentials",
            ));
        }
        Err(refusal) => return respond(refusal),
    }
    let delay = {
        let mut state = sim.lock();
        *state.request_counts.entry(request_id.clone()).or_default() += 1;
        // The first answer for any repeat, whatever its body: "A given request will only
        // be processed once".
        match state.requests.get(&request_id) {
            Some(RequestRecord::Done(reply)) => return respond(reply.clone()),
            Some(RequestRecord::Pending) => {
                return respond(pos_error(
                    codes::PENDING,
                    "a request with this request_id is pending processing",
                ));
            }
            None => {
                state
                    .requests
                    .insert(request_id.clone(), RequestRecord::Pending);
            }
        }
        state.processing_delay_ms
    };
    let mut guard = PendingGuard {
        sim: sim.clone(),
        request_id: request_id.clone(),
        armed: true,
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (reply, queued) = {
        let mut state = sim.lock();
        let now = Utc::now();
        let outcome = container(&sim, &envelope).map(|payload| match op {
            Op::Lookup => (offers::lookup(&state, payload, now), None),
            Op::Lock => (offers::apply(&mut state, payload, now, false), None),
            Op::Redeem => (offers::apply(&mut state, payload, now, true), None),
            Op::Unlock => (offers::unlock(&mut state, payload), None),
            Op::Reinstate => (offers::reinstate(&mut state, payload), None),
            Op::SendTransaction => match transactions::queue(payload) {
                Ok(reply) => (reply, Some(payload.clone())),
                Err(refusal) => (refusal, None),
            },
        });
        let (reply, queued) = outcome.unwrap_or_else(|refusal| (refusal, None));
        state
            .requests
            .insert(request_id, RequestRecord::Done(reply.clone()));
        (
            reply,
            queued.map(|payload| (payload, state.transaction_delay_ms)),
        )
    };
    guard.armed = false;
    if let Some((payload, delay_ms)) = queued {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            transactions::process(&mut sim.lock(), &payload, Utc::now());
        });
    }
    respond(reply)
}

/// The rest of the request container: a known store, an optional `culture`, and an
/// object `request_payload`.
fn container<'a>(sim: &Shared, envelope: &'a Value) -> Result<&'a Value, Reply> {
    let store_id = field(envelope, "store_id")?;
    if !sim.store_ids.contains(store_id) {
        return Err(pos_error(
            codes::STORE_NOT_FOUND,
            format!("no store {store_id}"),
        ));
    }
    if envelope.get("culture").is_some_and(|c| !c.is_string()) {
        return Err(pos_error(codes::VALIDATION, "culture must be a string"));
    }
    match envelope.get("request_payload") {
        Some(payload) if payload.is_object() => Ok(payload),
        Some(_) => Err(pos_error(
            codes::VALIDATION,
            "request_payload must be an object",
        )),
        None => Err(pos_error(codes::VALIDATION, "request_payload is required")),
    }
}
