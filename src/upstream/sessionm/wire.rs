//! SessionM's wire shapes and every conversion to and from them. Each function here is
//! the one place a detail that public material does not settle is decided (see the
//! "Unconfirmed" table of `docs/upstreams/sessionm.md`), so onboarding with SessionM
//! changes this file and nothing else.

use super::{
    Discount, DiscountKind, Offer, OfferDiscount, OfferStatus, SendTransaction, SessionmUser,
    Transaction,
};
use crate::domain::{Currency, Money, MoneyError};
use crate::upstream::Rejection;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// The POS general request container
/// ([General DTO Definitions](https://docs.sessionm.com/developer/APIs/POS/general_dto_definitions.htm)).
#[derive(Serialize)]
pub(super) struct PosRequest<'a, P> {
    pub store_id: &'a str,
    pub client_id: &'a str,
    pub request_id: &'a str,
    pub culture: &'static str,
    pub request_payload: &'a P,
}

/// The culture asked for messages and display names.
pub(super) const CULTURE: &str = "en-US";

/// A decimal amount in currency units, as SessionM's objects carry money: `1225` USD
/// minor units is `12.25`. Exact for every amount below 2^53 minor units.
pub(super) fn decimal(money: &Money) -> Result<Number, MoneyError> {
    // A decimal with at most the currency's fraction digits has one shortest f64
    // representation, which serde_json prints back exactly ("12.25", "2.0").
    let scale = 10_f64.powi(i32::try_from(money.currency.exponent()).unwrap_or(0));
    if money.minor.unsigned_abs() > (1_u64 << 53) {
        return Err(MoneyError::Overflow);
    }
    #[allow(clippy::cast_precision_loss)] // bounded above
    Number::from_f64(money.minor as f64 / scale).ok_or(MoneyError::Overflow)
}

/// Reads a decimal amount exactly; more fraction digits than the currency has is an
/// error, never a rounding.
pub(super) fn money(value: &Value, currency: &Currency) -> Result<Money, String> {
    let Value::Number(n) = value else {
        return Err(format!("amount {value} is not a number"));
    };
    let text = n.to_string();
    // Trailing zeros of a fraction say nothing: `500.0` yen and `12.250` dollars are
    // exact. Other extra digits are refused.
    let text = match text.split_once('.') {
        Some((whole, fraction)) if !text.contains(['e', 'E']) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{fraction}")
            }
        }
        _ => text,
    };
    Money::parse_decimal(&text, currency.clone()).map_err(|e| e.to_string())
}

/// A points figure: SessionM's objects carry it as a JSON number, possibly with a
/// fraction of zero (`120.0`).
pub(super) fn points(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| format!("points {n} are not a whole number")),
        Value::Null => Err("points are missing".into()),
        other => Err(format!("points {other} are not a number")),
    }
}

/// Timestamps as RFC 3339 with milliseconds, as public integrations send them.
pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// SessionM's lookup takes phone numbers as "numbers only".
pub(super) fn phone(e164: &str) -> String {
    e164.chars().filter(char::is_ascii_digit).collect()
}

/// "Pending processing": a repeat of a `request_id` whose first request is still
/// running. The code's exact spelling is not published, so it is matched loosely.
pub(super) fn is_pending(code: &str) -> bool {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .eq_ignore_ascii_case("pendingprocessing")
}

