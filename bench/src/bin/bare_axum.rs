//! The floor: axum answering every `POST /graphql` with `{"data":{"__typename":"Query"}}`
//! without reading GraphQL at all. Listens on the address given as the first argument
//! (default `127.0.0.1:0`) and prints `listening <addr>` on stdout once it accepts.

use axum::{Router, http::header, routing::post};

const BODY: &str = r#"{"data":{"__typename":"Query"}}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening {}", listener.local_addr()?);
    let app = Router::new().route(
        "/graphql",
        post(|| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
    );
    axum::serve(listener, app).await
}
