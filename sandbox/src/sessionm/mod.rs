//! In-memory SessionM, following SessionM's published API as `docs/upstreams/sessionm.md`
//! records it (its "Sandbox simulator" section says what the sandbox adds): two hosts with
//! their own credentials, sharing one state and one fault injector.
//!
//! - the **Core API** host: members, `Message-ID` replays, the member statement (`core.rs`);
//! - the **POS / eCommerce API** host: `request_id` idempotency, offers
//!   (`offers.rs`) and queued transactions (`transactions.rs`), plus the admin routes:
//!   `GET /_sandbox/ledger`, `PUT /_sandbox/settings`
//!   `{"processing_delay_ms"?, "transaction_delay_ms"?}` and the shared fault knobs.
//!
//! The simulator has its own wire types (`wire.rs`) and never imports the client, so the
//! two can only agree by both following the contract.

mod core;
mod offers;
mod pos;
mod state;
mod transactions;
mod wire;

#[cfg(test)]
mod tests;

use crate::{LOOPBACK_ANY_PORT, Simulator, credentials, faults::Faults, okya};
use axum::{
    Json, Router,
    extract::State as Extract,
    http::{HeaderMap, StatusCode, header},
    routing::{get, patch, put},
};
use base64::Engine;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use state::State;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// What the simulator accepts: both hosts' credentials, the client id and the stores.
#[derive(Clone)]
pub struct SessionmSimConfig {
    /// Core API key: the Basic user and the `{api_key}` path segment.
    pub api_key: String,
    /// Core API secret: the Basic password.
    pub api_secret: String,
    /// POS API Basic user.
    pub pos_api_key: String,
    /// POS API Basic password.
    pub pos_api_secret: String,
    /// Must equal every POS request container's `client_id`.
    pub client_id: String,
    /// Okya store ids; one SessionM store is created for each, in order.
    pub okya_store_ids: Vec<String>,
}

impl Default for SessionmSimConfig {
    /// The sandbox credentials and client id, and a store for each of the Okya
    /// simulator's stores.
    fn default() -> Self {
        Self {
            api_key: credentials::SESSIONM_API_KEY.to_owned(),
            api_secret: credentials::SESSIONM_API_SECRET.to_owned(),
            pos_api_key: credentials::SESSIONM_POS_API_KEY.to_owned(),
            pos_api_secret: credentials::SESSIONM_POS_API_SECRET.to_owned(),
            client_id: credentials::SESSIONM_CLIENT_ID.to_owned(),
            okya_store_ids: okya::catalog::store_ids(),
        }
    }
}

impl std::fmt::Debug for SessionmSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionmSimConfig")
            .field("client_id", &self.client_id)
            .field("okya_store_ids", &self.okya_store_ids)
            .finish_non_exhaustive()
    }
}

/// Where SessionM's two hosts listen.
#[derive(Clone, Copy, Debug)]
pub struct Hosts {
    /// The Core API host.
    pub core: SocketAddr,
    /// The POS / eCommerce host.
    pub pos: SocketAddr,
}

/// The running simulator: two hosts over one state.
pub struct SessionmSandbox {
    /// The Core API host.
    pub core: Simulator,
    /// The POS / eCommerce host; also serves the `/_sandbox` admin routes.
    pub pos: Simulator,
    /// Okya store id → SessionM store id (`sm-store-0001`, …).
    pub store_ids: BTreeMap<String, String>,
    /// The store of the app itself, for calls tied to no Okya store.
    pub ecommerce_store_id: String,
}

/// The e-commerce store's id.
const ECOMMERCE_STORE_ID: &str = "sm-store-ecommerce";

/// Starts both hosts on free loopback ports. They share `faults`, so a fault route key such
/// as `POST /api/2.0/lock` can be set through either host's `/_sandbox/faults`.
pub async fn start(
    config: SessionmSimConfig,
    faults: Arc<Faults>,
) -> std::io::Result<SessionmSandbox> {
    let hosts = Hosts {
        core: LOOPBACK_ANY_PORT,
        pos: LOOPBACK_ANY_PORT,
    };
    start_on(hosts, config, faults).await
}

