//! Registrations in progress: the `Idempotency-Key` a registration is sent to Okya Auth
//! under, kept only while a replay of its first answer still serves a purpose (the
//! account unconfirmed, within the lifetime of the code that answer announced).
//!
//! Times compared in SQL are integer Unix milliseconds, portable across SQLite and
//! PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AccountRegistrations {
    Table,
    Fingerprint,
    IdempotencyKey,
    Phone,
    StartedAtMs,
    AnsweredAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AccountRegistrations::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AccountRegistrations::Fingerprint)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AccountRegistrations::IdempotencyKey)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AccountRegistrations::Phone)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AccountRegistrations::StartedAtMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AccountRegistrations::AnsweredAtMs)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_account_registrations_phone")
                    .table(AccountRegistrations::Table)
                    .col(AccountRegistrations::Phone)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_account_registrations_started")
                    .table(AccountRegistrations::Table)
                    .col(AccountRegistrations::StartedAtMs)
                    .to_owned(),
            )
            .await
    }
}
