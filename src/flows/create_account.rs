//! Create Account (seed steps 1–14), sign-in by one-time code, and the durable link of
//! the Okya account to a SessionM user.
//!
//! Register at Okya Auth (which sends the code) → answer the app at once → in the
//! background create the SessionM user and save its id on the Okya account → the
//! customer enters the code → confirmed, signed in.

use crate::{
    auth::{
        now_ms,
        sessions::{self, SessionError, TokenPair},
    },
    context::AppState,
    domain::{CustomerId, Email, PersonName, Phone, millis},
    jobs::JobError,
    store::{self, StoreError, customers::NewCustomer, entities::customer, otp::Attempt},
    upstream::{
        UpstreamError,
        okya::{
            auth::{self as okya_auth, Account, NewAccount, OtpPurpose},
            is_code,
        },
        sessionm::NewUser,
    },
};
use sea_orm::TransactionTrait;
use sha2::{Digest, Sha256};

pub const LINK_LOYALTY: &str = "link_loyalty";

/// Why a request was refused, in terms the customer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    InvalidEmail,
    InvalidPhone,
    InvalidFirstName,
    InvalidLastName,
    /// The email or the phone is taken; deliberately not saying which.
    AccountExists,
    /// A wrong code, or a phone with no code outstanding: answered alike.
    OtpInvalid,
    OtpExpired,
    OtpAttemptsExceeded,
    OtpThrottled {
        retry_after_secs: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("refused: {0:?}")]
    Refused(Vec<Refusal>),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Session(#[from] SessionError),
    /// An upstream contradicts itself; nothing the customer can do about it.
    #[error("inconsistent upstream: {0}")]
    Inconsistent(String),
}

fn refused(refusal: Refusal) -> FlowError {
    FlowError::Refused(vec![refusal])
}

impl From<sea_orm::DbErr> for FlowError {
    fn from(value: sea_orm::DbErr) -> Self {
        FlowError::Store(StoreError::from(value))
    }
}

pub struct Registration<'a> {
    pub email: &'a str,
    pub phone: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
}

/// Steps 1–9. Returns once Okya has the account and has sent the code; the SessionM link
/// is a durable job recorded with the customer.
#[tracing::instrument(skip_all)]
pub async fn register(
    state: &AppState,
    input: Registration<'_>,
) -> Result<customer::Model, FlowError> {
    let email = Email::parse(input.email);
    let phone = Phone::parse(input.phone);
    let first = PersonName::parse(input.first_name);
    let last = PersonName::parse(input.last_name);
    let mut refusals = Vec::new();
    if email.is_none() {
        refusals.push(Refusal::InvalidEmail);
    }
    if phone.is_none() {
        refusals.push(Refusal::InvalidPhone);
    }
    if first.is_none() {
        refusals.push(Refusal::InvalidFirstName);
    }
    if last.is_none() {
        refusals.push(Refusal::InvalidLastName);
    }
    let (Some(email), Some(phone), Some(first), Some(last)) = (email, phone, first, last) else {
        return Err(FlowError::Refused(refusals));
    };
    // No throttle check of ours here: an existing account must be answered as existing
    // (never as "code sent recently"), and Okya throttles the code it sends itself.
    let account = NewAccount {
        email: email.as_str().to_owned(),
        phone: phone.as_str().to_owned(),
        first_name: first.as_str().to_owned(),
        last_name: last.as_str().to_owned(),
    };
    // The same details within the window share a key, so an app retrying after a lost
    // answer gets the account it created rather than `account_exists`; nothing else may
    // reach that replay (see `store::registrations`).
    let fingerprint = hex::encode(Sha256::digest(
        serde_json::to_vec(&account).unwrap_or_default(),
    ));
    let window_ms = millis(state.settings.auth.otp_ttl());
    let attempt =
        store::registrations::begin(&state.db, &fingerprint, phone.as_str(), now_ms(), window_ms)
            .await?;
    let registered = match state
        .upstreams
        .okya
        .register(&account, &attempt.idempotency_key)
        .await
    {
        Ok(registered) => registered,
        Err(e) if is_code(&e, okya_auth::codes::ACCOUNT_EXISTS) => {
            return Err(refused(Refusal::AccountExists));
        }
        Err(e) => return Err(otp_refusal(e)),
    };
    let account = if attempt.replay {
        // Okya may have answered with the first answer, as it was then: what is true now
        // decides (the account may have been confirmed since, here or in another app).
        match state.upstreams.okya.account(&registered.account.id).await? {
            Some(current) => current,
            None => {
                store::registrations::retire(&state.db, phone.as_str()).await?;
                return Err(FlowError::Inconsistent(format!(
                    "Okya replayed the registration of account {}, which it no longer has",
                    registered.account.id
                )));
            }
        }
    } else {
        registered.account
    };
    let confirmed_here = store::customers::find(&state.db, &account.customer_id())
        .await?
        .is_some_and(|c| c.confirmed);
    if account.confirmed || confirmed_here {
        // The registration did its job; from now on these details are an existing account.
        store::registrations::retire(&state.db, phone.as_str()).await?;
        return Err(refused(Refusal::AccountExists));
    }
    let now = now_ms();
    let txn = state.db.begin().await?;
    store::customers::upsert(&txn, new_customer(&account)).await?;
    if !attempt.answered {
        store::otp::record_send(&txn, phone.as_str(), now).await?;
        store::registrations::answered(&txn, &fingerprint, now).await?;
    }
    if account.loyalty_id.is_none() {
        ensure_loyalty_link(&txn, &account.id, now).await?;
    }
    txn.commit().await?;
    state.job_signal.wake();
    tracing::info!(customer_id = %account.id, replay = attempt.replay, "account registered; confirmation code sent");
    store::customers::find(&state.db, &account.customer_id())
        .await?
        .ok_or_else(|| {
            FlowError::Store(StoreError::Corrupt("customer vanished after insert".into()))
        })
}

