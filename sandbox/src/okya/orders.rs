//! Okya orders, the store's order manager, and `order.updated` webhooks to the app.
//!
//! - `/v1/orders…`: submit a cart, read orders, adjustments, payments, cancel and recall,
//!   with every check of Part 2 of `docs/upstreams/okya.md`, in its order.
//! - The order manager: a paid order is accepted after `auto_accept_delay_ms` (0 = never);
//!   `POST /_sandbox/orders/{id}/accept | reject | ready | complete` act on demand.
//! - Every change (`version + 1`) emits an `order.updated` event. Each order has its own
//!   delivery queue, so one order's events reach the app in version order, signed with
//!   `X-Okya-Signature` and retried (0.5 s, doubling, at most 6 attempts).
//! - `GET /_sandbox/orders` and `GET /_sandbox/webhooks` are the ledgers tests read.

use super::wire::{
    Adjustment, Approval, Cancellation, CancellationKind, Card, CreateOrder, Fulfilment,
    MENU_UPDATED, MenuEvent, MenuEventData, NewAdjustment, NewPayment, ORDER_UPDATED, Order,
    OrderEvent, OrderEventData, OrderState, PaymentRecord, PaymentRecordStatus, Reason, WireMoney,
    codes,
};
use super::{Inner, OkyaError, OkyaState, idempotent};
use crate::{faults::WebhookFate, signature, unix_now};
use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};
use tokio::sync::mpsc;

/// The first order number of every store.
const FIRST_NUMBER: u64 = 101;
const MAX_IDS: usize = 200;
const MAX_KEY_CHARS: usize = 255;
const MAX_REF_CHARS: usize = 128;
const MAX_DESCRIPTION_CHARS: usize = 200;
const MAX_REASON_CHARS: usize = 500;
/// Webhook delivery: attempts per event, the first retry delay (doubling), and how long
/// one attempt may take.
const DELIVERY_ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// State

/// The orders and their events, inside the simulator's one lock.
#[derive(Default)]
pub(crate) struct OrdersState {
    /// In creation order.
    orders: Vec<Order>,
    index: HashMap<String, usize>,
    /// Cart id → order id: one order per cart, and a cart with an order is frozen.
    by_cart: HashMap<String, String>,
    /// Store id → the last order number it gave.
    numbers: HashMap<String, u64>,
    events: Vec<EventRecord>,
    /// Order id → its delivery queue. Events are queued under the lock, so in version order.
    queues: HashMap<String, mpsc::UnboundedSender<Outgoing>>,
}

impl OrdersState {
    /// Whether the cart has been submitted as an order (its lines are then frozen).
    pub(crate) fn has_order_for_cart(&self, cart_id: &str) -> bool {
        self.by_cart.contains_key(cart_id)
    }

    fn find(&self, order_id: &str) -> Option<&Order> {
        self.index.get(order_id).and_then(|i| self.orders.get(*i))
    }

    fn put(&mut self, order: Order) {
        match self.index.get(&order.id) {
            Some(i) => {
                if let Some(slot) = self.orders.get_mut(*i) {
                    *slot = order;
                }
            }
            None => {
                self.index.insert(order.id.clone(), self.orders.len());
                self.by_cart.insert(order.cart_id.clone(), order.id.clone());
                self.orders.push(order);
            }
        }
    }
}

/// An event emitted, whether or not it is delivered.
#[derive(Clone, Serialize)]
struct EventRecord {
    id: String,
    r#type: &'static str,
    order_id: String,
    version: i64,
    created_at: DateTime<Utc>,
}

/// One event on its way to the app.
struct Outgoing {
    event_type: &'static str,
    event_id: String,
    order_id: String,
    version: i64,
    body: String,
}

/// One delivery attempt, as `GET /_sandbox/webhooks` lists it.
#[derive(Clone, Serialize)]
struct Delivery {
    event_id: String,
    r#type: &'static str,
    order_id: String,
    version: i64,
    attempt: u32,
    /// The HTTP status the app answered, or `null` when the request failed.
    status: Option<u16>,
    /// Why the request failed (connection refused, timeout), when it did.
    error: Option<String>,
    delivered: bool,
    at: DateTime<Utc>,
}

