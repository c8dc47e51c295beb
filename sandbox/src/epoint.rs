//! In-memory Epoint POS gateway, speaking `docs/upstreams/epoint.md`. Every location id
//! is known and online unless configured or toggled otherwise; an accepted injection
//! "prints" at once.
//!
//! It accepts only the configured key ([`EpointSimConfig::api_key`], by default
//! [`credentials::EPOINT_API_KEY`]). Admin routes:
//! - `GET /_sandbox/ledger`: injected orders, refused attempts and location overrides;
//! - `PUT /_sandbox/locations/{id}` `{"online": bool, "known"?: bool}`: takes a location's
//!   POS offline or back, or makes the location unknown.

use crate::{LOOPBACK_ANY_PORT, Simulator, credentials, faults::Faults, money::Currency};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

const MAX_KEY_LEN: usize = 255;
const MAX_EXTERNAL_ID_LEN: usize = 64;

/// Refusal codes (`{"error": {"code"}}`), as `docs/upstreams/epoint.md` lists them.
pub mod codes {
    /// 409: the location's POS is not connected; nothing was printed.
    pub const POS_OFFLINE: &str = "pos_offline";
    /// 404: no such location.
    pub const LOCATION_UNKNOWN: &str = "location_unknown";
    /// 422: the order does not add up or misses a field; `field` names it.
    pub const INVALID_ORDER: &str = "invalid_order";
    /// 422: this `Idempotency-Key` was first used with a different body.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency_key_reused";
    /// 400: the `Idempotency-Key` header is missing or longer than 255 characters.
    pub const IDEMPOTENCY_KEY_INVALID: &str = "idempotency_key_invalid";
    /// 409: this external id was already injected under another idempotency key.
    pub const DUPLICATE_ORDER: &str = "duplicate_order";
    /// 404 on `GET …/orders/{external_id}`: never injected.
    pub const ORDER_NOT_FOUND: &str = "order_not_found";
    /// 401: missing or wrong `X-Api-Key`.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 400: the body is not JSON.
    pub const INVALID_REQUEST: &str = "invalid_request";
}

/// Start-up behaviour of the simulator.
#[derive(Clone)]
pub struct EpointSimConfig {
    /// Locations whose POS refuses every injection with `pos_offline` (the sandbox store
    /// whose name contains "POS offline").
    pub offline_locations: Vec<String>,
    /// The `X-Api-Key` clients must present.
    pub api_key: String,
}

impl Default for EpointSimConfig {
    /// Every location online, and the sandbox key.
    fn default() -> Self {
        Self {
            offline_locations: Vec::new(),
            api_key: credentials::EPOINT_API_KEY.to_owned(),
        }
    }
}

impl std::fmt::Debug for EpointSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpointSimConfig")
            .field("offline_locations", &self.offline_locations)
            .finish_non_exhaustive()
    }
}

/// Starts the simulator on a free loopback port.
pub async fn start(config: EpointSimConfig, faults: Arc<Faults>) -> std::io::Result<Simulator> {
    start_on(LOOPBACK_ANY_PORT, config, faults).await
}

/// Starts the simulator on `addr`.
pub async fn start_on(
    addr: SocketAddr,
    config: EpointSimConfig,
    faults: Arc<Faults>,
) -> std::io::Result<Simulator> {
    let mut locations = BTreeMap::new();
    for id in config.offline_locations {
        locations.insert(
            id,
            LocationState {
                online: false,
                known: true,
            },
        );
    }
    let sim = Arc::new(Sim {
        api_key: config.api_key,
        state: Mutex::new(PosState {
            locations,
            ..PosState::default()
        }),
    });
    let router = Router::new()
        .route("/v1/locations/{location_id}/orders", post(inject))
        .route(
            "/v1/locations/{location_id}/orders/{external_id}",
            get(find_order),
        )
        .route("/v1/locations/{location_id}/status", get(status))
        .route("/_sandbox/ledger", get(ledger))
        .route("/_sandbox/locations/{location_id}", put(set_location))
        .with_state(sim);
    crate::serve("epoint", addr, router, faults).await
}

struct Sim {
    api_key: String,
    state: Mutex<PosState>,
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, PosState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|k| k == self.api_key)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct LocationState {
    online: bool,
    known: bool,
}

impl Default for LocationState {
    fn default() -> Self {
        Self {
            online: true,
            known: true,
        }
    }
}

#[derive(Default)]
struct PosState {
    /// Overrides only; a location not listed is known and online.
    locations: BTreeMap<String, LocationState>,
    orders: Vec<Ticket>,
    /// (location, idempotency key) → index in `orders`.
    by_key: HashMap<(String, String), usize>,
    refusals: Vec<Value>,
}

impl PosState {
    fn location(&self, id: &str) -> LocationState {
        self.locations.get(id).copied().unwrap_or_default()
    }

    fn find(&self, location_id: &str, external_id: &str) -> Option<&Ticket> {
        self.orders
            .iter()
            .find(|t| t.location_id == location_id && t.external_id == external_id)
    }
}

