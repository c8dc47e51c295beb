//! Issue 12's benchmark suite: the pieces that do not need a running service (body checks,
//! the load generator, the table, the machine line), so `cargo test -p bench` can check
//! them without timing anything.

pub mod check;
pub mod load;
pub mod machine;
pub mod table;
