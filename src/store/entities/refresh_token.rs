use sea_orm::entity::prelude::*;

/// One refresh token of a session, stored only as its SHA-256. Each is exchanged once;
/// presenting a used one again means it was copied, and ends the session.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub hash: String,
    pub session_id: String,
    pub issued_at_ms: i64,
    pub used_at_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
