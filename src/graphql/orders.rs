//! Checkout, orders and live order status.

use super::{
    cart::CartLineObject,
    catalog::StoreObject,
    context,
    errors::{ApiError, UserError, UserErrorCode},
    loaders::History,
    scalars::MoneyObject,
};
use crate::{
    context::AppState,
    domain::{
        CartId, Currency, CustomerId, Failure, IdempotencyKey, Money, OrderId,
        OrderStatus as DomainStatus, PaymentMethodId, PaymentStatus as DomainPayment, Step,
        StoreId, VoucherId,
    },
    events::{Snapshot, Watch},
    flows::place_order::{self, CheckoutRefusal, CheckoutRequest},
    rate_limit::Limit,
    store::{self, orders::Order},
    upstream::okya::CartLine,
};
use async_graphql::{
    Context, Enum, ID, InputObject, Object, Result, SimpleObject, Subscription,
    connection::{Connection, Edge},
};
use base64::Engine;
use futures_util::Stream;
use std::{collections::VecDeque, sync::Arc};

/// Where an order stands, as the app shows it.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "OrderStatus", remote = "crate::domain::OrderStatus")]
pub enum OrderStatusEnum {
    /// Only while the card needs 3-D Secure: finish it with `payment.clientSecret`.
    AwaitingPayment,
    /// Submitted and paid; waiting for the store to accept it.
    AwaitingAcceptance,
    /// The store has it; it is being made.
    InPreparation,
    ReadyForPickup,
    Completed,
    /// The payment did not go through; nothing was charged and no store saw the order.
    PaymentFailed,
    /// The store declined the order; the payment was refunded or released.
    Rejected,
    /// The store's till could not take the order; it was recalled and the payment refunded or released.
    Cancelled,
}

/// Where the order's payment stands, kept in step with Stripe's PaymentIntent.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "PaymentStatus", remote = "crate::domain::PaymentStatus")]
pub enum PaymentStatusEnum {
    /// 3-D Secure is pending: finish it with `clientSecret`.
    RequiresAction,
    /// Held on the card, not yet taken.
    Authorized,
    /// Taken.
    Captured,
    /// Not taken: declined, or could not be attempted.
    Failed,
    /// Taken, then given back in full.
    Refunded,
    /// The hold was released; nothing was taken.
    Cancelled,
}

/// An order, as it stood at `status` (the newest state, or a step of its history when
/// delivered by the subscription).
pub struct OrderObject {
    /// Shared by every subscriber of the order that is sent this snapshot.
    row: Arc<Order>,
    status: DomainStatus,
    changed_at_ms: i64,
    /// How many history entries this snapshot includes; `None` for all.
    history_upto: Option<usize>,
    /// The order's history, when the one who built this object read it already (the
    /// subscription); `statusHistory` then reads nothing. `None`: it is loaded on demand,
    /// for a whole page of orders in one query.
    history: Option<History>,
    /// The PaymentIntent's client secret, when `order(id)` read it from Stripe alongside
    /// Okya's status; `None`: `clientSecret` reads it itself.
    client_secret: Option<Result<Option<String>, Arc<crate::upstream::UpstreamError>>>,
}

impl OrderObject {
    fn current(row: Order) -> Result<Self> {
        let status = row.status;
        Ok(Self {
            changed_at_ms: row.updated_at_ms,
            status,
            row: Arc::new(row),
            history_upto: None,
            history: None,
            client_secret: None,
        })
    }

    fn money(&self, minor: Option<i64>) -> Result<MoneyObject> {
        let currency = self
            .row
            .currency
            .as_deref()
            .and_then(|c| Currency::parse(c).ok())
            .ok_or(ApiError::Internal)?;
        Ok(MoneyObject(Money::new(minor.unwrap_or(0), currency)))
    }
}

