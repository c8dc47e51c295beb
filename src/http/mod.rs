//! The HTTP surface: `/graphql` (POST, GET, websocket), GraphiQL's files, health probes,
//! metrics.

pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod media;
pub mod metrics;
pub mod shared;
pub mod webhooks;
pub mod ws;

use crate::{context::AppState, graphql::AppSchema};
use axum::extract::FromRef;

/// The HTTP layer's state: the app, its schema and its open websockets.
#[derive(Clone)]
pub struct Gateway {
    pub app: AppState,
    pub schema: AppSchema,
    pub sockets: ws::Sockets,
    /// Identical subscriptions share one execution.
    pub shared: shared::SharedSubscriptions,
}

impl FromRef<Gateway> for AppState {
    fn from_ref(gateway: &Gateway) -> Self {
        gateway.app.clone()
    }
}
