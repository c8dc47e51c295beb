//! Offers on the POS host: `lookup`, `lock`, `redeem`, `unlock`, `reinstate`.

use super::state::{OfferKind, OfferState, State, User, UserOffer, tier};
use super::wire::{
    Amount, Discount, LookupRequest, OfferRequest, ReleaseRequest, Reply, Transaction, codes,
    millis, parse, pos_error, pos_ok, seconds,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A basket whose sums add up.
pub(super) struct Basket {
    pub(super) transaction_id: String,
    pub(super) subtotal: Amount,
    /// `(line_id, unit_price, quantity)`.
    pub(super) lines: Vec<(String, Amount, u32)>,
}

/// Checks `subtotal = unit_price × quantity` on every item and the transaction's
/// `subtotal = Σ items`; the error says which sum is wrong.
pub(super) fn basket(txn: &Transaction) -> Result<Basket, String> {
    let mut sum = Amount(0);
    for item in &txn.items {
        if item.unit_price < Amount(0) {
            return Err(format!("items[{}].unit_price is negative", item.line_id));
        }
        let expected = item
            .unit_price
            .checked_mul(item.quantity.0)
            .ok_or("item amounts overflow")?;
        if expected != item.subtotal {
            return Err(format!(
                "items[{}].subtotal {} is not unit_price × quantity = {expected}",
                item.line_id, item.subtotal
            ));
        }
        sum = sum.checked_add(expected).ok_or("item amounts overflow")?;
    }
    if sum != txn.subtotal {
        return Err(format!(
            "subtotal {} is not the sum of the items {sum}",
            txn.subtotal
        ));
    }
    Ok(Basket {
        transaction_id: txn.transaction_id.clone(),
        subtotal: txn.subtotal,
        lines: txn
            .items
            .iter()
            .map(|i| (i.line_id.clone(), i.unit_price, i.quantity.0))
            .collect(),
    })
}

/// What an offer takes off a basket, and from which lines. The minimum spend is not
/// considered here: it is a lock-time condition.
fn price(kind: OfferKind, basket: &Basket) -> (Amount, Vec<String>) {
    let all = || basket.lines.iter().map(|(id, ..)| id.clone()).collect();
    let (amount, lines) = match kind {
        OfferKind::FreeItem => {
            // The most expensive unit.
            match basket
                .lines
                .iter()
                .filter(|(_, _, quantity)| *quantity > 0)
                .max_by_key(|(_, price, _)| *price)
            {
                Some((line, price, _)) => (*price, vec![line.clone()]),
                None => (Amount(0), Vec::new()),
            }
        }
        OfferKind::FixedAmount(amount) => (amount, all()),
        OfferKind::Percentage(percent) => {
            (basket.subtotal.percent(percent).unwrap_or(Amount(0)), all())
        }
    };
    // A discount never exceeds what it discounts.
    (amount.min(basket.subtotal).max(Amount(0)), lines)
}

fn offer_json(offer: &UserOffer, now: DateTime<Utc>, discount: Option<Amount>) -> Value {
    let mut out = json!({
        "user_offer_id": offer.user_offer_id,
        "offer_id": offer.offer_id,
        "name": offer.name,
        "description": offer.description,
        "status": offer.shown_status.as_deref().unwrap_or(offer.status(now)),
        "expiration_date": seconds(offer.expires_at),
        "discount_type": offer.shown_discount_type.as_deref().unwrap_or(offer.kind.as_str()),
    });
    match offer.kind {
        OfferKind::FixedAmount(amount) => out["amount"] = amount.to_json(),
        OfferKind::Percentage(percent) => out["percentage"] = json!(percent),
        OfferKind::FreeItem => {}
    }
    if let Some(discount) = discount {
        out["discount_amount"] = discount.to_json();
    }
    out
}

/// `POST /api/2.0/lookup`.
pub(super) fn lookup(state: &State, payload: &Value, now: DateTime<Utc>) -> Reply {
    let request: LookupRequest = match parse(payload) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let user = match find_user(state, &request) {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let basket = match request.transaction.as_ref().map(basket).transpose() {
        Ok(basket) => basket,
        Err(reason) => return pos_error(codes::VALIDATION, format!("transaction: {reason}")),
    };
    let offers: Vec<Value> = state
        .offers
        .iter()
        .filter(|o| o.user_id == user.id)
        .filter_map(|offer| match &basket {
            // Without a basket: the whole wallet, expired and redeemed included.
            None => Some(offer_json(offer, now, None)),
            Some(basket) => {
                // With one: only what passes catalog and store restrictions, priced.
                let usable = match &offer.state {
                    OfferState::Available => !offer.expired(now),
                    OfferState::Locked { transaction_id } => {
                        *transaction_id == basket.transaction_id
                    }
                    OfferState::Redeemed { .. } => false,
                };
                usable.then(|| offer_json(offer, now, Some(price(offer.kind, basket).0)))
            }
        })
        .collect();
    let mut member = json!({
        "id": user.id,
        "external_id": user.external_id,
        "available_points": user.points,
        "tier": tier(user.points),
    });
    if state.omit_points
        && let Some(member) = member.as_object_mut()
    {
        member.remove("available_points");
    }
    pos_ok(Some(json!({
        "user": member,
        "offers": offers,
    })))
}

/// Finds the one member matching every identifier given ("search criteria used must be
/// unique per user account"; several matches are an error).
fn find_user<'a>(state: &'a State, request: &LookupRequest) -> Result<&'a User, Reply> {
    if request.user_id.is_none()
        && request.email.is_none()
        && request.phone.is_none()
        && request.external_customer_id.is_none()
    {
        return Err(pos_error(
            codes::VALIDATION,
            "request_payload: one of user_id, email, phone, external_customer_id is required",
        ));
    }
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let matches: Vec<&User> = state
        .users
        .iter()
        .filter(|u| request.user_id.as_ref().is_none_or(|id| *id == u.id))
        .filter(|u| {
            request
                .email
                .as_ref()
                .is_none_or(|e| e.eq_ignore_ascii_case(&u.email))
        })
        .filter(|u| {
            request
                .external_customer_id
                .as_ref()
                .is_none_or(|e| u.external_id.as_ref() == Some(e))
        })
        .filter(|u| {
            request.phone.as_ref().is_none_or(|p| {
                u.phone_numbers
                    .iter()
                    .any(|n| digits(&n.phone_number) == *p)
            })
        })
        .collect();
    match matches.as_slice() {
        [user] => Ok(user),
        [] => Err(pos_error(codes::USER_NOT_FOUND, "no member matches")),
        _ => Err(pos_error(
            codes::VALIDATION,
            "several members match; give another identifier",
        )),
    }
}

