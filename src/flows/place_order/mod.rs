//! Place Order (seed steps 6–31; Use Reward's 13–23) as a durable state machine. Step
//! numbers in comments are the seed diagrams' autonumbering (`seed-sequence-diagrams.md`).
//!
//! The order row is the recovery point. Each active step makes its upstream call under an
//! idempotency key derived from the order and the step and returns the transition it
//! wants ([`Next`]: the next step with its status and job, a retry, a rest or an
//! operator); the one runner ([`run_steps`]) commits it, as rocket-rides' atomic phases
//! return their recovery point. A step re-run after a crash therefore repeats nothing.
//! Within a step, only facts are written before the transition ([`checkpoint`]): what a
//! first call did before a second (the voucher's lock before Okya's adjustment, a capture
//! before its record on Okya), a new key generation before a retry, a snapshot taken late,
//! and Okya's own state of the order as any answer shows it (`record_okya`, applied only
//! when newer). One runner at a time holds an order (a lease in the row); `checkout` runs the flow inline for a quick answer, and the
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
    domain::{
        CaptureMode, CartId, Currency, Failure, Money, OrderId, OrderStatus, PaymentStatus, Step,
        VoucherId, millis,
    },
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
mod acceptance;
mod compensations;
mod events;
#[cfg(test)]
mod model;
mod payment;
mod reward;
mod submit;
#[cfg(test)]
mod tests;

use acceptance::*;
use compensations::*;
use payment::*;
use reward::*;
use submit::*;

pub use events::{apply_okya_event, apply_stripe_event, spawn_sweeper, stripe_intent_id};
pub use reward::{read_loyalty_points, send_to_sessionm};

use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, time::Duration};
use tracing::Instrument;

pub const SEND_TO_SESSIONM: &str = JobKind::SendToSessionm.as_str();
pub const READ_LOYALTY_POINTS: &str = JobKind::ReadLoyaltyPoints.as_str();
pub const OKYA_EVENT: &str = JobKind::OkyaEvent.as_str();
pub const STRIPE_EVENT: &str = JobKind::StripeEvent.as_str();

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
    /// The runner's lease lapsed and another runner holds the order now: this one wrote
    /// nothing and stops (the other goes on from the last recorded step).
    #[error("the lease on order {0} was lost to another runner")]
    LeaseLost(OrderId),
}

/// With the `crash-points` feature (tests only), fails like a dead process just before
/// the flow records its next step: the upstream call of the step has happened, its result
/// is lost, and the lease is left to expire.
fn crash_point(state: &AppState, order: &Order) -> Result<(), FlowError> {
    #[cfg(feature = "crash-points")]
    if state.crash_points.hit(order.step) {
        tracing::warn!(order_id = %order.id, next_step = %order.step, "crash point: dying before recording");
        return Err(FlowError::Crashed(order.step.as_str().to_owned()));
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
    pub customer_id: crate::domain::CustomerId,
    pub cart_id: CartId,
    pub payment_method_id: crate::domain::PaymentMethodId,
    pub voucher_id: Option<crate::domain::VoucherId>,
    pub idempotency_key: crate::domain::IdempotencyKey,
}

impl CheckoutRequest {
    fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.cart_id.as_str(),
            self.payment_method_id.as_str(),
            self.voucher_id.as_ref().map_or("", |v| v.as_str()),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }
}

impl CheckoutRequest {
    /// The order row this checkout starts: at `submit`, awaiting payment, nothing known
    /// from any upstream yet, held by no one.
    pub(crate) fn new_order(
        &self,
        request_hash: String,
        capture_mode: CaptureMode,
        now: i64,
    ) -> Order {
        Order {
            id: OrderId::new(),
            customer_id: self.customer_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
            request_hash,
            cart_id: self.cart_id.clone(),
            store_id: String::new(),
            payment_method_id: self.payment_method_id.clone(),
            voucher_id: self.voucher_id.clone(),
            voucher_name: None,
            capture_mode,
            status: OrderStatus::AwaitingPayment,
            step: Step::Submit,
            step_attempts: 0,
            next_attempt_at_ms: now,
            locked_until_ms: None,
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
            locked_by: None,
        }
    }
}

/// Refusals decided before any order exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutRefusal {
    CartNotFound,
    IdempotencyKeyReused,
}

