//! `/graphql` over HTTP per the GraphQL over HTTP specification: POST with JSON, GET for
//! queries (and GraphiQL for browsers, and the websocket upgrade), content negotiation
//! between `application/graphql-response+json` and `application/json`, and 4xx statuses
//! for requests that cannot run.

use super::media::{ResponseType, is_json_content_type, negotiate};
use crate::{app::Gateway, auth::Viewer, graphql::loaders::Loaders};
use async_graphql::{
    Value,
    parser::types::{DocumentOperations, OperationType},
};
use async_graphql_axum::{GraphQLRequest, rejection::GraphQLRejection};
use axum::{
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// Runs one GraphQL request with its per-request data: the caller and fresh loaders.
pub async fn execute(
    gateway: &Gateway,
    request: async_graphql::Request,
    viewer: Viewer,
) -> async_graphql::Response {
    let request = request
        .data(Loaders::new(&gateway.app.upstreams))
        .data(viewer);
    gateway.schema.execute(request).await
}

/// The caller named by the request's `Authorization` header.
async fn viewer_of(gateway: &Gateway, headers: &HeaderMap) -> Viewer {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Viewer::from_authorization(authorization, &gateway.app.token_keys, &gateway.app.db).await
}

/// A response with no `data` (a parse, validation or variable error) means the request
/// never ran: the specification calls it a request error.
pub fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// The response body: request errors carry no `data` entry at all.
pub fn response_body(response: &async_graphql::Response) -> serde_json::Value {
    if is_request_error(response) {
        json!({ "errors": response.errors })
    } else {
        serde_json::to_value(response)
            .unwrap_or_else(|_| json!({"errors": [{"message": "unserialisable response"}]}))
    }
}

/// An error before GraphQL execution, in the GraphQL response shape.
fn http_error(status: StatusCode, kind: ResponseType, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    response
}

fn accepted_type(headers: &HeaderMap) -> Option<ResponseType> {
    negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

fn not_acceptable() -> Response {
    http_error(
        StatusCode::NOT_ACCEPTABLE,
        ResponseType::Json,
        "NOT_ACCEPTABLE",
        "Accept must allow application/graphql-response+json or application/json",
    )
}

fn render(kind: ResponseType, response: &async_graphql::Response) -> Response {
    let status = if kind == ResponseType::GraphqlResponseJson && is_request_error(response) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut http = (status, response_body(response).to_string()).into_response();
    http.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    http
}

pub async fn post(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(kind) = accepted_type(request.headers()) else {
        return not_acceptable();
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match content_type {
        None => {
            return http_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                kind,
                "BAD_REQUEST",
                "Content-Type is required: send application/json",
            );
        }
        Some(ct) if !is_json_content_type(ct) => {
            return http_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                kind,
                "BAD_REQUEST",
                "Content-Type must be application/json",
            );
        }
        Some(_) => {}
    }
    let limit = gateway.app.settings.graphql.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return http_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            kind,
            "BAD_REQUEST",
            &format!("request body is larger than {limit} bytes"),
        );
    }
    let viewer = viewer_of(&gateway, request.headers()).await;
    let graphql_request = match GraphQLRequest::<GraphQLRejection>::from_request(request, &()).await
    {
        Ok(request) => request.into_inner(),
        Err(rejection) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                kind,
                "BAD_REQUEST",
                &format!("the body is not a GraphQL request: {}", rejection.0),
            );
        }
    };
    render(kind, &execute(&gateway, graphql_request, viewer).await)
}

/// GET serves three audiences: websocket clients upgrading, browsers wanting GraphiQL, and
/// clients sending a query in the query string.
pub async fn get(State(gateway): State<Gateway>, request: Request) -> Response {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return super::ws::upgrade(gateway, request).await;
    }
    let has_query = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("query=")));
    if !has_query {
        let wants_html = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|a| a.contains("text/html") || a.contains("*/*"));
        if wants_html {
            return super::graphiql::page(request.headers());
        }
        return http_error(
            StatusCode::BAD_REQUEST,
            ResponseType::Json,
            "BAD_REQUEST",
            "GET /graphql needs a query parameter",
        );
    }
    let Some(kind) = accepted_type(request.headers()) else {
        return not_acceptable();
    };
    let viewer = viewer_of(&gateway, request.headers()).await;
    let graphql_request = match GraphQLRequest::<GraphQLRejection>::from_request(request, &()).await
    {
        Ok(request) => request.into_inner(),
        Err(rejection) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                kind,
                "BAD_REQUEST",
                &format!("the query string is not a GraphQL request: {}", rejection.0),
            );
        }
    };
    // GET must never change anything: caches and prefetchers replay it.
    if is_mutation(&graphql_request) {
        let mut response = http_error(
            StatusCode::METHOD_NOT_ALLOWED,
            kind,
            "BAD_REQUEST",
            "mutations must be sent with POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    render(kind, &execute(&gateway, graphql_request, viewer).await)
}

fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let wanted = request.operation_name.as_deref();
    match &document.operations {
        DocumentOperations::Single(op) => op.node.ty == OperationType::Mutation,
        DocumentOperations::Multiple(ops) => ops
            .iter()
            .filter(|(name, _)| wanted.is_none_or(|w| name.as_str() == w))
            .any(|(_, op)| op.node.ty == OperationType::Mutation),
    }
}

/// Anything but GET and POST on `/graphql`.
pub async fn other_method(method: Method) -> Response {
    let mut response = http_error(
        StatusCode::METHOD_NOT_ALLOWED,
        ResponseType::Json,
        "BAD_REQUEST",
        &format!("{method} is not allowed on /graphql; use POST or GET"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    response
}