/// Sends the webhooks: one shared HTTP client, the target and the signing secret.
pub(crate) struct Courier {
    http: reqwest::Client,
    url: Option<String>,
    secret: String,
    deliveries: Mutex<Vec<Delivery>>,
    /// The simulator's fault knobs: under chaos, a webhook may be lost, sent twice or
    /// delayed past the events that follow it.
    faults: Arc<crate::faults::Faults>,
}

impl Courier {
    pub(crate) fn new(
        url: Option<String>,
        secret: String,
        faults: Arc<crate::faults::Faults>,
    ) -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            http,
            url,
            secret,
            deliveries: Mutex::new(Vec::new()),
            faults,
        })
    }

    fn log(&self, delivery: Delivery) {
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(delivery);
    }

    /// Delivers one event, retrying until the app answers 2xx or the attempts run out.
    async fn deliver(&self, url: &str, event: &Outgoing) {
        let mut wait = FIRST_RETRY;
        for attempt in 1..=DELIVERY_ATTEMPTS {
            let signed = signature::header(&self.secret, unix_now(), event.body.as_bytes());
            let sent = self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .header("User-Agent", "Okya-Webhooks/1.0")
                .header("X-Okya-Event-Id", &event.event_id)
                .header("X-Okya-Event-Type", event.event_type)
                .header("X-Okya-Signature", signed)
                .body(event.body.clone())
                .send()
                .await;
            let (status, error) = match sent {
                Ok(response) => (Some(response.status().as_u16()), None),
                Err(e) => (None, Some(e.without_url().to_string())),
            };
            let delivered = status.is_some_and(|s| (200..300).contains(&s));
            self.log(Delivery {
                event_id: event.event_id.clone(),
                r#type: event.event_type,
                order_id: event.order_id.clone(),
                version: event.version,
                attempt,
                status,
                error,
                delivered,
                at: Utc::now(),
            });
            if delivered {
                return;
            }
            tracing::debug!(event = %event.event_id, ?status, attempt, "okya webhook not accepted");
            if attempt < DELIVERY_ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        tracing::warn!(event = %event.event_id, "okya webhook not delivered; giving up");
    }
}

/// One order's queue: its events go out one after the other, in version order, unless
/// the fault knobs lose, repeat or delay one (a delayed event leaves the queue and goes
/// out on its own, after the ones behind it).
async fn run_queue(
    courier: Arc<Courier>,
    url: String,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(event) = queue.recv().await {
        match courier.faults.webhook_fate() {
            WebhookFate::Deliver => courier.deliver(&url, &event).await,
            WebhookFate::Lose => {
                tracing::debug!(event = %event.event_id, "sandbox fault: okya webhook lost");
            }
            WebhookFate::Duplicate => {
                courier.deliver(&url, &event).await;
                courier.deliver(&url, &event).await;
            }
            WebhookFate::Delay(wait) => {
                let (courier, url) = (courier.clone(), url.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    courier.deliver(&url, &event).await;
                });
            }
        }
    }
}

/// Records an `order.updated` event for `order` and queues its delivery.
fn publish(inner: &mut Inner, courier: &Arc<Courier>, order: &Order) {
    let event = OrderEvent {
        id: inner.next_id("evt"),
        r#type: ORDER_UPDATED.to_owned(),
        created_at: Utc::now(),
        data: OrderEventData {
            order: order.clone(),
        },
    };
    inner.orders.events.push(EventRecord {
        id: event.id.clone(),
        r#type: ORDER_UPDATED,
        order_id: order.id.clone(),
        version: order.version,
        created_at: event.created_at,
    });
    let Some(url) = courier.url.clone() else {
        return;
    };
    let outgoing = Outgoing {
        event_type: ORDER_UPDATED,
        event_id: event.id.clone(),
        order_id: order.id.clone(),
        version: order.version,
        body: serde_json::to_string(&event).unwrap_or_default(),
    };
    let queue = inner
        .orders
        .queues
        .entry(order.id.clone())
        .or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run_queue(courier.clone(), url, receiver));
            sender
        });
    if queue.send(outgoing).is_err() {
        tracing::warn!(order_id = %order.id, "okya webhook queue closed");
    }
}