fn timestamp(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A status the order took, and when.
#[derive(SimpleObject)]
pub struct OrderStatusChange {
    pub status: OrderStatusEnum,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// How the order was paid.
pub struct PaymentObject<'a>(&'a OrderObject);

#[Object(name = "Payment")]
impl PaymentObject<'_> {
    async fn status(&self) -> Result<PaymentStatusEnum> {
        self.0
            .row
            .payment_status
            .map(PaymentStatusEnum::from)
            .ok_or_else(|| ApiError::Internal.into())
    }

    async fn amount(&self) -> Result<MoneyObject> {
        self.0.money(self.0.row.total_minor)
    }

    async fn brand(&self) -> Option<&str> {
        self.0.row.card_brand.as_deref()
    }

    async fn last4(&self) -> Option<&str> {
        self.0.row.card_last4.as_deref()
    }

    /// For the app's Stripe SDK to finish 3-D Secure; only while the status is
    /// `REQUIRES_ACTION`.
    async fn client_secret(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let row = &self.0.row;
        if row.payment_status != Some(DomainPayment::RequiresAction) {
            return Ok(None);
        }
        if let Some(read) = &self.0.client_secret {
            return read.clone().map_err(|e| ApiError::from(e).into());
        }
        let Some(intent_id) = &row.payment_intent_id else {
            return Ok(None);
        };
        let state = context::state(ctx)?;
        let intent = state
            .upstreams
            .stripe
            .retrieve_payment_intent(intent_id)
            .await
            .map_err(ApiError::from)?;
        Ok(intent.client_secret)
    }
}

#[Object(name = "Order")]
impl OrderObject {
    async fn id(&self) -> ID {
        ID(self.row.id.to_string())
    }

    /// The short number the barista calls.
    async fn number(&self) -> Option<&str> {
        self.row.number.as_deref()
    }

    async fn store(&self, ctx: &Context<'_>) -> Result<Option<StoreObject>> {
        let state = context::state(ctx)?;
        let store = context::loaders(ctx)?
            .stores(state)
            .load_one(StoreId::from_upstream(self.row.store_id.clone()))
            .await
            .map_err(ApiError::from)?;
        Ok(store.map(StoreObject))
    }

    async fn status(&self) -> OrderStatusEnum {
        self.status.into()
    }

    async fn lines(&self) -> Result<Vec<CartLineObject<'static>>> {
        let lines: Vec<CartLine> =
            serde_json::from_str(self.row.lines_json.as_deref().unwrap_or("[]"))
                .map_err(|_| ApiError::Internal)?;
        Ok(lines.into_iter().map(CartLineObject::owned).collect())
    }

    async fn subtotal(&self) -> Result<MoneyObject> {
        self.money(self.row.subtotal_minor)
    }

    async fn discount(&self) -> Result<MoneyObject> {
        self.money(self.row.discount_minor)
    }

    async fn tax(&self) -> Result<MoneyObject> {
        self.money(self.row.tax_minor)
    }

    /// The cart's total less any voucher discount: what was charged.
    async fn total(&self) -> Result<MoneyObject> {
        self.money(self.row.total_minor)
    }

    async fn payment(&self) -> Option<PaymentObject<'_>> {
        self.row
            .payment_status
            .as_ref()
            .map(|_| PaymentObject(self))
    }

    async fn placed_at(&self) -> chrono::DateTime<chrono::Utc> {
        timestamp(self.row.created_at_ms)
    }

    async fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        timestamp(self.changed_at_ms)
    }

    /// Every status the order took, oldest first.
    async fn status_history(&self, ctx: &Context<'_>) -> Result<Vec<OrderStatusChange>> {
        let history: History = match &self.history {
            Some(held) => held.clone(),
            None => context::loaders(ctx)?
                .histories(context::state(ctx)?)
                .load_one(self.row.id.clone())
                .await
                .map_err(ApiError::from)?
                .unwrap_or_else(|| History::from(Vec::new())),
        };
        Ok(history
            .iter()
            .take(self.history_upto.unwrap_or(usize::MAX))
            .map(|h| OrderStatusChange {
                status: h.status.into(),
                at: timestamp(h.at_ms),
            })
            .collect())
    }

    /// The reward used on this order, if any.
    async fn voucher(&self) -> Result<Option<AppliedVoucher>> {
        let (Some(id), Some(name)) = (&self.row.voucher_id, &self.row.voucher_name) else {
            return Ok(None);
        };
        Ok(Some(AppliedVoucher {
            id: ID(format!("{}:{id}", self.row.id)),
            voucher_id: ID(id.to_string()),
            name: name.clone(),
            discount: self.money(self.row.discount_minor)?,
        }))
    }

    /// Loyalty points SessionM credited for this order, once it has.
    async fn points_earned(&self) -> Option<i64> {
        self.row.points_earned
    }
}

