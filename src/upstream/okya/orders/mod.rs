//! Okya orders: submitting a cart, loyalty adjustments, recording the payment we took,
//! cancel and recall, and the `order.updated` webhook body. The contract is Part 2 of
//! `docs/upstreams/okya.md`.

use super::{CartLine, OkyaClient, WireMoney, codes, comma_join, is_code};
use crate::domain::CartId;
use crate::upstream::UpstreamError;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};

/// Okya takes at most this many ids per `GET /v1/orders?ids=`.
pub const MAX_IDS_PER_CALL: usize = 200;

/// `status`: whether the order is live. `COMPLETED` and `CANCELED` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    Open,
    Completed,
    Canceled,
}

// Okya's `approval` and `fulfilment` are also how our order row records the store's side,
// so they live in the domain (the store layer uses them without knowing this client).
pub use crate::domain::{Approval, Fulfilment, OkyaState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentRecordStatus {
    Authorized,
    Captured,
}

/// Why an order is `CANCELED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationKind {
    /// We cancelled it before acceptance (the payment failed, or the customer gave up).
    Cancelled,
    /// We recalled it after acceptance (the POS could not take it).
    Recalled,
    /// The store rejected it.
    Rejected,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    /// The short number the barista calls out. Printed, never parsed.
    pub number: String,
    pub cart_id: String,
    pub store_id: String,
    pub customer_ref: String,
    pub status: OrderState,
    pub approval: Approval,
    pub fulfilment: Fulfilment,
    pub currency: String,
    pub lines: Vec<CartLine>,
    pub subtotal: WireMoney,
    /// Σ `adjustments[].amount`.
    pub discount: WireMoney,
    pub tax: WireMoney,
    pub total: WireMoney,
    pub adjustments: Vec<Adjustment>,
    pub payment: Option<PaymentRecord>,
    pub cancellation: Option<Cancellation>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Starts at 1 and goes up by 1 on every change; newer wins.
    pub version: i64,
}

impl Order {
    /// What our order row keeps of this answer: its version, approval and fulfilment.
    pub fn state(&self) -> OkyaState {
        OkyaState {
            version: self.version,
            approval: self.approval,
            fulfilment: self.fulfilment,
        }
    }
}

