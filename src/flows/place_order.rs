//! Place Order (seed steps 6–33) as a durable state machine.
//!
//! The order row is the recovery point. Each active step makes one upstream call under an
//! idempotency key derived from the order and the step, then records the next step; a
//! step re-run after a crash therefore repeats nothing. One runner at a time holds an
//! order (a lease in the row); `checkout` runs the flow inline for a quick answer, and the
//! sweeper resumes any flow left unfinished by a crash or an upstream outage. Webhooks
//! only record what Okya or Stripe said and then run the flow.
//!
//! Every answer falls in one of three kinds, and each step handles all three:
//! - **success**: record it and move on;
//! - **unknown outcome** (a timeout, a dropped connection, a 5xx, Stripe's 409
//!   `idempotency_key_in_use`): the upstream may have acted, so the step is tried again
//!   later under the same key, and where a key can no longer tell (a replayed 500) the
//!   step reads what the upstream says is true (the PaymentIntent, the Okya order, the
//!   POS ticket) before deciding anything;
//! - **definite refusal**: the step reads the upstream's truth too where money or a ticket
//!   may exist after all, then compensates or continues from it.
//!
//! A step that cannot settle after `orders.max_step_attempts` tries, or an impossible
//! stored state, marks the order for an operator (`attention`, logged at ERROR and counted
//! by `/readyz`): never an endless loop and never a silent "done".
//!
//! ```text
//! submit ─► [discount] ─► charge ─► record_payment ─► await_acceptance ─► inject ─► [capture] ─► done
//!    │          │          │ │ └─► await_authentication ─┘        │            │
//!    ▼          ▼          │ └─► await_payment_retry ─► (charge)  ▼            ▼
//! invalid   cancel_okya ◄──┘       (timeout: cancel_okya)   refund (REJECTED)  recall ─► refund (CANCELLED)
//! ```

use crate::{
    auth::now_ms,
    context::AppState,
    domain::{CaptureMode, CartId, Currency, Money, OrderStatus, PaymentStatus, Step},
    flows::order_lines::{self, LineSnapshot},
    jobs::{JobError, JobKind},
    store::{self, StoreError, orders::Order},
    upstream::{
        UpstreamError,
        epoint::InjectOrder,
        okya::{
            CartLine, WireMoney, codes as okya_codes,
            orders::{
                Approval, Fulfilment, NewAdjustment, NewPayment, Order as OkyaOrder,
                PaymentRecordStatus,
            },
        },
        sessionm::{self, OfferStatus, SendTransaction, Transaction},
        stripe::{self, CaptureMethod, CreatePaymentIntent, PaymentIntent, PaymentIntentStatus},
    },
};
use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, time::Duration};
use tracing::Instrument;

pub const SEND_TO_SESSIONM: &str = JobKind::SendToSessionm.as_str();
pub const READ_LOYALTY_POINTS: &str = JobKind::ReadLoyaltyPoints.as_str();
pub const OKYA_EVENT: &str = JobKind::OkyaEvent.as_str();
pub const STRIPE_EVENT: &str = JobKind::StripeEvent.as_str();

/// Failure codes the flow records, beyond the upstreams' own.
pub mod failure {
    /// The store declined the order.
    pub const REJECTED: &str = "rejected";
    /// Okya would not record our payment.
    pub const NOT_RECORDED: &str = "order_not_recorded";
    /// The customer never finished 3-D Secure.
    pub const AUTHENTICATION_ABANDONED: &str = "authentication_abandoned";
    /// Stripe refused our own request (key, account, parameters): nothing was charged and
    /// the customer may send the same checkout again.
    pub const PAYMENT_UNAVAILABLE: &str = "payment_unavailable";
    /// An upstream refused our own request outside payments (Okya, SessionM): nothing was
    /// charged; the order was not placed.
    pub const SERVICE_UNAVAILABLE: &str = "service_unavailable";
    /// The authorisation was cancelled or lapsed before it could be captured.
    pub const AUTHORIZATION_LOST: &str = "authorization_lost";
    /// Stripe refused to capture a held authorisation.
    pub const CAPTURE_FAILED: &str = "capture_failed";
}

