//! The HTTP surface: `/graphql` (POST, GET, websocket), health probes.

pub mod graphql;
pub mod health;
pub mod media;
pub mod webhooks;
pub mod ws;
