//! The HTTP surface: `/graphql` (POST, GET, websocket), GraphiQL's files, health probes.

pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod media;
pub mod webhooks;
pub mod ws;
