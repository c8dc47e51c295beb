//! The simulator's own wire types, written from `docs/upstreams/sessionm.md` and never from
//! the client in cbtl-bff, so that a change in the client cannot quietly change what the
//! simulator accepts.
//!
//! Requests are read leniently (unknown fields are ignored, as public integrations send
//! extras such as `custom_data` and `guest_count`); amounts are decimal numbers in currency
//! units, parsed exactly into cents.

use crate::money::{Currency, Money};
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};
use serde_json::{Number, Value, json};
use std::fmt;

/// Status and JSON body of an answer, before it becomes an HTTP response (so it can be
/// cached under a `request_id` or a `Message-ID` and replayed unchanged).
pub(super) type Reply = (StatusCode, Value);

// ---------------------------------------------------------------------------------------
// Money and quantities
// ---------------------------------------------------------------------------------------

/// An amount of the program's currency (USD) in cents. On the wire it is a decimal number
/// of currency units (`12.25`); floats are only the transport, never the arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Amount(pub(super) i64);

impl Amount {
    /// Reads a JSON number exactly: `12.25` is 1225 cents; more than two decimals is an
    /// error, never a rounding.
    pub(super) fn from_number(n: &Number) -> Result<Self, String> {
        let text = if let Some(i) = n.as_i64() {
            i.to_string()
        } else if let Some(u) = n.as_u64() {
            u.to_string()
        } else {
            // Rust's `Display` for f64 prints the shortest decimal that reads back as the
            // same double, without an exponent, so `12.25` prints as sent and `12.255`
            // (three decimals) keeps its third digit and is refused below.
            match n.as_f64() {
                Some(f) if f.is_finite() => format!("{f}"),
                _ => return Err(format!("amount {n} is not a finite number")),
            }
        };
        Money::from_decimal(&text, Currency::usd())
            .map(|m| Amount(m.minor))
            .ok_or_else(|| format!("amount {text} is not a decimal with at most 2 decimals"))
    }

    /// Reads an amount out of a JSON value (a discount object is kept as raw JSON).
    pub(super) fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Number(n) => Self::from_number(n),
            other => Err(format!("amount {other} is not a number")),
        }
    }

    pub(super) fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub(super) fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub(super) fn checked_mul(self, factor: u32) -> Option<Amount> {
        self.0.checked_mul(i64::from(factor)).map(Amount)
    }

    /// `percent`% of this amount, rounded half away from zero to the cent.
    pub(super) fn percent(self, percent: u32) -> Option<Amount> {
        Money::new(self.0, Currency::usd())
            .share_bps(i64::from(percent) * 100)
            .map(|m| Amount(m.minor))
    }

    /// Whole currency units, rounded down (points are earned per whole unit paid).
    pub(super) fn whole_units(self) -> i64 {
        self.0.div_euclid(100)
    }

    /// The JSON number for this amount. `cents / 100.0` is the double nearest the exact
    /// decimal (IEEE division rounds correctly), which serde prints as that decimal.
    pub(super) fn to_json(self) -> Value {
        Number::from_f64(self.0 as f64 / 100.0).map_or(Value::Null, Value::Number)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Money::new(self.0, Currency::usd()).to_decimal())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = Number::deserialize(d)?;
        Amount::from_number(&n).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// A whole, non-negative item quantity. Public integrations send it as a double (`1.0`);
/// a fraction would make `unit_price × quantity` inexact, so it is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Quantity(pub(super) u32);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = Number::deserialize(d)?;
        let whole = match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u32::try_from(u).ok(),
            (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
                // In range and whole, checked just above.
                Some(f as u32)
            }
            _ => None,
        };
        whole
            .map(Quantity)
            .ok_or_else(|| serde::de::Error::custom(format!("quantity {n} is not a whole number")))
    }
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// RFC 3339 in UTC with milliseconds, as public integrations write `applied_time`.
pub(super) fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 in UTC to the second, as the contract writes `expiration_date`, `occurred_at`.
pub(super) fn seconds(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 1123, as the Message IDs page shows `Message-Date: Mon, 28 Sep 2015 03:04:15 GMT`.
pub(super) fn rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

// ---------------------------------------------------------------------------------------
// Core API
// ---------------------------------------------------------------------------------------

/// `POST /priv/v1/apps/{api_key}/users` body.
#[derive(Deserialize)]
pub(super) struct CreateUserRequest {
    pub(super) user: NewUser,
}

/// The standard attributes the simulator keeps; the rest of a profile is ignored.
#[derive(Deserialize)]
pub(super) struct NewUser {
    #[serde(default)]
    pub(super) email: Option<String>,
    #[serde(default)]
    pub(super) first_name: Option<String>,
    #[serde(default)]
    pub(super) last_name: Option<String>,
    #[serde(default)]
    pub(super) external_id: Option<String>,
    #[serde(default)]
    pub(super) opted_in: Option<bool>,
    #[serde(default)]
    pub(super) phone_numbers: Vec<PhoneNumber>,
}

/// One entry of a profile's `phone_numbers`.
#[derive(Clone, Deserialize, Serialize)]
pub(super) struct PhoneNumber {
    pub(super) phone_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) phone_type: Option<String>,
}

