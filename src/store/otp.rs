//! Our own count of one-time codes sent and tried, per phone. Okya enforces its rules
//! too; keeping ours means abuse is contained even if an upstream is lax, and every
//! answer is the same whether or not the phone has an account.

use super::{StoreError, sql::stmt};
use sea_orm::ConnectionTrait;

/// When the phone was last sent a code, and how many it was sent since `since_ms`.
pub async fn recent_sends(
    db: &impl ConnectionTrait,
    phone: &str,
    since_ms: i64,
) -> Result<(Option<i64>, i64), StoreError> {
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT MAX(sent_at_ms) AS last, COUNT(*) AS n FROM otp_sends WHERE phone = ? AND sent_at_ms >= ?",
            vec![phone.into(), since_ms.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok((None, 0));
    };
    let last: Option<i64> = row.try_get("", "last")?;
    let count: i64 = row.try_get("", "n")?;
    Ok((last, count))
}

/// Records a code sent and starts a fresh challenge: new expiry, no failed tries.
pub async fn record_send(
    db: &impl ConnectionTrait,
    phone: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    db.execute_raw(stmt(
        db,
        "INSERT INTO otp_sends (id, phone, sent_at_ms) VALUES (?, ?, ?)",
        vec![
            uuid::Uuid::new_v4().to_string().into(),
            phone.into(),
            now_ms.into(),
        ],
    ))
    .await?;
    db.execute_raw(stmt(
        db,
        "INSERT INTO otp_challenges (phone, issued_at_ms, failed_attempts) VALUES (?, ?, 0) \
         ON CONFLICT (phone) DO UPDATE SET issued_at_ms = excluded.issued_at_ms, failed_attempts = 0",
        vec![phone.into(), now_ms.into()],
    ))
    .await?;
    // Sends older than a day no longer matter to any limit.
    db.execute_raw(stmt(
        db,
        "DELETE FROM otp_sends WHERE phone = ? AND sent_at_ms < ?",
        vec![phone.into(), (now_ms - 86_400_000).into()],
    ))
    .await?;
    Ok(())
}

/// The outcome of reserving one try at a code.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The try may go ahead.
    Allowed,
    /// No code was sent to this phone (or it was used).
    NoChallenge,
    Expired,
    /// The code died after too many wrong tries.
    Exhausted,
}

/// Reserves a try before the code is checked, atomically, so parallel guesses cannot
/// exceed `max_attempts`.
pub async fn reserve_attempt(
    db: &impl ConnectionTrait,
    phone: &str,
    now_ms: i64,
    ttl_ms: i64,
    max_attempts: i32,
) -> Result<Attempt, StoreError> {
    let updated = db
        .execute_raw(stmt(
            db,
            "UPDATE otp_challenges SET failed_attempts = failed_attempts + 1 \
             WHERE phone = ? AND failed_attempts < ? AND issued_at_ms >= ?",
            vec![phone.into(), max_attempts.into(), (now_ms - ttl_ms).into()],
        ))
        .await?;
    if updated.rows_affected() == 1 {
        return Ok(Attempt::Allowed);
    }
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT issued_at_ms, failed_attempts FROM otp_challenges WHERE phone = ?",
            vec![phone.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(Attempt::NoChallenge);
    };
    let issued: i64 = row.try_get("", "issued_at_ms")?;
    let failed: i32 = row.try_get("", "failed_attempts")?;
    Ok(if failed >= max_attempts {
        Attempt::Exhausted
    } else if issued < now_ms - ttl_ms {
        Attempt::Expired
    } else {
        Attempt::NoChallenge
    })
}

/// The code was right: it cannot be used again.
pub async fn finish(db: &impl ConnectionTrait, phone: &str) -> Result<(), StoreError> {
    db.execute_raw(stmt(
        db,
        "DELETE FROM otp_challenges WHERE phone = ?",
        vec![phone.into()],
    ))
    .await?;
    Ok(())
}
