//! The simulator's state: the ledger of intents, charges, refunds, events and
//! idempotency keys, and how an intent and a refund look on the wire.

use super::{StripeSimConfig, cards::TestCard};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard, PoisonError},
};

pub(super) struct Sim {
    pub(super) config: StripeSimConfig,
    pub(super) http: reqwest::Client,
    pub(super) state: Mutex<Ledger>,
    /// The simulator's fault knobs (chaos loses, repeats and delays webhooks).
    pub(super) faults: std::sync::Arc<crate::faults::Faults>,
}

impl Sim {
    pub(super) fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub(super) struct Ledger {
    pub(super) seq: u64,
    pub(super) intents: HashMap<String, Intent>,
    pub(super) refunds: Vec<RefundRecord>,
    /// Keyed by (secret key, idempotency key): Stripe scopes keys per API key.
    pub(super) idempotency: HashMap<(String, String), Stored>,
    pub(super) requests_per_key: BTreeMap<String, u64>,
    pub(super) posts_without_key: u64,
    pub(super) events: Vec<EventRecord>,
}

pub(super) enum Stored {
    InFlight,
    Done {
        fingerprint: Fingerprint,
        status: StatusCode,
        body: Value,
    },
}

/// What makes two requests "the same" for idempotency: method, path and parameters.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) route: String,
    pub(super) params: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    RequiresCapture,
    Succeeded,
    Canceled,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
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

pub(super) struct Intent {
    pub(super) seq: u64,
    pub(super) id: String,
    pub(super) created: i64,
    pub(super) amount: i64,
    pub(super) currency: String,
    pub(super) capture_method: String,
    pub(super) status: Status,
    pub(super) amount_capturable: i64,
    pub(super) amount_received: i64,
    pub(super) client_secret: String,
    pub(super) description: Option<String>,
    pub(super) metadata: BTreeMap<String, String>,
    /// The `pm_…` Stripe made from the test token, as Stripe does.
    pub(super) payment_method: Option<String>,
    pub(super) card: Option<&'static TestCard>,
    /// The test token the caller sent, for the ledger.
    pub(super) requested_payment_method: Option<String>,
    pub(super) payment_method_types: Vec<String>,
    pub(super) automatic_payment_methods: Value,
    pub(super) last_payment_error: Option<Value>,
    pub(super) next_action: Option<Value>,
    pub(super) canceled_at: Option<i64>,
    pub(super) cancellation_reason: Option<String>,
    pub(super) charge: Option<Charge>,
    pub(super) idempotency_key: Option<String>,
}

impl Intent {
    pub(super) fn manual(&self) -> bool {
        self.capture_method == "manual"
    }

    pub(super) fn json(&self, expand_charge: bool) -> Value {
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

    pub(super) fn charge_json(&self) -> Option<Value> {
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

pub(super) struct Charge {
    pub(super) id: String,
    pub(super) created: i64,
    pub(super) amount_captured: i64,
    pub(super) amount_refunded: i64,
    pub(super) captured: bool,
    pub(super) capture_before: Option<i64>,
    pub(super) card: &'static TestCard,
    pub(super) payment_method: String,
    pub(super) failure: Option<CardFailure>,
}

#[derive(Clone, Copy)]
pub(super) struct CardFailure {
    pub(super) code: &'static str,
    pub(super) decline_code: &'static str,
    pub(super) message: &'static str,
}

pub(super) struct RefundRecord {
    pub(super) seq: u64,
    pub(super) id: String,
    pub(super) amount: i64,
    pub(super) currency: String,
    pub(super) charge: String,
    pub(super) payment_intent: String,
    pub(super) reason: Option<String>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) created: i64,
    pub(super) idempotency_key: Option<String>,
}

impl RefundRecord {
    pub(super) fn json(&self) -> Value {
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

pub(super) struct EventRecord {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) object_id: String,
    pub(super) created: i64,
    pub(super) delivered: bool,
    pub(super) delivery_attempts: u32,
}