/// Asks for the SessionM link of an account Okya says has none. A link job that already
/// ended (done, or dead after a refusal) is run again: the dedupe key keeps two links from
/// running at once, it must not stop a later one from running at all.
async fn ensure_loyalty_link(
    db: &impl sea_orm::ConnectionTrait,
    account_id: &str,
    now: i64,
) -> Result<(), FlowError> {
    let key = format!("{LINK_LOYALTY}:{account_id}");
    let new = store::jobs::enqueue(
        db,
        LINK_LOYALTY,
        &key,
        &serde_json::json!({"customer_id": account_id}),
        now,
    )
    .await?;
    if !new && store::jobs::rearm(db, &key, now).await? {
        tracing::info!(customer_id = %account_id, "SessionM link asked for again");
    }
    Ok(())
}

fn new_customer(account: &Account) -> NewCustomer<'_> {
    NewCustomer {
        id: account.customer_id(),
        email: &account.email,
        phone: &account.phone,
        first_name: &account.first_name,
        last_name: &account.last_name,
        confirmed: account.confirmed,
    }
}

/// Our own send limits, checked before asking Okya: one code per interval, a few per hour.
async fn check_send_throttle(state: &AppState, phone: &Phone) -> Result<(), FlowError> {
    let limits = &state.settings.auth;
    let now = now_ms();
    let (last, count) =
        store::otp::recent_sends(&state.db, phone.as_str(), now - 3_600_000).await?;
    let interval_ms = millis(limits.otp_resend_interval());
    if let Some(last) = last
        && now - last < interval_ms
    {
        let retry_after_secs = ((interval_ms - (now - last)) / 1000).max(1);
        return Err(refused(Refusal::OtpThrottled { retry_after_secs }));
    }
    if count >= i64::from(limits.otp_sends_per_hour) {
        return Err(refused(Refusal::OtpThrottled {
            retry_after_secs: 3_600,
        }));
    }
    Ok(())
}

/// Okya's code-related refusals as ours; anything else stays an upstream error.
fn otp_refusal(err: UpstreamError) -> FlowError {
    let Some((_, rejection)) = err.rejection() else {
        return FlowError::Upstream(err);
    };
    match rejection.code.as_str() {
        okya_auth::codes::OTP_INVALID => refused(Refusal::OtpInvalid),
        okya_auth::codes::OTP_EXPIRED => refused(Refusal::OtpExpired),
        okya_auth::codes::OTP_LOCKED => refused(Refusal::OtpAttemptsExceeded),
        okya_auth::codes::OTP_THROTTLED => refused(Refusal::OtpThrottled {
            retry_after_secs: 30,
        }),
        _ => FlowError::Upstream(err),
    }
}

/// Sends a new code (`accountResendOtp`, `signInRequestOtp`). The answer is the same
/// whether or not the phone has an account.
#[tracing::instrument(skip_all, fields(purpose = ?purpose))]
pub async fn send_code(
    state: &AppState,
    raw_phone: &str,
    purpose: OtpPurpose,
) -> Result<(), FlowError> {
    let phone = Phone::parse(raw_phone).ok_or_else(|| refused(Refusal::InvalidPhone))?;
    check_send_throttle(state, &phone).await?;
    let key = uuid::Uuid::new_v4().to_string();
    state
        .upstreams
        .okya
        .send_otp(phone.as_str(), purpose, &key)
        .await
        .map_err(otp_refusal)?;
    store::otp::record_send(&state.db, phone.as_str(), now_ms()).await?;
    Ok(())
}

