//! The shared half of the rate limits: one GCRA bucket per key in `rate_limits`, updated
//! by one atomic statement, so every instance on the database draws on the same bucket.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT, Unix ms). A request
//! costing `interval` is let through when `max(TAT, now) + interval - now <= limit`
//! (`limit` = burst × interval), and then moves the TAT to `max(TAT, now) + add`. The
//! decision and the write are one `INSERT … ON CONFLICT DO UPDATE … RETURNING`, which both
//! SQLite (3.35+) and PostgreSQL run atomically per row, and in which every `SET`
//! expression reads the row as it was before the statement.

use super::{StoreError, sql::stmt};
use sea_orm::ConnectionTrait;

/// What one draw on a bucket costs and how much it may hold, all in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// The time one request uses up (`3600 s / per_hour`).
    pub interval_ms: i64,
    /// How far ahead of now the TAT may run: burst × interval.
    pub limit_ms: i64,
    /// What a request let through adds to the TAT: `interval_ms` to take a token, 0 only to
    /// ask whether one is there.
    pub add_ms: i64,
}

/// The answer for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; one request would be let through after this many milliseconds.
    Refused {
        retry_after_ms: i64,
    },
}

const DRAW: &str = "INSERT INTO rate_limits (key, tat_ms, allowed) VALUES (?, ?, TRUE) \
     ON CONFLICT (key) DO UPDATE SET \
       allowed = ((CASE WHEN rate_limits.tat_ms > ? THEN rate_limits.tat_ms ELSE ? END) + ? - ? <= ?), \
       tat_ms = CASE WHEN (CASE WHEN rate_limits.tat_ms > ? THEN rate_limits.tat_ms ELSE ? END) + ? - ? <= ? \
                     THEN (CASE WHEN rate_limits.tat_ms > ? THEN rate_limits.tat_ms ELSE ? END) + ? \
                     ELSE rate_limits.tat_ms END \
     RETURNING tat_ms, allowed";

/// Draws on `key`'s bucket at `now_ms`. A key never seen (or long idle) always has room:
/// `limit_ms` is at least one interval.
pub async fn draw(
    db: &impl ConnectionTrait,
    key: &str,
    now_ms: i64,
    draw: Draw,
) -> Result<Verdict, StoreError> {
    let Draw {
        interval_ms,
        limit_ms,
        add_ms,
    } = draw;
    let values = vec![
        key.into(),
        (now_ms + add_ms).into(),
        // allowed = …
        now_ms.into(),
        now_ms.into(),
        interval_ms.into(),
        now_ms.into(),
        limit_ms.into(),
        // tat_ms = CASE WHEN …
        now_ms.into(),
        now_ms.into(),
        interval_ms.into(),
        now_ms.into(),
        limit_ms.into(),
        // THEN …
        now_ms.into(),
        now_ms.into(),
        add_ms.into(),
    ];
    let row = db
        .query_one_raw(stmt(db, DRAW, values))
        .await?
        .ok_or_else(|| StoreError::Corrupt("the rate limit upsert returned no row".into()))?;
    let tat_ms: i64 = row.try_get("", "tat_ms")?;
    let allowed: bool = row.try_get("", "allowed")?;
    if allowed {
        return Ok(Verdict::Allowed);
    }
    // Refused: the TAT is as it was; the request would fit once `tat + interval - limit`.
    Ok(Verdict::Refused {
        retry_after_ms: (tat_ms.max(now_ms) + interval_ms - limit_ms - now_ms).max(1),
    })
}

/// Forgets buckets whose TAT has passed: they are full again, as if never used.
pub async fn purge(db: &impl ConnectionTrait, now_ms: i64) -> Result<u64, StoreError> {
    Ok(db
        .execute_raw(stmt(
            db,
            "DELETE FROM rate_limits WHERE tat_ms < ?",
            vec![now_ms.into()],
        ))
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseSettings;

    async fn db() -> (tempfile::TempDir, sea_orm::DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = crate::store::connect(&url, &DatabaseSettings::default())
            .await
            .unwrap();
        crate::store::migrate(&db).await.unwrap();
        (dir, db)
    }

    /// Burst 3, one per second.
    const TAKE: Draw = Draw {
        interval_ms: 1_000,
        limit_ms: 3_000,
        add_ms: 1_000,
    };
    const PEEK: Draw = Draw { add_ms: 0, ..TAKE };

    #[tokio::test]
    async fn a_bucket_lets_its_burst_through_then_one_per_interval() {
        let (_dir, db) = db().await;
        let t = 1_000_000;
        for _ in 0..3 {
            assert_eq!(draw(&db, "k", t, TAKE).await.unwrap(), Verdict::Allowed);
        }
        // TAT is t + 3 s: the next fits once it is t + 1 s.
        assert_eq!(
            draw(&db, "k", t, TAKE).await.unwrap(),
            Verdict::Refused {
                retry_after_ms: 1_000
            }
        );
        assert_eq!(
            draw(&db, "k", t + 400, TAKE).await.unwrap(),
            Verdict::Refused {
                retry_after_ms: 600
            },
            "a refusal takes nothing"
        );
        assert_eq!(draw(&db, "other", t, TAKE).await.unwrap(), Verdict::Allowed);
        assert_eq!(
            draw(&db, "k", t + 1_000, TAKE).await.unwrap(),
            Verdict::Allowed
        );
        assert!(matches!(
            draw(&db, "k", t + 1_000, TAKE).await.unwrap(),
            Verdict::Refused { .. }
        ));
        // Idle for the whole burst: full again.
        for _ in 0..3 {
            assert_eq!(
                draw(&db, "k", t + 10_000, TAKE).await.unwrap(),
                Verdict::Allowed
            );
        }
        assert_eq!(purge(&db, t + 20_000).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_peek_takes_nothing() {
        let (_dir, db) = db().await;
        let t = 5_000_000;
        for _ in 0..10 {
            assert_eq!(draw(&db, "k", t, PEEK).await.unwrap(), Verdict::Allowed);
        }
        // Recorded whatever the room (a decline happened): four, one more than the burst.
        let record = Draw {
            limit_ms: i64::MAX / 4,
            ..TAKE
        };
        for _ in 0..4 {
            assert_eq!(draw(&db, "k", t, record).await.unwrap(), Verdict::Allowed);
        }
        assert_eq!(
            draw(&db, "k", t, PEEK).await.unwrap(),
            Verdict::Refused {
                retry_after_ms: 2_000
            }
        );
    }
}
