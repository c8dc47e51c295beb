//! The two kinds of failure the app sees: `userErrors` it can act on, and GraphQL errors
//! with `extensions.code` for the unexpected. Internal detail is logged, never returned.

use crate::{rate_limit::RateLimitError, store::StoreError, upstream::UpstreamError};
use async_graphql::{Enum, ErrorExtensions, SimpleObject};

/// What went wrong, in a form the app can branch on.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum UserErrorCode {
    /// An argument is malformed (an id of the wrong shape, too many lines).
    InvalidInput,
    StoreNotFound,
    StoreClosed,
    ProductNotFound,
    ProductUnavailable,
    /// A quantity outside 1 to 99.
    InvalidQuantity,
    /// A modifier option the product does not have, or one that is unavailable or repeated.
    InvalidModifier,
    /// A modifier group's minimum or maximum number of choices is not met.
    ModifierSelection,
    CartNotFound,
    LineNotFound,
    CartFull,
    InvalidEmail,
    /// Not a phone number in international (E.164) form, e.g. `+16265550100`.
    InvalidPhone,
    /// A name is empty, too long, or has control characters.
    InvalidName,
    /// An account with this email or phone exists (which one is not said).
    AccountExists,
    /// The code is wrong, or no code was sent to this phone.
    OtpInvalid,
    OtpExpired,
    /// Too many wrong codes; request a new one.
    OtpAttemptsExceeded,
    /// Codes were requested too often; wait before asking again.
    OtpThrottled,
    /// The refresh token is unknown, used, expired or revoked: sign in again.
    RefreshTokenInvalid,
    CartEmpty,
    /// The cart was already turned into an order; start a new cart.
    CartAlreadyOrdered,
    /// Okya refused the order for a reason not listed here.
    OrderNotAccepted,
    /// The same idempotency key was sent with a different checkout.
    IdempotencyKeyReused,
    /// The card was declined; the message says why, in words fit for the customer.
    CardDeclined,
    /// 3-D Secure failed or was abandoned.
    AuthenticationFailed,
    /// The payment failed for another reason.
    PaymentFailed,
    /// The payment could not be attempted right now, for reasons on our side (not the
    /// card): nothing was charged. While the order is `AWAITING_PAYMENT`, sending the same
    /// checkout again (same `idempotencyKey`) tries again.
    PaymentUnavailable,
    /// The order could not be placed right now, for reasons on our side: nothing was
    /// charged. Try again in a moment.
    ServiceUnavailable,
    /// The voucher cannot be used with this order.
    VoucherNotApplicable,
    VoucherNotFound,
    VoucherExpired,
    VoucherAlreadyUsed,
    /// Another order is using the voucher right now.
    VoucherInUse,
}

/// An expected failure the customer can fix.
#[derive(SimpleObject, Clone, Debug, PartialEq, Eq)]
pub struct UserError {
    pub code: UserErrorCode,
    /// Path to the input field at fault, e.g. `["lines", "0", "quantity"]`.
    pub field: Option<Vec<String>>,
    /// A sentence fit to show the customer.
    pub message: String,
}

impl UserError {
    pub fn new(code: UserErrorCode, field: &[&str], message: impl Into<String>) -> Self {
        Self {
            code,
            field: (!field.is_empty()).then(|| field.iter().map(|s| (*s).to_owned()).collect()),
            message: message.into(),
        }
    }
}

