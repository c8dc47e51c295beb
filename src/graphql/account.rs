//! Create Account, sign-in by one-time code, sessions, and `me`.

use super::{
    context,
    errors::{ApiError, UserError, UserErrorCode},
};
use crate::{
    auth::sessions::{self, SessionError, TokenPair},
    domain::{CustomerId, Phone},
    flows::create_account::{self, FlowError, Refusal, Registration},
    rate_limit::Limit,
    store::{self, entities::customer},
    upstream::okya::auth::OtpPurpose,
};
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};

pub struct CustomerObject(pub customer::Model);

/// A signed-in customer.
#[Object(name = "Customer")]
impl CustomerObject {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn phone(&self) -> &str {
        &self.0.phone
    }

    async fn first_name(&self) -> &str {
        &self.0.first_name
    }

    async fn last_name(&self) -> &str {
        &self.0.last_name
    }

    /// True once the customer has entered the code sent at registration.
    async fn confirmed(&self) -> bool {
        self.0.confirmed
    }

    /// The customer's orders, newest first.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<async_graphql::connection::Connection<String, super::orders::OrderObject>> {
        super::orders::customer_orders(ctx, &self.0.id, first, after).await
    }

    /// The SessionM loyalty account; null for a moment after registration, while the
    /// account is being linked.
    async fn loyalty(&self) -> Result<Option<LoyaltyAccount>> {
        if self.0.sessionm_user_id.is_none() {
            return Ok(None);
        }
        Ok(Some(LoyaltyAccount {
            customer_id: self.0.id.clone(),
        }))
    }
}

/// Points, tier and vouchers from SessionM, read with one wallet lookup per request.
pub struct LoyaltyAccount {
    customer_id: CustomerId,
}

#[Object]
impl LoyaltyAccount {
    /// The points balance. An error (`INTERNAL`, logged) when SessionM's answer carried no
    /// points figure: an unknown balance is never shown as 0.
    async fn points_balance(&self, ctx: &Context<'_>) -> Result<i64> {
        let wallet = super::vouchers::wallet(ctx, &self.customer_id).await?;
        match wallet {
            // Not linked yet: `loyalty` itself is null then, so this is not reached.
            None => Ok(0),
            Some(w) => w.user.available_points.ok_or_else(|| {
                super::errors::ApiError::from(crate::upstream::UpstreamError::Protocol {
                    system: crate::upstream::System::Sessionm,
                    operation: "pos.lookup",
                    reason: "no points figure in the member's lookup".into(),
                })
                .into()
            }),
        }
    }

    async fn tier(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let wallet = super::vouchers::wallet(ctx, &self.customer_id).await?;
        Ok(wallet.and_then(|w| w.user.tier))
    }

    /// Every voucher held, expired ones included.
    async fn vouchers(&self, ctx: &Context<'_>) -> Result<Vec<super::vouchers::VoucherObject>> {
        Ok(super::vouchers::vouchers_of(
            super::vouchers::wallet(ctx, &self.customer_id).await?,
        ))
    }
}

#[derive(InputObject)]
pub struct AccountRegisterInput {
    pub email: String,
    /// International form, e.g. `+16265550100`.
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
}

#[derive(InputObject)]
pub struct AccountConfirmInput {
    pub phone: String,
    pub code: String,
}

#[derive(InputObject)]
pub struct AccountResendOtpInput {
    pub phone: String,
}

#[derive(InputObject)]
pub struct SignInRequestOtpInput {
    pub phone: String,
}

#[derive(InputObject)]
pub struct SignInInput {
    pub phone: String,
    pub code: String,
}

#[derive(InputObject)]
pub struct TokenRefreshInput {
    pub refresh_token: String,
}

#[derive(SimpleObject)]
pub struct AccountRegisterPayload {
    /// The new, unconfirmed customer; a code is on its way to their phone.
    pub customer: Option<CustomerObject>,
    pub user_errors: Vec<UserError>,
}

/// A signed-in session: send `accessToken` as `Authorization: Bearer …`; when it expires,
/// exchange `refreshToken` with `tokenRefresh` (each refresh token works once).
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub customer: Option<CustomerObject>,
    pub access_token: Option<String>,
    /// Unix seconds.
    pub access_token_expires_at: Option<i64>,
    pub refresh_token: Option<String>,
    pub user_errors: Vec<UserError>,
}

impl AuthPayload {
    fn failed(user_errors: Vec<UserError>) -> Self {
        Self {
            customer: None,
            access_token: None,
            access_token_expires_at: None,
            refresh_token: None,
            user_errors,
        }
    }

