//! The seed's flows as explicit steps. Each step that another system must see happen is
//! either finished in the request or recorded as a durable job that finishes it later.

pub mod create_account;
pub mod order_lines;
pub mod place_order;
pub mod reconcile;
