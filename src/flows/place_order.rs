//! Place Order (seed steps 6–33) as a durable state machine.
//!
//! The order row is the recovery point. Each active step makes one upstream call under an
//! idempotency key derived from the order and the step, then records the next step; a
//! step re-run after a crash therefore repeats nothing. One runner at a time holds an
//! order (a lease in the row); `checkout` runs the flow inline for a quick answer, and the
//! sweeper resumes any flow left unfinished by a crash or an upstream outage. Webhooks
//! only record what Okya or Stripe said and then run the flow.
//!
//! ```text
//! submit ─► charge ─► record_payment ─► await_acceptance ─► inject ─► [capture] ─► done
//!    │         │  └─► await_authentication ─┘        │          │
//!    ▼         ▼                                     ▼          ▼
//! invalid   cancel_okya (PAYMENT_FAILED)     refund (REJECTED)  recall ─► refund (CANCELLED)
//! ```

use crate::{
    app::AppState,
    auth::now_ms,
    domain::{CaptureMode, CartId, Currency, Money, OrderStatus, Step},
    jobs::JobError,
    store::{self, StoreError, orders::Order},
    upstream::{
        UpstreamError,
        epoint::{InjectLine, InjectModifier, InjectOrder},
        okya::{
            CartLine, WireMoney, codes as okya_codes,
            orders::{
                Approval, Fulfilment, NewAdjustment, NewPayment, Order as OkyaOrder,
                PaymentRecordStatus,
            },
        },
        sessionm::{SendTransaction, Transaction, TransactionLine},
        stripe::{self, CaptureMethod, CreatePaymentIntent, PaymentIntent, PaymentIntentStatus},
    },
};
use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, time::Duration};
use tracing::Instrument;

pub const SEND_TO_SESSIONM: &str = "sessionm_order";
pub const OKYA_EVENT: &str = "okya_event";
pub const STRIPE_EVENT: &str = "stripe_event";

/// Payment statuses as the API names them.
pub mod payment {
    pub const REQUIRES_ACTION: &str = "REQUIRES_ACTION";
    pub const AUTHORIZED: &str = "AUTHORIZED";
    pub const CAPTURED: &str = "CAPTURED";
    pub const FAILED: &str = "FAILED";
    pub const REFUNDED: &str = "REFUNDED";
    pub const CANCELLED: &str = "CANCELLED";
}

/// Failure codes the flow records, beyond the upstreams' own.
pub mod failure {
    /// The store declined the order.
    pub const REJECTED: &str = "rejected";
    /// Okya would not record our payment.
    pub const NOT_RECORDED: &str = "order_not_recorded";
    /// The customer never finished 3-D Secure.
    pub const AUTHENTICATION_ABANDONED: &str = "authentication_abandoned";
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("upstream: {0}")]
    Upstream(Box<UpstreamError>),
    #[error("stored order is unreadable: {0}")]
    Corrupt(String),
    /// Tests only: the process "died" at a crash point.
    #[error("crashed at {0}")]
    Crashed(String),
}

/// With the `crash-points` feature (tests only), fails like a dead process just before
/// the flow records its next step: the upstream call of the step has happened, its result
/// is lost, and the lease is left to expire.
fn crash_point(state: &AppState, order: &Order) -> Result<(), FlowError> {
    #[cfg(feature = "crash-points")]
    if state.crash_points.hit(&order.step) {
        tracing::warn!(order_id = %order.id, next_step = %order.step, "crash point: dying before recording");
        return Err(FlowError::Crashed(order.step.clone()));
    }
    let _ = (state, order);
    Ok(())
}

impl From<UpstreamError> for FlowError {
    fn from(value: UpstreamError) -> Self {
        FlowError::Upstream(Box::new(value))
    }
}

impl From<sea_orm::DbErr> for FlowError {
    fn from(value: sea_orm::DbErr) -> Self {
        FlowError::Store(StoreError::from(value))
    }
}

/// What a checkout request asks for, already checked for shape.
pub struct CheckoutRequest {
    pub customer_id: String,
    pub cart_id: CartId,
    pub payment_method_id: String,
    pub voucher_id: Option<String>,
    pub idempotency_key: String,
}

impl CheckoutRequest {
    fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.cart_id.as_str(),
            &self.payment_method_id,
            self.voucher_id.as_deref().unwrap_or(""),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }
}

/// Refusals decided before any order exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutRefusal {
    CartNotFound,
    IdempotencyKeyReused,
}

/// Runs checkout: the same key returns the same order, whether the retry comes after the
/// first finished or at the same moment; only one request ever runs the flow.
#[tracing::instrument(skip_all, fields(cart_id = %request.cart_id))]
pub async fn checkout(
    state: &AppState,
    request: CheckoutRequest,
) -> Result<Result<Order, CheckoutRefusal>, FlowError> {
    let hash = request.hash();
    loop {
        if let Some(existing) =
            store::orders::find_by_key(&state.db, &request.customer_id, &request.idempotency_key)
                .await?
        {
            if existing.request_hash != hash {
                return Ok(Err(CheckoutRefusal::IdempotencyKeyReused));
            }
            return Ok(Ok(wait_until_resting(state, &existing.id).await?));
        }
        let owned = store::carts::find(&state.db, &request.cart_id)
            .await?
            .is_some_and(|cart| cart.customer_id.as_deref() == Some(request.customer_id.as_str()));
        if !owned {
            return Ok(Err(CheckoutRefusal::CartNotFound));
        }
        let now = now_ms();
        let row = Order {
            id: format!("ord_{}", uuid::Uuid::now_v7().simple()),
            customer_id: request.customer_id.clone(),
            idempotency_key: request.idempotency_key.clone(),
            request_hash: hash.clone(),
            cart_id: request.cart_id.as_str().to_owned(),
            store_id: String::new(),
            payment_method_id: request.payment_method_id.clone(),
            voucher_id: request.voucher_id.clone(),
            voucher_name: None,
            capture_mode: state.settings.orders.capture.as_str().to_owned(),
            status: OrderStatus::AwaitingPayment.as_str().to_owned(),
            step: Step::Submit.as_str().to_owned(),
            step_attempts: 0,
            next_attempt_at_ms: now,
            // Held by this request from the start, so the sweeper leaves it alone.
            locked_until_ms: Some(now + lease_ms(state)),
            failure_code: None,
            failure_message: None,
            okya_order_id: None,
            number: None,
            currency: None,
            subtotal_minor: None,
            discount_minor: None,
            tax_minor: None,
            total_minor: None,
            lines_json: None,
            okya_version: 0,
            okya_approval: None,
            okya_fulfilment: None,
            payment_intent_id: None,
            payment_status: None,
            card_brand: None,
            card_last4: None,
            pos_ticket_id: None,
            points_earned: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let id = row.id.clone();
        if !store::orders::insert_new(&state.db, row).await? {
            // A concurrent request with the same key won the insert: wait for its result.
            continue;
        }
        tracing::info!(order_id = %id, "checkout started");
        run_held(state, &id).await?;
        return Ok(Ok(wait_until_resting(state, &id).await?));
    }
}

fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.settings.orders.lease_ms).unwrap_or(15_000)
}

