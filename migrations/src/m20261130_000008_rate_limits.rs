//! Rate limits shared by every instance on one database: one row per limited key (a limit
//! and a phone, customer or client address), holding the key's GCRA state, the
//! theoretical arrival time (TAT) in Unix milliseconds. A row whose TAT has passed is as
//! good as no row, so housekeeping deletes it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RateLimits {
    Table,
    Key,
    TatMs,
    Allowed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RateLimits::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RateLimits::Key)
                            .string_len(200)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RateLimits::TatMs).big_integer().not_null())
                    // Whether the last request against this key was let through: written by
                    // the same statement that decides, so the caller reads its own answer.
                    .col(ColumnDef::new(RateLimits::Allowed).boolean().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rate_limits_tat")
                    .if_not_exists()
                    .table(RateLimits::Table)
                    .col(RateLimits::TatMs)
                    .to_owned(),
            )
            .await
    }
}
