//! `/graphql` over HTTP per the GraphQL over HTTP specification
//! (<https://graphql.github.io/graphql-over-http/draft/>): POST with JSON, GET for queries
//! (and GraphiQL for browsers, and the websocket upgrade), content negotiation between
//! `application/graphql-response+json` and `application/json`, and 4xx statuses for
//! requests that cannot run. POST and GET read the same parameters by the same rules;
//! every error carries a code from [`ErrorCode`].

use super::media::{ResponseType, check_json_content_type, negotiate, prefers_html};
use crate::{
    auth::Viewer,
    graphql::{admission::SafeMethod, errors::ErrorCode, loaders::Loaders},
    http::Gateway,
    rate_limit::ClientAddr,
};
use async_graphql::Value;
use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

/// Runs one GraphQL request with its per-request data: the caller, the address it is
/// rate-limited by and fresh loaders.
pub async fn execute(
    gateway: &Gateway,
    request: async_graphql::Request,
    viewer: Viewer,
    client: ClientAddr,
) -> async_graphql::Response {
    let mut request = request;
    // Inserted in place: `Request::data` moves the whole request for each.
    request.data.insert(Loaders::default());
    request.data.insert(viewer);
    request.data.insert(client);
    gateway.schema.execute(request).await
}

/// The client a request comes from: the socket's peer, or what trusted proxies say in
/// `X-Forwarded-For` (see [`ClientAddr::resolve`]).
pub fn client_of(
    gateway: &Gateway,
    extensions: &http::Extensions,
    headers: &HeaderMap,
) -> ClientAddr {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    ClientAddr::resolve(peer, headers, gateway.app.rate_limits.trusted_proxies())
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
        serde_json::to_value(response).unwrap_or_else(
            |_| json!({ "errors": [ErrorCode::Internal.json("unserialisable response")] }),
        )
    }
}

/// [`response_body`] as text, written straight from the response: no intermediate
/// `serde_json::Value` tree (one map per object of the answer), and the fields in the
/// order the query asked for them.
fn response_text(response: &async_graphql::Response) -> String {
    #[derive(serde::Serialize)]
    struct RequestError<'a> {
        errors: &'a [async_graphql::ServerError],
    }
    let text = if is_request_error(response) {
        serde_json::to_string(&RequestError {
            errors: &response.errors,
        })
    } else {
        serde_json::to_string(response)
    };
    text.unwrap_or_else(|_| {
        json!({ "errors": [ErrorCode::Internal.json("unserialisable response")] }).to_string()
    })
}

/// An error before GraphQL execution, in the GraphQL response shape.
pub fn http_error(
    status: StatusCode,
    kind: ResponseType,
    code: ErrorCode,
    message: &str,
) -> Response {
    let body = json!({ "errors": [code.json(message)] });
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
        ErrorCode::NotAcceptable,
        "Accept must allow application/graphql-response+json or application/json",
    )
}

fn method_not_allowed(kind: ResponseType, message: &str, allow: &'static str) -> Response {
    let mut response = http_error(
        StatusCode::METHOD_NOT_ALLOWED,
        kind,
        ErrorCode::MethodNotAllowed,
        message,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn render(kind: ResponseType, response: &async_graphql::Response) -> Response {
    let refused_on_get = response
        .errors
        .iter()
        .any(|e| ErrorCode::of(e) == Some(ErrorCode::MethodNotAllowed));
    let status = if refused_on_get {
        // GraphQL over HTTP, "GET": a mutation MUST be answered with 405.
        StatusCode::METHOD_NOT_ALLOWED
    } else if kind == ResponseType::GraphqlResponseJson && is_request_error(response) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut http = (status, response_text(response)).into_response();
    http.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    if refused_on_get {
        http.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    http
}

/// The parameters of a GraphQL-over-HTTP request as a JSON body carries them. Each must
/// have its type or be null or absent; anything else is not a well-formed request (400).
#[derive(Deserialize)]
struct JsonParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The same parameters in a GET query string, `variables` and `extensions` as JSON text.
#[derive(Deserialize)]
struct QueryParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

impl QueryParams {
    /// Whether the query string asks for GraphQL at all (else a browser wants GraphiQL).
    fn is_graphql(&self) -> bool {
        self.query.is_some() || self.extensions.is_some()
    }

    fn into_json(self) -> Result<JsonParams, String> {
        let object = |name: &str, raw: Option<String>| match raw {
            None => Ok(None),
            Some(text) => match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
                Ok(serde_json::Value::Null) => Ok(None),
                _ => Err(format!("{name} must be a JSON object")),
            },
        };
        Ok(JsonParams {
            query: self.query,
            operation_name: self.operation_name,
            variables: object("variables", self.variables)?,
            extensions: object("extensions", self.extensions)?,
        })
    }
}

/// Builds the request the schema runs. `query` may be left out only by a persisted-query
/// request (the hash stands for it); an empty `operationName` is no name (the
/// specification, "GET"; we apply it to POST alike).
fn graphql_request(params: JsonParams) -> Result<async_graphql::Request, String> {
    let persisted = params
        .extensions
        .as_ref()
        .is_some_and(|e| e.contains_key("persistedQuery"));
    let query = match params.query {
        Some(query) => query,
        None if persisted => String::new(),
        None => return Err("query is required".to_owned()),
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.operation_name.filter(|n| !n.is_empty()) {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables {
        request = request.variables(async_graphql::Variables::from_json(
            serde_json::Value::Object(variables),
        ));
    }
    if let Some(extensions) = params.extensions {
        for (name, value) in extensions {
            let value = async_graphql::Value::from_json(value)
                .map_err(|_| format!("extensions.{name} is not a GraphQL value"))?;
            request.extensions.insert(name, value);
        }
    }
    Ok(request)
}

/// Reads the whole body, at most `limit` bytes however it is framed: a declared
/// `Content-Length` and a chunked body that grows too long are refused alike.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let source = e.into_inner();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(error) = cause {
            if error.is::<http_body_util::LengthLimitError>() {
                return BodyError::TooLarge;
            }
            cause = error.source();
        }
        BodyError::Unreadable
    })
}

