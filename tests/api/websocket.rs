//! `/graphql` as a websocket: graphql-transport-ws with its close codes, and legacy graphql-ws.

use crate::helpers::{
    Db, Sim, TestApp, Ws, init_ws, next_json, send_json, spawn_app, spawn_app_with,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::{
    MaybeTlsStream, connect_async,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::{
            CloseFrame,
            frame::{
                Frame,
                coding::{CloseCode, Data, OpCode},
            },
        },
    },
};

/// Reads until the server closes, returning the close code and reason, then completes the
/// closing handshake as a browser would (answering the Close) and sees the server end the
/// connection.
pub(crate) async fn close_code(socket: &mut Ws) -> (u16, String) {
    let frame = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a code"),
            Some(Ok(_)) => continue,
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("the server ends the connection after the handshake");
    assert!(end.is_none(), "a clean end, not {end:?}");
    frame
}

#[tokio::test]
async fn transport_ws_runs_an_operation_to_completion_and_answers_pings() {
    let app = spawn_app().await;
    let mut ws = app.connect_ws("graphql-transport-ws").await;
    send_json(&mut ws, json!({"type": "ping", "payload": {"n": 1}})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "pong", "payload": {"n": 1}})
    );
    init_ws(&mut ws, json!({})).await;
    send_json(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ stores { id } }"}}),
    )
    .await;
    let next = next_json(&mut ws).await;
    assert_eq!(next["type"], "next");
    assert_eq!(next["id"], "1");
    assert!(next["payload"]["data"]["stores"].as_array().unwrap().len() >= 3);
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "complete", "id": "1"})
    );

    // A request error is an `error` message, with no `complete` after it.
    send_json(
        &mut ws,
        json!({"id": "2", "type": "subscribe", "payload": {"query": "{ nope }"}}),
    )
    .await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["type"], "error");
    assert!(error["payload"][0]["message"].is_string());
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn transport_ws_closes_with_the_protocol_codes() {
    let app = spawn_app_with(Db::Sqlite, |s| s.graphql.ws_init_timeout_secs = 1).await;

    let mut ws = app.connect_ws("graphql-transport-ws").await;
    send_json(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ stores { id } }"}}),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, (4401, "Unauthorized".to_owned()));

    let mut ws = app.connect_ws("graphql-transport-ws").await;
    init_ws(&mut ws, json!({})).await;
    send_json(&mut ws, json!({"type": "connection_init"})).await;
    assert_eq!(close_code(&mut ws).await.0, 4429);

    let mut ws = app.connect_ws("graphql-transport-ws").await;
    send_json(&mut ws, json!({"type": "what"})).await;
    assert_eq!(close_code(&mut ws).await.0, 4400);

    let mut ws = app.connect_ws("graphql-transport-ws").await;
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 4400);

    let mut ws = app.connect_ws("graphql-transport-ws").await;
    assert_eq!(
        close_code(&mut ws).await,
        (4408, "Connection initialisation timeout".to_owned())
    );

    // Two operations with one id while the first still runs.
    app.faults(Sim::Okya, json!({"latency_ms": 1500})).await;
    let mut ws = app.connect_ws("graphql-transport-ws").await;
    init_ws(&mut ws, json!({})).await;
    let subscribe =
        json!({"id": "dup", "type": "subscribe", "payload": {"query": "{ stores { id } }"}});
    send_json(&mut ws, subscribe.clone()).await;
    send_json(&mut ws, subscribe).await;
    assert_eq!(
        close_code(&mut ws).await,
        (4409, "Subscriber for dup already exists".to_owned())
    );
    // With the longest id, the reason is cut to fit a Close frame (RFC 6455 §5.5).
    let mut ws = app.connect_ws("graphql-transport-ws").await;
    init_ws(&mut ws, json!({})).await;
    let id = "i".repeat(128);
    let subscribe =
        json!({"id": id, "type": "subscribe", "payload": {"query": "{ stores { id } }"}});
    send_json(&mut ws, subscribe.clone()).await;
    send_json(&mut ws, subscribe).await;
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, 4409);
    assert!(
        reason.starts_with("Subscriber for iii") && reason.len() <= 123,
        "{reason}"
    );
}

