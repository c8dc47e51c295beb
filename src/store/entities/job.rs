use sea_orm::entity::prelude::*;

/// Durable background work: recorded in the transaction that makes it necessary, claimed
/// by one worker at a time under a lease, retried with backoff until it succeeds.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub kind: String,
    /// One job per key: enqueuing the same work twice is a no-op.
    pub dedupe_key: String,
    pub payload: String,
    /// `pending`, `done` or `dead`.
    pub state: String,
    pub attempts: i32,
    pub run_at_ms: i64,
    pub locked_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
