//! Webhook events received, kept by id so a repeated delivery is recognised.

use super::{StoreError, otp::numbered};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// Stores the event unless its id was seen before; returns whether it is new.
pub async fn insert(
    db: &impl ConnectionTrait,
    id: &str,
    source: &str,
    event_type: &str,
    payload: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let backend = db.get_database_backend();
    let sql = "INSERT INTO webhook_events (id, source, event_type, payload, received_at_ms) VALUES (?, ?, ?, ?, ?) \
               ON CONFLICT (id) DO NOTHING";
    let sql = if backend == DbBackend::Postgres {
        numbered(sql)
    } else {
        sql.to_owned()
    };
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                id.into(),
                source.into(),
                event_type.into(),
                payload.into(),
                now_ms.into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}
