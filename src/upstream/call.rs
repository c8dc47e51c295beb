//! The one place an upstream HTTP call is sent, retried, timed and traced.

use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use std::{fmt, time::Duration};
use tracing::{Instrument, field};

use super::guard::{Failed, Guard, Passage};

/// Which upstream a call went to; names spans, metrics and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter)]
pub enum System {
    Okya,
    OkyaAuth,
    Stripe,
    Epoint,
    Sessionm,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Okya => "okya",
            System::OkyaAuth => "okya_auth",
            System::Stripe => "stripe",
            System::Epoint => "epoint",
            System::Sessionm => "sessionm",
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an upstream said when it refused a request (a 4xx with a readable error body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejection {
    /// The upstream's machine-readable code, e.g. Stripe's `card_declined`.
    pub code: String,
    /// The upstream's message; fit for logs, not necessarily for customers.
    pub message: String,
    /// The request field it blamed, when it said.
    pub field: Option<String>,
    /// Anything else the system adds (Stripe's `decline_code`, `type`).
    pub detail: serde_json::Value,
    /// The system says an earlier request with the same idempotency key is still running
    /// (Stripe's 409 `idempotency_key_in_use`): the outcome is not known yet.
    pub in_progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{system} {operation}: timed out")]
    Timeout {
        system: System,
        operation: &'static str,
    },
    #[error("{system} {operation}: unreachable: {reason}")]
    Unavailable {
        system: System,
        operation: &'static str,
        reason: String,
    },
    #[error("{system} {operation}: rate limited")]
    RateLimited {
        system: System,
        operation: &'static str,
    },
    #[error("{system} {operation}: server error {status}{}", if *replayed { " (replayed)" } else { "" })]
    Server {
        system: System,
        operation: &'static str,
        status: u16,
        /// The answer was replayed from the system's idempotency store
        /// (`Idempotent-Replayed: true`): sending the same key again will only repeat
        /// it, so what happened must be found out another way.
        replayed: bool,
    },
    /// An earlier request under the same idempotency key is still running at the upstream
    /// (Stripe's 409 `idempotency_key_in_use`): its outcome is unknown, not refused.
    #[error(
        "{system} {operation}: an earlier request with this idempotency key is still in progress"
    )]
    InProgress {
        system: System,
        operation: &'static str,
    },
    #[error("{system} {operation}: rejected with {status} {}: {}", rejection.code, rejection.message)]
    Rejected {
        system: System,
        operation: &'static str,
        status: u16,
        /// Boxed: the refusal is large, and errors travel through every `Result`.
        rejection: Box<Rejection>,
    },
    /// A 2xx whose body cannot be read (cut off, garbled, not the documented shape): the
    /// upstream may well have acted, so for a write the outcome is unknown, like a lost
    /// answer, and the same request under the same key finds out.
    #[error("{system} {operation}: unreadable response: {reason}")]
    Unreadable {
        system: System,
        operation: &'static str,
        reason: String,
    },
    /// A readable answer that says something we cannot accept (an unknown currency, a
    /// figure missing): asking again gets the same, so it is not retried.
    #[error("{system} {operation}: unacceptable response: {reason}")]
    Protocol {
        system: System,
        operation: &'static str,
        reason: String,
    },
    #[error("upstream client setup: {0}")]
    Setup(String),
    /// Not sent: the system's circuit breaker is open after recent failures (see
    /// `upstream::guard`). Nothing reached the upstream, so nothing happened there; it is
    /// transient, and worth trying again after `retry_after`.
    #[error("{system} {operation}: not sent, the circuit breaker is open (retry in {}s)", super::guard::seconds_up(*retry_after))]
    CircuitOpen {
        system: System,
        operation: &'static str,
        retry_after: Duration,
    },
    /// Not sent: `limit` calls to the system were already in flight from this instance and
    /// none ended within the wait (see `upstream::guard`). Nothing reached the upstream; it
    /// is transient.
    #[error("{system} {operation}: not sent, {limit} calls already in flight")]
    Saturated {
        system: System,
        operation: &'static str,
        limit: usize,
    },
}