/// Records a `menu.updated` event naming what changed and sends it. Menu events are not
/// about an order: their `order_id` in the ledgers is empty and their `version` 0, and each
/// goes out on its own (no queue: the app only drops its copy of the catalogue).
pub(super) fn publish_menu(
    inner: &mut Inner,
    courier: &Arc<Courier>,
    store_ids: Vec<String>,
    product_ids: Vec<String>,
) {
    let event = MenuEvent {
        id: inner.next_id("evt"),
        r#type: MENU_UPDATED.to_owned(),
        created_at: Utc::now(),
        data: MenuEventData {
            store_ids,
            product_ids,
        },
    };
    inner.orders.events.push(EventRecord {
        id: event.id.clone(),
        r#type: MENU_UPDATED,
        order_id: String::new(),
        version: 0,
        created_at: event.created_at,
    });
    let Some(url) = courier.url.clone() else {
        return;
    };
    let outgoing = Outgoing {
        event_type: MENU_UPDATED,
        event_id: event.id.clone(),
        order_id: String::new(),
        version: 0,
        body: serde_json::to_string(&event).unwrap_or_default(),
    };
    let courier = courier.clone();
    tokio::spawn(async move { courier.deliver(&url, &outgoing).await });
}

/// Stores a changed order as a new version and announces it.
fn save(inner: &mut Inner, courier: &Arc<Courier>, mut order: Order) -> Order {
    order.version += 1;
    order.updated_at = Utc::now();
    inner.orders.put(order.clone());
    publish(inner, courier, &order);
    order
}

// ---------------------------------------------------------------------------------------
// Requests

fn bad_request(field: Option<&str>, message: impl Into<String>) -> OkyaError {
    let error = OkyaError::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message);
    match field {
        Some(field) => error.field(field),
        None => error,
    }
}

fn order_not_found(order_id: &str) -> OkyaError {
    OkyaError::new(
        StatusCode::NOT_FOUND,
        codes::ORDER_NOT_FOUND,
        format!("no order {order_id}"),
    )
}

fn invalid_state(message: impl Into<String>) -> OkyaError {
    OkyaError::new(StatusCode::CONFLICT, codes::INVALID_STATE, message)
}

/// Order writes require an `Idempotency-Key` of 1–255 characters.
fn require_key(headers: &HeaderMap) -> Result<(), OkyaError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Err(bad_request(
            Some("Idempotency-Key"),
            "Idempotency-Key is required on order writes (1-255 characters)",
        ));
    }
    Ok(())
}

/// The body as a JSON object, refused in Okya's error shape (not as plain text).
fn object(body: &Bytes) -> Result<Map<String, Value>, OkyaError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_request(None, "the body must be a JSON object")),
        Err(e) => Err(bad_request(None, format!("the body is not JSON: {e}"))),
    }
}

/// A string field of 1–`max` characters.
fn text(body: &Map<String, Value>, field: &str, max: usize) -> Result<String, OkyaError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Ok(s.clone()),
        _ => Err(bad_request(
            Some(field),
            format!("{field} must be a string of 1-{max} characters"),
        )),
    }
}

/// A money object `{"amount": <integer>, "currency": "<code>"}`.
fn money(body: &Map<String, Value>, field: &str) -> Result<WireMoney, OkyaError> {
    let value = body.get(field).cloned().unwrap_or(Value::Null);
    serde_json::from_value::<WireMoney>(value).map_err(|_| {
        bad_request(
            Some(field),
            format!("{field} must be {{\"amount\": <integer minor units>, \"currency\": \"…\"}}"),
        )
    })
}

fn parse_create(body: &Bytes) -> Result<CreateOrder, OkyaError> {
    let body = object(body)?;
    Ok(CreateOrder {
        cart_id: text(&body, "cart_id", MAX_REF_CHARS)?,
        customer_ref: text(&body, "customer_ref", MAX_REF_CHARS)?,
    })
}

fn parse_adjustment(body: &Bytes) -> Result<NewAdjustment, OkyaError> {
    let body = object(body)?;
    let source = text(&body, "source", MAX_REF_CHARS)?;
    if source != "sessionm" {
        return Err(bad_request(Some("source"), "source must be sessionm"));
    }
    Ok(NewAdjustment {
        source,
        reference: text(&body, "reference", MAX_REF_CHARS)?,
        description: text(&body, "description", MAX_DESCRIPTION_CHARS)?,
        amount: money(&body, "amount")?,
    })
}