/// Reads an error body: `{"status": "error", "errors": {"code", "message", "field"?}}`
/// (Core, per "Generic Statuses and Errors"; the POS container's `errors` is assumed the
/// same), tolerating an `errors` list or a bare `error`. Codes are lower-cased, spaces and
/// hyphens made underscores: SessionM's pages spell them `USER_NOT_FOUND` and
/// `requires_registered_user`.
pub(crate) fn rejection(body: &Value) -> Rejection {
    let errors = match &body["errors"] {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        Value::Null => body.get("error").cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let text = |key: &str| errors.get(key).and_then(Value::as_str).map(str::to_owned);
    let message = match &errors {
        Value::String(s) => s.clone(),
        _ => text("message").unwrap_or_default(),
    };
    // Validation errors name the field either as `field` or as a key holding messages.
    let field = text("field").or_else(|| {
        errors.as_object().and_then(|map| {
            map.iter()
                .find(|(k, v)| {
                    !matches!(k.as_str(), "code" | "message" | "field")
                        && (v.is_array() || v.is_string())
                })
                .map(|(k, _)| k.clone())
        })
    });
    let code = text("code")
        .unwrap_or_else(|| "unknown".to_owned())
        .trim()
        .to_ascii_lowercase()
        .replace([' ', '-'], "_");
    Rejection {
        code,
        message,
        field,
        detail: errors,
        // A pending request is waited out by the POS call itself.
        in_progress: false,
    }
}

/// What a container says: `"status": "ok"` (Core) or `"OK"` (POS) is a success; a
/// status that is not, with `errors` (or a bare `error`) to say why, is a refusal; any
/// other body is unreadable, and an unreadable answer is never taken for a refusal: the
/// upstream may have acted.
pub(super) enum Outcome {
    Ok,
    Refused,
    Unreadable,
}

pub(super) fn outcome(body: &Value) -> Outcome {
    match body["status"].as_str() {
        Some(s) if s.eq_ignore_ascii_case("ok") => Outcome::Ok,
        Some(_) if !body["errors"].is_null() || !body["error"].is_null() => Outcome::Refused,
        _ => Outcome::Unreadable,
    }
}

// ----- Core: members -------------------------------------------------------------------

#[derive(Serialize)]
pub(super) struct NewUserBody<'a> {
    pub user: NewUserFields<'a>,
}

#[derive(Serialize)]
pub(super) struct NewUserFields<'a> {
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub external_id: &'a str,
    pub opted_in: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<PhoneNumber>,
}

#[derive(Serialize)]
pub(super) struct PhoneNumber {
    pub phone_number: String,
    pub phone_type: &'static str,
}

/// A member from `{"status": "ok", "user": {…}}`. A missing `available_points` is
/// `None` (unknown, never 0); one that is there must be a whole number.
pub(super) fn member(body: &Value) -> Result<SessionmUser, String> {
    let user = &body["user"];
    let text = |key: &str| user[key].as_str().map(str::to_owned);
    Ok(SessionmUser {
        id: text("id").ok_or("member without an id")?,
        external_id: text("external_id"),
        email: text("email"),
        // Points appear on the member only when the tenant enables them
        // (`enable_mpoints_info_in_customers_api`); linking needs only the id.
        available_points: match &user["available_points"] {
            Value::Null => None,
            value => Some(
                points(value)
                    .map_err(|e| format!("member {}: available_points: {e}", user["id"]))?,
            ),
        },
        tier: text("tier"),
    })
}

/// One entry of the member statement
/// (`/external/users/{external_id}/timelines/END_USER_MEMBER_STATEMENT`; entry shape ours).
#[derive(Deserialize)]
pub(super) struct StatementEntry {
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// Read only for the transaction asked about: an odd entry of another one does not
    /// stop this one's points being read.
    #[serde(default)]
    pub points: Value,
}

/// The points a transaction earned from the member statement: the sum of its entries
/// (a return's entry is negative), or `None` while no entry has appeared.
pub(super) fn statement_points(body: &Value, transaction_id: &str) -> Result<Option<i64>, String> {
    let entries: Vec<StatementEntry> =
        serde_json::from_value(body["statement"].clone()).map_err(|e| format!("statement: {e}"))?;
    let mut total: Option<i64> = None;
    for entry in entries
        .iter()
        .filter(|e| e.transaction_id.as_deref() == Some(transaction_id))
    {
        total = Some(total.unwrap_or(0) + points(&entry.points)?);
    }
    Ok(total)
}

// ----- POS: offers -------------------------------------------------------------------