/// `POST /api/2.0/lock` (`redeem == false`) and `POST /api/2.0/redeem`: the answer's
/// payload is the Discount object, which is also remembered for `send_transaction`.
pub(super) fn apply(state: &mut State, payload: &Value, now: DateTime<Utc>, redeem: bool) -> Reply {
    let request: OfferRequest = match parse(payload) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let basket = match basket(&request.transaction) {
        Ok(basket) => basket,
        Err(reason) => return pos_error(codes::VALIDATION, format!("transaction: {reason}")),
    };
    match request.offer_lookup_type.as_str() {
        "UserOfferId" => {}
        // Valid, but the sandbox issues no TTL codes, so none can match.
        "TTLCode" => return pos_error(codes::OFFER_NOT_FOUND, "no offer has this TTL code"),
        _ => {
            return pos_error(
                codes::VALIDATION,
                "request_payload: offer_lookup_type must be TTLCode or UserOfferId",
            );
        }
    }
    let user_offer_id = request.offer_lookup_code;
    let txn = basket.transaction_id.clone();
    let Some(offer) = state.offer(&user_offer_id) else {
        return pos_error(codes::OFFER_NOT_FOUND, "no such offer");
    };
    match &offer.state {
        OfferState::Redeemed { .. } => {
            return pos_error(codes::OFFER_REDEEMED, "offer already redeemed");
        }
        OfferState::Locked { transaction_id } if *transaction_id != txn => {
            return pos_error(
                codes::OFFER_LOCKED,
                "offer is locked by another transaction",
            );
        }
        OfferState::Available if offer.expired(now) => {
            return pos_error(codes::OFFER_EXPIRED, "offer has expired");
        }
        OfferState::Available | OfferState::Locked { .. } => {}
    }
    if let Some(minimum) = offer.min_subtotal
        && basket.subtotal < minimum
    {
        return pos_error(
            codes::OFFER_NOT_APPLICABLE,
            format!("needs a subtotal of at least {minimum}"),
        );
    }
    let (amount, lines) = price(offer.kind, &basket);
    if amount == Amount(0) {
        return pos_error(
            codes::OFFER_NOT_APPLICABLE,
            "offer gives no discount on this transaction",
        );
    }
    let key = (user_offer_id.clone(), txn.clone());
    // A re-lock keeps its place in the stack; a new discount goes after the others.
    let stack_order = state
        .discounts
        .get(&key)
        .and_then(|d| d["stack_order"].as_u64())
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| {
            let others = state
                .offers
                .iter()
                .filter(|o| o.user_offer_id != user_offer_id)
                .filter(|o| o.transaction_id() == Some(txn.as_str()))
                .count();
            u32::try_from(others).unwrap_or(u32::MAX).saturating_add(1)
        });
    let discount = Discount {
        reference_id: &offer.user_offer_id,
        reference_id_type: "UserOfferId",
        pos_discount_id: offer.offer_id,
        status: if redeem { "REDEEMED" } else { "LOCKED" },
        display_name: offer.name,
        discounted_line_ids: lines,
        discount_source: "SessionM",
        amount,
        stack_order,
        applied_time: millis(now),
        user_id: &offer.user_id,
    };
    let discount = match serde_json::to_value(&discount) {
        Ok(discount) => discount,
        Err(e) => return pos_error("internal_server_error", e.to_string()),
    };
    if let Some(offer) = state.offer_mut(&user_offer_id) {
        offer.state = if redeem {
            OfferState::Redeemed {
                transaction_id: txn,
            }
        } else {
            OfferState::Locked {
                transaction_id: txn,
            }
        };
    }
    state.discounts.insert(key, discount.clone());
    pos_ok(Some(discount))
}