fn parse_payment(body: &Bytes) -> Result<NewPayment, OkyaError> {
    let body = object(body)?;
    let provider = text(&body, "provider", MAX_REF_CHARS)?;
    // `voucher` pays an order a reward made free; it carries no money.
    if provider != "stripe" && provider != "voucher" {
        return Err(bad_request(
            Some("provider"),
            "provider must be stripe or voucher",
        ));
    }
    let reference = text(&body, "reference", MAX_KEY_CHARS)?;
    let amount = money(&body, "amount")?;
    if provider == "voucher" && amount.amount != 0 {
        return Err(bad_request(
            Some("amount"),
            "a voucher payment carries no money",
        ));
    }
    let status = match body.get("status").and_then(Value::as_str) {
        Some("authorized") => PaymentRecordStatus::Authorized,
        Some("captured") => PaymentRecordStatus::Captured,
        _ => {
            return Err(bad_request(
                Some("status"),
                "status must be authorized or captured",
            ));
        }
    };
    let card = match body.get("card") {
        None | Some(Value::Null) => None,
        Some(Value::Object(card)) => {
            let brand = text(card, "brand", 32).map_err(|_| {
                bad_request(Some("card.brand"), "card.brand must be 1-32 characters")
            })?;
            let last4 = match card.get("last4") {
                Some(Value::String(s)) if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.clone()
                }
                _ => {
                    return Err(bad_request(
                        Some("card.last4"),
                        "card.last4 must be 4 digits",
                    ));
                }
            };
            Some(Card { brand, last4 })
        }
        Some(_) => return Err(bad_request(Some("card"), "card must be an object")),
    };
    Ok(NewPayment {
        provider,
        reference,
        amount,
        status,
        card,
    })
}

fn parse_reason(body: &Bytes) -> Result<Reason, OkyaError> {
    let body = object(body)?;
    Ok(Reason {
        reason: text(&body, "reason", MAX_REASON_CHARS)?,
    })
}

/// Validation runs before the idempotency check, and its refusals are not stored.
fn validated<T>(
    headers: &HeaderMap,
    body: &Bytes,
    parse: fn(&Bytes) -> Result<T, OkyaError>,
) -> Result<T, OkyaError> {
    require_key(headers)?;
    parse(body)
}

fn fingerprint<T: Serialize>(route: &str, order_id: &str, body: &T) -> String {
    format!(
        "{route} {order_id} {}",
        serde_json::to_string(body).unwrap_or_default()
    )
}

fn ok(status: StatusCode, order: &Order) -> Result<(StatusCode, Value), OkyaError> {
    Ok((status, serde_json::to_value(order).unwrap_or_default()))
}

/// Tax on `subtotal − discount` at the store's rate, half away from zero; as for carts.
fn recompute(order: &mut Order, tax_rate_bps: i64) {
    let money = |amount: i64| WireMoney {
        amount,
        currency: order.currency.clone(),
    };
    let discount: i64 = order.adjustments.iter().map(|a| a.amount.amount).sum();
    let taxable = order.subtotal.amount - discount;
    let scaled = i128::from(taxable) * i128::from(tax_rate_bps);
    let half = if scaled < 0 { -5_000 } else { 5_000 };
    let tax = i64::try_from((scaled + half) / 10_000).unwrap_or(i64::MAX);
    order.discount = money(discount);
    order.tax = money(tax);
    order.total = money(taxable + tax);
}

fn tax_rate(inner: &Inner, store_id: &str) -> i64 {
    inner
        .stores
        .iter()
        .find(|s| s.id == store_id)
        .map_or(0, |s| s.tax_rate_bps)
}

// ---------------------------------------------------------------------------------------
// /v1/orders

