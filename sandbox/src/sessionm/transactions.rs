//! `POST /api/2.0/send_transaction`: queued at once, processed later ("This is an
//! asynchronous flow. Transactions queue up as needed"), as SessionM documents it.

use super::offers::basket;
use super::state::{OfferState, Rejected, State, TransactionRecord};
use super::wire::{
    Amount, Reply, StatementEntry, Transaction, codes, json_equal, pos_error, pos_ok, seconds,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Accepts a transaction for the queue: only that the payload is an object with a
/// `transaction_id` is checked now; everything else is checked when it is processed, and
/// a failure then is visible only in the ledger's `rejected` (as with SessionM, where the
/// sender has long had its `OK`).
pub(super) fn queue(payload: &Value) -> Result<Reply, Reply> {
    match payload.get("transaction_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(pos_ok(None)),
        _ if !payload.is_object() => Err(pos_error(
            codes::VALIDATION,
            "request_payload: a Transaction object is required",
        )),
        _ => Err(pos_error(
            codes::VALIDATION,
            "request_payload: missing field `transaction_id`",
        )),
    }
}

/// Processes a queued transaction: all or nothing.
pub(super) fn process(state: &mut State, payload: &Value, now: DateTime<Utc>) {
    let transaction_id = payload
        .get("transaction_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Err(reason) = apply(state, payload, now) {
        tracing::info!(%transaction_id, %reason, "sandbox SessionM rejected a transaction");
        state.rejected.push(Rejected {
            transaction_id,
            reason,
        });
    }
}

fn apply(state: &mut State, payload: &Value, now: DateTime<Utc>) -> Result<(), String> {
    let txn: Transaction =
        serde_json::from_value(payload.clone()).map_err(|e| format!("invalid transaction: {e}"))?;
    let basket = basket(&txn)?;
    let id = basket.transaction_id.clone();

    // The member: the first payment that names one.
    let payer = txn
        .payments
        .iter()
        .find_map(|p| p.user_id.as_deref().map(|u| (u, p.user_id_type.as_deref())))
        .ok_or("no payment carries a member (user_id)")?;
    let user_id = match payer {
        (user_id, Some("SessionM_ID")) => state.user(user_id).map(|u| u.id.clone()),
        (external_id, Some("External_ID")) => {
            state.user_by_external(external_id).map(|u| u.id.clone())
        }
        (_, other) => {
            return Err(format!(
                "payment user_id_type {other:?} is not SessionM_ID or External_ID"
            ));
        }
    }
    .ok_or_else(|| format!("payment names an unknown member {:?}", payer.0))?;
    if let Some(previous) = state.transactions.iter().find(|t| t.transaction_id == id)
        && previous.user_id != user_id
    {
        return Err("the transaction was first sent for another member".to_owned());
    }

    // Every discount: an offer of this member, locked by (or redeemed for) this
    // transaction or available again, carrying exactly what the lock answered.
    let mut discounts_total = Amount(0);
    let mut offers = Vec::new();
    for (i, discount) in txn.discounts.iter().enumerate() {
        let reference = discount
            .get("reference_id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("discounts[{i}] has no reference_id"))?;
        let amount = discount
            .get("amount")
            .ok_or_else(|| format!("discounts[{i}] has no amount"))
            .and_then(|a| Amount::from_value(a).map_err(|e| format!("discounts[{i}]: {e}")))?;
        if offers.iter().any(|seen| seen == reference) {
            // The same offer twice would count its discount twice.
            return Err(format!("discounts[{i}]: offer {reference} is listed twice"));
        }
        let offer = state
            .offer(reference)
            .ok_or_else(|| format!("discounts[{i}]: no offer {reference}"))?;
        if offer.user_id != user_id {
            return Err(format!(
                "discounts[{i}]: offer {reference} is another member's"
            ));
        }
        match &offer.state {
            OfferState::Locked { transaction_id } | OfferState::Redeemed { transaction_id }
                if *transaction_id != id =>
            {
                return Err(format!(
                    "discounts[{i}]: offer {reference} belongs to transaction {transaction_id}"
                ));
            }
            _ => {}
        }
        let locked = state
            .discounts
            .get(&(reference.to_owned(), id.clone()))
            .ok_or_else(|| {
                format!("discounts[{i}]: offer {reference} was never locked for {id}")
            })?;
        if !json_equal(locked, discount) {
            return Err(format!(
                "discounts[{i}] is not the Discount object the lock last returned for {reference}"
            ));
        }
        discounts_total = discounts_total
            .checked_add(amount)
            .ok_or("discount amounts overflow")?;
        offers.push(reference.to_owned());
    }

    // Σ payments = subtotal − Σ discounts + tax_total.
    let paid = txn
        .payments
        .iter()
        .try_fold(Amount(0), |sum, p| sum.checked_add(p.amount))
        .ok_or("payment amounts overflow")?;
    let due = txn
        .subtotal
        .checked_sub(discounts_total)
        .and_then(|a| a.checked_add(txn.tax_total))
        .ok_or("amounts overflow")?;
    if paid != due {
        return Err(format!(
            "payments {paid} are not subtotal − discounts + tax_total = {due}"
        ));
    }

    // Valid: apply it. A resend replaces the earlier version; points move by the
    // difference.
    let points = paid.whole_units();
    let previous = state
        .transactions
        .iter()
        .position(|t| t.transaction_id == id);
    let delta = points - previous.map_or(0, |i| state.transactions[i].points);
    for reference in &offers {
        if let Some(offer) = state.offer_mut(reference) {
            offer.state = OfferState::Redeemed {
                transaction_id: id.clone(),
            };
        }
    }
    let event_id = state.next("evt");
    let Some(user) = state.users.iter_mut().find(|u| u.id == user_id) else {
        // Found above under the same lock: a member cannot vanish in between.
        return Err(format!("bug: member {user_id} disappeared"));
    };
    user.points += delta;
    user.statement.push(StatementEntry {
        event_id,
        event_type: if delta < 0 { "return" } else { "transaction" },
        transaction_id: id.clone(),
        points: delta,
        occurred_at: seconds(now),
    });
    match previous {
        Some(i) => {
            let record = &mut state.transactions[i];
            record.total = paid;
            record.points = points;
            record.processed_at = now;
            record.versions += 1;
        }
        None => state.transactions.push(TransactionRecord {
            transaction_id: id,
            user_id,
            total: paid,
            points,
            processed_at: now,
            versions: 1,
        }),
    }
    Ok(())
}
