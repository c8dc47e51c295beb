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

use crate::{
    LOOPBACK_ANY_PORT, Simulator, credentials,
    faults::{FaultPlan, Faults, LostAs},
    signature, unix_now,
};
use axum::{
    Router,
    body::Bytes,
    extract::{Extension, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

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
    });
    let router = Router::new()
        .route("/v1/payment_intents", post(create_intent))
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

// ---------------------------------------------------------------------------------------
// State

struct Sim {
    config: StripeSimConfig,
    http: reqwest::Client,
    state: Mutex<Ledger>,
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Ledger {
    seq: u64,
    intents: HashMap<String, Intent>,
    refunds: Vec<RefundRecord>,
    /// Keyed by (secret key, idempotency key): Stripe scopes keys per API key.
    idempotency: HashMap<(String, String), Stored>,
    requests_per_key: BTreeMap<String, u64>,
    posts_without_key: u64,
    events: Vec<EventRecord>,
}

enum Stored {
    InFlight,
    Done {
        fingerprint: Fingerprint,
        status: StatusCode,
        body: Value,
    },
}

/// What makes two requests "the same" for idempotency: method, path and parameters.
#[derive(Clone, PartialEq, Eq)]
struct Fingerprint {
    route: String,
    params: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    RequiresCapture,
    Succeeded,
    Canceled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::RequiresPaymentMethod => "requires_payment_method",
            Status::RequiresConfirmation => "requires_confirmation",
            Status::RequiresAction => "requires_action",
            Status::RequiresCapture => "requires_capture",
            Status::Succeeded => "succeeded",
            Status::Canceled => "canceled",
        }
    }
}

struct Intent {
    seq: u64,
    id: String,
    created: i64,
    amount: i64,
    currency: String,
    capture_method: String,
    status: Status,
    amount_capturable: i64,
    amount_received: i64,
    client_secret: String,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    /// The `pm_…` Stripe made from the test token, as Stripe does.
    payment_method: Option<String>,
    card: Option<&'static TestCard>,
    /// The test token the caller sent, for the ledger.
    requested_payment_method: Option<String>,
    payment_method_types: Vec<String>,
    automatic_payment_methods: Value,
    last_payment_error: Option<Value>,
    next_action: Option<Value>,
    canceled_at: Option<i64>,
    cancellation_reason: Option<String>,
    charge: Option<Charge>,
    idempotency_key: Option<String>,
}

impl Intent {
    fn manual(&self) -> bool {
        self.capture_method == "manual"
    }

    fn json(&self, expand_charge: bool) -> Value {
        let latest_charge = match &self.charge {
            Some(_) if expand_charge => self.charge_json().unwrap_or(Value::Null),
            Some(charge) => Value::String(charge.id.clone()),
            None => Value::Null,
        };
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "automatic_payment_methods": self.automatic_payment_methods,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": self.capture_method,
            "client_secret": self.client_secret,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "description": self.description,
            "last_payment_error": self.last_payment_error,
            "latest_charge": latest_charge,
            "livemode": false,
            "metadata": self.metadata,
            "next_action": self.next_action,
            "payment_method": self.payment_method,
            "payment_method_types": self.payment_method_types,
            "status": self.status.as_str(),
        })
    }

    fn charge_json(&self) -> Option<Value> {
        let charge = self.charge.as_ref()?;
        let mut card = json!({
            "brand": charge.card.brand,
            "last4": charge.card.last4,
            "funding": charge.card.funding,
            "country": "US",
            "exp_month": 12,
            "exp_year": 2034,
            "network": charge.card.brand,
        });
        if let (Some(before), Some(object)) = (charge.capture_before, card.as_object_mut()) {
            object.insert("capture_before".to_owned(), json!(before));
        }
        let outcome = match &charge.failure {
            None => json!({
                "network_status": "approved_by_network",
                "type": "authorized",
                "risk_level": "normal",
                "seller_message": "Payment complete.",
            }),
            Some(failure) => json!({
                "network_status": "declined_by_network",
                "type": "issuer_declined",
                "reason": failure.decline_code,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline.",
            }),
        };
        Some(json!({
            "id": charge.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": charge.amount_captured,
            "amount_refunded": charge.amount_refunded,
            "captured": charge.captured,
            "created": charge.created,
            "currency": self.currency,
            "description": self.description,
            "failure_code": charge.failure.as_ref().map(|f| f.code),
            "failure_message": charge.failure.as_ref().map(|f| f.message),
            "livemode": false,
            "metadata": self.metadata,
            "outcome": outcome,
            "paid": charge.failure.is_none(),
            "payment_intent": self.id,
            "payment_method": charge.payment_method,
            "payment_method_details": {"type": "card", "card": card},
            "refunded": charge.amount_captured > 0 && charge.amount_refunded >= charge.amount_captured,
            "status": if charge.failure.is_none() { "succeeded" } else { "failed" },
        }))
    }
}

struct Charge {
    id: String,
    created: i64,
    amount_captured: i64,
    amount_refunded: i64,
    captured: bool,
    capture_before: Option<i64>,
    card: &'static TestCard,
    payment_method: String,
    failure: Option<CardFailure>,
}

#[derive(Clone, Copy)]
struct CardFailure {
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
}

struct RefundRecord {
    seq: u64,
    id: String,
    amount: i64,
    currency: String,
    charge: String,
    payment_intent: String,
    reason: Option<String>,
    metadata: BTreeMap<String, String>,
    created: i64,
    idempotency_key: Option<String>,
}

impl RefundRecord {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": self.metadata,
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": "succeeded",
        })
    }
}

struct EventRecord {
    id: String,
    kind: String,
    object_id: String,
    created: i64,
    delivered: bool,
    delivery_attempts: u32,
}

// ---------------------------------------------------------------------------------------
// Stripe's test payment methods

#[derive(Clone, Copy)]
enum Behaviour {
    Approve,
    Decline(CardFailure),
    Authenticate,
}

struct TestCard {
    token: &'static str,
    brand: &'static str,
    last4: &'static str,
    funding: &'static str,
    behaviour: Behaviour,
}

const fn declined(
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
) -> Behaviour {
    Behaviour::Decline(CardFailure {
        code,
        decline_code,
        message,
    })
}

