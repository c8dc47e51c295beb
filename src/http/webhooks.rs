//! Webhooks from Okya (order updates, menu changes) and Stripe (payment outcomes). Each delivery is
//! verified over its raw body, stored with its event id in the same transaction as the
//! job that processes it, and answered at once; repeats are recognised by id, and the
//! processing itself tolerates reordering (Okya's `version`, Stripe re-reads).

use crate::{
    auth::now_ms,
    context::AppState,
    flows::place_order::{OKYA_EVENT, STRIPE_EVENT},
    store,
    upstream::{
        okya::catalog::MENU_UPDATED,
        signature::{self, SignatureError},
    },
};
use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use sea_orm::TransactionTrait;
use secrecy::SecretString;
use serde_json::{Value, json};

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The refusal to send, when the signature does not hold.
fn verify(
    headers: &HeaderMap,
    header: &str,
    body: &[u8],
    secrets: &[SecretString],
    tolerance: std::time::Duration,
) -> Option<Response> {
    let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) else {
        return Some(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "signature header missing",
        ));
    };
    signature::verify(
        value,
        body,
        secrets,
        chrono::Utc::now().timestamp(),
        // Signed timestamps are whole seconds (Stripe's scheme, and Okya's after it).
        tolerance.as_secs(),
    )
    .map_err(|e| {
        tracing::warn!(header, error = %e, "webhook refused");
        let message = match e {
            SignatureError::Stale => "signature timestamp outside the tolerance",
            SignatureError::Malformed => "signature header malformed",
            SignatureError::Mismatch => "no signature matches",
        };
        refuse(StatusCode::UNAUTHORIZED, "invalid_signature", message)
    })
    .err()
}

/// The parts of a webhook body every source shares: `{"id": "…", "type": "…", …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The sender's event id: non-empty, at most 200 bytes.
    pub id: String,
    /// The event type: at most 64 bytes.
    pub event_type: String,
    /// The whole body, as the job that processes it reads it.
    pub event: Value,
}

/// Why a body is refused before anything is stored (answered 400 `invalid_body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the event has no id or type")]
    Missing,
    #[error("the event id or type is malformed")]
    Malformed,
}

/// Reads the envelope of a verified body (raw bytes, any content): never panics, and
/// refuses what the store or the job could not hold.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let event = serde_json::from_slice::<Value>(body).map_err(|_| EnvelopeError::NotJson)?;
    let (Some(id), Some(event_type)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(EnvelopeError::Missing);
    };
    if id.is_empty() || id.len() > 200 || event_type.len() > 64 {
        return Err(EnvelopeError::Malformed);
    }
    Ok(Envelope {
        id: id.to_owned(),
        event_type: event_type.to_owned(),
        event,
    })
}

/// Stores the event and its processing job once; a repeat is acknowledged and ignored.
async fn accept(state: &AppState, source: &str, job_kind: &str, body: &[u8]) -> Response {
    let Envelope {
        id,
        event_type,
        event,
    } = match parse_envelope(body) {
        Ok(envelope) => envelope,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string()),
    };
    let (id, event_type) = (id.as_str(), event_type.as_str());
    let stored_id = format!("{source}:{id}");
    let now = now_ms();
    let outcome = async {
        let txn = state.db.begin().await?;
        let new = store::webhooks::insert(
            &txn,
            &stored_id,
            source,
            event_type,
            &event.to_string(),
            now,
        )
        .await?;
        if new {
            store::jobs::enqueue(&txn, job_kind, &format!("{job_kind}:{id}"), &event, now).await?;
        }
        txn.commit().await?;
        Ok::<bool, store::StoreError>(new)
    }
    .await;
    match outcome {
        Ok(new) => {
            if new {
                state.job_signal.wake();
            }
            tracing::info!(
                source,
                event_id = id,
                event_type,
                duplicate = !new,
                "webhook accepted"
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            // Not acknowledged, so the sender delivers it again.
            tracing::error!(source, error = %e, "storing a webhook failed");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again")
        }
    }
}

pub async fn okya(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let hooks = &state.settings.webhooks;
    if let Some(refused) = verify(
        &headers,
        "x-okya-signature",
        &body,
        &hooks.okya_secrets,
        hooks.tolerance(),
    ) {
        return refused;
    }
    // A menu change needs no job: dropping the catalogue copy is idempotent and the order
    // of deliveries does not matter, so it is done at once and nothing is stored.
    if let Ok(envelope) = parse_envelope(&body)
        && envelope.event_type == MENU_UPDATED
    {
        state.upstreams.catalog.invalidate();
        tracing::info!(source = "okya", event_id = %envelope.id, event_type = MENU_UPDATED, "webhook applied");
        return StatusCode::NO_CONTENT.into_response();
    }
    accept(&state, "okya", OKYA_EVENT, &body).await
}

pub async fn stripe(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let hooks = &state.settings.webhooks;
    if let Some(refused) = verify(
        &headers,
        "stripe-signature",
        &body,
        &hooks.stripe_secrets,
        hooks.tolerance(),
    ) {
        return refused;
    }
    accept(&state, "stripe", STRIPE_EVENT, &body).await
}
