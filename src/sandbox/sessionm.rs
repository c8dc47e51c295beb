//! In-memory SessionM: the Core users API and the POS/eCommerce API (`/api/2.0/…`) as
//! described in `docs/upstreams/sessionm.md`, with the sandbox conventions of API.md
//! (every new member holds four vouchers; one point per whole currency unit paid).
//!
//! It accepts only the default sandbox credentials of [`SessionmSettings`]. Admin routes:
//! - `GET /_sandbox/ledger`: members, their offers, transactions and request ids seen;
//! - `PUT /_sandbox/settings` `{"processing_delay_ms": n}`: holds each new POS request
//!   "pending" that long, so a concurrent repeat of its `request_id` sees
//!   `pending_processing`.

use super::{Simulator, faults::Faults};
use crate::config::SessionmSettings;
use crate::domain::{Currency, Money};
use crate::upstream::sessionm::codes;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

/// Currency of the sandbox program's fixed-amount vouchers.
const PROGRAM_CURRENCY: &str = "USD";

pub async fn start(faults: Arc<Faults>) -> std::io::Result<Simulator> {
    let settings = SessionmSettings::default();
    let sim = Arc::new(Sim {
        api_key: settings.api_key.clone(),
        api_secret: settings.api_secret.expose_secret().to_owned(),
        client_id: settings.client_id.clone(),
        client_secret: settings.client_secret.expose_secret().to_owned(),
        ledger: Mutex::new(Ledger::default()),
    });
    let router = Router::new()
        .route("/priv/v1/apps/{api_key}/users", post(create_user))
        .route("/priv/v1/apps/{api_key}/users/{user_id}", get(get_user))
        .route(
            "/priv/v1/apps/{api_key}/external/users/{external_id}",
            get(get_external_user),
        )
        .route("/api/2.0/lookup", post(pos_route(PosOp::Lookup)))
        .route("/api/2.0/lock", post(pos_route(PosOp::Lock)))
        .route("/api/2.0/unlock", post(pos_route(PosOp::Unlock)))
        .route("/api/2.0/redeem", post(pos_route(PosOp::Redeem)))
        .route("/api/2.0/reinstate", post(pos_route(PosOp::Reinstate)))
        .route(
            "/api/2.0/send_transaction",
            post(pos_route(PosOp::SendTransaction)),
        )
        .route("/_sandbox/ledger", get(ledger))
        .route("/_sandbox/settings", put(settings_update))
        .with_state(sim);
    super::serve("sessionm", router, faults).await
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

struct Sim {
    api_key: String,
    api_secret: String,
    client_id: String,
    client_secret: String,
    ledger: Mutex<Ledger>,
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Ledger {
    users: Vec<User>,
    offers: Vec<UserOffer>,
    transactions: Vec<TxnRecord>,
    requests: HashMap<String, RequestRecord>,
    request_counts: BTreeMap<String, u64>,
    processing_delay_ms: u64,
    next_id: u64,
}

struct User {
    id: String,
    external_id: Option<String>,
    email: String,
    first_name: String,
    last_name: String,
    phone_numbers: Value,
    points: i64,
    created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    FreeItem,
    FixedAmount,
    Percentage,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::FreeItem => "FREE_ITEM",
            Kind::FixedAmount => "FIXED_AMOUNT",
            Kind::Percentage => "PERCENTAGE",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum OfferState {
    Available,
    Locked { transaction_id: String },
    Redeemed { transaction_id: String },
}

struct UserOffer {
    user_offer_id: String,
    offer_id: &'static str,
    user_id: String,
    name: &'static str,
    description: &'static str,
    kind: Kind,
    amount: Option<i64>,
    percentage: Option<u32>,
    expires_at: DateTime<Utc>,
    state: OfferState,
}

impl UserOffer {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.state == OfferState::Available && self.expires_at <= now
    }

    fn status(&self, now: DateTime<Utc>) -> &'static str {
        match &self.state {
            OfferState::Locked { .. } => "LOCKED",
            OfferState::Redeemed { .. } => "REDEEMED",
            OfferState::Available if self.expired(now) => "EXPIRED",
            OfferState::Available => "AVAILABLE",
        }
    }

    fn transaction_id(&self) -> Option<&str> {
        match &self.state {
            OfferState::Locked { transaction_id } | OfferState::Redeemed { transaction_id } => {
                Some(transaction_id)
            }
            OfferState::Available => None,
        }
    }

    /// The discount on a basket, in its minor units; 0 when the offer does not apply.
    fn discount_on(&self, basket: &Basket) -> i64 {
        let raw = match self.kind {
            Kind::FreeItem => basket
                .items
                .iter()
                .filter(|i| i.quantity > 0)
                .map(|i| i.price)
                .max()
                .unwrap_or(0),
            // A fixed amount off needs a basket worth at least twice as much, as such
            // rewards usually come with a minimum spend; smaller baskets do not qualify.
            Kind::FixedAmount
                if basket.currency.code() == PROGRAM_CURRENCY
                    && basket.subtotal >= 2 * self.amount.unwrap_or(0) =>
            {
                self.amount.unwrap_or(0)
            }
            Kind::FixedAmount => 0,
            Kind::Percentage => Money::new(basket.subtotal, basket.currency.clone())
                .percent_bps(i64::from(self.percentage.unwrap_or(0)) * 100)
                .map(|m| m.minor)
                .unwrap_or(0),
        };
        raw.clamp(0, basket.subtotal.max(0))
    }

    fn to_json(&self, now: DateTime<Utc>, discount: Option<i64>) -> Value {
        let mut offer = json!({
            "user_offer_id": self.user_offer_id,
            "offer_id": self.offer_id,
            "name": self.name,
            "description": self.description,
            "discount_type": self.kind.as_str(),
            "expiration_date": self.expires_at,
            "status": self.status(now),
        });
        if let Some(amount) = self.amount {
            offer["amount"] = json!(amount);
            offer["currency"] = json!(PROGRAM_CURRENCY);
        }
        if let Some(pct) = self.percentage {
            offer["percentage"] = json!(pct);
        }
        if let OfferState::Locked { transaction_id } = &self.state {
            offer["locked_transaction_id"] = json!(transaction_id);
        }
        if let Some(d) = discount {
            offer["discount_amount"] = json!(d);
        }
        offer
    }
}

struct TxnRecord {
    transaction_id: String,
    user_id: String,
    total: i64,
    currency: String,
    points: i64,
    response: Value,
    void_response: Option<Value>,
}

enum RequestRecord {
    Pending { fingerprint: Value },
    Done { fingerprint: Value, reply: Reply },
}

type Reply = (StatusCode, Value);

fn tier(points: i64) -> &'static str {
    match points {
        ..100 => "Bronze",
        100..500 => "Silver",
        _ => "Gold",
    }
}

