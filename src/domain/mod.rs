//! Domain newtypes: the only way in for ids and money that came from outside.

mod contact;
mod ids;
mod money;

pub use contact::{Email, PersonName, Phone};
pub use ids::{CartId, CartLineId, CustomerId, ModifierOptionId, ProductId, StoreId};
pub use money::{Currency, Money, MoneyError};
