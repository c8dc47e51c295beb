use sea_orm::entity::prelude::*;

/// A customer: their Okya account, mirrored, and the SessionM user linked to it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: crate::domain::CustomerId,
    pub email: String,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
    pub confirmed: bool,
    /// Null until the background link to SessionM completes.
    pub sessionm_user_id: Option<String>,
    pub created_at: DateTimeWithTimeZone,
    pub updated_at: DateTimeWithTimeZone,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
