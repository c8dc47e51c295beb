//! The two kinds of failure the app sees: `userErrors` it can act on, and GraphQL errors
//! with `extensions.code` for the unexpected. Internal detail is logged, never returned.

use crate::{store::StoreError, upstream::UpstreamError};
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
    RateLimited,
    Internal,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::BadUserInput(_) => "BAD_USER_INPUT",
            ApiError::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ApiError::RateLimited => "RATE_LIMITED",
            ApiError::Internal => "INTERNAL",
        }
    }

    /// What the client reads: never internal detail.
    fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated => "Sign in to do this.".to_owned(),
            ApiError::NotFound => "Not found.".to_owned(),
            ApiError::BadUserInput(message) => message.clone(),
            ApiError::UpstreamUnavailable => {
                "A service we depend on is unavailable; try again shortly.".to_owned()
            }
            ApiError::RateLimited => "Too many requests; try again shortly.".to_owned(),
            ApiError::Internal => "Something went wrong on our side.".to_owned(),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(value: ApiError) -> Self {
        let code = value.code();
        async_graphql::Error::new(value.message()).extend_with(|_, e| e.set("code", code))
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
                ApiError::RateLimited
            }
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

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
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