fn parse_step(order: &Order) -> Result<Step, FlowError> {
    Step::parse(&order.step).ok_or_else(|| FlowError::Corrupt(format!("step {:?}", order.step)))
}

fn parse_status(order: &Order) -> Result<OrderStatus, FlowError> {
    OrderStatus::parse(&order.status)
        .ok_or_else(|| FlowError::Corrupt(format!("status {:?}", order.status)))
}

/// Waits until the flow rests (waiting for the store or the customer, or finished), so
/// every caller with the same key sees the same settled answer.
async fn wait_until_resting(state: &AppState, id: &str) -> Result<Order, FlowError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(state.settings.orders.checkout_wait_ms);
    loop {
        let order = store::orders::find(&state.db, id)
            .await?
            .ok_or_else(|| FlowError::Corrupt(format!("order {id} vanished")))?;
        let step = parse_step(&order)?;
        if !step.is_active() || tokio::time::Instant::now() >= deadline {
            return Ok(order);
        }
        // If its runner died, take it over once the lease has lapsed.
        drive(state, id).await?;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs the flow if no one else holds it.
pub async fn drive(state: &AppState, id: &str) -> Result<bool, FlowError> {
    if !store::orders::acquire(&state.db, id, now_ms(), lease_ms(state)).await? {
        return Ok(false);
    }
    run_held(state, id).await?;
    Ok(true)
}

/// Runs steps while holding the lease, until the flow rests or a step must wait to retry.
async fn run_held(state: &AppState, id: &str) -> Result<(), FlowError> {
    let outcome = Box::pin(run_steps(state, id)).await;
    if matches!(outcome, Err(FlowError::Crashed(_))) {
        // A dead process releases nothing; the lease runs out instead.
        return outcome;
    }
    store::orders::release(&state.db, id).await?;
    outcome
}

enum Next {
    /// The step recorded its successor; keep going.
    Continue,
    /// Nothing to do until an outside event.
    Rest,
    /// A transient failure: try again later.
    Retry(String),
}

async fn run_steps(state: &AppState, id: &str) -> Result<(), FlowError> {
    for _ in 0..32 {
        let order = store::orders::find(&state.db, id)
            .await?
            .ok_or_else(|| FlowError::Corrupt(format!("order {id} vanished")))?;
        let step = parse_step(&order)?;
        let span = tracing::info_span!("flow_step", order_id = %id, step = step.as_str());
        // Boxed: each step is a large future, and nesting them inline overflows the stack.
        let next = Box::pin(run_step(state, step, order).instrument(span)).await?;
        match next {
            Next::Continue => continue,
            Next::Rest => return Ok(()),
            Next::Retry(reason) => {
                let mut order = store::orders::find(&state.db, id)
                    .await?
                    .ok_or_else(|| FlowError::Corrupt(format!("order {id} vanished")))?;
                order.step_attempts += 1;
                let delay = retry_delay_ms(order.step_attempts);
                order.next_attempt_at_ms = now_ms() + delay;
                order.updated_at_ms = now_ms();
                tracing::warn!(order_id = %id, step = step.as_str(), attempt = order.step_attempts, %reason, retry_in_ms = delay, "step will be retried");
                store::orders::save(&state.db, order).await?;
                return Ok(());
            }
        }
    }
    Err(FlowError::Corrupt(format!("order {id} did not settle")))
}

async fn run_step(state: &AppState, step: Step, order: Order) -> Result<Next, FlowError> {
    match step {
        Step::Submit => submit(state, order).await,
        Step::Discount => discount(state, order).await,
        Step::Charge => charge(state, order).await,
        Step::AwaitAuthentication => await_authentication(state, order).await,
        Step::RecordPayment => record_payment(state, order).await,
        Step::AwaitAcceptance => await_acceptance(state, order).await,
        Step::Inject => inject(state, order).await,
        Step::Capture => capture(state, order).await,
        Step::Recall => recall(state, order).await,
        Step::Refund => refund(state, order).await,
        Step::CancelOkya => cancel_okya(state, order).await,
        Step::Done => follow_store(state, order).await,
        Step::Invalid => Ok(Next::Rest),
    }
}

fn retry_delay_ms(attempts: i32) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 12) - 1).unwrap_or(0);
    i64::from(200_u32.saturating_mul(2_u32.saturating_pow(exponent))).min(60_000)
}

/// Moves to `step`, resetting the retry count.
fn advance(order: &mut Order, step: Step) {
    order.step = step.as_str().to_owned();
    order.step_attempts = 0;
    order.next_attempt_at_ms = now_ms();
    order.updated_at_ms = now_ms();
}

