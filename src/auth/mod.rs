//! Who is calling: access tokens (signed JWTs naming a session), refresh tokens (random,
//! stored hashed, exchanged once), and the `Viewer` every resolver asks.

pub mod sessions;
pub mod tokens;
pub mod viewer;

pub use viewer::Viewer;

pub use crate::domain::now_ms;
