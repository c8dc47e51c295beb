//! Access to what every resolver needs from the request context.

use super::{errors::ApiError, loaders::Loaders};
use crate::{
    auth::{Viewer, viewer::NotSignedIn},
    context::AppState,
    domain::CustomerId,
    rate_limit::{ClientAddr, Limit},
};
use async_graphql::Context;

pub fn state<'a>(ctx: &Context<'a>) -> Result<&'a AppState, ApiError> {
    ctx.data::<AppState>().map_err(|_| ApiError::Internal)
}

pub fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a Loaders, ApiError> {
    ctx.data::<Loaders>().map_err(|_| ApiError::Internal)
}

/// The caller, as resolved from the request's token.
pub fn viewer<'a>(ctx: &Context<'a>) -> &'a Viewer {
    ctx.data::<Viewer>().unwrap_or(&Viewer::Anonymous)
}

/// The address the request is rate-limited by; unknown when the transport gave none.
pub fn client(ctx: &Context<'_>) -> ClientAddr {
    ctx.data_opt::<ClientAddr>()
        .copied()
        .unwrap_or(ClientAddr(None))
}

/// Takes one request from each `(limit, subject)` bucket in turn (a `None` subject, such
/// as an unknown address, is skipped); the first refusal answers `RATE_LIMITED` with its
/// wait, and the buckets after it are left untouched. Put the address first, so a flood
/// from one address does not use up the buckets of the phones or customers it names.
pub async fn rate_limit(
    ctx: &Context<'_>,
    buckets: &[(Limit, Option<&str>)],
) -> Result<(), ApiError> {
    let limiter = &state(ctx)?.rate_limits;
    for (limit, subject) in buckets {
        if let Some(subject) = subject {
            limiter.take(*limit, subject).await?;
        }
    }
    Ok(())
}

/// The signed-in customer; `UNAUTHENTICATED` without a valid token, `INTERNAL` when the
/// session could not be checked (a good token must not read as a bad one).
pub fn customer<'a>(ctx: &Context<'a>) -> Result<&'a CustomerId, ApiError> {
    viewer(ctx).customer().map_err(ApiError::from)
}

/// The signed-in customer's session id, with the same errors as [`customer`].
pub fn session<'a>(ctx: &Context<'a>) -> Result<&'a str, ApiError> {
    viewer(ctx)
        .session()
        .map(|(_, session)| session)
        .map_err(ApiError::from)
}

impl From<NotSignedIn> for ApiError {
    fn from(reason: NotSignedIn) -> Self {
        match reason {
            NotSignedIn::Unauthenticated => ApiError::Unauthenticated,
            NotSignedIn::Unavailable => ApiError::Internal,
        }
    }
}
