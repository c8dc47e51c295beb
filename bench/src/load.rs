//! The load generator: `connections` keep-alive HTTP/1.1 connections (hyper's client
//! connection, no pool), each sending one request at a time, for a fixed time after a
//! warm-up. Closed loop (each connection sends its next request when the answer is in:
//! saturation throughput) or open loop (requests at a fixed total rate, each latency taken
//! from when the request was due, so a stalled server is not hidden: no coordinated
//! omission). Latencies go into an HDR histogram in microseconds. Every answer is checked
//! against an [`Expected`]; a failure is counted and its first few reasons kept.

use crate::check::Expected;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::net::TcpStream;

/// Failure reasons kept per run (the count covers them all).
const KEPT_FAILURES: usize = 5;

/// One request, sent again and again, and what its answer must be.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub method: hyper::Method,
    /// Path and query, e.g. `/graphql`.
    pub path: String,
    /// Extra headers (the `Host` and, with a body, `Content-Type: application/json` are set).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When set, this placeholder in the body is replaced by a number unique to each
    /// request (an upstream that answers a repeated request id from its cache would
    /// otherwise be measured replaying).
    pub unique: Option<&'static str>,
    pub expected: Expected,
}

impl Target {
    /// A GraphQL POST of `query` (no variables) to `addr`'s `/graphql`.
    pub fn graphql(addr: SocketAddr, query: &str, expected: Expected) -> Self {
        let body = serde_json::json!({ "query": query }).to_string();
        Self {
            addr,
            method: hyper::Method::POST,
            path: "/graphql".to_owned(),
            headers: Vec::new(),
            body: Bytes::from(body),
            unique: None,
            expected,
        }
    }

    /// The same target with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn request(&self, n: u64) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(hyper::header::HOST, self.addr.to_string());
        if !self.body.is_empty() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = match self.unique {
            Some(placeholder) => Bytes::from(
                String::from_utf8_lossy(&self.body).replace(placeholder, &n.to_string()),
            ),
            None => self.body.clone(),
        };
        builder.body(Full::new(body))
    }
}

/// How a run goes.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests per second over all connections; `None`: closed loop.
    pub rate: Option<f64>,
}

/// What a run measured (after the warm-up only).
#[derive(Debug)]
pub struct Outcome {
    /// Answers that passed the check.
    pub served: u64,
    pub failures: u64,
    /// The first few failures' reasons.
    pub failure_reasons: Vec<String>,
    /// The measured window.
    pub elapsed: Duration,
    /// Latencies of served requests, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Outcome {
    fn empty() -> Self {
        Self {
            served: 0,
            failures: 0,
            failure_reasons: Vec::new(),
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
        }
    }

    /// Requests served per second.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.served as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at `quantile` (0.5, 0.99) in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn fail(&mut self, reason: String) {
        self.failures += 1;
        if self.failure_reasons.len() < KEPT_FAILURES {
            self.failure_reasons.push(reason);
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.served += other.served;
        self.failures += other.failures;
        for reason in other.failure_reasons {
            if self.failure_reasons.len() < KEPT_FAILURES {
                self.failure_reasons.push(reason);
            }
        }
        // Both histograms are auto-resizing with the same precision, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// One line: rate, latencies, failures.
    pub fn summary(&self) -> String {
        format!(
            "{:.0} req/s served, p50 {:.2} ms, p99 {:.2} ms, {} failures",
            self.rps(),
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.failures
        )
    }
}

/// A histogram of microseconds, three significant figures, growing as needed.
pub fn new_histogram() -> Histogram<u64> {
    // Three significant figures is within the bounds `new` accepts.
    let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures"));
    h.auto(true);
    h
}

/// Runs `plan` against `target`.
pub async fn run(target: &Target, plan: Plan) -> Outcome {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let salt = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 48;
    let target = Arc::new(target.clone());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let connections = plan.connections.max(1);
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let target = target.clone();
        // Open loop: each connection sends every `connections / rate` seconds, the
        // connections staggered evenly over one interval.
        let schedule = plan.rate.map(|rate| {
            let interval = Duration::from_secs_f64(connections as f64 / rate.max(0.001));
            (
                start + interval.mul_f64(i as f64 / connections as f64),
                interval,
            )
        });
        tasks.push(tokio::spawn(async move {
            connection(
                &target,
                salt | ((i as u64) << 32),
                schedule,
                measure_from,
                end,
            )
            .await
        }));
    }
    let mut outcome = Outcome::empty();
    for task in tasks {
        match task.await {
            Ok(one) => outcome.merge(one),
            Err(e) => outcome.fail(format!("load task failed: {e}")),
        }
    }
    outcome.elapsed = plan.duration;
    outcome
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One connection's loop until `end`; reconnects after an error.
async fn connection(
    target: &Target,
    index: u64,
    schedule: Option<(Instant, Duration)>,
    measure_from: Instant,
    end: Instant,
) -> Outcome {
    let mut outcome = Outcome::empty();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut next_due = schedule.map(|(first, _)| first);
    let mut sent: u64 = 0;
    loop {
        let due = match (next_due, schedule) {
            (Some(due), Some((_, interval))) => {
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                next_due = Some(due + interval);
                due
            }
            _ => Instant::now(),
        };
        if due >= end {
            break;
        }
        let measured = due >= measure_from;
        if sender.is_none() {
            match connect(target.addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    if measured {
                        outcome.fail(e);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        sent += 1;
        let result = exchange(s, target, index | sent).await;
        let done = Instant::now();
        match result {
            Ok((status, body)) => {
                if measured {
                    match target.expected.check(status, &body) {
                        Ok(()) => {
                            outcome.served += 1;
                            let us = done.duration_since(due).as_micros();
                            let _ = outcome
                                .latency_us
                                .record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                        }
                        Err(reason) => outcome.fail(reason),
                    }
                }
            }
            Err(e) => {
                sender = None;
                if measured {
                    outcome.fail(e);
                }
            }
        }
    }
    outcome
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    n: u64,
) -> Result<(u16, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let request = target.request(n).map_err(|e| format!("request: {e}"))?;
    let response: hyper::Response<Incoming> = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_merges_and_reports() {
        let mut a = Outcome::empty();
        a.served = 10;
        let _ = a.latency_us.record(1_000);
        let mut b = Outcome::empty();
        b.served = 10;
        for _ in 0..10 {
            b.fail("x".into());
        }
        let _ = b.latency_us.record(3_000);
        a.merge(b);
        a.elapsed = Duration::from_secs(2);
        assert_eq!(a.served, 20);
        assert_eq!(a.failures, 10);
        assert_eq!(a.failure_reasons.len(), KEPT_FAILURES);
        assert_eq!(a.rps(), 10.0);
        assert!(
            (a.latency_ms(0.99) - 3.0).abs() < 0.01,
            "{}",
            a.latency_ms(0.99)
        );
    }
}
