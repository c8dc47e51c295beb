//! What stands between a call and a struggling upstream: a circuit breaker and a retry
//! budget per system, per instance.
//!
//! **The breaker** (`tower-resilience-circuitbreaker`, a resilience4j-style breaker from the
//! actively kept tower-resilience family; chosen over `failsafe`, last released in 2024,
//! which lets every call through while half-open and shows no state, and over `recloser`,
//! which has no state to read nor a transition hook for `/readyz` and our logs) watches
//! every attempt sent to one system. When at least `breaker.min_calls` attempts were made
//! in the last `breaker.window_secs` and `breaker.failure_ratio` of them failed, it opens:
//! calls are refused at once, without being sent, for `breaker.open_secs`. Then one probe
//! goes through (half-open); its success closes the breaker, its failure opens it again.
//!
//! Only what shows the upstream struggling counts as a failure ([`counts_against`]): a
//! 5xx, a 429, a timeout, a connection that failed or broke. A refusal (a card declined,
//! `invalid_state`, a 404) is a success here: the upstream was up and answered.
//!
//! A refused call never reached the upstream, so nothing happened there:
//! [`UpstreamError::CircuitOpen`](super::UpstreamError::CircuitOpen) is transient (a flow
//! step retries later through its own backoff) and, unlike a timeout, is never an answer
//! lost. An attempt refused after an earlier attempt of the same call was sent keeps that
//! earlier error, whose outcome is unknown.
//!
//! **The concurrency bound** (a bulkhead, resilience4j's name for it): at most
//! `<system>.max_concurrent_calls` attempts are in flight to one system from this instance.
//! An attempt waits for a free slot at most `<system>.timeout_ms`; when none frees, it is
//! not sent and fails with [`UpstreamError::Saturated`](super::UpstreamError::Saturated),
//! transient like an open breaker. A slow upstream then holds a bounded number of
//! connections, sockets and tasks, however many requests arrive. A tokio `Semaphore` with
//! a timed acquire: `tower-resilience-bulkhead` is the same semaphore, but as a tower layer
//! it needs its error convertible into the breaker's (a foreign type), and the slot must be
//! taken outside the breaker so that waiting never counts as the upstream's failure.
//!
//! **The retry budget** (tower's `TpsBudget`, the Finagle design): each call deposits,
//! each inline retry withdraws, so retries add at most `retry_budget.ratio` of the recent
//! calls (plus `retry_budget.min_per_sec`). In an outage a call is tried once instead of
//! three times, and the load on the struggling upstream is not multiplied.

use super::{System, UpstreamError};
use crate::config::{BreakerSettings, RetryBudgetSettings};
use futures_util::future::BoxFuture;
use std::{sync::Arc, time::Duration};
use tower::{
    ServiceExt,
    retry::budget::{Budget, TpsBudget},
};
use tower_resilience_circuitbreaker::{
    CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer, CircuitState, FailureClassifier,
    SlidingWindowType,
};

/// One attempt's failure: the error and the upstream's own retry advice
/// (`Stripe-Should-Retry`), which overrides ours when present.
pub(crate) type Failed = (UpstreamError, Option<bool>);

/// One attempt at an upstream: the raw 2xx body, or why not.
pub(crate) type Attempt = BoxFuture<'static, Result<Vec<u8>, Failed>>;

/// An attempt as the breaker's request. A named type, without the lifetime that a
/// `dyn Future + 'static` carries: with the bare box, proving the breaker's future `Send`
/// trips rustc's higher-ranked lifetime checks ("`Service` is not general enough").
pub struct Job(Attempt);

/// The service the breaker wraps: it just runs the attempt it is given, so that every
/// call site keeps its own request and error parsing.
#[derive(Clone, Copy, Debug)]
pub struct Runner;

impl tower::Service<Job> for Runner {
    type Response = Vec<u8>;
    type Error = Failed;
    type Future = Attempt;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Failed>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Attempt {
        job.0
    }
}

