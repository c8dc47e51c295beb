//! Okya Auth: accounts and one-time codes, with the abuse rules a real identity provider
//! has (expiry, five tries, send throttling) and an outbox tests can read codes from.

use super::wire::{Account, NewAccount, OtpPurpose, SaveLoyalty, SendOtp, VerifyOtp};
use super::{OkyaError, OkyaState, idempotent};
use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const OTP_TTL_SECS: i64 = 600;
const MAX_ATTEMPTS: u32 = 5;
/// Okya's own limits are looser than ours (`auth.otp_*` settings): the service enforces
/// the stricter ones itself, and the sandbox must not get in the way of tests of them.
const RESEND_INTERVAL_SECS: i64 = 0;
const SENDS_PER_HOUR: usize = 10;

#[derive(Default)]
pub(crate) struct AuthState {
    accounts: Vec<Account>,
    otps: std::collections::HashMap<String, Otp>,
    outbox: Vec<OutboxEntry>,
}

struct Otp {
    code: String,
    expires_at: DateTime<Utc>,
    failed: u32,
    sends: Vec<DateTime<Utc>>,
}

#[derive(Clone, Serialize)]
struct OutboxEntry {
    phone: String,
    code: String,
    purpose: OtpPurpose,
    sent_at: DateTime<Utc>,
}

fn unprocessable(code: &'static str, message: &str, field: &str) -> OkyaError {
    OkyaError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).field(field)
}

/// Issues a code for `phone`, enforcing the send throttle. An unknown phone gets the same
/// answer but no message, so callers cannot probe which phones have accounts.
fn issue(
    state: &OkyaState,
    auth: &mut AuthState,
    phone: &str,
    purpose: OtpPurpose,
    known: bool,
) -> Result<serde_json::Value, OkyaError> {
    let now = Utc::now();
    let otp = auth.otps.entry(phone.to_owned()).or_insert_with(|| Otp {
        code: String::new(),
        expires_at: now,
        failed: 0,
        sends: Vec::new(),
    });
    otp.sends.retain(|t| now - *t < Duration::hours(1));
    let too_soon = otp
        .sends
        .last()
        .is_some_and(|t| now - *t < Duration::seconds(RESEND_INTERVAL_SECS));
    if too_soon || otp.sends.len() >= SENDS_PER_HOUR {
        let retry_after = otp
            .sends
            .last()
            .map(|t| (RESEND_INTERVAL_SECS - (now - *t).num_seconds()).max(1))
            .unwrap_or(RESEND_INTERVAL_SECS);
        return Err(OkyaError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "otp_throttled",
            format!("wait {retry_after} s"),
        )
        .retry_after(retry_after));
    }
    otp.sends.push(now);
    otp.code = if state.otp_code.is_empty() {
        format!("{:06}", fastrand::u32(0..1_000_000))
    } else {
        state.otp_code.clone()
    };
    otp.expires_at = now + Duration::seconds(OTP_TTL_SECS);
    otp.failed = 0;
    if known {
        auth.outbox.push(OutboxEntry {
            phone: phone.to_owned(),
            code: otp.code.clone(),
            purpose,
            sent_at: now,
        });
    }
    Ok(serde_json::json!({"otp": {"sent": true, "expires_at": otp.expires_at}}))
}

pub(super) async fn register(
    State(state): State<Arc<OkyaState>>,
    headers: HeaderMap,
    Json(body): Json<NewAccount>,
) -> Response {
    let fingerprint = format!(
        "register {}",
        serde_json::to_string(&body).unwrap_or_default()
    );
    let sim = state.clone();
    idempotent(&state, &headers, fingerprint, move |inner| {
        if !body.email.contains('@') {
            return Err(unprocessable(
                "invalid_email",
                "not an email address",
                "email",
            ));
        }
        if !body.phone.starts_with('+') || body.phone.len() < 9 {
            return Err(unprocessable(
                "invalid_phone",
                "phone must be E.164",
                "phone",
            ));
        }
        let auth = &mut inner.auth;
        let email = body.email.to_ascii_lowercase();
        if auth
            .accounts
            .iter()
            .any(|a| a.email == email || a.phone == body.phone)
        {
            return Err(OkyaError::new(
                StatusCode::CONFLICT,
                "account_exists",
                "an account with these details exists",
            ));
        }
        let account = Account {
            id: format!("acc_{}", uuid::Uuid::new_v4().simple()),
            email,
            phone: body.phone.clone(),
            first_name: body.first_name.clone(),
            last_name: body.last_name.clone(),
            confirmed: false,
            loyalty_id: None,
        };
        auth.accounts.push(account.clone());
        let otp = issue(&sim, auth, &body.phone, OtpPurpose::Confirm, true)?;
        Ok((
            StatusCode::CREATED,
            serde_json::json!({"account": account, "otp": otp["otp"]}),
        ))
    })
}

