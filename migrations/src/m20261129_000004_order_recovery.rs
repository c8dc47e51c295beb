//! What the Place Order flow needs to recover from any upstream answer:
//!
//! - `attention`: why an operator must look at the order (a refusal the flow could not
//!   resolve after bounded attempts); the sweeper leaves such orders alone until it is
//!   cleared. `attention_at_ms` says since when.
//! - `lines_snapshot_json`: the order's lines as ordered (names, modifiers, unit prices),
//!   taken at submission, so every later payload (POS ticket, SessionM basket and sale)
//!   is built from what the customer bought, not from the catalogue of the day.
//! - `key_generation`: bumped when an upstream's saved answer under a key is known to be
//!   stale (Stripe replays a saved 500 or refusal for as long as it keeps the key), so a
//!   call proven still needed is sent again under a new key.
//!
//! SQLite alters one column per statement, hence one `ALTER TABLE` each.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    Attention,
    AttentionAtMs,
    LinesSnapshotJson,
    KeyGeneration,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Orders::Attention).text().null().to_owned(),
            ColumnDef::new(Orders::AttentionAtMs)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Orders::LinesSnapshotJson)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Orders::KeyGeneration)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Orders::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
