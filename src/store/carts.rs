//! The carts we created at Okya.

use super::{StoreError, entities::cart};
use crate::domain::{CartId, CustomerId, StoreId};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, sea_query::OnConflict};

/// Remembers a cart Okya created for us. Recording it twice is harmless, so a retried
/// `cartCreate` cannot fail here.
pub async fn record(
    db: &DatabaseConnection,
    cart_id: &CartId,
    store_id: &StoreId,
    customer_id: Option<&CustomerId>,
) -> Result<(), StoreError> {
    let row = cart::ActiveModel {
        id: Set(cart_id.as_str().to_owned()),
        store_id: Set(store_id.as_str().to_owned()),
        customer_id: Set(customer_id.cloned()),
        created_at: Set(chrono::Utc::now().fixed_offset()),
    };
    cart::Entity::insert(row)
        .on_conflict(OnConflict::column(cart::Column::Id).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The cart, when we created it.
pub async fn find(
    db: &DatabaseConnection,
    cart_id: &CartId,
) -> Result<Option<cart::Model>, StoreError> {
    Ok(cart::Entity::find_by_id(cart_id.as_str().to_owned())
        .one(db)
        .await?)
}
