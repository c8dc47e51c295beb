pub mod cart;
pub mod customer;
pub mod job;
pub mod refresh_token;
pub mod session;
pub mod order;
pub mod order_status_history;
