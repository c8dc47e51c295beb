//! Stripe's REST API, spoken exactly as Stripe documents it so the same client works
//! against the simulator, test mode and live mode: form-encoded requests with bracketed
//! nested keys, JSON responses, a bearer secret key, and an `Idempotency-Key` on every POST.
//!
//! Every write carries the caller's idempotency key, which is why all calls are
//! retried: a retry after a timeout replays Stripe's first answer instead of
//! charging twice.

use super::{Call, Guard, Guards, Rejection, System, UpstreamError};
use crate::{config::StripeSettings, domain::Money};
use reqwest::{RequestBuilder, Url, header::HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt};

/// Pinned so that a change of the account's default API version in the Dashboard cannot
/// change the shapes decoded here (`latest_charge`, `automatic_payment_methods`).
pub const API_VERSION: &str = "2024-06-20";

/// The shared Stripe client. Cheap to clone: the connection pool is shared.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: Url,
    secret_key: SecretString,
    /// Stripe's breaker and retry budget.
    guard: Guard,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Whether the card is charged at once or only authorised (held) until a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    Automatic,
    /// Stripe's default since 2024 for new intents; behaves like `Automatic` for cards.
    AutomaticAsync,
    Manual,
    #[serde(other)]
    Unknown,
}

impl CaptureMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMethod::Automatic => "automatic",
            CaptureMethod::AutomaticAsync => "automatic_async",
            CaptureMethod::Manual => "manual",
            CaptureMethod::Unknown => "unknown",
        }
    }
}

/// What to charge. The PaymentIntent is confirmed in the same call.
#[derive(Clone, Debug)]
pub struct CreatePaymentIntent {
    /// Sent in minor units; Stripe's zero-decimal currencies agree with ISO 4217 for the
    /// currencies this app sells in.
    pub amount: Money,
    /// A PaymentMethod id (`pm_…`) from the app's Stripe SDK, or a test one (`pm_card_visa`).
    pub payment_method: String,
    pub capture_method: CaptureMethod,
    /// Shown to the customer on receipts and in the Dashboard.
    pub description: Option<String>,
    /// At most 50 keys of at most 40 characters, values at most 500 (Stripe's limits).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentIntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Canceled,
    /// A status added by Stripe after this code was written.
    #[serde(other)]
    Unknown,
}

impl PaymentIntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentIntentStatus::RequiresPaymentMethod => "requires_payment_method",
            PaymentIntentStatus::RequiresConfirmation => "requires_confirmation",
            PaymentIntentStatus::RequiresAction => "requires_action",
            PaymentIntentStatus::Processing => "processing",
            PaymentIntentStatus::RequiresCapture => "requires_capture",
            PaymentIntentStatus::Succeeded => "succeeded",
            PaymentIntentStatus::Canceled => "canceled",
            PaymentIntentStatus::Unknown => "unknown",
        }
    }

    fn parse(raw: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(raw.to_owned()))
            .unwrap_or(PaymentIntentStatus::Unknown)
    }
}

impl fmt::Display for PaymentIntentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub status: PaymentIntentStatus,
    pub amount: i64,
    #[serde(default)]
    pub amount_capturable: i64,
    #[serde(default)]
    pub amount_received: i64,
    /// Lower-case ISO code, as Stripe writes it.
    pub currency: String,
    #[serde(default)]
    pub capture_method: Option<CaptureMethod>,
    /// Lets the app finish 3-D Secure with Stripe's SDK. Kept out of `Debug` so it does not
    /// end up in logs.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub latest_charge: Option<ChargeOrId>,
    #[serde(default)]
    pub last_payment_error: Option<StripeErrorBody>,
    /// What the customer must do next (`use_stripe_sdk` for 3-D Secure), as Stripe sent it.
    #[serde(default)]
    pub next_action: Option<serde_json::Value>,
    #[serde(default)]
    pub cancellation_reason: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub created: i64,
}

