//! Seed steps 7–11: Okya validates the cart and creates the order; its lines are
//! snapshotted for every later payload.

use super::*;

/// Steps 7–11 (Use Reward 14–15): Okya validates the cart and creates the order; its lines are snapshotted
/// with the catalogue's names so every later payload describes what was bought.
pub(super) async fn submit(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let okya = match state
        .upstreams
        .okya
        .create_order(
            &order.cart_id,
            order.customer_id.as_str(),
            &key(&order, "submit"),
        )
        .await
    {
        Ok(okya) => okya,
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            let (code, message) = refusal_of(&e, "order_not_accepted");
            if let Some(failure) = okya_codes::order_failure(&code) {
                tracing::info!(order_id = %order.id, %code, "Okya refused the order; nothing charged");
                fail_with(&mut order, failure, &message);
            } else {
                tracing::error!(order_id = %order.id, error = %e, "Okya refused our order request; nothing charged");
                fail_with(&mut order, Failure::ServiceUnavailable, &e.to_string());
            }
            return Ok(go(order, Step::Invalid).then_rest().into());
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
    Ok(go(order, next).into())
}

/// The lines as ordered. Orders submitted before snapshots existed get one now, once,
/// and keep it, so every payload after this one is the same.
pub(super) async fn snapshot(
    state: &AppState,
    order: &mut Order,
) -> Result<Vec<LineSnapshot>, FlowError> {
    if let Some(raw) = order.lines_snapshot_json.as_deref() {
        return serde_json::from_str(raw)
            .map_err(|e| FlowError::Corrupt(format!("snapshot of {}: {e}", order.id)));
    }
    let raw = order
        .lines_json
        .as_deref()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no lines", order.id)))?;
    let lines: Vec<CartLine> = serde_json::from_str(raw)
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
    checkpoint(state, order).await?;
    Ok(snapshot)
}