static CARDS: &[TestCard] = &[
    TestCard {
        token: "pm_card_visa",
        brand: "visa",
        last4: "4242",
        funding: "credit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_visa_debit",
        brand: "visa",
        last4: "5556",
        funding: "debit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_mastercard",
        brand: "mastercard",
        last4: "4444",
        funding: "credit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_amex",
        brand: "amex",
        last4: "8431",
        funding: "credit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_chargeDeclined",
        brand: "visa",
        last4: "0002",
        funding: "credit",
        behaviour: declined(
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        ),
    },
    TestCard {
        token: "pm_card_chargeDeclinedInsufficientFunds",
        brand: "visa",
        last4: "9995",
        funding: "credit",
        behaviour: declined(
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
    },
    TestCard {
        token: "pm_card_chargeDeclinedFraudulent",
        brand: "visa",
        last4: "0019",
        funding: "credit",
        behaviour: declined("card_declined", "fraudulent", "Your card was declined."),
    },
    TestCard {
        token: "pm_card_chargeDeclinedExpiredCard",
        brand: "visa",
        last4: "0069",
        funding: "credit",
        behaviour: declined("expired_card", "expired_card", "Your card has expired."),
    },
    TestCard {
        token: "pm_card_chargeDeclinedIncorrectCvc",
        brand: "visa",
        last4: "0127",
        funding: "credit",
        behaviour: declined(
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
    },
    TestCard {
        token: "pm_card_authenticationRequired",
        brand: "visa",
        last4: "3184",
        funding: "credit",
        behaviour: Behaviour::Authenticate,
    },
];

fn test_card(token: &str) -> Option<&'static TestCard> {
    CARDS.iter().find(|card| card.token == token)
}

// ---------------------------------------------------------------------------------------
// Errors in Stripe's shape

struct ApiError {
    status: StatusCode,
    error: serde_json::Map<String, Value>,
    /// Stripe keeps an idempotent result only once the endpoint started executing:
    /// parameter validation failures are not saved, so a fixed retry can reuse the key.
    saved: bool,
    should_retry: Option<bool>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        let mut error = serde_json::Map::new();
        error.insert("type".to_owned(), json!(kind));
        error.insert("message".to_owned(), json!(message.into()));
        Self {
            status,
            error,
            saved: false,
            should_retry: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn unauthorised(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
    }

    fn missing(kind: &str, id: &str, param: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such {kind}: '{id}'"),
        )
        .code("resource_missing")
        .param(param)
    }

    fn unexpected_state(message: String, intent: &Intent) -> Self {
        Self::invalid(message)
            .code("payment_intent_unexpected_state")
            .with("payment_intent", intent.json(false))
            .saved()
    }

    fn code(self, code: &str) -> Self {
        self.with("code", json!(code))
    }

    fn param(self, param: &str) -> Self {
        self.with("param", json!(param))
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.error.insert(key.to_owned(), value);
        self
    }

    fn saved(mut self) -> Self {
        self.saved = true;
        self
    }

    fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn body(&self) -> Value {
        json!({ "error": self.error })
    }

    fn into_response(self, request_id: &str) -> Response {
        let mut headers = Vec::new();
        if let Some(retry) = self.should_retry {
            headers.push(("stripe-should-retry", retry.to_string()));
        }
        reply(self.status, &self.body(), request_id, &headers)
    }
}

fn reply(
    status: StatusCode,
    body: &Value,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", value);
    }
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(*name, value);
        }
    }
    response
}

fn new_id(prefix: &str) -> String {
    let tail: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect();
    format!("{prefix}_{tail}")
}

/// The secret key from `Authorization: Bearer sk_…`, if the simulator accepts it.
fn api_key(config: &StripeSimConfig, headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::unauthorised(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY').",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let key = value.strip_prefix("Bearer ").ok_or_else(missing)?.trim();
    let accepted = if config.secret_keys.is_empty() {
        key.starts_with("sk_") || key.starts_with("rk_")
    } else {
        config.secret_keys.iter().any(|k| k == key)
    };
    if accepted {
        return Ok(key.to_owned());
    }
    let shown: String = key.chars().take(8).collect();
    Err(ApiError::unauthorised(format!(
        "Invalid API Key provided: {shown}****"
    )))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII."))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::invalid(
            "Idempotency-Key must be between 1 and 255 characters long.",
        ));
    }
    Ok(Some(key.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Form parameters

struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
            .map(Self)
            .map_err(|_| {
                ApiError::invalid("Invalid request: the body must be form-encoded parameters.")
            })
    }

    /// Stripe refuses parameters it does not know, which catches typos before they reach
    /// live mode. An entry ending in `[` allows any `name[…]`.
    fn allow(&self, known: &[&str]) -> Result<(), ApiError> {
        for (key, _) in &self.0 {
            let ok = known.iter().any(|allowed| {
                if allowed.ends_with('[') {
                    key.starts_with(allowed) && key.ends_with(']')
                } else {
                    key == allowed
                }
            });
            if !ok {
                return Err(
                    ApiError::invalid(format!("Received unknown parameter: {key}"))
                        .code("parameter_unknown")
                        .param(key),
                );
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::invalid(format!("Missing required param: {name}."))
                .code("parameter_missing")
                .param(name)
        })
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|raw| {
                raw.parse::<i64>().map_err(|_| {
                    ApiError::invalid(format!("Invalid integer: {raw}"))
                        .code("parameter_invalid_integer")
                        .param(name)
                })
            })
            .transpose()
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|raw| match raw {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::invalid(format!("Invalid boolean: {raw}")).param(name)),
            })
            .transpose()
    }

    fn one_of<'a>(&'a self, name: &str, allowed: &[&str]) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            Some(value) if !allowed.contains(&value) => Err(ApiError::invalid(format!(
                "Invalid {name}: must be one of {}",
                allowed.join(", ")
            ))
            .param(name)),
            other => Ok(other),
        }
    }

    /// Values of `name[]` / `name[0]`, Stripe's two spellings of a list.
    fn list(&self, name: &str) -> Vec<&str> {
        let open = format!("{name}[");
        self.0
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(&open)
                    .and_then(|rest| rest.strip_suffix(']'))
                    .is_some_and(|index| index.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn expands_charge(&self) -> bool {
        self.list("expand").contains(&"latest_charge")
    }

    fn metadata(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut metadata = BTreeMap::new();
        for (key, value) in &self.0 {
            let Some(name) = key
                .strip_prefix("metadata[")
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                continue;
            };
            if name.is_empty() || name.chars().count() > 40 || value.chars().count() > 500 {
                return Err(ApiError::invalid(
                    "Metadata keys must be 1 to 40 characters and values at most 500.",
                )
                .param(key));
            }
            if value.is_empty() {
                metadata.remove(name);
            } else {
                metadata.insert(name.to_owned(), value.clone());
            }
        }
        if metadata.len() > 50 {
            return Err(ApiError::invalid("Metadata may have at most 50 keys.").param("metadata"));
        }
        Ok(metadata)
    }

    fn fingerprint(&self, route: String) -> Fingerprint {
        let mut params = self.0.clone();
        params.sort();
        Fingerprint { route, params }
    }
}