/// One offer of a lookup. An unknown status or discount type makes this one offer
/// unusable (its `status`/`kind` say what was seen), never the wallet; a field that is
/// required to show it at all (its id) makes it an error of this offer only, which the
/// caller reports and skips.
pub(super) fn offer(wire: &Value, currency: Option<&Currency>) -> Result<Offer, String> {
    let text = |key: &str| wire[key].as_str().map(str::to_owned);
    let user_offer_id = text("user_offer_id").ok_or("offer without a user_offer_id")?;
    let amount_of = |key: &str| -> Result<Option<Money>, String> {
        match (&wire[key], currency) {
            (Value::Null, _) => Ok(None),
            (value, Some(c)) => money(value, c).map(Some),
            (_, None) => Err(format!("{key} without a currency")),
        }
    };
    let status = match wire["status"].as_str().unwrap_or_default() {
        "AVAILABLE" => OfferStatus::Available,
        "LOCKED" => OfferStatus::Locked,
        "REDEEMED" => OfferStatus::Redeemed,
        "EXPIRED" => OfferStatus::Expired,
        other => OfferStatus::Unrecognised(other.to_owned()),
    };
    let kind = match wire["discount_type"].as_str().unwrap_or_default() {
        "FREE_ITEM" => DiscountKind::FreeItem,
        "FIXED_AMOUNT" => DiscountKind::FixedAmount,
        "PERCENTAGE" => DiscountKind::Percentage,
        other => DiscountKind::Unrecognised(other.to_owned()),
    };
    Ok(Offer {
        offer_id: text("offer_id").unwrap_or_default(),
        name: text("name").unwrap_or_else(|| "Reward".to_owned()),
        description: text("description").unwrap_or_default(),
        discount: OfferDiscount {
            kind,
            amount: amount_of("amount")?,
            percentage: wire["percentage"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok()),
        },
        expires_at: text("expiration_date").and_then(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        }),
        status,
        discount_amount: amount_of("discount_amount")?,
        user_offer_id,
    })
}

/// The lock/redeem payload, exactly the documented fields.
#[derive(Serialize)]
pub(super) struct OfferOnTransaction<'a> {
    pub offer_lookup_code: &'a str,
    pub offer_lookup_type: &'static str,
    pub transaction: Value,
}

/// The unlock/reinstate payload, exactly the documented fields.
#[derive(Serialize)]
pub(super) struct OfferRelease<'a> {
    pub user_offer_id: &'a str,
    pub employee_id: &'static str,
}

/// The Discount object a lock or redeem answers, kept whole: it goes back unchanged in
/// the transaction. We read its `amount` (required) and `display_name`.
pub(super) fn discount(
    user_offer_id: &str,
    payload: Value,
    currency: &Currency,
) -> Result<Discount, String> {
    if !payload.is_object() {
        return Err("the discount is not an object".into());
    }
    let amount = money(&payload["amount"], currency).map_err(|e| format!("discount: {e}"))?;
    if amount.minor < 0 {
        return Err(format!("discount of {amount}"));
    }
    Ok(Discount {
        user_offer_id: payload["reference_id"]
            .as_str()
            .unwrap_or(user_offer_id)
            .to_owned(),
        name: payload["display_name"].as_str().map(str::to_owned),
        amount,
        object: payload,
    })
}

// ----- POS: transactions ---------------------------------------------------------------

