//! The order's lines as the customer bought them, snapshotted once when Okya accepts the
//! order, and every later payload built from that snapshot alone: the POS ticket, the
//! SessionM basket a voucher is priced against, and the SessionM sale.
//!
//! Why: a payload is sent again under the same idempotency key after a crash or a lost
//! answer, and upstreams refuse a key reused with a different body (Epoint's
//! `idempotency_key_reused`, Stripe's `idempotency_error`). Built from the catalogue of the
//! moment, a product renamed between two tries changed the body and got a good order
//! recalled. The snapshot also makes the ticket show what was ordered, not what the menu
//! says today.

use crate::{
    domain::{Currency, Money, MoneyError},
    upstream::{
        epoint::{InjectLine, InjectModifier},
        okya::{CartLine, Product},
        sessionm::TransactionLine,
    },
};
use serde::{Deserialize, Serialize};

/// One line of an order as bought. Amounts are integer minor units of the order's
/// currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSnapshot {
    /// Okya's cart line id.
    pub line_id: String,
    pub product_id: String,
    /// The product's name when the order was placed.
    pub name: String,
    pub quantity: u32,
    /// Price of one unit with its modifiers, as Okya priced the line.
    pub unit_price_minor: i64,
    pub modifiers: Vec<ModifierSnapshot>,
}

/// A chosen modifier option, as bought.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModifierSnapshot {
    pub id: String,
    pub name: String,
    /// Added to the unit price, per unit, in minor units.
    pub price_minor: i64,
}

impl LineSnapshot {
    /// The unit price without modifiers: what the POS prints as the item's price. Checked:
    /// the amounts are Okya's, and an absurd one is an error, never a wrapped price.
    pub fn base_price_minor(&self) -> Result<i64, MoneyError> {
        self.modifiers
            .iter()
            .try_fold(self.unit_price_minor, |price, m| {
                price.checked_sub(m.price_minor)
            })
            .ok_or(MoneyError::Overflow)
    }
}

/// Snapshots Okya's order lines with the names and modifier prices of `products` (the
/// catalogue read right after submission). A product or option the catalogue no longer
/// lists keeps its id as its name and a zero modifier price: the line's unit price is
/// Okya's either way.
pub fn snapshot(lines: &[CartLine], products: &[Product]) -> Vec<LineSnapshot> {
    lines
        .iter()
        .map(|line| {
            let product = products.iter().find(|p| p.id == line.product_id);
            if product.is_none() {
                tracing::warn!(product_id = %line.product_id, "an ordered product is missing from the catalogue; its id stands in for its name");
            }
            let modifiers = line
                .modifier_option_ids
                .iter()
                .map(|option_id| {
                    let option = product.and_then(|p| {
                        p.modifier_groups
                            .iter()
                            .flat_map(|g| g.options.iter())
                            .find(|o| &o.id == option_id)
                    });
                    ModifierSnapshot {
                        id: option_id.clone(),
                        name: option.map_or_else(|| option_id.clone(), |o| o.name.clone()),
                        price_minor: option.map_or(0, |o| o.price_delta.amount),
                    }
                })
                .collect();
            LineSnapshot {
                line_id: line.id.clone(),
                product_id: line.product_id.clone(),
                name: product.map_or_else(|| line.product_id.clone(), |p| p.name.clone()),
                quantity: line.quantity,
                unit_price_minor: line.unit_price.amount,
                modifiers,
            }
        })
        .collect()
}

/// The POS ticket's lines.
pub fn pos_lines(
    lines: &[LineSnapshot],
    currency: &Currency,
) -> Result<Vec<InjectLine>, MoneyError> {
    lines
        .iter()
        .map(|line| {
            Ok(InjectLine {
                product_id: line.product_id.clone(),
                name: line.name.clone(),
                quantity: line.quantity,
                unit_price: Money::new(line.base_price_minor()?, currency.clone()),
                modifiers: line
                    .modifiers
                    .iter()
                    .map(|m| InjectModifier {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        price: Money::new(m.price_minor, currency.clone()),
                    })
                    .collect(),
                note: None,
            })
        })
        .collect()
}

/// The lines of a SessionM basket or sale (unit prices with modifiers).
pub fn loyalty_lines(lines: &[LineSnapshot], currency: &Currency) -> Vec<TransactionLine> {
    lines
        .iter()
        .map(|line| TransactionLine {
            line_id: line.line_id.clone(),
            product_id: line.product_id.clone(),
            name: line.name.clone(),
            quantity: line.quantity,
            unit_price: Money::new(line.unit_price_minor, currency.clone()),
        })
        .collect()
}

