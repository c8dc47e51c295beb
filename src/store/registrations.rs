//! Registrations in progress, and the `Idempotency-Key` each is sent to Okya Auth under.
//!
//! Okya replays a key's first answer for as long as it remembers the key. That replay is
//! what lets an app retry a registration whose answer was lost, and it must serve only
//! that: a key lives while its registration's code could still confirm the account
//! (`window_ms`, the code's lifetime) and until the account is confirmed. After that the
//! same details are sent under a new key, and Okya answers `account_exists` as it would
//! to anyone.

use super::{StoreError, sql::stmt};
use sea_orm::ConnectionTrait;

/// The key one registration attempt is sent under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub idempotency_key: String,
    /// An earlier request with these details started within the window, so Okya may
    /// answer with its first, possibly stale, answer.
    pub replay: bool,
    /// The account and the code this registration sent are already recorded: a replay
    /// must not record the send again (that would restart the code's count of wrong tries
    /// with no new code sent).
    pub answered: bool,
}

/// Finds the live attempt for `fingerprint` (a hash of the registration's details), or
/// starts one with a new key. Attempts older than `window_ms` are forgotten first.
pub async fn begin(
    db: &impl ConnectionTrait,
    fingerprint: &str,
    phone: &str,
    now_ms: i64,
    window_ms: i64,
) -> Result<Attempt, StoreError> {
    db.execute_raw(stmt(
        db,
        "DELETE FROM account_registrations WHERE started_at_ms < ?",
        vec![(now_ms - window_ms).into()],
    ))
    .await?;
    let proposed = format!("register-{}", uuid::Uuid::new_v4().simple());
    // A concurrent request may forget a just-expired row between our insert and our read;
    // a second round then inserts afresh.
    for _ in 0..2 {
        db.execute_raw(stmt(
            db,
            "INSERT INTO account_registrations (fingerprint, idempotency_key, phone, started_at_ms, answered_at_ms) \
             VALUES (?, ?, ?, ?, NULL) ON CONFLICT (fingerprint) DO NOTHING",
            vec![
                fingerprint.into(),
                proposed.as_str().into(),
                phone.into(),
                now_ms.into(),
            ],
        ))
        .await?;
        let row = db
            .query_one_raw(stmt(
                db,
                "SELECT idempotency_key, answered_at_ms FROM account_registrations WHERE fingerprint = ?",
                vec![fingerprint.into()],
            ))
            .await?;
        if let Some(row) = row {
            let idempotency_key: String = row.try_get("", "idempotency_key")?;
            let answered_at: Option<i64> = row.try_get("", "answered_at_ms")?;
            return Ok(Attempt {
                replay: idempotency_key != proposed,
                answered: answered_at.is_some(),
                idempotency_key,
            });
        }
    }
    Err(StoreError::Corrupt(
        "a registration attempt vanished as it was recorded".into(),
    ))
}

/// Marks the attempt's account and code as recorded.
pub async fn answered(
    db: &impl ConnectionTrait,
    fingerprint: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    db.execute_raw(stmt(
        db,
        "UPDATE account_registrations SET answered_at_ms = ? WHERE fingerprint = ? AND answered_at_ms IS NULL",
        vec![now_ms.into(), fingerprint.into()],
    ))
    .await?;
    Ok(())
}

/// Forgets every attempt for `phone`: its account is confirmed, so no replay may answer
/// for it any more.
pub async fn retire(db: &impl ConnectionTrait, phone: &str) -> Result<(), StoreError> {
    db.execute_raw(stmt(
        db,
        "DELETE FROM account_registrations WHERE phone = ?",
        vec![phone.into()],
    ))
    .await?;
    Ok(())
}