/// A voucher as applied to one order.
#[derive(SimpleObject)]
pub struct AppliedVoucher {
    /// This application of the voucher: the order and the voucher together, so that two
    /// orders that used one voucher (a declined checkout and its retry) are two objects in
    /// a normalised client cache, each with its own discount.
    pub id: ID,
    /// The voucher in the customer's wallet (`Voucher.id`), as sent to `checkout`.
    pub voucher_id: ID,
    pub name: String,
    /// What it took off the order.
    pub discount: MoneyObject,
}

#[derive(InputObject)]
pub struct CheckoutInput {
    pub cart_id: ID,
    /// A Stripe PaymentMethod id from the app's Stripe SDK (`pm_…`).
    pub payment_method_id: String,
    /// A voucher from `vouchers`, to use a reward.
    pub voucher_id: Option<ID>,
    /// Any unique string per checkout attempt (a UUID); retries send the same one.
    pub idempotency_key: String,
}

#[derive(SimpleObject)]
pub struct CheckoutPayload {
    pub order: Option<OrderObject>,
    pub user_errors: Vec<UserError>,
}

/// Whether the payment itself was refused (the card, its 3-D Secure, the issuer): what a
/// card tester collects, counted towards `rate_limits.declines_*`. Our own and the
/// upstreams' failures are not the customer's and do not count.
fn is_payment_refusal(failure: Failure) -> bool {
    match failure {
        Failure::CardDeclined | Failure::AuthenticationFailed | Failure::PaymentFailed => true,
        Failure::StoreClosed
        | Failure::CartEmpty
        | Failure::ProductUnavailable
        | Failure::CartAlreadyOrdered
        | Failure::CartNotFound
        | Failure::OrderNotAccepted
        | Failure::AuthenticationAbandoned
        | Failure::PaymentUnavailable
        | Failure::ServiceUnavailable
        | Failure::NotRecorded
        | Failure::Rejected
        | Failure::AuthorizationLost
        | Failure::CaptureFailed
        | Failure::PosUnreachable
        | Failure::PosRefused
        | Failure::VoucherExpired
        | Failure::VoucherAlreadyUsed
        | Failure::VoucherInUse
        | Failure::VoucherNotFound
        | Failure::VoucherNotApplicable => false,
    }
}