/// True when an attempt's failure is evidence that the upstream is struggling, so it
/// counts towards opening the breaker. A refusal proves the upstream is up.
pub fn counts_against(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Timeout { .. }
        | UpstreamError::Unavailable { .. }
        | UpstreamError::RateLimited { .. } => true,
        // A 5xx replayed from the idempotency store is an old answer served quickly by an
        // upstream that is up: it says nothing of now.
        UpstreamError::Server { replayed, .. } => !replayed,
        UpstreamError::InProgress { .. }
        | UpstreamError::Rejected { .. }
        | UpstreamError::Protocol { .. }
        // An answer came: the upstream is up, only what it sent could not be read.
        | UpstreamError::Unreadable { .. }
        | UpstreamError::Setup(_)
        // Not sent: nothing of the upstream's health is known from it.
        | UpstreamError::CircuitOpen { .. }
        | UpstreamError::Saturated { .. } => false,
    }
}

/// Classifies attempts for the breaker through [`counts_against`].
#[derive(Clone, Copy, Debug)]
pub struct Classifier;

impl FailureClassifier<Vec<u8>, Failed> for Classifier {
    fn classify(&self, result: &Result<Vec<u8>, Failed>) -> bool {
        match result {
            Ok(_) => false,
            Err((error, _)) => counts_against(error),
        }
    }
}

/// A breaker's state, as `/readyz` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused without being sent until the cool-down ends.
    Open,
    /// The cool-down ended: one probe goes through, the rest are refused until it answers.
    HalfOpen,
}

impl From<CircuitState> for BreakerState {
    fn from(state: CircuitState) -> Self {
        match state {
            CircuitState::Closed => BreakerState::Closed,
            CircuitState::Open => BreakerState::Open,
            CircuitState::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// One breaker's state and window, for `/readyz`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// Seconds until an open breaker lets a probe through (0 once it may).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Attempts in the current window, and how many of them failed.
    pub calls: usize,
    pub failures: usize,
}

/// What the guard did with one attempt.
pub(crate) enum Passage {
    /// It was sent; this is what came back.
    Sent(Result<Vec<u8>, Failed>),
    /// It was not sent: the breaker is open (or half-open with its probe in flight).
    Refused { retry_after: Duration },
    /// It was not sent: every slot stayed taken for as long as it could wait.
    Saturated { limit: usize },
}

/// How many attempts may be in flight to one system, and how long one waits for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    /// At least 1.
    pub max: usize,
    pub wait: Duration,
}

impl Slots {
    /// Generous bounds, for clients built in unit tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            max: 64,
            wait: Duration::from_secs(5),
        }
    }
}