/// Most steps one run may take before the order counts as looping.
const MAX_STEPS_PER_RUN: usize = 32;

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
/// first finished or at the same moment; only one request ever runs the flow. A payment
/// Stripe refused for reasons of ours (`await_payment_retry`) is tried again when the same
/// checkout is sent again.
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
            if parse_step(&existing)? == Step::AwaitPaymentRetry {
                retry_payment(state, &existing.id).await?;
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
            attention: None,
            attention_at_ms: None,
            lines_snapshot_json: None,
            key_generation: 0,
            voucher_discount_json: None,
            loyalty_sent_at_ms: None,
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

/// The customer sent the same checkout again after Stripe refused a request of ours:
/// charge again (Stripe saved no result for a request it refused before running it).
async fn retry_payment(state: &AppState, id: &str) -> Result<(), FlowError> {
    if !store::orders::acquire(&state.db, id, now_ms(), lease_ms(state)).await? {
        return Ok(());
    }
    let mut order = load(state, id).await?;
    if parse_step(&order)? != Step::AwaitPaymentRetry {
        store::orders::release(&state.db, id).await?;
        return Ok(());
    }
    tracing::info!(order_id = %id, "the customer retries a payment Stripe could not take");
    order.failure_code = None;
    order.failure_message = None;
    order.payment_status = None;
    advance(&mut order, Step::Charge);
    commit(state, &mut order, None).await?;
    run_held(state, id).await
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

fn payment_status(order: &Order) -> Result<Option<PaymentStatus>, FlowError> {
    order
        .payment_status
        .as_deref()
        .map(|raw| {
            PaymentStatus::parse(raw).ok_or_else(|| {
                FlowError::Corrupt(format!("payment status {raw:?} of {}", order.id))
            })
        })
        .transpose()
}

fn set_payment(order: &mut Order, status: PaymentStatus) {
    order.payment_status = Some(status.as_str().to_owned());
}

fn approval(order: &Order) -> Option<Approval> {
    order
        .okya_approval
        .as_deref()
        .and_then(|raw| serde_json::from_value(serde_json::Value::String(raw.to_owned())).ok())
}

fn fulfilment(order: &Order) -> Option<Fulfilment> {
    order
        .okya_fulfilment
        .as_deref()
        .and_then(|raw| serde_json::from_value(serde_json::Value::String(raw.to_owned())).ok())
}

async fn load(state: &AppState, id: &str) -> Result<Order, FlowError> {
    store::orders::find(&state.db, id)
        .await?
        .ok_or_else(|| FlowError::Corrupt(format!("order {id} vanished")))
}

/// Waits until the flow rests (waiting for the store or the customer, or finished), so
/// every caller with the same key sees the same settled answer.
async fn wait_until_resting(state: &AppState, id: &str) -> Result<Order, FlowError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(state.settings.orders.checkout_wait_ms);
    loop {
        let order = load(state, id).await?;
        let step = parse_step(&order)?;
        if !step.is_active() || order.attention.is_some() || tokio::time::Instant::now() >= deadline
        {
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
///
/// The steps run in a task of their own: a caller that goes away (a checkout whose client
/// disconnected) does not stop them halfway, and they start on a fresh stack instead of
/// under the GraphQL resolver's.
async fn run_held(state: &AppState, id: &str) -> Result<(), FlowError> {
    let (state, id) = (state.clone(), id.to_owned());
    let runner = tokio::spawn(
        async move {
            let outcome = run_steps(&state, &id).await;
            if matches!(outcome, Err(FlowError::Crashed(_))) {
                // A dead process releases nothing; the lease runs out instead.
                return outcome;
            }
            store::orders::release(&state.db, &id).await?;
            outcome
        }
        .in_current_span(),
    );
    match runner.await {
        Ok(outcome) => outcome,
        // A panic leaves the lease to run out, as a crash would, and the sweeper resumes.
        Err(e) => Err(FlowError::Corrupt(format!(
            "the order's runner stopped: {e}"
        ))),
    }
}

/// What a step wants the runner to do next: the transition it returns.
enum Next {
    /// The step recorded its successor; keep going.
    Continue,
    /// Nothing to do until an outside event.
    Rest,
    /// A transient failure or an outcome not known yet: try again later, counting the
    /// attempt towards `orders.max_step_attempts`.
    Retry(String),
    /// The flow cannot resolve this on its own: an operator must look.
    Attention(String),
}

async fn run_steps(state: &AppState, id: &str) -> Result<(), FlowError> {
    for _ in 0..MAX_STEPS_PER_RUN {
        let order = load(state, id).await?;
        if order.attention.is_some() {
            // An operator's now; webhooks still record Okya's state for when it resumes.
            return Ok(());
        }
        let outcome = match parse_step(&order) {
            // A step backing off after a failure waits for its time, whoever drives the
            // flow meanwhile (a webhook, a waiting checkout): retries keep their pace.
            Ok(step) if step.is_active() && order.next_attempt_at_ms > now_ms() => {
                return Ok(());
            }
            Ok(step) => {
                let span = tracing::info_span!("flow_step", order_id = %id, step = step.as_str());
                // Boxed: each step is a large future, and nesting them inline overflows the stack.
                Box::pin(run_step(state, step, order).instrument(span)).await
            }
            Err(e) => Err(e),
        };
        let next = match outcome {
            Ok(next) => next,
            Err(FlowError::Crashed(point)) => return Err(FlowError::Crashed(point)),
            Err(FlowError::Corrupt(reason)) => {
                Next::Attention(format!("impossible stored state: {reason}"))
            }
            // An answer the step did not expect, or the database failing mid-step: the
            // step is tried again later, within the bound.
            Err(e @ (FlowError::Store(_) | FlowError::Upstream(_))) => Next::Retry(e.to_string()),
        };
        match next {
            Next::Continue => continue,
            Next::Rest => return Ok(()),
            Next::Retry(reason) => return schedule_retry(state, id, &reason).await,
            Next::Attention(reason) => return mark_attention(state, id, &reason).await,
        }
    }
    mark_attention(
        state,
        id,
        &format!("the flow did not settle within {MAX_STEPS_PER_RUN} steps"),
    )
    .await
}

/// Records a failed attempt and when to try again, or gives the order to an operator
/// once the step has been tried `orders.max_step_attempts` times.
async fn schedule_retry(state: &AppState, id: &str, reason: &str) -> Result<(), FlowError> {
    let mut order = load(state, id).await?;
    order.step_attempts += 1;
    let max = i32::try_from(state.settings.orders.max_step_attempts).unwrap_or(i32::MAX);
    if order.step_attempts >= max {
        let reason = format!(
            "step {} did not succeed in {} attempts; last: {reason}",
            order.step, order.step_attempts
        );
        store::orders::save(&state.db, order).await?;
        return mark_attention(state, id, &reason).await;
    }
    let delay = retry_delay_ms(order.step_attempts);
    order.next_attempt_at_ms = now_ms() + delay;
    order.updated_at_ms = now_ms();
    tracing::warn!(order_id = %id, step = %order.step, attempt = order.step_attempts, %reason, retry_in_ms = delay, "step will be retried");
    store::orders::save(&state.db, order).await?;
    Ok(())
}

/// Parks the order for an operator: the sweeper skips it, `/readyz` counts it, and the
/// reason is logged at ERROR. Clearing `attention` (see the README) resumes it.
async fn mark_attention(state: &AppState, id: &str, reason: &str) -> Result<(), FlowError> {
    let mut order = load(state, id).await?;
    tracing::error!(order_id = %id, step = %order.step, status = %order.status, %reason, "order needs an operator");
    order.attention = Some(reason.chars().take(1_000).collect());
    order.attention_at_ms = Some(now_ms());
    order.updated_at_ms = now_ms();
    store::orders::save(&state.db, order).await?;
    Ok(())
}

async fn run_step(state: &AppState, step: Step, order: Order) -> Result<Next, FlowError> {
    match step {
        Step::Submit => submit(state, order).await,
        Step::Discount => discount(state, order).await,
        Step::Charge => charge(state, order).await,
        Step::AwaitPaymentRetry => await_payment_retry(state, order).await,
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

/// A step's own retries: 200 ms doubling to a minute, exact (the time is kept in the row,
/// and the sweeper's pass spreads runners out).
const STEP_RETRIES: crate::retry::RetryPolicy = crate::retry::RetryPolicy::new(
    Duration::from_millis(200),
    Duration::from_secs(60),
    crate::retry::Jitter::None,
);

fn retry_delay_ms(attempts: i32) -> i64 {
    let retry = u32::try_from(attempts.max(1)).unwrap_or(1);
    i64::try_from(STEP_RETRIES.delay(retry).as_millis()).unwrap_or(i64::MAX)
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

/// The key of a call that may have to be sent again under a new key, once its upstream
/// is known to hold a stale answer under the old one (`key_generation`).
fn generation_key(order: &Order, step: &str) -> String {
    match order.key_generation {
        0 => key(order, step),
        generation => format!("{}:{step}:g{generation}", order.id),
    }
}

fn money(order: &Order, minor: Option<i64>) -> Result<Money, FlowError> {
    Ok(Money::new(minor.unwrap_or(0), currency(order)?))
}

fn currency(order: &Order) -> Result<Currency, FlowError> {
    order
        .currency
        .as_deref()
        .and_then(|c| Currency::parse(c).ok())
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no currency", order.id)))
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

/// The refusal in an error, for logs and failure records.
fn refusal_of(e: &UpstreamError, fallback: &str) -> (String, String) {
    e.rejection()
        .map(|(_, r)| (r.code.clone(), r.message.clone()))
        .unwrap_or_else(|| (fallback.to_owned(), e.to_string()))
}

/// Okya's refusals of a submission that are about the cart, for the customer to act on;
/// anything else (a bad key, a request Okya could not read) is ours.
fn is_customer_refusal_of_order(code: &str) -> bool {
    [
        okya_codes::STORE_CLOSED,
        okya_codes::STORE_NOT_FOUND,
        okya_codes::CART_EMPTY,
        okya_codes::CART_NOT_FOUND,
        okya_codes::CART_ALREADY_ORDERED,
        okya_codes::PRODUCT_UNAVAILABLE,
        okya_codes::PRODUCT_NOT_FOUND,
    ]
    .contains(&code)
}

/// SessionM's refusals of a voucher that are about the voucher, for the customer to act
/// on; anything else (credentials, a request SessionM could not read) is ours.
fn is_customer_refusal_of_voucher(code: &str) -> bool {
    [
        sessionm::codes::OFFER_NOT_FOUND,
        sessionm::codes::OFFER_LOCKED,
        sessionm::codes::OFFER_REDEEMED,
        sessionm::codes::OFFER_EXPIRED,
        sessionm::codes::OFFER_NOT_APPLICABLE,
        sessionm::codes::USER_NOT_FOUND,
    ]
    .contains(&code)
}

/// Step 7–10: Okya validates the cart and creates the order; its lines are snapshotted
/// with the catalogue's names so every later payload describes what was bought.
async fn submit(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let cart_id = CartId::from_upstream(order.cart_id.clone());
    let okya = match state
        .upstreams
        .okya
        .create_order(&cart_id, &order.customer_id, &key(&order, "submit"))
        .await
    {
        Ok(okya) => okya,
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            let (code, message) = refusal_of(&e, "order_not_accepted");
            if is_customer_refusal_of_order(&code) {
                tracing::info!(order_id = %order.id, %code, "Okya refused the order; nothing charged");
                fail_with(&mut order, &code, &message);
            } else {
                tracing::error!(order_id = %order.id, error = %e, "Okya refused our order request; nothing charged");
                fail_with(&mut order, failure::SERVICE_UNAVAILABLE, &e.to_string());
            }
            advance(&mut order, Step::Invalid);
            commit(state, &mut order, None).await?;
            return Ok(Next::Rest);
        }
    };
    let mut ids: Vec<crate::domain::ProductId> = Vec::new();
    for line in &okya.lines {
        let id = crate::domain::ProductId::from_upstream(line.product_id.clone());
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    // The order exists at Okya under our key; a failure here re-runs the step, and the
    // key gives back the same order.
    let products = state.upstreams.okya.products(&ids).await?;
    let snapshot = order_lines::snapshot(&okya.lines, &products);
    order.okya_order_id = Some(okya.id.clone());
    order.number = Some(okya.number.clone());
    order.store_id = okya.store_id.clone();
    order.currency = Some(okya.currency.clone());
    order.subtotal_minor = Some(okya.subtotal.amount);
    order.discount_minor = Some(okya.discount.amount);
    order.tax_minor = Some(okya.tax.amount);
    order.total_minor = Some(okya.total.amount);
    order.lines_json = Some(
        serde_json::to_string(&okya.lines)
            .map_err(|e| FlowError::Corrupt(format!("lines of {}: {e}", order.id)))?,
    );
    order.lines_snapshot_json = Some(
        serde_json::to_string(&snapshot)
            .map_err(|e| FlowError::Corrupt(format!("snapshot of {}: {e}", order.id)))?,
    );
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

/// The lines as ordered. Orders submitted before snapshots existed get one now, once,
/// and keep it, so every payload after this one is the same.
async fn snapshot(state: &AppState, order: &mut Order) -> Result<Vec<LineSnapshot>, FlowError> {
    if let Some(raw) = order.lines_snapshot_json.as_deref() {
        return serde_json::from_str(raw)
            .map_err(|e| FlowError::Corrupt(format!("snapshot of {}: {e}", order.id)));
    }
    let lines: Vec<CartLine> = serde_json::from_str(order.lines_json.as_deref().unwrap_or("[]"))
        .map_err(|e| FlowError::Corrupt(format!("lines of {}: {e}", order.id)))?;
    let ids: Vec<crate::domain::ProductId> = lines
        .iter()
        .map(|l| crate::domain::ProductId::from_upstream(l.product_id.clone()))
        .collect();
    let products = state.upstreams.okya.products(&ids).await?;
    let snapshot = order_lines::snapshot(&lines, &products);
    order.lines_snapshot_json = Some(
        serde_json::to_string(&snapshot)
            .map_err(|e| FlowError::Corrupt(format!("snapshot of {}: {e}", order.id)))?,
    );
    commit(state, order, None).await?;
    Ok(snapshot)
}

/// Use Reward, steps 14–19: SessionM prices the voucher against the order and locks it to
/// this order; the discount goes on the Okya order, which recomputes tax and total.
async fn discount(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let voucher = order
        .voucher_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} discounts no voucher", order.id)))?;
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
    let basket = basket(state, &mut order).await?;
    // Whether an earlier run of this step may already have locked the voucher (its lock
    // was sent; the answer may have been lost).
    let lock_sent_before = order.voucher_name.is_some();
    // The lock names only the offer, so first make sure it is in this member's wallet and
    // still usable: an offer that is not is refused here, and never locked or unlocked by
    // this order. The lock itself then says whether it applies to this basket.
    if !lock_sent_before {
        // A store SessionM does not know fails here, before a lock may exist.
        if let Err(e) = state.upstreams.sessionm.store_id(&basket.store_id) {
            tracing::error!(order_id = %order.id, error = %e, "no SessionM store for this order's store; nothing charged");
            fail_with(&mut order, failure::SERVICE_UNAVAILABLE, &e.to_string());
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            return Ok(Next::Continue);
        }
        let wallet = match state
            .upstreams
            .sessionm
            .lookup(&user_id, None, &key(&order, "wallet"))
            .await
        {
            Ok(wallet) => wallet,
            Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
            Err(e) => {
                tracing::error!(order_id = %order.id, error = %e, "SessionM refused our lookup; nothing charged");
                fail_with(&mut order, failure::SERVICE_UNAVAILABLE, &e.to_string());
                advance(&mut order, Step::CancelOkya);
                commit(state, &mut order, None).await?;
                return Ok(Next::Continue);
            }
        };
        let refusal = match wallet.offers.iter().find(|o| o.user_offer_id == voucher) {
            None => Some((
                sessionm::codes::OFFER_NOT_FOUND,
                "no such voucher".to_owned(),
            )),
            Some(offer) => match &offer.status {
                OfferStatus::Expired => Some((sessionm::codes::OFFER_EXPIRED, "expired".into())),
                OfferStatus::Redeemed => Some((sessionm::codes::OFFER_REDEEMED, "used".into())),
                // This order has sent no lock yet, so a lock is another order's.
                OfferStatus::Locked => Some((sessionm::codes::OFFER_LOCKED, "in use".into())),
                OfferStatus::Available => offer
                    .unusable_reason()
                    .map(|reason| ("voucher_not_applicable", reason)),
                OfferStatus::Unrecognised(_) => offer
                    .unusable_reason()
                    .map(|reason| ("voucher_not_applicable", reason)),
            },
        };
        if let Some((code, message)) = refusal {
            tracing::info!(order_id = %order.id, %code, "the voucher is not usable in the member's wallet; nothing charged");
            fail_with(&mut order, code, &message);
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            return Ok(Next::Continue);
        }
        // From the moment the lock is asked for, a lock may exist (its answer can be lost
        // or unreadable), so every compensation must try to release it.
        order.voucher_name = Some(voucher.clone());
        commit(state, &mut order, None).await?;
    }
    let locked = match state
        .upstreams
        .sessionm
        .lock(&voucher, &basket, &key(&order, "lock"))
        .await
    {
        Ok(discount) => discount,
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            let (code, message) = refusal_of(&e, "voucher_not_applicable");
            if e.rejection().is_some() && !lock_sent_before {
                // A definite refusal of the first lock: no lock of ours exists, so there
                // is nothing to release (unlock names only the offer, and another order
                // may hold it). After an earlier lock whose answer was lost, ours may
                // exist, and the release must run.
                order.voucher_name = None;
            }
            if is_customer_refusal_of_voucher(&code) {
                tracing::info!(order_id = %order.id, %code, "SessionM refused the voucher; nothing charged");
                fail_with(&mut order, &code, &message);
            } else {
                tracing::error!(order_id = %order.id, error = %e, "SessionM refused our lock request; nothing charged");
                fail_with(&mut order, failure::SERVICE_UNAVAILABLE, &e.to_string());
            }
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            return Ok(Next::Continue);
        }
    };
    order.voucher_discount_json = Some(locked.object.to_string());
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
            tracing::error!(order_id = %order.id, error = %e, "Okya refused the discount; releasing the voucher");
            fail_with(&mut order, "voucher_not_applicable", &e.to_string());
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
    }
}

/// The order as a SessionM basket: what the voucher is priced against, from the snapshot.
async fn basket(state: &AppState, order: &mut Order) -> Result<Transaction, FlowError> {
    let lines = snapshot(state, order).await?;
    let currency = currency(order)?;
    Transaction::new(
        order.id.clone(),
        order.store_id.clone(),
        currency.clone(),
        order_lines::loyalty_lines(&lines, &currency),
    )
    .map_err(|e| FlowError::Corrupt(e.to_string()))
}

/// Gives the voucher back when this order may hold a lock on it and will not use it.
async fn release_voucher(state: &AppState, order: &Order) -> Result<Option<Next>, FlowError> {
    let (Some(voucher), Some(_)) = (&order.voucher_id, &order.voucher_name) else {
        return Ok(None);
    };
    match state
        .upstreams
        .sessionm
        .unlock(voucher, &key(order, "unlock"))
        .await
    {
        Ok(()) => Ok(None),
        Err(e) if e.is_transient() => Ok(Some(Next::Retry(e.to_string()))),
        Err(e) => {
            // Not locked (the lock never happened) or already released: nothing held.
            tracing::warn!(order_id = %order.id, error = %e, "SessionM would not release the voucher");
            Ok(None)
        }
    }
}

/// Who must act on Stripe's refusal of a new payment.
enum ChargeRefusal {
    /// The card (or the payment method the app sent): the customer tries another one.
    Customer { code: String, message: String },
    /// Our key, account or request: nothing was charged, the customer can do nothing about
    /// it but try again later; logged at ERROR for an operator.
    Ours { code: String, message: String },
}

/// Only card declines (Stripe's `card_error`, HTTP 402) and a payment method Stripe does
/// not know are the customer's; a 400, 401, 403 or 404 otherwise is a fault of ours.
/// See <https://docs.stripe.com/api/errors>.
fn classify_charge_refusal(e: &UpstreamError) -> ChargeRefusal {
    if let Some(decline) = stripe::decline_of(e) {
        return ChargeRefusal::Customer {
            code: decline.code,
            message: decline.message,
        };
    }
    let Some((status, rejection)) = e.rejection() else {
        return ChargeRefusal::Ours {
            code: failure::PAYMENT_UNAVAILABLE.into(),
            message: e.to_string(),
        };
    };
    if status == 402 {
        return ChargeRefusal::Customer {
            code: "card_declined".into(),
            message: rejection.message.clone(),
        };
    }
    if rejection.code == "resource_missing" && rejection.field.as_deref() == Some("payment_method")
    {
        return ChargeRefusal::Customer {
            code: "payment_method_invalid".into(),
            message: "This card cannot be used. Try another card.".into(),
        };
    }
    ChargeRefusal::Ours {
        code: rejection.code.clone(),
        message: rejection.message.clone(),
    }
}

/// Steps 11–12: Stripe takes the total.
async fn charge(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let total = money(&order, order.total_minor)?;
    let capture_mode = CaptureMode::parse(&order.capture_mode).ok_or_else(|| {
        FlowError::Corrupt(format!(
            "capture mode {:?} of {}",
            order.capture_mode, order.id
        ))
    })?;
    let mut metadata = BTreeMap::new();
    metadata.insert("order_id".to_owned(), order.id.clone());
    if let Some(okya) = &order.okya_order_id {
        metadata.insert("okya_order_id".to_owned(), okya.clone());
    }
    let params = CreatePaymentIntent {
        amount: total,
        payment_method: order.payment_method_id.clone(),
        capture_method: match capture_mode {
            CaptureMode::Immediate => CaptureMethod::Automatic,
            CaptureMode::OnAcceptance => CaptureMethod::Manual,
        },
        description: Some(format!(
            "CBTL order {}",
            order.number.as_deref().unwrap_or("")
        )),
        metadata,
    };
    let error = match state
        .upstreams
        .stripe
        .create_payment_intent(&params, &key(&order, "charge"))
        .await
    {
        Ok(intent) => return adopt_intent(state, order, &intent).await,
        Err(e) => e,
    };
    // The answer was lost, is still coming (409 in use), or can never come under this
    // key (a replayed 500): the intent may exist. After a few tries under the same key,
    // look it up by the order's metadata before anything else is decided.
    let idempotency_conflict = error
        .rejection()
        .is_some_and(|(_, r)| stripe::is_idempotency_error(r));
    let unknown = error.is_transient() || idempotency_conflict;
    let attempts = u32::try_from(order.step_attempts).unwrap_or(0) + 1;
    if unknown
        && (error.is_replayed_failure()
            || idempotency_conflict
            || attempts >= state.settings.orders.charge_lookup_after)
    {
        match find_intent(state, &order).await {
            Ok(Some(intent)) => {
                tracing::info!(order_id = %order.id, intent_id = %intent.id, "found the order's PaymentIntent after an unknown outcome");
                return adopt_intent(state, order, &intent).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, "looking the PaymentIntent up failed")
            }
        }
    }
    if unknown {
        return Ok(Next::Retry(format!("charge outcome unknown: {error}")));
    }
    match classify_charge_refusal(&error) {
        ChargeRefusal::Customer { code, message } => {
            if let Some(decline) = stripe::decline_of(&error) {
                order.payment_intent_id = decline.payment_intent_id.or(order.payment_intent_id);
            }
            tracing::info!(order_id = %order.id, %code, "the card was declined");
            set_payment(&mut order, PaymentStatus::Failed);
            fail_with(&mut order, &code, &message);
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        ChargeRefusal::Ours { code, message } => {
            tracing::error!(order_id = %order.id, %code, error = %error, "Stripe refused our payment request; nothing charged, the customer may retry");
            fail_with(&mut order, failure::PAYMENT_UNAVAILABLE, &message);
            advance(&mut order, Step::AwaitPaymentRetry);
            commit(state, &mut order, Some(OrderStatus::AwaitingPayment)).await?;
            Ok(Next::Rest)
        }
    }
}

/// The order's PaymentIntent found by its metadata, if Stripe shows one.
async fn find_intent(state: &AppState, order: &Order) -> Result<Option<PaymentIntent>, FlowError> {
    let found = state
        .upstreams
        .stripe
        .search_payment_intents_by_metadata("order_id", &order.id)
        .await?;
    // One intent per order is the invariant; the newest wins if Stripe ever shows more.
    Ok(found.into_iter().max_by_key(|pi| pi.created))
}

/// Goes on from the intent Stripe holds for the order, however it was learned.
async fn adopt_intent(
    state: &AppState,
    mut order: Order,
    intent: &PaymentIntent,
) -> Result<Next, FlowError> {
    apply_intent(&mut order, intent);
    match intent.status {
        PaymentIntentStatus::Succeeded | PaymentIntentStatus::RequiresCapture => {
            advance(&mut order, Step::RecordPayment);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        PaymentIntentStatus::RequiresAction
        | PaymentIntentStatus::RequiresConfirmation
        | PaymentIntentStatus::Processing => {
            advance(&mut order, Step::AwaitAuthentication);
            commit(state, &mut order, Some(OrderStatus::AwaitingPayment)).await?;
            Ok(Next::Rest)
        }
        PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
            let (code, message) = payment_error(
                intent,
                ("card_declined", "payment_failed"),
                "The payment did not go through.",
            );
            set_payment(&mut order, PaymentStatus::Failed);
            fail_with(&mut order, &code, &message);
            advance(&mut order, Step::CancelOkya);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        PaymentIntentStatus::Unknown => Ok(Next::Attention(format!(
            "PaymentIntent {} has a status this service does not know",
            intent.id
        ))),
    }
}

/// The code and message of an intent's last payment error. `codes` are the code to use
/// when the error has none, and when there is no error at all (with `message`).
fn payment_error(intent: &PaymentIntent, codes: (&str, &str), message: &str) -> (String, String) {
    match &intent.last_payment_error {
        Some(e) => (
            e.code.clone().unwrap_or_else(|| codes.0.to_owned()),
            e.message.clone().unwrap_or_default(),
        ),
        None => (codes.1.to_owned(), message.to_owned()),
    }
}

/// What Stripe says an intent's money is, in the app's terms.
enum Truth {
    Settled(PaymentStatus),
    /// Stripe is still working on it; ask again later.
    Processing,
    /// A status this code does not know.
    Unrecognised,
}

fn truth_of(intent: &PaymentIntent) -> Truth {
    match intent.status {
        PaymentIntentStatus::RequiresPaymentMethod => Truth::Settled(PaymentStatus::Failed),
        PaymentIntentStatus::RequiresConfirmation | PaymentIntentStatus::RequiresAction => {
            Truth::Settled(PaymentStatus::RequiresAction)
        }
        PaymentIntentStatus::Processing => Truth::Processing,
        PaymentIntentStatus::RequiresCapture => Truth::Settled(PaymentStatus::Authorized),
        PaymentIntentStatus::Succeeded => {
            let refunded = intent.charge().is_some_and(|charge| {
                charge.refunded
                    || (charge.amount_captured > 0
                        && charge.amount_refunded >= charge.amount_captured)
            });
            Truth::Settled(if refunded {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::Captured
            })
        }
        PaymentIntentStatus::Canceled => Truth::Settled(PaymentStatus::Cancelled),
        PaymentIntentStatus::Unknown => Truth::Unrecognised,
    }
}

/// Reads the order's PaymentIntent: what is true, whatever our last call was told.
async fn read_truth(state: &AppState, order: &mut Order) -> Result<Truth, FlowError> {
    let intent_id = order
        .payment_intent_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no intent", order.id)))?;
    let intent = state
        .upstreams
        .stripe
        .retrieve_payment_intent(&intent_id)
        .await?;
    if let Some((brand, last4)) = intent.card() {
        order.card_brand = Some(brand.to_owned());
        order.card_last4 = Some(last4.chars().take(4).collect());
    }
    Ok(truth_of(&intent))
}

fn apply_intent(order: &mut Order, intent: &PaymentIntent) {
    order.payment_intent_id = Some(intent.id.clone());
    if let Some((brand, last4)) = intent.card() {
        order.card_brand = Some(brand.to_owned());
        order.card_last4 = Some(last4.chars().take(4).collect());
    }
    let status = match truth_of(intent) {
        Truth::Settled(status) => status,
        Truth::Processing => PaymentStatus::RequiresAction,
        Truth::Unrecognised => PaymentStatus::Failed,
    };
    set_payment(order, status);
}

/// Stripe refused a request of ours: the customer may send the same checkout again (see
/// [`retry_payment`]); if nobody does before the authentication timeout, the order is
/// cancelled with nothing charged.
async fn await_payment_retry(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    if now_ms() - order.updated_at_ms < authentication_timeout_ms(state) {
        return Ok(Next::Rest);
    }
    tracing::info!(order_id = %order.id, "the payment was not retried in time; cancelling the order");
    set_payment(&mut order, PaymentStatus::Failed);
    advance(&mut order, Step::CancelOkya);
    commit(state, &mut order, None).await?;
    Ok(Next::Continue)
}

fn authentication_timeout_ms(state: &AppState) -> i64 {
    i64::try_from(
        state
            .settings
            .orders
            .authentication_timeout_secs
            .saturating_mul(1000),
    )
    .unwrap_or(900_000)
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
            let (code, message) = payment_error(
                &intent,
                ("authentication_failed", "authentication_failed"),
                "The card could not be authenticated.",
            );
            set_payment(&mut order, PaymentStatus::Failed);
            fail_with(&mut order, &code, &message);
            advance(&mut order, Step::CancelOkya);
        }
        PaymentIntentStatus::RequiresAction
        | PaymentIntentStatus::RequiresConfirmation
        | PaymentIntentStatus::Processing
        | PaymentIntentStatus::Unknown => {
            if now_ms() - order.updated_at_ms < authentication_timeout_ms(state) {
                return Ok(Next::Rest);
            }
            match state
                .upstreams
                .stripe
                .cancel_payment_intent(
                    &intent_id,
                    Some("abandoned"),
                    &generation_key(&order, "abandon"),
                )
                .await
            {
                Ok(intent) => apply_intent(&mut order, &intent),
                Err(e) if e.is_transient() && !e.is_replayed_failure() => {
                    return Ok(Next::Retry(e.to_string()));
                }
                Err(e) => {
                    // Refused: the customer may have finished at the last moment. What the
                    // intent says now decides.
                    tracing::warn!(order_id = %order.id, error = %e, "Stripe would not cancel the abandoned intent; reading it");
                    match read_truth(state, &mut order).await? {
                        Truth::Settled(
                            status @ (PaymentStatus::Captured | PaymentStatus::Authorized),
                        ) => {
                            set_payment(&mut order, status);
                            advance(&mut order, Step::RecordPayment);
                            commit(state, &mut order, None).await?;
                            return Ok(Next::Continue);
                        }
                        Truth::Settled(
                            PaymentStatus::Cancelled
                            | PaymentStatus::Failed
                            | PaymentStatus::Refunded,
                        ) => {}
                        Truth::Settled(PaymentStatus::RequiresAction)
                            if e.is_replayed_failure() =>
                        {
                            order.key_generation += 1;
                            commit(state, &mut order, None).await?;
                            return Ok(Next::Retry(e.to_string()));
                        }
                        Truth::Settled(PaymentStatus::RequiresAction) | Truth::Unrecognised => {
                            return Ok(Next::Attention(format!(
                                "Stripe refused to cancel an abandoned intent that still awaits the customer: {e}"
                            )));
                        }
                        Truth::Processing => return Ok(Next::Retry(e.to_string())),
                    }
                }
            }
            set_payment(&mut order, PaymentStatus::Cancelled);
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
    let captured = payment_status(&order)? == Some(PaymentStatus::Captured);
    let free = order.total_minor == Some(0);
    let body = NewPayment {
        provider: if free { "voucher" } else { "stripe" }.into(),
        reference: if free {
            order.voucher_id.clone().unwrap_or_else(|| order.id.clone())
        } else {
            order.payment_intent_id.clone().ok_or_else(|| {
                FlowError::Corrupt(format!(
                    "order {} records a payment without an intent",
                    order.id
                ))
            })?
        },
        amount: WireMoney::from_money(&money(&order, order.total_minor)?),
        status: if captured || free {
            PaymentRecordStatus::Captured
        } else {
            PaymentRecordStatus::Authorized
        },
        card: card(&order),
    };
    let recorded = match state
        .upstreams
        .okya
        .record_payment(&okya_id, &body, &key(&order, "payment"))
        .await
    {
        Ok(okya) => Some(okya),
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            // Okya may hold our payment after all (an earlier try whose answer was lost):
            // its copy of the order decides.
            let okya = state.upstreams.okya.order(&okya_id).await?;
            match okya {
                Some(okya)
                    if okya
                        .payment
                        .as_ref()
                        .is_some_and(|p| p.reference == body.reference) =>
                {
                    Some(okya)
                }
                _ => {
                    tracing::error!(order_id = %order.id, error = %e, "Okya would not record the payment; refunding");
                    fail_with(&mut order, failure::NOT_RECORDED, &e.to_string());
                    None
                }
            }
        }
    };
    match recorded {
        Some(okya) => {
            record_okya(state, &mut order, &okya).await?;
            advance(&mut order, Step::AwaitAcceptance);
            commit(state, &mut order, Some(OrderStatus::AwaitingAcceptance)).await?;
        }
        None => {
            advance(&mut order, Step::Refund);
            commit(state, &mut order, None).await?;
        }
    }
    Ok(Next::Continue)
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
    match approval(&order) {
        Some(Approval::Approved) => {
            advance(&mut order, Step::Inject);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        Some(Approval::NotApproved) => {
            fail_with(
                &mut order,
                failure::REJECTED,
                "The store declined the order.",
            );
            advance(&mut order, Step::Refund);
            commit(state, &mut order, None).await?;
            Ok(Next::Continue)
        }
        Some(Approval::NeedsApproval) | None => Ok(Next::Rest),
    }
}

/// Steps 22–25: the accepted order goes into the store's POS, which prints it.
async fn inject(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let body = injection(state, &mut order).await?;
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
            ("pos_unreachable".to_owned(), e.to_string())
        }
        Err(e) => refusal_of(&e, "pos_refused"),
    };
    // Before recalling: the POS may have the order after all (a try whose answer was lost,
    // or a refusal of a repeat); its own record decides.
    match state
        .upstreams
        .epoint
        .find_order(&location, &order.id)
        .await
    {
        Ok(Some(receipt)) => {
            tracing::info!(order_id = %order.id, ticket = %receipt.ticket_id, "the POS had the order after all");
            order.pos_ticket_id = Some(receipt.ticket_id.clone());
            return finish_injection(state, order).await;
        }
        Ok(None) => {}
        // Cannot tell yet: recalling now could refund an order the store is printing.
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, "could not ask the POS for the order")
        }
    }
    tracing::warn!(order_id = %order.id, code = %failed.0, "the POS could not take the order; recalling");
    fail_with(&mut order, &failed.0, &failed.1);
    advance(&mut order, Step::Recall);
    commit(state, &mut order, None).await?;
    Ok(Next::Continue)
}

async fn finish_injection(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    match payment_status(&order)? {
        Some(PaymentStatus::Authorized) => {
            advance(&mut order, Step::Capture);
            commit(state, &mut order, None).await?;
        }
        Some(PaymentStatus::Captured) | None => in_preparation(state, &mut order).await?,
        Some(
            other @ (PaymentStatus::RequiresAction
            | PaymentStatus::Failed
            | PaymentStatus::Refunded
            | PaymentStatus::Cancelled),
        ) => {
            return Err(FlowError::Corrupt(format!(
                "order {} was injected with payment {}",
                order.id,
                other.as_str()
            )));
        }
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
    let intent_id = order
        .payment_intent_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} captures no intent", order.id)))?;
    if payment_status(&order)? != Some(PaymentStatus::Captured) {
        match state
            .upstreams
            .stripe
            .capture_payment_intent(&intent_id, None, &generation_key(&order, "capture"))
            .await
        {
            Ok(intent) => apply_intent(&mut order, &intent),
            Err(e) if e.is_transient() && !e.is_replayed_failure() => {
                return Ok(Next::Retry(e.to_string()));
            }
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, "Stripe did not capture; reading the intent");
                match read_truth(state, &mut order).await? {
                    Truth::Settled(PaymentStatus::Captured) => {
                        set_payment(&mut order, PaymentStatus::Captured);
                    }
                    Truth::Settled(PaymentStatus::Authorized) if e.is_replayed_failure() => {
                        // The key's saved answer is a failure; the hold is still there.
                        order.key_generation += 1;
                        commit(state, &mut order, None).await?;
                        return Ok(Next::Retry(e.to_string()));
                    }
                    Truth::Settled(PaymentStatus::Authorized) => {
                        tracing::error!(order_id = %order.id, error = %e, "Stripe refused the capture; recalling the order");
                        fail_with(&mut order, failure::CAPTURE_FAILED, &e.to_string());
                        advance(&mut order, Step::Recall);
                        commit(state, &mut order, None).await?;
                        return Ok(Next::Continue);
                    }
                    Truth::Settled(
                        status @ (PaymentStatus::Cancelled
                        | PaymentStatus::Failed
                        | PaymentStatus::Refunded
                        | PaymentStatus::RequiresAction),
                    ) => {
                        // The hold was released (or refunded) outside this service: there
                        // is nothing to take, so the store must not make the order.
                        tracing::error!(order_id = %order.id, payment = status.as_str(), "the authorisation is gone; recalling the order");
                        set_payment(&mut order, status);
                        fail_with(
                            &mut order,
                            failure::AUTHORIZATION_LOST,
                            "The card authorisation was released before it could be captured.",
                        );
                        advance(&mut order, Step::Recall);
                        commit(state, &mut order, None).await?;
                        return Ok(Next::Continue);
                    }
                    Truth::Processing => return Ok(Next::Retry(e.to_string())),
                    Truth::Unrecognised => {
                        return Ok(Next::Attention(format!(
                            "capture refused and the intent's status is unknown: {e}"
                        )));
                    }
                }
            }
        }
        // The money is taken: record that before anything else can fail.
        commit(state, &mut order, None).await?;
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
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
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
        Err(e) => {
            return Ok(Next::Retry(format!("Okya refused the recall: {e}")));
        }
    }
    advance(&mut order, Step::Refund);
    commit(state, &mut order, None).await?;
    Ok(Next::Continue)
}

/// Gives the money back (a refund after a capture, a release of an authorisation), then
/// the voucher, then ends the order. When Stripe refuses, the PaymentIntent says what is
/// true (a support agent may have refunded already) and the step goes on from there.
async fn refund(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let status = payment_status(&order)?;
    let outcome = match status {
        Some(PaymentStatus::Captured) => {
            let intent_id = intent_id(&order)?;
            state
                .upstreams
                .stripe
                .create_refund(&intent_id, None, &generation_key(&order, "refund"))
                .await
                .map(|_| PaymentStatus::Refunded)
        }
        Some(PaymentStatus::Authorized | PaymentStatus::RequiresAction) => {
            let intent_id = intent_id(&order)?;
            state
                .upstreams
                .stripe
                .cancel_payment_intent(
                    &intent_id,
                    Some("abandoned"),
                    &generation_key(&order, "release"),
                )
                .await
                .map(|_| PaymentStatus::Cancelled)
        }
        Some(PaymentStatus::Failed | PaymentStatus::Refunded | PaymentStatus::Cancelled) | None => {
            Ok(status.unwrap_or(PaymentStatus::Failed))
        }
    };
    match outcome {
        Ok(given_back) => {
            if status.is_some() {
                set_payment(&mut order, given_back);
            }
        }
        Err(e) if e.is_transient() && !e.is_replayed_failure() => {
            return Ok(Next::Retry(e.to_string()));
        }
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, "Stripe did not give the money back; reading the intent");
            match read_truth(state, &mut order).await? {
                Truth::Settled(
                    now @ (PaymentStatus::Failed
                    | PaymentStatus::Refunded
                    | PaymentStatus::Cancelled),
                ) => {
                    tracing::info!(order_id = %order.id, payment = now.as_str(), "the money was already given back");
                    set_payment(&mut order, now);
                }
                Truth::Settled(now) if Some(now) != status => {
                    // Not what we believed (captured meanwhile, or only authorised): try
                    // the way back that fits.
                    set_payment(&mut order, now);
                    commit(state, &mut order, None).await?;
                    return Ok(Next::Continue);
                }
                Truth::Settled(_) if e.is_replayed_failure() => {
                    // Stripe keeps answering the saved failure under this key, and the
                    // money is still held: a new key asks again. A second refund cannot
                    // over-refund (Stripe refuses more than the charge).
                    order.key_generation += 1;
                    commit(state, &mut order, None).await?;
                    return Ok(Next::Retry(e.to_string()));
                }
                Truth::Processing => return Ok(Next::Retry(e.to_string())),
                Truth::Settled(_) | Truth::Unrecognised => {
                    return Ok(Next::Attention(format!(
                        "Stripe refused to give the money back and still holds it: {e}"
                    )));
                }
            }
        }
    }
    if let Some(retry) = release_voucher(state, &order).await? {
        // The money is back; record that before retrying the voucher.
        commit(state, &mut order, None).await?;
        return Ok(retry);
    }
    if order.failure_code.as_deref() == Some(failure::NOT_RECORDED) {
        // Okya never took the payment: cancel its order too, which ends ours.
        advance(&mut order, Step::CancelOkya);
        commit(state, &mut order, None).await?;
        return Ok(Next::Continue);
    }
    let target = if order.failure_code.as_deref() == Some(failure::REJECTED) {
        OrderStatus::Rejected
    } else {
        OrderStatus::Cancelled
    };
    advance(&mut order, Step::Done);
    commit(state, &mut order, Some(target)).await?;
    Ok(Next::Rest)
}