/// `POST /v1/orders`: submits a cart.
pub(super) async fn create(
    State(state): State<Arc<OkyaState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let input = match validated(&headers, &body, parse_create) {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    let print = fingerprint("POST /v1/orders", "", &input);
    let courier = state.courier.clone();
    idempotent(&state, &headers, print, move |inner| {
        let cart = inner
            .carts
            .get(&input.cart_id)
            .ok_or_else(|| {
                OkyaError::new(
                    StatusCode::NOT_FOUND,
                    codes::CART_NOT_FOUND,
                    format!("no cart {}", input.cart_id),
                )
                .field("cart_id")
            })?
            .clone();
        if inner.orders.has_order_for_cart(&cart.id) {
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::CART_ALREADY_ORDERED,
                "this cart has already been ordered",
            )
            .field("cart_id"));
        }
        let store = inner
            .stores
            .iter()
            .find(|s| s.id == cart.store_id)
            .cloned()
            .ok_or_else(|| {
                OkyaError::new(
                    StatusCode::NOT_FOUND,
                    codes::STORE_NOT_FOUND,
                    "no such store",
                )
            })?;
        if !store.is_open {
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::STORE_CLOSED,
                format!("{} is closed", store.name),
            ));
        }
        if cart.lines.is_empty() {
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::CART_EMPTY,
                "the cart has no lines",
            )
            .field("cart_id"));
        }
        for (i, line) in cart.lines.iter().enumerate() {
            let product = inner
                .products
                .get(&line.product_id)
                .filter(|p| p.available && store.product_ids.contains(&p.id))
                .ok_or_else(|| {
                    OkyaError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        codes::PRODUCT_UNAVAILABLE,
                        format!("{} is not available", line.product_id),
                    )
                    .field(format!("lines[{i}].product_id"))
                })?;
            for option_id in &line.modifier_option_ids {
                let available = product
                    .modifier_groups
                    .iter()
                    .flat_map(|g| g.options.iter())
                    .any(|o| &o.id == option_id && o.available);
                if !available {
                    return Err(OkyaError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        codes::PRODUCT_UNAVAILABLE,
                        format!("{option_id} is not available"),
                    )
                    .field(format!("lines[{i}].modifier_option_ids")));
                }
            }
        }
        let number = {
            let last = inner
                .orders
                .numbers
                .entry(store.id.clone())
                .or_insert(FIRST_NUMBER - 1);
            *last += 1;
            last.to_string()
        };
        let now = Utc::now();
        let zero = WireMoney {
            amount: 0,
            currency: cart.currency.clone(),
        };
        let mut order = Order {
            id: inner.next_id("ord"),
            number,
            cart_id: cart.id.clone(),
            store_id: store.id.clone(),
            customer_ref: input.customer_ref.clone(),
            status: OrderState::Open,
            approval: Approval::NeedsApproval,
            fulfilment: Fulfilment::Received,
            currency: cart.currency.clone(),
            lines: cart.lines.clone(),
            subtotal: cart.subtotal.clone(),
            discount: zero.clone(),
            tax: zero.clone(),
            total: zero,
            adjustments: Vec::new(),
            payment: None,
            cancellation: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        recompute(&mut order, store.tax_rate_bps);
        inner.orders.put(order.clone());
        publish(inner, &courier, &order);
        ok(StatusCode::CREATED, &order)
    })
}