fn query_params(query: Option<&str>) -> Result<Params, ApiError> {
    Params::parse(query.unwrap_or_default().as_bytes())
}

// ---------------------------------------------------------------------------------------
// Writes: authentication, idempotency, then the operation

enum Op {
    CreateIntent,
    Capture(String),
    Cancel(String),
    CreateRefund,
}

/// What an operation sees: its parameters, and where it leaves the events it caused.
struct Ctx {
    params: Params,
    idempotency_key: Option<String>,
    request_id: String,
    now: i64,
    events: Vec<Value>,
}

impl Ctx {
    fn emit(&mut self, kind: &str, object: Value) {
        self.events.push(json!({
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": kind,
            "data": {"object": object},
        }));
    }
}

/// The fault layer's plan for this request, if it has one.
type Plan = Option<Extension<Arc<FaultPlan>>>;

async fn create_intent(
    State(sim): State<Arc<Sim>>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v1/payment_intents".to_owned();
    write(sim, plan, &headers, path, &body, Op::CreateIntent).await
}

async fn capture_intent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/capture");
    write(sim, plan, &headers, path, &body, Op::Capture(id)).await
}

async fn cancel_intent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/cancel");
    write(sim, plan, &headers, path, &body, Op::Cancel(id)).await
}

async fn create_refund(
    State(sim): State<Arc<Sim>>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v1/refunds".to_owned();
    write(sim, plan, &headers, path, &body, Op::CreateRefund).await
}

/// How the request's work goes, besides its parameters: extra processing time (the key
/// stays in flight meanwhile) and whether Stripe "fails" with a 5xx after acting, which
/// it then saves under the key like any other result of a started request.
#[derive(Default)]
struct RequestFaults {
    slow: Option<Duration>,
    server_error: Option<StatusCode>,
}

impl RequestFaults {
    fn of(plan: &Plan) -> Self {
        let Some(Extension(plan)) = plan else {
            return Self::default();
        };
        Self {
            slow: plan.take_slow(),
            server_error: match plan.lost() {
                Some(LostAs::Status(status)) if status >= 500 => StatusCode::from_u16(status).ok(),
                _ => None,
            },
        }
    }
}

async fn write(
    sim: Arc<Sim>,
    plan: Plan,
    headers: &HeaderMap,
    path: String,
    body: &[u8],
    op: Op,
) -> Response {
    let request_id = new_id("req");
    let prepared = api_key(&sim.config, headers)
        .and_then(|api_key| Ok((api_key, Params::parse(body)?, idempotency_key(headers)?)));
    let (api_key, params, key) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return e.into_response(&request_id),
    };
    let fingerprint = params.fingerprint(format!("POST {path}"));
    let mut echo = Vec::new();
    if let Some(key) = &key {
        echo.push(("idempotency-key", key.clone()));
        let slot = (api_key.clone(), key.clone());
        let mut ledger = sim.lock();
        *ledger.requests_per_key.entry(key.clone()).or_default() += 1;
        match ledger.idempotency.get(&slot) {
            Some(Stored::InFlight) => {
                // https://docs.stripe.com/error-codes#idempotency-key-in-use: the first
                // request is still running; nothing is saved for this one.
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_error",
                    "There is currently another in-progress request using this Idempotent \
                     Key (that probably means you submitted twice, and the other request is \
                     still going through). Please try again later.",
                )
                .code("idempotency_key_in_use")
                .into_response(&request_id);
            }
            Some(Stored::Done {
                fingerprint: first, ..
            }) if *first != fingerprint => {
                let mut mismatch = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    format!(
                        "Keys for idempotent requests can only be used with the same \
                         parameters they were first used with. Try using a key other than \
                         '{key}' if you meant to execute a different request."
                    ),
                );
                mismatch.should_retry = Some(false);
                return mismatch.into_response(&request_id);
            }
            Some(Stored::Done { status, body, .. }) => {
                // Every saved result is replayed, a 500 included, for the key's lifetime.
                echo.push(("idempotent-replayed", "true".to_owned()));
                return reply(*status, body, &request_id, &echo);
            }
            None => {
                ledger.idempotency.insert(slot.clone(), Stored::InFlight);
            }
        }
    } else {
        sim.lock().posts_without_key += 1;
    }

    let ctx = Ctx {
        params,
        idempotency_key: key.clone(),
        request_id: request_id.clone(),
        now: unix_now(),
        events: Vec::new(),
    };
    // In its own task so that a client hanging up mid-charge cannot leave the key stuck
    // in flight: the charge finishes and is saved, as at Stripe.
    let behaviour = RequestFaults::of(&plan);
    let task = tokio::spawn(run(
        sim.clone(),
        op,
        ctx,
        api_key.clone(),
        fingerprint,
        behaviour,
    ));
    match task.await {
        Ok((status, body)) => reply(status, &body, &request_id, &echo),
        Err(_) => {
            if let Some(key) = key {
                sim.lock().idempotency.remove(&(api_key, key));
            }
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "An unknown error occurred in the simulator.",
            )
            .into_response(&request_id)
        }
    }
}