fn intent_id(order: &Order) -> Result<String, FlowError> {
    order
        .payment_intent_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has money but no intent", order.id)))
}

/// The payment failed: cancel the Okya order so no store ever sees it.
async fn cancel_okya(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    if payment_status(&order)?.is_some_and(PaymentStatus::holds_money) {
        // Money is held (the order could not be recorded): give it back first.
        advance(&mut order, Step::Refund);
        commit(state, &mut order, None).await?;
        return Ok(Next::Continue);
    }
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
    match (status, fulfilment(&order)) {
        (OrderStatus::InPreparation, Some(Fulfilment::ReadyForPickup)) => {
            commit(state, &mut order, Some(OrderStatus::ReadyForPickup)).await?;
        }
        (OrderStatus::InPreparation | OrderStatus::ReadyForPickup, Some(Fulfilment::Completed)) => {
            if status == OrderStatus::InPreparation {
                commit(state, &mut order, Some(OrderStatus::ReadyForPickup)).await?;
            }
            commit(state, &mut order, Some(OrderStatus::Completed)).await?;
        }
        _ => {}
    }
    Ok(Next::Rest)
}

/// The POS ticket, built only from the order row and its snapshot, so a retry sends the
/// same body.
async fn injection(state: &AppState, order: &mut Order) -> Result<InjectOrder, FlowError> {
    let lines = snapshot(state, order).await?;
    let currency = currency(order)?;
    let customer = store::customers::find(&state.db, &order.customer_id).await?;
    Ok(InjectOrder {
        external_id: order.id.clone(),
        order_number: order
            .number
            .clone()
            .ok_or_else(|| FlowError::Corrupt(format!("order {} has no number", order.id)))?,
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
        lines: order_lines::pos_lines(&lines, &currency),
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

/// Step 26 (durable): the order's details go to SessionM. SessionM queues transactions
/// (its Send Transaction page: "the calls in this API should be done asynchronously"), so
/// an `OK` means queued; the points are read afterwards by [`read_loyalty_points`].
pub async fn send_to_sessionm(
    state: &AppState,
    payload: serde_json::Value,
) -> Result<(), JobError> {
    let transient = |e: &dyn std::fmt::Display| JobError::Transient(e.to_string());
    let order = job_order(state, &payload).await?;
    let customer = store::customers::find(&state.db, &order.customer_id)
        .await
        .map_err(|e| transient(&e))?
        .ok_or_else(|| JobError::Permanent(format!("no customer for {}", order.id)))?;
    let Some(user_id) = customer.sessionm_user_id else {
        return Err(JobError::Transient(
            "the customer's SessionM link is not finished yet".into(),
        ));
    };
    // The body must be the same on every retry of its request_id: the send time is
    // fixed the first time.
    let sent_at = store::orders::loyalty_sent_at(&state.db, &order.id, now_ms())
        .await
        .map_err(|e| transient(&e))?;
    let sale = sale(&order, user_id, sent_at).map_err(|e| JobError::Permanent(e.to_string()))?;
    state
        .upstreams
        .sessionm
        .send_transaction(&sale, &key(&order, "transaction"))
        .await
        .map_err(|e| JobError::from_upstream(&e))?;
    store::jobs::enqueue(
        &state.db,
        READ_LOYALTY_POINTS,
        &format!("points:{}", order.id),
        &serde_json::json!({ "order_id": order.id }),
        now_ms(),
    )
    .await
    .map_err(|e| transient(&e))?;
    state.job_signal.wake();
    tracing::info!(order_id = %order.id, "order queued at SessionM");
    Ok(())
}

/// After the send: the points the order earned, from the member's statement once
/// SessionM has processed the transaction. Until then the job retries, backing off;
/// `Order.pointsEarned` stays null.
pub async fn read_loyalty_points(
    state: &AppState,
    payload: serde_json::Value,
) -> Result<(), JobError> {
    let order = job_order(state, &payload).await?;
    let points = state
        .upstreams
        .sessionm
        .transaction_points(&order.customer_id, &order.id)
        .await
        .map_err(|e| JobError::from_upstream(&e))?
        .ok_or_else(|| JobError::Transient("SessionM has not processed the sale yet".into()))?;
    store::orders::set_points(&state.db, &order.id, points)
        .await
        .map_err(|e| JobError::Transient(e.to_string()))?;
    tracing::info!(order_id = %order.id, points, "SessionM credited the order's points");
    Ok(())
}

/// The order a job's payload (`{"order_id": …}`) names.
async fn job_order(state: &AppState, payload: &serde_json::Value) -> Result<Order, JobError> {
    let Some(order_id) = payload["order_id"].as_str() else {
        return Err(JobError::Permanent("payload without order_id".into()));
    };
    store::orders::find(&state.db, order_id)
        .await
        .map_err(|e| JobError::Transient(e.to_string()))?
        .ok_or_else(|| JobError::Permanent(format!("no order {order_id}")))
}

/// The sale as SessionM's Transaction object, from the order row and its snapshot alone,
/// with the Discount object the lock answered passed back unchanged.
fn sale(order: &Order, user_id: String, sent_at_ms: i64) -> Result<SendTransaction, FlowError> {
    let raw = order.lines_snapshot_json.as_deref().ok_or_else(|| {
        FlowError::Corrupt(format!(
            "order {} reached SessionM without a snapshot",
            order.id
        ))
    })?;
    let lines: Vec<LineSnapshot> = serde_json::from_str(raw)
        .map_err(|e| FlowError::Corrupt(format!("snapshot of {}: {e}", order.id)))?;
    let currency = currency(order)?;
    let transaction = Transaction::new(
        order.id.clone(),
        order.store_id.clone(),
        currency.clone(),
        order_lines::loyalty_lines(&lines, &currency),
    )
    .map_err(|e| FlowError::Corrupt(e.to_string()))?;
    // Every lock's Discount goes back, a zero one included: the sale is what finalises
    // the lock, and a lock never finalised would hold the voucher for good.
    let discounts = match (&order.voucher_id, &order.voucher_discount_json) {
        (Some(voucher), Some(object)) => {
            let object: serde_json::Value = serde_json::from_str(object)
                .map_err(|e| FlowError::Corrupt(format!("discount of {}: {e}", order.id)))?;
            vec![sessionm::Discount {
                user_offer_id: voucher.clone(),
                name: order.voucher_name.clone(),
                amount: money(order, order.discount_minor)?,
                object,
            }]
        }
        _ => Vec::new(),
    };
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    Ok(SendTransaction {
        user_id,
        transaction,
        discounts,
        tax: money(order, order.tax_minor)?,
        paid: money(order, order.total_minor)?,
        payment_id: order
            .payment_intent_id
            .clone()
            .unwrap_or_else(|| format!("{}:reward", order.id)),
        opened_at: at(order.created_at_ms),
        modified_at: at(sent_at_ms),
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
            let customer_deadline = now - authentication_timeout_ms(&state);
            match store::orders::due(&state.db, now, customer_deadline, 50).await {
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
