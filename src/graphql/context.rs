//! Access to what every resolver needs from the request context.

use super::{errors::ApiError, loaders::Loaders};
use crate::app::AppState;
use async_graphql::Context;

pub fn state<'a>(ctx: &Context<'a>) -> Result<&'a AppState, ApiError> {
    ctx.data::<AppState>().map_err(|_| ApiError::Internal)
}

pub fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a Loaders, ApiError> {
    ctx.data::<Loaders>().map_err(|_| ApiError::Internal)
}