async fn run(
    sim: Arc<Sim>,
    op: Op,
    mut ctx: Ctx,
    api_key: String,
    fingerprint: Fingerprint,
    faults: RequestFaults,
) -> (StatusCode, Value) {
    tokio::time::sleep(PROCESSING + faults.slow.unwrap_or_default()).await;
    let (status, body) = {
        let mut ledger = sim.lock();
        let outcome = match &op {
            Op::CreateIntent => ledger.create_intent(&mut ctx),
            Op::Capture(id) => ledger.capture(id, &mut ctx),
            Op::Cancel(id) => ledger.cancel(id, &mut ctx),
            Op::CreateRefund => ledger.refund(&mut ctx),
        };
        let (status, body, saved) = match (outcome, faults.server_error) {
            // The operation happened, then Stripe failed to answer: the 500 is what the
            // key saves and replays.
            (_, Some(status)) => (
                status,
                ApiError::new(
                    status,
                    "api_error",
                    "An unknown error occurred while processing your request.",
                )
                .body(),
                true,
            ),
            (Ok(body), None) => (StatusCode::OK, body, true),
            (Err(e), None) => (e.status, e.body(), e.saved),
        };
        if let Some(key) = ctx.idempotency_key.clone() {
            let slot = (api_key, key);
            if saved {
                ledger.idempotency.insert(
                    slot,
                    Stored::Done {
                        fingerprint,
                        status,
                        body: body.clone(),
                    },
                );
            } else {
                ledger.idempotency.remove(&slot);
            }
        }
        (status, body)
    };
    publish(&sim, std::mem::take(&mut ctx.events));
    (status, body)
}

// ---------------------------------------------------------------------------------------
// Operations

impl Ledger {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn intent_mut(&mut self, id: &str) -> Result<&mut Intent, ApiError> {
        self.intents
            .get_mut(id)
            .ok_or_else(|| ApiError::missing("payment_intent", id, "intent"))
    }

    fn create_intent(&mut self, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&[
            "amount",
            "currency",
            "payment_method",
            "confirm",
            "capture_method",
            "description",
            "metadata[",
            "payment_method_types[",
            "automatic_payment_methods[enabled]",
            "automatic_payment_methods[allow_redirects]",
            "expand[",
            "return_url",
            "receipt_email",
            "customer",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "setup_future_usage",
            "off_session",
        ])?;
        let amount = p.int("amount")?.ok_or_else(|| {
            ApiError::invalid("Missing required param: amount.")
                .code("parameter_missing")
                .param("amount")
        })?;
        let currency = p.required("currency")?.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(
                ApiError::invalid(format!("Invalid currency: {currency}.")).param("currency")
            );
        }
        if amount < 1 {
            return Err(
                ApiError::invalid("This value must be greater than or equal to 1.")
                    .code("parameter_invalid_integer")
                    .param("amount"),
            );
        }
        let minimum = minimum_amount(&currency);
        if amount < minimum {
            return Err(ApiError::invalid(format!(
                "Amount must be at least {minimum} in the currency's minor unit."
            ))
            .code("amount_too_small")
            .param("amount"));
        }
        let confirm = p.boolean("confirm")?.unwrap_or(false);
        let capture_method = p
            .one_of(
                "capture_method",
                &["automatic", "automatic_async", "manual"],
            )?
            .unwrap_or("automatic_async")
            .to_owned();
        let types: Vec<String> = p
            .list("payment_method_types")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let apm_enabled = p.boolean("automatic_payment_methods[enabled]")?;
        let allow_redirects = p.one_of(
            "automatic_payment_methods[allow_redirects]",
            &["always", "never"],
        )?;
        if !types.is_empty() && apm_enabled == Some(true) {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: automatic_payment_methods, \
                 payment_method_types.",
            ));
        }
        // Since API version 2023-08-16 an intent without payment_method_types uses the
        // Dashboard's payment methods, which may redirect.
        let automatic = types.is_empty() && apm_enabled != Some(false);
        let may_redirect = automatic && allow_redirects != Some("never");
        let token = p.get("payment_method").filter(|t| !t.is_empty());
        let card = match token {
            Some(token) => Some(test_card(token).ok_or_else(|| {
                ApiError::invalid(format!("No such PaymentMethod: '{token}'"))
                    .code("resource_missing")
                    .param("payment_method")
            })?),
            None => None,
        };
        if confirm && card.is_none() {
            return Err(ApiError::invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
            )
            .code("parameter_missing")
            .param("payment_method"));
        }
        if confirm && may_redirect && p.get("return_url").is_none() {
            return Err(ApiError::invalid(
                "This PaymentIntent is configured to accept payment methods enabled in your \
                 Dashboard, because some of these payment methods might redirect your \
                 customer off of your page, you must provide a `return_url`. If you don't \
                 want to accept redirect-based payment methods, set \
                 `automatic_payment_methods[enabled]` to `true` and \
                 `automatic_payment_methods[allow_redirects]` to `never`.",
            )
            .param("return_url"));
        }
        let description = p.get("description").map(str::to_owned);
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Err(ApiError::invalid("Description is too long.").param("description"));
        }
        let metadata = p.metadata()?;
        let expand = p.expands_charge();

        let seq = self.next_seq();
        let id = new_id("pi");
        let secret_tail: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(25)
            .collect();
        let mut intent = Intent {
            seq,
            client_secret: format!("{id}_secret_{secret_tail}"),
            id: id.clone(),
            created: ctx.now,
            amount,
            currency,
            capture_method,
            status: if card.is_some() {
                Status::RequiresConfirmation
            } else {
                Status::RequiresPaymentMethod
            },
            amount_capturable: 0,
            amount_received: 0,
            description,
            metadata,
            payment_method: card.map(|_| new_id("pm")),
            card,
            requested_payment_method: token.map(str::to_owned),
            payment_method_types: if automatic {
                vec!["card".to_owned()]
            } else {
                types
            },
            automatic_payment_methods: if automatic {
                json!({"enabled": true, "allow_redirects": allow_redirects.unwrap_or("always")})
            } else {
                Value::Null
            },
            last_payment_error: None,
            next_action: None,
            canceled_at: None,
            cancellation_reason: None,
            charge: None,
            idempotency_key: ctx.idempotency_key.clone(),
        };
        let outcome = match card {
            Some(card) if confirm => confirm_card(&mut intent, card, ctx),
            _ => Ok(()),
        };
        let body = intent.json(expand);
        self.intents.insert(id, intent);
        outcome.map(|()| body)
    }

    fn capture(&mut self, id: &str, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&[
            "amount_to_capture",
            "expand[",
            "metadata[",
            "statement_descriptor",
            "statement_descriptor_suffix",
        ])?;
        let requested = p.int("amount_to_capture")?;
        let metadata = p.metadata()?;
        let expand = p.expands_charge();
        let intent = self.intent_mut(id)?;
        if intent.status != Status::RequiresCapture {
            return Err(ApiError::unexpected_state(
                format!(
                    "This PaymentIntent could not be captured because it has a status of {}. \
                     Only a PaymentIntent with one of the following statuses may be \
                     captured: requires_capture.",
                    intent.status.as_str()
                ),
                intent,
            ));
        }
        let amount = requested.unwrap_or(intent.amount_capturable);
        if amount < 1 || amount > intent.amount_capturable {
            return Err(ApiError::invalid(format!(
                "The amount to capture must be between 1 and the amount capturable ({}).",
                intent.amount_capturable
            ))
            .code("amount_too_large")
            .param("amount_to_capture"));
        }
        intent.metadata.extend(metadata);
        intent.status = Status::Succeeded;
        intent.amount_received = amount;
        intent.amount_capturable = 0;
        if let Some(charge) = intent.charge.as_mut() {
            charge.captured = true;
            charge.amount_captured = amount;
        }
        ctx.emit("payment_intent.succeeded", intent.json(false));
        Ok(intent.json(expand))
    }

    fn cancel(&mut self, id: &str, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&["cancellation_reason", "expand["])?;
        let reason = p.one_of(
            "cancellation_reason",
            &[
                "duplicate",
                "fraudulent",
                "requested_by_customer",
                "abandoned",
            ],
        )?;
        let reason = reason.map(str::to_owned);
        let expand = p.expands_charge();
        let now = ctx.now;
        let intent = self.intent_mut(id)?;
        let cancelable = [
            Status::RequiresPaymentMethod,
            Status::RequiresCapture,
            Status::RequiresConfirmation,
            Status::RequiresAction,
        ];
        if !cancelable.contains(&intent.status) {
            return Err(ApiError::unexpected_state(
                format!(
                    "You cannot cancel this PaymentIntent because it has a status of {}. \
                     Only a PaymentIntent with one of the following statuses may be \
                     canceled: requires_payment_method, requires_capture, \
                     requires_confirmation, requires_action, processing.",
                    intent.status.as_str()
                ),
                intent,
            ));
        }
        intent.status = Status::Canceled;
        intent.canceled_at = Some(now);
        intent.cancellation_reason = reason;
        intent.amount_capturable = 0;
        intent.next_action = None;
        ctx.emit("payment_intent.canceled", intent.json(false));
        Ok(intent.json(expand))
    }

    fn refund(&mut self, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&[
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata[",
            "expand[",
        ])?;
        let requested = p.int("amount")?;
        let reason = p
            .one_of(
                "reason",
                &["duplicate", "fraudulent", "requested_by_customer"],
            )?
            .map(str::to_owned);
        let metadata = p.metadata()?;
        let intent_id = match (p.get("payment_intent"), p.get("charge")) {
            (Some(id), _) => id.to_owned(),
            (None, Some(charge)) => self
                .intents
                .values()
                .find(|i| i.charge.as_ref().is_some_and(|c| c.id == charge))
                .map(|i| i.id.clone())
                .ok_or_else(|| {
                    ApiError::missing("charge", charge, "charge").status(StatusCode::BAD_REQUEST)
                })?,
            (None, None) => {
                return Err(ApiError::invalid(
                    "One of the following params should be provided for this request: \
                     payment_intent or charge.",
                )
                .code("parameter_missing"));
            }
        };
        let seq = self.next_seq();
        let intent = self.intents.get_mut(&intent_id).ok_or_else(|| {
            ApiError::missing("payment_intent", &intent_id, "payment_intent")
                .status(StatusCode::BAD_REQUEST)
        })?;
        let charge = match intent.charge.as_mut() {
            Some(charge) if intent.status == Status::Succeeded => charge,
            _ => {
                return Err(ApiError::unexpected_state(
                    format!(
                        "This PaymentIntent ({}) does not have a successful charge to refund.",
                        intent.id
                    ),
                    intent,
                ));
            }
        };
        let remaining = charge.amount_captured - charge.amount_refunded;
        if remaining <= 0 {
            return Err(ApiError::invalid(format!(
                "Charge {} has already been refunded.",
                charge.id
            ))
            .code("charge_already_refunded")
            .saved());
        }
        let amount = requested.unwrap_or(remaining);
        if amount < 1 {
            return Err(
                ApiError::invalid("This value must be greater than or equal to 1.")
                    .code("parameter_invalid_integer")
                    .param("amount"),
            );
        }
        if amount > remaining {
            return Err(ApiError::invalid(format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge \
                 ({remaining})"
            ))
            .code("amount_too_large")
            .param("amount")
            .saved());
        }
        charge.amount_refunded += amount;
        let record = RefundRecord {
            seq,
            id: new_id("re"),
            amount,
            currency: intent.currency.clone(),
            charge: charge.id.clone(),
            payment_intent: intent.id.clone(),
            reason,
            metadata,
            created: ctx.now,
            idempotency_key: ctx.idempotency_key.clone(),
        };
        if let Some(charge) = intent.charge_json() {
            ctx.emit("charge.refunded", charge);
        }
        let body = record.json();
        self.refunds.push(record);
        Ok(body)
    }
}

