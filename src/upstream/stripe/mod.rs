//! Stripe's REST API, spoken exactly as Stripe documents it so the same client works
//! against the simulator, test mode and live mode: form-encoded requests with bracketed
//! nested keys, JSON responses, a bearer secret key, and an `Idempotency-Key` on every POST.
//!
//! Every write carries the caller's idempotency key, which is why all calls are
//! retried: a retry after a timeout replays Stripe's first answer instead of
//! charging twice.

use super::{Call, Rejection, System, UpstreamError};
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

fn call(operation: &'static str) -> Call {
    Call {
        system: System::Stripe,
        operation,
        parse_error: parse_stripe_error,
    }
}

type Form = Vec<(String, String)>;

fn pair(key: &str, value: impl Into<String>) -> (String, String) {
    (key.to_owned(), value.into())
}

impl StripeClient {
    pub fn new(base_url: &str, settings: &StripeSettings) -> Result<Self, UpstreamError> {
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
        call("payment_intents.create").json(request).await
    }

    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, UpstreamError> {
        let request = self
            .authorised(self.http.get(self.url(&["v1", "payment_intents", id])))
            .query(&[("expand[]", "latest_charge")]);
        call("payment_intents.retrieve").json(request).await
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
            call("payment_intents.search").json(request).await?;
        Ok(page.data)
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
        call("payment_intents.capture").json(request).await
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
        call("payment_intents.cancel").json(request).await
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
        call("refunds.create").json(request).await
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
mod tests {
    use super::*;
    use crate::domain::Currency;
    use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
    use cbtl_sandbox::{
        Simulator,
        faults::{FaultUpdate, Faults, Loss, LostAs},
        stripe::StripeSimConfig,
    };
    use std::time::Duration;
    use tokio::sync::mpsc;

    const WEBHOOK_SECRET: &str = "whsec_test_secret";

    async fn simulator(webhook_url: Option<String>) -> (Simulator, StripeClient) {
        let sim = cbtl_sandbox::stripe::start(
            StripeSimConfig {
                webhook_url,
                webhook_secret: WEBHOOK_SECRET.to_owned(),
                ..StripeSimConfig::default()
            },
            Faults::new(0, 0.0),
        )
        .await
        .unwrap();
        let settings = StripeSettings::default();
        let client = StripeClient::new(&sim.base_url, &settings).unwrap();
        (sim, client)
    }

    fn charge(amount: i64, payment_method: &str, capture: CaptureMethod) -> CreatePaymentIntent {
        CreatePaymentIntent {
            amount: Money::new(amount, Currency::usd()),
            payment_method: payment_method.to_owned(),
            capture_method: capture,
            description: Some("CBTL order".to_owned()),
            metadata: [("order_id".to_owned(), "ord_1".to_owned())].into(),
        }
    }

    async fn ledger(sim: &Simulator) -> serde_json::Value {
        reqwest::get(format!("{}/_sandbox/ledger", sim.base_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn rejection(err: &UpstreamError) -> (u16, Rejection) {
        let (status, rejection) = err.rejection().expect("a rejection");
        (status, rejection.clone())
    }

    /// The simulator's events claim the version this client pins.
    #[test]
    fn the_simulator_speaks_the_pinned_api_version() {
        assert_eq!(cbtl_sandbox::stripe::API_VERSION, API_VERSION);
    }

    #[tokio::test]
    async fn automatic_capture_succeeds_with_card_details() {
        let (sim, client) = simulator(None).await;
        let pi = client
            .create_payment_intent(&charge(450, "pm_card_visa", CaptureMethod::Automatic), "k1")
            .await
            .unwrap();
        assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
        assert_eq!(pi.amount, 450);
        assert_eq!(pi.amount_received, 450);
        assert_eq!(pi.currency, "usd");
        assert_eq!(pi.card(), Some(("visa", "4242")));
        assert_eq!(pi.metadata["order_id"], "ord_1");
        assert!(pi.client_secret.as_deref().unwrap().starts_with(&pi.id));
        assert!(!format!("{pi:?}").contains("secret"));

        let again = client.retrieve_payment_intent(&pi.id).await.unwrap();
        assert_eq!(again.status, PaymentIntentStatus::Succeeded);
        assert_eq!(again.card(), Some(("visa", "4242")));

        let ledger = ledger(&sim).await;
        assert_eq!(ledger["payment_intents"][0]["idempotency_key"], "k1");
        assert_eq!(ledger["payment_intents"][0]["amount_received"], 450);
    }

    #[tokio::test]
    async fn manual_capture_holds_then_captures() {
        let (_sim, client) = simulator(None).await;
        let pi = client
            .create_payment_intent(
                &charge(900, "pm_card_mastercard", CaptureMethod::Manual),
                "hold-1",
            )
            .await
            .unwrap();
        assert_eq!(pi.status, PaymentIntentStatus::RequiresCapture);
        assert_eq!(pi.amount_capturable, 900);
        assert_eq!(pi.amount_received, 0);
        assert_eq!(pi.card(), Some(("mastercard", "4444")));
        let hold = pi.capture_before().unwrap() - chrono::Utc::now().timestamp();
        assert!((6 * 86_400..=7 * 86_400).contains(&hold), "{hold}");

        let too_much = client
            .capture_payment_intent(&pi.id, Some(901), "cap-0")
            .await
            .unwrap_err();
        assert_eq!(rejection(&too_much).0, 400);

        let captured = client
            .capture_payment_intent(&pi.id, Some(800), "cap-1")
            .await
            .unwrap();
        assert_eq!(captured.status, PaymentIntentStatus::Succeeded);
        assert_eq!(captured.amount_received, 800);

        let twice = client
            .capture_payment_intent(&pi.id, None, "cap-2")
            .await
            .unwrap_err();
        let (status, refusal) = rejection(&twice);
        assert_eq!(status, 400);
        assert_eq!(refusal.code, "payment_intent_unexpected_state");
        assert!(decline(&refusal).is_none());
    }

    #[tokio::test]
    async fn declines_are_parsed_with_the_failed_intent() {
        let (sim, client) = simulator(None).await;
        let err = client
            .create_payment_intent(
                &charge(450, "pm_card_chargeDeclined", CaptureMethod::Automatic),
                "d1",
            )
            .await
            .unwrap_err();
        let (status, refusal) = rejection(&err);
        assert_eq!(status, 402);
        assert_eq!(refusal.code, "card_declined");
        let declined = decline(&refusal).unwrap();
        assert_eq!(declined.decline_code.as_deref(), Some("generic_decline"));
        assert_eq!(
            declined.payment_intent_status,
            Some(PaymentIntentStatus::RequiresPaymentMethod)
        );
        let pi_id = declined.payment_intent_id.clone().unwrap();
        assert!(pi_id.starts_with("pi_"));
        assert!(refusal.detail["payment_intent"]["client_secret"].is_null());

        let insufficient = client
            .create_payment_intent(
                &charge(
                    450,
                    "pm_card_chargeDeclinedInsufficientFunds",
                    CaptureMethod::Automatic,
                ),
                "d2",
            )
            .await
            .unwrap_err();
        assert_eq!(
            decline_of(&insufficient).unwrap().decline_code.as_deref(),
            Some("insufficient_funds")
        );

        // Stripe replays a decline for the same key rather than trying the card again.
        let replay = client
            .create_payment_intent(
                &charge(450, "pm_card_chargeDeclined", CaptureMethod::Automatic),
                "d1",
            )
            .await
            .unwrap_err();
        assert_eq!(decline_of(&replay), Some(declined));

        let failed = client.retrieve_payment_intent(&pi_id).await.unwrap();
        assert_eq!(failed.status, PaymentIntentStatus::RequiresPaymentMethod);
        let last = failed.last_payment_error.unwrap();
        assert_eq!(last.code.as_deref(), Some("card_declined"));
        assert_eq!(ledger(&sim).await["idempotency_keys"]["d1"], 2);

        let unknown = client
            .create_payment_intent(&charge(450, "pm_card_nope", CaptureMethod::Automatic), "d3")
            .await
            .unwrap_err();
        let (status, refusal) = rejection(&unknown);
        assert_eq!(status, 400);
        assert_eq!(refusal.code, "resource_missing");
        assert_eq!(refusal.field.as_deref(), Some("payment_method"));
        assert!(decline(&refusal).is_none());
    }

    #[tokio::test]
    async fn three_d_secure_is_completed_through_the_sandbox() {
        let (sim, client) = simulator(None).await;
        let http = reqwest::Client::new();
        for (key, capture, outcome, expected) in [
            (
                "3ds-1",
                CaptureMethod::Automatic,
                "succeed",
                PaymentIntentStatus::Succeeded,
            ),
            (
                "3ds-2",
                CaptureMethod::Manual,
                "succeed",
                PaymentIntentStatus::RequiresCapture,
            ),
            (
                "3ds-3",
                CaptureMethod::Automatic,
                "fail",
                PaymentIntentStatus::RequiresPaymentMethod,
            ),
        ] {
            let pi = client
                .create_payment_intent(&charge(450, "pm_card_authenticationRequired", capture), key)
                .await
                .unwrap();
            assert_eq!(pi.status, PaymentIntentStatus::RequiresAction);
            assert_eq!(pi.next_action.as_ref().unwrap()["type"], "use_stripe_sdk");
            let secret = pi.client_secret.clone().unwrap();
            assert!(secret.starts_with(&format!("{}_secret_", pi.id)));

            let response = http
                .post(format!(
                    "{}/_sandbox/payment_intents/{}/authenticate",
                    sim.base_url, pi.id
                ))
                .json(&serde_json::json!({ "outcome": outcome }))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
            let after = client.retrieve_payment_intent(&pi.id).await.unwrap();
            assert_eq!(after.status, expected, "{key}");
            if outcome == "fail" {
                assert_eq!(
                    after.last_payment_error.unwrap().code.as_deref(),
                    Some("payment_intent_authentication_failure")
                );
            } else {
                assert_eq!(after.card().map(|c| c.0), Some("visa"));
            }
        }
    }

    #[tokio::test]
    async fn cancel_releases_a_hold_once() {
        let (_sim, client) = simulator(None).await;
        let pi = client
            .create_payment_intent(&charge(450, "pm_card_visa", CaptureMethod::Manual), "c1")
            .await
            .unwrap();
        let canceled = client
            .cancel_payment_intent(&pi.id, Some("requested_by_customer"), "c1-cancel")
            .await
            .unwrap();
        assert_eq!(canceled.status, PaymentIntentStatus::Canceled);
        assert_eq!(
            canceled.cancellation_reason.as_deref(),
            Some("requested_by_customer")
        );
        let err = client
            .cancel_payment_intent(&pi.id, None, "c1-cancel-again")
            .await
            .unwrap_err();
        assert_eq!(rejection(&err).1.code, "payment_intent_unexpected_state");
        let err = client
            .capture_payment_intent(&pi.id, None, "c1-capture")
            .await
            .unwrap_err();
        assert_eq!(rejection(&err).1.code, "payment_intent_unexpected_state");
    }

    #[tokio::test]
    async fn refunds_stop_at_the_amount_received() {
        let (sim, client) = simulator(None).await;
        let pi = client
            .create_payment_intent(
                &charge(1000, "pm_card_visa", CaptureMethod::Automatic),
                "r1",
            )
            .await
            .unwrap();
        let partial = client
            .create_refund(&pi.id, Some(300), "r1-refund-1")
            .await
            .unwrap();
        assert_eq!(partial.status, RefundStatus::Succeeded);
        assert_eq!(partial.amount, 300);
        assert_eq!(partial.payment_intent.as_deref(), Some(pi.id.as_str()));

        let over = client
            .create_refund(&pi.id, Some(701), "r1-refund-2")
            .await
            .unwrap_err();
        let (status, refusal) = rejection(&over);
        assert_eq!(status, 400);
        assert_eq!(refusal.code, "amount_too_large");

        let rest = client
            .create_refund(&pi.id, None, "r1-refund-3")
            .await
            .unwrap();
        assert_eq!(rest.amount, 700);
        let again = client
            .create_refund(&pi.id, None, "r1-refund-4")
            .await
            .unwrap_err();
        assert_eq!(rejection(&again).1.code, "charge_already_refunded");

        let ledger = ledger(&sim).await;
        assert_eq!(ledger["payment_intents"][0]["amount_refunded"], 1000);
        assert_eq!(ledger["refunds"].as_array().unwrap().len(), 2);

        let held = client
            .create_payment_intent(&charge(1000, "pm_card_visa", CaptureMethod::Manual), "r2")
            .await
            .unwrap();
        let err = client
            .create_refund(&held.id, None, "r2-refund")
            .await
            .unwrap_err();
        assert_eq!(rejection(&err).0, 400);
    }

    #[tokio::test]
    async fn a_repeated_key_replays_the_first_intent() {
        let (sim, client) = simulator(None).await;
        let params = charge(450, "pm_card_visa", CaptureMethod::Automatic);
        let first = client.create_payment_intent(&params, "same").await.unwrap();
        let second = client.create_payment_intent(&params, "same").await.unwrap();
        assert_eq!(first.id, second.id);
        let ledger = ledger(&sim).await;
        assert_eq!(ledger["payment_intents"].as_array().unwrap().len(), 1);
        assert_eq!(ledger["idempotency_keys"]["same"], 2);

        let other = charge(451, "pm_card_visa", CaptureMethod::Automatic);
        let err = client
            .create_payment_intent(&other, "same")
            .await
            .unwrap_err();
        let (status, refusal) = rejection(&err);
        assert_eq!(status, 400);
        assert!(is_idempotency_error(&refusal));
        assert!(decline(&refusal).is_none());
    }

    #[tokio::test]
    async fn concurrent_duplicates_create_one_intent() {
        let (sim, client) = simulator(None).await;
        let params = charge(450, "pm_card_visa", CaptureMethod::Automatic);
        let attempts = (0..10).map(|_| {
            let (client, params) = (client.clone(), params.clone());
            tokio::spawn(async move { client.create_payment_intent(&params, "race").await })
        });
        let mut ids = std::collections::BTreeSet::new();
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(pi) => {
                    ids.insert(pi.id);
                }
                // A request still colliding after the client's retries is refused, never
                // charged: acceptable, as long as no second intent exists.
                Err(err) => assert!(is_idempotency_error(&rejection(&err).1), "{err}"),
            }
        }
        assert_eq!(ids.len(), 1);
        let ledger = ledger(&sim).await;
        assert_eq!(ledger["payment_intents"].as_array().unwrap().len(), 1);
    }

    /// Stripe charged, then the connection broke before its answer arrived: the retry
    /// must carry the first try's key, so Stripe replays that charge instead of making a
    /// second one.
    #[tokio::test]
    async fn a_lost_answer_is_retried_with_the_same_key() {
        let (sim, client) = simulator(None).await;
        sim.faults.apply(FaultUpdate {
            lose_next: [(
                "POST /v1/payment_intents".to_owned(),
                Loss {
                    times: 1,
                    status: LostAs::Drop,
                },
            )]
            .into(),
            ..FaultUpdate::default()
        });
        let pi = client
            .create_payment_intent(
                &charge(450, "pm_card_visa", CaptureMethod::Automatic),
                "charge-1",
            )
            .await
            .unwrap();
        assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
        let sent: Vec<(Option<String>, String)> = sim
            .faults
            .log(Some("POST /v1/payment_intents"))
            .into_iter()
            .map(|r| (r.key, r.fault))
            .collect();
        assert_eq!(
            sent,
            [
                (Some("charge-1".to_owned()), "lost".to_owned()),
                (Some("charge-1".to_owned()), "none".to_owned())
            ]
        );
        let ledger = ledger(&sim).await;
        assert_eq!(ledger["payment_intents"].as_array().unwrap().len(), 1);
        assert_eq!(ledger["payment_intents"][0]["id"], pi.id.as_str());
        assert_eq!(ledger["idempotency_keys"]["charge-1"], 2, "replayed");
    }

    #[tokio::test]
    async fn an_unsendable_idempotency_key_is_refused_before_sending() {
        let (sim, client) = simulator(None).await;
        let params = charge(450, "pm_card_visa", CaptureMethod::Automatic);
        for key in ["", "line\nbreak", &"k".repeat(256)] {
            let err = client
                .create_payment_intent(&params, key)
                .await
                .unwrap_err();
            assert!(matches!(err, UpstreamError::Setup(_)), "{err}");
        }
        assert!(sim.faults.calls().is_empty());
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused() {
        let (sim, _) = simulator(None).await;
        let settings = StripeSettings {
            secret_key: SecretString::from("pk_test_nope"),
            ..StripeSettings::default()
        };
        let client = StripeClient::new(&sim.base_url, &settings).unwrap();
        let err = client.retrieve_payment_intent("pi_x").await.unwrap_err();
        assert_eq!(rejection(&err).0, 401);
        assert!(!err.to_string().contains("pk_test_nope"));
    }

    #[tokio::test]
    async fn webhooks_arrive_signed() {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
        let receiver = Router::new().route(
            "/webhooks/stripe",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let signature = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((signature, body));
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, receiver).await });
        let (_sim, client) = simulator(Some(format!("http://{addr}/webhooks/stripe"))).await;

        let pi = client
            .create_payment_intent(&charge(450, "pm_card_visa", CaptureMethod::Manual), "w1")
            .await
            .unwrap();
        client
            .capture_payment_intent(&pi.id, None, "w1-capture")
            .await
            .unwrap();

        let secrets = [SecretString::from(WEBHOOK_SECRET)];
        let mut types = Vec::new();
        while types.len() < 2 {
            let (signature, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            crate::upstream::signature::verify(
                &signature,
                &body,
                &secrets,
                chrono::Utc::now().timestamp(),
                300,
            )
            .unwrap();
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(event["id"].as_str().unwrap().starts_with("evt_"));
            assert_eq!(event["object"], "event");
            assert_eq!(event["data"]["object"]["id"], pi.id.as_str());
            types.push(event["type"].as_str().unwrap().to_owned());
        }
        types.sort();
        assert_eq!(
            types,
            [
                "payment_intent.amount_capturable_updated",
                "payment_intent.succeeded"
            ]
        );
        server.abort();
    }
}
