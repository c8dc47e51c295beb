//! The baseline: async-graphql 7.2.1 over axum (async-graphql-axum), with no tracing,
//! auth, limits or upstream, answering the shapes the benchmark sends from memory:
//! `{ __typename }` and `stores { id name products { id name price { amount
//! currencyCode } } }`.
//!
//! `bare-graphql <listen addr> <catalogue.json>`: the file holds the `stores` array the
//! service answered at the start of the run (`bench` writes it), which is parsed into typed
//! structs here and served through ordinary resolvers, so the body is produced by
//! async-graphql's execution and serialisation, not copied. Prints `listening <addr>`.

use async_graphql::{
    EmptyMutation, EmptySubscription, ID, InputValueError, InputValueResult, Object, Scalar,
    ScalarType, Schema, SimpleObject, Value,
};
use async_graphql_axum::GraphQL;
use axum::{Router, routing::post_service};
use serde::Deserialize;

/// An amount in the currency's major unit as a string, e.g. `"4.50"` (the service's
/// `Decimal`).
#[derive(Clone, Deserialize)]
struct Decimal(String);

#[Scalar]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(Decimal(s)),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

#[derive(Clone, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
struct Money {
    amount: Decimal,
    currency_code: String,
}

#[derive(Clone, Deserialize, SimpleObject)]
struct Product {
    id: ID,
    name: String,
    price: Money,
}

#[derive(Clone, Deserialize, SimpleObject)]
struct Store {
    id: ID,
    name: String,
    products: Vec<Product>,
}

struct Query {
    stores: Vec<Store>,
}

#[Object]
impl Query {
    async fn stores(&self) -> &[Store] {
        &self.stores
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let stores: Vec<Store> = match args.next() {
        Some(path) => serde_json::from_slice(&std::fs::read(&path)?)?,
        None => Vec::new(),
    };
    let schema = Schema::build(Query { stores }, EmptyMutation, EmptySubscription).finish();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening {}", listener.local_addr()?);
    let app = Router::new().route("/graphql", post_service(GraphQL::new(schema)));
    axum::serve(listener, app).await?;
    Ok(())
}
