//! Reconciliation: a periodic pass compares our orders with what the upstreams hold and
//! repairs (or hands to an operator) what differs, for what webhooks, crashes and lost
//! answers can leave behind. One shape for every upstream: each [`Source`] finds
//! [`Finding`]s; each finding is logged at WARN (order and PaymentIntent ids, nothing
//! secret), repaired by one exhaustive `match`, and counted ([`Counts`], in `/readyz`).
//! The sweeper runs a pass every `orders.reconcile_interval_secs`.
//!
//! What each finding does, by the order state machine (`docs/order-state-machine.md`):
//! - [`Finding::OkyaChangeMissed`]: Okya holds a newer state of an open order than any
//!   webhook brought (Okya gives up redelivering after a day): record it and run the
//!   flow, while holding the order (a busy one is found again on the next pass).
//! - [`Finding::ChargeWithoutOrder`]: a PaymentIntent of ours holds money (captured or
//!   authorised) and no order is behind it, or its order's payment is another intent (a
//!   duplicate charge): refund what is captured, cancel an authorisation.
//! - [`Finding::PaidAfterGivingUp`]: the order failed, was rejected or cancelled and its
//!   flow has finished, yet its intent holds money, e.g. 3-D Secure completed after the
//!   authentication timeout cancelled the order. A final status has no successor, so the
//!   order cannot go on: the money is returned the same way.
//! - [`Finding::AuthorisationLapsing`]: with `orders.capture = on_acceptance`, an
//!   authorisation older than `orders.authorisation_alert_after_secs` whose order the
//!   store has still not accepted (card authorisations lapse after about 7 days): the
//!   order is marked for an operator, who decides between cancelling it and asking the
//!   store, rather than the service guessing.
//!
//! Only orders resting (no active step, no lease, no operator) are judged; a flow in
//! progress settles its own payment. Every repair is idempotent under a key derived
//! from the intent and what it held, so a second pass, or two instances, repeat nothing.

use crate::{
    auth::now_ms,
    context::AppState,
    domain::{OrderId, OrderStatus, Step, StepKind},
    flows::place_order::{self, FlowError},
    store::{self, orders::Order},
    upstream::stripe::{PaymentIntent, PaymentIntentStatus},
};

/// How far back Stripe's intents are compared: past the 7 days an authorisation lasts.
const STRIPE_LOOKBACK_SECS: i64 = 8 * 24 * 3600;
/// Intents per page of Stripe's list (its maximum) and pages per pass, so one pass is
/// bounded; the newest come first and the next pass sees the same window again.
const STRIPE_PAGE: u8 = 100;
const STRIPE_MAX_PAGES: usize = 20;

/// Where a pass looks; each is read by its own finder, the findings handled alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter)]
pub enum Source {
    Okya,
    Stripe,
}

pub use crate::domain::reconciliation::{Counts, Finding, Held};

/// One pass over every source; returns how many findings were handled. A source that
/// cannot be read now is logged and left for the next pass; the others still run.
pub async fn run(state: &AppState) -> usize {
    let mut handled = 0;
    for source in <Source as strum::IntoEnumIterator>::iter() {
        let findings = match source {
            Source::Okya => find_okya(state).await,
            Source::Stripe => find_stripe(state).await,
        };
        let findings = match findings {
            Ok(findings) => findings,
            Err(e) => {
                tracing::warn!(?source, error = %e, "reconciliation could not read the upstream");
                continue;
            }
        };
        for finding in findings {
            log(&finding);
            match repair(state, &finding).await {
                Ok(true) => {
                    state.reconciliation.count(&finding);
                    handled += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(?finding, error = %e, "reconciliation could not repair; next pass tries again");
                }
            }
        }
    }
    handled
}

