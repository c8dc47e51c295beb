//! Compensations: the recall of an accepted order, the refund or release of its money,
//! and the cancellation of an Okya order nothing was charged for.

use super::*;

/// Step 24: the POS refused, so the order is recalled in Okya.
pub(super) async fn recall(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
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
    Ok(go(order, Step::Refund).into())
}

/// Gives the money back (a refund after a capture, a release of an authorisation), then
/// the voucher, then ends the order. When Stripe refuses, the PaymentIntent says what is
/// true (a support agent may have refunded already) and the step goes on from there.
pub(super) async fn refund(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let status = order.payment_status;
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
                    return Ok(Next::Again(Box::new(order)));
                }
                Truth::Settled(_) if e.is_replayed_failure() => {
                    // Stripe keeps answering the saved failure under this key, and the
                    // money is still held: a new key asks again. A second refund cannot
                    // over-refund (Stripe refuses more than the charge).
                    order.key_generation += 1;
                    checkpoint(state, &mut order).await?;
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
        checkpoint(state, &mut order).await?;
        return Ok(retry);
    }
    if failure_of(&order) == Some(Failure::NotRecorded) {
        // Okya never took the payment: cancel its order too, which ends ours.
        return Ok(go(order, Step::CancelOkya).into());
    }
    // Money given back after the order was placed: the failure says how it ended (a
    // refund with no recorded failure is the store's cancellation).
    let target = failure_of(&order)
        .and_then(Failure::final_status)
        .unwrap_or(OrderStatus::Cancelled);
    Ok(go(order, Step::Done).showing(target).then_rest().into())
}

pub(super) fn intent_id(order: &Order) -> Result<String, FlowError> {
    order
        .payment_intent_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has money but no intent", order.id)))
}

/// The payment failed: cancel the Okya order so no store ever sees it.
pub(super) async fn cancel_okya(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    if order.payment_status.is_some_and(PaymentStatus::holds_money) {
        // Money is held (the order could not be recorded): give it back first.
        return Ok(go(order, Step::Refund).into());
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
        return Ok(go(order, Step::Invalid).then_rest().into());
    }
    let target = failure_of(&order)
        .and_then(Failure::final_status)
        .unwrap_or(OrderStatus::PaymentFailed);
    Ok(go(order, Step::Done).showing(target).then_rest().into())
}
