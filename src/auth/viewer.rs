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
    /// A token was presented but is malformed, expired, tampered with, or its session
    /// revoked.
    Rejected,
    /// The token is well signed and unexpired but its session could not be looked up (the
    /// database failed or its pool had no connection to spare): who is asking is unknown
    /// for now, which is our fault, not the caller's.
    Unavailable,
}

/// Why a viewer is not a signed-in customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotSignedIn {
    /// No token, or one that is not valid: the caller should sign in (or refresh).
    #[error("not signed in")]
    Unauthenticated,
    /// The session could not be checked right now; the token may well be good.
    #[error("the session could not be checked")]
    Unavailable,
}

impl Viewer {
    /// Reads an `Authorization` value (an HTTP header, or the credential a websocket's
    /// `connection_init` carries) and checks the token and its session.
    ///
    /// An absent or blank value is anonymous. Anything else must be `Bearer` credentials as
    /// [`bearer_token`] reads them, or the caller is [`Viewer::Rejected`].
    pub async fn from_authorization(
        header: Option<&str>,
        keys: &TokenKeys,
        db: &DatabaseConnection,
    ) -> Viewer {
        let Some(header) = header.map(trim_ows).filter(|h| !h.is_empty()) else {
            return Viewer::Anonymous;
        };
        let Some(token) = bearer_token(header) else {
            return Viewer::Rejected;
        };
        let Ok(claims) = keys.verify(token) else {
            return Viewer::Rejected;
        };
        match store::sessions::find(db, &claims.sid).await {
            Ok(Some(session))
                if session.revoked_at_ms.is_none()
                    && session.expires_at_ms > now_ms()
                    && session.customer_id.as_str() == claims.sub =>
            {
                Viewer::Customer {
                    id: CustomerId::from_upstream(claims.sub),
                    session_id: claims.sid,
                }
            }
            Ok(_) => Viewer::Rejected,
            Err(e) => {
                // Failing closed (a revoked token must not get through while the database
                // is away), but not as a bad token: the app would sign its customer out.
                tracing::error!(error = %e, "session lookup failed");
                Viewer::Unavailable
            }
        }
    }

    /// The signed-in customer.
    pub fn customer(&self) -> Result<&CustomerId, NotSignedIn> {
        self.session().map(|(id, _)| id)
    }

    /// The signed-in customer and the session their token names.
    pub fn session(&self) -> Result<(&CustomerId, &str), NotSignedIn> {
        match self {
            Viewer::Customer { id, session_id } => Ok((id, session_id)),
            Viewer::Anonymous | Viewer::Rejected => Err(NotSignedIn::Unauthenticated),
            Viewer::Unavailable => Err(NotSignedIn::Unavailable),
        }
    }
}

/// Strips the optional whitespace (SP / HTAB) around a field value, which RFC 9110 §5.5
/// says is not part of it.
fn trim_ows(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// The token of `Bearer` credentials, as RFC 9110 §11.4 and RFC 6750 §2.1 define them:
/// `credentials = auth-scheme 1*SP token68`, the scheme compared case-insensitively
/// (RFC 9110 §11.1) and the token `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
/// *"="`. `None` for another scheme or anything that does not match.
pub fn bearer_token(credentials: &str) -> Option<&str> {
    let credentials = trim_ows(credentials);
    let (scheme, rest) = credentials.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    is_token68(token).then_some(token)
}

/// RFC 9110 §11.2's `token68`, which RFC 6750 calls `b64token`.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_credentials_are_read_as_the_rfcs_say() {
        for (credentials, token) in [
            ("Bearer abc.def-ghi_", Some("abc.def-ghi_")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("Bearer    abc", Some("abc")),
            (" Bearer abc\t", Some("abc")),
            ("Bearer a+b/c==", Some("a+b/c==")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearer ==", None),
            ("Bearerabc", None),
            ("Bearer\tabc", None),
            ("Bearer abc def", None),
            ("Bearer a=b", None),
            ("Bearer \"abc\"", None),
            ("Basic abc", None),
            ("", None),
        ] {
            assert_eq!(bearer_token(credentials), token, "{credentials:?}");
        }
    }
}
