//! The Okya simulator: catalogue (with `menu.updated` webhooks when the menu editor or a
//! store changes it), carts, orders, the store's order manager with its `order.updated`
//! webhooks, and Okya Auth. It speaks the contract in
//! `docs/upstreams/okya.md`.

mod auth;
mod carts;
pub mod catalog;
mod orders;
pub mod wire;

use crate::{LOOPBACK_ANY_PORT, Simulator, credentials, faults::Faults};
use axum::{
    Json, Router,
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use wire::{Cart, Product, Store};

/// What the Okya simulator accepts, and how its store and webhooks behave.
#[derive(Clone)]
pub struct OkyaSimConfig {
    /// The key clients must present as `Authorization: Bearer`.
    pub api_key: String,
    /// The code every OTP carries; empty for random codes.
    pub otp_code: String,
    /// How long after its payment is recorded the store accepts an order; 0 = never
    /// (accept on demand with `POST /_sandbox/orders/{id}/accept`).
    pub auto_accept_delay_ms: u64,
    /// Where `order.updated` webhooks go (the app's `/webhooks/okya`); `None` records the
    /// events without sending them.
    pub webhook_url: Option<String>,
    /// The secret that signs `X-Okya-Signature`.
    pub webhook_secret: String,
}

impl Default for OkyaSimConfig {
    /// The sandbox key, OTP code and webhook secret, no auto-accept, and no webhook
    /// delivery.
    fn default() -> Self {
        Self {
            api_key: credentials::OKYA_API_KEY.to_owned(),
            otp_code: credentials::OTP_CODE.to_owned(),
            auto_accept_delay_ms: 0,
            webhook_url: None,
            webhook_secret: credentials::OKYA_WEBHOOK_SECRET.to_owned(),
        }
    }
}

impl std::fmt::Debug for OkyaSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OkyaSimConfig")
            .field("auto_accept_delay_ms", &self.auto_accept_delay_ms)
            .field("webhook_url", &self.webhook_url)
            .finish_non_exhaustive()
    }
}

/// How long after a paid order the sandbox store accepts it, unless configured otherwise
/// (cbtl-bff's `sandbox.auto_accept_delay_ms` default).
pub const AUTO_ACCEPT_DELAY_MS: u64 = 2_000;

impl OkyaSimConfig {
    /// The defaults, with this API key and OTP code.
    pub fn new(api_key: impl Into<String>, otp_code: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            otp_code: otp_code.into(),
            ..Self::default()
        }
    }
}

pub(crate) struct OkyaState {
    api_key: String,
    otp_code: String,
    auto_accept_delay_ms: u64,
    courier: Arc<orders::Courier>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    stores: Vec<Store>,
    products: HashMap<String, Product>,
    carts: HashMap<String, Cart>,
    /// Idempotency-Key → (request fingerprint, status, body): a replay answers the same.
    idempotency: HashMap<String, (String, u16, serde_json::Value)>,
    auth: auth::AuthState,
    orders: orders::OrdersState,
    next_id: u64,
}

impl Inner {
    fn next_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:06}{}", self.next_id, fastrand::u32(1000..10000))
    }
}

impl OkyaState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An Okya refusal in the contract's shape.
pub(crate) struct OkyaError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Seconds to wait before asking again, for Okya Auth's throttles.
    retry_after: Option<i64>,
}

impl OkyaError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub(crate) fn retry_after(mut self, seconds: i64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn body(&self) -> serde_json::Value {
        let mut error =
            serde_json::json!({"code": self.code, "message": self.message, "field": self.field});
        if let (Some(seconds), Some(fields)) = (self.retry_after, error.as_object_mut()) {
            fields.insert("retry_after".to_owned(), seconds.into());
        }
        serde_json::json!({ "error": error })
    }
}

impl IntoResponse for OkyaError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Starts the simulator on a free loopback port.
pub async fn start(config: OkyaSimConfig, faults: Arc<Faults>) -> std::io::Result<Simulator> {
    start_on(LOOPBACK_ANY_PORT, config, faults).await
}

