//! Builds the shared state and the router in one place, binds the listener and reports
//! the bound address, so tests can ask for port 0 and learn the real one.

pub use crate::context::{AppInner, AppState};
pub use crate::http::Gateway;
use crate::{
    auth::tokens::TokenKeys,
    config::Settings,
    events::OrderEvents,
    graphql, http,
    jobs::JobSignal,
    lifecycle::Held,
    quota::Quotas,
    rate_limit::RateLimiter,
    store::{self, StoreError},
    telemetry,
    upstream::{Endpoints, UpstreamError, Upstreams, sessionm},
    worker,
};
use axum::{Json, Router, http::StatusCode, routing::get, serve::ListenerExt};
use cbtl_sandbox::{Sandbox, SandboxConfig};
use secrecy::ExposeSecret;
use std::{net::SocketAddr, time::Duration};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_http::{catch_panic::CatchPanicLayer, limit::RequestBodyLimitLayer, trace::TraceLayer};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the sandbox simulators: {0}")]
    Sandbox(std::io::Error),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A setting that only the upstreams could show wrong (e.g. a store SessionM does not
    /// know): the service refuses to start, as for any bad setting.
    #[error("{0}")]
    Configuration(String),
}

/// A running service.
pub struct Application {
    addr: SocketAddr,
    state: AppState,
    sandbox: Sandbox,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    sockets: http::ws::Sockets,
    /// The job workers and the sweeper: a shutdown waits for them to finish what they hold.
    runners: Vec<JoinHandle<()>>,
    /// Background tasks holding nothing (the event listener, housekeeping): stopped at once.
    workers: Vec<JoinHandle<()>>,
}

impl Application {
    /// Where the service listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The simulators standing in for unset upstreams.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Serves until `signal` resolves, then shuts down gracefully within
    /// `shutdown_grace_secs`: stops accepting connections, lets in-flight requests finish,
    /// closes every websocket with 1001 (Going Away) so its client reconnects at once (to
    /// another instance if there is one), stops the sweeper and the job workers from
    /// starting anything new and waits for the flow steps and jobs in flight, then
    /// releases the leases this instance still holds (except those of work still running
    /// when the grace ran out), so another instance resumes those orders and jobs at once.
    ///
    /// # Errors
    /// The HTTP server's own failure; running out of grace is logged, not an error.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        signal.await;
        let grace = self.state.settings.shutdown_grace();
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections, steps or jobs"
        );
        let lifecycle = &self.state.lifecycle;
        lifecycle.stop();
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        let runners = std::mem::take(&mut self.runners);
        let background = async {
            for runner in runners {
                let _ = runner.await;
            }
            lifecycle.work().close();
            lifecycle.work().wait().await;
        };
        // Upgraded connections are no longer the server's: they are closed here, at the
        // same time as the server drains its requests and the runners finish their work.
        let (served, (), finished) = tokio::join!(
            tokio::time::timeout_at(deadline, &mut self.server),
            self.sockets.close_all(grace),
            tokio::time::timeout_at(deadline, background),
        );
        if finished.is_err() {
            tracing::warn!(
                orders = ?lifecycle.running_ids(Held::Order),
                jobs = ?lifecycle.running_ids(Held::Job),
                "shutdown grace over with work still running; its leases run out instead"
            );
        }
        release_leases(&self.state).await;
        match served {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!("shutdown grace over with requests still in flight");
                Ok(())
            }
        }
    }
}

/// Releases every lease this instance holds on orders and jobs but those of work still
/// running, so other instances take them over now rather than when they expire.
async fn release_leases(state: &AppState) {
    let lifecycle = &state.lifecycle;
    let me = lifecycle.instance();
    let orders =
        store::orders::release_all_held_by(&state.db, me, &lifecycle.running_ids(Held::Order))
            .await;
    let jobs =
        store::jobs::release_all_held_by(&state.db, me, &lifecycle.running_ids(Held::Job)).await;
    match (orders, jobs) {
        (Ok(orders), Ok(jobs)) => {
            tracing::info!(orders, jobs, "leases released; other instances take over");
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "releasing this instance's leases failed; they run out instead");
        }
    }
}

