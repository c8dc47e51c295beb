//! Access to what every resolver needs from the request context.

use super::{errors::ApiError, loaders::Loaders};
use crate::{app::AppState, auth::Viewer, domain::CustomerId};
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

/// The signed-in customer, or `UNAUTHENTICATED`.
pub fn customer<'a>(ctx: &Context<'a>) -> Result<&'a CustomerId, ApiError> {
    viewer(ctx).customer_id().ok_or(ApiError::Unauthenticated)
}