/// A member as the Core API answers it.
#[derive(Serialize)]
pub(super) struct UserOut<'a> {
    pub(super) id: &'a str,
    pub(super) external_id: Option<&'a str>,
    pub(super) email: &'a str,
    pub(super) first_name: Option<&'a str>,
    pub(super) last_name: Option<&'a str>,
    pub(super) opted_in: bool,
    pub(super) phone_numbers: &'a [PhoneNumber],
    pub(super) available_points: i64,
    pub(super) tier: &'a str,
    pub(super) created_at: String,
}

/// One entry of `END_USER_MEMBER_STATEMENT`.
#[derive(Clone, Serialize)]
pub(super) struct StatementEntry {
    pub(super) event_id: String,
    /// `transaction` or `return`.
    pub(super) event_type: &'static str,
    pub(super) transaction_id: String,
    /// Signed: a return's entry is negative.
    pub(super) points: i64,
    pub(super) occurred_at: String,
}

/// `200 {"status": "ok", …fields}`.
pub(super) fn core_ok(fields: Value) -> Reply {
    let mut body = json!({"status": "ok"});
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    (StatusCode::OK, body)
}

/// `{"status": "error", "errors": {"code": …, "message"?: …}}` with the given HTTP status
/// ([Generic Statuses and Errors]: 200 for a refusal, 401, 404).
pub(super) fn core_error(status: StatusCode, code: &str, message: Option<&str>) -> Reply {
    let mut errors = json!({"code": code});
    if let Some(message) = message {
        errors["message"] = json!(message);
    }
    (status, json!({"status": "error", "errors": errors}))
}

// ---------------------------------------------------------------------------------------
// POS API
// ---------------------------------------------------------------------------------------

/// `/api/2.0/lookup` payload: one or more identifiers, optionally a basket.
#[derive(Deserialize)]
pub(super) struct LookupRequest {
    #[serde(default)]
    pub(super) user_id: Option<String>,
    #[serde(default)]
    pub(super) email: Option<String>,
    #[serde(default)]
    pub(super) phone: Option<String>,
    #[serde(default)]
    pub(super) external_customer_id: Option<String>,
    #[serde(default)]
    pub(super) transaction: Option<Transaction>,
}

/// `/api/2.0/lock` and `/api/2.0/redeem` payload.
#[derive(Deserialize)]
pub(super) struct OfferRequest {
    pub(super) offer_lookup_code: String,
    pub(super) offer_lookup_type: String,
    pub(super) transaction: Transaction,
}

/// `/api/2.0/unlock` and `/api/2.0/reinstate` payload: exactly these two, both required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseRequest {
    pub(super) user_offer_id: String,
    pub(super) employee_id: String,
}

/// The Transaction object: the basket for lookup/lock/redeem, the sale for
/// `send_transaction`. Fields the simulator does not check are accepted and ignored.
#[derive(Deserialize)]
pub(super) struct Transaction {
    pub(super) transaction_id: String,
    pub(super) subtotal: Amount,
    #[serde(default)]
    pub(super) tax_total: Amount,
    #[serde(default)]
    pub(super) items: Vec<Item>,
    #[serde(default)]
    pub(super) payments: Vec<Payment>,
    /// Kept raw: each must be JSON-equal to the Discount object a lock returned.
    #[serde(default)]
    pub(super) discounts: Vec<Value>,
}

/// One line of a Transaction.
#[derive(Deserialize)]
pub(super) struct Item {
    pub(super) line_id: String,
    pub(super) quantity: Quantity,
    pub(super) unit_price: Amount,
    pub(super) subtotal: Amount,
}

/// One payment of a Transaction; it carries the member.
#[derive(Deserialize)]
pub(super) struct Payment {
    pub(super) amount: Amount,
    #[serde(default)]
    pub(super) user_id: Option<String>,
    /// `SessionM_ID` or `External_ID`.
    #[serde(default)]
    pub(super) user_id_type: Option<String>,
}

