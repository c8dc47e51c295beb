//! LIVE-STATUS (issue 12 item 6): idle `orderStatusChanged` subscriptions, each over its
//! own graphql-transport-ws connection, against a service of its own (SQLite).
//!
//! - Memory: the service's resident memory (VmRSS) before the subscriptions, with half of
//!   them open and with all open; per subscription overall and for the second half alone
//!   (the marginal cost, without what the first sockets warm up).
//! - Idle CPU: the service's user + system time over 10 s with every subscription open
//!   and nothing happening (keep-alive pings included).
//! - Fan-out: all subscribers on one order; the store accepts, readies and completes it
//!   in Okya's order manager (the simulator sends the signed webhook); for each change,
//!   the time from the store's call to each subscriber's message: p50, p99 and the last.
//!   This includes the simulator's webhook delivery, so it is an upper bound of the
//!   webhook-to-subscriber time.
//! - Spread: the same number of subscribers over one order per 10, all accepted at once.

use super::Ctx;
use crate::{Error, client, procs::Database};
use bench::table::{Goal, Row};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

const SUBSCRIBE: &str = "subscription($id: ID!) { orderStatusChanged(orderId: $id) { id status statusHistory { status at } total { amount currencyCode } } }";

/// One status message: which subscriber, the status, when it arrived.
/// One delivery: the subscriber, the status, when it arrived, and how long after the
/// change was recorded (the newest `statusHistory` entry's `at`, same machine's clock).
type Arrival = (usize, String, Instant, Option<f64>);

/// The service's default `graphql.ws_keepalive_ms`.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Where the subscriptions are served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// One instance on SQLite.
    OneOnSqlite,
    /// Two instances on one PostgreSQL database, half the subscribers on each; the
    /// simulators' webhooks go to the first, and either runs the jobs.
    TwoOnPostgres,
}

impl Setup {
    /// What the table's rows add to say where they ran.
    fn label(self) -> &'static str {
        match self {
            Setup::OneOnSqlite => "",
            Setup::TwoOnPostgres => {
                " [two instances on PostgreSQL, half the subscribers on each; figures per subscription and CPU are both instances' together]"
            }
        }
    }
}

/// One instance on SQLite.
pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    run_on(ctx, Setup::OneOnSqlite).await
}

/// Two instances on one PostgreSQL database.
pub async fn run_two_on_postgres(ctx: &mut Ctx) -> Result<(), Error> {
    if ctx.args.no_postgres {
        println!("live-status-pg: skipped (--no-postgres)");
        return Ok(());
    }
    run_on(ctx, Setup::TwoOnPostgres).await
}