#[tokio::test]
async fn legacy_graphql_ws_speaks_start_data_complete() {
    let app = spawn_app().await;
    let mut ws = app.connect_ws("graphql-ws").await;
    init_ws(&mut ws, json!({})).await;
    assert_eq!(next_json(&mut ws).await["type"], "ka");
    send_json(&mut ws, json!({"id": "a", "type": "start", "payload": {"query": "{ product(id: \"prd_latte\") { name } }"}})).await;
    let data = next_json(&mut ws).await;
    assert_eq!(data["type"], "data");
    assert_eq!(data["payload"]["data"]["product"]["name"], "Caffè Latte");
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "complete", "id": "a"})
    );
    send_json(&mut ws, json!({"type": "connection_terminate"})).await;
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

/// A cart at `str_pasadena` with one croissant, checked out by `token`'s customer: the order
/// and the cart's id.
async fn place_order(app: &TestApp, token: &str, key: &str) -> (Value, String) {
    app.use_token(Some(token));
    let cart = app
        .cart_with(
            "str_pasadena",
            json!([{"productId": "prd_croissant", "quantity": 1}]),
        )
        .await;
    let payload = app
        .checkout_selecting("id status", &cart, "pm_card_visa", None, key)
        .await;
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    (payload["order"].clone(), cart)
}

/// Sends the Okya simulator's current copy of the order placed from `cart` to our webhook,
/// signed as Okya signs it; the status we answer.
async fn okya_webhook_for(app: &TestApp, cart: &str) -> u16 {
    use cbtl_bff::upstream::signature::sign;
    let okya = app.okya_order(cart).await;
    assert!(okya.is_object(), "an Okya order for {cart}");
    let event = json!({"id": format!("evt_{}", uuid::Uuid::new_v4().simple()), "type": "order.updated", "created_at": chrono::Utc::now(), "data": {"order": okya}}).to_string();
    let signature = sign(
        "whsec_okya_sandbox",
        chrono::Utc::now().timestamp(),
        event.as_bytes(),
    );
    app.post_okya_webhook(&event, Some(signature)).await
}