/// Dropping the application stops it at once, like a crash: nothing is finished politely.
/// Tests rely on this to show that durable work survives an abrupt stop.
impl Drop for Application {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        self.server.abort();
        for worker in self.runners.iter().chain(&self.workers) {
            worker.abort();
        }
    }
}

/// Connects the database (applying migrations), starts the simulators for unset upstreams,
/// builds the clients and serves HTTP on `settings.listen_addr`.
pub async fn build(settings: Settings) -> Result<Application, StartError> {
    let listener = TcpListener::bind(settings.listen_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.listen_addr,
            source,
        })?;
    start(settings, listener).await
}

/// Like [`build`], but serves on a socket the caller has already bound (and is listening
/// on); `settings.listen_addr` is not used. A supervisor that hands sockets over, or a
/// test that keeps one port for several incarnations of the service (so upstream
/// webhooks configured with that port keep arriving), binds once and passes a handle
/// (`std::net::TcpListener::try_clone`) to each.
///
/// # Errors
/// [`StartError::Bind`] when the socket cannot be made non-blocking or registered with
/// the runtime; otherwise as [`build`].
pub async fn build_on(
    settings: Settings,
    listener: std::net::TcpListener,
) -> Result<Application, StartError> {
    let addr = listener.local_addr().unwrap_or(settings.listen_addr);
    let bind_error = move |source| StartError::Bind { addr, source };
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = TcpListener::from_std(listener).map_err(bind_error)?;
    start(settings, listener).await
}

/// The simulators to start: one for each upstream whose URL is unset, accepting the
/// credentials the settings hold (by default the sandbox's own) and delivering webhooks to
/// this service at `app_url`, signed with the first secret it accepts.
fn sandbox_config(settings: &Settings, app_url: &str) -> SandboxConfig {
    let first = |secrets: &[secrecy::SecretString]| {
        secrets
            .first()
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_default()
    };
    let SandboxConfig {
        okya,
        stripe,
        epoint,
        sessionm,
        listen,
        ..
    } = SandboxConfig::for_app(app_url);
    SandboxConfig {
        okya: okya
            .filter(|_| settings.okya.base_url.is_none())
            .map(|okya| cbtl_sandbox::okya::OkyaSimConfig {
                api_key: settings.okya.api_key.expose_secret().to_owned(),
                otp_code: settings.sandbox.otp_code.clone(),
                auto_accept_delay_ms: settings.sandbox.auto_accept_delay_ms,
                webhook_secret: first(&settings.webhooks.okya_secrets),
                ..okya
            }),
        stripe: stripe
            .filter(|_| settings.stripe.base_url.is_none())
            .map(|stripe| cbtl_sandbox::stripe::StripeSimConfig {
                webhook_secret: first(&settings.webhooks.stripe_secrets),
                ..stripe
            }),
        epoint: epoint
            .filter(|_| settings.epoint.base_url.is_none())
            .map(|epoint| cbtl_sandbox::epoint::EpointSimConfig {
                api_key: settings.epoint.api_key.expose_secret().to_owned(),
                ..epoint
            }),
        sessionm: sessionm
            .filter(|_| !settings.sessionm.is_real())
            .map(|sessionm| cbtl_sandbox::sessionm::SessionmSimConfig {
                api_key: settings.sessionm.api_key.clone(),
                api_secret: settings.sessionm.api_secret.expose_secret().to_owned(),
                pos_api_key: settings.sessionm.pos_api_key.clone(),
                pos_api_secret: settings.sessionm.pos_api_secret.expose_secret().to_owned(),
                client_id: settings.sessionm.client_id.clone(),
                ..sessionm
            }),
        latency_ms: settings.sandbox.latency_ms,
        error_rate: settings.sandbox.error_rate,
        listen,
    }
}