/// Starts both hosts on `hosts`' addresses, sharing `faults`.
pub async fn start_on(
    hosts: Hosts,
    config: SessionmSimConfig,
    faults: Arc<Faults>,
) -> std::io::Result<SessionmSandbox> {
    let store_ids: BTreeMap<String, String> = config
        .okya_store_ids
        .iter()
        .enumerate()
        .map(|(i, okya)| (okya.clone(), format!("sm-store-{:04}", i + 1)))
        .collect();
    let mut known: BTreeSet<String> = store_ids.values().cloned().collect();
    known.insert(ECOMMERCE_STORE_ID.to_owned());
    let shared = Arc::new(Shared {
        config,
        store_ids: known,
        state: Mutex::new(State::new()),
    });
    let core = crate::serve(
        "sessionm-core",
        hosts.core,
        core::routes().merge(admin()).with_state(shared.clone()),
        faults.clone(),
    )
    .await?;
    let pos = crate::serve(
        "sessionm-pos",
        hosts.pos,
        pos::routes().merge(admin()).with_state(shared),
        faults,
    )
    .await?;
    Ok(SessionmSandbox {
        core,
        pos,
        store_ids,
        ecommerce_store_id: ECOMMERCE_STORE_ID.to_owned(),
    })
}

/// What both hosts share.
struct Shared {
    config: SessionmSimConfig,
    /// Every SessionM store id the simulator knows.
    store_ids: BTreeSet<String>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked left no half-applied change behind it (each applies its
        // changes last), so the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn core_authorised(&self, api_key: &str, headers: &HeaderMap) -> bool {
        api_key == self.config.api_key
            && basic_credentials(headers).is_some_and(|(user, password)| {
                user == self.config.api_key && password == self.config.api_secret
            })
    }

    fn pos_authorised(&self, headers: &HeaderMap) -> bool {
        basic_credentials(headers).is_some_and(|(user, password)| {
            user == self.config.pos_api_key && password == self.config.pos_api_secret
        })
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Admin
// ---------------------------------------------------------------------------------------

fn admin() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sandbox/ledger", get(ledger))
        .route("/_sandbox/settings", put(settings))
        .route("/_sandbox/offers/{user_offer_id}", patch(show_offer_as))
}

/// `PATCH /_sandbox/offers/{user_offer_id}` `{"status"?: "…", "discount_type"?: "…"}`:
/// lookups show the offer with that status or discount type, as SessionM would show one
/// it added after this client was written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowOfferAs {
    status: Option<String>,
    discount_type: Option<String>,
}

async fn show_offer_as(
    Extract(sim): Extract<Arc<Shared>>,
    axum::extract::Path(user_offer_id): axum::extract::Path<String>,
    Json(update): Json<ShowOfferAs>,
) -> StatusCode {
    let mut state = sim.lock();
    let Some(offer) = state.offer_mut(&user_offer_id) else {
        return StatusCode::NOT_FOUND;
    };
    if update.status.is_some() {
        offer.shown_status = update.status;
    }
    if update.discount_type.is_some() {
        offer.shown_discount_type = update.discount_type;
    }
    StatusCode::NO_CONTENT
}

async fn ledger(Extract(sim): Extract<Arc<Shared>>) -> Json<Value> {
    let now = Utc::now();
    let state = sim.lock();
    let users: Vec<Value> = state
        .users
        .iter()
        .map(|u| {
            let offers: Vec<Value> = state
                .offers
                .iter()
                .filter(|o| o.user_id == u.id)
                .map(|o| {
                    json!({
                        "user_offer_id": o.user_offer_id,
                        "offer_id": o.offer_id,
                        "name": o.name,
                        "discount_type": o.kind.as_str(),
                        "status": o.status(now),
                        "transaction_id": o.transaction_id(),
                    })
                })
                .collect();
            json!({
                "id": u.id,
                "external_id": u.external_id,
                "email": u.email,
                "points": u.points,
                "tier": state::tier(u.points),
                "offers": offers,
            })
        })
        .collect();
    let transactions: Vec<Value> = state
        .transactions
        .iter()
        .map(|t| {
            json!({
                "transaction_id": t.transaction_id,
                "user_id": t.user_id,
                "total": t.total.to_json(),
                "points": t.points,
                "processed_at": wire::millis(t.processed_at),
                "versions": t.versions,
            })
        })
        .collect();
    let rejected: Vec<Value> = state
        .rejected
        .iter()
        .map(|r| json!({"transaction_id": r.transaction_id, "reason": r.reason}))
        .collect();
    Json(json!({
        "users": users,
        "transactions": transactions,
        "rejected": rejected,
        "request_ids": state.request_counts,
        "message_ids": state.message_counts,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsUpdate {
    processing_delay_ms: Option<u64>,
    transaction_delay_ms: Option<u64>,
    omit_points: Option<bool>,
}

async fn settings(
    Extract(sim): Extract<Arc<Shared>>,
    Json(update): Json<SettingsUpdate>,
) -> StatusCode {
    let mut state = sim.lock();
    if let Some(ms) = update.processing_delay_ms {
        state.processing_delay_ms = ms;
    }
    if let Some(ms) = update.transaction_delay_ms {
        state.transaction_delay_ms = ms;
    }
    if let Some(omit) = update.omit_points {
        state.omit_points = omit;
    }
    StatusCode::NO_CONTENT
}