/// Every `extensions.code` the service puts on an error, over HTTP and websockets alike: the
/// one list the README's "Error codes" section documents (a test checks that it lists each).
///
/// The GraphQL-level names follow Apollo Server's, which Apollo Client, urql and the
/// persisted-query links recognise:
/// <https://www.apollographql.com/docs/apollo-server/data/errors#built-in-error-codes>.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The operation needs a signed-in customer, or the token is expired or revoked.
    Unauthenticated,
    /// The object does not exist or belongs to someone else.
    NotFound,
    /// An argument or variable value the field cannot take (a number out of range, a
    /// malformed scalar, too many items).
    BadUserInput,
    /// An upstream system is down or slow; retrying later may succeed. When its circuit
    /// breaker is open the call was not even tried, and `extensions` also carry `upstream`
    /// (`okya`, `okya_auth`, `stripe`, `epoint`, `sessionm`) and `retryAfterSeconds`.
    UpstreamUnavailable,
    /// Too many requests: one of our rate limits (codes sent or tried per phone or address,
    /// checkouts and declined payments per customer or address), with
    /// `extensions.retryAfterSeconds` (an integer, at least 1) until one more is served; or
    /// an upstream asked us to slow down (no hint then).
    RateLimited,
    /// Our fault; the detail is in the log, never in the answer.
    Internal,
    /// The operation ran longer than `graphql.operation_timeout_secs`; retrying may
    /// succeed (a checkout with the same key answers with its result).
    Timeout,
    /// The document is not GraphQL (a syntax error).
    GraphqlParseFailed,
    /// The document does not fit the schema, names no runnable operation, or exceeds a
    /// depth, complexity or introspection limit.
    GraphqlValidationFailed,
    /// An automatic persisted query's hash is not known (yet): send the query with it.
    PersistedQueryNotFound,
    /// A persisted-query protocol version other than 1.
    PersistedQueryNotSupported,
    /// The HTTP request is not a GraphQL request (a malformed body or parameter, a
    /// persisted-query hash that does not match its query).
    BadRequest,
    /// A mutation over GET, or a method other than GET and POST (HTTP 405).
    MethodNotAllowed,
    /// `Accept` allows neither JSON media type (HTTP 406).
    NotAcceptable,
    /// The body is larger than `graphql.max_body_bytes` (HTTP 413).
    PayloadTooLarge,
    /// `Content-Type` is missing or is not JSON in UTF-8 (HTTP 415).
    UnsupportedMediaType,
}

impl ErrorCode {
    /// The code as it appears in `extensions.code`, e.g. `"BAD_USER_INPUT"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The code an error already carries, if any.
    pub fn of(error: &async_graphql::ServerError) -> Option<ErrorCode> {
        use strum::IntoEnumIterator;
        let Some(async_graphql::Value::String(code)) =
            error.extensions.as_ref().and_then(|e| e.get("code"))
        else {
            return None;
        };
        ErrorCode::iter().find(|c| c.as_str() == code)
    }

    /// A request-level error (no path) carrying this code.
    pub fn error(self, message: impl Into<String>) -> async_graphql::ServerError {
        let mut error = async_graphql::ServerError::new(message, None);
        self.set_on(&mut error);
        error
    }

    /// A GraphQL error object with this code, for answers built outside the schema (an
    /// HTTP refusal, a websocket protocol error):
    /// `{"message": …, "extensions": {"code": …}}`.
    pub fn json(self, message: &str) -> serde_json::Value {
        serde_json::json!({"message": message, "extensions": {"code": self.as_str()}})
    }

    /// Puts this code on `error`, replacing any other.
    pub fn set_on(self, error: &mut async_graphql::ServerError) {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", self.as_str());
    }
}

/// Unexpected failures, mapped once to `extensions.code`.
///
/// Deliberately not `Display`: async-graphql converts any `Display` type into an error
/// without extensions, which would silently drop the code. The only way out is `From`
/// below, which sets it.
#[derive(Debug)]
pub enum ApiError {
    Unauthenticated,
    NotFound,
    BadUserInput(String),
    UpstreamUnavailable,
    /// Too many requests; `retry_after_secs` (at least 1) when we know how long to wait.
    RateLimited {
        retry_after_secs: Option<u64>,
    },
    /// An upstream's circuit breaker is open: the call failed fast, without being sent.
    CircuitOpen {
        upstream: crate::upstream::System,
        retry_after: std::time::Duration,
    },
    Internal,
}