fn log(finding: &Finding) {
    match finding {
        Finding::OkyaChangeMissed { order_id, version } => {
            tracing::warn!(%order_id, version, "reconciliation: Okya changed the order and no webhook told us");
        }
        Finding::ChargeWithoutOrder {
            intent_id,
            order_id,
            held,
        } => {
            tracing::warn!(%intent_id, order_id = ?order_id.as_ref().map(OrderId::as_str), ?held, "reconciliation: money at Stripe for no live order; returning it");
        }
        Finding::PaidAfterGivingUp {
            intent_id,
            order_id,
            status,
            held,
        } => {
            tracing::warn!(%intent_id, %order_id, status = status.as_str(), ?held, "reconciliation: paid after the order was given up; returning the money");
        }
        Finding::AuthorisationLapsing {
            intent_id,
            order_id,
            age_secs,
        } => {
            tracing::warn!(%intent_id, %order_id, age_secs, "reconciliation: card authorisation close to lapsing and the store has not accepted; an operator must decide");
        }
    }
}

/// Repairs one finding; `Ok(false)` when it no longer applies (someone else got there).
async fn repair(state: &AppState, finding: &Finding) -> Result<bool, FlowError> {
    match finding {
        Finding::OkyaChangeMissed { .. } => {
            // Recorded and acted on when found, while holding the order.
            Ok(true)
        }
        Finding::ChargeWithoutOrder {
            intent_id, held, ..
        }
        | Finding::PaidAfterGivingUp {
            intent_id, held, ..
        } => {
            return_money(state, intent_id, *held).await?;
            Ok(true)
        }
        Finding::AuthorisationLapsing {
            intent_id,
            order_id,
            age_secs,
        } => {
            let reason = format!(
                "card authorisation {intent_id} is {} h old (they lapse after about 7 days) and the store has not accepted the order",
                age_secs / 3600
            );
            Ok(place_order::flag_resting(state, order_id, &reason).await?)
        }
    }
}

/// Refunds what is captured, or cancels an authorisation, under keys that stay the same
/// while the intent holds the same money.
async fn return_money(state: &AppState, intent_id: &str, held: Held) -> Result<(), FlowError> {
    let stripe = &state.upstreams.stripe;
    match held {
        Held::Captured {
            refundable,
            refunded,
        } => {
            stripe
                .create_refund(
                    intent_id,
                    Some(refundable),
                    &format!("reconcile:{intent_id}:refund:{refunded}"),
                )
                .await?;
        }
        Held::Authorised => {
            stripe
                .cancel_payment_intent(
                    intent_id,
                    Some("abandoned"),
                    &format!("reconcile:{intent_id}:cancel"),
                )
                .await?;
        }
    }
    Ok(())
}