    fn signed_in(customer: Option<customer::Model>, tokens: TokenPair) -> Self {
        Self {
            customer: customer.map(CustomerObject),
            access_token: Some(tokens.access_token),
            access_token_expires_at: Some(tokens.access_expires_at),
            refresh_token: Some(tokens.refresh_token),
            user_errors: Vec::new(),
        }
    }
}

/// A payload with nothing to return but the outcome.
#[derive(SimpleObject)]
pub struct OutcomePayload {
    pub user_errors: Vec<UserError>,
}

/// `userErrors` for refusals; GraphQL errors for everything unexpected.
fn user_errors(err: FlowError) -> Result<Vec<UserError>> {
    let refusals = match err {
        FlowError::Refused(refusals) => refusals,
        FlowError::Upstream(e) => return Err(ApiError::from(e).into()),
        FlowError::Store(e) => return Err(ApiError::from(e).into()),
        FlowError::Session(e) => {
            tracing::error!(error = %e, "session failed");
            return Err(ApiError::Internal.into());
        }
        FlowError::Inconsistent(e) => {
            tracing::error!(error = %e, "account flow failed");
            return Err(ApiError::Internal.into());
        }
    };
    Ok(refusals
        .into_iter()
        .map(|refusal| {
            let (code, field, message) = match refusal {
                Refusal::InvalidEmail => (
                    UserErrorCode::InvalidEmail,
                    "email",
                    "Enter a valid email address.".to_owned(),
                ),
                Refusal::InvalidPhone => (
                    UserErrorCode::InvalidPhone,
                    "phone",
                    "Enter the phone number in international form, e.g. +16265550100.".to_owned(),
                ),
                Refusal::InvalidFirstName => (
                    UserErrorCode::InvalidName,
                    "firstName",
                    "Enter a first name of up to 50 characters.".to_owned(),
                ),
                Refusal::InvalidLastName => (
                    UserErrorCode::InvalidName,
                    "lastName",
                    "Enter a last name of up to 50 characters.".to_owned(),
                ),
                Refusal::AccountExists => (
                    UserErrorCode::AccountExists,
                    "",
                    "An account with this email or phone number already exists. Sign in instead."
                        .to_owned(),
                ),
                Refusal::OtpInvalid => (
                    UserErrorCode::OtpInvalid,
                    "code",
                    "That code is not right. Check it and try again.".to_owned(),
                ),
                Refusal::OtpExpired => (
                    UserErrorCode::OtpExpired,
                    "code",
                    "That code has expired. Request a new one.".to_owned(),
                ),
                Refusal::OtpAttemptsExceeded => (
                    UserErrorCode::OtpAttemptsExceeded,
                    "code",
                    "Too many wrong codes. Request a new one.".to_owned(),
                ),
                Refusal::OtpThrottled { retry_after_secs } => (
                    UserErrorCode::OtpThrottled,
                    "phone",
                    format!("A code was sent recently. Try again in {retry_after_secs} seconds."),
                ),
            };
            let path: Vec<&str> = if field.is_empty() {
                vec!["input"]
            } else {
                vec!["input", field]
            };
            UserError::new(code, &path, message)
        })
        .collect())
}

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in customer; null without a token. An expired or revoked token is an
    /// `UNAUTHENTICATED` error, so the app knows to refresh.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<CustomerObject>> {
        let viewer = context::viewer(ctx);
        if matches!(viewer, crate::auth::Viewer::Anonymous) {
            return Ok(None);
        }
        let id = context::customer(ctx)?;
        let state = context::state(ctx)?;
        let customer = store::customers::find(&state.db, id)
            .await
            .map_err(ApiError::from)?;
        Ok(customer.map(CustomerObject))
    }
}

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Creates an account and sends a confirmation code to the phone. Codes sent from one
    /// address are rate-limited (`RATE_LIMITED` with `extensions.retryAfterSeconds`).
    async fn account_register(
        &self,
        ctx: &Context<'_>,
        input: AccountRegisterInput,
    ) -> Result<AccountRegisterPayload> {
        limit_sends(ctx).await?;
        let state = context::state(ctx)?;
        let registration = Registration {
            email: &input.email,
            phone: &input.phone,
            first_name: &input.first_name,
            last_name: &input.last_name,
        };
        match create_account::register(state, registration).await {
            Ok(customer) => Ok(AccountRegisterPayload {
                customer: Some(CustomerObject(customer)),
                user_errors: Vec::new(),
            }),
            Err(e) => Ok(AccountRegisterPayload {
                customer: None,
                user_errors: user_errors(e)?,
            }),
        }
    }

    /// Confirms the account with the code it was sent, and signs the customer in. Codes
    /// tried per phone and per address are rate-limited (`RATE_LIMITED`).
    async fn account_confirm(
        &self,
        ctx: &Context<'_>,
        input: AccountConfirmInput,
    ) -> Result<AuthPayload> {
        verify(ctx, &input.phone, &input.code).await
    }

    /// Sends a new confirmation code (rate-limited per address, as `accountRegister`).
    async fn account_resend_otp(
        &self,
        ctx: &Context<'_>,
        input: AccountResendOtpInput,
    ) -> Result<OutcomePayload> {
        send(ctx, &input.phone, OtpPurpose::Confirm).await
    }

    /// Sends a sign-in code to the phone (the answer is the same whether or not it has an
    /// account); rate-limited per address, as `accountRegister`.
    async fn sign_in_request_otp(
        &self,
        ctx: &Context<'_>,
        input: SignInRequestOtpInput,
    ) -> Result<OutcomePayload> {
        send(ctx, &input.phone, OtpPurpose::SignIn).await
    }

    /// Signs in with the code sent by `signInRequestOtp`; rate-limited as `accountConfirm`.
    async fn sign_in(&self, ctx: &Context<'_>, input: SignInInput) -> Result<AuthPayload> {
        verify(ctx, &input.phone, &input.code).await
    }

    /// Exchanges a refresh token for a new access and refresh token. Each refresh token
    /// works once; presenting one twice ends the session.
    async fn token_refresh(
        &self,
        ctx: &Context<'_>,
        input: TokenRefreshInput,
    ) -> Result<AuthPayload> {
        let state = context::state(ctx)?;
        match sessions::refresh(&state.db, &state.token_keys, input.refresh_token.trim()).await {
            Ok((customer_id, tokens)) => {
                let customer = store::customers::find(&state.db, &customer_id)
                    .await
                    .map_err(ApiError::from)?;
                Ok(AuthPayload::signed_in(customer, tokens))
            }
            Err(SessionError::RefreshRejected) => Ok(AuthPayload::failed(vec![UserError::new(
                UserErrorCode::RefreshTokenInvalid,
                &["input", "refreshToken"],
                "This session has ended. Sign in again.",
            )])),
            Err(SessionError::Store(e)) => Err(ApiError::from(e).into()),
            Err(SessionError::Signing) => Err(ApiError::Internal.into()),
        }
    }

    /// Ends this session: its access and refresh tokens stop working at once.
    async fn sign_out(&self, ctx: &Context<'_>) -> Result<OutcomePayload> {
        let state = context::state(ctx)?;
        let session_id = context::session(ctx)?;
        sessions::end(&state.db, session_id)
            .await
            .map_err(|e| match e {
                SessionError::Store(e) => ApiError::from(e),
                _ => ApiError::Internal,
            })?;
        Ok(OutcomePayload {
            user_errors: Vec::new(),
        })
    }
}

