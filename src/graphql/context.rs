//! Access to what every resolver needs from the request context.

use super::{errors::ApiError, loaders::Loaders};
use crate::{
    auth::{Viewer, viewer::NotSignedIn},
    context::AppState,
    domain::CustomerId,
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