struct Ticket {
    ticket_id: String,
    location_id: String,
    external_id: String,
    order_number: String,
    idempotency_key: String,
    total: i64,
    currency: String,
    accepted_at: DateTime<Utc>,
    body: Value,
}

impl Ticket {
    fn receipt(&self) -> Value {
        json!({
            "ticket_id": self.ticket_id,
            "external_id": self.external_id,
            "location_id": self.location_id,
            "status": "accepted",
            "printed": true,
            "accepted_at": self.accepted_at,
        })
    }
}

fn error(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response {
    let mut err = json!({"code": code, "message": message});
    if let Some(field) = field {
        err["field"] = json!(field);
    }
    (status, Json(json!({"error": err}))).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        codes::UNAUTHORIZED,
        "missing or invalid X-Api-Key",
        None,
    )
}

fn location_unknown() -> Response {
    error(
        StatusCode::NOT_FOUND,
        codes::LOCATION_UNKNOWN,
        "no such location",
        None,
    )
}

// ---------------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct OrderIn {
    external_id: String,
    order_number: String,
    customer: CustomerIn,
    currency: String,
    #[serde(default)]
    lines: Vec<LineIn>,
    totals: TotalsIn,
}

#[derive(Deserialize)]
struct CustomerIn {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct LineIn {
    #[serde(default)]
    product_id: String,
    #[serde(default)]
    name: String,
    quantity: i64,
    unit_price: i64,
    #[serde(default)]
    modifiers: Vec<ModifierIn>,
}

#[derive(Deserialize)]
struct ModifierIn {
    price: i64,
}

#[derive(Deserialize)]
struct TotalsIn {
    subtotal: i64,
    discount: i64,
    tax: i64,
    total: i64,
}

type Invalid = (String, String);

fn invalid(field: impl Into<String>, message: &str) -> Invalid {
    (field.into(), message.to_owned())
}

/// Checks what a POS would refuse to print; returns the first faulty field.
fn validate(order: &OrderIn) -> Result<(), Invalid> {
    if order.external_id.is_empty() || order.external_id.len() > MAX_EXTERNAL_ID_LEN {
        return Err(invalid("external_id", "must be 1 to 64 characters"));
    }
    if order.order_number.is_empty() {
        return Err(invalid("order_number", "is required"));
    }
    if order.customer.name.trim().is_empty() {
        return Err(invalid("customer.name", "is required"));
    }
    if Currency::parse(&order.currency).is_none() {
        return Err(invalid("currency", "is not an ISO 4217 code"));
    }
    if order.lines.is_empty() {
        return Err(invalid("lines", "an order needs at least one line"));
    }
    let mut subtotal: i64 = 0;
    for (i, line) in order.lines.iter().enumerate() {
        if line.product_id.is_empty() {
            return Err(invalid(format!("lines[{i}].product_id"), "is required"));
        }
        if line.name.is_empty() {
            return Err(invalid(format!("lines[{i}].name"), "is required"));
        }
        if !(1..=99).contains(&line.quantity) {
            return Err(invalid(format!("lines[{i}].quantity"), "must be 1 to 99"));
        }
        if line.unit_price < 0 {
            return Err(invalid(
                format!("lines[{i}].unit_price"),
                "must not be negative",
            ));
        }
        let mut unit = line.unit_price;
        for (j, m) in line.modifiers.iter().enumerate() {
            if m.price < 0 {
                return Err(invalid(
                    format!("lines[{i}].modifiers[{j}].price"),
                    "must not be negative",
                ));
            }
            unit = unit
                .checked_add(m.price)
                .ok_or_else(|| invalid(format!("lines[{i}]"), "amount overflow"))?;
        }
        subtotal = unit
            .checked_mul(line.quantity)
            .and_then(|l| subtotal.checked_add(l))
            .ok_or_else(|| invalid(format!("lines[{i}]"), "amount overflow"))?;
    }
    let t = &order.totals;
    if t.subtotal != subtotal {
        return Err(invalid(
            "totals.subtotal",
            "is not Σ (unit_price + modifier prices) × quantity",
        ));
    }
    if t.discount < 0 || t.discount > t.subtotal {
        return Err(invalid(
            "totals.discount",
            "must be between 0 and the subtotal",
        ));
    }
    if t.tax < 0 {
        return Err(invalid("totals.tax", "must not be negative"));
    }
    if t.subtotal
        .checked_sub(t.discount)
        .and_then(|v| v.checked_add(t.tax))
        != Some(t.total)
    {
        return Err(invalid("totals.total", "is not subtotal - discount + tax"));
    }
    Ok(())
}

struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

/// Decides whether the location's POS takes this order at all.
fn admit(location: LocationState, raw: &Value) -> Result<OrderIn, Refusal> {
    let refusal = |status, code, message: &str, field: Option<String>| Refusal {
        status,
        code,
        message: message.to_owned(),
        field,
    };
    if !location.known {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            codes::LOCATION_UNKNOWN,
            "no such location",
            None,
        ));
    }
    if !location.online {
        return Err(refusal(
            StatusCode::CONFLICT,
            codes::POS_OFFLINE,
            "the location's POS is offline; nothing was printed",
            None,
        ));
    }
    let order: OrderIn = serde_json::from_value(raw.clone()).map_err(|e| {
        refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::INVALID_ORDER,
            &e.to_string(),
            None,
        )
    })?;
    validate(&order).map_err(|(field, message)| {
        refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::INVALID_ORDER,
            &message,
            Some(field),
        )
    })?;
    Ok(order)
}

