//! The store's side: waiting for acceptance, the POS injection, the capture on
//! acceptance, and following the store to collection.

use super::*;

/// Steps 18–20: waiting for the store; Okya's webhook records its decision.
pub(super) fn await_acceptance(mut order: Order) -> Result<Next, FlowError> {
    match approval(&order) {
        Some(Approval::Approved) => Ok(go(order, Step::Inject).into()),
        Some(Approval::NotApproved) => {
            fail_with(
                &mut order,
                Failure::Rejected,
                "The store declined the order.",
            );
            Ok(go(order, Step::Refund).into())
        }
        Some(Approval::NeedsApproval) | None => Ok(Next::Rest),
    }
}

/// Steps 21–23: the accepted order goes into the store's POS, which prints it.
pub(super) async fn inject(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let body = injection(state, &mut order).await?;
    let location = store_of(&order)?;
    let outcome = state
        .upstreams
        .epoint
        .inject_order(&location, &body, &key(&order, "inject"))
        .await;
    let failed = match outcome {
        Ok(receipt) => {
            order.pos_ticket_id = Some(receipt.ticket_id.clone());
            return finish_injection(order);
        }
        Err(e) if e.is_transient() => {
            if i64::from(order.step_attempts) + 1
                < i64::from(state.settings.orders.pos_max_attempts)
            {
                return Ok(Next::Retry(e.to_string()));
            }
            (Failure::PosUnreachable, e.to_string())
        }
        Err(e) => (Failure::PosRefused, refusal_of(&e, "pos_refused").1),
    };
    // Before recalling: the POS may have the order after all (a try whose answer was lost,
    // or a refusal of a repeat); its own record decides.
    match state
        .upstreams
        .epoint
        .find_order(&location, order.id.as_str())
        .await
    {
        Ok(Some(receipt)) => {
            tracing::info!(order_id = %order.id, ticket = %receipt.ticket_id, "the POS had the order after all");
            order.pos_ticket_id = Some(receipt.ticket_id.clone());
            return finish_injection(order);
        }
        Ok(None) => {}
        // Cannot tell yet: recalling now could refund an order the store is printing.
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, "could not ask the POS for the order")
        }
    }
    tracing::warn!(order_id = %order.id, failure = failed.0.as_str(), reason = %failed.1, "the POS could not take the order; recalling");
    fail_with(&mut order, failed.0, &failed.1);
    Ok(go(order, Step::Recall).into())
}

/// The POS has the ticket: capture an authorisation first, or the order is with the store.
pub(super) fn finish_injection(order: Order) -> Result<Next, FlowError> {
    match order.payment_status {
        Some(PaymentStatus::Authorized) => Ok(go(order, Step::Capture).into()),
        Some(PaymentStatus::Captured) | None => Ok(in_preparation(order).into()),
        Some(
            other @ (PaymentStatus::RequiresAction
            | PaymentStatus::Failed
            | PaymentStatus::Refunded
            | PaymentStatus::Cancelled),
        ) => Err(FlowError::Corrupt(format!(
            "order {} was injected with payment {}",
            order.id,
            other.as_str()
        ))),
    }
}

/// The order is with the store: tell the app, and queue the order for SessionM (step 25).
pub(super) fn in_preparation(order: Order) -> Transition {
    go(order, Step::Done)
        .showing(OrderStatus::InPreparation)
        .queueing(JobKind::SendToSessionm)
}

/// Capture on acceptance: take the authorised money now that the POS has the order.
pub(super) async fn capture(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let intent_id = order
        .payment_intent_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} captures no intent", order.id)))?;
    if order.payment_status != Some(PaymentStatus::Captured) {
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
                        checkpoint(state, &mut order).await?;
                        return Ok(Next::Retry(e.to_string()));
                    }
                    Truth::Settled(PaymentStatus::Authorized) => {
                        tracing::error!(order_id = %order.id, error = %e, "Stripe refused the capture; recalling the order");
                        fail_with(&mut order, Failure::CaptureFailed, &e.to_string());
                        return Ok(go(order, Step::Recall).into());
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
                            Failure::AuthorizationLost,
                            "The card authorisation was released before it could be captured.",
                        );
                        return Ok(go(order, Step::Recall).into());
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
        checkpoint(state, &mut order).await?;
    }
    let okya_id = okya_id(&order)?;
    let body = NewPayment {
        provider: "stripe".into(),
        reference: intent_id,
        amount: WireMoney::from_money(&money(&order, "total", order.total_minor)?),
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
    Ok(in_preparation(order).into())
}

/// After injection the flow only follows the store: ready, then collected.
pub(super) fn follow_store(order: Order) -> Result<Next, FlowError> {
    let status = order.status;
    // Exhaustive over Okya's fulfilment: a new one must say what it means here. One
    // status at a time, so the history shows each (collected implies ready first).
    match fulfilment(&order) {
        Some(Fulfilment::ReadyForPickup | Fulfilment::Completed)
            if status == OrderStatus::InPreparation =>
        {
            Ok(go(order, Step::Done)
                .showing(OrderStatus::ReadyForPickup)
                .into())
        }
        Some(Fulfilment::Completed) if status == OrderStatus::ReadyForPickup => {
            Ok(go(order, Step::Done)
                .showing(OrderStatus::Completed)
                .then_rest()
                .into())
        }
        // Already there, or nothing to follow. A store voiding an order it accepted is not
        // acted on yet: no refund and no SessionM return follow (a known gap).
        Some(
            Fulfilment::Received
            | Fulfilment::InPreparation
            | Fulfilment::ReadyForPickup
            | Fulfilment::Completed
            | Fulfilment::Void,
        )
        | None => Ok(Next::Rest),
    }
}

/// The POS ticket, built only from the order row and its snapshot, so a retry sends the
/// same body.
pub(super) async fn injection(
    state: &AppState,
    order: &mut Order,
) -> Result<InjectOrder, FlowError> {
    let lines = snapshot(state, order).await?;
    let currency = currency(order)?;
    let customer = store::customers::find(&state.db, &order.customer_id).await?;
    Ok(InjectOrder {
        external_id: order.id.to_string(),
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
        placed_at: instant(order, "creation time", order.created_at_ms)?,
        pickup_at: None,
        lines: order_lines::pos_lines(&lines, &currency).map_err(|e| {
            FlowError::Corrupt(format!(
                "order {} has a line priced impossibly: {e}",
                order.id
            ))
        })?,
        subtotal: money(order, "subtotal", order.subtotal_minor)?,
        discount: money(order, "discount", order.discount_minor)?,
        tax: money(order, "tax", order.tax_minor)?,
        total: money(order, "total", order.total_minor)?,
        note: None,
    })
}