fn minimum_amount(currency: &str) -> i64 {
    match currency {
        "usd" | "eur" | "cad" | "aud" | "nzd" | "sgd" | "chf" | "jpy" => 50,
        "gbp" => 30,
        _ => 1,
    }
}

/// Confirms the intent with a test card. A decline is an error response, as at Stripe,
/// but the intent it failed is kept (and embedded in the error).
fn confirm_card(
    intent: &mut Intent,
    card: &'static TestCard,
    ctx: &mut Ctx,
) -> Result<(), ApiError> {
    match card.behaviour {
        Behaviour::Approve => {
            authorise(intent, card, ctx);
            Ok(())
        }
        Behaviour::Authenticate => {
            intent.status = Status::RequiresAction;
            intent.next_action = Some(json!({
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {
                    "type": "three_d_secure_redirect",
                    "stripe_js": "https://hooks.stripe.com/3d_secure_2/hosted",
                    "source": new_id("src"),
                },
            }));
            ctx.emit("payment_intent.requires_action", intent.json(false));
            Ok(())
        }
        Behaviour::Decline(failure) => {
            let charge_id = new_id("ch");
            let payment_method = json!({
                "id": intent.payment_method,
                "object": "payment_method",
                "type": "card",
                "card": {"brand": card.brand, "last4": card.last4, "funding": card.funding},
            });
            let error = json!({
                "type": "card_error",
                "code": failure.code,
                "decline_code": failure.decline_code,
                "message": failure.message,
                "charge": charge_id,
                "doc_url": format!("https://stripe.com/docs/error-codes/{}", failure.code.replace('_', "-")),
                "payment_method": payment_method,
            });
            intent.charge = Some(Charge {
                id: charge_id,
                created: ctx.now,
                amount_captured: 0,
                amount_refunded: 0,
                captured: false,
                capture_before: None,
                card,
                payment_method: intent.payment_method.clone().unwrap_or_default(),
                failure: Some(failure),
            });
            intent.status = Status::RequiresPaymentMethod;
            intent.last_payment_error = Some(error.clone());
            // Stripe detaches the failed method so the next attempt must bring a new one.
            intent.payment_method = None;
            ctx.emit("payment_intent.payment_failed", intent.json(false));
            let mut declined =
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "card_error", failure.message);
            if let Some(fields) = error.as_object() {
                declined.error.extend(fields.clone());
            }
            declined.should_retry = Some(false);
            Err(declined.with("payment_intent", intent.json(false)).saved())
        }
    }
}