impl fmt::Debug for PaymentIntent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentIntent")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("amount", &self.amount)
            .field("amount_capturable", &self.amount_capturable)
            .field("amount_received", &self.amount_received)
            .field("currency", &self.currency)
            .field("capture_method", &self.capture_method)
            .field("latest_charge", &self.latest_charge)
            .field("last_payment_error", &self.last_payment_error)
            .field("next_action", &self.next_action)
            .field("cancellation_reason", &self.cancellation_reason)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl PaymentIntent {
    /// Brand and last four digits of the card, when the latest charge came back expanded.
    pub fn card(&self) -> Option<(&str, &str)> {
        let card = self
            .charge()?
            .payment_method_details
            .as_ref()?
            .card
            .as_ref()?;
        Some((card.brand.as_str(), card.last4.as_str()))
    }

    /// Unix time after which an uncaptured authorisation lapses (about 7 days for cards).
    pub fn capture_before(&self) -> Option<i64> {
        self.charge()?
            .payment_method_details
            .as_ref()?
            .card
            .as_ref()?
            .capture_before
    }

    /// The latest charge, when it came back expanded.
    pub fn charge(&self) -> Option<&Charge> {
        match self.latest_charge.as_ref()? {
            ChargeOrId::Charge(charge) => Some(charge),
            ChargeOrId::Id(_) => None,
        }
    }

    /// The latest charge's id, expanded or not.
    pub fn latest_charge_id(&self) -> Option<&str> {
        match self.latest_charge.as_ref()? {
            ChargeOrId::Charge(charge) => Some(&charge.id),
            ChargeOrId::Id(id) => Some(id),
        }
    }
}

/// Stripe returns an id unless the request asked for `expand[]=latest_charge`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChargeOrId {
    Id(String),
    Charge(Box<Charge>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub amount_captured: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub captured: bool,
    #[serde(default)]
    pub refunded: bool,
    /// `succeeded`, `pending` or `failed`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub payment_method_details: Option<PaymentMethodDetails>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentMethodDetails {
    #[serde(default)]
    pub card: Option<CardDetails>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardDetails {
    pub brand: String,
    pub last4: String,
    #[serde(default)]
    pub capture_before: Option<i64>,
}

/// Stripe's error object, as found in `last_payment_error` and under `error`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StripeErrorBody {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub status: RefundStatus,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
}

/// One page of a Stripe list object (`"object": "list"`).
#[derive(Clone, Debug, Deserialize)]
pub struct ListPage<T> {
    pub data: Vec<T>,
    /// Whether more match after this page (ask again with `starting_after` = the last id).
    #[serde(default)]
    pub has_more: bool,
}

/// Stripe's `search_result` list object.
#[derive(Clone, Debug, Deserialize)]
struct SearchResult<T> {
    data: Vec<T>,
}

/// A card the issuer (or 3-D Secure) refused: the customer should try another card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decline {
    /// `card_declined`, `expired_card`, `incorrect_cvc`, …
    pub code: String,
    /// The issuer's reason (`insufficient_funds`, `generic_decline`, …) when it gave one.
    pub decline_code: Option<String>,
    /// Stripe's message, written to be shown to the cardholder.
    pub message: String,
    /// The intent the failed attempt belongs to; it can be retried with another card.
    pub payment_intent_id: Option<String>,
    pub payment_intent_status: Option<PaymentIntentStatus>,
}

/// Reads Stripe's `{"error": {...}}`. `detail` keeps `type`, `decline_code` and the
/// embedded `payment_intent` (without its client secret, since rejections get logged).
pub(crate) fn parse_stripe_error(body: &serde_json::Value) -> Rejection {
    let error = &body["error"];
    let kind = error["type"].as_str();
    let code = error["code"]
        .as_str()
        .or(kind)
        .unwrap_or("unknown")
        .to_owned();
    let mut payment_intent = error["payment_intent"].clone();
    if let Some(object) = payment_intent.as_object_mut() {
        object.remove("client_secret");
    }
    // https://docs.stripe.com/error-codes#idempotency-key-in-use
    let in_progress = code == "idempotency_key_in_use";
    Rejection {
        in_progress,
        code,
        message: error["message"].as_str().unwrap_or_default().to_owned(),
        field: error["param"].as_str().map(str::to_owned),
        detail: serde_json::json!({
            "type": kind,
            "decline_code": error["decline_code"].as_str(),
            "payment_intent": payment_intent,
        }),
    }
}

/// The decline in a refusal, or `None` when Stripe refused for another reason (a bad
/// request, a wrong state, an idempotency conflict).
pub fn decline(rejection: &Rejection) -> Option<Decline> {
    if rejection.detail["type"].as_str() != Some("card_error") {
        return None;
    }
    let intent = &rejection.detail["payment_intent"];
    Some(Decline {
        code: rejection.code.clone(),
        decline_code: rejection.detail["decline_code"].as_str().map(str::to_owned),
        message: rejection.message.clone(),
        payment_intent_id: intent["id"].as_str().map(str::to_owned),
        payment_intent_status: intent["status"].as_str().map(PaymentIntentStatus::parse),
    })
}