async fn inject(
    State(sim): State<Arc<Sim>>,
    Path(location_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN);
    let Some(key) = key else {
        return error(
            StatusCode::BAD_REQUEST,
            codes::IDEMPOTENCY_KEY_INVALID,
            "an Idempotency-Key header of 1 to 255 characters is required",
            Some("Idempotency-Key"),
        );
    };
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                &e.to_string(),
                None,
            );
        }
    };
    let external_id = raw["external_id"].as_str().unwrap_or_default().to_owned();
    let mut state = sim.lock();
    if let Some(&index) = state.by_key.get(&(location_id.clone(), key.clone())) {
        let ticket = &state.orders[index];
        if ticket.body != raw {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was used with a different order",
                None,
            );
        }
        let mut response = (StatusCode::CREATED, Json(ticket.receipt())).into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return response;
    }

    let admitted = admit(state.location(&location_id), &raw).and_then(|order| {
        match state.find(&location_id, &order.external_id) {
            Some(existing) => Err(Refusal {
                status: StatusCode::CONFLICT,
                code: codes::DUPLICATE_ORDER,
                message: format!(
                    "order already injected as ticket {} under another Idempotency-Key",
                    existing.ticket_id
                ),
                field: Some("external_id".to_owned()),
            }),
            None => Ok(order),
        }
    });
    let order = match admitted {
        Ok(order) => order,
        Err(refusal) => {
            // Recorded for tests, but not stored under the key: the same key may be tried
            // again once the cause is gone.
            state.refusals.push(json!({
                "location_id": location_id,
                "external_id": external_id,
                "idempotency_key": key,
                "code": refusal.code,
                "at": Utc::now(),
            }));
            return error(
                refusal.status,
                refusal.code,
                &refusal.message,
                refusal.field.as_deref(),
            );
        }
    };
    let ticket = Ticket {
        ticket_id: format!("tkt_{:06}", state.orders.len() + 1),
        location_id: location_id.clone(),
        external_id: order.external_id,
        order_number: order.order_number,
        idempotency_key: key.clone(),
        total: order.totals.total,
        currency: order.currency,
        accepted_at: Utc::now(),
        body: raw,
    };
    let receipt = ticket.receipt();
    state.orders.push(ticket);
    let index = state.orders.len() - 1;
    state.by_key.insert((location_id, key), index);
    (StatusCode::CREATED, Json(receipt)).into_response()
}

async fn find_order(
    State(sim): State<Arc<Sim>>,
    Path((location_id, external_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let state = sim.lock();
    if !state.location(&location_id).known {
        return location_unknown();
    }
    match state.find(&location_id, &external_id) {
        Some(ticket) => (StatusCode::OK, Json(ticket.receipt())).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            codes::ORDER_NOT_FOUND,
            "no order with this external id at this location",
            None,
        ),
    }
}

async fn status(
    State(sim): State<Arc<Sim>>,
    Path(location_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let location = sim.lock().location(&location_id);
    if !location.known {
        return location_unknown();
    }
    Json(json!({
        "location_id": location_id,
        "online": location.online,
        "status": if location.online { "online" } else { "offline" },
        "checked_at": Utc::now(),
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// Admin
// ---------------------------------------------------------------------------------------

async fn ledger(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let state = sim.lock();
    let orders: Vec<Value> = state
        .orders
        .iter()
        .map(|t| {
            json!({
                "ticket_id": t.ticket_id,
                "location_id": t.location_id,
                "external_id": t.external_id,
                "order_number": t.order_number,
                "idempotency_key": t.idempotency_key,
                "total": t.total,
                "currency": t.currency,
                "accepted_at": t.accepted_at,
            })
        })
        .collect();
    Json(json!({
        "orders": orders,
        "refusals": state.refusals,
        "locations": state.locations,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationUpdate {
    online: bool,
    #[serde(default)]
    known: Option<bool>,
}

async fn set_location(
    State(sim): State<Arc<Sim>>,
    Path(location_id): Path<String>,
    Json(update): Json<LocationUpdate>,
) -> Json<Value> {
    let mut state = sim.lock();
    let mut location = state.location(&location_id);
    location.online = update.online;
    if let Some(known) = update.known {
        location.known = known;
    }
    state.locations.insert(location_id.clone(), location);
    Json(json!({"location_id": location_id, "online": location.online, "known": location.known}))
}
