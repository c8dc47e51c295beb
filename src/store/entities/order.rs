use crate::domain::{
    Approval, CaptureMode, CartId, CustomerId, Fulfilment, IdempotencyKey, OrderId, OrderStatus,
    PaymentMethodId, PaymentStatus, Step, VoucherId,
};
use sea_orm::entity::prelude::*;

/// One Place Order flow: its recovery point (`step`), what the app sees (`status`), the
/// payment, and the last Okya state applied (`okya_version`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub idempotency_key: IdempotencyKey,
    /// SHA-256 of the checkout input, to tell a retry from a reuse of the key.
    pub request_hash: String,
    pub cart_id: CartId,
    pub store_id: String,
    pub payment_method_id: PaymentMethodId,
    pub voucher_id: Option<VoucherId>,
    /// Set once SessionM locked the voucher for this order (its name), so compensations
    /// know there is a lock to release.
    pub voucher_name: Option<String>,
    pub capture_mode: CaptureMode,
    pub status: OrderStatus,
    pub step: Step,
    pub step_attempts: i32,
    pub next_attempt_at_ms: i64,
    pub locked_until_ms: Option<i64>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub okya_order_id: Option<String>,
    pub number: Option<String>,
    pub currency: Option<String>,
    pub subtotal_minor: Option<i64>,
    pub discount_minor: Option<i64>,
    pub tax_minor: Option<i64>,
    pub total_minor: Option<i64>,
    pub lines_json: Option<String>,
    pub okya_version: i64,
    pub okya_approval: Option<Approval>,
    pub okya_fulfilment: Option<Fulfilment>,
    pub payment_intent_id: Option<String>,
    pub payment_status: Option<PaymentStatus>,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
    pub pos_ticket_id: Option<String>,
    pub points_earned: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Why an operator must look at this order; the sweeper skips it until cleared.
    pub attention: Option<String>,
    pub attention_at_ms: Option<i64>,
    /// The lines as ordered, with names, modifiers and unit prices (`LineSnapshot`s).
    pub lines_snapshot_json: Option<String>,
    /// Part of the idempotency keys of calls re-sent after a stale saved answer.
    pub key_generation: i32,
    /// The Discount object SessionM's lock answered, exactly as received: it goes back
    /// unchanged in the sale.
    pub voucher_discount_json: Option<String>,
    /// When the sale was first sent to SessionM (its `modified_time`); owned by the
    /// SessionM job.
    pub loyalty_sent_at_ms: Option<i64>,
    /// The instance holding the lease (`locked_until_ms`), so a shutdown releases its own
    /// and a runner never releases another's; owned by `acquire`/`release`.
    pub locked_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The statuses the order took; read with the order in one query by
    /// `store::orders::snapshot`.
    #[sea_orm(has_many = "super::order_status_history::Entity")]
    History,
}

impl Related<super::order_status_history::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::History.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
