//! Access tokens: HS256 JWTs with the customer, the session and an expiry.

use crate::config::AuthSettings;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

const ISSUER: &str = "cbtl-bff";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The customer.
    pub sub: String,
    /// The session; revoking it ends this token before it expires.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs: crate::domain::millis(settings.access_token_ttl()) / 1_000,
        }
    }

    /// A signed access token for the session, and when it expires (Unix seconds).
    pub fn issue(
        &self,
        customer_id: &str,
        session_id: &str,
        now_secs: i64,
    ) -> Result<(String, i64), TokenError> {
        let claims = Claims {
            sub: customer_id.to_owned(),
            sid: session_id.to_owned(),
            iat: now_secs,
            exp: now_secs + self.ttl_secs,
            iss: ISSUER.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)?;
        Ok((token, claims.exp))
    }

    /// Checks signature, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

/// A new refresh token: 244 bits from the operating system's random source.
pub fn new_refresh_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("rt_{}{}", a.simple(), b.simple())
}

/// What the database keeps of a refresh token.
pub fn hash_refresh_token(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keys(secret: &str, ttl: u64) -> TokenKeys {
        TokenKeys::new(&AuthSettings {
            jwt_secret: SecretString::from(secret),
            access_token_ttl_secs: ttl,
            ..AuthSettings::default()
        })
    }

    #[test]
    fn tokens_verify_until_they_expire() {
        let k = keys("k".repeat(32).as_str(), 60);
        let now = chrono::Utc::now().timestamp();
        let (token, exp) = k.issue("acc_1", "ses_1", now).unwrap();
        assert_eq!(exp, now + 60);
        let claims = k.verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.sid.as_str()),
            ("acc_1", "ses_1")
        );
        let (old, _) = k.issue("acc_1", "ses_1", now - 120).unwrap();
        assert_eq!(k.verify(&old), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_invalid() {
        let k = keys("k".repeat(32).as_str(), 60);
        let other = keys("o".repeat(32).as_str(), 60);
        let now = chrono::Utc::now().timestamp();
        let (token, _) = k.issue("acc_1", "ses_1", now).unwrap();
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert_eq!(k.verify(&parts.join(".")), Err(TokenError::Invalid));
        assert_eq!(k.verify("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn refresh_tokens_are_unique_and_hashed() {
        let a = new_refresh_token();
        assert_ne!(a, new_refresh_token());
        assert_eq!(hash_refresh_token(&a).len(), 64);
        assert_ne!(hash_refresh_token(&a), a);
    }
}