pub(super) async fn send_otp(
    State(state): State<Arc<OkyaState>>,
    headers: HeaderMap,
    Json(body): Json<SendOtp>,
) -> Response {
    let fingerprint = format!("otp {}", serde_json::to_string(&body).unwrap_or_default());
    let sim = state.clone();
    idempotent(&state, &headers, fingerprint, move |inner| {
        let known = inner.auth.accounts.iter().any(|a| a.phone == body.phone);
        let sent = issue(&sim, &mut inner.auth, &body.phone, body.purpose, known)?;
        Ok((StatusCode::OK, sent))
    })
}

pub(super) async fn verify_otp(
    State(state): State<Arc<OkyaState>>,
    Json(body): Json<VerifyOtp>,
) -> Response {
    let mut inner = state.lock();
    let auth = &mut inner.auth;
    let invalid = || {
        OkyaError::new(
            StatusCode::UNAUTHORIZED,
            "otp_invalid",
            "wrong or unknown code",
        )
        .into_response()
    };
    let Some(otp) = auth.otps.get_mut(&body.phone) else {
        return invalid();
    };
    if otp.failed >= MAX_ATTEMPTS {
        return OkyaError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "otp_locked",
            "too many attempts; request a new code",
        )
        .into_response();
    }
    if Utc::now() > otp.expires_at {
        return OkyaError::new(
            StatusCode::UNAUTHORIZED,
            "otp_expired",
            "the code has expired",
        )
        .into_response();
    }
    let known = auth.accounts.iter().position(|a| a.phone == body.phone);
    // Unknown phones still hold a code (never sent) and count tries, so they answer alike.
    if otp.code.is_empty() || otp.code != body.code || known.is_none() {
        otp.failed += 1;
        return invalid();
    }
    // A code works once.
    otp.code.clear();
    otp.expires_at = Utc::now();
    let Some(index) = known else {
        return invalid();
    };
    auth.accounts[index].confirmed = true;
    Json(serde_json::json!({"account": auth.accounts[index]})).into_response()
}

pub(super) async fn save_loyalty(
    State(state): State<Arc<OkyaState>>,
    Path(account_id): Path<String>,
    Json(body): Json<SaveLoyalty>,
) -> Response {
    if body.provider != "sessionm" {
        return OkyaError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "provider must be sessionm",
        )
        .field("provider")
        .into_response();
    }
    let mut inner = state.lock();
    let Some(account) = inner.auth.accounts.iter_mut().find(|a| a.id == account_id) else {
        return OkyaError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            "no such account",
        )
        .into_response();
    };
    match &account.loyalty_id {
        Some(existing) if *existing != body.user_id => OkyaError::new(
            StatusCode::CONFLICT,
            "loyalty_already_linked",
            "another loyalty id is saved",
        )
        .into_response(),
        _ => {
            account.loyalty_id = Some(body.user_id);
            Json(serde_json::json!({"account": account})).into_response()
        }
    }
}

pub(super) async fn get_account(
    State(state): State<Arc<OkyaState>>,
    Path(account_id): Path<String>,
) -> Response {
    let inner = state.lock();
    match inner.auth.accounts.iter().find(|a| a.id == account_id) {
        Some(account) => Json(serde_json::json!({"account": account})).into_response(),
        None => OkyaError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            "no such account",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct OutboxQuery {
    phone: Option<String>,
}

/// Sandbox only: the codes "sent", newest last, for tests and developers.
pub(super) async fn outbox(
    State(state): State<Arc<OkyaState>>,
    Query(query): Query<OutboxQuery>,
) -> Response {
    let inner = state.lock();
    let entries: Vec<&OutboxEntry> = inner
        .auth
        .outbox
        .iter()
        .filter(|e| query.phone.as_deref().is_none_or(|p| p == e.phone))
        .collect();
    Json(serde_json::json!({"messages": entries})).into_response()
}

/// Sandbox only: every account, for tests reading what was saved.
pub(super) async fn accounts(State(state): State<Arc<OkyaState>>) -> Response {
    let inner = state.lock();
    Json(serde_json::json!({"accounts": inner.auth.accounts})).into_response()
}