async fn run_on(ctx: &mut Ctx, setup: Setup) -> Result<(), Error> {
    let label = setup.label();
    let count = ctx
        .args
        .subscriptions
        .unwrap_or(if ctx.args.quick { 2_000 } else { 20_000 });
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let count = count.min(usize::try_from(soft.saturating_sub(200)).unwrap_or(usize::MAX));
    let per_customer = (count + 10).to_string();
    let (name, database) = match setup {
        Setup::OneOnSqlite => ("live", Database::Sqlite),
        Setup::TwoOnPostgres => (
            "live-pg",
            Database::Postgres {
                admin_url: ctx.args.postgres_url.clone(),
            },
        ),
    };
    let mut stack = crate::procs::Stack::start_with(
        &ctx.binaries,
        ctx.pinning,
        &ctx.work_dir,
        name,
        &database,
        &[(
            "CBTL_GRAPHQL__WS_MAX_OPERATIONS_PER_CUSTOMER",
            &per_customer,
            "every subscriber is the one customer who owns the order",
        )],
    )
    .await?;
    for note in &stack.non_defaults {
        if !ctx.settings_note.contains(note) {
            ctx.settings_note.push(note.clone());
        }
    }
    let mut pids = vec![stack.service.id().ok_or("the service has no pid")?];
    let mut ws_urls = vec![format!("ws://{}/graphql", stack.addr)];
    if setup == Setup::TwoOnPostgres {
        let (pid, addr) = stack
            .add_instance(&ctx.binaries, ctx.pinning, &ctx.work_dir, "live-pg-2")
            .await?;
        pids.push(pid);
        ws_urls.push(format!("ws://{addr}/graphql"));
    }
    let rss_kib = || {
        pids.iter()
            .map(|&pid| crate::procs::rss_kib(pid).unwrap_or(0))
            .sum::<u64>()
    };
    let base = format!("http://{}", stack.addr);
    let okya = stack.url("CBTL_OKYA__BASE_URL")?;
    let gql = client::Gql::new(&base);
    let customer = client::sign_up(&gql, ctx.fresh_customer_number()).await?;

    // One order for the fan-out, one per 10 subscribers for the spread.
    let one = place(&gql, &customer, &okya, 1).await?;
    let spread = place(&gql, &customer, &okya, count.div_ceil(10)).await?;

    // Fan-out to all on one order.
    let rss_before = rss_kib();
    let (tx, mut rx) = mpsc::unbounded_channel::<Arrival>();
    let half = count / 2;
    open(&ws_urls, &customer.token, &one, 0..half, &tx).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_half = rss_kib();
    open(&ws_urls, &customer.token, &one, half..count, &tx).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_all = rss_kib();
    let overall = (rss_all.saturating_sub(rss_before)) as f64 / count as f64;
    let marginal = (rss_all.saturating_sub(rss_half)) as f64 / (count - half) as f64;
    println!(
        "live-status: {count} subscriptions; RSS {rss_before} → {rss_half} → {rss_all} KiB: {overall:.2} KiB each overall, {marginal:.2} KiB marginal"
    );
    ctx.rows.push(Row {
        what: format!("resident memory per idle subscription, its websocket included ({count} open, one order){label}"),
        service: format!("{overall:.1} KiB overall, {marginal:.1} KiB marginal"),
        judged: Some(overall.max(marginal)),
        judged_text: Some(format!("{:.1} KiB", overall.max(marginal))),
        target: Some((Goal::AtMost(12.0), " KiB".to_owned())),
        ..Row::default()
    });

    // One whole keep-alive period (the service's default `graphql.ws_keepalive_ms`), so
    // that every socket's ping and pong fall in the window once: a shorter window could
    // fall between the bursts of pings and read as nearly free.
    let idle = KEEPALIVE;
    let cpu = idle_cpu(&pids, idle).await?;
    println!("live-status: idle CPU {cpu:.2}% of a core over {idle:?}");
    ctx.rows.push(Row {
        what: format!("service CPU with {count} idle subscriptions{label}"),
        service: format!("{cpu:.2}% of a core"),
        judged: Some(cpu),
        judged_text: Some(format!("{cpu:.2}%")),
        target: Some((Goal::AtMost(2.0), "%".to_owned())),
        ..Row::default()
    });

    let http = reqwest::Client::new();
    let mut raw = serde_json::Map::new();
    for (action, status) in [
        ("accept", "IN_PREPARATION"),
        ("ready", "READY_FOR_PICKUP"),
        ("complete", "COMPLETED"),
    ] {
        let delivered = change(&http, &okya, &one, action, status, count, &mut rx).await?;
        let latencies = delivered.from_trigger;
        let (p50, p99, last) = summary(&latencies);
        let (c50, c99, clast) = summary(&delivered.from_change);
        println!(
            "live-status: {action} → {status}: {}/{count} delivered; p50 {p50:.1} ms, p99 {p99:.1} ms, last {last:.1} ms; from the recorded change p50 {c50:.1} ms, p99 {c99:.1} ms, last {clast:.1} ms",
            latencies.len()
        );
        raw.insert(
            format!("one_order_{action}"),
            json!({"delivered": latencies.len(), "p50_ms": p50, "p99_ms": p99, "last_ms": last,
                   "from_change": {"p50_ms": c50, "p99_ms": c99, "last_ms": clast}}),
        );
        ctx.rows.push(Row {
            what: format!(
                "store's `{action}` → `{status}` at all {count} subscribers of one order{label}"
            ),
            service: format!(
                "p50 {p50:.1} ms, p99 {p99:.1} ms, last {last:.1} ms ({}/{count} delivered); from the recorded change p99 {c99:.1} ms",
                latencies.len()
            ),
            judged: Some(if latencies.len() == count {
                p99
            } else {
                f64::INFINITY
            }),
            judged_text: Some(format!("p99 {p99:.1} ms")),
            target: Some((Goal::AtMost(100.0), " ms".to_owned())),
            ..Row::default()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The completed order's subscriptions ended; their sockets close with the senders.
    drop(rx);
    let (tx, mut rx) = mpsc::unbounded_channel::<Arrival>();
    open(&ws_urls, &customer.token, &spread, 0..count, &tx).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = change_all(&http, &okya, &spread, count, &mut rx).await?;
    let latencies = delivered.from_trigger;
    let (p50, p99, last) = summary(&latencies);
    let (c50, c99, clast) = summary(&delivered.from_change);
    println!(
        "live-status: spread, from each order's recorded change: p50 {c50:.1} ms, p99 {c99:.1} ms, last {clast:.1} ms"
    );
    println!(
        "live-status: {count} subscribers over {} orders, all accepted at once: {}/{count} delivered; p50 {p50:.1} ms, p99 {p99:.1} ms, last {last:.1} ms",
        spread.len(),
        latencies.len()
    );
    raw.insert(
        "spread_accept".into(),
        json!({"orders": spread.len(), "delivered": latencies.len(), "p50_ms": p50, "p99_ms": p99, "last_ms": last}),
    );
    ctx.rows.push(Row {
        what: format!(
            "{count} subscribers over {} orders, all accepted at once: the last delivery{label}",
            spread.len()
        ),
        service: format!(
            "last {last:.0} ms (p50 {p50:.1}, p99 {p99:.1}; {}/{count} delivered)",
            latencies.len()
        ),
        judged: Some(if latencies.len() == count {
            last
        } else {
            f64::INFINITY
        }),
        judged_text: Some(format!("{last:.0} ms")),
        target: Some((Goal::AtMost(1000.0), " ms".to_owned())),
        ..Row::default()
    });
    ctx.rows.push(Row {
        what: format!(
            "the same {count} deliveries, from each order's change as recorded by its flow to delivery (the delivery path alone; the flows of {} acceptances at once are above){label}",
            spread.len()
        ),
        service: format!("p50 {c50:.1} ms, p99 {c99:.1} ms, last {clast:.1} ms"),
        ..Row::default()
    });
    raw.insert(
        "spread_from_change".into(),
        json!({"p50_ms": c50, "p99_ms": c99, "last_ms": clast}),
    );
    raw.insert(
        "rss_kib".into(),
        json!({"before": rss_before, "half": rss_half, "all": rss_all, "overall_per_subscription": overall, "marginal_per_subscription": marginal}),
    );
    raw.insert("idle_cpu_percent".into(), json!(cpu));
    let key = match setup {
        Setup::OneOnSqlite => "live_status",
        Setup::TwoOnPostgres => "live_status_two_on_postgres",
    };
    ctx.raw.insert(key.to_owned(), Value::Object(raw));
    stack.stop().await;
    Ok(())
}

/// An order placed and paid: our id and Okya's.
struct Placed {
    id: String,
    okya_id: String,
}

async fn place(
    gql: &client::Gql,
    customer: &client::Customer,
    okya: &str,
    n: usize,
) -> Result<Vec<Placed>, Error> {
    let mut placed = Vec::with_capacity(n);
    for _ in 0..n {
        let order = client::place_order(gql, customer, "pm_card_visa").await?;
        if order["status"] != "AWAITING_ACCEPTANCE" {
            return Err(format!("the order was not placed: {order}").into());
        }
        let id = order["id"].as_str().ok_or("no order id")?.to_owned();
        let number = order["number"]
            .as_str()
            .ok_or("no order number")?
            .to_owned();
        placed.push((id, number));
    }
    // Okya's ids, by order number and store.
    let listed: Value = reqwest::get(format!("{okya}/_sandbox/orders"))
        .await?
        .json()
        .await?;
    let okya_orders = listed["orders"].as_array().ok_or("no orders at Okya")?;
    placed
        .into_iter()
        .map(|(id, number)| {
            let okya_id = okya_orders
                .iter()
                .find(|o| o["number"].as_str() == Some(number.as_str()))
                .and_then(|o| o["id"].as_str())
                .ok_or_else(|| format!("order {number} not at Okya"))?;
            Ok(Placed {
                id,
                okya_id: okya_id.to_owned(),
            })
        })
        .collect()
}

/// Opens subscriptions `range` (subscriber `i` follows `orders[i % len]` through
/// `urls[i % len]`), 200 at a time,
/// and returns once each has its first message.
async fn open(
    urls: &[String],
    token: &str,
    orders: &[Placed],
    range: std::ops::Range<usize>,
    arrivals: &mpsc::UnboundedSender<Arrival>,
) -> Result<(), Error> {
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in range {
        if pending.len() >= 200
            && let Some(opened) = pending.next().await
        {
            opened?;
        }
        let order = orders[i % orders.len()].id.clone();
        pending.push(subscriber(
            urls[i % urls.len()].clone(),
            token.to_owned(),
            order,
            i,
            arrivals.clone(),
        ));
    }
    while let Some(opened) = pending.next().await {
        opened?;
    }
    Ok(())
}

/// Connects, subscribes and waits for the first message; then leaves a task reading the
/// socket, reporting each status with the moment it arrived and answering pings.
async fn subscriber(
    url: String,
    token: String,
    order: String,
    index: usize,
    arrivals: mpsc::UnboundedSender<Arrival>,
) -> Result<(), Error> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string())).await?;
    let mut subscribed = false;
    loop {
        let Some(message) = ws.next().await else {
            return Err("the socket closed before the first result".into());
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("connection_ack") if !subscribed => {
                subscribed = true;
                let subscribe = json!({"type": "subscribe", "id": "1", "payload": {"query": SUBSCRIBE, "variables": {"id": order}}});
                ws.send(Message::text(subscribe.to_string())).await?;
            }
            Some("next") if v["payload"].get("errors").is_none() => break,
            _ => return Err(format!("unexpected first message: {v}").into()),
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            let at = Instant::now();
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            match v["type"].as_str() {
                Some("next") => {
                    let order = &v["payload"]["data"]["orderStatusChanged"];
                    let status = order["status"].as_str().unwrap_or("?").to_owned();
                    let since_change = order["statusHistory"]
                        .as_array()
                        .and_then(|h| h.last())
                        .and_then(|last| last["at"].as_str())
                        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                        .map(|at| {
                            (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
                                .num_microseconds()
                                .unwrap_or(0) as f64
                                / 1000.0
                        });
                    if arrivals.send((index, status, at, since_change)).is_err() {
                        return;
                    }
                }
                Some("ping") => {
                    let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                }
                Some("complete") => return,
                _ => {}
            }
        }
    });
    Ok(())
}