/// Saves the row and, when `to` is given, changes the visible status (allowed moves only)
/// with its history entry, all in one transaction, so no reader ever sees a resting step
/// with a stale status. The change is announced after the commit.
async fn commit(
    state: &AppState,
    order: &mut Order,
    to: Option<OrderStatus>,
) -> Result<(), FlowError> {
    crash_point(state, order)?;
    let from = parse_status(order)?;
    let now = now_ms();
    let txn = sea_orm::TransactionTrait::begin(&state.db).await?;
    let moved = match to {
        None => false,
        // The first visible status of a 3-D Secure order is the one it was created with.
        Some(to) if to == from => store::orders::start_history(&txn, &order.id, to, now).await?,
        Some(to) => store::orders::transition(&txn, &order.id, from, to, now).await?,
    };
    if moved && let Some(to) = to {
        order.status = to.as_str().to_owned();
    }
    store::orders::save(&txn, order.clone()).await?;
    txn.commit().await?;
    if let Some(to) = to {
        if moved {
            tracing::info!(order_id = %order.id, from = from.as_str(), to = to.as_str(), "order status changed");
            state.order_events.publish(&order.id).await;
        } else if from != to {
            tracing::warn!(order_id = %order.id, from = from.as_str(), to = to.as_str(), "refused status change");
        }
    }
    Ok(())
}

fn key(order: &Order, step: &str) -> String {
    format!("{}:{step}", order.id)
}

fn money(order: &Order, minor: Option<i64>) -> Result<Money, FlowError> {
    let currency = order
        .currency
        .as_deref()
        .and_then(|c| Currency::parse(c).ok())
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no currency", order.id)))?;
    Ok(Money::new(minor.unwrap_or(0), currency))
}

/// Records Okya's state from one of its answers, unless a newer one is already held.
async fn record_okya(
    state: &AppState,
    order: &mut Order,
    okya: &OkyaOrder,
) -> Result<(), FlowError> {
    if okya.version > order.okya_version {
        order.okya_version = okya.version;
        order.okya_approval = Some(approval_name(okya.approval).to_owned());
        order.okya_fulfilment = Some(fulfilment_name(okya.fulfilment).to_owned());
    }
    store::orders::record_okya_state(
        &state.db,
        &order.id,
        okya.version,
        approval_name(okya.approval),
        fulfilment_name(okya.fulfilment),
    )
    .await?;
    Ok(())
}

pub fn approval_name(approval: Approval) -> &'static str {
    match approval {
        Approval::NeedsApproval => "NEEDS_APPROVAL",
        Approval::Approved => "APPROVED",
        Approval::NotApproved => "NOT_APPROVED",
    }
}

pub fn fulfilment_name(fulfilment: Fulfilment) -> &'static str {
    match fulfilment {
        Fulfilment::Received => "RECEIVED",
        Fulfilment::InPreparation => "IN_PREPARATION",
        Fulfilment::ReadyForPickup => "READY_FOR_PICKUP",
        Fulfilment::Completed => "COMPLETED",
        Fulfilment::Void => "VOID",
    }
}

fn fail_with(order: &mut Order, code: &str, message: &str) {
    order.failure_code = Some(code.chars().take(64).collect());
    order.failure_message = Some(message.chars().take(500).collect());
}

/// Step 7–10: Okya validates the cart and creates the order.
async fn submit(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let cart_id = CartId::from_upstream(order.cart_id.clone());
    match state
        .upstreams
        .okya
        .create_order(&cart_id, &order.customer_id, &key(&order, "submit"))
        .await
    {
        Ok(okya) => {
            order.okya_order_id = Some(okya.id.clone());
            order.number = Some(okya.number.clone());
            order.store_id = okya.store_id.clone();
            order.currency = Some(okya.currency.clone());
            order.subtotal_minor = Some(okya.subtotal.amount);
            order.discount_minor = Some(okya.discount.amount);
            order.tax_minor = Some(okya.tax.amount);
            order.total_minor = Some(okya.total.amount);
            order.lines_json =
                Some(serde_json::to_string(&okya.lines).unwrap_or_else(|_| "[]".into()));
            record_okya(state, &mut order, &okya).await?;
            let next = if order.voucher_id.is_some() {
                Step::Discount
            } else {
                Step::Charge
            };
            advance(&mut order, next);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        Err(e) if e.is_transient() => Ok(Next::Retry(e.to_string())),
        Err(e) => {
            let (code, message) = match e.rejection() {
                Some((_, r)) => (r.code.clone(), r.message.clone()),
                None => ("order_not_accepted".to_owned(), e.to_string()),
            };
            tracing::info!(order_id = %order.id, %code, "Okya refused the order; nothing charged");
            fail_with(&mut order, &code, &message);
            advance(&mut order, Step::Invalid);
            commit(state, &mut order, None).await?;
            Ok(Next::Rest)
        }
    }
}

/// Use Reward, steps 14–19: SessionM prices the voucher against the order and locks it to
/// this order; the discount goes on the Okya order, which recomputes tax and total.
async fn discount(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let voucher = order.voucher_id.clone().unwrap_or_default();
    let customer = store::customers::find(&state.db, &order.customer_id).await?;
    let Some(user_id) = customer.and_then(|c| c.sessionm_user_id) else {
        fail_with(
            &mut order,
            "voucher_unavailable",
            "Rewards are not ready for this account yet.",
        );
        advance(&mut order, Step::CancelOkya);
        commit(state, &mut order, None).await?;
        return Ok(Next::Continue);
    };
    let basket = basket(&order)?;
    let locked = match state
        .upstreams
        .sessionm
        .lock(&user_id, &voucher, &basket, &key(&order, "lock"))
        .await
    {
        Ok(discount) => discount,
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            let (code, message) = e
                .rejection()
                .map(|(_, r)| (r.code.clone(), r.message.clone()))
                .unwrap_or_else(|| ("voucher_not_applicable".into(), e.to_string()));
            tracing::info!(order_id = %order.id, %code, "SessionM refused the voucher; nothing charged");
            fail_with(&mut order, &code, &message);
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            return Ok(Next::Continue);
        }
    };
    // From here a lock exists that every compensation must release.
    order.voucher_name = Some(locked.name.clone().unwrap_or_else(|| "Reward".to_owned()));
    commit(state, &mut order, None).await?;
    let adjustment = NewAdjustment {
        source: "sessionm".into(),
        reference: voucher.clone(),
        description: order
            .voucher_name
            .clone()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
        amount: WireMoney::from_money(&locked.amount),
    };
    match state
        .upstreams
        .okya
        .add_adjustment(&okya_id(&order)?, &adjustment, &key(&order, "adjust"))
        .await
    {
        Ok(okya) => {
            order.subtotal_minor = Some(okya.subtotal.amount);
            order.discount_minor = Some(okya.discount.amount);
            order.tax_minor = Some(okya.tax.amount);
            order.total_minor = Some(okya.total.amount);
            record_okya(state, &mut order, &okya).await?;
            // A reward that covers everything needs no payment at all.
            let next = if okya.total.amount == 0 {
                Step::RecordPayment
            } else {
                Step::Charge
            };
            advance(&mut order, next);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        Err(e) if e.is_transient() => Ok(Next::Retry(e.to_string())),
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, "Okya refused the discount; releasing the voucher");
            fail_with(&mut order, "voucher_not_applicable", &e.to_string());
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
    }
}