/// What a failed payment's code means for the order: Stripe's decline codes (and a
/// payment method it does not know) are a declined card; a failed 3-D Secure is an
/// authentication failure; anything else a payment that failed.
pub fn payment_failure(code: &str) -> crate::domain::Failure {
    use crate::domain::Failure;
    match code {
        "card_declined"
        | "expired_card"
        | "incorrect_cvc"
        | "incorrect_number"
        | "insufficient_funds"
        | "processing_error"
        | "payment_method_invalid" => Failure::CardDeclined,
        "payment_intent_authentication_failure" | "authentication_failed" => {
            Failure::AuthenticationFailed
        }
        _ => Failure::PaymentFailed,
    }
}

/// The decline behind an error, if it is one.
pub fn decline_of(error: &UpstreamError) -> Option<Decline> {
    error
        .rejection()
        .and_then(|(_, rejection)| decline(rejection))
}

/// True when the idempotency key was reused with other parameters, or its first request
/// was still running after our retries: a bug or a race on our side, never the customer's.
pub fn is_idempotency_error(rejection: &Rejection) -> bool {
    rejection.detail["type"].as_str() == Some("idempotency_error")
        || rejection.code == "idempotency_error"
}

/// True when Stripe does not know the payment method the app sent (`resource_missing` on
/// the `payment_method` parameter): the customer's to fix, with another card.
/// See <https://docs.stripe.com/error-codes#resource-missing>.
pub fn is_unknown_payment_method(rejection: &Rejection) -> bool {
    rejection.code == "resource_missing" && rejection.field.as_deref() == Some("payment_method")
}

type Form = Vec<(String, String)>;

fn pair(key: &str, value: impl Into<String>) -> (String, String) {
    (key.to_owned(), value.into())
}