/// The CPU the processes used together over `over`, in % of one core.
async fn idle_cpu(pids: &[u32], over: Duration) -> Result<f64, Error> {
    let ticks = |pid: u32| -> Result<u64, Error> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Ok(fields.get(11).ok_or("bad stat")?.parse::<u64>()?
            + fields.get(12).ok_or("bad stat")?.parse::<u64>()?)
    };
    // USER_HZ is 100 on Linux.
    let all = |pids: &[u32]| -> Result<u64, Error> { pids.iter().map(|&pid| ticks(pid)).sum() };
    let before = all(pids)?;
    let started = Instant::now();
    tokio::time::sleep(over).await;
    let used = all(pids)?.saturating_sub(before) as f64 / 100.0;
    Ok(used / started.elapsed().as_secs_f64() * 100.0)
}

/// The store's `action` on one order; each subscriber's delay to `status`, in ms.
async fn change(
    http: &reqwest::Client,
    okya: &str,
    orders: &[Placed],
    action: &str,
    status: &str,
    expected: usize,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
) -> Result<Delivered, Error> {
    let started = Instant::now();
    for order in orders {
        let sent = http
            .post(format!("{okya}/_sandbox/orders/{}/{action}", order.okya_id))
            .send()
            .await?;
        if !sent.status().is_success() {
            return Err(format!("{action} refused: {}", sent.text().await?).into());
        }
    }
    collect(started, status, expected, arrivals).await
}