/// `GET /v1/orders/{id}`.
pub(super) async fn get(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
) -> Response {
    let inner = state.lock();
    match inner.orders.find(&order_id) {
        Some(order) => Json(order).into_response(),
        None => order_not_found(&order_id).into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct IdsQuery {
    ids: Option<String>,
}

/// `GET /v1/orders?ids=a,b`: in request order, unknown ids left out, at most 200 ids.
pub(super) async fn list(
    State(state): State<Arc<OkyaState>>,
    Query(query): Query<IdsQuery>,
) -> Response {
    let Some(ids) = query.ids else {
        return bad_request(Some("ids"), "ids is required").into_response();
    };
    let wanted = super::split_ids(&ids);
    if wanted.len() > MAX_IDS {
        return bad_request(Some("ids"), "at most 200 ids").into_response();
    }
    let inner = state.lock();
    let orders: Vec<&Order> = wanted
        .iter()
        .filter_map(|id| inner.orders.find(id))
        .collect();
    Json(serde_json::json!({ "orders": orders })).into_response()
}

/// `POST /v1/orders/{id}/adjustments`: a loyalty discount, before payment.
pub(super) async fn add_adjustment(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let input = match validated(&headers, &body, parse_adjustment) {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    let print = fingerprint("POST /v1/orders/{id}/adjustments", &order_id, &input);
    let courier = state.courier.clone();
    idempotent(&state, &headers, print, move |inner| {
        let mut order = inner
            .orders
            .find(&order_id)
            .cloned()
            .ok_or_else(|| order_not_found(&order_id))?;
        if let Some(seen) = order
            .adjustments
            .iter()
            .find(|a| a.reference == input.reference)
        {
            let same = seen.source == input.source
                && seen.description == input.description
                && seen.amount == input.amount;
            if same {
                return ok(StatusCode::OK, &order);
            }
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::ADJUSTMENT_REFERENCE_REUSED,
                "this reference was used for another adjustment",
            )
            .field("reference"));
        }
        if order.status != OrderState::Open
            || order.approval != Approval::NeedsApproval
            || order.payment.is_some()
        {
            return Err(invalid_state(
                "adjustments are only allowed on an open order before payment",
            ));
        }
        if input.amount.amount <= 0 || input.amount.currency != order.currency {
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::INVALID_AMOUNT,
                format!("the amount must be positive and in {}", order.currency),
            )
            .field("amount"));
        }
        if order.discount.amount.saturating_add(input.amount.amount) > order.subtotal.amount {
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::ADJUSTMENT_TOO_LARGE,
                "the discount would exceed the subtotal",
            )
            .field("amount"));
        }
        let id = inner.next_id("adj");
        order.adjustments.push(Adjustment {
            id,
            source: input.source.clone(),
            reference: input.reference.clone(),
            description: input.description.clone(),
            amount: input.amount.clone(),
            created_at: Utc::now(),
        });
        let rate = tax_rate(inner, &order.store_id);
        recompute(&mut order, rate);
        let order = save(inner, &courier, order);
        ok(StatusCode::OK, &order)
    })
}

/// `POST /v1/orders/{id}/payments`: the payment we took, which puts the order in front of
/// the store; the same reference may later move from `authorized` to `captured`.
pub(super) async fn record_payment(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let input = match validated(&headers, &body, parse_payment) {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    let print = fingerprint("POST /v1/orders/{id}/payments", &order_id, &input);
    let sim = Arc::downgrade(&state);
    let courier = state.courier.clone();
    let delay = state.auto_accept_delay_ms;
    idempotent(&state, &headers, print, move |inner| {
        let mut order = inner
            .orders
            .find(&order_id)
            .cloned()
            .ok_or_else(|| order_not_found(&order_id))?;
        if order.status == OrderState::Canceled {
            return Err(invalid_state("the order is canceled"));
        }
        match &order.payment {
            None if order.status != OrderState::Open
                || order.approval != Approval::NeedsApproval =>
            {
                return Err(invalid_state("the order no longer awaits a payment"));
            }
            None => {}
            Some(recorded) if recorded.reference != input.reference => {
                return Err(OkyaError::new(
                    StatusCode::CONFLICT,
                    codes::PAYMENT_EXISTS,
                    "another payment is already recorded",
                )
                .field("reference"));
            }
            Some(recorded)
                if recorded.status == PaymentRecordStatus::Captured
                    && input.status == PaymentRecordStatus::Authorized =>
            {
                return Err(
                    invalid_state("a captured payment cannot go back to authorized")
                        .field("status"),
                );
            }
            Some(_) => {}
        }
        if input.amount != order.total {
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::PAYMENT_AMOUNT_MISMATCH,
                format!(
                    "the amount must be the order's total, {} {}",
                    order.total.amount, order.total.currency
                ),
            )
            .field("amount"));
        }
        match &mut order.payment {
            // The same payment again: nothing changes (the card is the first one's).
            Some(recorded) if recorded.status == input.status => ok(StatusCode::OK, &order),
            Some(recorded) => {
                recorded.status = input.status;
                let order = save(inner, &courier, order);
                ok(StatusCode::OK, &order)
            }
            None => {
                order.payment = Some(PaymentRecord {
                    provider: input.provider.clone(),
                    reference: input.reference.clone(),
                    amount: input.amount.clone(),
                    status: input.status,
                    card: input.card.clone(),
                    recorded_at: Utc::now(),
                });
                let order = save(inner, &courier, order);
                if delay > 0 {
                    schedule_accept(sim, order.id.clone(), Duration::from_millis(delay));
                }
                ok(StatusCode::OK, &order)
            }
        }
    })
}