/// The order as a SessionM basket: what the voucher is priced against.
fn basket(order: &Order) -> Result<Transaction, FlowError> {
    let lines: Vec<CartLine> = serde_json::from_str(order.lines_json.as_deref().unwrap_or("[]"))
        .map_err(|e| FlowError::Corrupt(format!("lines of {}: {e}", order.id)))?;
    let currency = money(order, Some(0))?.currency;
    let transaction_lines = lines
        .iter()
        .map(|l| TransactionLine {
            line_id: l.id.clone(),
            product_id: l.product_id.clone(),
            sku: None,
            name: l.product_id.clone(),
            quantity: l.quantity,
            unit_price: Money::new(l.unit_price.amount, currency.clone()),
        })
        .collect();
    Transaction::new(
        order.id.clone(),
        order.store_id.clone(),
        currency,
        transaction_lines,
    )
    .map_err(|e| FlowError::Corrupt(e.to_string()))
}

/// Gives the voucher back when this order locked it and will not use it.
async fn release_voucher(state: &AppState, order: &Order) -> Result<Option<Next>, FlowError> {
    let (Some(voucher), Some(_)) = (&order.voucher_id, &order.voucher_name) else {
        return Ok(None);
    };
    let customer = store::customers::find(&state.db, &order.customer_id).await?;
    let Some(user_id) = customer.and_then(|c| c.sessionm_user_id) else {
        return Ok(None);
    };
    match state
        .upstreams
        .sessionm
        .unlock(&user_id, voucher, &order.id, &key(order, "unlock"))
        .await
    {
        Ok(()) => Ok(None),
        Err(e) if e.is_transient() => Ok(Some(Next::Retry(e.to_string()))),
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, "SessionM would not release the voucher");
            Ok(None)
        }
    }
}

/// Steps 11–12: Stripe takes the total.
async fn charge(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let total = money(&order, order.total_minor)?;
    let manual = CaptureMode::parse(&order.capture_mode) == Some(CaptureMode::OnAcceptance);
    let mut metadata = BTreeMap::new();
    metadata.insert("order_id".to_owned(), order.id.clone());
    if let Some(okya) = &order.okya_order_id {
        metadata.insert("okya_order_id".to_owned(), okya.clone());
    }
    let params = CreatePaymentIntent {
        amount: total,
        payment_method: order.payment_method_id.clone(),
        capture_method: if manual {
            CaptureMethod::Manual
        } else {
            CaptureMethod::Automatic
        },
        description: Some(format!(
            "CBTL order {}",
            order.number.as_deref().unwrap_or("")
        )),
        metadata,
    };
    match state
        .upstreams
        .stripe
        .create_payment_intent(&params, &key(&order, "charge"))
        .await
    {
        Ok(intent) => {
            apply_intent(&mut order, &intent);
            match intent.status {
                PaymentIntentStatus::Succeeded | PaymentIntentStatus::RequiresCapture => {
                    advance(&mut order, Step::RecordPayment);
                }
                PaymentIntentStatus::RequiresAction | PaymentIntentStatus::Processing => {
                    advance(&mut order, Step::AwaitAuthentication);
                    commit(state, &mut order, Some(OrderStatus::AwaitingPayment)).await?;
                    return Ok(Next::Rest);
                }
                _ => {
                    let reason = intent
                        .last_payment_error
                        .as_ref()
                        .map(|e| {
                            (
                                e.code.clone().unwrap_or_else(|| "card_declined".into()),
                                e.message.clone().unwrap_or_default(),
                            )
                        })
                        .unwrap_or_else(|| {
                            (
                                "payment_failed".into(),
                                "The payment did not go through.".into(),
                            )
                        });
                    order.payment_status = Some(payment::FAILED.into());
                    fail_with(&mut order, &reason.0, &reason.1);
                    advance(&mut order, Step::CancelOkya);
                }
            }
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        Err(e) if e.is_transient() => Ok(Next::Retry(e.to_string())),
        Err(e) => {
            if let Some(decline) = stripe::decline_of(&e) {
                order.payment_intent_id = decline
                    .payment_intent_id
                    .clone()
                    .or(order.payment_intent_id);
                fail_with(&mut order, &decline.code, &decline.message);
            } else {
                let (code, message) = e
                    .rejection()
                    .map(|(_, r)| (r.code.clone(), r.message.clone()))
                    .unwrap_or_else(|| ("payment_failed".into(), e.to_string()));
                tracing::warn!(order_id = %order.id, %code, "Stripe refused the payment request");
                fail_with(&mut order, &code, &message);
            }
            order.payment_status = Some(payment::FAILED.into());
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
    }
}

fn apply_intent(order: &mut Order, intent: &PaymentIntent) {
    order.payment_intent_id = Some(intent.id.clone());
    if let Some((brand, last4)) = intent.card() {
        order.card_brand = Some(brand.to_owned());
        order.card_last4 = Some(last4.chars().take(4).collect());
    }
    order.payment_status = Some(
        match intent.status {
            PaymentIntentStatus::Succeeded => payment::CAPTURED,
            PaymentIntentStatus::RequiresCapture => payment::AUTHORIZED,
            PaymentIntentStatus::RequiresAction | PaymentIntentStatus::Processing => {
                payment::REQUIRES_ACTION
            }
            PaymentIntentStatus::Canceled => payment::CANCELLED,
            _ => payment::FAILED,
        }
        .into(),
    );
}

/// Waiting for 3-D Secure: Stripe's webhook moves the flow on; an abandoned
/// authentication is cancelled once the timeout passes.
async fn await_authentication(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let Some(intent_id) = order.payment_intent_id.clone() else {
        return Err(FlowError::Corrupt(format!(
            "order {} awaits authentication without an intent",
            order.id
        )));
    };
    let intent = match state
        .upstreams
        .stripe
        .retrieve_payment_intent(&intent_id)
        .await
    {
        Ok(intent) => intent,
        Err(e) if e.is_transient() => return Ok(Next::Rest),
        Err(e) => return Err(e.into()),
    };
    match intent.status {
        PaymentIntentStatus::Succeeded | PaymentIntentStatus::RequiresCapture => {
            apply_intent(&mut order, &intent);
            advance(&mut order, Step::RecordPayment);
        }
        PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
            apply_intent(&mut order, &intent);
            let (code, message) = intent
                .last_payment_error
                .as_ref()
                .map(|e| {
                    (
                        e.code
                            .clone()
                            .unwrap_or_else(|| "authentication_failed".into()),
                        e.message.clone().unwrap_or_default(),
                    )
                })
                .unwrap_or_else(|| {
                    (
                        "authentication_failed".into(),
                        "The card could not be authenticated.".into(),
                    )
                });
            order.payment_status = Some(payment::FAILED.into());
            fail_with(&mut order, &code, &message);
            advance(&mut order, Step::CancelOkya);
        }
        _ => {
            let timeout = i64::try_from(state.settings.orders.authentication_timeout_secs * 1000)
                .unwrap_or(900_000);
            if now_ms() - order.updated_at_ms < timeout {
                return Ok(Next::Rest);
            }
            match state
                .upstreams
                .stripe
                .cancel_payment_intent(&intent_id, Some("abandoned"), &key(&order, "abandon"))
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
                Err(e) => {
                    tracing::warn!(order_id = %order.id, error = %e, "cancelling an abandoned intent failed")
                }
            }
            order.payment_status = Some(payment::CANCELLED.into());
            fail_with(
                &mut order,
                failure::AUTHENTICATION_ABANDONED,
                "The card was not authenticated in time.",
            );
            advance(&mut order, Step::CancelOkya);
        }
    }
    commit(state, &mut order, None).await?;
    Ok(Next::Continue)
}