/// Every order accepted at once (64 calls in flight).
async fn change_all(
    http: &reqwest::Client,
    okya: &str,
    orders: &[Placed],
    expected: usize,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
) -> Result<Delivered, Error> {
    let started = Instant::now();
    let calls = futures_util::stream::iter(orders.iter().map(|order| {
        http.post(format!("{okya}/_sandbox/orders/{}/accept", order.okya_id))
            .send()
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    for call in calls {
        if !call?.status().is_success() {
            return Err("an accept was refused".into());
        }
    }
    collect(started, "IN_PREPARATION", expected, arrivals).await
}

async fn collect(
    started: Instant,
    status: &str,
    expected: usize,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
) -> Result<Delivered, Error> {
    let mut latencies = Vec::with_capacity(expected);
    let mut since_change = Vec::with_capacity(expected);
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while latencies.len() < expected {
        tokio::select! {
            arrival = arrivals.recv() => match arrival {
                Some((_, s, at, after_change)) if s == status => {
                    latencies.push(at.duration_since(started).as_secs_f64() * 1000.0);
                    since_change.extend(after_change);
                }
                Some(_) => {}
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    latencies.sort_by(f64::total_cmp);
    since_change.sort_by(f64::total_cmp);
    Ok(Delivered {
        from_trigger: latencies,
        from_change: since_change,
    })
}

/// The deliveries of one change, sorted, in ms: from the store's action (the sandbox
/// call that makes Okya send its webhook), and from the moment the service recorded the
/// change (its flow having run: acceptance injects the order into the POS first).
struct Delivered {
    from_trigger: Vec<f64>,
    from_change: Vec<f64>,
}

/// p50, p99 and the last, in ms.
fn summary(sorted: &[f64]) -> (f64, f64, f64) {
    let at = |p: f64| {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    (
        at(0.5),
        at(0.99),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}