// ----- The table of steps -------------------------------------------------------------
// Every step of the drawing in `docs/order-state-machine.md`, in the order of the seed's
// diagram, and the transition each returns for the runner below.

/// What a step wants done: the transition it returns for the runner to commit, as
/// rocket-rides' atomic phases return their recovery point. A step never records its own
/// successor or status; it only checkpoints facts it learned (see the module's docs), so
/// a crash cannot repeat what an upstream already did.
pub(super) enum Next {
    /// Record the order at a new step; see [`Transition`].
    Move(Box<Transition>),
    /// Record what the step learned and run the same step again now (its attempts are not
    /// counted: the step chose a new way, e.g. a refund that must be a release).
    Again(Box<Order>),
    /// Nothing to do until an outside event.
    Rest,
    /// A transient failure or an outcome not known yet: try again later, counting the
    /// attempt towards `orders.max_step_attempts`.
    Retry(String),
    /// The flow cannot resolve this on its own: an operator must look.
    Attention(String),
}

/// A move to the next step: the order as the step left it, the step to record, and what
/// goes with it, all committed in one transaction by [`apply`].
pub(super) struct Transition {
    order: Order,
    to: Step,
    /// The visible status to change to (allowed moves only), with its history entry.
    status: Option<OrderStatus>,
    /// A durable job for this order, queued in the same transaction.
    job: Option<JobKind>,
    /// Whether the runner goes on with `to` or rests until an outside event.
    then: Then,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    RunOn,
    Rest,
}

/// The transition to `to`; the runner then runs `to`.
fn go(order: Order, to: Step) -> Transition {
    Transition {
        order,
        to,
        status: None,
        job: None,
        then: Then::RunOn,
    }
}

impl Transition {
    /// Also changes the order's visible status.
    fn showing(mut self, status: OrderStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Also queues `job` for this order (once: its key is the kind and the order id).
    fn queueing(mut self, job: JobKind) -> Self {
        self.job = Some(job);
        self
    }

    /// Rests after recording: the next step waits for an outside event.
    fn then_rest(mut self) -> Self {
        self.then = Then::Rest;
        self
    }
}

impl From<Transition> for Next {
    fn from(transition: Transition) -> Self {
        Next::Move(Box::new(transition))
    }
}

/// Runs one step. Where each lives: `submit.rs` (Place Order 7–11); `reward.rs` (the
/// discount, Use Reward 16–19); `payment.rs` (the charge, 3-D Secure and payment retries,
/// 12–17); `acceptance.rs` (acceptance, injection, capture and following the store, 18–23);
/// `compensations.rs` (recall 24, refund, cancellation).
async fn run_step(state: &AppState, step: Step, order: Order) -> Result<Next, FlowError> {
    match step {
        Step::Submit => submit(state, order).await,
        Step::Discount => discount(state, order).await,
        Step::Charge => charge(state, order).await,
        Step::AwaitPaymentRetry => await_payment_retry(state, order).await,
        Step::AwaitAuthentication => await_authentication(state, order).await,
        Step::RecordPayment => record_payment(state, order).await,
        Step::AwaitAcceptance => await_acceptance(order),
        Step::Inject => inject(state, order).await,
        Step::Capture => capture(state, order).await,
        Step::Recall => recall(state, order).await,
        Step::Refund => refund(state, order).await,
        Step::CancelOkya => cancel_okya(state, order).await,
        Step::Done => follow_store(order),
        Step::Invalid => Ok(Next::Rest),
    }
}

// ----- The entry and the runner --------------------------------------------------------

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
            if existing.step == Step::AwaitPaymentRetry {
                retry_payment(state, &existing.id).await?;
            }
            return Ok(Ok(wait_until_resting(state, &existing.id).await?));
        }
        let owned = store::carts::find(&state.db, &request.cart_id)
            .await?
            .is_some_and(|cart| cart.customer_id.as_ref() == Some(&request.customer_id));
        if !owned {
            return Ok(Err(CheckoutRefusal::CartNotFound));
        }
        let now = now_ms();
        let mut row = request.new_order(hash.clone(), state.settings.orders.capture, now);
        // Held by this request from the start, so the sweeper leaves it alone.
        let token = store::orders::lease_token(state.lifecycle.instance());
        row.locked_until_ms = Some(now + lease_ms(state));
        row.locked_by = Some(token.clone());
        let id = row.id.clone();
        if !store::orders::insert_new(&state.db, row).await? {
            // A concurrent request with the same key won the insert: wait for its result.
            continue;
        }
        tracing::info!(order_id = %id, "checkout started");
        run_held(state, &id, token).await?;
        return Ok(Ok(wait_until_resting(state, &id).await?));
    }
}

