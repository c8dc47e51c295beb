//! Property tests of every value a client or an upstream hands us, over generated inputs:
//! each parser accepts exactly what its rule says, never panics, and what it accepts
//! reads back as itself; money arithmetic agrees with exact (i128) arithmetic or says
//! `Overflow`, at the extremes of i64 too. `PROPTEST_CASES` raises the case count (the
//! README's long run).

use super::{
    CartId, Currency, CustomerId, Email, IdempotencyKey, ModifierOptionId, Money, MoneyError,
    OrderId, PaymentMethodId, PersonName, Phone, ProductId, StoreId, VoucherId,
};
use proptest::prelude::*;

/// Any string, weighted towards the edges: empty, long, the id alphabet, separators,
/// control characters, non-ASCII, whitespace around.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.-]{0,140}",
        "[ \t]{0,2}[A-Za-z0-9_./%@+()-]{0,20}[ \t\n]{0,2}",
        "\\PC{0,60}",
        Just(String::new()),
        Just("x".repeat(129)),
        Just("../admin".to_owned()),
    ]
}

fn url_safe(raw: &str) -> bool {
    raw.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The currencies with each exponent (0, 2, 3) and one ordinary code.
fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![Just("USD"), Just("JPY"), Just("KWD"), Just("SGD")]
        .prop_map(|c| Currency::parse(c).expect("a currency"))
}

fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -1_000_000_i64..1_000_000,
        Just(i64::MIN),
        Just(i64::MAX),
        Just(i64::MIN + 1),
        Just(i64::MAX - 1),
        Just(0),
    ]
}

macro_rules! id_properties {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        proptest! {
            #[test]
            fn $name(raw in any_text()) {
                let expected = !raw.is_empty() && raw.len() <= 128 && url_safe(&raw);
                let parsed = <$ty>::parse(&raw);
                prop_assert_eq!(parsed.is_some(), expected, "{:?}", raw);
                if let Some(id) = parsed {
                    // Display and parse are inverse; serde carries the bare string.
                    prop_assert_eq!(id.to_string(), raw.clone());
                    prop_assert_eq!(<$ty>::parse(id.as_str()), Some(id.clone()));
                    prop_assert_eq!(serde_json::to_value(&id).ok(), Some(serde_json::Value::String(raw)));
                }
            }
        }
    )*};
}

id_properties!(
    store_ids_parse_by_their_rule: StoreId,
    product_ids_parse_by_their_rule: ProductId,
    modifier_ids_parse_by_their_rule: ModifierOptionId,
    cart_ids_parse_by_their_rule: CartId,
    customer_ids_parse_by_their_rule: CustomerId,
    order_ids_parse_by_their_rule: OrderId,
);

macro_rules! text_properties {
    ($($name:ident: $ty:ty, $allowed:expr),* $(,)?) => {$(
        proptest! {
            #[test]
            fn $name(raw in any_text()) {
                let allowed: fn(u8) -> bool = $allowed;
                let trimmed = raw.trim();
                let expected = !trimmed.is_empty()
                    && trimmed.len() <= <$ty>::MAX_LEN
                    && trimmed.bytes().all(allowed);
                let parsed = <$ty>::parse(&raw);
                prop_assert_eq!(parsed.is_some(), expected, "{:?}", raw);
                if let Some(value) = parsed {
                    prop_assert_eq!(value.as_str(), trimmed);
                    prop_assert_eq!(value.to_string(), trimmed);
                    prop_assert_eq!(<$ty>::parse(value.as_str()), Some(value.clone()));
                }
            }
        }
    )*};
}

text_properties!(
    idempotency_keys_parse_by_their_rule: IdempotencyKey, |b| !b.is_ascii_control(),
    payment_method_ids_parse_by_their_rule: PaymentMethodId, |b| b.is_ascii_graphic(),
    voucher_ids_parse_by_their_rule: VoucherId, |b| b.is_ascii_graphic(),
);