/// `POST /v1/orders/{id}/cancel`: before acceptance.
pub(super) async fn cancel(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    void(state, order_id, headers, body, CancellationKind::Cancelled).await
}

/// `POST /v1/orders/{id}/recall`: after acceptance, when the POS could not take it.
pub(super) async fn recall(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    void(state, order_id, headers, body, CancellationKind::Recalled).await
}

async fn void(
    state: Arc<OkyaState>,
    order_id: String,
    headers: HeaderMap,
    body: Bytes,
    kind: CancellationKind,
) -> Response {
    let input = match validated(&headers, &body, parse_reason) {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    let route = match kind {
        CancellationKind::Recalled => "POST /v1/orders/{id}/recall",
        _ => "POST /v1/orders/{id}/cancel",
    };
    let print = fingerprint(route, &order_id, &input);
    let courier = state.courier.clone();
    idempotent(&state, &headers, print, move |inner| {
        let mut order = inner
            .orders
            .find(&order_id)
            .cloned()
            .ok_or_else(|| order_not_found(&order_id))?;
        if order.status == OrderState::Canceled
            && order.cancellation.as_ref().is_some_and(|c| c.kind == kind)
        {
            return ok(StatusCode::OK, &order);
        }
        let allowed = order.status == OrderState::Open
            && match kind {
                CancellationKind::Recalled => {
                    order.approval == Approval::Approved
                        && matches!(
                            order.fulfilment,
                            Fulfilment::InPreparation | Fulfilment::ReadyForPickup
                        )
                }
                _ => order.approval == Approval::NeedsApproval,
            };
        if !allowed {
            return Err(invalid_state(match kind {
                CancellationKind::Recalled => "only an accepted, uncollected order can be recalled",
                _ => "only an order the store has not decided on can be cancelled",
            }));
        }
        order.status = OrderState::Canceled;
        order.fulfilment = Fulfilment::Void;
        order.cancellation = Some(Cancellation {
            kind,
            reason: input.reason.clone(),
            at: Utc::now(),
        });
        let order = save(inner, &courier, order);
        ok(StatusCode::OK, &order)
    })
}

// ---------------------------------------------------------------------------------------
// The order manager

#[derive(Clone, Copy)]
enum StoreAction {
    Accept,
    Reject,
    Ready,
    Complete,
}

/// Applies a store action to the order, or says why it cannot be applied now.
fn act(order: &mut Order, action: StoreAction, reason: Option<String>) -> Result<(), OkyaError> {
    let open = order.status == OrderState::Open;
    let awaiting = open && order.approval == Approval::NeedsApproval && order.payment.is_some();
    match action {
        StoreAction::Accept if awaiting => {
            order.approval = Approval::Approved;
            order.fulfilment = Fulfilment::InPreparation;
        }
        StoreAction::Reject if awaiting => {
            order.approval = Approval::NotApproved;
            order.fulfilment = Fulfilment::Void;
            order.status = OrderState::Canceled;
            order.cancellation = Some(Cancellation {
                kind: CancellationKind::Rejected,
                reason: reason.unwrap_or_else(|| "rejected by the store".to_owned()),
                at: Utc::now(),
            });
        }
        StoreAction::Ready if open && order.fulfilment == Fulfilment::InPreparation => {
            order.fulfilment = Fulfilment::ReadyForPickup;
        }
        StoreAction::Complete if open && order.fulfilment == Fulfilment::ReadyForPickup => {
            order.fulfilment = Fulfilment::Completed;
            order.status = OrderState::Completed;
        }
        StoreAction::Accept | StoreAction::Reject => {
            return Err(invalid_state(
                "only an open, paid order awaiting approval can be accepted or rejected",
            ));
        }
        StoreAction::Ready => {
            return Err(invalid_state("only an order in preparation can be ready"));
        }
        StoreAction::Complete => {
            return Err(invalid_state(
                "only an order ready for pickup can be completed",
            ));
        }
    }
    Ok(())
}

/// Runs a store action on the order under the lock: 200 with the new version, 404 or 409.
fn store_action(
    state: &OkyaState,
    order_id: &str,
    action: StoreAction,
    reason: Option<String>,
) -> Result<Order, OkyaError> {
    let mut inner = state.lock();
    let mut order = inner
        .orders
        .find(order_id)
        .cloned()
        .ok_or_else(|| order_not_found(order_id))?;
    act(&mut order, action, reason)?;
    Ok(save(&mut inner, &state.courier, order))
}

/// Accepts the order after `delay`, if it is still waiting for the store then.
fn schedule_accept(sim: Weak<OkyaState>, order_id: String, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let Some(state) = sim.upgrade() else {
            return;
        };
        match store_action(&state, &order_id, StoreAction::Accept, None) {
            Ok(order) => tracing::debug!(order_id = %order.id, "sandbox store accepted the order"),
            Err(_) => tracing::debug!(%order_id, "order no longer awaits acceptance"),
        }
    });
}

