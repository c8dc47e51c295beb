//! Who holds a lease: `locked_by` on orders and jobs names the instance (a UUID made at
//! each start) whose `locked_until_ms` it is. An instance shutting down releases the
//! leases it holds (`WHERE locked_by = <itself>`), so another instance sharing the
//! database resumes those flows and jobs at once instead of waiting for the lease to
//! expire; and a runner whose lease lapsed and was taken over cannot release the new
//! holder's.
//!
//! SQLite alters one column per statement, hence one `ALTER TABLE` each.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    LockedBy,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    LockedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Orders::Table)
                    .add_column(ColumnDef::new(Orders::LockedBy).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(ColumnDef::new(Jobs::LockedBy).string().null())
                    .to_owned(),
            )
            .await
    }
}
