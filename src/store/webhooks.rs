//! Webhook events received, kept by id so a repeated delivery is recognised.

use super::{StoreError, sql::stmt};
use sea_orm::ConnectionTrait;

/// Stores the event unless its id was seen before; returns whether it is new.
pub async fn insert(
    db: &impl ConnectionTrait,
    id: &str,
    source: &str,
    event_type: &str,
    payload: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = db
        .execute_raw(stmt(
            db,
            "INSERT INTO webhook_events (id, source, event_type, payload, received_at_ms) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO NOTHING",
            vec![id.into(), source.into(), event_type.into(), payload.into(), now_ms.into()],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}
