//! Every table of cbtl-bff. Forward only: a released migration is never edited; a change
//! is a new migration.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_carts;
mod m20261125_000002_accounts;
mod m20261125_000003_orders;
mod m20261129_000004_order_recovery;
mod m20261129_000005_account_registrations;
mod m20261129_000006_loyalty_objects;
mod m20261130_000007_lease_owner;
mod m20261130_000008_rate_limits;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_carts::Migration),
            Box::new(m20261125_000002_accounts::Migration),
            Box::new(m20261125_000003_orders::Migration),
            Box::new(m20261129_000004_order_recovery::Migration),
            Box::new(m20261129_000005_account_registrations::Migration),
            Box::new(m20261129_000006_loyalty_objects::Migration),
            Box::new(m20261130_000007_lease_owner::Migration),
            Box::new(m20261130_000008_rate_limits::Migration),
        ]
    }
}