/// The card network approved: a captured charge, or a hold for manual capture.
fn authorise(intent: &mut Intent, card: &'static TestCard, ctx: &mut Ctx) {
    let manual = intent.manual();
    intent.charge = Some(Charge {
        id: new_id("ch"),
        created: ctx.now,
        amount_captured: if manual { 0 } else { intent.amount },
        amount_refunded: 0,
        captured: !manual,
        capture_before: manual.then_some(ctx.now + HOLD_SECS),
        card,
        payment_method: intent.payment_method.clone().unwrap_or_default(),
        failure: None,
    });
    intent.next_action = None;
    intent.last_payment_error = None;
    if manual {
        intent.status = Status::RequiresCapture;
        intent.amount_capturable = intent.amount;
        ctx.emit(
            "payment_intent.amount_capturable_updated",
            intent.json(false),
        );
    } else {
        intent.status = Status::Succeeded;
        intent.amount_received = intent.amount;
        ctx.emit("payment_intent.succeeded", intent.json(false));
    }
}

// ---------------------------------------------------------------------------------------
// Reads and sandbox endpoints

async fn retrieve_intent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request_id = new_id("req");
    let found = api_key(&sim.config, &headers)
        .and_then(|_| query_params(query.as_deref()))
        .and_then(|params| {
            let ledger = sim.lock();
            let intent = ledger
                .intents
                .get(&id)
                .ok_or_else(|| ApiError::missing("payment_intent", &id, "intent"))?;
            Ok(intent.json(params.expands_charge()))
        });
    match found {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

/// `GET /v1/payment_intents/search?query=…`: Stripe's Search API for the clauses this
/// service uses, `metadata['key']:'value'` and `status:'value'` joined by `AND`
/// (<https://docs.stripe.com/search#search-query-language>). Unlike Stripe's, results are
/// searchable at once.
async fn search_intents(
    State(sim): State<Arc<Sim>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request_id = new_id("req");
    let found = api_key(&sim.config, &headers)
        .and_then(|_| query_params(query.as_deref()))
        .and_then(|params| {
            let clauses = parse_search(params.required("query")?)?;
            let limit = params.int("limit")?.unwrap_or(10).clamp(1, 100);
            let expand = params.list("expand").contains(&"data.latest_charge");
            let ledger = sim.lock();
            let mut intents: Vec<&Intent> = ledger
                .intents
                .values()
                .filter(|intent| {
                    clauses.iter().all(|clause| match clause {
                        Clause::Metadata(key, value) => intent.metadata.get(key) == Some(value),
                        Clause::Status(status) => intent.status.as_str() == status,
                    })
                })
                .collect();
            intents.sort_by_key(|i| std::cmp::Reverse(i.seq));
            let data: Vec<Value> = intents
                .into_iter()
                .take(usize::try_from(limit).unwrap_or(10))
                .map(|i| i.json(expand))
                .collect();
            Ok(json!({
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "has_more": false,
                "next_page": null,
                "data": data,
            }))
        });
    match found {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

enum Clause {
    Metadata(String, String),
    Status(String),
}

/// Parses `field:'value' AND field:'value'`, with `\'` and `\\` escapes in values.
fn parse_search(query: &str) -> Result<Vec<Clause>, ApiError> {
    let invalid = || {
        ApiError::invalid(format!("Invalid search query: {query}"))
            .code("parameter_invalid_string")
            .param("query")
    };
    let mut clauses = Vec::new();
    let mut rest = query.trim();
    loop {
        let (field, after) = rest.split_once(':').ok_or_else(invalid)?;
        let after = after.strip_prefix('\'').ok_or_else(invalid)?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next().ok_or_else(invalid)?.1),
                '\'' => {
                    end = Some(i + 1);
                    break;
                }
                other => value.push(other),
            }
        }
        let end = end.ok_or_else(invalid)?;
        let field = field.trim();
        let clause = if let Some(key) = field
            .strip_prefix("metadata['")
            .and_then(|k| k.strip_suffix("']"))
        {
            Clause::Metadata(key.to_owned(), value)
        } else if field == "status" {
            Clause::Status(value)
        } else {
            return Err(invalid());
        };
        clauses.push(clause);
        rest = after[end..].trim_start();
        if rest.is_empty() {
            return Ok(clauses);
        }
        rest = rest.strip_prefix("AND").ok_or_else(invalid)?.trim_start();
    }
}