/// The customer-facing refusal an order ended with (or waits on), if any.
fn order_errors(row: &Order) -> Vec<UserError> {
    let Some(code) = row.failure_code.as_deref() else {
        return Vec::new();
    };
    let invalid = row.step == Step::Invalid;
    let awaiting_retry = row.step == Step::AwaitPaymentRetry;
    let failed = row.status == DomainStatus::PaymentFailed;
    if !(invalid || failed || awaiting_retry) {
        return Vec::new();
    }
    let stripe_message = row.failure_message.clone().filter(|m| !m.is_empty());
    let not_placed = || {
        if invalid {
            (
                UserErrorCode::OrderNotAccepted,
                "cartId",
                "The order could not be placed.".to_owned(),
            )
        } else {
            (
                UserErrorCode::PaymentFailed,
                "paymentMethodId",
                "The payment did not go through. Try another card.".to_owned(),
            )
        }
    };
    // One exhaustive mapping: a failure added later does not compile until it is shown.
    let (code, field, message) = match Failure::parse(code) {
        Some(Failure::StoreClosed) => (
            UserErrorCode::StoreClosed,
            "cartId",
            "This store is not taking orders right now.".to_owned(),
        ),
        Some(Failure::CartEmpty) => (
            UserErrorCode::CartEmpty,
            "cartId",
            "Add something to the cart first.".to_owned(),
        ),
        Some(Failure::ProductUnavailable) => (
            UserErrorCode::ProductUnavailable,
            "cartId",
            "Something in the cart is no longer available.".to_owned(),
        ),
        Some(Failure::CartAlreadyOrdered) => (
            UserErrorCode::CartAlreadyOrdered,
            "cartId",
            "This cart was already ordered.".to_owned(),
        ),
        Some(Failure::CartNotFound) => (
            UserErrorCode::CartNotFound,
            "cartId",
            "There is no such cart.".to_owned(),
        ),
        Some(Failure::CardDeclined) => (
            UserErrorCode::CardDeclined,
            "paymentMethodId",
            stripe_message.unwrap_or_else(|| "Your card was declined.".to_owned()),
        ),
        Some(Failure::AuthenticationFailed | Failure::AuthenticationAbandoned) => (
            UserErrorCode::AuthenticationFailed,
            "paymentMethodId",
            "The card could not be authenticated.".to_owned(),
        ),
        Some(Failure::PaymentUnavailable) if awaiting_retry => (
            UserErrorCode::PaymentUnavailable,
            "idempotencyKey",
            "The payment could not be processed right now. Nothing was charged; send the same \
             checkout again in a moment to retry."
                .to_owned(),
        ),
        Some(Failure::PaymentUnavailable) => (
            UserErrorCode::PaymentUnavailable,
            "idempotencyKey",
            "The payment could not be processed. Nothing was charged.".to_owned(),
        ),
        Some(Failure::ServiceUnavailable) => (
            UserErrorCode::ServiceUnavailable,
            "cartId",
            "The order could not be placed right now. Nothing was charged; try again in a moment."
                .to_owned(),
        ),
        Some(Failure::NotRecorded) => (
            UserErrorCode::OrderNotAccepted,
            "cartId",
            "The order could not be placed; the payment was given back.".to_owned(),
        ),
        Some(Failure::VoucherExpired) => (
            UserErrorCode::VoucherExpired,
            "voucherId",
            "This voucher has expired.".to_owned(),
        ),
        Some(Failure::VoucherAlreadyUsed) => (
            UserErrorCode::VoucherAlreadyUsed,
            "voucherId",
            "This voucher was already used.".to_owned(),
        ),
        Some(Failure::VoucherInUse) => (
            UserErrorCode::VoucherInUse,
            "voucherId",
            "This voucher is being used by another order.".to_owned(),
        ),
        Some(Failure::VoucherNotFound) => (
            UserErrorCode::VoucherNotFound,
            "voucherId",
            "There is no such voucher.".to_owned(),
        ),
        Some(Failure::VoucherNotApplicable) => (
            UserErrorCode::VoucherNotApplicable,
            "voucherId",
            "This voucher cannot be used with this order.".to_owned(),
        ),
        // Failures of a placed order (the store, the POS, a capture) end in a status of
        // their own; what is left is an order not placed or a payment that failed.
        Some(
            Failure::OrderNotAccepted
            | Failure::PaymentFailed
            | Failure::Rejected
            | Failure::AuthorizationLost
            | Failure::CaptureFailed
            | Failure::PosUnreachable
            | Failure::PosRefused,
        )
        | None => not_placed(),
    };
    vec![UserError::new(code, &["input", field], message)]
}

/// The customer's order with the id a client sent, if it is theirs and was placed; an id
/// that cannot be an order's is simply not found.
pub async fn owned_order(
    state: &AppState,
    customer_id: &CustomerId,
    raw: &str,
) -> Result<Option<Order>> {
    let Some(id) = OrderId::parse(raw) else {
        return Ok(None);
    };
    let order = store::orders::find(&state.db, &id)
        .await
        .map_err(ApiError::from)?;
    Ok(order.filter(|o| is_visible_to(o, customer_id)))
}