#[tokio::test]
async fn thirty_subscribes_on_one_socket_cost_only_their_sender() {
    // A small pool and a short wait for a connection make any hoarding show at once.
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.database.max_connections = Some(3);
        s.database.max_connections_per_customer = 1;
        s.database.acquire_timeout_ms = 500;
        s.sandbox.auto_accept_delay_ms = 0;
    })
    .await;
    let ada = app.sign_up("+16265550140", "ada@example.com").await;
    let bob = app.sign_up("+16265550141", "bob@example.com").await;
    let (order, _) = place_order(&app, &ada.access_token, "ada-1").await;
    let order_id = order["id"].as_str().expect("order id").to_owned();

    let mut ws = app.connect_ws("graphql-transport-ws").await;
    let bearer = format!("Bearer {}", ada.access_token);
    init_ws(&mut ws, json!({"Authorization": bearer})).await;
    let query = "subscription($o: ID!) { orderStatusChanged(orderId: $o) { id status statusHistory { status } } }";
    for n in 0..30 {
        ws.feed(Message::Text(
            json!({"id": format!("s{n}"), "type": "subscribe", "payload": {"query": query, "variables": {"o": order_id}}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();

    // Meanwhile another customer uses the service as usual.
    for _ in 0..5 {
        let me = app
            .gql_as(Some(&bob.access_token), "{ me { email } }", json!({}))
            .await;
        assert_eq!(me["data"]["me"]["email"], "bob@example.com", "{me}");
    }
    let refreshed = app
        .gql_as(
            None,
            "mutation($i: TokenRefreshInput!) { tokenRefresh(input: $i) { accessToken userErrors { code } } }",
            json!({"i": {"refreshToken": bob.refresh_token}}),
        )
        .await;
    assert_eq!(
        refreshed["data"]["tokenRefresh"]["userErrors"],
        json!([]),
        "{refreshed}"
    );
    let bob_token = refreshed["data"]["tokenRefresh"]["accessToken"]
        .as_str()
        .expect("a new access token")
        .to_owned();
    let (bobs, cart) = place_order(&app, &bob_token, "bob-1").await;
    assert_eq!(bobs["status"], "AWAITING_ACCEPTANCE", "{bobs}");
    assert_eq!(okya_webhook_for(&app, &cart).await, 204);

    // The sender got what the limits allow: every subscribe is answered, the ones past the
    // per-socket limit with an `error`.
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < 30 {
        let message = next_json(&mut ws).await;
        let id = message["id"].as_str().expect("an id").to_owned();
        answered.entry(id).or_insert(message);
    }
    let (mut live, mut refused) = (0, 0);
    for message in answered.values() {
        match message["type"].as_str() {
            Some("next") => {
                assert_eq!(
                    message["payload"]["data"]["orderStatusChanged"]["id"], order_id,
                    "{message}"
                );
                live += 1;
            }
            Some("error") => {
                assert_eq!(
                    message["payload"][0]["extensions"]["code"], "RATE_LIMITED",
                    "{message}"
                );
                refused += 1;
            }
            _ => panic!("unexpected {message}"),
        }
    }
    let limit = usize::try_from(app.app.state().settings.graphql.ws_max_operations).unwrap();
    assert!(
        limit < 30,
        "the default limit is below what this test sends"
    );
    assert_eq!((live, refused), (limit, 30 - limit));
}

/// The service's end of the TCP connection whose client end is `client`: this process's
/// socket bound to `server` and connected to `client` (the service runs in the test's
/// process), duplicated so its options can be read.
#[cfg(target_os = "linux")]
fn accepted_socket(
    server: std::net::SocketAddr,
    client: std::net::SocketAddr,
) -> Option<std::net::TcpStream> {
    use std::os::fd::{BorrowedFd, RawFd};
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor was listed as open a moment ago and is only borrowed
        // for the duplication; should it have been closed since, the duplication fails
        // (or names another socket, which the address check below rules out).
        let Ok(owned) = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() else {
            continue;
        };
        let stream = std::net::TcpStream::from(owned);
        if stream.local_addr().ok() == Some(server) && stream.peer_addr().ok() == Some(client) {
            return Some(stream);
        }
    }
    None
}

fn client_addr(socket: &Ws) -> std::net::SocketAddr {
    match socket.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("client address"),
        _ => panic!("a plain TCP socket"),
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_sockets_send_small_messages_at_once() {
    let app = spawn_app().await;
    let mut ws = app.connect_ws("graphql-transport-ws").await;
    let accepted = accepted_socket(app.app.addr(), client_addr(&ws))
        .expect("the service's end of the websocket");
    // Without TCP_NODELAY, Nagle's algorithm holds a small frame until the previous one
    // is acknowledged, and a client that delays its ACK makes that about 40 ms.
    assert!(
        accepted.nodelay().expect("TCP_NODELAY readable"),
        "TCP_NODELAY is set on the accepted socket"
    );

    // Reported, not asserted (timing belongs to benchmarks): `next` to `complete`.
    init_ws(&mut ws, json!({})).await;
    send_json(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "next");
    let next_at = std::time::Instant::now();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "complete", "id": "1"})
    );
    eprintln!("next to complete: {:?}", next_at.elapsed());
}

#[tokio::test]
async fn a_clients_close_is_answered_with_a_close() {
    let app = spawn_app().await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = app.connect_ws(protocol).await;
        init_ws(&mut ws, json!({})).await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "page closed".into(),
        })))
        .await
        .unwrap();
        assert_eq!(
            close_code(&mut ws).await.0,
            1001,
            "{protocol}: the server echoes the client's code"
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("the server ends the connection")
                .is_none(),
            "{protocol}: a clean end after the handshake"
        );
    }

    // The legacy protocol's `connection_terminate` is a normal closure.
    let mut ws = app.connect_ws("graphql-ws").await;
    init_ws(&mut ws, json!({})).await;
    send_json(&mut ws, json!({"type": "connection_terminate"})).await;
    assert_eq!(close_code(&mut ws).await.0, 1000);
}