impl UpstreamError {
    /// The refusal, when the upstream understood and refused the request.
    pub fn rejection(&self) -> Option<(u16, &Rejection)> {
        match self {
            UpstreamError::Rejected {
                status, rejection, ..
            } => Some((*status, rejection)),
            _ => None,
        }
    }

    /// True when the call may have failed for reasons that go away (a retry could work).
    /// Every transient error is also an unknown outcome for a write: the upstream may have
    /// acted before the answer was lost.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Timeout { .. }
            | UpstreamError::Unavailable { .. }
            | UpstreamError::RateLimited { .. }
            | UpstreamError::Server { .. }
            | UpstreamError::InProgress { .. }
            | UpstreamError::Unreadable { .. }
            | UpstreamError::CircuitOpen { .. }
            | UpstreamError::Saturated { .. } => true,
            UpstreamError::Rejected { .. }
            | UpstreamError::Protocol { .. }
            | UpstreamError::Setup(_) => false,
        }
    }

    /// True for a server error the upstream replayed from its idempotency store: the same
    /// key will only ever get this answer again.
    pub fn is_replayed_failure(&self) -> bool {
        matches!(self, UpstreamError::Server { replayed: true, .. })
    }

    /// True when the request was never sent (an open circuit breaker, no free slot): the
    /// upstream did nothing, so unlike a timeout this is no unknown outcome.
    pub fn was_not_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::CircuitOpen { .. } | UpstreamError::Saturated { .. }
        )
    }
}

const MAX_ATTEMPTS: u32 = 3;

/// Parses a system's error body into a [`Rejection`].
pub(crate) type ErrorParser = fn(&serde_json::Value) -> Rejection;

/// One logical upstream call. Every call we make is safe to repeat: reads, and writes
/// that carry an idempotency key (`Idempotency-Key`, SessionM's `request_id`), so a
/// transient failure is retried with the same key.
///
/// Every attempt passes the system's [`Guard`]: its circuit breaker may refuse it without
/// sending it, and a retry must be paid for from its retry budget.
pub(crate) struct Call<'a> {
    pub system: System,
    pub operation: &'static str,
    pub parse_error: ErrorParser,
    pub guard: &'a Guard,
}

impl Call<'_> {
    /// Sends the request (again, with the same idempotency key, after a transient failure
    /// when the call allows it) and decodes a 2xx JSON body.
    pub async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, UpstreamError> {
        let bytes = self.send(request).await?;
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Unreadable {
            system: self.system,
            operation: self.operation,
            reason: e.to_string(),
        })
    }

    /// Sends the request and returns the raw 2xx body.
    pub async fn send(&self, request: RequestBuilder) -> Result<Vec<u8>, UpstreamError> {
        let span = tracing::info_span!(
            "upstream",
            system = self.system.as_str(),
            operation = self.operation,
            http.status = field::Empty,
            attempts = field::Empty,
        );
        async move {
            self.guard.deposit();
            let mut attempt = 0;
            // The last failure of an attempt that was sent: once one was, a later refusal
            // by the breaker must not hide that the outcome is unknown.
            let mut sent_failure: Option<UpstreamError> = None;
            loop {
                attempt += 1;
                let Some(this_try) = request.try_clone() else {
                    return Err(UpstreamError::Setup("streaming bodies cannot be sent".into()));
                };
                let outcome = self
                    .guard
                    .pass(Box::pin(send_once(
                        self.system,
                        self.operation,
                        self.parse_error,
                        this_try,
                    )))
                    .await;
                tracing::Span::current().record("attempts", attempt);
                let (err, should_retry) = match outcome {
                    Passage::Sent(Ok(body)) => return Ok(body),
                    Passage::Sent(Err(failed)) => failed,
                    Passage::Refused { retry_after } => {
                        let err = sent_failure.unwrap_or(UpstreamError::CircuitOpen {
                            system: self.system,
                            operation: self.operation,
                            retry_after,
                        });
                        // The breaker's opening was logged at WARN once; each refusal is not.
                        tracing::debug!(error = %err, attempt, "upstream call refused by its open circuit breaker");
                        return Err(err);
                    }
                    Passage::Saturated { limit } => {
                        let err = sent_failure.unwrap_or(UpstreamError::Saturated {
                            system: self.system,
                            operation: self.operation,
                            limit,
                        });
                        tracing::warn!(error = %err, attempt, "upstream call not sent: no free slot");
                        return Err(err);
                    }
                };
                let retry = match should_retry {
                    Some(flag) => flag,
                    None => err.is_transient(),
                };
                if retry && attempt < MAX_ATTEMPTS {
                    if self.guard.withdraw() {
                        tracing::debug!(error = %err, attempt, "upstream call failed; retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        sent_failure = Some(err);
                        continue;
                    }
                    tracing::debug!(error = %err, attempt, "upstream call failed; the retry budget is spent, so no retry");
                }
                // A 404 is an answer ("no such thing"), which callers that look
                // things up expect; it is not worth a warning.
                if err.rejection().is_some_and(|(status, _)| status == 404) {
                    tracing::debug!(error = %err, attempt, "upstream answered not found");
                } else {
                    tracing::warn!(error = %err, attempt, "upstream call failed");
                }
                return Err(err);
            }
        }
        .instrument(span)
        .await
    }
}