enum BodyError {
    TooLarge,
    Unreadable,
}

pub async fn post(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(kind) = accepted_type(request.headers()) else {
        return not_acceptable();
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Err(refusal) = check_json_content_type(content_type) {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind,
            ErrorCode::UnsupportedMediaType,
            &refusal.to_string(),
        );
    }
    let limit = gateway.app.settings.graphql.max_body_bytes;
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return http_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                kind,
                ErrorCode::PayloadTooLarge,
                &format!("request body is larger than {limit} bytes"),
            );
        }
        Err(BodyError::Unreadable) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                kind,
                ErrorCode::BadRequest,
                "the request body could not be read",
            );
        }
    };
    let graphql_request = match serde_json::from_slice::<JsonParams>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(graphql_request)
    {
        Ok(request) => request,
        Err(reason) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                kind,
                ErrorCode::BadRequest,
                &format!("the body is not a GraphQL request: {reason}"),
            );
        }
    };
    let viewer = viewer_of(&gateway, &parts.headers).await;
    let client = client_of(&gateway, &parts.extensions, &parts.headers);
    render(
        kind,
        &execute(&gateway, graphql_request, viewer, client).await,
    )
}

/// GET serves three audiences: websocket clients upgrading, browsers wanting GraphiQL, and
/// clients sending a request in the query string (a query, or a persisted query's hash).
pub async fn get(State(gateway): State<Gateway>, request: Request) -> Response {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return super::ws::upgrade(gateway, request).await;
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let params = serde_urlencoded::from_str::<QueryParams>(request.uri().query().unwrap_or(""));
    let wants_graphql = params.as_ref().map_or(true, QueryParams::is_graphql);
    if !wants_graphql {
        if prefers_html(accept) {
            return super::graphiql::page(request.headers());
        }
        return http_error(
            StatusCode::BAD_REQUEST,
            negotiate(accept).unwrap_or(ResponseType::Json),
            ErrorCode::BadRequest,
            "GET /graphql needs a query parameter",
        );
    }
    let Some(kind) = negotiate(accept) else {
        return not_acceptable();
    };
    let graphql_request = match params
        .map_err(|e| e.to_string())
        .and_then(QueryParams::into_json)
        .and_then(graphql_request)
    {
        Ok(request) => request,
        Err(reason) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                kind,
                ErrorCode::BadRequest,
                &format!("the query string is not a GraphQL request: {reason}"),
            );
        }
    };
    let viewer = viewer_of(&gateway, request.headers()).await;
    let client = client_of(&gateway, request.extensions(), request.headers());
    // GET must never change anything: caches and prefetchers replay it. Admission refuses
    // a mutation once the operation is known (after a persisted query is resolved).
    let graphql_request = graphql_request.data(SafeMethod);
    render(
        kind,
        &execute(&gateway, graphql_request, viewer, client).await,
    )
}

/// Anything but GET and POST on `/graphql`.
pub async fn other_method(method: Method) -> Response {
    method_not_allowed(
        ResponseType::Json,
        &format!("{method} is not allowed on /graphql; use POST or GET"),
        "GET, POST",
    )
}