#[tokio::test]
async fn messages_the_server_cannot_take_close_with_their_code() {
    let app = spawn_app().await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        // Larger than the largest message taken (`graphql.max_body_bytes`, 64 KiB).
        let mut ws = app.connect_ws(protocol).await;
        let query = format!("{{ __typename }} #{}", "x".repeat(70 * 1024));
        send_json(
            &mut ws,
            json!({"id": "1", "type": "subscribe", "payload": {"query": query}}),
        )
        .await;
        assert_eq!(
            close_code(&mut ws).await.0,
            1009,
            "{protocol}: a message too big"
        );
    }
    // The same in fragments each under the limit (RFC 6455 §5.4).
    let mut ws = app.connect_ws("graphql-transport-ws").await;
    let half = vec![b' '; 40 * 1024];
    ws.feed(Message::Frame(Frame::message(
        half.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        half,
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(
        close_code(&mut ws).await.0,
        1009,
        "fragments too big together"
    );

    // A text frame that is not UTF-8 (RFC 6455 §8.1) is 1007.
    let mut ws = app.connect_ws("graphql-transport-ws").await;
    let raw = Frame::message(vec![0xff, 0xfe, 0x7b], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(raw)).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 1007, "invalid UTF-8");
}

/// The service as operators run it: the binary, stopped with SIGTERM.
#[cfg(unix)]
#[tokio::test]
async fn on_sigterm_every_socket_is_closed_with_going_away() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cbtl-bff"))
        .env("CBTL_LISTEN_ADDR", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        )
        .env("CBTL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("CBTL_CONFIG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the service starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(message) = event["message"].as_str()
                && message.starts_with("cbtl-bff listening")
            {
                return event["addr"].as_str().expect("addr").to_owned();
            }
        }
        panic!("the service ended before listening");
    })
    .await
    .expect("the service listens");
    // Keep reading its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let url = format!("ws://{addr}/graphql");
    let mut sockets = Vec::new();
    for (protocol, initialised) in [
        ("graphql-transport-ws", true),
        ("graphql-ws", true),
        ("graphql-transport-ws", false),
    ] {
        let mut request = url.clone().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        let (mut ws, _) = connect_async(request).await.expect("websocket connects");
        if initialised {
            init_ws(&mut ws, json!({})).await;
        }
        sockets.push(ws);
    }

    let pid = child.id().expect("a running service").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    for ws in &mut sockets {
        assert_eq!(close_code(ws).await.0, 1001);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the service stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn one_customers_operations_are_bounded_over_all_their_sockets() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.graphql.ws_max_operations_per_customer = 3;
        s.sandbox.auto_accept_delay_ms = 0;
    })
    .await;
    let ada = app.sign_up("+16265550142", "ada@example.com").await;
    let (order, _) = place_order(&app, &ada.access_token, "ada-1").await;
    let query = "subscription($o: ID!) { orderStatusChanged(orderId: $o) { id status } }";
    let subscribe = |id: &str| json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": {"o": order["id"]}}});
    let auth = json!({"Authorization": format!("Bearer {}", ada.access_token)});
    let mut first = app.connect_ws("graphql-transport-ws").await;
    init_ws(&mut first, auth.clone()).await;
    let mut second = app.connect_ws("graphql-transport-ws").await;
    init_ws(&mut second, auth).await;

    for id in ["a1", "a2"] {
        send_json(&mut first, subscribe(id)).await;
        assert_eq!(next_json(&mut first).await["type"], "next");
    }
    send_json(&mut second, subscribe("b1")).await;
    assert_eq!(next_json(&mut second).await["type"], "next");
    send_json(&mut second, subscribe("b2")).await;
    let refused = next_json(&mut second).await;
    assert_eq!(
        (&refused["type"], &refused["id"]),
        (&json!("error"), &json!("b2"))
    );
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");

    // Completing one frees its place; a ping's pong shows the completion was handled.
    send_json(&mut first, json!({"id": "a1", "type": "complete"})).await;
    send_json(&mut first, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut first).await["type"], "pong");
    send_json(&mut second, subscribe("b2")).await;
    let next = next_json(&mut second).await;
    assert_eq!((&next["type"], &next["id"]), (&json!("next"), &json!("b2")));
    // So does a socket that goes away.
    drop(first);
    app.eventually("the closed socket's operation is freed", || {
        let app = &app;
        let subscribe = &subscribe;
        let token = ada.access_token.clone();
        async move {
            let mut third = app.connect_ws("graphql-transport-ws").await;
            init_ws(&mut third, json!({"authToken": token})).await;
            send_json(&mut third, subscribe("c1")).await;
            next_json(&mut third).await["type"] == "next"
        }
    })
    .await;
}

