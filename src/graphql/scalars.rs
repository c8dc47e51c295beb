//! Scalars and value types shared by every domain.

use crate::domain::Money;
use async_graphql::{InputValueError, InputValueResult, Object, Scalar, ScalarType, Value};

/// An exact decimal amount as a string, such as `"4.50"`: never a float.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal(pub String);

#[Scalar(name = "Decimal")]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s)
                if !s.is_empty()
                    && s.len() <= 32
                    && s.trim_start_matches('-').split('.').count() <= 2
                    && s.trim_start_matches('-')
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.') =>
            {
                Ok(Decimal(s))
            }
            Value::String(_) => Err(InputValueError::custom(
                "expected a decimal string such as \"4.50\"",
            )),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

/// An amount of money, computed in integer minor units and shown as a decimal string.
pub struct MoneyObject(pub Money);

#[Object(name = "Money")]
impl MoneyObject {
    /// The amount in the currency's major unit, e.g. `"4.50"`.
    async fn amount(&self) -> Decimal {
        Decimal(self.0.to_decimal_string())
    }

    /// ISO 4217 code, e.g. `USD`.
    async fn currency_code(&self) -> &str {
        self.0.currency.code()
    }
}

impl From<Money> for MoneyObject {
    fn from(value: Money) -> Self {
        Self(value)
    }
}