/// Each upstream's URL: the configured one, or else its simulator's.
fn endpoints(settings: &Settings, sandbox: &Sandbox) -> Result<Endpoints, UpstreamError> {
    let url = |configured: &Option<String>, simulated: &Option<cbtl_sandbox::Simulator>| {
        configured
            .clone()
            .or_else(|| simulated.as_ref().map(|s| s.base_url.clone()))
            .ok_or_else(|| UpstreamError::Setup("no URL and no simulator".into()))
    };
    let okya = url(&settings.okya.base_url, &sandbox.okya)?;
    Ok(Endpoints {
        okya_auth: settings
            .okya
            .auth_base_url
            .clone()
            .unwrap_or_else(|| okya.clone()),
        okya,
        stripe: url(&settings.stripe.base_url, &sandbox.stripe)?,
        epoint: url(&settings.epoint.base_url, &sandbox.epoint)?,
        sessionm: sessionm_endpoints(&settings.sessionm, sandbox.sessionm.as_ref())?,
    })
}

/// SessionM's two hosts and store mapping: the configured ones, or else the simulator's.
fn sessionm_endpoints(
    settings: &crate::config::SessionmSettings,
    simulated: Option<&cbtl_sandbox::sessionm::SessionmSandbox>,
) -> Result<sessionm::SessionmEndpoints, UpstreamError> {
    match (&settings.core_url, &settings.pos_url, simulated) {
        (Some(core_url), Some(pos_url), _) => Ok(sessionm::SessionmEndpoints {
            core_url: core_url.clone(),
            pos_url: pos_url.clone(),
            store_ids: settings.store_ids.clone(),
            ecommerce_store_id: settings.ecommerce_store_id.clone().ok_or_else(|| {
                UpstreamError::Setup("sessionm.ecommerce_store_id is not set".into())
            })?,
        }),
        (None, None, Some(sim)) => {
            // The simulator's own stores, unless the settings map some themselves.
            let mut store_ids = sim.store_ids.clone();
            store_ids.extend(settings.store_ids.clone());
            Ok(sessionm::SessionmEndpoints {
                core_url: sim.core.base_url.clone(),
                pos_url: sim.pos.base_url.clone(),
                store_ids,
                ecommerce_store_id: settings
                    .ecommerce_store_id
                    .clone()
                    .unwrap_or_else(|| sim.ecommerce_store_id.clone()),
            })
        }
        _ => Err(UpstreamError::Setup(
            "sessionm.core_url and sessionm.pos_url must be set together".into(),
        )),
    }
}

/// With a real SessionM, every store Okya lists needs a SessionM store
/// (`sessionm.store_ids`): a missing one would fail every reward and sale there. When Okya
/// cannot be asked now, the start goes on and each call checks its own store.
/// 200 ms, 400 ms, 600 ms between the start's three tries to list Okya's stores.
const STORE_CHECK_RETRIES: crate::retry::RetryPolicy = crate::retry::RetryPolicy::new(
    Duration::from_millis(200),
    Duration::from_millis(600),
    crate::retry::Jitter::None,
);