/// Whether `customer_id` may see `order`: theirs, and placed at Okya (an order refused
/// before that is not one to them).
fn is_visible_to(order: &Order, customer_id: &CustomerId) -> bool {
    &order.customer_id == customer_id
        && order.okya_order_id.is_some()
        && order.step != Step::Invalid
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One of the signed-in customer's orders, with its status fresh from Okya.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<OrderObject>> {
        let state = context::state(ctx)?;
        let customer = context::customer(ctx)?;
        let Some(mut order) = owned_order(state, customer, &id).await? else {
            return Ok(None);
        };
        // Okya's status and, when asked for, Stripe's client secret are read together: the
        // query waits for the slower of the two, not for both in turn.
        let secret_of = (order.payment_status == Some(DomainPayment::RequiresAction)
            && ctx
                .look_ahead()
                .field("payment")
                .field("clientSecret")
                .exists())
        .then(|| order.payment_intent_id.clone())
        .flatten();
        let okya_read = async {
            match &order.okya_order_id {
                Some(okya_id) => Some(state.upstreams.okya.order(okya_id).await),
                None => None,
            }
        };
        let stripe_read = async {
            match &secret_of {
                Some(intent) => Some(state.upstreams.stripe.retrieve_payment_intent(intent).await),
                None => None,
            }
        };
        let (okya_read, intent) = tokio::join!(okya_read, stripe_read);
        if let Some(read) = okya_read {
            match read {
                Ok(Some(okya)) if okya.version > order.okya_version => {
                    // A webhook we have not had yet: apply it and let the flow catch up,
                    // if the order is free; when it is busy, the webhook (or
                    // reconciliation) still finds this version newer and applies it.
                    let _ =
                        place_order::record_okya_state_and_drive(state, &order.id, okya.state())
                            .await;
                    if let Some(fresh) = store::orders::find(&state.db, &order.id)
                        .await
                        .map_err(ApiError::from)?
                    {
                        order = fresh;
                    }
                }
                Ok(_) => {}
                // What we hold is still a good answer when Okya is slow.
                Err(e) => {
                    tracing::warn!(order_id = %order.id, error = %e, "Okya status read failed; answering from our copy")
                }
            }
        }
        let mut object = OrderObject::current(order)?;
        // The secret read stands only for the PaymentIntent the order still has.
        if let (Some(asked), Some(read)) = (secret_of, intent)
            && object.row.payment_intent_id.as_ref() == Some(&asked)
        {
            object.client_secret = Some(read.map(|i| i.client_secret).map_err(Arc::new));
        }
        Ok(Some(object))
    }
}

/// A page of the customer's orders, newest first.
pub async fn customer_orders(
    ctx: &Context<'_>,
    customer_id: &CustomerId,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, OrderObject>> {
    let state = context::state(ctx)?;
    let first = first.unwrap_or(20);
    if !(0..=100).contains(&first) {
        return Err(ApiError::BadUserInput("first must be between 0 and 100".into()).into());
    }
    let before = match after {
        Some(cursor) => Some(decode_cursor(&cursor).ok_or_else(|| {
            ApiError::BadUserInput("after is not a cursor from this list".into())
        })?),
        None => None,
    };
    let limit = u64::try_from(first).unwrap_or(20);
    let mut rows =
        store::orders::page_for_customer(&state.db, customer_id, before.clone(), limit + 1)
            .await
            .map_err(ApiError::from)?;
    let has_next = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(20));
    // The page's histories in one query, when the selection asks for them. Read here
    // rather than through the DataLoader: the loader batches what arrives within its delay,
    // and on a busy machine a page's fields can straddle two batches.
    let look = ctx.look_ahead();
    let wants_history = look
        .field("edges")
        .field("node")
        .field("statusHistory")
        .exists()
        || look.field("nodes").field("statusHistory").exists();
    let mut histories = if wants_history {
        let ids: Vec<OrderId> = rows.iter().map(|r| r.id.clone()).collect();
        store::order_history::for_orders(&state.db, &ids)
            .await
            .map_err(ApiError::from)?
    } else {
        Default::default()
    };
    let mut connection = Connection::new(before.is_some(), has_next);
    for row in rows {
        let cursor = encode_cursor(row.created_at_ms, &row.id);
        let history =
            wants_history.then(|| History::from(histories.remove(&row.id).unwrap_or_default()));
        let mut node = OrderObject::current(row)?;
        node.history = history;
        connection.edges.push(Edge::new(cursor, node));
    }
    Ok(connection)
}

