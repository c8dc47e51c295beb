//! Errors in Stripe's shape, the JSON reply with its `Request-Id`, and the
//! `Authorization` and `Idempotency-Key` headers.

use super::{StripeSimConfig, model::Intent};
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) error: serde_json::Map<String, Value>,
    /// Stripe keeps an idempotent result only once the endpoint started executing:
    /// parameter validation failures are not saved, so a fixed retry can reuse the key.
    pub(super) saved: bool,
    pub(super) should_retry: Option<bool>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        let mut error = serde_json::Map::new();
        error.insert("type".to_owned(), json!(kind));
        error.insert("message".to_owned(), json!(message.into()));
        Self {
            status,
            error,
            saved: false,
            should_retry: None,
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn unauthorised(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
    }

    pub(super) fn missing(kind: &str, id: &str, param: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such {kind}: '{id}'"),
        )
        .code("resource_missing")
        .param(param)
    }

    pub(super) fn unexpected_state(message: String, intent: &Intent) -> Self {
        Self::invalid(message)
            .code("payment_intent_unexpected_state")
            .with("payment_intent", intent.json(false))
            .saved()
    }

    pub(super) fn code(self, code: &str) -> Self {
        self.with("code", json!(code))
    }

    pub(super) fn param(self, param: &str) -> Self {
        self.with("param", json!(param))
    }

    pub(super) fn with(mut self, key: &str, value: Value) -> Self {
        self.error.insert(key.to_owned(), value);
        self
    }

    pub(super) fn saved(mut self) -> Self {
        self.saved = true;
        self
    }

    pub(super) fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub(super) fn body(&self) -> Value {
        json!({ "error": self.error })
    }

    pub(super) fn into_response(self, request_id: &str) -> Response {
        let mut headers = Vec::new();
        if let Some(retry) = self.should_retry {
            headers.push(("stripe-should-retry", retry.to_string()));
        }
        reply(self.status, &self.body(), request_id, &headers)
    }
}

pub(super) fn reply(
    status: StatusCode,
    body: &Value,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", value);
    }
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(*name, value);
        }
    }
    response
}

pub(super) fn new_id(prefix: &str) -> String {
    let tail: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect();
    format!("{prefix}_{tail}")
}

/// The secret key from `Authorization: Bearer sk_…`, if the simulator accepts it.
pub(super) fn api_key(config: &StripeSimConfig, headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::unauthorised(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY').",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let key = value.strip_prefix("Bearer ").ok_or_else(missing)?.trim();
    let accepted = if config.secret_keys.is_empty() {
        key.starts_with("sk_") || key.starts_with("rk_")
    } else {
        config.secret_keys.iter().any(|k| k == key)
    };
    if accepted {
        return Ok(key.to_owned());
    }
    let shown: String = key.chars().take(8).collect();
    Err(ApiError::unauthorised(format!(
        "Invalid API Key provided: {shown}****"
    )))
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII."))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::invalid(
            "Idempotency-Key must be between 1 and 255 characters long.",
        ));
    }
    Ok(Some(key.to_owned()))
}
