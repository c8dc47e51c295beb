//! Sign-in sessions and their refresh tokens.

use super::{
    StoreError,
    entities::{refresh_token, session},
};
use crate::domain::CustomerId;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr,
};

pub async fn create(
    db: &impl ConnectionTrait,
    id: &str,
    customer_id: &CustomerId,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    let row = session::ActiveModel {
        id: Set(id.to_owned()),
        customer_id: Set(customer_id.to_owned()),
        created_at_ms: Set(now_ms),
        expires_at_ms: Set(expires_at_ms),
        revoked_at_ms: Set(None),
    };
    session::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn add_refresh_token(
    db: &impl ConnectionTrait,
    hash: &str,
    session_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let row = refresh_token::ActiveModel {
        hash: Set(hash.to_owned()),
        session_id: Set(session_id.to_owned()),
        issued_at_ms: Set(now_ms),
        used_at_ms: Set(None),
    };
    refresh_token::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn find(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<session::Model>, StoreError> {
    Ok(session::Entity::find_by_id(id.to_owned()).one(db).await?)
}

pub async fn find_refresh_token(
    db: &impl ConnectionTrait,
    hash: &str,
) -> Result<Option<refresh_token::Model>, StoreError> {
    Ok(refresh_token::Entity::find_by_id(hash.to_owned())
        .one(db)
        .await?)
}

/// Marks a refresh token used. Of several concurrent exchanges of one token only one
/// wins (`true`); the others see it already used.
pub async fn use_refresh_token(
    db: &impl ConnectionTrait,
    hash: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAtMs, Expr::value(now_ms))
        .filter(refresh_token::Column::Hash.eq(hash))
        .filter(refresh_token::Column::UsedAtMs.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn revoke(db: &impl ConnectionTrait, id: &str, now_ms: i64) -> Result<(), StoreError> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAtMs, Expr::value(now_ms))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::RevokedAtMs.is_null())
        .exec(db)
        .await?;
    Ok(())
}