/// One attempt, owning what it needs so the breaker can run it. On failure also returns
/// the upstream's own retry advice (`Stripe-Should-Retry`), which overrides ours when
/// present.
async fn send_once(
    system: System,
    operation: &'static str,
    parse_error: ErrorParser,
    request: RequestBuilder,
) -> Result<Vec<u8>, Failed> {
    let response = request.send().await.map_err(|e| {
        let err = if e.is_timeout() {
            UpstreamError::Timeout { system, operation }
        } else {
            UpstreamError::Unavailable {
                system,
                operation,
                reason: without_url(e),
            }
        };
        (err, None)
    })?;
    let status = response.status();
    tracing::Span::current().record("http.status", status.as_u16());
    let advice = response
        .headers()
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(|v| v == "true");
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let body = response.bytes().await.map_err(|e| {
        let err = if e.is_timeout() {
            UpstreamError::Timeout { system, operation }
        } else {
            UpstreamError::Unavailable {
                system,
                operation,
                reason: without_url(e),
            }
        };
        (err, None)
    })?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let err = if status == StatusCode::TOO_MANY_REQUESTS {
        UpstreamError::RateLimited { system, operation }
    } else if status.is_server_error() {
        UpstreamError::Server {
            system,
            operation,
            status: status.as_u16(),
            replayed,
        }
    } else {
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let rejection = parse_error(&parsed);
        if rejection.in_progress {
            UpstreamError::InProgress { system, operation }
        } else {
            UpstreamError::Rejected {
                system,
                operation,
                status: status.as_u16(),
                rejection: Box::new(rejection),
            }
        }
    };
    // A replayed failure repeats whatever we do with this key: no point retrying it.
    let advice = if err.is_replayed_failure() {
        Some(false)
    } else {
        advice
    };
    Err((err, advice))
}

/// reqwest's error text names the URL, which can carry ids or keys in a query string.
fn without_url(err: reqwest::Error) -> String {
    let mut text = err.without_url().to_string();
    if text.is_empty() {
        text = "request failed".to_owned();
    }
    text
}

/// Inline retries of one call: 50 ms doubling, plus up to half again.
const INLINE_RETRIES: crate::retry::RetryPolicy = crate::retry::RetryPolicy::new(
    Duration::from_millis(50),
    Duration::from_secs(1),
    crate::retry::Jitter::Added(50),
);

fn backoff(attempt: u32) -> Duration {
    INLINE_RETRIES.delay(attempt)
}

/// Reads `{"error": {"code", "message", "field"}}`, the shape Okya, Epoint and our
/// simulators share.
pub(crate) fn parse_plain_error(body: &serde_json::Value) -> Rejection {
    let error = &body["error"];
    Rejection {
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"].as_str().unwrap_or_default().to_owned(),
        field: error["field"].as_str().map(str::to_owned),
        detail: serde_json::Value::Null,
        in_progress: false,
    }
}

/// Joins a base URL and a path without doubling or dropping the slash.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}