async fn check_sessionm_stores(upstreams: &Upstreams) -> Result<(), StartError> {
    let mut last_error = None;
    for attempt in 0..3_u32 {
        match upstreams.okya.stores(None).await {
            Ok(stores) => {
                let missing = upstreams
                    .sessionm
                    .stores_without_mapping(stores.iter().map(|s| s.id.as_str()));
                if missing.is_empty() {
                    return Ok(());
                }
                return Err(StartError::Configuration(format!(
                    "invalid setting `sessionm.store_ids` (CBTL_SESSIONM__STORE_IDS__<okya store id>): \
                     no SessionM store for Okya store(s) {}",
                    missing.join(", ")
                )));
            }
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(STORE_CHECK_RETRIES.delay(attempt + 1)).await;
    }
    if let Some(e) = last_error {
        tracing::warn!(error = %e, "cannot list Okya's stores to check sessionm.store_ids; each SessionM call checks its store");
    }
    Ok(())
}

async fn start(settings: Settings, listener: TcpListener) -> Result<Application, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.listen_addr,
        source,
    })?;
    let mut db = store::connect(&settings.database_url, &settings.database).await?;
    let db_statements = telemetry::metrics::count_queries(&mut db);
    store::migrate(&db).await?;
    let sandbox = cbtl_sandbox::start(sandbox_config(&settings, &format!("http://{addr}")))
        .await
        .map_err(StartError::Sandbox)?;
    let upstreams = Upstreams::new(endpoints(&settings, &sandbox)?, &settings)?;
    if settings.sessionm.is_real() {
        check_sessionm_stores(&upstreams).await?;
    }
    let token_keys = TokenKeys::new(&settings.auth);
    let (order_events, event_tasks) =
        OrderEvents::start(db.clone(), settings.graphql.subscription_recheck());
    let quotas = Quotas::new(&settings);
    let rate_limits = RateLimiter::new(db.clone(), &settings.rate_limits);
    let state = AppState::new(AppInner {
        db,
        db_statements,
        upstreams,
        settings,
        token_keys,
        job_signal: JobSignal::default(),
        order_events,
        quotas,
        lifecycle: crate::lifecycle::Lifecycle::default(),
        rate_limits,
        reconciliation: crate::domain::reconciliation::Counts::default(),
        #[cfg(feature = "crash-points")]
        crash_points: crate::crash::CrashPoints::default(),
    });
    let mut runners = worker::spawn_workers(state.clone());
    runners.push(crate::flows::place_order::spawn_sweeper(state.clone()));
    let mut workers: Vec<JoinHandle<()>> = event_tasks;
    workers.push(store::housekeeping::spawn(state.db.clone()));
    let schema = graphql::build(
        &state.settings.graphql,
        state.settings.introspection(),
        Some(state.clone()),
    );
    let sockets = http::ws::Sockets::default();
    let router = router(Gateway {
        app: state.clone(),
        schema,
        sockets: sockets.clone(),
        shared: Default::default(),
    });
    // Without TCP_NODELAY, Nagle's algorithm holds back a small write until the previous
    // one is acknowledged: with delayed ACKs, ~40 ms between two websocket messages.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // The peer address is what rate limits key a client by (see `rate_limit`).
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    tracing::info!(%addr, "cbtl-bff listening; GraphiQL at http://{addr}/graphql");
    Ok(Application {
        addr,
        state,
        sandbox,
        shutdown: Some(shutdown),
        server,
        sockets,
        runners,
        workers,
    })
}

fn router(gateway: Gateway) -> Router {
    let body_limit = gateway.app.settings.graphql.max_body_bytes;
    Router::new()
        .route(
            "/graphql",
            get(http::graphql::get)
                .post(http::graphql::post)
                .fallback(http::graphql::other_method),
        )
        .route("/graphiql/{hash}/{name}", get(http::graphiql::asset))
        // `/graphql` reads its body under the same limit itself, so an over-long body gets
        // a GraphQL-shaped 413 however it is framed; the webhooks get the layer.
        .merge(
            Router::new()
                .route("/webhooks/okya", axum::routing::post(http::webhooks::okya))
                .route(
                    "/webhooks/stripe",
                    axum::routing::post(http::webhooks::stripe),
                )
                .layer(RequestBodyLimitLayer::new(body_limit)),
        )
        .route("/healthz", get(http::health::healthz))
        .route("/readyz", get(http::health::readyz))
        .route("/metrics", get(http::metrics::render))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "not found; GraphQL is at /graphql"})),
            )
        })
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(gateway)
}
