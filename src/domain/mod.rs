//! Domain newtypes: the only way in for ids and money that came from outside.

mod clock;
mod contact;
mod failure;
#[cfg(test)]
mod generated_inputs;
mod ids;
mod money;
mod order;
pub mod reconciliation;

pub use clock::{millis, now_ms};
pub use contact::{Email, PersonName, Phone};
pub use failure::Failure;
pub use ids::{
    CartId, CartLineId, CustomerId, IdempotencyKey, ModifierOptionId, OrderId, PaymentMethodId,
    ProductId, StoreId, VoucherId,
};
pub use money::{Currency, Money, MoneyError};
pub use order::{
    Approval, CaptureMode, Fulfilment, OkyaState, OrderStatus, PaymentStatus, Step, StepKind,
};
