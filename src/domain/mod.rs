//! Domain newtypes: the only way in for ids and money that came from outside.

mod ids;
mod money;

pub use ids::{CartId, CartLineId, ModifierOptionId, ProductId, StoreId};
pub use money::{Currency, Money, MoneyError};