/// `POST /api/2.0/unlock`: an available offer unlocks harmlessly, so a repeat is fine.
pub(super) fn unlock(state: &mut State, payload: &Value) -> Reply {
    release(state, payload, |offer| match &offer.state {
        OfferState::Redeemed { .. } => {
            Err(pos_error(codes::OFFER_REDEEMED, "offer already redeemed"))
        }
        OfferState::Locked { .. } | OfferState::Available => Ok(OfferState::Available),
    })
}

/// `POST /api/2.0/reinstate`: gives a redeemed offer back.
pub(super) fn reinstate(state: &mut State, payload: &Value) -> Reply {
    release(state, payload, |offer| match &offer.state {
        OfferState::Locked { .. } => Err(pos_error(
            codes::OFFER_NOT_REDEEMED,
            "offer is locked, not redeemed; unlock it instead",
        )),
        OfferState::Redeemed { .. } | OfferState::Available => Ok(OfferState::Available),
    })
}

fn release(
    state: &mut State,
    payload: &Value,
    next: impl FnOnce(&UserOffer) -> Result<OfferState, Reply>,
) -> Reply {
    let request: ReleaseRequest = match parse(payload) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    if request.employee_id.is_empty() {
        return pos_error(codes::VALIDATION, "request_payload: employee_id is empty");
    }
    let Some(offer) = state.offer_mut(&request.user_offer_id) else {
        return pos_error(codes::OFFER_NOT_FOUND, "no such offer");
    };
    match next(offer) {
        Ok(next) => {
            offer.state = next;
            pos_ok(None)
        }
        Err(refusal) => refusal,
    }
}