/// Open orders whose Okya copy is newer than ours; the newer state is recorded here.
async fn find_okya(state: &AppState) -> Result<Vec<Finding>, FlowError> {
    let open = store::orders::open_with_okya(&state.db, 200).await?;
    let ids: Vec<String> = open
        .iter()
        .filter_map(|o| o.okya_order_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut findings = Vec::new();
    for okya in state.upstreams.okya.orders(&ids).await? {
        let Some(order) = open
            .iter()
            .find(|o| o.okya_order_id.as_deref() == Some(okya.id.as_str()))
        else {
            continue;
        };
        // Recorded only while holding the order, and acted on at once: a busy order keeps
        // its older version, so the next pass (or the webhook) finds this one newer again.
        if okya.version > order.okya_version
            && place_order::record_okya_state_and_drive(state, &order.id, okya.state()).await?
        {
            findings.push(Finding::OkyaChangeMissed {
                order_id: order.id.clone(),
                version: okya.version,
            });
        }
    }
    Ok(findings)
}

/// Stripe's intents of the last [`STRIPE_LOOKBACK_SECS`], newest first, judged against
/// our orders.
async fn find_stripe(state: &AppState) -> Result<Vec<Finding>, FlowError> {
    let now = now_ms();
    let since = now / 1000 - STRIPE_LOOKBACK_SECS;
    let alert_after =
        i64::try_from(state.settings.orders.authorisation_alert_after_secs).unwrap_or(i64::MAX);
    let mut findings = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..STRIPE_MAX_PAGES {
        let page = state
            .upstreams
            .stripe
            .list_payment_intents(since, after.as_deref(), STRIPE_PAGE)
            .await?;
        // One query for the page's orders, not one per intent.
        let ids: Vec<OrderId> = page.data.iter().filter_map(order_id_of).collect();
        let orders = store::orders::find_many(&state.db, &ids).await?;
        for intent in &page.data {
            // Not one of ours (no order id): none of our business.
            let Some(id) = order_id_of(intent) else {
                continue;
            };
            let order = orders.iter().find(|o| o.id == id);
            if let Some(finding) = judge(intent, order, now, alert_after) {
                findings.push(finding);
            }
        }
        match (page.has_more, page.data.last()) {
            (true, Some(last)) => after = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(findings)
}

/// The order an intent was made for (our `metadata.order_id`), if it names one.
fn order_id_of(intent: &PaymentIntent) -> Option<OrderId> {
    intent
        .metadata
        .get("order_id")
        .and_then(|id| OrderId::parse(id))
}

/// The money an intent holds, if any.
fn held(intent: &PaymentIntent) -> Option<Held> {
    match intent.status {
        PaymentIntentStatus::RequiresCapture => Some(Held::Authorised),
        PaymentIntentStatus::Succeeded => {
            let charge = intent.charge()?;
            let refundable = charge.amount_captured - charge.amount_refunded;
            (refundable > 0).then_some(Held::Captured {
                refundable,
                refunded: charge.amount_refunded,
            })
        }
        PaymentIntentStatus::RequiresPaymentMethod
        | PaymentIntentStatus::RequiresConfirmation
        | PaymentIntentStatus::RequiresAction
        | PaymentIntentStatus::Processing
        | PaymentIntentStatus::Canceled
        | PaymentIntentStatus::Unknown => None,
    }
}

/// What an intent holding money says about `order` (the one its metadata names), if it
/// says anything. Orders a flow, a lease or an operator holds are not judged.
fn judge(
    intent: &PaymentIntent,
    order: Option<&Order>,
    now_ms: i64,
    alert_after_secs: i64,
) -> Option<Finding> {
    let held = held(intent)?;
    let intent_id = intent.id.clone();
    let Some(order) = order else {
        return Some(Finding::ChargeWithoutOrder {
            intent_id,
            order_id: None,
            held,
        });
    };
    let busy = order.step.kind() == StepKind::Active
        || order.attention.is_some()
        || order.locked_until_ms.is_some_and(|until| until >= now_ms);
    if busy {
        return None;
    }
    let order_id = order.id.clone();
    let ours = order.payment_intent_id.as_deref() == Some(intent.id.as_str());
    if order.payment_intent_id.is_some() && !ours {
        return Some(Finding::ChargeWithoutOrder {
            intent_id,
            order_id: Some(order_id),
            held,
        });
    }
    match order.status {
        OrderStatus::PaymentFailed | OrderStatus::Rejected | OrderStatus::Cancelled => {
            Some(Finding::PaidAfterGivingUp {
                intent_id,
                order_id,
                status: order.status,
                held,
            })
        }
        OrderStatus::AwaitingAcceptance
            if held == Held::Authorised && order.step == Step::AwaitAcceptance =>
        {
            let age_secs = now_ms / 1000 - intent.created;
            (age_secs >= alert_after_secs).then_some(Finding::AuthorisationLapsing {
                intent_id,
                order_id,
                age_secs,
            })
        }
        OrderStatus::AwaitingPayment
        | OrderStatus::AwaitingAcceptance
        | OrderStatus::InPreparation
        | OrderStatus::ReadyForPickup
        | OrderStatus::Completed => None,
    }
}
