pub mod cart;
pub mod customer;
pub mod job;
pub mod order;
pub mod order_status_history;
pub mod refresh_token;
pub mod session;
