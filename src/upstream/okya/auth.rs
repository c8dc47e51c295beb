//! Okya Auth: accounts, one-time codes, and the SessionM id saved on the account.

use super::{OkyaClient, is_code};
use crate::upstream::{Call, System, UpstreamError, join, parse_plain_error};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
    pub confirmed: bool,
    pub loyalty_id: Option<String>,
}

impl Account {
    /// The account as our customer: its Okya Auth id is the customer's id everywhere.
    pub fn customer_id(&self) -> crate::domain::CustomerId {
        crate::domain::CustomerId::from_upstream(self.id.clone())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewAccount {
    pub email: String,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OtpSent {
    pub sent: bool,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    pub account: Account,
    pub otp: OtpSent,
}

#[derive(Deserialize)]
struct OtpEnvelope {
    otp: OtpSent,
}

#[derive(Deserialize)]
struct AccountEnvelope {
    account: Account,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OtpPurpose {
    Confirm,
    SignIn,
}

/// Okya Auth refusal codes callers act on.
pub mod codes {
    pub const ACCOUNT_EXISTS: &str = "account_exists";
    pub const OTP_INVALID: &str = "otp_invalid";
    pub const OTP_EXPIRED: &str = "otp_expired";
    pub const OTP_LOCKED: &str = "otp_locked";
    pub const OTP_THROTTLED: &str = "otp_throttled";
    pub const ACCOUNT_NOT_FOUND: &str = "account_not_found";
}

impl OkyaClient {
    fn auth_request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, join(&self.auth_base_url, path))
            .bearer_auth(self.api_key.expose_secret())
    }

    fn auth_call(&self, operation: &'static str) -> Call<'_> {
        Call {
            system: System::OkyaAuth,
            operation,
            parse_error: parse_plain_error,
            guard: &self.auth_guard,
        }
    }

    /// Registers an account; Okya sends the confirmation code. The idempotency key makes
    /// a retried registration return the first account instead of `account_exists`.
    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        account: &NewAccount,
        idempotency_key: &str,
    ) -> Result<Registered, UpstreamError> {
        let request = self
            .auth_request(Method::POST, "/auth/v1/accounts")
            .header("Idempotency-Key", idempotency_key)
            .json(account);
        self.auth_call("auth.accounts.create").json(request).await
    }

    /// Sends a code to the phone. Okya answers alike whether or not an account has it.
    #[tracing::instrument(skip_all, fields(purpose = ?purpose))]
    pub async fn send_otp(
        &self,
        phone: &str,
        purpose: OtpPurpose,
        idempotency_key: &str,
    ) -> Result<OtpSent, UpstreamError> {
        let request = self
            .auth_request(Method::POST, "/auth/v1/otp")
            .header("Idempotency-Key", idempotency_key)
            .json(&serde_json::json!({"phone": phone, "purpose": purpose}));
        let envelope: OtpEnvelope = self.auth_call("auth.otp.send").json(request).await?;
        Ok(envelope.otp)
    }

    /// Checks a code; on success the account is confirmed and returned.
    #[tracing::instrument(skip_all)]
    pub async fn verify_otp(&self, phone: &str, code: &str) -> Result<Account, UpstreamError> {
        let request = self
            .auth_request(Method::POST, "/auth/v1/otp/verify")
            .json(&serde_json::json!({"phone": phone, "code": code}));
        let envelope: AccountEnvelope = self.auth_call("auth.otp.verify").json(request).await?;
        Ok(envelope.account)
    }

    /// Saves the SessionM user id on the account; saving the same id again is a no-op.
    #[tracing::instrument(skip_all, fields(account_id = %account_id))]
    pub async fn save_loyalty_id(
        &self,
        account_id: &str,
        sessionm_user_id: &str,
    ) -> Result<Account, UpstreamError> {
        let request = self
            .auth_request(
                Method::PUT,
                &format!("/auth/v1/accounts/{account_id}/loyalty"),
            )
            .json(&serde_json::json!({"provider": "sessionm", "user_id": sessionm_user_id}));
        let envelope: AccountEnvelope = self
            .auth_call("auth.accounts.loyalty")
            .json(request)
            .await?;
        Ok(envelope.account)
    }

    #[tracing::instrument(skip_all, fields(account_id = %account_id))]
    pub async fn account(&self, account_id: &str) -> Result<Option<Account>, UpstreamError> {
        let request = self.auth_request(Method::GET, &format!("/auth/v1/accounts/{account_id}"));
        match self
            .auth_call("auth.accounts.get")
            .json::<AccountEnvelope>(request)
            .await
        {
            Ok(envelope) => Ok(Some(envelope.account)),
            Err(e) if is_code(&e, codes::ACCOUNT_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