/// Step 13: the payment details go on the Okya order, which puts it in front of the store.
async fn record_payment(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let okya_id = okya_id(&order)?;
    let captured = order.payment_status.as_deref() == Some(payment::CAPTURED);
    let free = order.total_minor == Some(0);
    let body = NewPayment {
        provider: if free { "voucher" } else { "stripe" }.into(),
        reference: if free {
            order.voucher_id.clone().unwrap_or_else(|| order.id.clone())
        } else {
            order.payment_intent_id.clone().unwrap_or_default()
        },
        amount: WireMoney::from_money(&money(&order, order.total_minor)?),
        status: if captured || free {
            PaymentRecordStatus::Captured
        } else {
            PaymentRecordStatus::Authorized
        },
        card: card(&order),
    };
    match state
        .upstreams
        .okya
        .record_payment(&okya_id, &body, &key(&order, "payment"))
        .await
    {
        Ok(okya) => {
            record_okya(state, &mut order, &okya).await?;
            advance(&mut order, Step::AwaitAcceptance);
            commit(state, &mut order, Some(OrderStatus::AwaitingAcceptance)).await?;
            Ok(Next::Continue)
        }
        Err(e) if e.is_transient() => Ok(Next::Retry(e.to_string())),
        Err(e) => {
            tracing::error!(order_id = %order.id, error = %e, "Okya would not record the payment; refunding");
            fail_with(&mut order, failure::NOT_RECORDED, &e.to_string());
            advance(&mut order, Step::Refund);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
    }
}

fn card(order: &Order) -> Option<crate::upstream::okya::orders::Card> {
    match (&order.card_brand, &order.card_last4) {
        (Some(brand), Some(last4)) => Some(crate::upstream::okya::orders::Card {
            brand: brand.clone(),
            last4: last4.clone(),
        }),
        _ => None,
    }
}

fn okya_id(order: &Order) -> Result<String, FlowError> {
    order
        .okya_order_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no Okya order", order.id)))
}

/// Steps 19–21: waiting for the store; Okya's webhook records its decision.
async fn await_acceptance(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    match order.okya_approval.as_deref() {
        Some("APPROVED") => {
            advance(&mut order, Step::Inject);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        Some("NOT_APPROVED") => {
            fail_with(
                &mut order,
                failure::REJECTED,
                "The store declined the order.",
            );
            advance(&mut order, Step::Refund);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        _ => Ok(Next::Rest),
    }
}

/// Steps 22–25: the accepted order goes into the store's POS, which prints it.
async fn inject(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let body = match injection(state, &order).await {
        Ok(body) => body,
        Err(FlowError::Upstream(e)) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => return Err(e),
    };
    let location = order.store_id.clone();
    let outcome = state
        .upstreams
        .epoint
        .inject_order(&location, &body, &key(&order, "inject"))
        .await;
    let failed = match outcome {
        Ok(receipt) => {
            order.pos_ticket_id = Some(receipt.ticket_id.clone());
            return finish_injection(state, order).await;
        }
        Err(e) if e.is_transient() => {
            if i64::from(order.step_attempts) + 1
                < i64::from(state.settings.orders.pos_max_attempts)
            {
                return Ok(Next::Retry(e.to_string()));
            }
            // Out of attempts: it may have landed on a try whose answer was lost.
            if let Ok(Some(receipt)) = state
                .upstreams
                .epoint
                .find_order(&location, &order.id)
                .await
            {
                order.pos_ticket_id = Some(receipt.ticket_id.clone());
                return finish_injection(state, order).await;
            }
            ("pos_unreachable".to_owned(), e.to_string())
        }
        Err(e) => e
            .rejection()
            .map(|(_, r)| (r.code.clone(), r.message.clone()))
            .unwrap_or_else(|| ("pos_refused".into(), e.to_string())),
    };
    tracing::warn!(order_id = %order.id, code = %failed.0, "the POS could not take the order; recalling");
    fail_with(&mut order, &failed.0, &failed.1);
    advance(&mut order, Step::Recall);
    commit(state, &mut order, None).await?;
    Ok(Next::Continue)
}

async fn finish_injection(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    if order.payment_status.as_deref() == Some(payment::AUTHORIZED) {
        advance(&mut order, Step::Capture);
        commit(state, &mut order, None).await?;
    } else {
        in_preparation(state, &mut order).await?;
    }
    Ok(Next::Continue)
}

/// The order is with the store: tell the app, and queue the order for SessionM (step 26).
async fn in_preparation(state: &AppState, order: &mut Order) -> Result<(), FlowError> {
    store::jobs::enqueue(
        &state.db,
        SEND_TO_SESSIONM,
        &format!("{SEND_TO_SESSIONM}:{}", order.id),
        &serde_json::json!({"order_id": order.id}),
        now_ms(),
    )
    .await?;
    advance(order, Step::Done);
    commit(state, order, Some(OrderStatus::InPreparation)).await?;
    state.job_signal.wake();
    Ok(())
}

/// Capture on acceptance: take the authorised money now that the POS has the order.
async fn capture(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let intent_id = order.payment_intent_id.clone().unwrap_or_default();
    match state
        .upstreams
        .stripe
        .capture_payment_intent(&intent_id, None, &key(&order, "capture"))
        .await
    {
        Ok(intent) => apply_intent(&mut order, &intent),
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            tracing::error!(order_id = %order.id, error = %e, "capture failed; recalling the order");
            fail_with(&mut order, "capture_failed", &e.to_string());
            advance(&mut order, Step::Recall);
            commit(state, &mut order, None).await?;
            return Ok(Next::Continue);
        }
    }
    let okya_id = okya_id(&order)?;
    let body = NewPayment {
        provider: "stripe".into(),
        reference: intent_id,
        amount: WireMoney::from_money(&money(&order, order.total_minor)?),
        status: PaymentRecordStatus::Captured,
        card: card(&order),
    };
    match state
        .upstreams
        .okya
        .record_payment(&okya_id, &body, &key(&order, "payment_captured"))
        .await
    {
        Ok(okya) => record_okya(state, &mut order, &okya).await?,
        Err(e) if e.is_transient() => {
            commit(state, &mut order, None).await?;
            return Ok(Next::Retry(e.to_string()));
        }
        // The money is ours either way; Okya's copy is informational.
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, "Okya did not take the capture update")
        }
    }
    in_preparation(state, &mut order).await?;
    Ok(Next::Continue)
}

