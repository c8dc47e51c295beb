//! The GraphQL schema, split by domain and merged at the root.

mod account;
pub mod admission;
mod cart;
mod catalog;
pub mod context;
pub mod documents;
pub mod error_codes;
pub mod errors;
mod gate;
pub mod loaders;
mod orders;
pub mod persisted;
pub mod scalars;
mod timeout;
mod vouchers;
mod weighed_lru;

use crate::{config::GraphqlSettings, context::AppState};
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

pub use gate::AppSchema;

/// Builds the schema. `introspection` is `Settings::introspection`; `state` is `None` only
/// for printing the SDL.
pub fn build(limits: &GraphqlSettings, introspection: bool, state: Option<AppState>) -> AppSchema {
    // The steps around the schema (see `gate`), in this order: a persisted query is
    // resolved to its text before admission parses it and measures its depth (in place of
    // async-graphql's `limit_depth`, which counts introspection like any other field);
    // execution is bounded in time; codes go on every error, last.
    let gate = gate::Gate {
        persisted: persisted::PersistedQueries::default(),
        documents: documents::ParsedDocuments::default(),
        admission: admission::Admission {
            max_depth: limits.max_depth,
            max_aliases: limits.max_aliases,
            max_root_fields: limits.max_root_fields,
            max_operations: limits.max_operations,
            introspection,
        },
        timeout: timeout::OperationTimeout {
            limit: limits.operation_timeout(),
        },
    };
    let schema = |register: Option<gate::Register>| {
        let mut builder = Schema::build(
            Query::default(),
            Mutation::default(),
            orders::OrderSubscription,
        )
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(admission::MAX_NESTING)
        .limit_directives(20);
        if let Some(register) = register {
            builder = builder.extension(register);
        }
        if !introspection {
            builder = builder.disable_introspection();
        }
        if let Some(state) = state.clone() {
            builder = builder.data(state);
        }
        builder.finish()
    };
    let plain = schema(None);
    let registering = schema(Some(gate::Register(gate.persisted.clone())));
    AppSchema::new(plain, registering, gate)
}

/// The SDL the app codes against; `schema.graphql` holds a copy checked by a test.
pub fn sdl() -> String {
    build(&GraphqlSettings::default(), true, None).sdl()
}