fn manager_answer(result: Result<Order, OkyaError>) -> Response {
    match result {
        Ok(order) => Json(order).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /_sandbox/orders/{id}/accept`.
pub(super) async fn accept(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
) -> Response {
    manager_answer(store_action(&state, &order_id, StoreAction::Accept, None))
}

/// `POST /_sandbox/orders/{id}/reject` with an optional `{"reason": "…"}`.
pub(super) async fn reject(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
    body: Bytes,
) -> Response {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => match map.get("reason") {
                None | Some(Value::Null) => None,
                Some(Value::String(s))
                    if !s.is_empty() && s.chars().count() <= MAX_REASON_CHARS =>
                {
                    Some(s.clone())
                }
                Some(_) => {
                    return bad_request(Some("reason"), "reason must be 1-500 characters")
                        .into_response();
                }
            },
            _ => return bad_request(None, "the body must be a JSON object").into_response(),
        }
    };
    manager_answer(store_action(&state, &order_id, StoreAction::Reject, reason))
}

/// `POST /_sandbox/orders/{id}/ready`.
pub(super) async fn ready(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
) -> Response {
    manager_answer(store_action(&state, &order_id, StoreAction::Ready, None))
}

/// `POST /_sandbox/orders/{id}/complete`.
pub(super) async fn complete(
    State(state): State<Arc<OkyaState>>,
    Path(order_id): Path<String>,
) -> Response {
    manager_answer(store_action(&state, &order_id, StoreAction::Complete, None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreUpdate {
    is_open: bool,
}

/// `PUT /_sandbox/stores/{id}` with `{"is_open": false}`: the store closes (or opens), so
/// tests can reach `store_closed` on carts and orders that already exist.
pub(super) async fn set_store(
    State(state): State<Arc<OkyaState>>,
    Path(store_id): Path<String>,
    Json(update): Json<StoreUpdate>,
) -> Response {
    let mut inner = state.lock();
    match inner.stores.iter_mut().find(|s| s.id == store_id) {
        Some(store) => {
            store.is_open = update.is_open;
            let store = store.clone();
            publish_menu(&mut inner, &state.courier, vec![store_id], Vec::new());
            Json(store).into_response()
        }
        None => OkyaError::new(
            StatusCode::NOT_FOUND,
            codes::STORE_NOT_FOUND,
            format!("no store {store_id}"),
        )
        .into_response(),
    }
}

/// `GET /_sandbox/orders`: every order, in creation order.
pub(super) async fn ledger(State(state): State<Arc<OkyaState>>) -> Json<Value> {
    let inner = state.lock();
    Json(serde_json::json!({ "orders": inner.orders.orders }))
}

/// `GET /_sandbox/webhooks`: every event emitted, and every delivery attempt, newest last.
pub(super) async fn webhooks(State(state): State<Arc<OkyaState>>) -> Json<Value> {
    let events = state.lock().orders.events.clone();
    let deliveries = state
        .courier
        .deliveries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Json(serde_json::json!({ "events": events, "deliveries": deliveries }))
}