async fn retrieve_refund(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let request_id = new_id("req");
    let found = api_key(&sim.config, &headers).and_then(|_| {
        let ledger = sim.lock();
        ledger
            .refunds
            .iter()
            .find(|r| r.id == id)
            .map(RefundRecord::json)
            .ok_or_else(|| ApiError::missing("refund", &id, "id"))
    });
    match found {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

/// Plays the customer's part in 3-D Secure, which the app does with Stripe's SDK.
async fn authenticate(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request_id = new_id("req");
    let outcome = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["outcome"].as_str().map(str::to_owned));
    let succeed = match outcome.as_deref() {
        Some("succeed") => true,
        Some("fail") => false,
        _ => {
            return ApiError::invalid(r#"Send {"outcome": "succeed" | "fail"}."#)
                .param("outcome")
                .into_response(&request_id);
        }
    };
    let mut ctx = Ctx {
        params: Params(Vec::new()),
        idempotency_key: None,
        request_id: request_id.clone(),
        now: unix_now(),
        events: Vec::new(),
    };
    let result = {
        let mut ledger = sim.lock();
        ledger.intent_mut(&id).and_then(|intent| {
            let card = match intent.card {
                Some(card) if intent.status == Status::RequiresAction => card,
                _ => {
                    return Err(ApiError::unexpected_state(
                        format!(
                            "This PaymentIntent has a status of {}; only one in \
                             requires_action can be authenticated.",
                            intent.status.as_str()
                        ),
                        intent,
                    ));
                }
            };
            if succeed {
                authorise(intent, card, &mut ctx);
            } else {
                intent.status = Status::RequiresPaymentMethod;
                intent.next_action = None;
                intent.last_payment_error = Some(json!({
                    "type": "invalid_request_error",
                    "code": "payment_intent_authentication_failure",
                    "message": "The provided PaymentMethod has failed authentication. You can \
                                provide payment_method_data or a new PaymentMethod to attempt \
                                to fulfill this PaymentIntent again.",
                }));
                intent.payment_method = None;
                ctx.emit("payment_intent.payment_failed", intent.json(false));
            }
            Ok(intent.json(true))
        })
    };
    publish(&sim, std::mem::take(&mut ctx.events));
    match result {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

async fn ledger(State(sim): State<Arc<Sim>>) -> Response {
    let body = {
        let ledger = sim.lock();
        let mut intents: Vec<&Intent> = ledger.intents.values().collect();
        intents.sort_by_key(|i| i.seq);
        let intents: Vec<Value> = intents
            .into_iter()
            .map(|i| {
                let charge = i.charge.as_ref();
                json!({
                    "id": i.id,
                    "amount": i.amount,
                    "currency": i.currency,
                    "status": i.status.as_str(),
                    "capture_method": i.capture_method,
                    "amount_capturable": i.amount_capturable,
                    "amount_captured": charge.map_or(0, |c| c.amount_captured),
                    "amount_received": i.amount_received,
                    "amount_refunded": charge.map_or(0, |c| c.amount_refunded),
                    "metadata": i.metadata,
                    "payment_method": i.requested_payment_method,
                    "latest_charge": charge.map(|c| c.id.clone()),
                    "idempotency_key": i.idempotency_key,
                    "created": i.created,
                })
            })
            .collect();
        let mut refunds: Vec<&RefundRecord> = ledger.refunds.iter().collect();
        refunds.sort_by_key(|r| r.seq);
        let refunds: Vec<Value> = refunds
            .into_iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "payment_intent": r.payment_intent,
                    "charge": r.charge,
                    "amount": r.amount,
                    "currency": r.currency,
                    "status": "succeeded",
                    "reason": r.reason,
                    "idempotency_key": r.idempotency_key,
                    "created": r.created,
                })
            })
            .collect();
        let events: Vec<Value> = ledger
            .events
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "type": e.kind,
                    "object_id": e.object_id,
                    "created": e.created,
                    "delivered": e.delivered,
                    "delivery_attempts": e.delivery_attempts,
                })
            })
            .collect();
        json!({
            "payment_intents": intents,
            "refunds": refunds,
            "idempotency_keys": ledger.requests_per_key,
            "requests_without_idempotency_key": ledger.posts_without_key,
            "events": events,
        })
    };
    reply(StatusCode::OK, &body, &new_id("req"), &[])
}

async fn unrecognised(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "Unrecognized request URL ({method}: {}). Please see https://stripe.com/docs.",
            uri.path()
        ),
    )
    .into_response(&new_id("req"))
}

// ---------------------------------------------------------------------------------------
// Webhooks