impl ApiError {
    fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthenticated => ErrorCode::Unauthenticated,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::BadUserInput(_) => ErrorCode::BadUserInput,
            ApiError::UpstreamUnavailable | ApiError::CircuitOpen { .. } => {
                ErrorCode::UpstreamUnavailable
            }
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::Internal => ErrorCode::Internal,
        }
    }

    /// What the client reads: never internal detail.
    fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated => "Sign in to do this.".to_owned(),
            ApiError::NotFound => "Not found.".to_owned(),
            ApiError::BadUserInput(message) => message.clone(),
            ApiError::UpstreamUnavailable | ApiError::CircuitOpen { .. } => {
                "A service we depend on is unavailable; try again shortly.".to_owned()
            }
            ApiError::RateLimited {
                retry_after_secs: Some(secs),
            } => format!(
                "Too many requests; try again in {secs} second{}.",
                if *secs == 1 { "" } else { "s" }
            ),
            ApiError::RateLimited {
                retry_after_secs: None,
            } => "Too many requests; try again shortly.".to_owned(),
            ApiError::Internal => "Something went wrong on our side.".to_owned(),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(value: ApiError) -> Self {
        let code = value.code();
        let (upstream, retry_after) = match &value {
            ApiError::RateLimited { retry_after_secs } => (None, *retry_after_secs),
            ApiError::CircuitOpen {
                upstream,
                retry_after,
            } => (
                Some(upstream.as_str()),
                Some(crate::upstream::guard::seconds_up(*retry_after)),
            ),
            _ => (None, None),
        };
        async_graphql::Error::new(value.message()).extend_with(|_, e| {
            e.set("code", code.as_str());
            if let Some(upstream) = upstream {
                e.set("upstream", upstream);
            }
            if let Some(secs) = retry_after {
                // The hint clients read, as HTTP's `Retry-After`: whole seconds.
                e.set("retryAfterSeconds", secs);
            }
        })
    }
}

impl From<UpstreamError> for ApiError {
    fn from(err: UpstreamError) -> Self {
        ApiError::from(&err)
    }
}

impl From<std::sync::Arc<UpstreamError>> for ApiError {
    fn from(err: std::sync::Arc<UpstreamError>) -> Self {
        ApiError::from(&*err)
    }
}

impl From<&UpstreamError> for ApiError {
    fn from(err: &UpstreamError) -> Self {
        match err {
            UpstreamError::RateLimited { .. } => {
                tracing::warn!(error = %err, "upstream rate limited us");
                ApiError::RateLimited {
                    retry_after_secs: None,
                }
            }
            UpstreamError::CircuitOpen {
                system,
                retry_after,
                ..
            } => ApiError::CircuitOpen {
                upstream: *system,
                retry_after: *retry_after,
            },
            e if e.is_transient() => {
                tracing::warn!(error = %err, "upstream unavailable");
                ApiError::UpstreamUnavailable
            }
            _ => {
                tracing::error!(error = %err, "upstream call failed unexpectedly");
                ApiError::Internal
            }
        }
    }
}

impl From<RateLimitError> for ApiError {
    fn from(err: RateLimitError) -> Self {
        match err {
            RateLimitError::Limited {
                retry_after_secs, ..
            } => ApiError::RateLimited {
                retry_after_secs: Some(retry_after_secs),
            },
            RateLimitError::Store(e) => ApiError::from(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "database call failed");
        ApiError::Internal
    }
}

/// A DataLoader's database error, shared by every field that waited on it.
impl From<std::sync::Arc<StoreError>> for ApiError {
    fn from(err: std::sync::Arc<StoreError>) -> Self {
        tracing::error!(error = %err, "database call failed");
        ApiError::Internal
    }
}

/// Turns an upstream's field path (`lines[0].modifier_option_ids`) into the GraphQL input
/// path the app sent (`["lines", "0", "modifierOptionIds"]`).
pub fn input_path(prefix: &[&str], upstream_field: Option<&str>) -> Vec<String> {
    let mut path: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
    if let Some(field) = upstream_field {
        for segment in field.split(['.', '[', ']']).filter(|s| !s.is_empty()) {
            path.push(camel_case(segment));
        }
    }
    path
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_fields_become_input_paths() {
        assert_eq!(
            input_path(&[], Some("lines[0].modifier_option_ids")),
            vec!["lines", "0", "modifierOptionIds"]
        );
        assert_eq!(
            input_path(&["input"], Some("store_id")),
            vec!["input", "storeId"]
        );
        assert_eq!(input_path(&[], Some("line_ids[2]")), vec!["lineIds", "2"]);
        assert_eq!(input_path(&["cartId"], None), vec!["cartId"]);
    }
}
