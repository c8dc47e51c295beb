//! A Stripe stand-in that speaks the subset of Stripe's REST API the app uses, the way Stripe
//! speaks it: form-encoded bodies with bracketed keys, bearer secret keys, Stripe's error
//! shape, its test payment methods, and its idempotency rules (first result replayed, other
//! parameters refused, concurrent duplicates answered 409 with `Stripe-Should-Retry: true`).
//!
//! Sandbox endpoints, besides the shared `/_sandbox/calls` and `/_sandbox/faults`:
//!
//! - `POST /_sandbox/payment_intents/{id}/authenticate` with `{"outcome": "succeed" | "fail"}`
//!   finishes the 3-D Secure step the app would do with Stripe's SDK.
//! - `GET /_sandbox/ledger`: every intent, refund and event, and how many requests each
//!   idempotency key received, so tests can prove a customer was charged exactly once.

mod cards;
mod errors;
mod model;
mod operations;
mod params;
mod reads;
mod webhooks;
mod writes;

#[cfg(test)]
mod tests;

use crate::{LOOPBACK_ANY_PORT, Simulator, credentials, faults::Faults};
use axum::{
    Router,
    routing::{get, post},
};
use model::{Ledger, Sim};
use reads::{
    authenticate, ledger, list_intents, retrieve_intent, retrieve_refund, search_intents,
    unrecognised,
};
use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use writes::{cancel_intent, capture_intent, create_intent, create_refund};

/// Where the simulator sends its signed events.
#[derive(Clone)]
pub struct StripeSimConfig {
    /// The BFF's Stripe webhook endpoint; `None` records events without sending them.
    pub webhook_url: Option<String>,
    /// The `whsec_…` secret that signs `Stripe-Signature`.
    pub webhook_secret: String,
    /// The secret keys accepted; empty accepts any `sk_…`/`rk_…` key, as if every key
    /// belonged to the account (idempotency keys are still scoped per key).
    pub secret_keys: Vec<String>,
}

impl Default for StripeSimConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret: credentials::STRIPE_WEBHOOK_SECRET.to_owned(),
            secret_keys: Vec::new(),
        }
    }
}

impl fmt::Debug for StripeSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSimConfig")
            .field("webhook_url", &self.webhook_url)
            .finish_non_exhaustive()
    }
}

/// How long a charge "talks to the card network". Long enough that concurrent duplicates
/// really overlap and meet the 409, as they would at Stripe.
const PROCESSING: Duration = Duration::from_millis(15);
/// Card authorisations lapse after about 7 days.
const HOLD_SECS: i64 = 7 * 86_400;
const WEBHOOK_ATTEMPTS: u32 = 4;
/// The API version the simulator speaks and its events claim (`"api_version"`): the one
/// cbtl-bff's client pins with `Stripe-Version` (a test in the service checks they agree).
pub const API_VERSION: &str = "2024-06-20";

/// Starts the simulator on a free loopback port.
pub async fn start(config: StripeSimConfig, faults: Arc<Faults>) -> std::io::Result<Simulator> {
    start_on(LOOPBACK_ANY_PORT, config, faults).await
}

/// Starts the simulator on `addr`.
pub async fn start_on(
    addr: SocketAddr,
    config: StripeSimConfig,
    faults: Arc<Faults>,
) -> std::io::Result<Simulator> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(std::io::Error::other)?;
    let sim = Arc::new(Sim {
        config,
        http,
        state: Mutex::new(Ledger::default()),
        faults: faults.clone(),
    });
    let router = Router::new()
        .route("/v1/payment_intents", post(create_intent).get(list_intents))
        .route("/v1/payment_intents/search", get(search_intents))
        .route("/v1/payment_intents/{id}", get(retrieve_intent))
        .route("/v1/payment_intents/{id}/capture", post(capture_intent))
        .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/refunds/{id}", get(retrieve_refund))
        .route(
            "/_sandbox/payment_intents/{id}/authenticate",
            post(authenticate),
        )
        .route("/_sandbox/ledger", get(ledger))
        .fallback(unrecognised)
        .with_state(sim);
    crate::serve("stripe", addr, router, faults).await
}