/// Step 25: the POS refused, so the order is recalled in Okya.
async fn recall(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let okya_id = okya_id(&order)?;
    let reason = format!(
        "pos_refused: {}",
        order.failure_code.as_deref().unwrap_or("unknown")
    );
    match state
        .upstreams
        .okya
        .recall_order(&okya_id, &reason, &key(&order, "recall"))
        .await
    {
        Ok(okya) => record_okya(state, &mut order, &okya).await?,
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) if crate::upstream::okya::is_code(&e, okya_codes::INVALID_STATE) => {
            tracing::warn!(order_id = %order.id, "Okya would not recall the order; refunding anyway");
        }
        Err(e) => return Err(e.into()),
    }
    advance(&mut order, Step::Refund);
    commit(state, &mut order, None).await?;
    Ok(Next::Continue)
}

/// Gives the money back: a refund after a capture, a release of an authorisation.
async fn refund(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let intent_id = order.payment_intent_id.clone().unwrap_or_default();
    match order.payment_status.as_deref() {
        Some(payment::CAPTURED) => match state
            .upstreams
            .stripe
            .create_refund(&intent_id, None, &key(&order, "refund"))
            .await
        {
            Ok(_) => order.payment_status = Some(payment::REFUNDED.into()),
            Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
            Err(e) => return Err(e.into()),
        },
        Some(payment::AUTHORIZED) => match state
            .upstreams
            .stripe
            .cancel_payment_intent(&intent_id, Some("abandoned"), &key(&order, "release"))
            .await
        {
            Ok(_) => order.payment_status = Some(payment::CANCELLED.into()),
            Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
            Err(e) => return Err(e.into()),
        },
        _ => {}
    }
    if let Some(retry) = release_voucher(state, &order).await? {
        // The money is back; record that before retrying the voucher.
        commit(state, &mut order, None).await?;
        return Ok(retry);
    }
    let target = match order.failure_code.as_deref() {
        Some(failure::REJECTED) => OrderStatus::Rejected,
        Some(failure::NOT_RECORDED) => OrderStatus::PaymentFailed,
        _ => OrderStatus::Cancelled,
    };
    advance(&mut order, Step::Done);
    commit(state, &mut order, Some(target)).await?;
    Ok(Next::Rest)
}

/// The payment failed: cancel the Okya order so no store ever sees it.
async fn cancel_okya(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let okya_id = okya_id(&order)?;
    let reason = format!(
        "payment_failed: {}",
        order.failure_code.as_deref().unwrap_or("unknown")
    );
    match state
        .upstreams
        .okya
        .cancel_order(&okya_id, &reason, &key(&order, "cancel"))
        .await
    {
        Ok(okya) => record_okya(state, &mut order, &okya).await?,
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, "Okya would not cancel the unpaid order")
        }
    }
    if let Some(retry) = release_voucher(state, &order).await? {
        return Ok(retry);
    }
    if order.payment_status.is_none() {
        // Refused before any payment (a voucher SessionM would not honour): never shown.
        advance(&mut order, Step::Invalid);
        commit(state, &mut order, None).await?;
        return Ok(Next::Rest);
    }
    advance(&mut order, Step::Done);
    commit(state, &mut order, Some(OrderStatus::PaymentFailed)).await?;
    Ok(Next::Rest)
}

