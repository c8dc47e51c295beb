//! What SessionM needs kept with an order, as SessionM documents it:
//!
//! - `voucher_discount_json`: the Discount object the offer lock answered, exactly as
//!   received. SessionM's Lock Offer page: "it is crucial that the same discount object
//!   that was the response from the Lock Offer API is also passed back in the
//!   post-finalize, 'send transaction' flow".
//! - `loyalty_sent_at_ms`: when the sale was first sent (its `modified_time`), so every
//!   retry of the send carries the same body under the same `request_id`, and a later
//!   return can resend the original transaction as SessionM's "Send Return Transaction"
//!   describes.
//!
//! SQLite alters one column per statement, hence one `ALTER TABLE` each.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    VoucherDiscountJson,
    LoyaltySentAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Orders::VoucherDiscountJson)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Orders::LoyaltySentAtMs)
                .big_integer()
                .null()
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