#[tokio::test]
async fn a_peer_gone_silent_is_dropped_and_its_operations_freed() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.graphql.ws_keepalive_ms = 200;
        s.graphql.ws_max_operations_per_customer = 1;
        s.sandbox.auto_accept_delay_ms = 0;
    })
    .await;
    let ada = app.sign_up("+16265550143", "ada@example.com").await;
    let (order, _) = place_order(&app, &ada.access_token, "ada-1").await;
    let subscribe = json!({"id": "s", "type": "subscribe", "payload": {"query": "subscription($o: ID!) { orderStatusChanged(orderId: $o) { id } }", "variables": {"o": order["id"]}}});
    let auth = json!({"Authorization": format!("Bearer {}", ada.access_token)});

    // A phone that loses its network: the socket stays open but nothing answers pings.
    let mut lost = app.connect_ws("graphql-transport-ws").await;
    init_ws(&mut lost, auth.clone()).await;
    send_json(&mut lost, subscribe.clone()).await;
    assert_eq!(next_json(&mut lost).await["type"], "next");

    // Its reconnection is refused at first (the lost socket holds the one operation
    // allowed), then served once the lost socket is found silent and dropped.
    app.eventually("the silent socket's operation is freed", || {
        let app = &app;
        let (auth, subscribe) = (auth.clone(), subscribe.clone());
        async move {
            let mut again = app.connect_ws("graphql-transport-ws").await;
            init_ws(&mut again, auth).await;
            send_json(&mut again, subscribe).await;
            next_json(&mut again).await["type"] == "next"
        }
    })
    .await;
    drop(lost);
}

#[tokio::test]
async fn the_legacy_protocol_is_kept_alive_with_ka() {
    let app = spawn_app_with(Db::Sqlite, |s| s.graphql.ws_keepalive_ms = 200).await;
    let mut ws = app.connect_ws("graphql-ws").await;
    init_ws(&mut ws, json!({})).await;
    // subscriptions-transport-ws closes the socket when, after a first `ka`, none comes
    // within its timeout: they must keep coming.
    // (Bounded as a whole: the pings that come meanwhile keep each `recv` from timing out.)
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..3 {
            assert_eq!(next_json(&mut ws).await, json!({"type": "ka"}));
        }
    })
    .await
    .expect("`ka` keeps coming");
}
