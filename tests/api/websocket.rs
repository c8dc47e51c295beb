//! `/graphql` as a websocket: graphql-transport-ws with its close codes, and legacy graphql-ws.

use crate::helpers::{Db, Sim, TestApp, spawn_app, spawn_app_with};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, protocol: &str) -> Socket {
    let url = app.graphql_url().replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let (socket, response) = connect_async(request).await.expect("websocket connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON message, skipping pings.
async fn recv(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("message in time")
            .expect("socket open")
            .expect("valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the server closes, returning the close code and reason.
async fn close_code(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a code"),
            Some(Ok(_)) => continue,
        }
    }
}

async fn init(socket: &mut Socket) {
    send(socket, json!({"type": "connection_init", "payload": {}})).await;
    assert_eq!(recv(socket).await["type"], "connection_ack");
}

#[tokio::test]
async fn transport_ws_runs_an_operation_to_completion_and_answers_pings() {
    let app = spawn_app().await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    send(&mut ws, json!({"type": "ping", "payload": {"n": 1}})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "pong", "payload": {"n": 1}})
    );
    init(&mut ws).await;
    send(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ stores { id } }"}}),
    )
    .await;
    let next = recv(&mut ws).await;
    assert_eq!(next["type"], "next");
    assert_eq!(next["id"], "1");
    assert!(next["payload"]["data"]["stores"].as_array().unwrap().len() >= 3);
    assert_eq!(recv(&mut ws).await, json!({"type": "complete", "id": "1"}));

    // A request error is an `error` message, with no `complete` after it.
    send(
        &mut ws,
        json!({"id": "2", "type": "subscribe", "payload": {"query": "{ nope }"}}),
    )
    .await;
    let error = recv(&mut ws).await;
    assert_eq!(error["type"], "error");
    assert!(error["payload"][0]["message"].is_string());
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn transport_ws_closes_with_the_protocol_codes() {
    let app = spawn_app_with(Db::Sqlite, |s| s.graphql.ws_init_timeout_secs = 1).await;

    let mut ws = connect(&app, "graphql-transport-ws").await;
    send(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ stores { id } }"}}),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, (4401, "Unauthorized".to_owned()));

    let mut ws = connect(&app, "graphql-transport-ws").await;
    init(&mut ws).await;
    send(&mut ws, json!({"type": "connection_init"})).await;
    assert_eq!(close_code(&mut ws).await.0, 4429);

    let mut ws = connect(&app, "graphql-transport-ws").await;
    send(&mut ws, json!({"type": "what"})).await;
    assert_eq!(close_code(&mut ws).await.0, 4400);

    let mut ws = connect(&app, "graphql-transport-ws").await;
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 4400);

    let mut ws = connect(&app, "graphql-transport-ws").await;
    assert_eq!(
        close_code(&mut ws).await,
        (4408, "Connection initialisation timeout".to_owned())
    );

    // Two operations with one id while the first still runs.
    app.faults(Sim::Okya, json!({"latency_ms": 1500})).await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    init(&mut ws).await;
    let subscribe =
        json!({"id": "dup", "type": "subscribe", "payload": {"query": "{ stores { id } }"}});
    send(&mut ws, subscribe.clone()).await;
    send(&mut ws, subscribe).await;
    assert_eq!(
        close_code(&mut ws).await,
        (4409, "Subscriber for dup already exists".to_owned())
    );
}

#[tokio::test]
async fn legacy_graphql_ws_speaks_start_data_complete() {
    let app = spawn_app().await;
    let mut ws = connect(&app, "graphql-ws").await;
    send(&mut ws, json!({"type": "connection_init", "payload": {}})).await;
    assert_eq!(recv(&mut ws).await["type"], "connection_ack");
    assert_eq!(recv(&mut ws).await["type"], "ka");
    send(&mut ws, json!({"id": "a", "type": "start", "payload": {"query": "{ product(id: \"prd_latte\") { name } }"}})).await;
    let data = recv(&mut ws).await;
    assert_eq!(data["type"], "data");
    assert_eq!(data["payload"]["data"]["product"]["name"], "Caffè Latte");
    assert_eq!(recv(&mut ws).await, json!({"type": "complete", "id": "a"}));
    send(&mut ws, json!({"type": "connection_terminate"})).await;
}

#[tokio::test]
async fn a_websocket_without_a_graphql_subprotocol_is_refused() {
    let app = spawn_app().await;
    let url = app.graphql_url().replace("http://", "ws://");
    let mut request = url.clone().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    assert!(connect_async(request).await.is_err());
    assert!(connect_async(url).await.is_err());
}
