//! Carts we created at Okya, so a cart id from a client can be checked against its owner
//! and its store without asking Okya.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Carts {
    Table,
    Id,
    StoreId,
    CustomerId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Carts::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Carts::Id)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Carts::StoreId).string_len(128).not_null())
                    .col(ColumnDef::new(Carts::CustomerId).string_len(128).null())
                    .col(
                        ColumnDef::new(Carts::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_carts_customer")
                    .table(Carts::Table)
                    .col(Carts::CustomerId)
                    .to_owned(),
            )
            .await
    }
}