/// The Transaction object: the basket (`lookup`, `lock`, `redeem`: open, no payments) or
/// the sale (`send_transaction`: closed, with the payment that names the member and the
/// discounts as the lock returned them).
pub(super) fn transaction(
    txn: &Transaction,
    sale: Option<&SendTransaction>,
) -> Result<Value, MoneyError> {
    let currency = txn.currency();
    let mut items = Vec::with_capacity(txn.lines.len());
    for line in &txn.lines {
        if &line.unit_price.currency != currency {
            return Err(MoneyError::CurrencyMismatch(
                currency.clone(),
                line.unit_price.currency.clone(),
            ));
        }
        let subtotal = line.unit_price.checked_mul(line.quantity.into())?;
        items.push(serde_json::json!({
            // Okya's line id, kept in the order's snapshot: stable for the order's life.
            "line_id": line.line_id,
            // SessionM matches items to its catalogue by id; public integrations send no
            // name.
            "item_id": line.product_id,
            "quantity": line.quantity,
            "unit_price": decimal(&line.unit_price)?,
            "subtotal": decimal(&subtotal)?,
            "tax_included": 0,
        }));
    }
    let mut body = serde_json::json!({
        "transaction_id": txn.transaction_id,
        "channel": "MOBILE",
        "pos_employee_id": super::EMPLOYEE_ID,
        "is_closed": sale.is_some(),
        "is_voided": false,
        "subtotal": decimal(&txn.subtotal)?,
        "items": items,
    });
    if let Some(sale) = sale {
        for amount in [&sale.tax, &sale.paid] {
            if &amount.currency != currency {
                return Err(MoneyError::CurrencyMismatch(
                    currency.clone(),
                    amount.currency.clone(),
                ));
            }
        }
        body["tax_total"] = decimal(&sale.tax)?.into();
        body["open_time"] = timestamp(sale.opened_at).into();
        body["modified_time"] = timestamp(sale.modified_at).into();
        body["payments"] = serde_json::json!([{
            "payment_id": sale.payment_id,
            "type": if sale.paid.minor == 0 { "Reward" } else { "Credit" },
            "amount": decimal(&sale.paid)?,
            "payment_time": timestamp(sale.opened_at),
            "user_id": sale.user_id,
            "user_id_type": "SessionM_ID",
        }]);
        body["discounts"] = Value::Array(sale.discounts.iter().map(|d| d.object.clone()).collect());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::usd())
    }

    #[test]
    fn amounts_go_out_as_decimals_in_currency_units_and_come_back_exactly() {
        for (minor, text) in [(1225, "12.25"), (200, "2.0"), (5, "0.05"), (0, "0.0")] {
            let n = decimal(&usd(minor)).expect("decimal");
            assert_eq!(n.to_string(), text);
            assert_eq!(
                money(&Value::Number(n), &Currency::usd()).expect("money"),
                usd(minor)
            );
        }
        assert!(money(&serde_json::json!(0.125), &Currency::usd()).is_err());
        // Trailing zeros are exact, in any currency.
        let yen = Currency::parse("JPY").expect("JPY");
        assert_eq!(
            decimal(&Money::new(500, yen.clone()))
                .expect("yen")
                .to_string(),
            "500.0"
        );
        assert_eq!(
            money(&serde_json::json!(500.0), &yen).expect("500.0 yen"),
            Money::new(500, yen.clone())
        );
        assert!(money(&serde_json::json!(500.5), &yen).is_err());
        assert!(money(&serde_json::json!("2.00"), &Currency::usd()).is_err());
        assert_eq!(
            money(&serde_json::json!(12), &Currency::usd()).expect("whole"),
            usd(1200)
        );
    }

    #[test]
    fn pending_processing_is_recognised_however_it_is_spelled() {
        for code in [
            "pending processing",
            "PENDING_PROCESSING",
            "pending-processing",
            "PendingProcessing",
        ] {
            assert!(is_pending(code), "{code}");
        }
        assert!(!is_pending("processing"));
    }

    #[test]
    fn points_are_whole_numbers_and_never_default_to_zero() {
        assert_eq!(points(&serde_json::json!(120)), Ok(120));
        assert_eq!(points(&serde_json::json!(120.0)), Ok(120));
        assert!(points(&serde_json::json!(1.5)).is_err());
        assert!(points(&Value::Null).is_err());
        assert_eq!(
            member(&serde_json::json!({"user": {"id": "u1"}}))
                .expect("a member without points")
                .available_points,
            None
        );
        assert!(
            member(&serde_json::json!({"user": {"id": "u1", "available_points": 1.5}})).is_err()
        );
    }

    #[test]
    fn an_unknown_status_or_discount_type_marks_one_offer() {
        let offer = offer(
            &serde_json::json!({"user_offer_id": "uo_1", "status": "ISSUED",
                                "discount_type": "BOGO", "name": "Two for one"}),
            None,
        )
        .expect("offer");
        assert_eq!(offer.status, OfferStatus::Unrecognised("ISSUED".into()));
        assert_eq!(
            offer.discount.kind,
            DiscountKind::Unrecognised("BOGO".into())
        );
        assert!(offer.unusable_reason().is_some());
    }

    #[test]
    fn error_codes_are_normalised() {
        let r = rejection(&serde_json::json!({"status": "error",
            "errors": {"code": "USER_NOT_FOUND", "message": "no"}}));
        assert_eq!(r.code, "user_not_found");
        let r = rejection(&serde_json::json!({"status": "error",
            "errors": {"code": "pending processing"}}));
        assert_eq!(r.code, "pending_processing");
    }
}
