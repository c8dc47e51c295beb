//! cbtl-bff: the GraphQL backend-for-frontend of the CBTL mobile ordering app.

pub mod config;
pub mod domain;
pub mod sandbox;
pub mod upstream;