/// Starts the simulator on `addr`.
pub async fn start_on(
    addr: SocketAddr,
    config: OkyaSimConfig,
    faults: Arc<Faults>,
) -> std::io::Result<Simulator> {
    let state = Arc::new(OkyaState {
        api_key: config.api_key,
        otp_code: config.otp_code,
        auto_accept_delay_ms: config.auto_accept_delay_ms,
        courier: Arc::new(orders::Courier::new(
            config.webhook_url,
            config.webhook_secret,
            faults.clone(),
        )?),
        inner: Mutex::new(Inner {
            stores: catalog::stores(),
            products: catalog::products()
                .into_iter()
                .map(|p| (p.id.clone(), p))
                .collect(),
            ..Inner::default()
        }),
    });
    let api = Router::new()
        .route("/v1/stores", get(list_stores))
        .route("/v1/products", get(list_products))
        .route("/v1/carts", post(carts::create))
        .route("/v1/carts/{cart_id}", get(carts::get))
        .route(
            "/v1/carts/{cart_id}/lines",
            post(carts::add_lines).patch(carts::update_lines),
        )
        .route(
            "/v1/carts/{cart_id}/lines/remove",
            post(carts::remove_lines),
        )
        .route("/v1/orders", post(orders::create).get(orders::list))
        .route("/v1/orders/{order_id}", get(orders::get))
        .route(
            "/v1/orders/{order_id}/adjustments",
            post(orders::add_adjustment),
        )
        .route(
            "/v1/orders/{order_id}/payments",
            post(orders::record_payment),
        )
        .route("/v1/orders/{order_id}/cancel", post(orders::cancel))
        .route("/v1/orders/{order_id}/recall", post(orders::recall))
        .route("/auth/v1/accounts", post(auth::register))
        .route("/auth/v1/accounts/{account_id}", get(auth::get_account))
        .route(
            "/auth/v1/accounts/{account_id}/loyalty",
            axum::routing::put(auth::save_loyalty),
        )
        .route("/auth/v1/otp", post(auth::send_otp))
        .route("/auth/v1/otp/verify", post(auth::verify_otp))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state.clone());
    let sandbox = Router::new()
        .route("/_sandbox/outbox", get(auth::outbox))
        .route("/_sandbox/accounts", get(auth::accounts))
        .route("/_sandbox/orders", get(orders::ledger))
        .route(
            "/_sandbox/products/{product_id}",
            axum::routing::patch(edit_product),
        )
        .route("/_sandbox/orders/{order_id}/accept", post(orders::accept))
        .route("/_sandbox/orders/{order_id}/reject", post(orders::reject))
        .route("/_sandbox/orders/{order_id}/ready", post(orders::ready))
        .route(
            "/_sandbox/orders/{order_id}/complete",
            post(orders::complete),
        )
        .route("/_sandbox/webhooks", get(orders::webhooks))
        .route(
            "/_sandbox/stores/{store_id}",
            axum::routing::put(orders::set_store),
        )
        .with_state(state);
    crate::serve("okya", addr, api.merge(sandbox), faults).await
}

async fn authenticate(
    State(state): State<Arc<OkyaState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(state.api_key.as_str()) {
        return OkyaError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key",
        )
        .into_response();
    }
    next.run(request).await
}

#[derive(Deserialize)]
struct IdsQuery {
    ids: Option<String>,
}

fn split_ids(ids: &str) -> Vec<&str> {
    ids.split(',').filter(|s| !s.is_empty()).collect()
}

async fn list_stores(
    State(state): State<Arc<OkyaState>>,
    Query(query): Query<IdsQuery>,
) -> Json<serde_json::Value> {
    let inner = state.lock();
    let stores: Vec<&Store> = match &query.ids {
        Some(ids) => {
            let wanted = split_ids(ids);
            inner
                .stores
                .iter()
                .filter(|s| wanted.contains(&s.id.as_str()))
                .collect()
        }
        None => inner.stores.iter().collect(),
    };
    Json(serde_json::json!({ "stores": stores }))
}

async fn list_products(
    State(state): State<Arc<OkyaState>>,
    Query(query): Query<IdsQuery>,
) -> Result<Json<serde_json::Value>, OkyaError> {
    let Some(ids) = query.ids else {
        return Err(OkyaError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "ids is required",
        )
        .field("ids"));
    };
    let wanted = split_ids(&ids);
    if wanted.len() > 200 {
        return Err(OkyaError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "at most 200 ids",
        )
        .field("ids"));
    }
    let inner = state.lock();
    let products: Vec<&Product> = wanted
        .iter()
        .filter_map(|id| inner.products.get(*id))
        .collect();
    Ok(Json(serde_json::json!({ "products": products })))
}

/// What the store's menu editor may change on a product.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductEdit {
    name: Option<String>,
    available: Option<bool>,
}

/// `PATCH /_sandbox/products/{id}`: the menu editor renames a product or marks it sold
/// out, as a store does while orders are in flight; Okya announces it with `menu.updated`.
async fn edit_product(
    State(state): State<Arc<OkyaState>>,
    axum::extract::Path(product_id): axum::extract::Path<String>,
    Json(edit): Json<ProductEdit>,
) -> Result<Json<Product>, OkyaError> {
    let mut inner = state.lock();
    let product = inner.products.get_mut(&product_id).ok_or_else(|| {
        OkyaError::new(
            StatusCode::NOT_FOUND,
            "product_not_found",
            "no such product",
        )
    })?;
    if let Some(name) = edit.name {
        product.name = name;
    }
    if let Some(available) = edit.available {
        product.available = available;
    }
    let product = product.clone();
    orders::publish_menu(&mut inner, &state.courier, Vec::new(), vec![product_id]);
    Ok(Json(product))
}

/// Runs a write once per `Idempotency-Key`: a replay with the same request answers what
/// the first did; the same key with another request is refused.
pub(crate) fn idempotent(
    state: &OkyaState,
    headers: &HeaderMap,
    fingerprint: String,
    run: impl FnOnce(&mut Inner) -> Result<(StatusCode, serde_json::Value), OkyaError>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = state.lock();
    if let Some(key) = &key
        && let Some((seen, status, body)) = inner.idempotency.get(key)
    {
        if *seen != fingerprint {
            return OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request",
            )
            .into_response();
        }
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        return (status, Json(body.clone())).into_response();
    }
    let (status, body) = match run(&mut inner) {
        Ok(ok) => ok,
        Err(e) => (e.status, e.body()),
    };
    // Server errors are not stored, so a retry can succeed; refusals are, like Stripe does.
    if let Some(key) = key
        && !status.is_server_error()
    {
        inner
            .idempotency
            .insert(key, (fingerprint, status.as_u16(), body.clone()));
    }
    (status, Json(body)).into_response()
}