/// Steps 10–14, and sign-in: checks the code through Okya and opens a session.
#[tracing::instrument(skip_all)]
pub async fn verify_code(
    state: &AppState,
    raw_phone: &str,
    code: &str,
) -> Result<(customer::Model, TokenPair), FlowError> {
    let limits = &state.settings.auth;
    // A malformed phone or code is answered exactly like a wrong code.
    let Some(phone) = Phone::parse(raw_phone) else {
        return Err(refused(Refusal::OtpInvalid));
    };
    if code.is_empty() || code.len() > 12 || !code.bytes().all(|b| b.is_ascii_digit()) {
        // Still counts as a try, so malformed guesses cannot probe for free.
        let _ = store::otp::reserve_attempt(
            &state.db,
            phone.as_str(),
            now_ms(),
            millis(limits.otp_ttl()),
            i32::try_from(limits.otp_max_attempts).unwrap_or(5),
        )
        .await?;
        return Err(refused(Refusal::OtpInvalid));
    }
    let attempt = store::otp::reserve_attempt(
        &state.db,
        phone.as_str(),
        now_ms(),
        millis(limits.otp_ttl()),
        i32::try_from(limits.otp_max_attempts).unwrap_or(5),
    )
    .await?;
    match attempt {
        Attempt::Allowed => {}
        Attempt::NoChallenge => return Err(refused(Refusal::OtpInvalid)),
        Attempt::Expired => return Err(refused(Refusal::OtpExpired)),
        Attempt::Exhausted => return Err(refused(Refusal::OtpAttemptsExceeded)),
    }
    let account = state
        .upstreams
        .okya
        .verify_otp(phone.as_str(), code)
        .await
        .map_err(otp_refusal)?;
    let now = now_ms();
    let txn = state.db.begin().await?;
    store::otp::finish(&txn, phone.as_str()).await?;
    store::customers::upsert(&txn, new_customer(&account)).await?;
    match &account.loyalty_id {
        Some(loyalty) => {
            store::customers::set_sessionm_user(&txn, &account.customer_id(), loyalty).await?
        }
        // An account registered elsewhere (another app, the website) gets linked too, and
        // one whose earlier link died is tried again.
        None => ensure_loyalty_link(&txn, &account.id, now).await?,
    }
    // The account is confirmed: no replay of its registration may answer any more.
    store::registrations::retire(&txn, phone.as_str()).await?;
    txn.commit().await?;
    state.job_signal.wake();
    let tokens = sessions::start(
        &state.db,
        &state.token_keys,
        &account.customer_id(),
        state.settings.auth.refresh_token_ttl(),
    )
    .await?;
    let customer = store::customers::find(&state.db, &account.customer_id())
        .await?
        .ok_or_else(|| {
            FlowError::Store(StoreError::Corrupt("customer vanished after upsert".into()))
        })?;
    tracing::info!(customer_id = %customer.id, "signed in");
    Ok((customer, tokens))
}

/// The durable job of steps 7–9: create the SessionM user, then save its id on the Okya
/// account. Both are idempotent: SessionM's member is found by our customer id
/// (`external_id`) before any creation, and the creation carries a `Message-ID` that
/// SessionM replays for 30 minutes; Okya's save of the same id is a no-op. A retry after
/// any failure or crash therefore makes nothing twice.
pub async fn link_loyalty(state: &AppState, payload: serde_json::Value) -> Result<(), JobError> {
    let Some(customer_id) = payload["customer_id"].as_str() else {
        return Err(JobError::Permanent("payload without customer_id".into()));
    };
    let transient = |e: &dyn std::fmt::Display| JobError::Transient(e.to_string());
    // Our own payload, written from an Okya account id: no client input to check.
    let customer_id = CustomerId::from_upstream(customer_id.to_owned());
    let customer = store::customers::find(&state.db, &customer_id)
        .await
        .map_err(|e| transient(&e))?
        .ok_or_else(|| JobError::Permanent(format!("no customer {customer_id}")))?;
    let user_id = match customer.sessionm_user_id.clone() {
        Some(id) => id,
        None => {
            let user = state
                .upstreams
                .sessionm
                .ensure_user(
                    &NewUser {
                        email: customer.email.clone(),
                        first_name: customer.first_name.clone(),
                        last_name: customer.last_name.clone(),
                        phone: Some(customer.phone.clone()),
                        external_id: customer.id.to_string(),
                    },
                    &format!("link-{}", customer.id),
                )
                .await
                .map_err(|e| JobError::from_upstream(&e))?;
            store::customers::set_sessionm_user(&state.db, &customer.id, &user.id)
                .await
                .map_err(|e| transient(&e))?;
            user.id
        }
    };
    state
        .upstreams
        .okya
        .save_loyalty_id(customer.id.as_str(), &user_id)
        .await
        .map_err(|e| JobError::from_upstream(&e))?;
    tracing::info!(customer_id = %customer.id, "SessionM user linked to the Okya account");
    Ok(())
}
