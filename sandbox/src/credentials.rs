//! The simulators' published credentials and identifiers: what they accept (and sign with)
//! unless configured otherwise, and cbtl-bff's defaults for the same settings.
//!
//! They are public (in this code and the README), so a real upstream configured with one of
//! them would be open to anyone: cbtl-bff refuses each whenever its upstream's URL is set,
//! and the `cbtl-sandbox` binary, which a service reaches by URL, never uses them.

/// Okya's API key (`Authorization: Bearer`).
pub const OKYA_API_KEY: &str = "okya_sandbox_key";
/// The Stripe secret key cbtl-bff sends by default. The simulator, like Stripe's test mode,
/// takes any `sk_…`/`rk_…` key and scopes idempotency keys per key.
pub const STRIPE_SECRET_KEY: &str = "sk_test_sandbox";
/// Epoint's `X-Api-Key`.
pub const EPOINT_API_KEY: &str = "epoint_sandbox_key";
/// SessionM Core API key: the Basic user and the `{api_key}` path segment.
pub const SESSIONM_API_KEY: &str = "sessionm_sandbox_key";
/// SessionM Core API secret: the Basic password.
pub const SESSIONM_API_SECRET: &str = "sessionm_sandbox_secret";
/// SessionM POS/eCommerce API Basic user.
pub const SESSIONM_POS_API_KEY: &str = "sessionm_sandbox_pos_key";
/// SessionM POS/eCommerce API Basic password.
pub const SESSIONM_POS_API_SECRET: &str = "sessionm_sandbox_pos_secret";
/// The client id SessionM would issue, required in every POS request body.
pub const SESSIONM_CLIENT_ID: &str = "cbtl-bff";
/// The secret that signs Okya's `X-Okya-Signature`.
pub const OKYA_WEBHOOK_SECRET: &str = "whsec_okya_sandbox";
/// The secret that signs Stripe's `Stripe-Signature`.
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_stripe_sandbox";
/// The code every one-time password carries (empty would mean random codes).
pub const OTP_CODE: &str = "123456";