/// After injection the flow only follows the store: ready, then collected.
async fn follow_store(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let status = parse_status(&order)?;
    let fulfilment = order.okya_fulfilment.clone();
    match (status, fulfilment.as_deref()) {
        (OrderStatus::InPreparation, Some("READY_FOR_PICKUP")) => {
            commit(state, &mut order, Some(OrderStatus::ReadyForPickup)).await?;
        }
        (OrderStatus::InPreparation | OrderStatus::ReadyForPickup, Some("COMPLETED")) => {
            if status == OrderStatus::InPreparation {
                commit(state, &mut order, Some(OrderStatus::ReadyForPickup)).await?;
            }
            commit(state, &mut order, Some(OrderStatus::Completed)).await?;
        }
        _ => {}
    }
    Ok(Next::Rest)
}

/// The POS ticket, built only from what the order row holds and the catalogue, so a retry
/// sends the same body.
async fn injection(state: &AppState, order: &Order) -> Result<InjectOrder, FlowError> {
    let lines: Vec<CartLine> = serde_json::from_str(order.lines_json.as_deref().unwrap_or("[]"))
        .map_err(|e| FlowError::Corrupt(format!("lines of {}: {e}", order.id)))?;
    let ids: Vec<crate::domain::ProductId> = lines
        .iter()
        .map(|l| crate::domain::ProductId::from_upstream(l.product_id.clone()))
        .collect();
    let products = state.upstreams.okya.products(&ids).await?;
    let customer = store::customers::find(&state.db, &order.customer_id).await?;
    let mut inject_lines = Vec::with_capacity(lines.len());
    for line in &lines {
        let product = products.iter().find(|p| p.id == line.product_id);
        let mut modifiers = Vec::new();
        let mut modifier_total = 0;
        for option_id in &line.modifier_option_ids {
            let option = product.and_then(|p| {
                p.modifier_groups
                    .iter()
                    .flat_map(|g| g.options.iter())
                    .find(|o| &o.id == option_id)
            });
            let price = option.map(|o| o.price_delta.amount).unwrap_or(0);
            modifier_total += price;
            modifiers.push(InjectModifier {
                id: option_id.clone(),
                name: option
                    .map(|o| o.name.clone())
                    .unwrap_or_else(|| option_id.clone()),
                price: money(order, Some(price))?,
            });
        }
        inject_lines.push(InjectLine {
            product_id: line.product_id.clone(),
            name: product
                .map(|p| p.name.clone())
                .unwrap_or_else(|| line.product_id.clone()),
            quantity: line.quantity,
            unit_price: money(order, Some(line.unit_price.amount - modifier_total))?,
            modifiers,
            note: None,
        });
    }
    Ok(InjectOrder {
        external_id: order.id.clone(),
        order_number: order.number.clone().unwrap_or_default(),
        customer_name: customer
            .map(|c| {
                format!(
                    "{} {}",
                    c.first_name,
                    c.last_name
                        .chars()
                        .next()
                        .map(|i| format!("{i}."))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "Customer".into()),
        placed_at: chrono::DateTime::from_timestamp_millis(order.created_at_ms).unwrap_or_default(),
        pickup_at: None,
        lines: inject_lines,
        subtotal: money(order, order.subtotal_minor)?,
        discount: money(order, order.discount_minor)?,
        tax: money(order, order.tax_minor)?,
        total: money(order, order.total_minor)?,
        note: None,
    })
}

/// Records the order state carried by an Okya webhook (only when newer than what we
/// hold) and runs the flow. Busy orders are retried by the job runner.
pub async fn apply_okya_event(
    state: &AppState,
    payload: serde_json::Value,
) -> Result<(), JobError> {
    let event: crate::upstream::okya::orders::OrderEvent = serde_json::from_value(payload)
        .map_err(|e| JobError::Permanent(format!("unreadable Okya event: {e}")))?;
    let okya = event.data.order;
    let transient = |e: &dyn std::fmt::Display| JobError::Transient(e.to_string());
    let Some(order) = store::orders::find_by_okya_id(&state.db, &okya.id)
        .await
        .map_err(|e| transient(&e))?
    else {
        // One of ours whose checkout has not recorded it yet is retried; an order placed
        // through another channel (a cart we never created) is none of our business.
        let cart = store::carts::find(&state.db, &CartId::from_upstream(okya.cart_id.clone()))
            .await
            .map_err(|e| transient(&e))?;
        if cart.is_none() {
            tracing::debug!(okya_order_id = %okya.id, "event for an order not placed through us; ignored");
            return Ok(());
        }
        return Err(JobError::Transient(format!(
            "no order for Okya order {} yet",
            okya.id
        )));
    };
    store::orders::record_okya_state(
        &state.db,
        &order.id,
        okya.version,
        approval_name(okya.approval),
        fulfilment_name(okya.fulfilment),
    )
    .await
    .map_err(|e| transient(&e))?;
    drive_for_job(state, &order.id).await
}

/// Runs the flow for a webhook job; a busy order makes the job retry shortly, so the
/// event is applied by whoever holds the order next.
async fn drive_for_job(state: &AppState, id: &str) -> Result<(), JobError> {
    match drive(state, id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(JobError::Busy("order busy; will apply shortly".into())),
        Err(e) => Err(JobError::Transient(e.to_string())),
    }
}

/// A Stripe event about one of our intents: the flow re-reads the intent itself, since
/// events repeat and arrive out of order.
pub async fn apply_stripe_event(
    state: &AppState,
    payload: serde_json::Value,
) -> Result<(), JobError> {
    let Some(intent_id) = payload["data"]["object"]["id"]
        .as_str()
        .filter(|id| id.starts_with("pi_"))
        .or_else(|| payload["data"]["object"]["payment_intent"].as_str())
    else {
        return Ok(());
    };
    let transient = |e: &dyn std::fmt::Display| JobError::Transient(e.to_string());
    let Some(order) = store::orders::find_by_payment_intent(&state.db, intent_id)
        .await
        .map_err(|e| transient(&e))?
    else {
        return Ok(());
    };
    drive_for_job(state, &order.id).await
}

/// Step 26 (durable): the order's details go to SessionM, which credits points.
pub async fn send_to_sessionm(
    state: &AppState,
    payload: serde_json::Value,
) -> Result<(), JobError> {
    let Some(order_id) = payload["order_id"].as_str() else {
        return Err(JobError::Permanent("payload without order_id".into()));
    };
    let transient = |e: &dyn std::fmt::Display| JobError::Transient(e.to_string());
    let mut order = store::orders::find(&state.db, order_id)
        .await
        .map_err(|e| transient(&e))?
        .ok_or_else(|| JobError::Permanent(format!("no order {order_id}")))?;
    let customer = store::customers::find(&state.db, &order.customer_id)
        .await
        .map_err(|e| transient(&e))?
        .ok_or_else(|| JobError::Permanent(format!("no customer for {order_id}")))?;
    let Some(user_id) = customer.sessionm_user_id else {
        return Err(JobError::Transient(
            "the customer's SessionM link is not finished yet".into(),
        ));
    };
    let sale = sale(&order, user_id).map_err(|e| JobError::Permanent(e.to_string()))?;
    let receipt = state
        .upstreams
        .sessionm
        .send_transaction(&sale, &key(&order, "transaction"))
        .await
        .map_err(|e| {
            if e.is_transient() {
                JobError::Transient(e.to_string())
            } else {
                JobError::Permanent(e.to_string())
            }
        })?;
    order.points_earned = Some(receipt.points_earned);
    order.updated_at_ms = now_ms();
    store::orders::set_points(&state.db, &order.id, receipt.points_earned)
        .await
        .map_err(|e| transient(&e))?;
    tracing::info!(order_id = %order.id, points = receipt.points_earned, "order sent to SessionM");
    Ok(())
}

fn sale(order: &Order, user_id: String) -> Result<SendTransaction, FlowError> {
    let lines: Vec<CartLine> = serde_json::from_str(order.lines_json.as_deref().unwrap_or("[]"))
        .map_err(|e| FlowError::Corrupt(format!("lines of {}: {e}", order.id)))?;
    let currency = money(order, Some(0))?.currency;
    let transaction_lines = lines
        .iter()
        .map(|l| TransactionLine {
            line_id: l.id.clone(),
            product_id: l.product_id.clone(),
            sku: None,
            name: l.product_id.clone(),
            quantity: l.quantity,
            unit_price: Money::new(l.unit_price.amount, currency.clone()),
        })
        .collect();
    let transaction = Transaction::new(
        order.id.clone(),
        order.store_id.clone(),
        currency,
        transaction_lines,
    )
    .map_err(|e| FlowError::Corrupt(e.to_string()))?;
    let discounts = match (&order.voucher_id, &order.voucher_name) {
        (Some(voucher), Some(name)) if order.discount_minor.unwrap_or(0) > 0 => {
            vec![crate::upstream::sessionm::Discount {
                user_offer_id: voucher.clone(),
                transaction_id: order.id.clone(),
                name: Some(name.clone()),
                amount: money(order, order.discount_minor)?,
            }]
        }
        _ => Vec::new(),
    };
    Ok(SendTransaction {
        user_id,
        transaction,
        discounts,
        tax: money(order, order.tax_minor)?,
        total: money(order, order.total_minor)?,
        occurred_at: chrono::DateTime::from_timestamp_millis(order.created_at_ms)
            .unwrap_or_default(),
    })
}

/// Compares open orders with Okya's copy and applies what webhooks never brought (Okya
/// gives up redelivering after a day; an outage of ours could outlast that).
pub async fn reconcile(state: &AppState) -> Result<usize, FlowError> {
    let open = store::orders::open_with_okya(&state.db, 200).await?;
    let ids: Vec<String> = open
        .iter()
        .filter_map(|o| o.okya_order_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut applied = 0;
    for okya in state.upstreams.okya.orders(&ids).await? {
        let Some(order) = open
            .iter()
            .find(|o| o.okya_order_id.as_deref() == Some(okya.id.as_str()))
        else {
            continue;
        };
        if okya.version <= order.okya_version {
            continue;
        }
        tracing::info!(order_id = %order.id, version = okya.version, "reconciliation found a change no webhook brought");
        store::orders::record_okya_state(
            &state.db,
            &order.id,
            okya.version,
            approval_name(okya.approval),
            fulfilment_name(okya.fulfilment),
        )
        .await?;
        drive(state, &order.id).await?;
        applied += 1;
    }
    Ok(applied)
}

/// Resumes unfinished flows: at start, then on a timer. Any instance may run any order;
/// the lease in the row keeps two from running the same one.
pub fn spawn_sweeper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(state.settings.orders.sweep_interval_ms);
        let reconcile_every =
            Duration::from_secs(state.settings.orders.reconcile_interval_secs.max(1));
        let mut last_reconcile = tokio::time::Instant::now();
        loop {
            if last_reconcile.elapsed() >= reconcile_every {
                last_reconcile = tokio::time::Instant::now();
                if let Err(e) = reconcile(&state).await {
                    tracing::warn!(error = %e, "reconciling with Okya failed");
                }
            }
            let now = now_ms();
            let auth_deadline = now
                - i64::try_from(state.settings.orders.authentication_timeout_secs * 1000)
                    .unwrap_or(900_000);
            match store::orders::due(&state.db, now, auth_deadline, 50).await {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = drive(&state, &id).await {
                            tracing::error!(order_id = %id, error = %e, "resuming an order failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "looking for unfinished orders failed"),
            }
            tokio::time::sleep(interval).await;
        }
    })
}
