//! What drives the flow from outside: Okya's and Stripe's webhooks (as jobs), and the
//! sweeper that resumes unfinished flows and runs the reconciliation (`flows::reconcile`).

use super::*;

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
    store::orders::record_okya_state(&state.db, &order.id, okya.state())
        .await
        .map_err(|e| transient(&e))?;
    drive_for_job(state, &order.id).await
}

/// Runs the flow for a webhook job; a busy order makes the job retry shortly, so the
/// event is applied by whoever holds the order next.
pub(super) async fn drive_for_job(state: &AppState, id: &OrderId) -> Result<(), JobError> {
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
    let Some(intent_id) = stripe_intent_id(&payload) else {
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

/// The PaymentIntent a Stripe event is about: the event's object when it is an intent
/// (`pi_…`), else the object's `payment_intent` (a charge, a refund). `None` for events
/// about anything else, which are acknowledged and ignored.
pub fn stripe_intent_id(payload: &serde_json::Value) -> Option<&str> {
    payload["data"]["object"]["id"]
        .as_str()
        .filter(|id| id.starts_with("pi_"))
        .or_else(|| payload["data"]["object"]["payment_intent"].as_str())
}

/// Resumes unfinished flows: at start, then on a timer. Any instance may run any order;
/// the lease in the row keeps two from running the same one. A shutdown stops it between
/// two orders.
pub fn spawn_sweeper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = state.settings.orders.sweep_interval();
        let reconcile_every = state
            .settings
            .orders
            .reconcile_interval()
            .max(Duration::from_secs(1));
        let mut last_reconcile = tokio::time::Instant::now();
        while !state.lifecycle.is_stopping() {
            if last_reconcile.elapsed() >= reconcile_every {
                last_reconcile = tokio::time::Instant::now();
                crate::flows::reconcile::run(&state).await;
            }
            let now = now_ms();
            let customer_deadline = now - authentication_timeout_ms(&state);
            match store::orders::due(&state.db, now, customer_deadline, 50).await {
                Ok(ids) => {
                    for id in ids {
                        if state.lifecycle.is_stopping() {
                            break;
                        }
                        if let Err(e) = drive(&state, &id).await {
                            tracing::error!(order_id = %id, error = %e, "resuming an order failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "looking for unfinished orders failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = state.lifecycle.stopping() => {}
            }
        }
    })
}