/// The Discount object, the payload of lock and redeem.
#[derive(Serialize)]
pub(super) struct Discount<'a> {
    pub(super) reference_id: &'a str,
    pub(super) reference_id_type: &'static str,
    pub(super) pos_discount_id: &'a str,
    pub(super) status: &'static str,
    pub(super) display_name: &'a str,
    pub(super) discounted_line_ids: Vec<String>,
    pub(super) discount_source: &'static str,
    pub(super) amount: Amount,
    pub(super) stack_order: u32,
    pub(super) applied_time: String,
    pub(super) user_id: &'a str,
}

/// POS refusal codes. The spelling of "pending processing" is upper case on purpose: the
/// real spelling is unconfirmed and the client matches it loosely, so the simulator
/// exercises that.
pub(super) mod codes {
    pub(in super::super) const VALIDATION: &str = "validation";
    pub(in super::super) const ACCESS_DENIED: &str = "access_denied";
    pub(in super::super) const STORE_NOT_FOUND: &str = "store_not_found";
    pub(in super::super) const USER_NOT_FOUND: &str = "user_not_found";
    pub(in super::super) const PENDING: &str = "PENDING_PROCESSING";
    pub(in super::super) const OFFER_NOT_FOUND: &str = "offer_not_found";
    pub(in super::super) const OFFER_LOCKED: &str = "offer_locked";
    pub(in super::super) const OFFER_REDEEMED: &str = "offer_redeemed";
    pub(in super::super) const OFFER_EXPIRED: &str = "offer_expired";
    pub(in super::super) const OFFER_NOT_APPLICABLE: &str = "offer_not_applicable";
    pub(in super::super) const OFFER_NOT_REDEEMED: &str = "offer_not_redeemed";
}

/// `{"status": "OK", "payload"?: …}`.
pub(super) fn pos_ok(payload: Option<Value>) -> Reply {
    let mut body = json!({"status": "OK"});
    if let Some(payload) = payload {
        body["payload"] = payload;
    }
    (StatusCode::OK, body)
}

/// A POS refusal: HTTP 200 with `{"status": "error", "errors": {"code", "message"}}`.
pub(super) fn pos_error(code: &str, message: impl Into<String>) -> Reply {
    (
        StatusCode::OK,
        json!({"status": "error", "errors": {"code": code, "message": message.into()}}),
    )
}

/// Reads a POS payload; a serde error names the missing or malformed field.
pub(super) fn parse<T: DeserializeOwned>(payload: &Value) -> Result<T, Reply> {
    serde_json::from_value(payload.clone())
        .map_err(|e| pos_error(codes::VALIDATION, format!("request_payload: {e}")))
}

/// JSON equality where numbers compare by value, so `2` and `2.0` are the same amount.
pub(super) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(raw: &str) -> Result<Amount, String> {
        let n: Number = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        Amount::from_number(&n)
    }

    #[test]
    fn decimal_amounts_are_read_exactly() {
        assert_eq!(amount("12.25"), Ok(Amount(1225)));
        assert_eq!(amount("57.0"), Ok(Amount(5700)));
        assert_eq!(amount("57"), Ok(Amount(5700)));
        assert_eq!(amount("0.1"), Ok(Amount(10)));
        assert_eq!(amount("0.9"), Ok(Amount(90)));
        assert_eq!(amount("11.15"), Ok(Amount(1115)));
        assert_eq!(amount("-2.45"), Ok(Amount(-245)));
        assert!(amount("12.255").is_err());
        assert!(amount("0.30000000000000004").is_err());
        assert!(amount("1e300").is_err());
    }

    #[test]
    fn amounts_are_written_as_their_decimal() {
        for (cents, text) in [
            (1225, "12.25"),
            (200, "2.0"),
            (245, "2.45"),
            (1115, "11.15"),
        ] {
            assert_eq!(Amount(cents).to_json().to_string(), text);
        }
    }

    #[test]
    fn quantities_are_whole() {
        let q = |raw: &str| serde_json::from_str::<Quantity>(raw).ok();
        assert_eq!(q("2"), Some(Quantity(2)));
        assert_eq!(q("1.0"), Some(Quantity(1)));
        assert_eq!(q("1.5"), None);
        assert_eq!(q("-1"), None);
    }

    #[test]
    fn json_equality_compares_numbers_by_value() {
        assert!(json_equal(
            &json!({"a": [2, "x"]}),
            &json!({"a": [2.0, "x"]})
        ));
        assert!(!json_equal(&json!({"a": 2.45}), &json!({"a": 2.44})));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }
}
