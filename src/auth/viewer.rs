//! The caller of one request, resolved once from its bearer token.

use super::{now_ms, tokens::TokenKeys};
use crate::{domain::CustomerId, store};
use sea_orm::DatabaseConnection;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// No token was presented.
    Anonymous,
    /// A valid token of a live session.
    Customer { id: CustomerId, session_id: String },
    /// A token was presented but is expired, tampered with, or its session revoked.
    Rejected,
}

impl Viewer {
    /// Reads `Bearer <token>` (from an `Authorization` header or a websocket
    /// `connection_init` payload) and checks the token and its session.
    pub async fn from_authorization(
        header: Option<&str>,
        keys: &TokenKeys,
        db: &DatabaseConnection,
    ) -> Viewer {
        let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
            return Viewer::Anonymous;
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Viewer::Rejected;
        };
        let Ok(claims) = keys.verify(token.trim()) else {
            return Viewer::Rejected;
        };
        match store::sessions::find(db, &claims.sid).await {
            Ok(Some(session))
                if session.revoked_at_ms.is_none()
                    && session.expires_at_ms > now_ms()
                    && session.customer_id == claims.sub =>
            {
                Viewer::Customer {
                    id: CustomerId::from_upstream(claims.sub),
                    session_id: claims.sid,
                }
            }
            Ok(_) => Viewer::Rejected,
            Err(e) => {
                // Failing closed: a database outage must not let a revoked token through.
                tracing::error!(error = %e, "session lookup failed");
                Viewer::Rejected
            }
        }
    }

    pub fn customer_id(&self) -> Option<&CustomerId> {
        match self {
            Viewer::Customer { id, .. } => Some(id),
            _ => None,
        }
    }
}
