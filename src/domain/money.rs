//! Money in integer minor units. Floats never touch an amount.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO 4217 currency code, upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, MoneyError> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(raw.to_ascii_uppercase()))
        } else {
            Err(MoneyError::BadCurrency(raw.chars().take(8).collect()))
        }
    }

    pub fn usd() -> Self {
        Self("USD".to_owned())
    }

    pub fn code(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point, per ISO 4217 (the few that differ from two).
    pub fn exponent(&self) -> u32 {
        // Matched as three bytes (a code is always three letters): a jump on each letter
        // rather than a comparison with every listed code in turn.
        let Ok(code) = <[u8; 3]>::try_from(self.0.as_bytes()) else {
            return 2;
        };
        match &code {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?}")]
    BadCurrency(String),
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount overflow")]
    Overflow,
    #[error("not a decimal amount: {0:?}")]
    BadDecimal(String),
}

/// An amount of money: integer minor units (cents) and a currency.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency.clone()))
    }

    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency.clone()))
    }

    pub fn checked_mul(&self, factor: i64) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_mul(factor).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency.clone()))
    }

    /// `basis_points / 10_000` of this amount, rounded half away from zero, as tax
    /// authorities and card networks round.
    pub fn percent_bps(&self, basis_points: i64) -> Result<Money, MoneyError> {
        let product = i128::from(self.minor) * i128::from(basis_points);
        let rounded = if product >= 0 {
            (product + 5_000) / 10_000
        } else {
            (product - 5_000) / 10_000
        };
        let minor = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency.clone()))
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(
                self.currency.clone(),
                other.currency.clone(),
            ))
        }
    }

    /// The amount as a decimal string with the currency's exponent: `450` USD is `"4.50"`.
    pub fn to_decimal_string(&self) -> String {
        // Written digit by digit from the right into a buffer that fits any i64 with its
        // sign and point (every price of every answer passes here; `format!` is several
        // times slower).
        let exp = self.currency.exponent() as usize;
        let mut buffer = [0_u8; 24];
        let mut at = buffer.len();
        let mut rest = self.minor.unsigned_abs();
        let mut put = |byte: u8| {
            at -= 1;
            buffer[at] = byte;
        };
        for _ in 0..exp {
            put(b'0' + (rest % 10) as u8);
            rest /= 10;
        }
        if exp > 0 {
            put(b'.');
        }
        loop {
            put(b'0' + (rest % 10) as u8);
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if self.minor < 0 {
            put(b'-');
        }
        buffer[at..].iter().map(|&b| char::from(b)).collect()
    }

    /// Parses a decimal string such as `"4.50"` exactly; more fraction digits than the
    /// currency has is an error, never a rounding.
    pub fn parse_decimal(raw: &str, currency: Currency) -> Result<Money, MoneyError> {
        let bad = || MoneyError::BadDecimal(raw.chars().take(32).collect());
        let exp = currency.exponent() as usize;
        let (negative, digits) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty()
            || frac.len() > exp
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (digits.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        // Digits only by now, so the one failure left is size: accumulated in i128 with
        // the sign applied before narrowing, so every i64 (its minimum included) reads
        // back, and anything larger is `Overflow`, never a wrapped amount.
        let digits_value = |text: &str| {
            text.bytes().try_fold(0_i128, |acc, b| {
                acc.checked_mul(10)?.checked_add(i128::from(b - b'0'))
            })
        };
        let frac_padded = format!("{frac:0<exp$}");
        let minor = digits_value(whole)
            .zip(digits_value(&frac_padded))
            .and_then(|(w, f)| w.checked_mul(10_i128.pow(exp as u32))?.checked_add(f))
            .map(|m| if negative { -m } else { m })
            .and_then(|m| i64::try_from(m).ok())
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::usd())
    }

    #[test]
    fn decimal_strings_round_trip() {
        assert_eq!(usd(450).to_decimal_string(), "4.50");
        assert_eq!(usd(5).to_decimal_string(), "0.05");
        assert_eq!(usd(-1205).to_decimal_string(), "-12.05");
        assert_eq!(usd(0).to_decimal_string(), "0.00");
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(Money::new(500, jpy.clone()).to_decimal_string(), "500");
        for s in ["4.50", "0.05", "-12.05", "12", "12.5"] {
            let m = Money::parse_decimal(s, Currency::usd()).unwrap();
            assert_eq!(
                Money::parse_decimal(&m.to_decimal_string(), Currency::usd()).unwrap(),
                m
            );
        }
        assert_eq!(
            Money::parse_decimal("12.5", Currency::usd()).unwrap().minor,
            1250
        );
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Money::new(-5, kwd.clone()).to_decimal_string(), "-0.005");
        assert_eq!(Money::new(12_345, kwd).to_decimal_string(), "12.345");
        assert_eq!(Money::new(-7, jpy).to_decimal_string(), "-7");
        assert_eq!(usd(i64::MIN).to_decimal_string(), "-92233720368547758.08");
        assert_eq!(usd(i64::MAX).to_decimal_string(), "92233720368547758.07");
    }

    #[test]
    fn parse_refuses_rounding_and_junk() {
        for s in ["4.505", "", ".5", "4.", "1e3", "4,50", "--1", "abc"] {
            assert_eq!(
                Money::parse_decimal(s, Currency::usd()),
                Err(MoneyError::BadDecimal(s.to_owned())),
                "{s}"
            );
        }
        assert_eq!(
            Money::parse_decimal("99999999999999999", Currency::usd()),
            Err(MoneyError::Overflow)
        );
        // The extremes read back (found by the property tests: i64::MIN was `Overflow`),
        // and digits too many for any integer are `Overflow`, not `BadDecimal`.
        assert_eq!(
            Money::parse_decimal("-92233720368547758.08", Currency::usd()),
            Ok(usd(i64::MIN))
        );
        assert_eq!(
            Money::parse_decimal("92233720368547758.07", Currency::usd()),
            Ok(usd(i64::MAX))
        );
        assert_eq!(
            Money::parse_decimal(&"9".repeat(60), Currency::usd()),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn arithmetic_checks_currency_and_overflow() {
        let sgd = Money::new(100, Currency::parse("SGD").unwrap());
        assert!(matches!(
            usd(1).checked_add(&sgd),
            Err(MoneyError::CurrencyMismatch(..))
        ));
        assert_eq!(
            usd(i64::MAX).checked_add(&usd(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(usd(250).checked_mul(3).unwrap(), usd(750));
        assert_eq!(usd(1000).checked_sub(&usd(1250)).unwrap(), usd(-250));
    }

    #[test]
    fn percentages_round_half_away_from_zero() {
        // 8.875% of 4.50 is 0.399375 -> 0.40
        assert_eq!(usd(450).percent_bps(888).unwrap(), usd(40));
        // 10% of 0.05 is 0.005 -> 0.01
        assert_eq!(usd(5).percent_bps(1000).unwrap(), usd(1));
        assert_eq!(usd(-5).percent_bps(1000).unwrap(), usd(-1));
        assert_eq!(usd(4).percent_bps(1000).unwrap(), usd(0));
    }
}