impl Ledger {
    fn next(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:06}", self.next_id)
    }

    fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn user_json(&self, user: &User) -> Value {
        json!({
            "id": user.id,
            "external_id": user.external_id,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "phone_numbers": user.phone_numbers,
            "available_points": user.points,
            "tier": tier(user.points),
            "created_at": user.created_at,
        })
    }

    /// The four sandbox vouchers of API.md, issued to every new member.
    fn issue_welcome_offers(&mut self, user_id: &str, now: DateTime<Utc>) {
        let month = now + chrono::Duration::days(30);
        let templates = [
            (
                "offer_free_drink",
                "Free drink",
                "One item on us",
                Kind::FreeItem,
                None,
                None,
                month,
            ),
            (
                "offer_2_off",
                "$2 off",
                "$2.00 off an order of $4.00 or more",
                Kind::FixedAmount,
                Some(200),
                None,
                month,
            ),
            (
                "offer_20_pct",
                "20% off",
                "20% off your order",
                Kind::Percentage,
                None,
                Some(20),
                month,
            ),
            (
                "offer_5_off_expired",
                "$5 off (expired)",
                "$5.00 off, expired yesterday",
                Kind::FixedAmount,
                Some(500),
                None,
                now - chrono::Duration::days(1),
            ),
        ];
        for (offer_id, name, description, kind, amount, percentage, expires_at) in templates {
            let user_offer_id = self.next("uo");
            self.offers.push(UserOffer {
                user_offer_id,
                offer_id,
                user_id: user_id.to_owned(),
                name,
                description,
                kind,
                amount,
                percentage,
                expires_at,
                state: OfferState::Available,
            });
        }
    }

    fn offer_mut(&mut self, user_id: &str, user_offer_id: &str) -> Result<&mut UserOffer, Reply> {
        self.offers
            .iter_mut()
            .find(|o| o.user_offer_id == user_offer_id && o.user_id == user_id)
            .ok_or_else(|| {
                refuse(
                    codes::OFFER_NOT_FOUND,
                    "no such offer in this member's wallet",
                    Some("user_offer_id"),
                )
            })
    }

    fn require_user(&self, user_id: &str) -> Result<(), Reply> {
        match self.user(user_id) {
            Some(_) => Ok(()),
            None => Err(refuse(
                codes::USER_NOT_FOUND,
                "no such user",
                Some("user_id"),
            )),
        }
    }

    fn handle(&mut self, op: PosOp, payload: &Value, now: DateTime<Utc>) -> Reply {
        let outcome = match op {
            PosOp::Lookup => self.lookup(payload, now),
            PosOp::Lock => self.apply_offer(payload, now, false),
            PosOp::Redeem => self.apply_offer(payload, now, true),
            PosOp::Unlock => self.unlock(payload),
            PosOp::Reinstate => self.reinstate(payload),
            PosOp::SendTransaction => self.send_transaction(payload, now),
        };
        outcome.unwrap_or_else(|refusal| refusal)
    }

    fn lookup(&mut self, payload: &Value, now: DateTime<Utc>) -> Result<Reply, Reply> {
        let req: LookupReq = parse(payload)?;
        let user = self
            .user(&req.user_id)
            .ok_or_else(|| refuse(codes::USER_NOT_FOUND, "no such user", Some("user_id")))?;
        let user_json = json!({
            "id": user.id,
            "email": user.email,
            "available_points": user.points,
            "tier": tier(user.points),
        });
        let basket = req.transaction.map(Basket::try_from).transpose()?;
        let offers: Vec<Value> = self
            .offers
            .iter()
            .filter(|o| o.user_id == req.user_id)
            .filter_map(|o| match &basket {
                None => Some(o.to_json(now, None)),
                Some(b) => {
                    let usable = match &o.state {
                        OfferState::Available => !o.expired(now),
                        OfferState::Locked { transaction_id } => {
                            *transaction_id == b.transaction_id
                        }
                        OfferState::Redeemed { .. } => false,
                    };
                    let discount = o.discount_on(b);
                    (usable && discount > 0).then(|| o.to_json(now, Some(discount)))
                }
            })
            .collect();
        Ok(ok(json!({"user": user_json, "offers": offers})))
    }

    fn apply_offer(
        &mut self,
        payload: &Value,
        now: DateTime<Utc>,
        redeem: bool,
    ) -> Result<Reply, Reply> {
        let req: OfferReq = parse(payload)?;
        if req.offer_lookup_type != "UserOfferId" {
            return Err(refuse(
                codes::VALIDATION,
                "only UserOfferId lookups are supported",
                Some("offer_lookup_type"),
            ));
        }
        self.require_user(&req.user_id)?;
        let basket = Basket::try_from(req.transaction)?;
        let offer = self.offer_mut(&req.user_id, &req.offer_lookup_code)?;
        match &offer.state {
            OfferState::Redeemed { .. } => {
                return Err(refuse(
                    codes::OFFER_REDEEMED,
                    "offer already redeemed",
                    None,
                ));
            }
            OfferState::Locked { transaction_id } if *transaction_id != basket.transaction_id => {
                return Err(refuse(
                    codes::OFFER_LOCKED,
                    "offer is locked by another transaction",
                    None,
                ));
            }
            OfferState::Available if offer.expired(now) => {
                return Err(refuse(codes::OFFER_EXPIRED, "offer has expired", None));
            }
            _ => {}
        }
        let amount = offer.discount_on(&basket);
        if amount == 0 {
            return Err(refuse(
                codes::OFFER_NOT_APPLICABLE,
                "offer gives no discount on this transaction",
                Some("transaction"),
            ));
        }
        let transaction_id = basket.transaction_id.clone();
        offer.state = if redeem {
            OfferState::Redeemed { transaction_id }
        } else {
            OfferState::Locked { transaction_id }
        };
        Ok(ok(json!({
            "user_offer_id": offer.user_offer_id,
            "transaction_id": basket.transaction_id,
            "name": offer.name,
            "amount": amount,
            "currency": basket.currency.code(),
        })))
    }

    fn unlock(&mut self, payload: &Value) -> Result<Reply, Reply> {
        let req: ReleaseReq = parse(payload)?;
        self.require_user(&req.user_id)?;
        let offer = self.offer_mut(&req.user_id, &req.user_offer_id)?;
        match &offer.state {
            OfferState::Available => {}
            OfferState::Redeemed { .. } => {
                return Err(refuse(
                    codes::OFFER_REDEEMED,
                    "offer already redeemed",
                    None,
                ));
            }
            OfferState::Locked { transaction_id } => {
                if req
                    .transaction_id
                    .as_deref()
                    .is_some_and(|t| t != transaction_id)
                {
                    return Err(refuse(
                        codes::OFFER_LOCKED,
                        "offer is locked by another transaction",
                        Some("transaction_id"),
                    ));
                }
                offer.state = OfferState::Available;
            }
        }
        Ok(ok(Value::Null))
    }

    fn reinstate(&mut self, payload: &Value) -> Result<Reply, Reply> {
        let req: ReleaseReq = parse(payload)?;
        self.require_user(&req.user_id)?;
        let offer = self.offer_mut(&req.user_id, &req.user_offer_id)?;
        match &offer.state {
            OfferState::Available => {}
            OfferState::Locked { .. } => {
                return Err(refuse(
                    codes::OFFER_NOT_REDEEMED,
                    "offer is locked, not redeemed; unlock it instead",
                    None,
                ));
            }
            OfferState::Redeemed { .. } => offer.state = OfferState::Available,
        }
        Ok(ok(Value::Null))
    }

    fn send_transaction(&mut self, payload: &Value, now: DateTime<Utc>) -> Result<Reply, Reply> {
        let kind = payload["transaction_type"].as_str().unwrap_or("sale");
        if kind.eq_ignore_ascii_case("return") {
            return self.return_transaction(payload);
        }
        let req: SaleReq = parse(payload)?;
        self.require_user(&req.user_id)?;
        if let Some(existing) = self
            .transactions
            .iter()
            .find(|t| t.transaction_id == req.transaction_id)
        {
            // A transaction counts once, whatever request id it comes back under.
            return Ok(ok(existing.response.clone()));
        }
        let currency = Currency::parse(&req.currency)
            .map_err(|e| refuse(codes::VALIDATION, &e.to_string(), Some("currency")))?;
        let items_sum: i64 = req.items.iter().map(|i| i.price * i.quantity).sum();
        let discounts_sum: i64 = req.discounts.iter().map(|d| d.amount).sum();
        let checks = [
            (
                items_sum == req.subtotal,
                "subtotal",
                "subtotal is not the sum of the items",
            ),
            (
                discounts_sum == req.discount_total,
                "discount_total",
                "discount_total is not the sum of the discounts",
            ),
            (
                req.subtotal - req.discount_total + req.tax == req.total,
                "total",
                "total is not subtotal - discount_total + tax",
            ),
            (req.total >= 0, "total", "total is negative"),
        ];
        if let Some((_, field, message)) = checks.iter().find(|(fine, ..)| !fine) {
            return Err(refuse(codes::VALIDATION, message, Some(field)));
        }
        // Check every discount's offer first, so a refusal changes nothing.
        for d in &req.discounts {
            let offer = self.offer_mut(&req.user_id, &d.user_offer_id)?;
            match &offer.state {
                OfferState::Locked { transaction_id } | OfferState::Redeemed { transaction_id }
                    if *transaction_id == req.transaction_id => {}
                OfferState::Locked { .. } => {
                    return Err(refuse(
                        codes::OFFER_LOCKED,
                        "offer is locked by another transaction",
                        Some("discounts"),
                    ));
                }
                OfferState::Redeemed { .. } => {
                    return Err(refuse(
                        codes::OFFER_REDEEMED,
                        "offer already redeemed",
                        Some("discounts"),
                    ));
                }
                OfferState::Available if offer.expired(now) => {
                    return Err(refuse(
                        codes::OFFER_EXPIRED,
                        "offer has expired",
                        Some("discounts"),
                    ));
                }
                OfferState::Available => {}
            }
        }
        for d in &req.discounts {
            let offer = self.offer_mut(&req.user_id, &d.user_offer_id)?;
            offer.state = OfferState::Redeemed {
                transaction_id: req.transaction_id.clone(),
            };
        }
        let points = req.total / 10_i64.pow(currency.exponent());
        let Some(user) = self.users.iter_mut().find(|u| u.id == req.user_id) else {
            return Err(refuse(
                codes::USER_NOT_FOUND,
                "no such user",
                Some("user_id"),
            ));
        };
        user.points += points;
        let response = json!({
            "transaction_id": req.transaction_id,
            "points_earned": points,
            "available_points": user.points,
        });
        self.transactions.push(TxnRecord {
            transaction_id: req.transaction_id,
            user_id: req.user_id,
            total: req.total,
            currency: currency.code().to_owned(),
            points,
            response: response.clone(),
            void_response: None,
        });
        Ok(ok(response))
    }

    fn return_transaction(&mut self, payload: &Value) -> Result<Reply, Reply> {
        let req: ReturnReq = parse(payload)?;
        let Some(index) = self.transactions.iter().position(|t| {
            t.transaction_id == req.original_transaction_id && t.user_id == req.user_id
        }) else {
            return Err(refuse(
                codes::TRANSACTION_NOT_FOUND,
                "no such transaction for this member",
                Some("original_transaction_id"),
            ));
        };
        if let Some(response) = &self.transactions[index].void_response {
            return Ok(ok(response.clone()));
        }
        let points = self.transactions[index].points;
        let Some(user) = self.users.iter_mut().find(|u| u.id == req.user_id) else {
            return Err(refuse(
                codes::USER_NOT_FOUND,
                "no such user",
                Some("user_id"),
            ));
        };
        user.points -= points;
        let response = json!({
            "original_transaction_id": req.original_transaction_id,
            "points_reversed": points,
            "available_points": user.points,
        });
        self.transactions[index].void_response = Some(response.clone());
        Ok(ok(response))
    }

    fn snapshot(&self, now: DateTime<Utc>) -> Value {
        let users: Vec<Value> = self
            .users
            .iter()
            .map(|u| {
                let offers: Vec<Value> = self
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
                    "tier": tier(u.points),
                    "offers": offers,
                })
            })
            .collect();
        let transactions: Vec<Value> = self
            .transactions
            .iter()
            .map(|t| {
                json!({
                    "transaction_id": t.transaction_id,
                    "user_id": t.user_id,
                    "total": t.total,
                    "currency": t.currency,
                    "points": t.points,
                    "voided": t.void_response.is_some(),
                })
            })
            .collect();
        json!({
            "users": users,
            "transactions": transactions,
            "request_ids": self.request_counts,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Request payloads (lenient: unknown fields are ignored, as SessionM does)
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct LookupReq {
    user_id: String,
    #[serde(default)]
    transaction: Option<TxnIn>,
}

#[derive(Deserialize)]
struct OfferReq {
    offer_lookup_code: String,
    offer_lookup_type: String,
    user_id: String,
    transaction: TxnIn,
}

#[derive(Deserialize)]
struct ReleaseReq {
    user_offer_id: String,
    user_id: String,
    #[serde(default)]
    transaction_id: Option<String>,
}

#[derive(Deserialize)]
struct TxnIn {
    transaction_id: String,
    currency: String,
    subtotal: i64,
    #[serde(default)]
    items: Vec<ItemIn>,
}

#[derive(Deserialize)]
struct ItemIn {
    quantity: i64,
    price: i64,
}

#[derive(Deserialize)]
struct SaleReq {
    transaction_id: String,
    user_id: String,
    currency: String,
    subtotal: i64,
    #[serde(default)]
    discount_total: i64,
    #[serde(default)]
    tax: i64,
    total: i64,
    #[serde(default)]
    items: Vec<ItemIn>,
    #[serde(default)]
    discounts: Vec<DiscountIn>,
}

#[derive(Deserialize)]
struct DiscountIn {
    user_offer_id: String,
    amount: i64,
}

#[derive(Deserialize)]
struct ReturnReq {
    original_transaction_id: String,
    user_id: String,
}

/// A validated basket.
struct Basket {
    transaction_id: String,
    currency: Currency,
    subtotal: i64,
    items: Vec<ItemIn>,
}

impl TryFrom<TxnIn> for Basket {
    type Error = Reply;

    fn try_from(txn: TxnIn) -> Result<Self, Reply> {
        let currency = Currency::parse(&txn.currency).map_err(|e| {
            refuse(
                codes::VALIDATION,
                &e.to_string(),
                Some("transaction.currency"),
            )
        })?;
        if txn.items.iter().any(|i| i.quantity < 1 || i.price < 0) {
            return Err(refuse(
                codes::VALIDATION,
                "items need a quantity of at least 1 and a price of at least 0",
                Some("transaction.items"),
            ));
        }
        if items_sum(&txn.items) != Some(txn.subtotal) {
            return Err(refuse(
                codes::VALIDATION,
                "subtotal is not the sum of the items",
                Some("transaction.subtotal"),
            ));
        }
        Ok(Self {
            transaction_id: txn.transaction_id,
            currency,
            subtotal: txn.subtotal,
            items: txn.items,
        })
    }
}

/// Σ price × quantity, `None` on overflow (hostile input must not panic the simulator).
fn items_sum(items: &[ItemIn]) -> Option<i64> {
    items.iter().try_fold(0_i64, |acc, i| {
        i.price
            .checked_mul(i.quantity)
            .and_then(|v| acc.checked_add(v))
    })
}

fn parse<T: serde::de::DeserializeOwned>(payload: &Value) -> Result<T, Reply> {
    serde_json::from_value(payload.clone())
        .map_err(|e| refuse(codes::VALIDATION, &e.to_string(), Some("request_payload")))
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

fn ok(payload: Value) -> Reply {
    let mut body = json!({"status": "OK"});
    if !payload.is_null() {
        body["payload"] = payload;
    }
    (StatusCode::OK, body)
}

/// SessionM refuses with HTTP 200 and `"status": "error"`.
fn refuse(code: &str, message: &str, field: Option<&str>) -> Reply {
    (StatusCode::OK, error_body(code, message, field))
}

fn error_body(code: &str, message: &str, field: Option<&str>) -> Value {
    let mut errors = json!({"code": code, "message": message});
    if let Some(field) = field {
        errors["field"] = json!(field);
    }
    json!({"status": "error", "errors": errors})
}

fn reply((status, body): Reply) -> Response {
    (status, Json(body)).into_response()
}

fn access_denied() -> Response {
    reply((
        StatusCode::UNAUTHORIZED,
        error_body(codes::ACCESS_DENIED, "invalid credentials", None),
    ))
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Core API
// ---------------------------------------------------------------------------------------

impl Sim {
    fn core_authorised(&self, api_key: &str, headers: &HeaderMap) -> bool {
        api_key == self.api_key
            && basic_credentials(headers)
                .is_some_and(|(u, p)| u == self.api_key && p == self.api_secret)
    }

    fn pos_authorised(&self, headers: &HeaderMap) -> bool {
        basic_credentials(headers)
            .is_some_and(|(u, p)| u == self.client_id && p == self.client_secret)
    }
}

#[derive(Deserialize)]
struct NewUserReq {
    user: NewUserIn,
}

#[derive(Deserialize)]
struct NewUserIn {
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    phone_numbers: Value,
    #[serde(default)]
    external_id: Option<String>,
}

async fn create_user(
    State(sim): State<Arc<Sim>>,
    Path(api_key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !sim.core_authorised(&api_key, &headers) {
        return access_denied();
    }
    let req: NewUserReq = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => {
            return reply((
                StatusCode::BAD_REQUEST,
                error_body("argument_error", &e.to_string(), None),
            ));
        }
    };
    let new = req.user;
    if !new.email.contains('@') {
        return reply(refuse(
            codes::VALIDATION,
            "email is missing or invalid",
            Some("email"),
        ));
    }
    let now = Utc::now();
    let mut ledger = sim.lock();
    if ledger
        .users
        .iter()
        .any(|u| u.email.eq_ignore_ascii_case(&new.email))
    {
        return reply(refuse(
            codes::EMAIL_TAKEN,
            "email has already been taken",
            Some("email"),
        ));
    }
    if new.external_id.is_some()
        && ledger
            .users
            .iter()
            .any(|u| u.external_id == new.external_id)
    {
        return reply(refuse(
            codes::VALIDATION,
            "external_id has already been taken",
            Some("external_id"),
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    ledger.users.push(User {
        id: id.clone(),
        external_id: new.external_id,
        email: new.email,
        first_name: new.first_name,
        last_name: new.last_name,
        phone_numbers: if new.phone_numbers.is_null() {
            json!([])
        } else {
            new.phone_numbers
        },
        points: 0,
        created_at: now,
    });
    ledger.issue_welcome_offers(&id, now);
    let user = ledger.user(&id).map(|u| ledger.user_json(u));
    reply((StatusCode::OK, json!({"status": "ok", "user": user})))
}

async fn get_user(
    State(sim): State<Arc<Sim>>,
    Path((api_key, user_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !sim.core_authorised(&api_key, &headers) {
        return access_denied();
    }
    let ledger = sim.lock();
    found_user(&ledger, ledger.users.iter().find(|u| u.id == user_id))
}

async fn get_external_user(
    State(sim): State<Arc<Sim>>,
    Path((api_key, external_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !sim.core_authorised(&api_key, &headers) {
        return access_denied();
    }
    let ledger = sim.lock();
    let user = ledger
        .users
        .iter()
        .find(|u| u.external_id.as_deref() == Some(external_id.as_str()));
    found_user(&ledger, user)
}

fn found_user(ledger: &Ledger, user: Option<&User>) -> Response {
    match user {
        Some(u) => reply((
            StatusCode::OK,
            json!({"status": "ok", "user": ledger.user_json(u)}),
        )),
        None => reply((
            StatusCode::NOT_FOUND,
            error_body(codes::USER_NOT_FOUND, "no such user", None),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// POS API
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PosOp {
    Lookup,
    Lock,
    Unlock,
    Redeem,
    Reinstate,
    SendTransaction,
}

impl PosOp {
    fn as_str(self) -> &'static str {
        match self {
            PosOp::Lookup => "lookup",
            PosOp::Lock => "lock",
            PosOp::Unlock => "unlock",
            PosOp::Redeem => "redeem",
            PosOp::Reinstate => "reinstate",
            PosOp::SendTransaction => "send_transaction",
        }
    }
}

type PosFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

fn pos_route(
    op: PosOp,
) -> impl Fn(State<Arc<Sim>>, HeaderMap, Bytes) -> PosFuture + Clone + Send + Sync + 'static {
    move |State(sim), headers, body| Box::pin(pos(sim, headers, body, op))
}

/// Clears a `Pending` mark if its request is dropped before it finishes (the caller hung
/// up), so the `request_id` does not stay pending for ever.
struct PendingGuard {
    sim: Arc<Sim>,
    request_id: String,
    armed: bool,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.armed {
            let mut ledger = self.sim.lock();
            if matches!(
                ledger.requests.get(&self.request_id),
                Some(RequestRecord::Pending { .. })
            ) {
                ledger.requests.remove(&self.request_id);
            }
        }
    }
}

async fn pos(sim: Arc<Sim>, headers: HeaderMap, body: Bytes, op: PosOp) -> Response {
    if !sim.pos_authorised(&headers) {
        return access_denied();
    }
    let envelope: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return reply((
                StatusCode::BAD_REQUEST,
                error_body("argument_error", &e.to_string(), None),
            ));
        }
    };
    let field = |key: &str| envelope[key].as_str().filter(|s| !s.is_empty());
    let (Some(request_id), Some(client_id), Some(_store_id)) =
        (field("request_id"), field("client_id"), field("store_id"))
    else {
        return reply(refuse(
            codes::VALIDATION,
            "store_id, client_id and request_id are required",
            Some("request_id"),
        ));
    };
    if client_id != sim.client_id {
        return reply((
            StatusCode::UNAUTHORIZED,
            error_body(
                codes::ACCESS_DENIED,
                "client_id does not match the credentials",
                Some("client_id"),
            ),
        ));
    }
    let request_id = request_id.to_owned();
    let fingerprint = json!({"operation": op.as_str(), "body": envelope});
    let delay = {
        let mut ledger = sim.lock();
        *ledger.request_counts.entry(request_id.clone()).or_default() += 1;
        match ledger.requests.get(&request_id) {
            Some(RequestRecord::Done {
                fingerprint: seen,
                reply: stored,
            }) if *seen == fingerprint => return reply(stored.clone()),
            Some(RequestRecord::Pending { fingerprint: seen }) if *seen == fingerprint => {
                return reply(refuse(
                    codes::PENDING,
                    "a request with this request_id is still processing",
                    Some("request_id"),
                ));
            }
            Some(_) => {
                return reply(refuse(
                    codes::REQUEST_ID_CONFLICT,
                    "request_id was already used for a different request",
                    Some("request_id"),
                ));
            }
            None => {
                ledger.requests.insert(
                    request_id.clone(),
                    RequestRecord::Pending {
                        fingerprint: fingerprint.clone(),
                    },
                );
            }
        }
        ledger.processing_delay_ms
    };
    let mut guard = PendingGuard {
        sim: sim.clone(),
        request_id: request_id.clone(),
        armed: true,
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let outcome = {
        let mut ledger = sim.lock();
        let outcome = ledger.handle(op, &envelope["request_payload"], Utc::now());
        ledger.requests.insert(
            request_id,
            RequestRecord::Done {
                fingerprint,
                reply: outcome.clone(),
            },
        );
        outcome
    };
    guard.armed = false;
    reply(outcome)
}

// ---------------------------------------------------------------------------------------
// Admin
// ---------------------------------------------------------------------------------------

async fn ledger(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(sim.lock().snapshot(Utc::now()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsUpdate {
    processing_delay_ms: Option<u64>,
}

async fn settings_update(
    State(sim): State<Arc<Sim>>,
    Json(update): Json<SettingsUpdate>,
) -> StatusCode {
    if let Some(ms) = update.processing_delay_ms {
        sim.lock().processing_delay_ms = ms;
    }
    StatusCode::NO_CONTENT
}
