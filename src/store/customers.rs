//! Customers as we mirror them from Okya Auth.

use super::{StoreError, entities::customer};
use crate::domain::CustomerId;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::OnConflict,
};

pub struct NewCustomer<'a> {
    pub id: CustomerId,
    pub email: &'a str,
    pub phone: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub confirmed: bool,
}

/// Records the customer, or refreshes the copy when Okya already knew them.
pub async fn upsert(db: &impl ConnectionTrait, new: NewCustomer<'_>) -> Result<(), StoreError> {
    let now = chrono::Utc::now().fixed_offset();
    let row = customer::ActiveModel {
        id: Set(new.id),
        email: Set(new.email.to_owned()),
        phone: Set(new.phone.to_owned()),
        first_name: Set(new.first_name.to_owned()),
        last_name: Set(new.last_name.to_owned()),
        confirmed: Set(new.confirmed),
        sessionm_user_id: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    customer::Entity::insert(row)
        .on_conflict(
            OnConflict::column(customer::Column::Id)
                .update_columns([
                    customer::Column::Email,
                    customer::Column::Phone,
                    customer::Column::FirstName,
                    customer::Column::LastName,
                    customer::Column::Confirmed,
                    customer::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn find(
    db: &impl ConnectionTrait,
    id: &CustomerId,
) -> Result<Option<customer::Model>, StoreError> {
    Ok(customer::Entity::find_by_id(id.clone()).one(db).await?)
}

pub async fn set_confirmed(db: &impl ConnectionTrait, id: &CustomerId) -> Result<(), StoreError> {
    customer::Entity::update_many()
        .col_expr(
            customer::Column::Confirmed,
            sea_orm::sea_query::Expr::value(true),
        )
        .col_expr(
            customer::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now().fixed_offset()),
        )
        .filter(customer::Column::Id.eq(id.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn set_sessionm_user(
    db: &impl ConnectionTrait,
    id: &CustomerId,
    sessionm_user_id: &str,
) -> Result<(), StoreError> {
    customer::Entity::update_many()
        .col_expr(
            customer::Column::SessionmUserId,
            sea_orm::sea_query::Expr::value(sessionm_user_id),
        )
        .col_expr(
            customer::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now().fixed_offset()),
        )
        .filter(customer::Column::Id.eq(id.as_str()))
        .exec(db)
        .await?;
    Ok(())
}