proptest! {
    #[test]
    fn an_email_is_normalised_once_and_for_all(raw in any_text()) {
        if let Some(email) = Email::parse(&raw) {
            let text = email.as_str();
            prop_assert_eq!(text, text.trim());
            prop_assert_eq!(text.to_ascii_lowercase(), text);
            prop_assert!(text.len() <= 254);
            prop_assert_eq!(text.matches('@').count(), 1);
            prop_assert!(text.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert_eq!(Email::parse(text), Some(email.clone()));
        }
    }

    #[test]
    fn ordinary_emails_parse_whatever_their_case_and_spacing(
        local in "[a-z0-9._%+-]{1,20}",
        domain in "[a-z0-9-]{1,10}(\\.[a-z]{2,5}){1,2}",
        upper in any::<bool>(),
        pad in "[ \t]{0,3}",
    ) {
        let written = format!("{pad}{local}@{domain}{pad}");
        let written = if upper { written.to_ascii_uppercase() } else { written };
        let parsed = Email::parse(&written);
        let expected = format!("{local}@{domain}");
        prop_assert_eq!(parsed.as_ref().map(Email::as_str), Some(expected.as_str()));
    }

    #[test]
    fn a_phone_is_e164_or_nothing(raw in any_text()) {
        if let Some(phone) = Phone::parse(&raw) {
            let text = phone.as_str();
            let digits = text.strip_prefix('+').expect("a leading +");
            prop_assert!((8..=15).contains(&digits.len()), "{}", text);
            prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(!digits.starts_with('0'));
            prop_assert_eq!(Phone::parse(text), Some(phone.clone()));
        }
    }

    #[test]
    fn a_typed_phone_number_compacts_to_e164(
        digits in "[1-9][0-9]{7,14}",
        separators in prop::collection::vec(prop_oneof![Just(" "), Just("-"), Just("("), Just(")"), Just(".")], 15),
    ) {
        // The same digits as a person types them: separators between digits.
        let mut typed = String::from("+");
        for (digit, separator) in digits.chars().zip(separators.iter().cycle()) {
            typed.push(digit);
            typed.push_str(separator);
        }
        let parsed = Phone::parse(&typed);
        let expected = format!("+{digits}");
        prop_assert_eq!(parsed.as_ref().map(Phone::as_str), Some(expected.as_str()));
    }

    #[test]
    fn a_name_is_trimmed_bounded_and_printable(raw in any_text()) {
        let trimmed = raw.trim();
        let expected = (1..=PersonName::MAX_CHARS).contains(&trimmed.chars().count())
            && !trimmed.chars().any(char::is_control);
        let parsed = PersonName::parse(&raw);
        prop_assert_eq!(parsed.is_some(), expected, "{:?}", raw);
        if let Some(name) = parsed {
            prop_assert_eq!(name.as_str(), trimmed);
            prop_assert_eq!(PersonName::parse(name.as_str()), Some(name.clone()));
        }
    }

    #[test]
    fn currency_codes_are_three_letters(raw in any_text()) {
        match Currency::parse(&raw) {
            Ok(code) => {
                prop_assert_eq!(code.code(), raw.to_ascii_uppercase());
                prop_assert!(matches!(code.exponent(), 0 | 2 | 3));
            }
            Err(e) => prop_assert!(matches!(e, MoneyError::BadCurrency(_))),
        }
    }

    /// Every amount, the extremes of i64 included, shown as a decimal reads back exactly.
    #[test]
    fn amounts_round_trip_through_their_decimal_strings(minor in extreme_i64(), currency in currency()) {
        let money = Money::new(minor, currency.clone());
        let shown = money.to_decimal_string();
        prop_assert_eq!(Money::parse_decimal(&shown, currency), Ok(money));
    }

    /// Any string is an exact amount, `BadDecimal`, or `Overflow`: never a rounding, a
    /// wrap or a panic. Accepted text agrees with its value computed in i128.
    #[test]
    fn any_decimal_text_parses_exactly_or_is_refused(
        raw in prop_oneof![any_text(), "-?[0-9]{0,25}(\\.[0-9]{0,4})?"],
        currency in currency(),
    ) {
        match Money::parse_decimal(&raw, currency.clone()) {
            Ok(money) => {
                let exp = currency.exponent();
                let (negative, digits) = raw.strip_prefix('-').map_or((false, raw.as_str()), |d| (true, d));
                let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
                let whole: i128 = whole.parse().expect("accepted digits");
                let frac: i128 = format!("{frac:0<width$}", width = exp as usize).parse().unwrap_or(0);
                let exact = whole * 10_i128.pow(exp) + frac;
                let exact = if negative { -exact } else { exact };
                prop_assert_eq!(i128::from(money.minor), exact);
            }
            Err(MoneyError::BadDecimal(_) | MoneyError::Overflow) => {}
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn arithmetic_is_exact_or_overflow(a in extreme_i64(), b in extreme_i64(), factor in extreme_i64()) {
        let usd = |m| Money::new(m, Currency::usd());
        let exact = |r: i128| i64::try_from(r).map(usd).map_err(|_| MoneyError::Overflow);
        prop_assert_eq!(usd(a).checked_add(&usd(b)), exact(i128::from(a) + i128::from(b)));
        prop_assert_eq!(usd(a).checked_sub(&usd(b)), exact(i128::from(a) - i128::from(b)));
        prop_assert_eq!(usd(a).checked_mul(factor), exact(i128::from(a) * i128::from(factor)));
        let yen = Money::new(b, Currency::parse("JPY").expect("JPY"));
        prop_assert!(matches!(usd(a).checked_add(&yen), Err(MoneyError::CurrencyMismatch(..))));
    }

    /// Tax: rounded half away from zero, never more than the amount for a rate up to 100%,
    /// never negative on a positive amount, and the same as exact rounding in i128.
    #[test]
    fn percentages_round_half_away_from_zero(minor in extreme_i64(), bps in prop_oneof![0_i64..=10_000, extreme_i64()]) {
        let amount = Money::new(minor, Currency::usd());
        let product = i128::from(minor) * i128::from(bps);
        let (quotient, remainder) = (product / 10_000, product % 10_000);
        let rounded = if remainder.abs() * 2 >= 10_000 { quotient + product.signum() } else { quotient };
        match amount.percent_bps(bps) {
            Ok(tax) => {
                prop_assert_eq!(i128::from(tax.minor), rounded);
                if (0..=10_000).contains(&bps) {
                    prop_assert!(tax.minor.unsigned_abs() <= minor.unsigned_abs());
                    if minor >= 0 {
                        prop_assert!(tax.minor >= 0);
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e, MoneyError::Overflow);
                prop_assert!(i64::try_from(rounded).is_err());
            }
        }
    }
}