/// The breaker and the retry budget of one upstream system; cheap to clone (shared state).
#[derive(Clone)]
pub struct Guard {
    system: System,
    breaker: CircuitBreaker<Runner, Classifier>,
    budget: Arc<TpsBudget>,
    open_for: Duration,
    slots: Arc<tokio::sync::Semaphore>,
    limits: Slots,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("system", &self.system)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Logs a transition: WARN when a breaker opens, INFO when it closes or probes.
fn log_transition(
    system: System,
    from: CircuitState,
    to: CircuitState,
    settings: &BreakerSettings,
) {
    let (from, to) = (BreakerState::from(from), BreakerState::from(to));
    match to {
        BreakerState::Open => tracing::warn!(
            upstream = system.as_str(),
            ?from,
            open_secs = settings.open_secs,
            "circuit breaker opened: calls fail fast until a probe succeeds"
        ),
        BreakerState::HalfOpen => tracing::info!(
            upstream = system.as_str(),
            "circuit breaker half-open: one probe call goes through"
        ),
        BreakerState::Closed => tracing::info!(
            upstream = system.as_str(),
            ?from,
            "circuit breaker closed: calls go through again"
        ),
    }
}

impl Guard {
    /// The guard of `system`.
    ///
    /// # Errors
    /// `Setup` when the breaker's settings do not make a breaker (see
    /// `Settings::validate`, which checks them first).
    pub fn new(
        system: System,
        breaker: &BreakerSettings,
        budget: &RetryBudgetSettings,
        slots: Slots,
    ) -> Result<Self, UpstreamError> {
        if slots.max == 0 {
            return Err(UpstreamError::Setup(format!(
                "{system}: max_concurrent_calls must be at least 1"
            )));
        }
        let logged = breaker.clone();
        let layer = CircuitBreakerLayer::builder()
            .name(system.as_str())
            .failure_classifier_type(Classifier)
            .sliding_window_type(SlidingWindowType::TimeBased)
            .sliding_window_duration(breaker.window())
            .minimum_number_of_calls(breaker.min_calls)
            .failure_rate_threshold(breaker.failure_ratio)
            .wait_duration_in_open(breaker.open())
            // One probe at a time: a struggling upstream gets one call, not a burst.
            .permitted_calls_in_half_open(1)
            .on_state_transition(move |from, to| log_transition(system, from, to, &logged))
            .build()
            .map_err(|e| UpstreamError::Setup(format!("{system} circuit breaker: {e}")))?;
        Ok(Self {
            system,
            breaker: layer.layer_fn(Runner),
            budget: Arc::new(TpsBudget::new(
                budget.window(),
                budget.min_per_sec,
                budget.ratio,
            )),
            open_for: breaker.open(),
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max)),
            limits: slots,
        })
    }

    /// Sends `attempt` once a slot is free, unless the breaker is open, recording its
    /// outcome. Boxed here, where its types are concrete, so the resolvers' futures need
    /// not prove it `Send` again.
    pub(crate) fn pass(&self, attempt: Attempt) -> BoxFuture<'static, Passage> {
        let guard = self.clone();
        Box::pin(async move {
            // The slot is held until the attempt ends, answer or not; the semaphore is
            // never closed, so the only failure is the wait running out.
            let Ok(Ok(_slot)) =
                tokio::time::timeout(guard.limits.wait, guard.slots.clone().acquire_owned()).await
            else {
                return Passage::Saturated {
                    limit: guard.limits.max,
                };
            };
            match guard.breaker.clone().oneshot(Job(attempt)).await {
                Ok(body) => Passage::Sent(Ok(body)),
                Err(CircuitBreakerError::Inner(failed)) => Passage::Sent(Err(failed)),
                Err(CircuitBreakerError::OpenCircuit) => Passage::Refused {
                    retry_after: guard.retry_after().await,
                },
            }
        })
    }

    /// How long until the breaker lets a call through: the rest of the cool-down while
    /// open; a second while half-open (its probe is in flight).
    async fn retry_after(&self) -> Duration {
        let metrics = self.breaker.metrics().await;
        match BreakerState::from(metrics.state) {
            BreakerState::Open => self
                .open_for
                .saturating_sub(metrics.time_since_state_change),
            BreakerState::HalfOpen | BreakerState::Closed => Duration::from_secs(1),
        }
    }

    /// A call is starting: it earns its share of retries.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes one retry from the budget; false when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }

    /// Attempts in flight to this system now (slots taken).
    pub fn in_flight(&self) -> usize {
        self.limits.max - self.slots.available_permits()
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.breaker.state_sync().into()
    }

    /// The breaker's state and window now.
    pub async fn status(&self) -> BreakerStatus {
        let metrics = self.breaker.metrics().await;
        let state = BreakerState::from(metrics.state);
        BreakerStatus {
            state,
            retry_after_secs: (state == BreakerState::Open).then(|| {
                seconds_up(
                    self.open_for
                        .saturating_sub(metrics.time_since_state_change),
                )
            }),
            calls: metrics.total_calls,
            failures: metrics.failure_count,
        }
    }
}

