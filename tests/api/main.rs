//! Black-box tests: each spawns the real service on a random port with its sandbox
//! simulators and a fresh database, and talks to it over HTTP and websockets.

mod access;
mod account;
mod cart;
mod catalog;
mod config;
#[cfg(feature = "crash-points")]
mod crash;
mod errors;
mod helpers;
mod instances;
mod introspection;
mod orders;
mod persisted_queries;
mod persistence;
mod protocol;
mod rewards;
mod vouchers;
mod websocket;
