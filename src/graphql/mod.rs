//! The GraphQL schema, split by domain and merged at the root.

mod account;
mod cart;
mod catalog;
pub mod context;
pub mod errors;
pub mod loaders;
mod orders;
pub mod scalars;
mod vouchers;

use crate::{app::AppState, config::GraphqlSettings};
use async_graphql::{MergedObject, Schema};

#[derive(MergedObject, Default)]
pub struct Query(
    catalog::CatalogQuery,
    cart::CartQuery,
    account::AccountQuery,
    orders::OrderQuery,
    vouchers::VoucherQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    account::AccountMutation,
    cart::CartMutation,
    orders::OrderMutation,
);

pub type AppSchema = Schema<Query, Mutation, orders::OrderSubscription>;

/// Builds the schema. `state` is `None` only for printing the SDL.
pub fn build(limits: &GraphqlSettings, state: Option<AppState>) -> AppSchema {
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        orders::OrderSubscription,
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .limit_recursive_depth(64)
    .limit_directives(20);
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The SDL the app codes against; `schema.graphql` holds a copy checked by a test.
pub fn sdl() -> String {
    build(&GraphqlSettings::default(), None).sdl()
}