/// Whole seconds, rounded up: a client told 0 would come back at once.
pub fn seconds_up(wait: Duration) -> u64 {
    let secs = wait.as_secs();
    if wait.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// The guards of every system, built once per instance from the settings.
#[derive(Clone, Debug)]
pub struct Guards {
    okya: Guard,
    okya_auth: Guard,
    stripe: Guard,
    epoint: Guard,
    sessionm: Guard,
}

impl Guards {
    /// # Errors
    /// `Setup` when the breaker settings do not make a breaker.
    pub fn new(
        breaker: &BreakerSettings,
        budget: &RetryBudgetSettings,
        slots: impl Fn(System) -> Slots,
    ) -> Result<Self, UpstreamError> {
        let guard = |system| Guard::new(system, breaker, budget, slots(system));
        Ok(Self {
            okya: guard(System::Okya)?,
            okya_auth: guard(System::OkyaAuth)?,
            stripe: guard(System::Stripe)?,
            epoint: guard(System::Epoint)?,
            sessionm: guard(System::Sessionm)?,
        })
    }

    /// Guards with the default settings, for clients built in unit tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self::new(
            &BreakerSettings::default(),
            &RetryBudgetSettings::default(),
            |_| Slots::for_tests(),
        )
        .expect("the default breaker settings make breakers")
    }

    /// The guard of `system`.
    pub fn get(&self, system: System) -> &Guard {
        match system {
            System::Okya => &self.okya,
            System::OkyaAuth => &self.okya_auth,
            System::Stripe => &self.stripe,
            System::Epoint => &self.epoint,
            System::Sessionm => &self.sessionm,
        }
    }

    /// An open breaker, if any: its system and how long until it lets a probe through (the
    /// longest wait when several are open).
    pub async fn open_one(&self) -> Option<(System, Duration)> {
        use strum::IntoEnumIterator;
        let mut open = None;
        for system in System::iter() {
            let guard = self.get(system);
            if guard.state() == BreakerState::Open {
                let wait = guard.retry_after().await;
                if open.is_none_or(|(_, longest)| wait > longest) {
                    open = Some((system, wait));
                }
            }
        }
        open
    }

    /// Every system's breaker state and window, keyed by the system's name, for `/readyz`.
    pub async fn statuses(&self) -> std::collections::BTreeMap<&'static str, BreakerStatus> {
        use strum::IntoEnumIterator;
        let mut statuses = std::collections::BTreeMap::new();
        for system in System::iter() {
            statuses.insert(system.as_str(), self.get(system).status().await);
        }
        statuses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Call, Rejection, parse_plain_error};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn breaker(min_calls: usize) -> BreakerSettings {
        BreakerSettings {
            failure_ratio: 0.5,
            min_calls,
            window_secs: 30,
            open_secs: 1,
        }
    }

    fn unlimited() -> RetryBudgetSettings {
        RetryBudgetSettings {
            ratio: 0.2,
            min_per_sec: 1_000,
            window_secs: 10,
        }
    }

    const S: System = System::Stripe;
    const OP: &str = "test";

    fn server() -> UpstreamError {
        UpstreamError::Server {
            system: S,
            operation: OP,
            status: 503,
            replayed: false,
        }
    }

    fn refusal(status: u16, code: &str) -> UpstreamError {
        UpstreamError::Rejected {
            system: S,
            operation: OP,
            status,
            rejection: Box::new(Rejection {
                code: code.into(),
                ..Rejection::default()
            }),
        }
    }

    /// An attempt that counts its runs and ends with `outcome`.
    fn attempt(runs: &Arc<AtomicUsize>, outcome: Result<(), UpstreamError>) -> Attempt {
        let runs = Arc::clone(runs);
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            outcome.map(|()| b"{}".to_vec()).map_err(|e| (e, None))
        })
    }

    #[test]
    fn only_what_shows_an_upstream_struggling_counts_against_it() {
        let timeout = UpstreamError::Timeout {
            system: S,
            operation: OP,
        };
        let unreachable = UpstreamError::Unavailable {
            system: S,
            operation: OP,
            reason: "connection refused".into(),
        };
        let limited = UpstreamError::RateLimited {
            system: S,
            operation: OP,
        };
        for error in [&timeout, &unreachable, &limited, &server()] {
            assert!(counts_against(error), "{error}");
        }
        let replayed = UpstreamError::Server {
            system: S,
            operation: OP,
            status: 500,
            replayed: true,
        };
        let in_progress = UpstreamError::InProgress {
            system: S,
            operation: OP,
        };
        let unreadable = UpstreamError::Protocol {
            system: S,
            operation: OP,
            reason: "not JSON".into(),
        };
        let refused = UpstreamError::CircuitOpen {
            system: S,
            operation: OP,
            retry_after: Duration::from_secs(3),
        };
        for error in [
            &refusal(402, "card_declined"),
            &refusal(409, "invalid_state"),
            &refusal(404, "not_found"),
            &refusal(400, "parameter_invalid"),
            &replayed,
            &in_progress,
            &unreadable,
            &UpstreamError::Setup("x".into()),
            &refused,
        ] {
            assert!(!counts_against(error), "{error}");
        }
        // Refused by the breaker: transient (a step retries), and known not sent.
        assert!(refused.is_transient() && refused.was_not_sent());
        assert!(!server().was_not_sent() && !timeout.was_not_sent());
    }

    #[tokio::test]
    async fn failures_open_the_breaker_which_refuses_without_sending_then_a_probe_closes_it() {
        let guard = Guard::new(S, &breaker(4), &unlimited(), Slots::for_tests()).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        // Two successes and two failures: half of the minimum four calls fail.
        for outcome in [Ok(()), Ok(()), Err(server())] {
            assert!(matches!(
                guard.pass(attempt(&runs, outcome)).await,
                Passage::Sent(_)
            ));
            assert_eq!(guard.state(), BreakerState::Closed);
        }
        assert!(matches!(
            guard.pass(attempt(&runs, Err(server()))).await,
            Passage::Sent(Err(_))
        ));
        assert_eq!(guard.state(), BreakerState::Open);
        assert_eq!(runs.load(Ordering::SeqCst), 4);

        let Passage::Refused { retry_after } = guard.pass(attempt(&runs, Ok(()))).await else {
            panic!("an open breaker sends nothing");
        };
        assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "the refused attempt never ran"
        );
        let status = guard.status().await;
        assert_eq!(status.state, BreakerState::Open);
        assert_eq!(status.retry_after_secs, Some(1));

        // After the cool-down one probe goes through; its success closes the breaker.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(matches!(
            guard.pass(attempt(&runs, Ok(()))).await,
            Passage::Sent(Ok(_))
        ));
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        assert_eq!(guard.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_failed_probe_opens_the_breaker_again() {
        let guard = Guard::new(S, &breaker(1), &unlimited(), Slots::for_tests()).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let _ = guard.pass(attempt(&runs, Err(server()))).await;
        assert_eq!(guard.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let _ = guard.pass(attempt(&runs, Err(server()))).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the probe was sent");
        assert_eq!(guard.state(), BreakerState::Open);
        assert!(matches!(
            guard.pass(attempt(&runs, Ok(()))).await,
            Passage::Refused { .. }
        ));
    }

    #[tokio::test]
    async fn refusals_prove_the_upstream_is_up_and_never_open_the_breaker() {
        let guard = Guard::new(S, &breaker(2), &unlimited(), Slots::for_tests()).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let _ = guard
                .pass(attempt(&runs, Err(refusal(402, "card_declined"))))
                .await;
        }
        assert_eq!(guard.state(), BreakerState::Closed);
        assert_eq!(runs.load(Ordering::SeqCst), 20);
    }

    #[test]
    fn the_budget_lets_retries_add_only_their_share_of_the_calls() {
        let budget = RetryBudgetSettings {
            ratio: 0.5,
            min_per_sec: 0,
            window_secs: 10,
        };
        let guard = Guard::new(S, &breaker(20), &budget, Slots::for_tests()).unwrap();
        assert!(!guard.withdraw(), "no calls yet, no reserve: no retry");
        for _ in 0..4 {
            guard.deposit();
        }
        assert!(guard.withdraw() && guard.withdraw(), "half of four calls");
        assert!(!guard.withdraw());
    }

    /// A request to a port nothing listens on: refused at connect.
    fn nowhere() -> reqwest::RequestBuilder {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        reqwest::Client::new().post(format!("http://127.0.0.1:{port}/v1/refunds"))
    }

    #[tokio::test]
    async fn a_call_refused_before_any_try_is_circuit_open_but_one_tried_first_keeps_its_unknown_outcome()
     {
        // The first attempt's failure opens the breaker; its retry is refused. The answer
        // must stay the attempt's own error: that request may have acted.
        let guard = Guard::new(S, &breaker(1), &unlimited(), Slots::for_tests()).unwrap();
        let call = Call {
            system: S,
            operation: OP,
            parse_error: parse_plain_error,
            guard: &guard,
        };
        let tried = call.send(nowhere()).await.unwrap_err();
        assert!(
            matches!(tried, UpstreamError::Unavailable { .. }),
            "{tried}"
        );
        assert_eq!(guard.state(), BreakerState::Open);
        // A new call while it is open is never sent, and says so.
        let refused = call.send(nowhere()).await.unwrap_err();
        assert!(
            matches!(refused, UpstreamError::CircuitOpen { system: S, .. }),
            "{refused}"
        );
        assert!(refused.was_not_sent() && refused.is_transient());
    }

    #[tokio::test]
    async fn a_spent_budget_leaves_one_try_per_call() {
        let budget = RetryBudgetSettings {
            ratio: 0.0,
            min_per_sec: 0,
            window_secs: 10,
        };
        let guard = Guard::new(S, &breaker(1_000), &budget, Slots::for_tests()).unwrap();
        let call = Call {
            system: S,
            operation: OP,
            parse_error: parse_plain_error,
            guard: &guard,
        };
        let _ = call.send(nowhere()).await.unwrap_err();
        let metrics = guard.status().await;
        assert_eq!(metrics.calls, 1, "no retry without budget");
        let generous = Guard::new(S, &breaker(1_000), &unlimited(), Slots::for_tests()).unwrap();
        let call = Call {
            guard: &generous,
            ..call
        };
        let _ = call.send(nowhere()).await.unwrap_err();
        assert_eq!(generous.status().await.calls, 3, "three tries with budget");
    }

    #[tokio::test]
    async fn no_more_than_the_bound_is_in_flight_and_a_call_without_a_slot_is_not_sent() {
        let slots = Slots {
            max: 2,
            wait: Duration::from_millis(200),
        };
        let guard = Guard::new(S, &breaker(1_000), &unlimited(), slots).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let held = |guard: &Guard| {
            let (runs, release) = (Arc::clone(&runs), Arc::clone(&release));
            let guard = guard.clone();
            tokio::spawn(async move {
                guard
                    .pass(Box::pin(async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Ok(b"{}".to_vec())
                    }))
                    .await
            })
        };
        let first = held(&guard);
        let second = held(&guard);
        while runs.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(guard.in_flight(), 2);

        // A third waits, and when no slot frees within the wait it is not sent.
        let started = std::time::Instant::now();
        let third = guard.pass(attempt(&runs, Ok(()))).await;
        assert!(matches!(third, Passage::Saturated { limit: 2 }));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the third never ran");
        let not_sent = UpstreamError::Saturated {
            system: S,
            operation: OP,
            limit: 2,
        };
        assert!(not_sent.was_not_sent() && not_sent.is_transient());
        assert!(
            !counts_against(&not_sent),
            "waiting is not the upstream's failure"
        );

        // A fourth waits for a slot that frees: it is sent.
        let fourth = {
            let guard = guard.clone();
            let runs = Arc::clone(&runs);
            tokio::spawn(async move { guard.pass(attempt(&runs, Ok(()))).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the fourth waits");
        release.notify_one();
        assert!(matches!(fourth.await.unwrap(), Passage::Sent(Ok(_))));
        release.notify_waiters();
        release.notify_one();
        for held in [first, second] {
            assert!(matches!(held.await.unwrap(), Passage::Sent(Ok(_))));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(guard.in_flight(), 0, "every slot is given back");
    }
}