/// The customer sent the same checkout again after Stripe refused a request of ours:
/// charge again (Stripe saved no result for a request it refused before running it).
async fn retry_payment(state: &AppState, id: &OrderId) -> Result<(), FlowError> {
    // Another runner may hold the order for a moment (a webhook's job, a concurrent retry
    // of this same checkout): wait for it rather than answer with the old refusal.
    let deadline = tokio::time::Instant::now() + state.settings.orders.checkout_wait();
    let token = loop {
        if let Some(token) = acquire(state, id).await? {
            break token;
        }
        if tokio::time::Instant::now() >= deadline
            || state.lifecycle.is_stopping()
            || load(state, id).await?.step != Step::AwaitPaymentRetry
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let mut order = load(state, id).await?;
    if order.step != Step::AwaitPaymentRetry {
        store::orders::release(&state.db, id, &token).await?;
        return Ok(());
    }
    tracing::info!(order_id = %id, "the customer retries a payment Stripe could not take");
    order.failure_code = None;
    order.failure_message = None;
    order.payment_status = None;
    match apply(state, go(order, Step::Charge)).await {
        Err(FlowError::LeaseLost(_)) => return Ok(()),
        other => other?,
    }
    run_held(state, id, token).await
}

fn lease_ms(state: &AppState) -> i64 {
    millis(state.settings.orders.lease())
}

/// Takes the order's lease under a new token of this instance; `None` if another runner
/// holds it, or this instance is shutting down (it starts no new step; another instance
/// will).
async fn acquire(state: &AppState, id: &OrderId) -> Result<Option<String>, FlowError> {
    if state.lifecycle.is_stopping() {
        return Ok(None);
    }
    let token = store::orders::lease_token(state.lifecycle.instance());
    let acquired = store::orders::acquire(&state.db, id, &token, now_ms(), lease_ms(state)).await?;
    Ok(acquired.then_some(token))
}

fn set_payment(order: &mut Order, status: PaymentStatus) {
    order.payment_status = Some(status);
}

fn approval(order: &Order) -> Option<Approval> {
    order.okya_approval
}

fn fulfilment(order: &Order) -> Option<Fulfilment> {
    order.okya_fulfilment
}

async fn load(state: &AppState, id: &OrderId) -> Result<Order, FlowError> {
    store::orders::find(&state.db, id)
        .await?
        .ok_or_else(|| FlowError::Corrupt(format!("order {id} vanished")))
}

/// Waits until the flow rests (waiting for the store or the customer, or finished), so
/// every caller with the same key sees the same settled answer.
async fn wait_until_resting(state: &AppState, id: &OrderId) -> Result<Order, FlowError> {
    let deadline = tokio::time::Instant::now() + state.settings.orders.checkout_wait();
    loop {
        let order = load(state, id).await?;
        let step = order.step;
        // A shutdown answers with the order as it stands: another instance goes on with it.
        if !step.is_active()
            || order.attention.is_some()
            || tokio::time::Instant::now() >= deadline
            || state.lifecycle.is_stopping()
        {
            return Ok(order);
        }
        // If its runner died, take it over once the lease has lapsed.
        drive(state, id).await?;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Records Okya's newer `okya` state of the order and runs the flow on it, only while
/// holding the order: false, and nothing recorded, when another runner holds it. A state
/// recorded while someone else holds the order could be missed by that runner (it loaded
/// the order before) and then by every later reader, who would find the version not newer.
pub async fn record_okya_state_and_drive(
    state: &AppState,
    id: &OrderId,
    okya: crate::upstream::okya::orders::OkyaState,
) -> Result<bool, FlowError> {
    let Some(token) = acquire(state, id).await? else {
        return Ok(false);
    };
    if let Err(e) = store::orders::record_okya_state(&state.db, id, okya).await {
        store::orders::release(&state.db, id, &token).await?;
        return Err(e.into());
    }
    run_held(state, id, token).await?;
    Ok(true)
}

/// Runs the flow if no one else holds it (and this instance is not shutting down).
pub async fn drive(state: &AppState, id: &OrderId) -> Result<bool, FlowError> {
    let Some(token) = acquire(state, id).await? else {
        return Ok(false);
    };
    run_held(state, id, token).await?;
    Ok(true)
}

/// Runs steps while holding the lease, until the flow rests or a step must wait to retry.
///
/// The steps run in a task of their own: a caller that goes away (a checkout whose client
/// disconnected) does not stop them halfway, and they start on a fresh stack instead of
/// under the GraphQL resolver's. A shutdown waits for them (within its grace) and spares
/// their lease while they run.
///
/// While they run, the lease is renewed every third of `orders.lease_ms`, so a step slower
/// than the lease (an upstream's timeouts and retries) keeps its order; and every write is
/// fenced by the lease's token, so should it lapse anyway (a paused process, a database
/// that could not be reached to renew), this runner writes nothing more and stops.
async fn run_held(state: &AppState, id: &OrderId, token: String) -> Result<(), FlowError> {
    let work = state.lifecycle.work().clone();
    let (state, id) = (state.clone(), id.to_owned());
    let runner = work.spawn(
        async move {
            let _running = state
                .lifecycle
                .running(crate::lifecycle::Held::Order, id.as_str());
            let renewal = spawn_renewal(&state, &id, &token);
            let outcome = run_steps(&state, &id, &token).await;
            renewal.abort();
            match outcome {
                // A dead process releases nothing; the lease runs out instead.
                Err(FlowError::Crashed(_)) => return outcome,
                Err(FlowError::LeaseLost(_)) => {
                    tracing::warn!(order_id = %id, "lease lost to another runner; this one stops without writing");
                    return Ok(());
                }
                _ => {}
            }
            store::orders::release(&state.db, &id, &token).await?;
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

/// Renews `token`'s lease on the order every third of the lease until aborted, or until
/// the lease is found to be someone else's.
fn spawn_renewal(state: &AppState, id: &OrderId, token: &str) -> tokio::task::JoinHandle<()> {
    let (state, id, token) = (state.clone(), id.clone(), token.to_owned());
    tokio::spawn(async move {
        let lease = lease_ms(&state);
        let every = Duration::from_millis(u64::try_from(lease / 3).unwrap_or(1).max(1));
        loop {
            tokio::time::sleep(every).await;
            match store::orders::renew(&state.db, &id, &token, now_ms(), lease).await {
                Ok(true) => {}
                Ok(false) => return,
                // The next tick tries again; the fence keeps a lapsed lease harmless.
                Err(e) => tracing::warn!(order_id = %id, error = %e, "could not renew the lease"),
            }
        }
    })
}

async fn run_steps(state: &AppState, id: &OrderId, token: &str) -> Result<(), FlowError> {
    for _ in 0..MAX_STEPS_PER_RUN {
        if state.lifecycle.is_stopping() {
            // The last step is recorded; another instance runs the next once the lease is
            // released.
            tracing::info!(order_id = %id, "shutting down: the flow stops between steps");
            return Ok(());
        }
        let order = load_held(state, id, token).await?;
        if order.attention.is_some() {
            // An operator's now; webhooks still record Okya's state for when it resumes.
            return Ok(());
        }
        let step = order.step;
        // A step backing off after a failure waits for its time, whoever drives the flow
        // meanwhile (a webhook, a waiting checkout): retries keep their pace.
        if step.is_active() && order.next_attempt_at_ms > now_ms() {
            return Ok(());
        }
        let span = tracing::info_span!("flow_step", order_id = %id, step = step.as_str());
        // Boxed: each step is a large future, and nesting them inline overflows the stack.
        let outcome = Box::pin(run_step(state, step, order).instrument(span)).await;
        let next = match outcome {
            Ok(next) => next,
            Err(e @ (FlowError::Crashed(_) | FlowError::LeaseLost(_))) => return Err(e),
            Err(FlowError::Corrupt(reason)) => {
                Next::Attention(format!("impossible stored state: {reason}"))
            }
            // An answer the step did not expect, or the database failing mid-step: the
            // step is tried again later, within the bound.
            Err(e @ (FlowError::Store(_) | FlowError::Upstream(_))) => Next::Retry(e.to_string()),
        };
        match next {
            Next::Move(transition) => {
                let then = transition.then;
                apply(state, *transition).await?;
                if then == Then::Rest {
                    return Ok(());
                }
            }
            Next::Again(mut order) => checkpoint(state, &mut order).await?,
            Next::Rest => return Ok(()),
            Next::Retry(reason) => return schedule_retry(state, id, token, &reason).await,
            Next::Attention(reason) => return mark_attention(state, id, token, &reason).await,
        }
    }
    mark_attention(
        state,
        id,
        token,
        &format!("the flow did not settle within {MAX_STEPS_PER_RUN} steps"),
    )
    .await
}

/// Hands a resting order to an operator with `reason` (reconciliation's call), under its
/// lease so no runner's copy overwrites the mark; false if the order is busy, already
/// with an operator, or no longer resting.
pub async fn flag_resting(state: &AppState, id: &OrderId, reason: &str) -> Result<bool, FlowError> {
    let Some(token) = acquire(state, id).await? else {
        return Ok(false);
    };
    let order = load(state, id).await;
    let flagged = match order {
        Ok(order) if order.attention.is_none() && !order.step.is_active() => {
            match mark_attention(state, id, &token, reason).await {
                Ok(()) => Ok(true),
                Err(FlowError::LeaseLost(_)) => return Ok(false),
                Err(e) => Err(e),
            }
        }
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    };
    store::orders::release(&state.db, id, &token).await?;
    flagged
}

/// Records a failed attempt and when to try again, or gives the order to an operator
/// once the step has been tried `orders.max_step_attempts` times.
async fn schedule_retry(
    state: &AppState,
    id: &OrderId,
    token: &str,
    reason: &str,
) -> Result<(), FlowError> {
    let mut order = load_held(state, id, token).await?;
    order.step_attempts += 1;
    let max = i32::try_from(state.settings.orders.max_step_attempts).unwrap_or(i32::MAX);
    if order.step_attempts >= max {
        let reason = format!(
            "step {} did not succeed in {} attempts; last: {reason}",
            order.step, order.step_attempts
        );
        save(state, order).await?;
        return mark_attention(state, id, token, &reason).await;
    }
    let delay = retry_delay_ms(order.step_attempts);
    order.next_attempt_at_ms = now_ms() + delay;
    order.updated_at_ms = now_ms();
    tracing::warn!(order_id = %id, step = %order.step, attempt = order.step_attempts, %reason, retry_in_ms = delay, "step will be retried");
    save(state, order).await
}

/// Parks the order for an operator: the sweeper skips it, `/readyz` counts it, and the
/// reason is logged at ERROR. Clearing `attention` (see the README) resumes it.
async fn mark_attention(
    state: &AppState,
    id: &OrderId,
    token: &str,
    reason: &str,
) -> Result<(), FlowError> {
    let mut order = load_held(state, id, token).await?;
    tracing::error!(order_id = %id, step = %order.step, status = %order.status, %reason, "order needs an operator");
    order.attention = Some(reason.chars().take(1_000).collect());
    order.attention_at_ms = Some(now_ms());
    order.updated_at_ms = now_ms();
    save(state, order).await
}

/// The order, as long as `token`'s lease is still its lease.
async fn load_held(state: &AppState, id: &OrderId, token: &str) -> Result<Order, FlowError> {
    let order = load(state, id).await?;
    if order.locked_by.as_deref() == Some(token) {
        Ok(order)
    } else {
        Err(FlowError::LeaseLost(id.clone()))
    }
}

/// Saves a runner's row, fenced by the lease it was loaded under.
async fn save(state: &AppState, order: Order) -> Result<(), FlowError> {
    let id = order.id.clone();
    if store::orders::save(&state.db, order).await? {
        Ok(())
    } else {
        Err(FlowError::LeaseLost(id))
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
    millis(STEP_RETRIES.delay(retry))
}

/// Moves to `step`, resetting the retry count.
fn advance(order: &mut Order, step: Step) {
    order.step = step;
    order.step_attempts = 0;
    order.next_attempt_at_ms = now_ms();
    order.updated_at_ms = now_ms();
}

/// Commits a step's transition: the new step (its retry count reset), the visible status
/// with its history entry and the queued job, in one transaction.
async fn apply(state: &AppState, transition: Transition) -> Result<(), FlowError> {
    let Transition {
        mut order,
        to,
        status,
        job,
        then: _,
    } = transition;
    advance(&mut order, to);
    commit(state, &mut order, status, job).await
}

/// Records what a step has done so far, before its next upstream call, without moving.
async fn checkpoint(state: &AppState, order: &mut Order) -> Result<(), FlowError> {
    commit(state, order, None, None).await
}

/// Saves the row and, when `to` is given, changes the visible status (allowed moves only)
/// with its history entry, and queues `job`, all in one transaction, so no reader ever
/// sees a resting step with a stale status and no job runs for a step not recorded. The
/// change is announced, and the job worker woken, after the commit.
async fn commit(
    state: &AppState,
    order: &mut Order,
    to: Option<OrderStatus>,
    job: Option<JobKind>,
) -> Result<(), FlowError> {
    crash_point(state, order)?;
    let from = order.status;
    let now = now_ms();
    let txn = sea_orm::TransactionTrait::begin(&state.db).await?;
    let moved = match to {
        None => false,
        // The first visible status of a 3-D Secure order is the one it was created with.
        Some(to) if to == from => store::orders::start_history(&txn, &order.id, to, now).await?,
        Some(to) => store::orders::transition(&txn, &order.id, from, to, now).await?,
    };
    if moved && let Some(to) = to {
        order.status = to;
    }
    if !store::orders::save(&txn, order.clone()).await? {
        // Another runner holds the order now: none of this is written (the transaction
        // is dropped, so rolled back).
        return Err(FlowError::LeaseLost(order.id.clone()));
    }
    if let Some(job) = job {
        let kind = job.as_str();
        store::jobs::enqueue(
            &txn,
            kind,
            &format!("{kind}:{}", order.id),
            &serde_json::json!({"order_id": order.id}),
            now,
        )
        .await?;
    }
    txn.commit().await?;
    if job.is_some() {
        state.job_signal.wake();
    }
    if let Some(to) = to {
        if moved {
            tracing::info!(order_id = %order.id, from = from.as_str(), to = to.as_str(), "order status changed");
            state.order_events.publish(order.id.as_str()).await;
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

/// One of the order's amounts (`what` names it). Missing where the flow needs it is a
/// corrupt row, never a zero sent upstream.
fn money(order: &Order, what: &str, minor: Option<i64>) -> Result<Money, FlowError> {
    let minor =
        minor.ok_or_else(|| FlowError::Corrupt(format!("order {} has no {what}", order.id)))?;
    Ok(Money::new(minor, currency(order)?))
}

/// The Okya store the order was placed at (known from submission on); an order without one
/// is corrupt, never an empty location sent to the POS or SessionM.
fn store_of(order: &Order) -> Result<String, FlowError> {
    if order.store_id.is_empty() {
        return Err(FlowError::Corrupt(format!(
            "order {} has no store",
            order.id
        )));
    }
    Ok(order.store_id.clone())
}

/// One of the order's instants (`what` names it) as a timestamp for an upstream.
fn instant(order: &Order, what: &str, ms: i64) -> Result<chrono::DateTime<chrono::Utc>, FlowError> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no valid {what}: {ms}", order.id)))
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
        order.okya_approval = Some(okya.approval);
        order.okya_fulfilment = Some(okya.fulfilment);
    }
    store::orders::record_okya_state(&state.db, &order.id, okya.state()).await?;
    Ok(())
}

/// Records why the order failed (`message` is the upstream's words, for support and, for
/// card declines, the customer).
fn fail_with(order: &mut Order, failure: Failure, message: &str) {
    order.failure_code = Some(failure.as_str().to_owned());
    order.failure_message = Some(message.chars().take(500).collect());
}

/// The failure recorded on the order, if any.
fn failure_of(order: &Order) -> Option<Failure> {
    order.failure_code.as_deref().and_then(Failure::parse)
}

/// The refusal in an error, for logs and failure records.
fn refusal_of(e: &UpstreamError, fallback: &str) -> (String, String) {
    e.rejection()
        .map(|(_, r)| (r.code.clone(), r.message.clone()))
        .unwrap_or_else(|| (fallback.to_owned(), e.to_string()))
}
