//! Orders: the durable record of each Place Order flow (its recovery point, the payment,
//! what Okya last told us), the history of its statuses, and the webhook events received.
//!
//! Times compared in SQL are integer Unix milliseconds, portable across SQLite and
//! PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    CustomerId,
    IdempotencyKey,
    RequestHash,
    CartId,
    StoreId,
    PaymentMethodId,
    VoucherId,
    CaptureMode,
    Status,
    Step,
    StepAttempts,
    NextAttemptAtMs,
    LockedUntilMs,
    FailureCode,
    FailureMessage,
    OkyaOrderId,
    Number,
    Currency,
    SubtotalMinor,
    DiscountMinor,
    TaxMinor,
    TotalMinor,
    LinesJson,
    OkyaVersion,
    OkyaApproval,
    OkyaFulfilment,
    PaymentIntentId,
    PaymentStatus,
    CardBrand,
    CardLast4,
    PosTicketId,
    PointsEarned,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum OrderStatusHistory {
    Table,
    OrderId,
    Seq,
    Status,
    AtMs,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    Source,
    EventType,
    Payload,
    ReceivedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Orders::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Orders::CustomerId).string_len(128).not_null())
                    .col(ColumnDef::new(Orders::IdempotencyKey).string_len(255).not_null())
                    .col(ColumnDef::new(Orders::RequestHash).string_len(64).not_null())
                    .col(ColumnDef::new(Orders::CartId).string_len(128).not_null())
                    .col(ColumnDef::new(Orders::StoreId).string_len(128).not_null())
                    .col(ColumnDef::new(Orders::PaymentMethodId).string_len(255).not_null())
                    .col(ColumnDef::new(Orders::VoucherId).string_len(128).null())
                    .col(ColumnDef::new(Orders::CaptureMode).string_len(16).not_null())
                    .col(ColumnDef::new(Orders::Status).string_len(32).not_null())
                    .col(ColumnDef::new(Orders::Step).string_len(32).not_null())
                    .col(ColumnDef::new(Orders::StepAttempts).integer().not_null())
                    .col(ColumnDef::new(Orders::NextAttemptAtMs).big_integer().not_null())
                    .col(ColumnDef::new(Orders::LockedUntilMs).big_integer().null())
                    .col(ColumnDef::new(Orders::FailureCode).string_len(64).null())
                    .col(ColumnDef::new(Orders::FailureMessage).text().null())
                    .col(ColumnDef::new(Orders::OkyaOrderId).string_len(128).null().unique_key())
                    .col(ColumnDef::new(Orders::Number).string_len(32).null())
                    .col(ColumnDef::new(Orders::Currency).string_len(3).null())
                    .col(ColumnDef::new(Orders::SubtotalMinor).big_integer().null())
                    .col(ColumnDef::new(Orders::DiscountMinor).big_integer().null())
                    .col(ColumnDef::new(Orders::TaxMinor).big_integer().null())
                    .col(ColumnDef::new(Orders::TotalMinor).big_integer().null())
                    .col(ColumnDef::new(Orders::LinesJson).text().null())
                    .col(ColumnDef::new(Orders::OkyaVersion).big_integer().not_null())
                    .col(ColumnDef::new(Orders::OkyaApproval).string_len(32).null())
                    .col(ColumnDef::new(Orders::OkyaFulfilment).string_len(32).null())
                    .col(ColumnDef::new(Orders::PaymentIntentId).string_len(255).null().unique_key())
                    .col(ColumnDef::new(Orders::PaymentStatus).string_len(32).null())
                    .col(ColumnDef::new(Orders::CardBrand).string_len(32).null())
                    .col(ColumnDef::new(Orders::CardLast4).string_len(4).null())
                    .col(ColumnDef::new(Orders::PosTicketId).string_len(128).null())
                    .col(ColumnDef::new(Orders::PointsEarned).big_integer().null())
                    .col(ColumnDef::new(Orders::CreatedAtMs).big_integer().not_null())
                    .col(ColumnDef::new(Orders::UpdatedAtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // The same key from the same customer is the same checkout, whatever the timing.
        manager
            .create_index(
                Index::create()
                    .name("uq_orders_customer_key")
                    .table(Orders::Table)
                    .col(Orders::CustomerId)
                    .col(Orders::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_customer_created")
                    .table(Orders::Table)
                    .col(Orders::CustomerId)
                    .col(Orders::CreatedAtMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_due")
                    .table(Orders::Table)
                    .col(Orders::Step)
                    .col(Orders::NextAttemptAtMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderStatusHistory::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(OrderStatusHistory::OrderId).string_len(64).not_null())
                    .col(ColumnDef::new(OrderStatusHistory::Seq).integer().not_null())
                    .col(ColumnDef::new(OrderStatusHistory::Status).string_len(32).not_null())
                    .col(ColumnDef::new(OrderStatusHistory::AtMs).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(OrderStatusHistory::OrderId)
                            .col(OrderStatusHistory::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(WebhookEvents::Id).string_len(255).not_null().primary_key())
                    .col(ColumnDef::new(WebhookEvents::Source).string_len(16).not_null())
                    .col(ColumnDef::new(WebhookEvents::EventType).string_len(64).not_null())
                    .col(ColumnDef::new(WebhookEvents::Payload).text().not_null())
                    .col(ColumnDef::new(WebhookEvents::ReceivedAtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}
