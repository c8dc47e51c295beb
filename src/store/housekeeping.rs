//! Forgets what no longer matters, so tables do not grow without bound: finished jobs,
//! old webhook events (their ids only guard against redelivery, which stops after a day),
//! ended sessions and their refresh tokens, old OTP sends, and rate-limit buckets that are
//! full again.

use super::{StoreError, sql::stmt};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

/// Rows removed by one purge, by kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: u64,
    pub webhook_events: u64,
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub otp_sends: u64,
    pub rate_limits: u64,
}

/// Deletes what `now_ms` makes obsolete. Safe to run on every instance at once.
pub async fn purge(db: &impl ConnectionTrait, now_ms: i64) -> Result<Purged, StoreError> {
    let run = |sql: &'static str, before: i64| async move {
        Ok::<u64, StoreError>(
            db.execute_raw(stmt(db, sql, vec![before.into()]))
                .await?
                .rows_affected(),
        )
    };
    let old_sessions = now_ms - 7 * DAY_MS;
    let used_tokens = run(
        "DELETE FROM refresh_tokens WHERE used_at_ms IS NOT NULL AND used_at_ms < ?",
        now_ms - DAY_MS,
    )
    .await?;
    let orphaned_tokens = run(
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE expires_at_ms < ?)",
        old_sessions,
    )
    .await?;
    Ok(Purged {
        jobs: run(
            "DELETE FROM jobs WHERE state = 'done' AND updated_at_ms < ?",
            now_ms - 7 * DAY_MS,
        )
        .await?,
        webhook_events: run(
            "DELETE FROM webhook_events WHERE received_at_ms < ?",
            now_ms - 30 * DAY_MS,
        )
        .await?,
        refresh_tokens: used_tokens + orphaned_tokens,
        sessions: run("DELETE FROM sessions WHERE expires_at_ms < ?", old_sessions).await?,
        otp_sends: run(
            "DELETE FROM otp_sends WHERE sent_at_ms < ?",
            now_ms - DAY_MS,
        )
        .await?,
        rate_limits: super::rate_limits::purge(db, now_ms).await?,
    })
}

/// Purges once at start and then hourly, for as long as the service runs.
pub fn spawn(db: DatabaseConnection) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match purge(&db, chrono::Utc::now().timestamp_millis()).await {
                Ok(purged) => tracing::debug!(?purged, "housekeeping done"),
                Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
            }
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        }
    })
}
