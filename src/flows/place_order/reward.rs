//! Use Reward: the voucher checked in the wallet and locked (Use Reward steps 16–19),
//! released when the order will not use it, and the sale that finalises it and earns
//! points (Place Order step 25, Use Reward steps 22–23),
//! as SessionM documents them (`docs/upstreams/sessionm.md`).

use super::*;

/// Use Reward, steps 16–19: SessionM prices the voucher against the order and locks it to
/// this order; the discount goes on the Okya order, which recomputes tax and total.
pub(super) async fn discount(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let voucher = order
        .voucher_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} discounts no voucher", order.id)))?;
    let customer = store::customers::find(&state.db, &order.customer_id).await?;
    let Some(user_id) = customer.and_then(|c| c.sessionm_user_id) else {
        fail_with(
            &mut order,
            Failure::VoucherNotApplicable,
            "Rewards are not ready for this account yet.",
        );
        return Ok(go(order, Step::CancelOkya).into());
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
            fail_with(&mut order, Failure::ServiceUnavailable, &e.to_string());
            return Ok(go(order, Step::CancelOkya).into());
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
                fail_with(&mut order, Failure::ServiceUnavailable, &e.to_string());
                return Ok(go(order, Step::CancelOkya).into());
            }
        };
        let refusal = match wallet
            .offers
            .iter()
            .find(|o| o.user_offer_id == voucher.as_str())
        {
            None => Some((Failure::VoucherNotFound, "no such voucher".to_owned())),
            Some(offer) => match &offer.status {
                OfferStatus::Expired => Some((Failure::VoucherExpired, "expired".into())),
                OfferStatus::Redeemed => Some((Failure::VoucherAlreadyUsed, "used".into())),
                // This order has sent no lock yet, so a lock is another order's.
                OfferStatus::Locked => Some((Failure::VoucherInUse, "in use".into())),
                OfferStatus::Available => offer
                    .unusable_reason()
                    .map(|reason| (Failure::VoucherNotApplicable, reason)),
                OfferStatus::Unrecognised(_) => offer
                    .unusable_reason()
                    .map(|reason| (Failure::VoucherNotApplicable, reason)),
            },
        };
        if let Some((failure, message)) = refusal {
            tracing::info!(order_id = %order.id, failure = failure.as_str(), "the voucher is not usable in the member's wallet; nothing charged");
            fail_with(&mut order, failure, &message);
            return Ok(go(order, Step::CancelOkya).into());
        }
        // From the moment the lock is asked for, a lock may exist (its answer can be lost
        // or unreadable), so every compensation must try to release it.
        order.voucher_name = Some(voucher.to_string());
        checkpoint(state, &mut order).await?;
    }
    let locked = match state
        .upstreams
        .sessionm
        .lock(voucher.as_str(), &basket, &key(&order, "lock"))
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
            if let Some(failure) = sessionm::codes::voucher_failure(&code) {
                tracing::info!(order_id = %order.id, %code, "SessionM refused the voucher; nothing charged");
                fail_with(&mut order, failure, &message);
            } else {
                tracing::error!(order_id = %order.id, error = %e, "SessionM refused our lock request; nothing charged");
                fail_with(&mut order, Failure::ServiceUnavailable, &e.to_string());
            }
            return Ok(go(order, Step::CancelOkya).into());
        }
    };
    order.voucher_discount_json = Some(locked.object.to_string());
    order.voucher_name = Some(locked.name.clone().unwrap_or_else(|| "Reward".to_owned()));
    checkpoint(state, &mut order).await?;
    let adjustment = NewAdjustment {
        source: "sessionm".into(),
        reference: voucher.to_string(),
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
            Ok(go(order, next).into())
        }
        Err(e) if e.is_transient() => Ok(Next::Retry(e.to_string())),
        Err(e) => {
            tracing::error!(order_id = %order.id, error = %e, "Okya refused the discount; releasing the voucher");
            fail_with(&mut order, Failure::VoucherNotApplicable, &e.to_string());
            Ok(go(order, Step::CancelOkya).into())
        }
    }
}

/// The order as a SessionM basket: what the voucher is priced against, from the snapshot.
pub(super) async fn basket(state: &AppState, order: &mut Order) -> Result<Transaction, FlowError> {
    let lines = snapshot(state, order).await?;
    let currency = currency(order)?;
    Transaction::new(
        order.id.to_string(),
        store_of(order)?,
        currency.clone(),
        order_lines::loyalty_lines(&lines, &currency),
    )
    .map_err(|e| FlowError::Corrupt(e.to_string()))
}

/// Gives the voucher back when this order may hold a lock on it and will not use it.
pub(super) async fn release_voucher(
    state: &AppState,
    order: &Order,
) -> Result<Option<Next>, FlowError> {
    let (Some(voucher), Some(_)) = (&order.voucher_id, &order.voucher_name) else {
        return Ok(None);
    };
    match state
        .upstreams
        .sessionm
        .unlock(voucher.as_str(), &key(order, "unlock"))
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

/// Place Order step 25, Use Reward steps 22–23 (durable): the order's details go to SessionM. SessionM queues transactions
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
        .transaction_points(order.customer_id.as_str(), order.id.as_str())
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
pub(super) async fn job_order(
    state: &AppState,
    payload: &serde_json::Value,
) -> Result<Order, JobError> {
    let Some(order_id) = payload["order_id"].as_str() else {
        return Err(JobError::Permanent("payload without order_id".into()));
    };
    let order_id = OrderId::parse(order_id)
        .ok_or_else(|| JobError::Permanent(format!("malformed order_id {order_id:?}")))?;
    store::orders::find(&state.db, &order_id)
        .await
        .map_err(|e| JobError::Transient(e.to_string()))?
        .ok_or_else(|| JobError::Permanent(format!("no order {order_id}")))
}

/// The sale as SessionM's Transaction object, from the order row and its snapshot alone,
/// with the Discount object the lock answered passed back unchanged.
pub(super) fn sale(
    order: &Order,
    user_id: String,
    sent_at_ms: i64,
) -> Result<SendTransaction, FlowError> {
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
        order.id.to_string(),
        store_of(order)?,
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
                user_offer_id: voucher.to_string(),
                name: order.voucher_name.clone(),
                amount: money(order, "discount", order.discount_minor)?,
                object,
            }]
        }
        _ => Vec::new(),
    };
    Ok(SendTransaction {
        user_id,
        transaction,
        discounts,
        tax: money(order, "tax", order.tax_minor)?,
        paid: money(order, "total", order.total_minor)?,
        payment_id: order
            .payment_intent_id
            .clone()
            .unwrap_or_else(|| format!("{}:reward", order.id)),
        opened_at: instant(order, "creation time", order.created_at_ms)?,
        modified_at: instant(order, "sale time", sent_at_ms)?,
    })
}
