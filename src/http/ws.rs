//! GraphQL over websocket on `/graphql`: `graphql-transport-ws` (with its close codes
//! 4400, 4401, 4403, 4408, 4409, 4429) and the legacy `graphql-ws` subprotocol of
//! subscriptions-transport-ws for older Apollo clients.
//!
//! Written here rather than taken from async-graphql-axum because its close codes differ
//! from the protocol's and its socket keeps tungstenite's 128 KiB read buffer per
//! connection; this one keeps a small buffer so idle subscriptions stay cheap.
//!
//! Each operation runs in a task of its own and hands its results to the socket through a
//! channel. The socket's loop therefore never holds an operation's half-done work (a
//! database connection in the middle of a query) while it waits for something else, and
//! what one socket may run is bounded per socket and per customer.
//!
//! Closing follows RFC 6455 §7: a client's Close frame is answered with one, and every
//! close we start carries a code: the protocol's 44xx, 1000 for the legacy
//! `connection_terminate`, 1001 when the service shuts down, 1002 for a framing error,
//! 1007 for text that is not UTF-8, 1009 for a message too big, 1013 when the session
//! could not be checked.

use crate::{
    auth::{Viewer, viewer::bearer_token},
    domain::CustomerId,
    graphql::{errors::ApiError, loaders::Loaders},
    http::Gateway,
    http::shared::{Ended, Key, Rendered},
    quota::Slot,
    rate_limit::ClientAddr,
};
use axum::{
    extract::{
        FromRequestParts, Request,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::{
    sync::mpsc,
    task::AbortHandle,
    time::{Instant, interval_at, sleep_until, timeout},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How much larger than the largest message a single frame may be. A frame up to this is
/// read whole before it is refused, so the closing handshake that follows is clean; a
/// larger one is refused from its header, and what the client still sends after it may
/// meet a reset once we close.
const FRAME_ALLOWANCE: usize = 4;
/// Initial read buffer; tungstenite grows it for larger messages and the default 128 KiB
/// per idle connection is what makes stock websockets expensive. An app's messages
/// (`connection_init` with its token, `subscribe`, `ping`) fit in 1 KiB; a larger one
/// is read in 1 KiB reads into a buffer reserved for its whole frame. Every read also
/// zeroes this much first (tungstenite), so smaller is cheaper per ping as well.
const READ_BUFFER_BYTES: usize = 1024;
/// subscriptions-transport-ws closes a socket that has had one `ka` and then none for its
/// 30 s timeout: a legacy socket gets `ka` at least this often, whatever the keep-alive.
const LEGACY_KA_MAX: Duration = Duration::from_secs(15);
/// Keep-alive intervals a peer may stay silent (not even a pong) before it is taken for
/// gone and dropped, with everything its operations held.
const SILENT_INTERVALS: u32 = 2;
/// How long we wait for the peer's half of a closing handshake before dropping the
/// connection anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Results waiting for the socket, over all of its operations; a slow reader makes its
/// own operations wait, no one else's.
const RESULT_BUFFER: usize = 16;

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

/// Every open websocket, so a shutdown can close each of them properly.
#[derive(Clone, Default)]
pub struct Sockets {
    closing: CancellationToken,
    open: TaskTracker,
}

impl Sockets {
    /// Asks every open socket to close with 1001 (Going Away), so clients reconnect at
    /// once (to another instance), and waits until they have, or `grace` has passed.
    pub async fn close_all(&self, grace: Duration) {
        self.closing.cancel();
        self.open.close();
        if timeout(grace, self.open.wait()).await.is_err() {
            tracing::warn!(
                left = self.open.len(),
                "websockets still open at the end of the shutdown grace"
            );
        }
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
    // Read once at the upgrade: every operation on the socket comes from this client.
    let client = super::graphql::client_of(&gateway, &parts.extensions, &parts.headers);
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let settings = &gateway.app.settings.graphql;
    let init_timeout = settings.ws_init_timeout();
    // A message carries the same GraphQL request as a POST body, so the same limit holds;
    // a larger one closes the socket with 1009.
    let max_message = settings.max_body_bytes;
    // Counted as open from the upgrade on, so a shutdown that starts before the socket's
    // task does still waits for it (and the task sees the shutdown at once).
    let open = gateway.sockets.open.token();
    let closing = gateway.sockets.closing.clone();
    upgrade
        .protocols([protocol.name()])
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(max_message)
        .max_frame_size(max_message.saturating_mul(FRAME_ALLOWANCE))
        .on_upgrade(move |socket| async move {
            let (results, incoming) = mpsc::channel(RESULT_BUFFER);
            Connection {
                gateway,
                protocol,
                acked: false,
                authorization: None,
                customer: None,
                client,
                operations: HashMap::new(),
                generation: 0,
                results,
            }
            .run(socket, incoming, init_timeout, closing)
            .await;
            drop(open);
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

/// How a connection ends.
enum End {
    /// We close with this code and reason, and wait for the peer's Close.
    Close(u16, String),
    /// The peer sent a Close; tungstenite has queued our answer, which must be flushed.
    Answer,
    /// The connection is gone (reset, or a write failed): nothing more can be sent.
    Gone,
}

impl End {
    fn close(code: u16, reason: &str) -> Self {
        End::Close(code, reason.to_owned())
    }

    /// The end a failed read calls for (RFC 6455 §7.4.1).
    fn after_read_error(error: axum::Error) -> Self {
        use tungstenite::error::{Error, ProtocolError};
        let error = match error.into_inner().downcast::<Error>() {
            Ok(error) => *error,
            Err(other) => {
                tracing::debug!(error = %other, "websocket read failed");
                return End::Gone;
            }
        };
        match error {
            Error::Capacity(_) => End::close(1009, "Message too big"),
            Error::Utf8(_) => End::close(1007, "Text is not UTF-8"),
            // A reset is the peer leaving without a Close; nobody is left to tell.
            Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
            Error::Protocol(_) | Error::AttackAttempt => End::close(1002, "Protocol error"),
            Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Io(_)
            | Error::Tls(_)
            | Error::WriteBufferFull(_)
            | Error::Url(_) => End::Gone,
            // The handshake's HTTP errors (present with tungstenite's `handshake`
            // feature) cannot happen on an open socket.
            #[allow(unreachable_patterns)]
            _ => End::Gone,
        }
    }
}

/// What an operation's task reports to its socket.
enum Event {
    Result {
        id: String,
        generation: u64,
        /// Rendered once, and shared by every identical subscription (see `shared`).
        response: Arc<Rendered>,
    },
    Done {
        id: String,
        generation: u64,
    },
}

/// An operation running in its own task; dropping it stops the task and frees its slot.
struct Running {
    generation: u64,
    task: AbortHandle,
    _slot: Option<Slot>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a `connection_init` payload carries a credential.
#[derive(Debug, PartialEq, Eq)]
enum Credential {
    /// None given: the socket is anonymous.
    Absent,
    /// An `Authorization` value, such as `Bearer <token>`.
    Authorization(String),
    /// Something that cannot be a credential (a number, a `headers` that is not an
    /// object): refused like a bad token.
    Unusable,
}

impl Credential {
    /// Reads the shapes common clients send, first match wins: `Authorization` (any case,
    /// as HTTP field names are case-insensitive), the same inside `headers` (Apollo Client
    /// and urql users copying their HTTP headers), then `authToken` (Apollo's documented
    /// example), which may be a bare token.
    fn from_init(payload: &serde_json::Map<String, Value>) -> Self {
        fn authorization(object: &serde_json::Map<String, Value>) -> Option<&Value> {
            object
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
                .map(|(_, value)| value)
                .filter(|value| !value.is_null())
        }
        let headers = match payload.get("headers") {
            None | Some(Value::Null) => None,
            Some(Value::Object(headers)) => authorization(headers),
            Some(_) => return Credential::Unusable,
        };
        if let Some(value) = authorization(payload).or(headers) {
            return match value {
                Value::String(value) => Credential::Authorization(value.clone()),
                _ => Credential::Unusable,
            };
        }
        match payload.get("authToken") {
            None | Some(Value::Null) => Credential::Absent,
            Some(Value::String(token)) if token.trim().is_empty() => Credential::Absent,
            Some(Value::String(token)) if bearer_token(token).is_some() => {
                Credential::Authorization(token.clone())
            }
            Some(Value::String(token)) => Credential::Authorization(format!("Bearer {token}")),
            Some(_) => Credential::Unusable,
        }
    }
}

struct Connection {
    gateway: Gateway,
    protocol: Protocol,
    acked: bool,
    /// The `Authorization` value from `connection_init`, checked again at each operation
    /// so an expired or revoked token stops working on an open socket too.
    authorization: Option<String>,
    /// Who signed in at `connection_init`, whose operation quota this socket draws on.
    customer: Option<CustomerId>,
    /// Where the socket comes from: its operations are rate-limited by this address as
    /// HTTP requests are, so mutations over a websocket are limited alike.
    client: ClientAddr,
    operations: HashMap<String, Running>,
    /// Numbers operations, so a result that was on its way when its id was completed and
    /// then reused is never taken for the new operation's.
    generation: u64,
    results: mpsc::Sender<Event>,
}

impl Connection {
    async fn run(
        mut self,
        mut socket: WebSocket,
        mut events: mpsc::Receiver<Event>,
        init_timeout: Duration,
        closing: CancellationToken,
    ) {
        let init_deadline = Instant::now() + init_timeout;
        let mut keepalive = self.gateway.app.settings.graphql.ws_keepalive();
        if self.protocol == Protocol::Legacy {
            keepalive = keepalive.min(LEGACY_KA_MAX);
        }
        let mut heartbeat = interval_at(Instant::now() + keepalive, keepalive);
        let mut last_heard = Instant::now();
        let end = loop {
            tokio::select! {
                () = closing.cancelled() => break End::close(1001, "Server shutting down"),
                incoming = socket.recv() => {
                    // Anything at all shows the peer is there.
                    if matches!(incoming, Some(Ok(_))) {
                        last_heard = Instant::now();
                    }
                    match incoming {
                        None => break End::Gone,
                        Some(Err(error)) => break End::after_read_error(error),
                        Some(Ok(Message::Close(_))) => break End::Answer,
                        Some(Ok(Message::Text(text))) => {
                            // Boxed, as the other rare branches: an idle socket's task then
                            // holds only what waiting needs, not room for a sign-in's
                            // database query (see `READ_BUFFER_BYTES` for why it matters).
                            if let Err(end) = Box::pin(self.on_text(text.as_str(), &mut socket)).await {
                                break end;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            break End::close(4400, "Binary messages are not supported");
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    }
                }
                Some(event) = events.recv() => {
                    if let Err(end) = Box::pin(self.on_event(event, &mut socket)).await {
                        break end;
                    }
                }
                () = sleep_until(init_deadline), if !self.acked => {
                    break End::close(4408, "Connection initialisation timeout");
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > keepalive * SILENT_INTERVALS {
                        // A peer that vanished without closing (a phone that lost its
                        // network) would otherwise hold its operations until TCP gives up.
                        tracing::debug!("websocket peer silent; dropping it");
                        break End::Gone;
                    }
                    // Browsers and graphql-ws answer a ping with a pong by themselves.
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break End::Gone;
                    }
                    // subscriptions-transport-ws closes a socket that has had one `ka` and
                    // then none for its 30 s timeout.
                    if self.protocol == Protocol::Legacy && self.acked
                        && Self::send(&mut socket, json!({"type": "ka"})).await.is_err()
                    {
                        break End::Gone;
                    }
                }
            }
        };
        // Stop every operation before the handshake, so none holds anything meanwhile.
        self.operations.clear();
        Box::pin(finish(socket, end)).await;
    }

    async fn send(socket: &mut WebSocket, message: Value) -> Result<(), End> {
        socket
            .send(Message::Text(message.to_string().into()))
            .await
            .map_err(|_| End::Gone)
    }

    /// Handles one client message.
    async fn on_text(&mut self, text: &str, socket: &mut WebSocket) -> Result<(), End> {
        let message: ClientMessage =
            serde_json::from_str(text).map_err(|_| End::close(4400, "Invalid message received"))?;
        let legacy = self.protocol == Protocol::Legacy;
        match message {
            ClientMessage::ConnectionInit { payload } => self.init(payload, socket).await,
            ClientMessage::Ping { payload } if !legacy => {
                let mut pong = json!({"type": "pong"});
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                Self::send(socket, pong).await
            }
            ClientMessage::Pong {} if !legacy => Ok(()),
            ClientMessage::Subscribe { id, payload } if !legacy => {
                self.start(id, payload, socket).await
            }
            ClientMessage::Start { id, payload } if legacy => self.start(id, payload, socket).await,
            ClientMessage::Complete { id } if !legacy => {
                self.operations.remove(&id);
                Ok(())
            }
            ClientMessage::Stop { id } if legacy => {
                self.operations.remove(&id);
                Self::send(socket, json!({"type": "complete", "id": id})).await
            }
            ClientMessage::ConnectionTerminate {} if legacy => Err(End::close(1000, "Terminated")),
            _ => Err(End::close(4400, "Invalid message received")),
        }
    }

    async fn init(&mut self, payload: Option<Value>, socket: &mut WebSocket) -> Result<(), End> {
        if self.acked {
            return Err(End::close(4429, "Too many initialisation requests"));
        }
        let credential = match payload {
            None | Some(Value::Null) => Credential::Absent,
            Some(Value::Object(payload)) => Credential::from_init(&payload),
            Some(_) => {
                return Err(End::close(
                    4400,
                    "connection_init payload must be an object",
                ));
            }
        };
        let legacy = self.protocol == Protocol::Legacy;
        let (authorization, viewer) = match credential {
            Credential::Absent => (None, Viewer::Anonymous),
            Credential::Unusable => (None, Viewer::Rejected),
            Credential::Authorization(value) => {
                let app = &self.gateway.app;
                let viewer =
                    Viewer::from_authorization(Some(&value), &app.token_keys, &app.db).await;
                (Some(value), viewer)
            }
        };
        let refusal = match &viewer {
            Viewer::Anonymous | Viewer::Customer { .. } => None,
            Viewer::Rejected => Some((4403, "Forbidden", "UNAUTHENTICATED")),
            // Not the client's fault: 1013 (Try Again Later) makes graphql-ws retry.
            Viewer::Unavailable => Some((1013, "Try again later", "INTERNAL")),
        };
        if let Some((code, reason, error_code)) = refusal {
            if legacy {
                let error = json!({"type": "connection_error", "payload": {"message": reason, "extensions": {"code": error_code}}});
                let _ = Self::send(socket, error).await;
            }
            return Err(End::close(code, reason));
        }
        self.customer = viewer.customer().ok().cloned();
        self.authorization = authorization;
        self.acked = true;
        Self::send(socket, json!({"type": "connection_ack"})).await?;
        if legacy {
            Self::send(socket, json!({"type": "ka"})).await?;
        }
        Ok(())
    }

    /// An `error` message for operation `id`, in the protocol's shape.
    fn operation_error(&self, id: &str, message: &str, code: &str) -> Value {
        let error = json!({"message": message, "extensions": {"code": code}});
        match self.protocol {
            Protocol::TransportWs => json!({"type": "error", "id": id, "payload": [error]}),
            Protocol::Legacy => json!({"type": "error", "id": id, "payload": error}),
        }
    }

    async fn start(
        &mut self,
        id: String,
        payload: Value,
        socket: &mut WebSocket,
    ) -> Result<(), End> {
        if !self.acked {
            return Err(End::close(4401, "Unauthorized"));
        }
        if id.is_empty() || id.len() > 128 {
            return Err(End::close(4400, "Invalid message received"));
        }
        if self.operations.contains_key(&id) {
            return Err(End::Close(
                4409,
                format!("Subscriber for {id} already exists"),
            ));
        }
        let request: async_graphql::Request = match serde_json::from_value(payload) {
            Ok(request) => request,
            Err(_) if self.protocol == Protocol::TransportWs => {
                return Err(End::close(4400, "Invalid message received"));
            }
            Err(_) => {
                let error =
                    self.operation_error(&id, "invalid operation payload", "BAD_USER_INPUT");
                return Self::send(socket, error).await;
            }
        };
        let settings = &self.gateway.app.settings.graphql;
        let per_socket = settings.ws_max_operations;
        if self.operations.len() >= usize::try_from(per_socket).unwrap_or(usize::MAX) {
            let message = format!("at most {per_socket} operations at once per connection");
            let error = self.operation_error(&id, &message, "RATE_LIMITED");
            return Self::send(socket, error).await;
        }
        let slot = match &self.customer {
            Some(customer) => {
                let quota = &self.gateway.app.quotas.ws_operations;
                match quota.try_acquire(customer.as_str()) {
                    Some(slot) => Some(slot),
                    None => {
                        let message =
                            format!("at most {} operations at once per customer", quota.limit());
                        let error = self.operation_error(&id, &message, "RATE_LIMITED");
                        return Self::send(socket, error).await;
                    }
                }
            }
            None => None,
        };
        self.generation += 1;
        let generation = self.generation;
        let task = tokio::spawn(run_guarded(
            self.gateway.clone(),
            self.authorization.clone(),
            request.data(self.client),
            id.clone(),
            generation,
            self.results.clone(),
        ));
        self.operations.insert(
            id,
            Running {
                generation,
                task: task.abort_handle(),
                _slot: slot,
            },
        );
        Ok(())
    }

    /// Sends what an operation produced, if the operation is still the one that asked.
    async fn on_event(&mut self, event: Event, socket: &mut WebSocket) -> Result<(), End> {
        let (id, generation, response) = match event {
            Event::Result {
                id,
                generation,
                response,
            } => (id, generation, Some(response)),
            Event::Done { id, generation } => (id, generation, None),
        };
        if self
            .operations
            .get(&id)
            .is_none_or(|running| running.generation != generation)
        {
            return Ok(());
        }
        let Some(response) = response else {
            self.operations.remove(&id);
            return Self::send(socket, json!({"type": "complete", "id": id})).await;
        };
        // Written around the rendered body: a status change goes to every subscriber of
        // the order, so this runs thousands of times per change.
        let message = match (self.protocol, &response.request_errors) {
            // A request error ends the operation with `error` and no `complete`.
            (Protocol::TransportWs, Some(errors)) => {
                self.operations.remove(&id);
                message("error", &id, errors)
            }
            (Protocol::TransportWs, None) => message("next", &id, &response.body),
            (Protocol::Legacy, _) => message("data", &id, &response.body),
        };
        socket
            .send(Message::Text(message.into()))
            .await
            .map_err(|_| End::Gone)
    }
}

/// `{"type":kind,"id":id,"payload":payload}`, `payload` being JSON already.
fn message(kind: &'static str, id: &str, payload: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(payload.len() + id.len() + 32);
    out.push_str("{\"type\":\"");
    out.push_str(kind);
    out.push_str("\",\"id\":");
    out.push_str(&id);
    out.push_str(",\"payload\":");
    out.push_str(payload);
    out.push('}');
    out
}

/// Runs [`run_operation`]; should it panic, the client gets an `INTERNAL` error for the
/// operation (and its slot is freed) instead of an operation that never ends.
async fn run_guarded(
    gateway: Gateway,
    authorization: Option<String>,
    request: async_graphql::Request,
    id: String,
    generation: u64,
    results: mpsc::Sender<Event>,
) {
    use futures_util::FutureExt;
    let run = run_operation(
        gateway,
        authorization,
        request,
        id.clone(),
        generation,
        results.clone(),
    );
    if std::panic::AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!(operation_id = %id, "websocket operation panicked");
        let internal = async_graphql::Error::from(ApiError::Internal);
        let mut error = async_graphql::ServerError::new(internal.message, None);
        error.extensions = internal.extensions;
        let response = async_graphql::Response::from_errors(vec![error]);
        let result = Event::Result {
            id: id.clone(),
            generation,
            response: Arc::new(Rendered::new(&response)),
        };
        if results.send(result).await.is_ok() {
            let _ = results.send(Event::Done { id, generation }).await;
        }
    }
}

/// One operation, in its own task: checks the caller again, then forwards each result.
async fn run_operation(
    gateway: Gateway,
    authorization: Option<String>,
    request: async_graphql::Request,
    id: String,
    generation: u64,
    results: mpsc::Sender<Event>,
) {
    let app = &gateway.app;
    // Boxed: the task lives as long as the subscription, and would otherwise keep room for
    // this one query's future all that time.
    let viewer = Box::pin(Viewer::from_authorization(
        authorization.as_deref(),
        &app.token_keys,
        &app.db,
    ))
    .await;
    let send = |response: Arc<Rendered>| {
        results.send(Event::Result {
            id: id.clone(),
            generation,
            response,
        })
    };
    if let Some(key) = Key::of(&viewer, &request) {
        let schema = gateway.schema.clone();
        let upstreams = app.upstreams.clone();
        let mut follower = gateway.shared.follow(key, move || {
            schema.execute_stream(request.data(Loaders::new(&upstreams)).data(viewer))
        });
        loop {
            match follower.next().await {
                Ok(rendered) => {
                    if send(rendered).await.is_err() {
                        return;
                    }
                }
                Err(Ended::Complete) => break,
                Err(Ended::Lagged) => {
                    // Practically unreachable (see `shared::BACKLOG`): the app subscribes
                    // again and is sent the newest result.
                    let internal = async_graphql::Error::from(ApiError::Internal);
                    let mut error =
                        async_graphql::ServerError::new("fell behind; subscribe again", None);
                    error.extensions = internal.extensions;
                    let response = async_graphql::Response::from_errors(vec![error]);
                    let _ = send(Arc::new(Rendered::new(&response))).await;
                    return;
                }
            }
        }
    } else {
        let request = request.data(Loaders::new(&app.upstreams)).data(viewer);
        let mut stream = gateway.schema.execute_stream(request);
        while let Some(response) = stream.next().await {
            if send(Arc::new(Rendered::new(&response))).await.is_err() {
                return;
            }
        }
    }
    let _ = results.send(Event::Done { id, generation }).await;
}

/// Ends the connection as `end` says, within [`CLOSE_TIMEOUT`].
async fn finish(mut socket: WebSocket, end: End) {
    match end {
        End::Gone => {}
        End::Answer => {
            // Sends the Close tungstenite queued in answer (RFC 6455 §5.5.1); the server
            // then closes the TCP connection first (§7.1.1), by dropping it.
            let _ = timeout(CLOSE_TIMEOUT, socket.flush()).await;
        }
        End::Close(code, reason) => {
            tracing::debug!(code, %reason, "closing websocket");
            let frame = CloseFrame {
                code,
                reason: close_reason(&reason).into(),
            };
            let handshake = async {
                if socket.send(Message::Close(Some(frame))).await.is_err() {
                    return;
                }
                // Until the peer's Close arrives (or the connection ends).
                while let Some(Ok(_)) = socket.recv().await {}
            };
            let _ = timeout(CLOSE_TIMEOUT, handshake).await;
        }
    }
}

/// `reason` cut to what a Close frame holds: a control frame's payload is at most 125
/// bytes, two of them the code (RFC 6455 §5.5), and the reason stays UTF-8 (§5.5.1).
fn close_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::{Credential, Protocol, close_reason};

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close_reason("Forbidden"), "Forbidden");
        let long = format!("Subscriber for {} already exists", "é".repeat(100));
        let cut = close_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(cut), "{cut}");
    }
    use serde_json::{Value, json};

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

    fn credential(payload: Value) -> Credential {
        Credential::from_init(payload.as_object().expect("an object"))
    }

    #[test]
    fn credentials_are_found_in_every_shape_clients_send() {
        let bearer = || Credential::Authorization("Bearer t".to_owned());
        assert_eq!(credential(json!({"Authorization": "Bearer t"})), bearer());
        assert_eq!(credential(json!({"authorization": "Bearer t"})), bearer());
        assert_eq!(credential(json!({"AUTHORIZATION": "Bearer t"})), bearer());
        assert_eq!(
            credential(json!({"headers": {"Authorization": "Bearer t"}})),
            bearer()
        );
        assert_eq!(
            credential(json!({"headers": {"authorization": "Bearer t"}})),
            bearer()
        );
        assert_eq!(credential(json!({"authToken": "t"})), bearer());
        assert_eq!(credential(json!({"authToken": "Bearer t"})), bearer());
        assert_eq!(
            credential(json!({"Authorization": "Bearer t", "authToken": "u"})),
            bearer(),
            "Authorization comes first"
        );
        assert_eq!(credential(json!({})), Credential::Absent);
        assert_eq!(credential(json!({"authToken": null})), Credential::Absent);
        assert_eq!(credential(json!({"headers": {}})), Credential::Absent);
        assert_eq!(
            credential(json!({"Authorization": 1})),
            Credential::Unusable
        );
        assert_eq!(credential(json!({"headers": "x"})), Credential::Unusable);
        assert_eq!(
            credential(json!({"authToken": ["t"]})),
            Credential::Unusable
        );
    }
}
