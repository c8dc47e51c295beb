//! The durable job queue. A job is inserted in the same transaction as the change that
//! needs it, so it cannot be forgotten; workers on any instance claim due jobs under a
//! lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises writers itself).

use super::{StoreError, sql::stmt};
use sea_orm::{ConnectionTrait, DbBackend};

pub const PENDING: &str = "pending";
pub const DONE: &str = "done";
pub const DEAD: &str = "dead";

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub payload: String,
    /// Including this one.
    pub attempts: i32,
}

/// Enqueues a job unless one with `dedupe_key` exists; returns whether it was new.
pub async fn enqueue(
    db: &impl ConnectionTrait,
    kind: &str,
    dedupe_key: &str,
    payload: &serde_json::Value,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = db
        .execute_raw(stmt(
            db,
            "INSERT INTO jobs (id, kind, dedupe_key, payload, state, attempts, run_at_ms, locked_until_ms, last_error, created_at_ms, updated_at_ms) \
             VALUES (?, ?, ?, ?, 'pending', 0, ?, NULL, NULL, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            vec![
                uuid::Uuid::now_v7().to_string().into(),
                kind.into(),
                dedupe_key.into(),
                payload.to_string().into(),
                now_ms.into(),
                now_ms.into(),
                now_ms.into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Claims the oldest due job for instance `owner`, reserving it for `lease_ms`.
pub async fn claim(
    db: &impl ConnectionTrait,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<Claimed>, StoreError> {
    let lock = if db.get_database_backend() == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE jobs SET locked_until_ms = ?, locked_by = ?, attempts = attempts + 1, updated_at_ms = ? \
         WHERE id = (SELECT id FROM jobs WHERE state = 'pending' AND run_at_ms <= ? \
                     AND (locked_until_ms IS NULL OR locked_until_ms < ?) \
                     ORDER BY run_at_ms LIMIT 1{lock}) \
         RETURNING id, kind, payload, attempts"
    );
    let row = db
        .query_one_raw(stmt(
            db,
            &sql,
            vec![
                (now_ms + lease_ms).into(),
                owner.into(),
                now_ms.into(),
                now_ms.into(),
                now_ms.into(),
            ],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(Claimed {
        id: row.try_get("", "id")?,
        kind: row.try_get("", "kind")?,
        payload: row.try_get("", "payload")?,
        attempts: row.try_get("", "attempts")?,
    }))
}

pub async fn complete(db: &impl ConnectionTrait, id: &str, now_ms: i64) -> Result<(), StoreError> {
    db.execute_raw(stmt(
        db,
        "UPDATE jobs SET state = 'done', locked_until_ms = NULL, locked_by = NULL, last_error = NULL, updated_at_ms = ? WHERE id = ?",
        vec![now_ms.into(), id.into()],
    ))
    .await?;
    Ok(())
}

/// Releases the job to run again at `run_at_ms`, or buries it when `dead`.
pub async fn fail(
    db: &impl ConnectionTrait,
    id: &str,
    error: &str,
    run_at_ms: i64,
    dead: bool,
    now_ms: i64,
) -> Result<(), StoreError> {
    let state = if dead { DEAD } else { PENDING };
    let error: String = error.chars().take(1_000).collect();
    db.execute_raw(stmt(
        db,
        "UPDATE jobs SET state = ?, locked_until_ms = NULL, locked_by = NULL, last_error = ?, run_at_ms = ?, updated_at_ms = ? WHERE id = ?",
        vec![state.into(), error.into(), run_at_ms.into(), now_ms.into(), id.into()],
    ))
    .await?;
    Ok(())
}

/// Ends every lease `owner` holds on jobs except those of `running`, so a job claimed by
/// an instance shutting down runs elsewhere at once; returns how many were released.
pub async fn release_all_held_by(
    db: &impl ConnectionTrait,
    owner: &str,
    running: &[String],
) -> Result<u64, StoreError> {
    super::orders::release_held(db, "jobs", owner, running).await
}

/// Jobs by state, for readiness reporting and tests.
pub async fn count(db: &impl ConnectionTrait, state: &str) -> Result<i64, StoreError> {
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT COUNT(*) AS n FROM jobs WHERE state = ?",
            vec![state.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get("", "n")?,
        None => 0,
    })
}

/// Runs the job with `dedupe_key` again from the start if it is finished (`done` or
/// `dead`), for when what it was for turns out not to have happened (the SessionM link
/// that died, asked for again by the customer's next sign-in); a pending job is left as
/// it is. Returns whether a job was re-armed.
pub async fn rearm(
    db: &impl ConnectionTrait,
    dedupe_key: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = db
        .execute_raw(stmt(
            db,
            "UPDATE jobs SET state = 'pending', attempts = 0, run_at_ms = ?, locked_until_ms = NULL, \
             last_error = NULL, updated_at_ms = ? WHERE dedupe_key = ? AND state IN ('done', 'dead')",
            vec![now_ms.into(), now_ms.into(), dedupe_key.into()],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}