/// Records the events in the ledger and, when a webhook URL is set, sends each from its own
/// task: like Stripe, deliveries can arrive out of order and are retried on failure.
fn publish(sim: &Arc<Sim>, events: Vec<Value>) {
    if events.is_empty() {
        return;
    }
    {
        let mut ledger = sim.lock();
        for event in &events {
            ledger.events.push(EventRecord {
                id: event["id"].as_str().unwrap_or_default().to_owned(),
                kind: event["type"].as_str().unwrap_or_default().to_owned(),
                object_id: event["data"]["object"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                created: event["created"].as_i64().unwrap_or_default(),
                delivered: false,
                delivery_attempts: 0,
            });
        }
    }
    let Some(url) = sim.config.webhook_url.clone() else {
        return;
    };
    for event in events {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        tokio::spawn(deliver(sim.clone(), url.clone(), id, event.to_string()));
    }
}

async fn deliver(sim: Arc<Sim>, url: String, event_id: String, body: String) {
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let signed = signature::header(&sim.config.webhook_secret, unix_now(), body.as_bytes());
        let sent = sim
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header(
                header::USER_AGENT,
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header("Stripe-Signature", signed)
            .body(body.clone())
            .send()
            .await;
        let delivered = matches!(&sent, Ok(response) if response.status().is_success());
        {
            let mut ledger = sim.lock();
            if let Some(record) = ledger.events.iter_mut().find(|e| e.id == event_id) {
                record.delivery_attempts = attempt;
                record.delivered = delivered;
            }
        }
        if delivered {
            return;
        }
        match sent {
            Ok(response) => {
                tracing::debug!(event = %event_id, status = %response.status(), attempt, "stripe webhook refused")
            }
            Err(e) => {
                tracing::debug!(event = %event_id, error = %e.without_url(), attempt, "stripe webhook failed")
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * 2_u64.pow(attempt - 1))).await;
    }
    tracing::warn!(event = %event_id, "stripe webhook not delivered; giving up");
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sim() -> Simulator {
        start(StripeSimConfig::default(), Faults::new(0, 0.0))
            .await
            .unwrap()
    }

    fn create(
        http: &reqwest::Client,
        sim: &Simulator,
        key: &str,
        form: &str,
    ) -> reqwest::RequestBuilder {
        create_as(http, sim, "sk_test_sim", key, form)
    }

    fn create_as(
        http: &reqwest::Client,
        sim: &Simulator,
        api_key: &str,
        key: &str,
        form: &str,
    ) -> reqwest::RequestBuilder {
        http.post(format!("{}/v1/payment_intents", sim.base_url))
            .bearer_auth(api_key)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
    }

    const VISA: &str = "amount=450&currency=usd&payment_method=pm_card_visa&confirm=true\
        &automatic_payment_methods[enabled]=true&automatic_payment_methods[allow_redirects]=never";

    #[tokio::test]
    async fn a_duplicate_in_flight_gets_409_idempotency_key_in_use() {
        let sim = sim().await;
        let http = reqwest::Client::new();
        let (a, b) = tokio::join!(
            create(&http, &sim, "dup", VISA).send(),
            create(&http, &sim, "dup", VISA).send()
        );
        let mut answers = Vec::new();
        for response in [a.unwrap(), b.unwrap()] {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            answers.push((status, body["error"]["code"].as_str().map(str::to_owned)));
        }
        answers.sort();
        assert_eq!(
            answers,
            [
                (200, None),
                (409, Some("idempotency_key_in_use".to_owned()))
            ]
        );

        let replay = create(&http, &sim, "dup", VISA).send().await.unwrap();
        assert_eq!(replay.status(), 200);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    }

    async fn faults(sim: &Simulator, update: Value) {
        let status = reqwest::Client::new()
            .put(format!("{}/_sandbox/faults", sim.base_url))
            .json(&update)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }

    #[tokio::test]
    async fn a_slow_charge_holds_its_key_in_flight_for_as_long_as_it_takes() {
        let sim = sim().await;
        faults(
            &sim,
            json!({"slow_next": {"POST /v1/payment_intents": {"ms": 400}}}),
        )
        .await;
        let http = reqwest::Client::new();
        let first = tokio::spawn(create(&http, &sim, "slow", VISA).send());
        // The second request goes once the first has arrived and holds the key.
        let ledger_url = format!("{}/_sandbox/ledger", sim.base_url);
        for _ in 0..200 {
            let ledger: Value = http
                .get(&ledger_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if ledger["idempotency_keys"]["slow"].as_u64() >= Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = create(&http, &sim, "slow", VISA).send().await.unwrap();
        assert_eq!(second.status(), 409);
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), 200);
        let after = create(&http, &sim, "slow", VISA).send().await.unwrap();
        assert_eq!(after.status(), 200);
        assert_eq!(after.headers()["idempotent-replayed"], "true");
    }

    #[tokio::test]
    async fn a_500_after_acting_is_saved_and_replayed_and_the_intent_is_found_by_search() {
        let sim = sim().await;
        faults(
            &sim,
            json!({"lose_next": {"POST /v1/payment_intents": {"status": 500}}}),
        )
        .await;
        let http = reqwest::Client::new();
        let form = format!("{VISA}&metadata[order_id]=ord_1");
        let first = create(&http, &sim, "k500", &form).send().await.unwrap();
        assert_eq!(first.status(), 500);
        let again = create(&http, &sim, "k500", &form).send().await.unwrap();
        assert_eq!(again.status(), 500, "the saved 500 is replayed");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let found: Value = http
            .get(format!("{}/v1/payment_intents/search", sim.base_url))
            .bearer_auth("sk_test_sim")
            .query(&[("query", "metadata['order_id']:'ord_1'")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(found["object"], "search_result");
        assert_eq!(found["data"].as_array().map(Vec::len), Some(1));
        assert_eq!(found["data"][0]["status"], "succeeded");
        let none: Value = http
            .get(format!("{}/v1/payment_intents/search", sim.base_url))
            .bearer_auth("sk_test_sim")
            .query(&[(
                "query",
                "metadata['order_id']:'ord_2' AND status:'succeeded'",
            )])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(none["data"], json!([]));
    }

    #[tokio::test]
    async fn stripe_refusals_have_stripe_shapes() {
        let sim = sim().await;
        let http = reqwest::Client::new();

        let anonymous = http
            .post(format!("{}/v1/payment_intents", sim.base_url))
            .body(VISA)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
        let body: Value = anonymous.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let typo = create(&http, &sim, "t1", &format!("{VISA}&ammount=5"))
            .send()
            .await
            .unwrap();
        assert_eq!(typo.status(), 400);
        let body: Value = typo.json().await.unwrap();
        assert_eq!(body["error"]["code"], "parameter_unknown");
        assert_eq!(body["error"]["param"], "ammount");
        // A validation failure is not saved: the same key works once the request is fixed.
        assert_eq!(
            create(&http, &sim, "t1", VISA)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        let redirects = "amount=450&currency=usd&payment_method=pm_card_visa&confirm=true";
        let body: Value = create(&http, &sim, "t2", redirects)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["error"]["param"], "return_url");

        let small = create(&http, &sim, "t3", &VISA.replace("amount=450", "amount=10"))
            .send()
            .await
            .unwrap();
        let body: Value = small.json().await.unwrap();
        assert_eq!(body["error"]["code"], "amount_too_small");

        let nowhere = http
            .get(format!("{}/v1/charges", sim.base_url))
            .bearer_auth("sk_test_sim")
            .send()
            .await
            .unwrap();
        assert_eq!(nowhere.status(), 404);
        let body: Value = nowhere.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn idempotency_keys_are_scoped_per_api_key() {
        let sim = sim().await;
        let http = reqwest::Client::new();
        let first: Value = create(&http, &sim, "shared", VISA)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let other_account: Value = create_as(&http, &sim, "sk_test_other", "shared", VISA)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(first["id"], other_account["id"]);
        // Unexpanded, latest_charge is the charge id, as at Stripe.
        assert!(first["latest_charge"].as_str().unwrap().starts_with("ch_"));
    }

    #[tokio::test]
    async fn events_are_listed_even_without_a_webhook_url() {
        let sim = sim().await;
        let http = reqwest::Client::new();
        let form = VISA.replace("pm_card_visa", "pm_card_chargeDeclined");
        let declined = create(&http, &sim, "e1", &form).send().await.unwrap();
        assert_eq!(declined.status(), 402);
        let unkeyed = http
            .post(format!("{}/v1/payment_intents", sim.base_url))
            .bearer_auth("sk_test_sim")
            .body(VISA)
            .send()
            .await
            .unwrap();
        assert_eq!(unkeyed.status(), 200);
        let ledger: Value = http
            .get(format!("{}/_sandbox/ledger", sim.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let types: Vec<&str> = ledger["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["payment_intent.payment_failed", "payment_intent.succeeded"]
        );
        assert_eq!(ledger["requests_without_idempotency_key"], 1);
        assert_eq!(
            ledger["payment_intents"][0]["status"],
            "requires_payment_method"
        );
        assert_eq!(
            ledger["payment_intents"][0]["payment_method"],
            "pm_card_chargeDeclined"
        );
        assert_eq!(ledger["events"][0]["delivered"], false);
    }
}