/// A discount applied to an order after submission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub id: String,
    pub source: String,
    pub reference: String,
    pub description: String,
    pub amount: WireMoney,
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /v1/orders/{id}/adjustments`. Idempotent on `reference`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAdjustment {
    /// `sessionm`, the only source so far.
    pub source: String,
    pub reference: String,
    pub description: String,
    /// The discount: positive, in the order's currency.
    pub amount: WireMoney,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub brand: String,
    pub last4: String,
}

/// The payment recorded on an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub provider: String,
    pub reference: String,
    pub amount: WireMoney,
    pub status: PaymentRecordStatus,
    pub card: Option<Card>,
    pub recorded_at: DateTime<Utc>,
}

/// The body of `POST /v1/orders/{id}/payments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPayment {
    /// `stripe`, the only provider so far.
    pub provider: String,
    /// The payment's id at the provider (a Stripe PaymentIntent id).
    pub reference: String,
    /// Must equal the order's `total`.
    pub amount: WireMoney,
    pub status: PaymentRecordStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub kind: CancellationKind,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The body of `POST /v1/orders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateOrder {
    pub cart_id: String,
    pub customer_ref: String,
}

/// The body of `POST /v1/orders/{id}/cancel` and `…/recall`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reason {
    pub reason: String,
}

/// The body Okya posts to `/webhooks/okya`: `{"id", "type", "created_at", "data": {"order"}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderEvent {
    /// `evt_…`, equal to `X-Okya-Event-Id`.
    pub id: String,
    /// `order.updated`, the only type so far.
    pub r#type: String,
    pub created_at: DateTime<Utc>,
    pub data: OrderEventData,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderEventData {
    /// The whole order, as `GET /v1/orders/{id}` returns it.
    pub order: Order,
}

/// The event type of [`OrderEvent`].
pub const ORDER_UPDATED: &str = "order.updated";

#[derive(Deserialize)]
struct OrdersEnvelope {
    orders: Vec<Order>,
}

impl OkyaClient {
    /// Submits the cart as an order for `customer_ref` (an Okya Auth account id). A retry
    /// with the same key returns the first order; another key gets `cart_already_ordered`.
    #[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
    pub async fn create_order(
        &self,
        cart_id: &CartId,
        customer_ref: &str,
        idempotency_key: &str,
    ) -> Result<Order, UpstreamError> {
        let body = CreateOrder {
            cart_id: cart_id.as_str().to_owned(),
            customer_ref: customer_ref.to_owned(),
        };
        let request = self
            .request(Method::POST, "/v1/orders")
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        self.call("orders.create").json(request).await
    }

    /// The order, or `None` when Okya does not know it.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn order(&self, order_id: &str) -> Result<Option<Order>, UpstreamError> {
        let request = self.request(Method::GET, &format!("/v1/orders/{order_id}"));
        match self.call("orders.get").json(request).await {
            Ok(order) => Ok(Some(order)),
            Err(e) if is_code(&e, codes::ORDER_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The orders with the given ids, in request order; unknown ids are left out. Sends one
    /// call per [`MAX_IDS_PER_CALL`] ids, and none for an empty list.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn orders(&self, ids: &[String]) -> Result<Vec<Order>, UpstreamError> {
        let mut orders = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_CALL) {
            let request = self
                .request(Method::GET, "/v1/orders")
                .query(&[("ids", comma_join(chunk.iter().map(String::as_str)))]);
            let envelope: OrdersEnvelope = self.call("orders.list").json(request).await?;
            orders.extend(envelope.orders);
        }
        Ok(orders)
    }

    /// Applies a discount before payment. Idempotent on the adjustment's `reference` too.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, reference = %adjustment.reference))]
    pub async fn add_adjustment(
        &self,
        order_id: &str,
        adjustment: &NewAdjustment,
        idempotency_key: &str,
    ) -> Result<Order, UpstreamError> {
        let request = self
            .request(Method::POST, &format!("/v1/orders/{order_id}/adjustments"))
            .header("Idempotency-Key", idempotency_key)
            .json(adjustment);
        self.call("orders.adjustments.add").json(request).await
    }

    /// Records the payment we took, which puts the order in front of the store; the same
    /// reference again may move it from `authorized` to `captured`.
    #[tracing::instrument(
        skip_all,
        fields(order_id = %order_id, reference = %payment.reference, status = ?payment.status)
    )]
    pub async fn record_payment(
        &self,
        order_id: &str,
        payment: &NewPayment,
        idempotency_key: &str,
    ) -> Result<Order, UpstreamError> {
        let request = self
            .request(Method::POST, &format!("/v1/orders/{order_id}/payments"))
            .header("Idempotency-Key", idempotency_key)
            .json(payment);
        self.call("orders.payments.record").json(request).await
    }

    /// Cancels an order the store has not accepted yet; `invalid_state` once it has.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn cancel_order(
        &self,
        order_id: &str,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Order, UpstreamError> {
        self.void(order_id, "cancel", "orders.cancel", reason, idempotency_key)
            .await
    }

    /// Recalls an accepted order the POS could not take; `invalid_state` before acceptance.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn recall_order(
        &self,
        order_id: &str,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Order, UpstreamError> {
        self.void(order_id, "recall", "orders.recall", reason, idempotency_key)
            .await
    }

    async fn void(
        &self,
        order_id: &str,
        action: &str,
        operation: &'static str,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Order, UpstreamError> {
        let body = Reason {
            reason: reason.to_owned(),
        };
        let request = self
            .request(Method::POST, &format!("/v1/orders/{order_id}/{action}"))
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        self.call(operation).json(request).await
    }
}

#[cfg(test)]
mod tests;
