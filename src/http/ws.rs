//! GraphQL over websocket on `/graphql`: `graphql-transport-ws` (with its close codes
//! 4400, 4401, 4403, 4408, 4409, 4429) and the legacy `graphql-ws` subprotocol of
//! subscriptions-transport-ws for older Apollo clients.
//!
//! Written here rather than taken from async-graphql-axum because its close codes differ
//! from the protocol's and its socket keeps tungstenite's 128 KiB read buffer per
//! connection; this one keeps a small buffer so idle subscriptions stay cheap.

use crate::{
    app::Gateway,
    auth::Viewer,
    graphql::loaders::Loaders,
    http::graphql::{is_request_error, response_body},
};
use axum::{
    extract::{
        FromRequestParts, Request,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{StreamExt, stream::BoxStream};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::{Instant, interval_at, sleep_until};
use tokio_stream::StreamMap;

/// Operations one connection may run at once.
const MAX_OPERATIONS: usize = 100;
/// Largest client message accepted.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Initial read buffer; tungstenite grows it for larger messages and the default 128 KiB
/// per idle connection is what makes stock websockets expensive.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How often we ping an idle peer, so dead connections are noticed and dropped.
const HEARTBEAT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`, from the graphql-ws library.
    TransportWs,
    /// `graphql-ws`, from the deprecated subscriptions-transport-ws library.
    Legacy,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }

    /// The first protocol the client offers that we speak.
    pub fn choose(offered: &str) -> Option<Self> {
        offered.split(',').map(str::trim).find_map(|p| {
            if p.eq_ignore_ascii_case("graphql-transport-ws") {
                Some(Protocol::TransportWs)
            } else if p.eq_ignore_ascii_case("graphql-ws") {
                Some(Protocol::Legacy)
            } else {
                None
            }
        })
    }
}

pub async fn upgrade(gateway: Gateway, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let offered = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(protocol) = Protocol::choose(offered) else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let init_timeout = Duration::from_secs(gateway.app.settings.graphql.ws_init_timeout_secs);
    upgrade
        .protocols([protocol.name()])
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            Connection {
                gateway,
                protocol,
                acked: false,
                authorization: None,
                operations: StreamMap::new(),
            }
            .run(socket, init_timeout)
            .await;
        })
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {},
    Subscribe {
        id: String,
        payload: Value,
    },
    Complete {
        id: String,
    },
    Start {
        id: String,
        payload: Value,
    },
    Stop {
        id: String,
    },
    ConnectionTerminate {},
}

/// Why a connection ends: a close code and reason sent to the client.
struct Close(u16, String);

type Operation = BoxStream<'static, Option<async_graphql::Response>>;

struct Connection {
    gateway: Gateway,
    protocol: Protocol,
    acked: bool,
    /// The `Authorization` value from `connection_init`, checked again at each operation
    /// so an expired or revoked token stops working on an open socket too.
    authorization: Option<String>,
    operations: StreamMap<String, Operation>,
}

impl Connection {
    async fn run(mut self, mut socket: WebSocket, init_timeout: Duration) {
        let init_deadline = Instant::now() + init_timeout;
        let mut heartbeat = interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        let close = loop {
            tokio::select! {
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Text(text))) => {
                        match self.on_text(text.as_str(), &mut socket).await {
                            Ok(true) => {}
                            Ok(false) => break None,
                            Err(close) => break Some(close),
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        break Some(Close(4400, "Binary messages are not supported".into()));
                    }
                    Some(Ok(_)) => {}
                },
                Some((id, item)) = self.operations.next(), if !self.operations.is_empty() => {
                    if !self.on_result(&id, item, &mut socket).await {
                        break None;
                    }
                }
                _ = sleep_until(init_deadline), if !self.acked => {
                    break Some(Close(4408, "Connection initialisation timeout".into()));
                }
                _ = heartbeat.tick() => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break None;
                    }
                }
            }
        };
        if let Some(Close(code, reason)) = close {
            tracing::debug!(code, %reason, "closing websocket");
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
    }

    /// Resolves the caller without borrowing the connection across the await (its
    /// operation streams are not `Sync`).
    fn viewer_of(
        &self,
        authorization: Option<&str>,
    ) -> impl Future<Output = Viewer> + Send + 'static {
        let app = self.gateway.app.clone();
        let authorization = authorization.map(str::to_owned);
        async move {
            Viewer::from_authorization(authorization.as_deref(), &app.token_keys, &app.db).await
        }
    }

    async fn send(socket: &mut WebSocket, message: Value) -> bool {
        socket
            .send(Message::Text(message.to_string().into()))
            .await
            .is_ok()
    }

    /// Handles one client message. `Ok(false)` ends the connection quietly.
    async fn on_text(&mut self, text: &str, socket: &mut WebSocket) -> Result<bool, Close> {
        let message: ClientMessage = serde_json::from_str(text)
            .map_err(|_| Close(4400, "Invalid message received".into()))?;
        let legacy = self.protocol == Protocol::Legacy;
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.acked {
                    return Err(Close(4429, "Too many initialisation requests".into()));
                }
                if payload
                    .as_ref()
                    .is_some_and(|p| !(p.is_object() || p.is_null()))
                {
                    return Err(Close(
                        4400,
                        "connection_init payload must be an object".into(),
                    ));
                }
                let authorization = payload.as_ref().and_then(|p| {
                    p.get("Authorization")
                        .or_else(|| p.get("authorization"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                if self.viewer_of(authorization.as_deref()).await == Viewer::Rejected {
                    if legacy {
                        let error = json!({"type": "connection_error", "payload": {"message": "Forbidden"}});
                        let _ = Self::send(socket, error).await;
                    }
                    return Err(Close(4403, "Forbidden".into()));
                }
                self.authorization = authorization;
                self.acked = true;
                let mut ok = Self::send(socket, json!({"type": "connection_ack"})).await;
                if legacy {
                    ok = ok && Self::send(socket, json!({"type": "ka"})).await;
                }
                Ok(ok)
            }
            ClientMessage::Ping { payload } if !legacy => {
                let mut pong = json!({"type": "pong"});
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                Ok(Self::send(socket, pong).await)
            }
            ClientMessage::Pong {} if !legacy => Ok(true),
            ClientMessage::Subscribe { id, payload } if !legacy => {
                self.start(id, payload, socket).await
            }
            ClientMessage::Start { id, payload } if legacy => self.start(id, payload, socket).await,
            ClientMessage::Complete { id } if !legacy => {
                self.operations.remove(&id);
                Ok(true)
            }
            ClientMessage::Stop { id } if legacy => {
                self.operations.remove(&id);
                Ok(Self::send(socket, json!({"type": "complete", "id": id})).await)
            }
            ClientMessage::ConnectionTerminate {} if legacy => Ok(false),
            _ => Err(Close(4400, "Invalid message received".into())),
        }
    }

    async fn start(
        &mut self,
        id: String,
        payload: Value,
        socket: &mut WebSocket,
    ) -> Result<bool, Close> {
        if !self.acked {
            return Err(Close(4401, "Unauthorized".into()));
        }
        if id.is_empty() || id.len() > 128 {
            return Err(Close(4400, "Invalid message received".into()));
        }
        if self.operations.contains_key(&id) {
            return Err(Close(4409, format!("Subscriber for {id} already exists")));
        }
        let request: async_graphql::Request = match serde_json::from_value(payload) {
            Ok(request) => request,
            Err(_) if self.protocol == Protocol::TransportWs => {
                return Err(Close(4400, "Invalid message received".into()));
            }
            Err(_) => {
                let error = json!({"type": "error", "id": id, "payload": {"message": "invalid operation payload"}});
                return Ok(Self::send(socket, error).await);
            }
        };
        if self.operations.len() >= MAX_OPERATIONS {
            let message = format!("at most {MAX_OPERATIONS} operations per connection");
            let error = match self.protocol {
                Protocol::TransportWs => {
                    json!({"type": "error", "id": id, "payload": [{"message": message}]})
                }
                Protocol::Legacy => {
                    json!({"type": "error", "id": id, "payload": {"message": message}})
                }
            };
            return Ok(Self::send(socket, error).await);
        }
        let viewer = self.viewer_of(self.authorization.as_deref()).await;
        let request = request
            .data(Loaders::new(&self.gateway.app.upstreams))
            .data(viewer);
        let stream = self
            .gateway
            .schema
            .execute_stream(request)
            .map(Some)
            .chain(futures_util::stream::once(async { None }))
            .boxed();
        self.operations.insert(id, stream);
        Ok(true)
    }

    /// Sends one result of operation `id`, or its completion (`None`).
    async fn on_result(
        &mut self,
        id: &str,
        item: Option<async_graphql::Response>,
        socket: &mut WebSocket,
    ) -> bool {
        let Some(response) = item else {
            return Self::send(socket, json!({"type": "complete", "id": id})).await;
        };
        match self.protocol {
            // A request error ends the operation with `error` and no `complete`.
            Protocol::TransportWs if is_request_error(&response) => {
                self.operations.remove(id);
                Self::send(
                    socket,
                    json!({"type": "error", "id": id, "payload": response.errors}),
                )
                .await
            }
            Protocol::TransportWs => {
                Self::send(
                    socket,
                    json!({"type": "next", "id": id, "payload": response_body(&response)}),
                )
                .await
            }
            Protocol::Legacy => {
                Self::send(
                    socket,
                    json!({"type": "data", "id": id, "payload": response_body(&response)}),
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    #[test]
    fn the_first_offered_protocol_we_speak_wins() {
        assert_eq!(
            Protocol::choose("graphql-transport-ws"),
            Some(Protocol::TransportWs)
        );
        assert_eq!(Protocol::choose("graphql-ws"), Some(Protocol::Legacy));
        assert_eq!(
            Protocol::choose("foo, graphql-ws, graphql-transport-ws"),
            Some(Protocol::Legacy)
        );
        assert_eq!(Protocol::choose("foo"), None);
        assert_eq!(Protocol::choose(""), None);
    }
}