impl StripeClient {
    fn call(&self, operation: &'static str) -> Call<'_> {
        Call {
            system: System::Stripe,
            operation,
            parse_error: parse_stripe_error,
            guard: &self.guard,
        }
    }

    pub fn new(
        base_url: &str,
        settings: &StripeSettings,
        guards: &Guards,
    ) -> Result<Self, UpstreamError> {
        let base = Url::parse(base_url)
            .map_err(|e| UpstreamError::Setup(format!("stripe base url: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(UpstreamError::Setup(
                "stripe base url cannot take a path".into(),
            ));
        }
        Ok(Self {
            http: super::http_client(settings.timeouts())?,
            base,
            secret_key: settings.secret_key.clone(),
            guard: guards.get(System::Stripe).clone(),
        })
    }

    /// Confirms a new PaymentIntent with the given card at once.
    pub async fn create_payment_intent(
        &self,
        params: &CreatePaymentIntent,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, UpstreamError> {
        let mut form: Form = vec![
            pair("amount", params.amount.minor.to_string()),
            pair(
                "currency",
                params.amount.currency.code().to_ascii_lowercase(),
            ),
            pair("payment_method", params.payment_method.clone()),
            pair("confirm", "true"),
            pair("capture_method", params.capture_method.as_str()),
            // With no return_url, confirm=true is only accepted when redirect-based methods
            // are ruled out; cards still get 3-D Secure through the app's SDK.
            pair("automatic_payment_methods[enabled]", "true"),
            pair("automatic_payment_methods[allow_redirects]", "never"),
            pair("expand[]", "latest_charge"),
        ];
        if let Some(description) = &params.description {
            form.push(pair("description", description.clone()));
        }
        for (key, value) in &params.metadata {
            form.push((format!("metadata[{key}]"), value.clone()));
        }
        let request = self.post(&["v1", "payment_intents"], idempotency_key, &form)?;
        self.call("payment_intents.create").json(request).await
    }

    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, UpstreamError> {
        let request = self
            .authorised(self.http.get(self.url(&["v1", "payment_intents", id])))
            .query(&[("expand[]", "latest_charge")]);
        self.call("payment_intents.retrieve").json(request).await
    }

    /// The PaymentIntents whose `metadata[key]` is `value`, newest first, with their latest
    /// charge expanded: how to find an intent whose creation answer was lost for good (a
    /// replayed 500 under its idempotency key).
    ///
    /// Stripe's Search API (<https://docs.stripe.com/api/payment_intents/search>, query
    /// language <https://docs.stripe.com/search#search-query-language>) is eventually
    /// consistent: an intent is usually searchable within a minute of its creation, so
    /// "none found" right after a creation is not proof that none exists.
    pub async fn search_payment_intents_by_metadata(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<PaymentIntent>, UpstreamError> {
        let quote = |raw: &str| raw.replace('\\', "\\\\").replace('\'', "\\'");
        let query = format!("metadata['{}']:'{}'", quote(key), quote(value));
        let request = self
            .authorised(
                self.http
                    .get(self.url(&["v1", "payment_intents", "search"])),
            )
            .query(&[
                ("query", query.as_str()),
                ("limit", "10"),
                ("expand[]", "data.latest_charge"),
            ]);
        let page: SearchResult<PaymentIntent> =
            self.call("payment_intents.search").json(request).await?;
        Ok(page.data)
    }

    /// One page of the PaymentIntents created at or after `created_gte` (Unix seconds),
    /// newest first, `limit` (1–100) of them, older than `starting_after` when given, with
    /// their latest charge expanded; the page says whether more follow (`has_more`).
    /// Stripe's list endpoint (<https://docs.stripe.com/api/payment_intents/list>), unlike
    /// Search, shows an intent as soon as it exists: reconciliation pages through it.
    pub async fn list_payment_intents(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
        limit: u8,
    ) -> Result<ListPage<PaymentIntent>, UpstreamError> {
        let created = created_gte.to_string();
        let limit = limit.clamp(1, 100).to_string();
        let mut query = vec![
            ("created[gte]", created.as_str()),
            ("limit", limit.as_str()),
            ("expand[]", "data.latest_charge"),
        ];
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        let request = self
            .authorised(self.http.get(self.url(&["v1", "payment_intents"])))
            .query(&query);
        self.call("payment_intents.list").json(request).await
    }

    /// Captures a held amount; `None` captures all of it, less releases the rest.
    pub async fn capture_payment_intent(
        &self,
        id: &str,
        amount_to_capture: Option<i64>,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, UpstreamError> {
        let mut form: Form = vec![pair("expand[]", "latest_charge")];
        if let Some(amount) = amount_to_capture {
            form.push(pair("amount_to_capture", amount.to_string()));
        }
        let request = self.post(
            &["v1", "payment_intents", id, "capture"],
            idempotency_key,
            &form,
        )?;
        self.call("payment_intents.capture").json(request).await
    }

    /// Cancels an intent that has not been charged; releases a hold.
    /// `cancellation_reason` is one of Stripe's `duplicate`, `fraudulent`,
    /// `requested_by_customer`, `abandoned`.
    pub async fn cancel_payment_intent(
        &self,
        id: &str,
        cancellation_reason: Option<&str>,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, UpstreamError> {
        let mut form: Form = vec![pair("expand[]", "latest_charge")];
        if let Some(reason) = cancellation_reason {
            form.push(pair("cancellation_reason", reason));
        }
        let request = self.post(
            &["v1", "payment_intents", id, "cancel"],
            idempotency_key,
            &form,
        )?;
        self.call("payment_intents.cancel").json(request).await
    }

    /// Refunds a succeeded intent, in full when `amount` is `None`.
    pub async fn create_refund(
        &self,
        payment_intent_id: &str,
        amount: Option<i64>,
        idempotency_key: &str,
    ) -> Result<Refund, UpstreamError> {
        let mut form: Form = vec![pair("payment_intent", payment_intent_id)];
        if let Some(amount) = amount {
            form.push(pair("amount", amount.to_string()));
        }
        let request = self.post(&["v1", "refunds"], idempotency_key, &form)?;
        self.call("refunds.create").json(request).await
    }

    /// Path segments are percent-encoded, so an id can never reach another route.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `new` refused bases that cannot take a path, so this always succeeds.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn authorised(&self, request: RequestBuilder) -> RequestBuilder {
        request
            .bearer_auth(self.secret_key.expose_secret())
            .header("Stripe-Version", API_VERSION)
    }

    /// Refuses a key Stripe would refuse, before anything is sent: a bad key is our bug, and
    /// reqwest would otherwise report it as an unsendable request.
    fn post(
        &self,
        segments: &[&str],
        idempotency_key: &str,
        form: &Form,
    ) -> Result<RequestBuilder, UpstreamError> {
        let key = HeaderValue::from_str(idempotency_key)
            .ok()
            .filter(|_| (1..=255).contains(&idempotency_key.len()))
            .ok_or_else(|| {
                UpstreamError::Setup(
                    "a Stripe idempotency key is 1 to 255 visible ASCII characters".into(),
                )
            })?;
        Ok(self
            .authorised(self.http.post(self.url(segments)))
            .header("Idempotency-Key", key)
            .form(form))
    }
}

#[cfg(test)]
mod tests;
