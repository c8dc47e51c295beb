pub mod cart;
pub mod customer;
pub mod job;
pub mod refresh_token;
pub mod session;
