//! Black-box tests: each spawns the real service on a random port with its sandbox
//! simulators and a fresh database, and talks to it over HTTP and websockets.

mod access;
mod account;
mod architecture;
mod batching;
mod breakers;
mod browser;
mod cart;
mod catalog;
mod catalog_cache;
mod config;
#[cfg(feature = "crash-points")]
mod crash;
mod errors;
mod generated_inputs;
mod graphiql;
mod helpers;
mod instances;
mod introspection;
mod limits;
mod lost_answers;
mod metrics;
mod money_path;
mod order_model;
mod orders;
mod persisted_queries;
mod persistence;
mod protocol;
mod rate_limits;
mod reconciliation;
mod rewards;
mod routes;
mod sandbox_binary;
mod secrets;
mod sessionm;
mod shop;
#[cfg(unix)]
mod shutdown;
mod soak;
mod step_faults;
mod vouchers;
mod websocket;