fn encode_cursor(created_ms: i64, id: &OrderId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_ms}:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (created, id) = text.split_once(':')?;
    Some((created.parse().ok()?, id.to_owned()))
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Submits the cart as an order and pays for it. The same `idempotencyKey` always
    /// returns the same order and never charges twice. Checkouts, and declined payments,
    /// are limited per customer and per client address: over a limit, a `RATE_LIMITED`
    /// error with `extensions.retryAfterSeconds`.
    async fn checkout(&self, ctx: &Context<'_>, input: CheckoutInput) -> Result<CheckoutPayload> {
        let state = context::state(ctx)?;
        let customer = context::customer(ctx)?;
        let address = context::client(ctx).key();
        context::rate_limit(
            ctx,
            &[
                (Limit::CheckoutPerAddress, address.as_deref()),
                (Limit::CheckoutPerCustomer, Some(customer.as_str())),
            ],
        )
        .await?;
        // Card testing: whoever has had too many payments refused may not try another card
        // for a while, however slowly they send checkouts.
        let card_testing = [
            (Limit::DeclinesPerAddress, address.as_deref()),
            (Limit::DeclinesPerCustomer, Some(customer.as_str())),
        ];
        for (limit, subject) in card_testing {
            if let Some(subject) = subject {
                state
                    .rate_limits
                    .check(limit, subject)
                    .await
                    .map_err(ApiError::from)?;
            }
        }
        let mut errors = Vec::new();
        let cart_id = CartId::parse(&input.cart_id);
        let key = IdempotencyKey::parse(&input.idempotency_key);
        if key.is_none() {
            errors.push(UserError::new(
                UserErrorCode::InvalidInput,
                &["input", "idempotencyKey"],
                format!(
                    "Send a unique key of up to {} characters.",
                    IdempotencyKey::MAX_LEN
                ),
            ));
        }
        let pm = PaymentMethodId::parse(&input.payment_method_id);
        if pm.is_none() {
            errors.push(UserError::new(
                UserErrorCode::InvalidInput,
                &["input", "paymentMethodId"],
                "This is not a payment method.",
            ));
        }
        let voucher_id = match input.voucher_id.as_ref() {
            None => Ok(None),
            Some(raw) => VoucherId::parse(raw).map(Some).ok_or(()),
        };
        if voucher_id.is_err() {
            errors.push(UserError::new(
                UserErrorCode::VoucherNotFound,
                &["input", "voucherId"],
                "There is no such voucher.",
            ));
        }
        let Some(cart_id) = cart_id else {
            errors.push(UserError::new(
                UserErrorCode::CartNotFound,
                &["input", "cartId"],
                "There is no such cart.",
            ));
            return Ok(CheckoutPayload {
                order: None,
                user_errors: errors,
            });
        };
        let (Some(key), Some(pm), Ok(voucher_id)) = (key, pm, voucher_id) else {
            return Ok(CheckoutPayload {
                order: None,
                user_errors: errors,
            });
        };
        let request = CheckoutRequest {
            customer_id: customer.clone(),
            cart_id,
            payment_method_id: pm,
            voucher_id,
            idempotency_key: key,
        };
        let outcome = place_order::checkout(state, request).await.map_err(|e| {
            tracing::error!(error = %e, "checkout failed");
            ApiError::Internal
        })?;
        let order = match outcome {
            Ok(order) => order,
            Err(CheckoutRefusal::CartNotFound) => {
                return Ok(CheckoutPayload {
                    order: None,
                    user_errors: vec![UserError::new(
                        UserErrorCode::CartNotFound,
                        &["input", "cartId"],
                        "There is no such cart.",
                    )],
                });
            }
            Err(CheckoutRefusal::IdempotencyKeyReused) => {
                return Ok(CheckoutPayload {
                    order: None,
                    user_errors: vec![UserError::new(
                        UserErrorCode::IdempotencyKeyReused,
                        &["input", "idempotencyKey"],
                        "This key was already used for a different checkout.",
                    )],
                });
            }
        };
        let user_errors = order_errors(&order);
        let refused_payment = order
            .failure_code
            .as_deref()
            .and_then(Failure::parse)
            .is_some_and(is_payment_refusal);
        if refused_payment && order.status == DomainStatus::PaymentFailed {
            for (limit, subject) in card_testing {
                if let Some(subject) = subject
                    && let Err(e) = state.rate_limits.record(limit, subject).await
                {
                    // The decline is the customer's answer; a count that could not be
                    // written must not replace it.
                    tracing::warn!(error = %e, limit = limit.name(), "cannot count a declined payment");
                }
            }
        }
        if order.step == Step::Invalid {
            return Ok(CheckoutPayload {
                order: None,
                user_errors,
            });
        }
        if order.step.is_active() {
            // Still running (an upstream is slow, or down behind its open breaker, and the
            // step waits to try again); the same key will return the outcome. An open
            // breaker is the likely cause, so the app is told which and for how long.
            let error = match state.upstreams.guards.open_one().await {
                Some((upstream, retry_after)) => ApiError::CircuitOpen {
                    upstream,
                    retry_after,
                },
                None => ApiError::UpstreamUnavailable,
            };
            return Err(error.into());
        }
        Ok(CheckoutPayload {
            order: Some(OrderObject::current(order)?),
            user_errors,
        })
    }
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order now, then once per status change, in order; ends after a final status.
    ///
    /// Every subscriber of an order shares one read per change (see [`crate::events`]);
    /// a subscriber that is slow to take its events skips to the newest snapshot and is
    /// sent every status it missed, from that snapshot's history.
    async fn order_status_changed(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> Result<impl Stream<Item = Result<OrderObject>> + use<>> {
        let state = context::state(ctx)?;
        let customer = context::customer(ctx)?;
        let Some(id) = OrderId::parse(&order_id) else {
            return Err(ApiError::NotFound.into());
        };
        // Follow before reading, so no change can fall between the two.
        let mut watch = state.order_events.watch(&id);
        let snapshot = match watch.latest() {
            // Others here follow it already: their feed is as fresh as a read.
            Some(snapshot) => snapshot,
            None => {
                // One customer's subscriptions share a few connections, so however many
                // they open, everyone else still finds the pool free.
                let _slot = state.quotas.db_connections.acquire(customer.as_str()).await;
                let Some((order, history)) = store::orders::snapshot(&state.db, &id)
                    .await
                    .map_err(ApiError::from)?
                else {
                    return Err(ApiError::NotFound.into());
                };
                watch.offer(Snapshot::new(order, history))
            }
        };
        if !is_visible_to(&snapshot.order, customer) {
            return Err(ApiError::NotFound.into());
        }
        let first = OrderObject {
            row: snapshot.order.clone(),
            status: snapshot.order.status,
            changed_at_ms: snapshot.order.updated_at_ms,
            history_upto: None,
            history: Some(snapshot.history.clone()),
            client_secret: None,
        };
        let follow = StatusFollower {
            done: first.status.is_final(),
            watch,
            seen: snapshot.history.len(),
            pending: VecDeque::new(),
        };
        Ok(futures_util::stream::once(async move { Ok(first) })
            .chain(futures_util::stream::unfold(follow, StatusFollower::next)))
    }
}

use futures_util::StreamExt;

/// Follows one order's feed for a subscriber.
struct StatusFollower {
    watch: Watch,
    /// History entries already sent.
    seen: usize,
    pending: VecDeque<OrderObject>,
    done: bool,
}

impl StatusFollower {
    async fn next(mut self) -> Option<(Result<OrderObject>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if item.status.is_final() {
                    self.done = true;
                }
                return Some((Ok(item), self));
            }
            if self.done {
                return None;
            }
            let snapshot = self.watch.changed().await?;
            // One snapshot per status not yet sent, each with the history up to it.
            for (index, entry) in snapshot.history.iter().enumerate().skip(self.seen) {
                self.pending.push_back(OrderObject {
                    row: snapshot.order.clone(),
                    status: entry.status,
                    changed_at_ms: entry.at_ms,
                    history_upto: Some(index + 1),
                    history: Some(snapshot.history.clone()),
                    client_secret: None,
                });
            }
            self.seen = self.seen.max(snapshot.history.len());
        }
    }
}