/// Codes sent from one address: registration, resend and sign-in alike (per phone, the
/// flow's own `OTP_THROTTLED` applies).
async fn limit_sends(ctx: &Context<'_>) -> Result<(), ApiError> {
    let address = context::client(ctx).key();
    context::rate_limit(ctx, &[(Limit::OtpSendPerAddress, address.as_deref())]).await
}

/// Codes tried from one address and against one phone, whichever code: the per-code
/// count (`OTP_ATTEMPTS_EXCEEDED`) starts again with each new code, this does not.
async fn limit_tries(ctx: &Context<'_>, phone: &str) -> Result<(), ApiError> {
    let address = context::client(ctx).key();
    // A phone that does not parse has no account to guess into; its tries count against
    // the address only.
    let phone = Phone::parse(phone);
    context::rate_limit(
        ctx,
        &[
            (Limit::OtpVerifyPerAddress, address.as_deref()),
            (Limit::OtpVerifyPerPhone, phone.as_ref().map(Phone::as_str)),
        ],
    )
    .await
}

async fn verify(ctx: &Context<'_>, phone: &str, code: &str) -> Result<AuthPayload> {
    limit_tries(ctx, phone).await?;
    let state = context::state(ctx)?;
    match create_account::verify_code(state, phone, code).await {
        Ok((customer, tokens)) => Ok(AuthPayload::signed_in(Some(customer), tokens)),
        Err(e) => Ok(AuthPayload::failed(user_errors(e)?)),
    }
}

async fn send(ctx: &Context<'_>, phone: &str, purpose: OtpPurpose) -> Result<OutcomePayload> {
    limit_sends(ctx).await?;
    let state = context::state(ctx)?;
    match create_account::send_code(state, phone, purpose).await {
        Ok(()) => Ok(OutcomePayload {
            user_errors: Vec::new(),
        }),
        Err(e) => Ok(OutcomePayload {
            user_errors: user_errors(e)?,
        }),
    }
}
