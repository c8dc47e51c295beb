//! The simulators' money: integer minor units and an ISO 4217 code, as Okya, Stripe and
//! Epoint put it on the wire, and exact decimals for SessionM, which writes currency units.
//! Floats never carry arithmetic.

use std::fmt;

/// An ISO 4217 currency code: three letters, upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    /// Three ASCII letters in any case, or `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_alphabetic()))
            .then(|| Self(raw.to_ascii_uppercase()))
    }

    /// US dollars, the sandbox's currency.
    pub fn usd() -> Self {
        Self("USD".to_owned())
    }

    /// The code, e.g. `USD`.
    pub fn code(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point (ISO 4217): two, except for the currencies without
    /// minor units and the few with three.
    pub fn exponent(&self) -> u32 {
        const NONE: &[&str] = &[
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
            "VND", "VUV", "XAF", "XOF", "XPF",
        ];
        const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
        if NONE.contains(&self.code()) {
            0
        } else if THREE.contains(&self.code()) {
            3
        } else {
            2
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount: minor units (cents) of a currency.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    /// Minor units, signed.
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// `minor` units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Reads a decimal such as `"4.50"` or `"-12"` exactly. More fraction digits than the
    /// currency has (`"4.505"` in USD), a lone point, signs other than a leading `-`, or an
    /// amount beyond `i64` minor units are `None`, never a rounding.
    pub fn from_decimal(text: &str, currency: Currency) -> Option<Self> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (units, fraction) = match unsigned.split_once('.') {
            Some((_, "")) => return None,
            Some((units, fraction)) => (units, fraction),
            None => (unsigned, ""),
        };
        let exponent = currency.exponent() as usize;
        if units.is_empty() || fraction.len() > exponent {
            return None;
        }
        // Every digit of the amount, the fraction padded to the currency's exponent.
        let padding = std::iter::repeat_n(b'0', exponent - fraction.len());
        let mut minor: i64 = 0;
        for byte in units.bytes().chain(fraction.bytes()).chain(padding) {
            if !byte.is_ascii_digit() {
                return None;
            }
            minor = minor.checked_mul(10)?.checked_add(i64::from(byte - b'0'))?;
        }
        Some(Self::new(if negative { -minor } else { minor }, currency))
    }

    /// The amount as a decimal with the currency's exponent: 450 cents is `"4.50"`.
    pub fn to_decimal(&self) -> String {
        let exponent = self.currency.exponent();
        let scale = 10_u64.pow(exponent);
        let magnitude = self.minor.unsigned_abs();
        let sign = if self.minor < 0 { "-" } else { "" };
        match exponent {
            0 => format!("{sign}{magnitude}"),
            digits => format!(
                "{sign}{}.{:0digits$}",
                magnitude / scale,
                magnitude % scale,
                digits = digits as usize
            ),
        }
    }

    /// `basis_points` / 10 000 of the amount, to the nearest minor unit with halves rounded
    /// away from zero (as sales tax and card networks round), or `None` on overflow.
    pub fn share_bps(&self, basis_points: i64) -> Option<Self> {
        let exact = i128::from(self.minor) * i128::from(basis_points);
        let half = if exact < 0 { -5_000 } else { 5_000 };
        let minor = i64::try_from((exact + half) / 10_000).ok()?;
        Some(Self::new(minor, self.currency.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::usd())
    }

    #[test]
    fn currencies_are_three_letters() {
        assert_eq!(Currency::parse("usd"), Some(Currency::usd()));
        for bad in ["", "US", "USDX", "U5D", "€€€"] {
            assert_eq!(Currency::parse(bad), None, "{bad}");
        }
        assert_eq!(Currency::parse("JPY").map(|c| c.exponent()), Some(0));
        assert_eq!(Currency::parse("KWD").map(|c| c.exponent()), Some(3));
    }

    #[test]
    fn decimals_read_and_write_exactly() {
        for (text, minor) in [("4.50", 450), ("4.5", 450), ("12", 1200), ("-0.05", -5)] {
            assert_eq!(Money::from_decimal(text, Currency::usd()), Some(usd(minor)));
        }
        for bad in [
            "4.505",
            "4.",
            ".5",
            "",
            "-",
            "4,50",
            "+4",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(Money::from_decimal(bad, Currency::usd()), None, "{bad}");
        }
        assert_eq!(usd(450).to_decimal(), "4.50");
        assert_eq!(usd(-5).to_decimal(), "-0.05");
        let yen = Currency::parse("JPY").expect("JPY");
        assert_eq!(Money::new(450, yen.clone()).to_decimal(), "450");
        assert_eq!(Money::from_decimal("450.5", yen), None);
    }

    #[test]
    fn shares_round_half_away_from_zero() {
        assert_eq!(usd(1600).share_bps(1025), Some(usd(164)));
        assert_eq!(usd(975).share_bps(1025), Some(usd(100)));
        assert_eq!(usd(250).share_bps(2000), Some(usd(50)));
        assert_eq!(usd(5).share_bps(5000), Some(usd(3)));
        assert_eq!(usd(-5).share_bps(5000), Some(usd(-3)));
    }
}
