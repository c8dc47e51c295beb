//! Sessions: sign-in creates one, refresh exchanges its refresh token for a new pair,
//! sign-out revokes it. A refresh token presented twice revokes the session: one of the
//! two presenters copied it.

use super::{
    now_ms,
    tokens::{TokenKeys, hash_refresh_token, new_refresh_token},
};
use crate::domain::CustomerId;
use crate::store::{self, StoreError};
use sea_orm::{DatabaseConnection, TransactionTrait};

/// What the app keeps after signing in.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub access_expires_at: i64,
    pub refresh_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("refresh token unknown, used, expired or revoked")]
    RefreshRejected,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("token signing failed")]
    Signing,
}

pub async fn start(
    db: &DatabaseConnection,
    keys: &TokenKeys,
    customer_id: &CustomerId,
    refresh_ttl: std::time::Duration,
) -> Result<TokenPair, SessionError> {
    let now = now_ms();
    let session_id = format!("ses_{}", uuid::Uuid::new_v4().simple());
    let refresh_token = new_refresh_token();
    let expires = now.saturating_add(crate::domain::millis(refresh_ttl));
    let txn = db.begin().await.map_err(StoreError::from)?;
    store::sessions::create(&txn, &session_id, customer_id, now, expires).await?;
    store::sessions::add_refresh_token(&txn, &hash_refresh_token(&refresh_token), &session_id, now)
        .await?;
    txn.commit().await.map_err(StoreError::from)?;
    let (access_token, access_expires_at) = keys
        .issue(customer_id.as_str(), &session_id, now / 1000)
        .map_err(|_| SessionError::Signing)?;
    Ok(TokenPair {
        access_token,
        access_expires_at,
        refresh_token,
    })
}

/// Exchanges a refresh token for a new pair in the same session.
pub async fn refresh(
    db: &DatabaseConnection,
    keys: &TokenKeys,
    refresh_token: &str,
) -> Result<(CustomerId, TokenPair), SessionError> {
    let now = now_ms();
    let hash = hash_refresh_token(refresh_token);
    let Some(token) = store::sessions::find_refresh_token(db, &hash).await? else {
        return Err(SessionError::RefreshRejected);
    };
    let Some(session) = store::sessions::find(db, &token.session_id).await? else {
        return Err(SessionError::RefreshRejected);
    };
    if session.revoked_at_ms.is_some() || session.expires_at_ms <= now {
        return Err(SessionError::RefreshRejected);
    }
    if !store::sessions::use_refresh_token(db, &hash, now).await? {
        tracing::warn!(session_id = %session.id, "refresh token presented twice; revoking the session");
        store::sessions::revoke(db, &session.id, now).await?;
        return Err(SessionError::RefreshRejected);
    }
    let next = new_refresh_token();
    store::sessions::add_refresh_token(db, &hash_refresh_token(&next), &session.id, now).await?;
    let (access_token, access_expires_at) = keys
        .issue(session.customer_id.as_str(), &session.id, now / 1000)
        .map_err(|_| SessionError::Signing)?;
    Ok((
        session.customer_id,
        TokenPair {
            access_token,
            access_expires_at,
            refresh_token: next,
        },
    ))
}

pub async fn end(db: &DatabaseConnection, session_id: &str) -> Result<(), SessionError> {
    store::sessions::revoke(db, session_id, now_ms()).await?;
    Ok(())
}