/// Σ unit price × quantity, checked.
pub fn subtotal(lines: &[LineSnapshot], currency: &Currency) -> Result<Money, MoneyError> {
    let mut total = Money::zero(currency.clone());
    for line in lines {
        let unit = Money::new(line.unit_price_minor, currency.clone());
        total = total.checked_add(&unit.checked_mul(line.quantity.into())?)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::okya::{ModifierGroup, ModifierOption, WireMoney};

    fn money(amount: i64) -> WireMoney {
        WireMoney {
            amount,
            currency: "USD".into(),
        }
    }

    fn latte(name: &str) -> Product {
        Product {
            id: "prd_latte".into(),
            name: name.into(),
            description: String::new(),
            category: "coffee".into(),
            price: money(450),
            available: true,
            modifier_groups: vec![ModifierGroup {
                id: "grp_milk".into(),
                name: "Milk".into(),
                min_selections: 0,
                max_selections: 1,
                options: vec![ModifierOption {
                    id: "opt_milk_oat".into(),
                    name: "Oat milk".into(),
                    price_delta: money(70),
                    available: true,
                }],
            }],
        }
    }

    fn line() -> CartLine {
        CartLine {
            id: "line_1".into(),
            product_id: "prd_latte".into(),
            quantity: 2,
            modifier_option_ids: vec!["opt_milk_oat".into()],
            unit_price: money(520),
            line_total: money(1040),
        }
    }

    #[test]
    fn a_snapshot_keeps_names_and_splits_modifier_prices() {
        let lines = snapshot(&[line()], &[latte("Latte")]);
        assert_eq!(lines[0].name, "Latte");
        assert_eq!(lines[0].modifiers[0].name, "Oat milk");
        assert_eq!(lines[0].base_price_minor(), Ok(450));
        let usd = Currency::parse("USD").expect("USD");
        assert_eq!(subtotal(&lines, &usd).expect("sum").minor, 1040);
        let pos = pos_lines(&lines, &usd).expect("prices");
        assert_eq!(pos[0].unit_price.minor, 450);
        assert_eq!(pos[0].modifiers[0].price.minor, 70);
        assert_eq!(loyalty_lines(&lines, &usd)[0].unit_price.minor, 520);
    }

    #[test]
    fn payloads_do_not_change_when_the_catalogue_does() {
        let usd = Currency::parse("USD").expect("USD");
        let taken = snapshot(&[line()], &[latte("Latte")]);
        // The snapshot is what is stored; a later rename never reaches it.
        let _renamed = snapshot(&[line()], &[latte("Caffè Latte")]);
        let stored: Vec<LineSnapshot> =
            serde_json::from_str(&serde_json::to_string(&taken).expect("json")).expect("read");
        assert_eq!(pos_lines(&stored, &usd), pos_lines(&taken, &usd));
        assert_eq!(stored[0].name, "Latte");
    }

    #[test]
    fn a_product_gone_from_the_catalogue_keeps_its_id_and_price() {
        let lines = snapshot(&[line()], &[]);
        assert_eq!(lines[0].name, "prd_latte");
        assert_eq!(lines[0].unit_price_minor, 520);
        assert_eq!(lines[0].base_price_minor(), Ok(520));
        // Okya's amounts are outside data: an absurd modifier price is an error, never an
        // overflow panic or a wrapped price on the ticket (found by the property tests).
        let mut absurd = lines[0].clone();
        absurd.unit_price_minor = i64::MIN;
        absurd.modifiers = vec![ModifierSnapshot {
            id: "opt_gold".into(),
            name: "Gold leaf".into(),
            price_minor: 1,
        }];
        assert_eq!(absurd.base_price_minor(), Err(MoneyError::Overflow));
        assert_eq!(
            pos_lines(&[absurd], &Currency::usd()).map(|_| ()),
            Err(MoneyError::Overflow)
        );
    }

    use proptest::prelude::*;

    fn extreme_i64() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            -1_000_000_i64..1_000_000,
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
        ]
    }

    proptest! {
    /// The order's subtotal (Σ unit × quantity) and the POS's base prices (unit less its
    /// modifiers) are exact or an error, whatever amounts Okya's lines carry.
    #[test]
    fn line_sums_are_exact_or_an_error(
        lines in prop::collection::vec(
            (extreme_i64(), any::<u32>(), prop::collection::vec(extreme_i64(), 0..3)),
            0..6,
        ),
    ) {
        let usd = Currency::usd();
        let snapshots: Vec<LineSnapshot> = lines
            .iter()
            .enumerate()
            .map(|(i, (unit, quantity, modifiers))| LineSnapshot {
                line_id: format!("ln_{i}"),
                product_id: "prd_latte".into(),
                name: "Latte".into(),
                quantity: *quantity,
                unit_price_minor: *unit,
                modifiers: modifiers
                    .iter()
                    .map(|m| ModifierSnapshot { id: "opt".into(), name: "Oat".into(), price_minor: *m })
                    .collect(),
            })
            .collect();
        let exact: i128 = lines.iter().map(|(unit, quantity, _)| i128::from(*unit) * i128::from(*quantity)).sum();
        let partial_sums_fit = lines.iter().scan(0_i128, |sum, (unit, quantity, _)| {
            let line = i128::from(*unit) * i128::from(*quantity);
            *sum += line;
            Some(i64::try_from(line).is_ok() && i64::try_from(*sum).is_ok())
        }).all(|fits| fits);
        match subtotal(&snapshots, &usd) {
            Ok(total) => prop_assert_eq!(i128::from(total.minor), exact),
            Err(e) => {
                prop_assert_eq!(e, MoneyError::Overflow);
                prop_assert!(!partial_sums_fit);
            }
        }
        for line in &snapshots {
            let base = line.modifiers.iter().fold(i128::from(line.unit_price_minor), |p, m| p - i128::from(m.price_minor));
            let steps_fit = line.modifiers.iter().scan(i128::from(line.unit_price_minor), |p, m| {
                *p -= i128::from(m.price_minor);
                Some(i64::try_from(*p).is_ok())
            }).all(|fits| fits);
            match line.base_price_minor() {
                Ok(price) => prop_assert_eq!(i128::from(price), base),
                Err(_) => prop_assert!(!steps_fit),
            }
        }
        // And the POS ticket is built or refused as a whole, without a panic.
        let _ = pos_lines(&snapshots, &usd);
    }
    }
}
