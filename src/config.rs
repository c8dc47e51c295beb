//! Typed settings: defaults, then an optional TOML file, then the environment.
//!
//! Environment variables are `CBTL_` plus the setting's path in upper case, with `__`
//! between levels (`CBTL_OKYA__BASE_URL`); `DATABASE_URL` is also read unprefixed because
//! every platform sets it that way. The README's configuration table mirrors the doc
//! comments below.

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration: setting `{setting}` {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
    /// Every credential that keeps its published sandbox value although the upstream it
    /// is for (or, for `auth.jwt_secret`, any upstream) is real, listed at once so they
    /// can all be fixed in one go.
    #[error("configuration: {}", describe_sandbox_credentials(.0))]
    SandboxCredentials(Vec<SandboxCredential>),
}

/// A setting that still holds a sandbox value while a real upstream is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCredential {
    /// The setting's path, e.g. `okya.api_key`.
    pub setting: &'static str,
    /// Its environment variable, e.g. `CBTL_OKYA__API_KEY`.
    pub env: &'static str,
    /// The URL setting that makes the upstream real, e.g. `okya.base_url`.
    pub real_because: &'static str,
}

fn describe_sandbox_credentials(found: &[SandboxCredential]) -> String {
    let each: Vec<String> = found
        .iter()
        .map(|c| {
            format!(
                "setting `{}` ({}) has its public sandbox value although `{}` is set",
                c.setting, c.env, c.real_because
            )
        })
        .collect();
    format!(
        "{}; set each to the upstream's real credential (see the README, \"Against real upstreams\")",
        each.join("; ")
    )
}

/// The credentials the simulators accept, which are the defaults of these settings. The
/// sandbox crate owns them (`cbtl_sandbox::credentials`). They are published (in that code
/// and the README), so a real upstream configured with one of them would be open to
/// anyone: [`Settings::validate`] refuses them whenever their upstream's URL is set.
pub mod sandbox_credentials {
    pub use cbtl_sandbox::credentials::{
        EPOINT_API_KEY, OKYA_API_KEY, OKYA_WEBHOOK_SECRET, OTP_CODE, SESSIONM_API_KEY,
        SESSIONM_API_SECRET, SESSIONM_CLIENT_ID, SESSIONM_POS_API_KEY, SESSIONM_POS_API_SECRET,
        STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET,
    };
    /// The development-only key that signs access tokens.
    pub const JWT_SECRET: &str = super::DEV_JWT_SECRET;
}

impl From<figment::Error> for ConfigError {
    fn from(value: figment::Error) -> Self {
        Self::Load(Box::new(value))
    }
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds (`CBTL_LISTEN_ADDR`). Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// Database (`DATABASE_URL`): `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    pub database_url: String,
    /// The database connection pool.
    pub database: DatabaseSettings,
    /// Log output (`CBTL_LOG_FORMAT`): `pretty` for people, `json` for log shippers.
    pub log_format: LogFormat,
    /// Limits on GraphQL requests.
    pub graphql: GraphqlSettings,
    /// Okya commerce and Okya Auth.
    pub okya: OkyaSettings,
    /// Stripe payments.
    pub stripe: StripeSettings,
    /// Epoint in-store POS.
    pub epoint: EpointSettings,
    /// SessionM loyalty.
    pub sessionm: SessionmSettings,
    /// Secrets that sign the webhooks we receive.
    pub webhooks: WebhookSettings,
    /// Sign-in: tokens and one-time codes.
    pub auth: AuthSettings,
    /// The durable background job runner.
    pub jobs: JobsSettings,
    /// Payments and the Place Order flow.
    pub orders: OrderSettings,
    /// The in-process copy of Okya's catalogue (stores and their menus).
    pub catalog: CatalogSettings,
    /// Behaviour of the in-process simulators that stand in for unset upstreams.
    pub sandbox: SandboxSettings,
    /// The circuit breaker each upstream's calls pass through.
    pub breaker: BreakerSettings,
    /// How many inline retries each upstream's calls may add to the load.
    pub retry_budget: RetryBudgetSettings,
    /// Rate limits per phone, customer and client address on codes, sign-in and checkout.
    pub rate_limits: RateLimitSettings,
    /// On SIGTERM or Ctrl-C, the longest the service waits for requests, websocket
    /// closings, flow steps and jobs in flight before it exits anyway, in seconds
    /// (`CBTL_SHUTDOWN_GRACE_SECS`). Below the 30 s orchestrators commonly allow between
    /// SIGTERM and SIGKILL.
    pub shutdown_grace_secs: u64,
}

impl Settings {
    /// `shutdown_grace_secs` as a `Duration`.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://data/cbtl.db?mode=rwc".to_owned(),
            database: DatabaseSettings::default(),
            log_format: LogFormat::Pretty,
            graphql: GraphqlSettings::default(),
            okya: OkyaSettings::default(),
            stripe: StripeSettings::default(),
            epoint: EpointSettings::default(),
            sessionm: SessionmSettings::default(),
            webhooks: WebhookSettings::default(),
            auth: AuthSettings::default(),
            jobs: JobsSettings::default(),
            orders: OrderSettings::default(),
            catalog: CatalogSettings::default(),
            sandbox: SandboxSettings::default(),
            shutdown_grace_secs: 20,
            rate_limits: RateLimitSettings::default(),
            breaker: BreakerSettings::default(),
            retry_budget: RetryBudgetSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connections in the pool (`CBTL_DATABASE__MAX_CONNECTIONS`); unset: 8 with SQLite,
    /// 20 with PostgreSQL. With PostgreSQL one of them listens for other instances' events.
    pub max_connections: Option<u32>,
    /// How long a query waits for a free connection before failing, in ms
    /// (`CBTL_DATABASE__ACQUIRE_TIMEOUT_MS`).
    pub acquire_timeout_ms: u64,
    /// Connections one customer's live subscriptions may use at once
    /// (`CBTL_DATABASE__MAX_CONNECTIONS_PER_CUSTOMER`); must leave some of the pool to
    /// everyone else.
    pub max_connections_per_customer: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout_ms: 5_000,
            max_connections_per_customer: 2,
        }
    }
}

impl DatabaseSettings {
    /// The pool size for `database_url`.
    pub fn pool_size(&self, database_url: &str) -> u32 {
        self.max_connections
            .unwrap_or(if database_url.starts_with("sqlite:") {
                8
            } else {
                20
            })
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlSettings {
    /// Deepest selection nesting accepted (`CBTL_GRAPHQL__MAX_DEPTH`).
    pub max_depth: usize,
    /// Highest query complexity accepted, one point per field (`CBTL_GRAPHQL__MAX_COMPLEXITY`).
    pub max_complexity: usize,
    /// Largest request body in bytes (`CBTL_GRAPHQL__MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Seconds a websocket may stay open without `connection_init` (`CBTL_GRAPHQL__WS_INIT_TIMEOUT_SECS`).
    pub ws_init_timeout_secs: u64,
    /// How often an open websocket is pinged, in ms (`CBTL_GRAPHQL__WS_KEEPALIVE_MS`); a
    /// peer silent for two of these is dropped. 30 s: under the 60 s idle timeouts of
    /// common proxies and load balancers (nginx's `proxy_read_timeout`, AWS ALB), and each
    /// ping costs the process a wake and two system calls per socket, which at 20,000
    /// sockets is most of an idle instance's CPU. A legacy `graphql-ws` socket gets `ka` at
    /// least every 15 s, since its client gives up after 30 s without one.
    pub ws_keepalive_ms: u64,
    /// How often, in seconds, the orders followed by subscriptions are checked for a
    /// status change whose notification was lost (`CBTL_GRAPHQL__SUBSCRIPTION_RECHECK_SECS`):
    /// one query per 500 followed orders, however many subscribers follow them.
    pub subscription_recheck_secs: u64,
    /// Operations one websocket may run at once (`CBTL_GRAPHQL__WS_MAX_OPERATIONS`); one
    /// more is answered with an `error` message for its id.
    pub ws_max_operations: u32,
    /// Operations one signed-in customer may run at once over all their websockets
    /// (`CBTL_GRAPHQL__WS_MAX_OPERATIONS_PER_CUSTOMER`).
    pub ws_max_operations_per_customer: u32,
    /// Most aliased fields in one request, fragments expanded (`CBTL_GRAPHQL__MAX_ALIASES`):
    /// aliases are how one request asks for the same expensive field many times.
    pub max_aliases: usize,
    /// Most fields at the root of the operation that runs (`CBTL_GRAPHQL__MAX_ROOT_FIELDS`).
    pub max_root_fields: usize,
    /// Most operations one document may define (`CBTL_GRAPHQL__MAX_OPERATIONS`); each is
    /// validated, although only one runs.
    pub max_operations: usize,
    /// Seconds a query or mutation may run before it is answered with `TIMEOUT`
    /// (`CBTL_GRAPHQL__OPERATION_TIMEOUT_SECS`); a checkout's flow goes on in the
    /// background and the same checkout sent again answers with its result.
    pub operation_timeout_secs: u64,
    /// Whether the schema answers introspection (`CBTL_GRAPHQL__INTROSPECTION`): GraphiQL
    /// and codegen need it; production teams usually turn it off and publish the SDL.
    /// Unset, it is on while every upstream is simulated and off once any is real (the
    /// service then serves real customers); see [`Settings::introspection`].
    pub introspection: Option<bool>,
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 1_000,
            max_body_bytes: 64 * 1024,
            ws_init_timeout_secs: 10,
            ws_keepalive_ms: 30_000,
            subscription_recheck_secs: 30,
            ws_max_operations: 20,
            ws_max_operations_per_customer: 40,
            max_aliases: 30,
            max_root_fields: 20,
            max_operations: 20,
            operation_timeout_secs: 30,
            introspection: None,
        }
    }
}

/// Connection behaviour shared by every upstream client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub total: Duration,
}

/// Accessors that give a setting stored in milliseconds or seconds as a `Duration`, so
/// callers convert once, here: `durations!(OrderSettings { lease: lease_ms ms, … })`.
macro_rules! durations {
    ($t:ty { $($name:ident: $field:ident $unit:ident),* $(,)? }) => {
        impl $t {
            $(
                #[doc = concat!("`", stringify!($field), "` as a `Duration`.")]
                pub fn $name(&self) -> Duration {
                    durations!(@unit $unit, self.$field)
                }
            )*
        }
    };
    (@unit ms, $value:expr) => { Duration::from_millis($value) };
    (@unit secs, $value:expr) => { Duration::from_secs($value) };
}

durations!(OrderSettings {
    authentication_timeout: authentication_timeout_secs secs,
    lease: lease_ms ms,
    sweep_interval: sweep_interval_ms ms,
    checkout_wait: checkout_wait_ms ms,
    reconcile_interval: reconcile_interval_secs secs,
});
durations!(JobsSettings {
    poll_interval: poll_interval_ms ms,
    lease: lease_ms ms,
    max_backoff: max_backoff_ms ms,
});
durations!(GraphqlSettings {
    operation_timeout: operation_timeout_secs secs,
    ws_init_timeout: ws_init_timeout_secs secs,
    ws_keepalive: ws_keepalive_ms ms,
    subscription_recheck: subscription_recheck_secs secs,
});
durations!(AuthSettings {
    access_token_ttl: access_token_ttl_secs secs,
    refresh_token_ttl: refresh_token_ttl_secs secs,
    otp_ttl: otp_ttl_secs secs,
    otp_resend_interval: otp_resend_interval_secs secs,
});
durations!(WebhookSettings {
    tolerance: tolerance_secs secs,
});

macro_rules! timeouts_accessor {
    ($t:ty) => {
        impl $t {
            pub fn timeouts(&self) -> Timeouts {
                Timeouts {
                    connect: Duration::from_millis(self.connect_timeout_ms),
                    total: Duration::from_millis(self.timeout_ms),
                }
            }
        }
    };
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OkyaSettings {
    /// Okya commerce API root (`CBTL_OKYA__BASE_URL`); unset runs the Okya simulator.
    pub base_url: Option<String>,
    /// Okya Auth API root (`CBTL_OKYA__AUTH_BASE_URL`); unset uses `base_url`.
    pub auth_base_url: Option<String>,
    /// API key sent as `Authorization: Bearer` (`CBTL_OKYA__API_KEY`).
    pub api_key: SecretString,
    /// TCP connect timeout in ms (`CBTL_OKYA__CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// Whole-request timeout in ms (`CBTL_OKYA__TIMEOUT_MS`).
    pub timeout_ms: u64,
    /// Calls in flight to this system from one instance, at most
    /// (`CBTL_OKYA__MAX_CONCURRENT_CALLS`); a call waits for a free slot up to
    /// `timeout_ms`, then fails without being sent.
    pub max_concurrent_calls: usize,
}

impl Default for OkyaSettings {
    fn default() -> Self {
        Self {
            base_url: None,
            auth_base_url: None,
            api_key: SecretString::from(sandbox_credentials::OKYA_API_KEY),
            connect_timeout_ms: 1_000,
            timeout_ms: 5_000,
            max_concurrent_calls: 64,
        }
    }
}
timeouts_accessor!(OkyaSettings);

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeSettings {
    /// Stripe API root (`CBTL_STRIPE__BASE_URL`), `https://api.stripe.com` for test or live
    /// mode; unset runs the Stripe simulator.
    pub base_url: Option<String>,
    /// Secret key `sk_test_…` or `sk_live_…` (`CBTL_STRIPE__SECRET_KEY`).
    pub secret_key: SecretString,
    /// TCP connect timeout in ms (`CBTL_STRIPE__CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// Whole-request timeout in ms (`CBTL_STRIPE__TIMEOUT_MS`).
    pub timeout_ms: u64,
    /// Calls in flight to this system from one instance, at most
    /// (`CBTL_STRIPE__MAX_CONCURRENT_CALLS`); a call waits for a free slot up to
    /// `timeout_ms`, then fails without being sent.
    pub max_concurrent_calls: usize,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            base_url: None,
            secret_key: SecretString::from(sandbox_credentials::STRIPE_SECRET_KEY),
            connect_timeout_ms: 1_000,
            timeout_ms: 10_000,
            max_concurrent_calls: 64,
        }
    }
}
timeouts_accessor!(StripeSettings);

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EpointSettings {
    /// Epoint POS gateway root (`CBTL_EPOINT__BASE_URL`); unset runs the Epoint simulator.
    pub base_url: Option<String>,
    /// API key sent as `X-Api-Key` (`CBTL_EPOINT__API_KEY`).
    pub api_key: SecretString,
    /// TCP connect timeout in ms (`CBTL_EPOINT__CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// Whole-request timeout in ms (`CBTL_EPOINT__TIMEOUT_MS`).
    pub timeout_ms: u64,
    /// Calls in flight to this system from one instance, at most
    /// (`CBTL_EPOINT__MAX_CONCURRENT_CALLS`); a call waits for a free slot up to
    /// `timeout_ms`, then fails without being sent.
    pub max_concurrent_calls: usize,
}

impl Default for EpointSettings {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: SecretString::from(sandbox_credentials::EPOINT_API_KEY),
            connect_timeout_ms: 1_000,
            timeout_ms: 5_000,
            max_concurrent_calls: 64,
        }
    }
}
timeouts_accessor!(EpointSettings);

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionmSettings {
    /// Core API root, e.g. `https://api-<tenant>.ent-sessionm.com` (`CBTL_SESSIONM__CORE_URL`);
    /// unset runs the SessionM simulator. Set together with `pos_url`.
    pub core_url: Option<String>,
    /// Core API key, also the `{api_key}` path segment (`CBTL_SESSIONM__API_KEY`).
    pub api_key: String,
    /// Core API secret, HTTP Basic password (`CBTL_SESSIONM__API_SECRET`).
    pub api_secret: SecretString,
    /// POS/eCommerce API root (`CBTL_SESSIONM__POS_URL`); unset runs the simulator. Set
    /// together with `core_url`.
    pub pos_url: Option<String>,
    /// POS/eCommerce Basic user, issued per client or location (`CBTL_SESSIONM__POS_API_KEY`).
    pub pos_api_key: String,
    /// POS/eCommerce Basic password (`CBTL_SESSIONM__POS_API_SECRET`).
    pub pos_api_secret: SecretString,
    /// SessionM's identifier of this client, sent in every POS body (`CBTL_SESSIONM__CLIENT_ID`).
    pub client_id: String,
    /// Okya store id → SessionM store id (`CBTL_SESSIONM__STORE_IDS__<okya id>=<sessionm id>`).
    /// Empty with the simulator, which supplies its own; with a real SessionM every store
    /// Okya lists needs one.
    pub store_ids: BTreeMap<String, String>,
    /// SessionM's store for the app itself, used by calls tied to no store such as the
    /// wallet (`CBTL_SESSIONM__ECOMMERCE_STORE_ID`); required with a real SessionM.
    pub ecommerce_store_id: Option<String>,
    /// TCP connect timeout in ms (`CBTL_SESSIONM__CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// Whole-request timeout in ms (`CBTL_SESSIONM__TIMEOUT_MS`).
    pub timeout_ms: u64,
    /// Calls in flight to this system from one instance, at most
    /// (`CBTL_SESSIONM__MAX_CONCURRENT_CALLS`); a call waits for a free slot up to
    /// `timeout_ms`, then fails without being sent.
    pub max_concurrent_calls: usize,
}

impl SessionmSettings {
    /// Whether a real SessionM is configured (either URL set; [`Settings::validate`]
    /// requires both).
    pub fn is_real(&self) -> bool {
        self.core_url.is_some() || self.pos_url.is_some()
    }
}

impl Default for SessionmSettings {
    fn default() -> Self {
        Self {
            core_url: None,
            api_key: sandbox_credentials::SESSIONM_API_KEY.to_owned(),
            api_secret: SecretString::from(sandbox_credentials::SESSIONM_API_SECRET),
            pos_url: None,
            pos_api_key: sandbox_credentials::SESSIONM_POS_API_KEY.to_owned(),
            pos_api_secret: SecretString::from(sandbox_credentials::SESSIONM_POS_API_SECRET),
            client_id: sandbox_credentials::SESSIONM_CLIENT_ID.to_owned(),
            store_ids: BTreeMap::new(),
            ecommerce_store_id: None,
            connect_timeout_ms: 1_000,
            timeout_ms: 5_000,
            max_concurrent_calls: 64,
        }
    }
}
timeouts_accessor!(SessionmSettings);

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Secrets accepted on Okya's `X-Okya-Signature`; the first signs sandbox deliveries.
    /// Several may be active while a secret is rotated (`CBTL_WEBHOOKS__OKYA_SECRETS`).
    pub okya_secrets: Vec<SecretString>,
    /// Secrets accepted on `Stripe-Signature` (`whsec_…`), several during rotation
    /// (`CBTL_WEBHOOKS__STRIPE_SECRETS`).
    pub stripe_secrets: Vec<SecretString>,
    /// Oldest signature timestamp accepted, in seconds (`CBTL_WEBHOOKS__TOLERANCE_SECS`).
    pub tolerance_secs: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            okya_secrets: vec![SecretString::from(sandbox_credentials::OKYA_WEBHOOK_SECRET)],
            stripe_secrets: vec![SecretString::from(
                sandbox_credentials::STRIPE_WEBHOOK_SECRET,
            )],
            tolerance_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderSettings {
    /// When cards are charged (`CBTL_ORDERS__CAPTURE`): `immediate` at checkout (refunded
    /// on rejection or recall) or `on_acceptance` (authorised at checkout, captured once the
    /// POS has the order, released otherwise).
    pub capture: crate::domain::CaptureMode,
    /// Attempts at injecting an order into the POS before it is recalled
    /// (`CBTL_ORDERS__POS_MAX_ATTEMPTS`).
    pub pos_max_attempts: u32,
    /// Seconds a customer has to finish 3-D Secure before the payment is cancelled
    /// (`CBTL_ORDERS__AUTHENTICATION_TIMEOUT_SECS`).
    pub authentication_timeout_secs: u64,
    /// How long one instance holds an order while running its flow, in ms; after a crash
    /// another instance resumes it once this passes (`CBTL_ORDERS__LEASE_MS`).
    pub lease_ms: u64,
    /// How often unfinished flows are looked for and resumed, in ms (`CBTL_ORDERS__SWEEP_INTERVAL_MS`).
    pub sweep_interval_ms: u64,
    /// How long `checkout` waits for a concurrent duplicate to finish, in ms
    /// (`CBTL_ORDERS__CHECKOUT_WAIT_MS`).
    pub checkout_wait_ms: u64,
    /// How often open orders are compared with Okya's copy, in case webhooks were lost,
    /// in seconds (`CBTL_ORDERS__RECONCILE_INTERVAL_SECS`).
    pub reconcile_interval_secs: u64,
    /// With `capture = on_acceptance`, how old a card authorisation may grow while its
    /// order waits for the store before reconciliation hands the order to an operator,
    /// in seconds; authorisations lapse after about 7 days
    /// (`CBTL_ORDERS__AUTHORISATION_ALERT_AFTER_SECS`).
    pub authorisation_alert_after_secs: u64,
    /// Tries of one flow step (transient failures, unknown outcomes, refusals still being
    /// resolved) before the order is marked for an operator instead of being tried again
    /// (`CBTL_ORDERS__MAX_STEP_ATTEMPTS`). Retries back off from 200 ms to 60 s, so the
    /// default of 20 gives up after about 13 minutes.
    pub max_step_attempts: u32,
    /// Unknown outcomes of a charge (timeouts, Stripe's `idempotency_key_in_use`, 5xx)
    /// retried under the same key before the PaymentIntent is also looked up by the
    /// order's metadata (`CBTL_ORDERS__CHARGE_LOOKUP_AFTER`).
    pub charge_lookup_after: u32,
}

impl Default for OrderSettings {
    fn default() -> Self {
        Self {
            capture: crate::domain::CaptureMode::Immediate,
            pos_max_attempts: 3,
            authentication_timeout_secs: 900,
            lease_ms: 15_000,
            sweep_interval_ms: 1_000,
            checkout_wait_ms: 15_000,
            reconcile_interval_secs: 60,
            authorisation_alert_after_secs: 6 * 24 * 3600,
            max_step_attempts: 20,
            charge_lookup_after: 3,
        }
    }
}

/// How long the in-process catalogue (every store and every product on a store's menu,
/// read from Okya) is served. Okya's `menu.updated` webhook drops it at once; these bound
/// how stale it can be otherwise (another instance's webhook, a lost webhook, an outage).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSettings {
    /// Age in seconds up to which the copy is served as it is (`CBTL_CATALOG__FRESH_SECS`).
    /// Older, it is still served while one background read replaces it.
    pub fresh_secs: u64,
    /// Age in seconds after which the copy is never served (`CBTL_CATALOG__MAX_STALE_SECS`):
    /// while Okya is down, catalogue queries answer the last copy up to this age, then
    /// `UPSTREAM_UNAVAILABLE`. At least `fresh_secs`.
    pub max_stale_secs: u64,
}

impl CatalogSettings {
    /// `fresh_secs` as a `Duration`.
    pub fn fresh(&self) -> Duration {
        Duration::from_secs(self.fresh_secs)
    }

    /// `max_stale_secs` as a `Duration`.
    pub fn max_stale(&self) -> Duration {
        Duration::from_secs(self.max_stale_secs)
    }
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            fresh_secs: 30,
            max_stale_secs: 600,
        }
    }
}

/// The development-only signing key; refused when any upstream is real (its URL set).
pub const DEV_JWT_SECRET: &str = "dev-only-insecure-jwt-secret-do-not-use-in-production";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HMAC key that signs access tokens, at least 32 bytes (`CBTL_AUTH__JWT_SECRET`).
    /// Every instance behind one load balancer needs the same key.
    pub jwt_secret: SecretString,
    /// Access token lifetime in seconds (`CBTL_AUTH__ACCESS_TOKEN_TTL_SECS`).
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime in seconds (`CBTL_AUTH__REFRESH_TOKEN_TTL_SECS`).
    pub refresh_token_ttl_secs: u64,
    /// How long a one-time code stays valid, in seconds (`CBTL_AUTH__OTP_TTL_SECS`).
    pub otp_ttl_secs: u64,
    /// Wrong codes before a code dies (`CBTL_AUTH__OTP_MAX_ATTEMPTS`).
    pub otp_max_attempts: u32,
    /// Seconds between two codes to one phone (`CBTL_AUTH__OTP_RESEND_INTERVAL_SECS`).
    pub otp_resend_interval_secs: u64,
    /// Codes one phone may be sent per hour (`CBTL_AUTH__OTP_SENDS_PER_HOUR`).
    pub otp_sends_per_hour: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(DEV_JWT_SECRET),
            access_token_ttl_secs: 3_600,
            refresh_token_ttl_secs: 30 * 24 * 3_600,
            otp_ttl_secs: 600,
            otp_max_attempts: 5,
            otp_resend_interval_secs: 30,
            otp_sends_per_hour: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSettings {
    /// How often idle workers look for due jobs, in ms (`CBTL_JOBS__POLL_INTERVAL_MS`).
    pub poll_interval_ms: u64,
    /// How long a claimed job is reserved before another worker may take it over, in ms
    /// (`CBTL_JOBS__LEASE_MS`).
    pub lease_ms: u64,
    /// Longest wait between two retries of a failing job, in ms (`CBTL_JOBS__MAX_BACKOFF_MS`).
    pub max_backoff_ms: u64,
    /// Jobs one instance runs at once (`CBTL_JOBS__WORKERS`), 1 to 1024. A job is mostly
    /// waiting on an upstream (the POS, SessionM), so this bounds how many stores'
    /// acceptances are carried on at once: with 4, a rush of 2,000 accepted orders took
    /// 25 s to reach the app (README "Benchmarks").
    pub workers: usize,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            lease_ms: 60_000,
            max_backoff_ms: 300_000,
            workers: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSettings {
    /// The code every sandbox OTP carries (`CBTL_SANDBOX__OTP_CODE`); empty means random codes,
    /// readable only from the simulator's outbox.
    pub otp_code: String,
    /// Delay before the sandbox store accepts a paid order, in ms (`CBTL_SANDBOX__AUTO_ACCEPT_DELAY_MS`);
    /// 0 turns automatic acceptance off.
    pub auto_accept_delay_ms: u64,
    /// Latency added to every simulator call, in ms (`CBTL_SANDBOX__LATENCY_MS`).
    pub latency_ms: u64,
    /// Share of simulator calls answered with a 503, 0.0 to 1.0 (`CBTL_SANDBOX__ERROR_RATE`).
    pub error_rate: f64,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            otp_code: sandbox_credentials::OTP_CODE.to_owned(),
            auto_accept_delay_ms: cbtl_sandbox::okya::AUTO_ACCEPT_DELAY_MS,
            latency_ms: 0,
            error_rate: 0.0,
        }
    }
}

/// A trusted proxy: one address (`10.0.0.7`, `::1`) or a CIDR block (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyNet(pub ipnet::IpNet);

impl ProxyNet {
    pub fn contains(&self, addr: &std::net::IpAddr) -> bool {
        self.0.contains(addr)
    }
}

impl TryFrom<String> for ProxyNet {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(ProxyNet)
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))
    }
}

/// One rate: `burst` requests at once, then one more every `3600 / per_hour` seconds (a
/// token bucket of `burst` tokens refilled at `per_hour` an hour, enforced as GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests allowed at once after a quiet spell; at least 1.
    pub burst: u32,
    /// Requests allowed per hour in the long run; at least 1.
    pub per_hour: u32,
}

impl Rate {
    pub const fn new(burst: u32, per_hour: u32) -> Self {
        Self { burst, per_hour }
    }

    /// The time one request uses up: `3600 s / per_hour` (at least 1 ms).
    pub fn interval(&self) -> Duration {
        let ms = 3_600_000 / u64::from(self.per_hour.max(1));
        Duration::from_millis(ms.max(1))
    }
}

/// Rate limits, each per key (a phone, a customer, a client address). Over a limit the
/// mutation answers `RATE_LIMITED` with `extensions.retryAfterSeconds`. Each is enforced in
/// process first (`governor`) and then in the shared database, so it holds across every
/// instance on one database.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed
    /// (`CBTL_RATE_LIMITS__TRUSTED_PROXIES`, e.g. `[10.0.0.0/8]`). Empty: the client is the
    /// socket's peer and the header is ignored, so a client cannot choose its address.
    pub trusted_proxies: Vec<ProxyNet>,
    /// Codes sent (`accountRegister`, `accountResendOtp`, `signInRequestOtp`) per client
    /// address (`CBTL_RATE_LIMITS__OTP_SEND_PER_ADDRESS__BURST`, `…__PER_HOUR`). Per phone,
    /// `auth.otp_resend_interval_secs` and `auth.otp_sends_per_hour` apply.
    pub otp_send_per_address: Rate,
    /// Codes tried (`accountConfirm`, `signIn`) per phone
    /// (`CBTL_RATE_LIMITS__OTP_VERIFY_PER_PHONE__…`), whichever code they try.
    pub otp_verify_per_phone: Rate,
    /// Codes tried per client address (`CBTL_RATE_LIMITS__OTP_VERIFY_PER_ADDRESS__…`).
    pub otp_verify_per_address: Rate,
    /// `checkout` calls per customer (`CBTL_RATE_LIMITS__CHECKOUT_PER_CUSTOMER__…`).
    pub checkout_per_customer: Rate,
    /// `checkout` calls per client address (`CBTL_RATE_LIMITS__CHECKOUT_PER_ADDRESS__…`).
    pub checkout_per_address: Rate,
    /// Declined or failed payments per customer before `checkout` is refused
    /// (`CBTL_RATE_LIMITS__DECLINES_PER_CUSTOMER__…`): card testing.
    pub declines_per_customer: Rate,
    /// Declined or failed payments per client address
    /// (`CBTL_RATE_LIMITS__DECLINES_PER_ADDRESS__…`).
    pub declines_per_address: Rate,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            otp_send_per_address: Rate::new(10, 30),
            otp_verify_per_phone: Rate::new(10, 30),
            otp_verify_per_address: Rate::new(20, 60),
            checkout_per_customer: Rate::new(10, 30),
            checkout_per_address: Rate::new(30, 120),
            declines_per_customer: Rate::new(5, 6),
            declines_per_address: Rate::new(10, 20),
        }
    }
}

/// One circuit breaker per upstream system (Okya, Okya Auth, Stripe, Epoint, SessionM),
/// per instance: see `upstream::guard`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Share of the calls in the window that must fail (5xx, 429, timeout, no connection)
    /// for the breaker to open, above 0.0 and at most 1.0 (`CBTL_BREAKER__FAILURE_RATIO`).
    pub failure_ratio: f64,
    /// Calls that must have been made in the window before the ratio is judged
    /// (`CBTL_BREAKER__MIN_CALLS`), so a few failures on a quiet instance do not open it.
    pub min_calls: usize,
    /// The sliding window the ratio is taken over, in seconds (`CBTL_BREAKER__WINDOW_SECS`).
    pub window_secs: u64,
    /// How long an open breaker refuses calls before it lets one probe through, in seconds
    /// (`CBTL_BREAKER__OPEN_SECS`); the probe's success closes it, its failure opens it again.
    pub open_secs: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_calls: 20,
            window_secs: 30,
            open_secs: 15,
        }
    }
}

impl RateLimitSettings {
    /// Every rate with its setting's name, for validation and documentation. Exhaustive by
    /// destructuring, so a rate added later is listed here or does not compile.
    pub fn rates(&self) -> [(&'static str, Rate); 7] {
        let Self {
            trusted_proxies: _,
            otp_send_per_address,
            otp_verify_per_phone,
            otp_verify_per_address,
            checkout_per_customer,
            checkout_per_address,
            declines_per_customer,
            declines_per_address,
        } = *self;
        [
            ("rate_limits.otp_send_per_address", otp_send_per_address),
            ("rate_limits.otp_verify_per_phone", otp_verify_per_phone),
            ("rate_limits.otp_verify_per_address", otp_verify_per_address),
            ("rate_limits.checkout_per_customer", checkout_per_customer),
            ("rate_limits.checkout_per_address", checkout_per_address),
            ("rate_limits.declines_per_customer", declines_per_customer),
            ("rate_limits.declines_per_address", declines_per_address),
        ]
    }
}

durations!(BreakerSettings {
    window: window_secs secs,
    open: open_secs secs,
});

/// A budget of inline retries per upstream (Finagle's retry budget, as tower's
/// `TpsBudget`): every call deposits, every retry withdraws, so during an outage retries
/// add at most `ratio` to the calls made, plus `min_per_sec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetSettings {
    /// Retries allowed per call made, 0.0 to 10.0 (`CBTL_RETRY_BUDGET__RATIO`): 0.2 lets
    /// retries add a fifth to the load.
    pub ratio: f32,
    /// Retries allowed per second whatever the traffic (`CBTL_RETRY_BUDGET__MIN_PER_SEC`),
    /// so a quiet instance can still retry.
    pub min_per_sec: u32,
    /// How long a deposit counts, in seconds, 1 to 60 (`CBTL_RETRY_BUDGET__WINDOW_SECS`).
    pub window_secs: u64,
}

impl Default for RetryBudgetSettings {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            window_secs: 10,
        }
    }
}

durations!(RetryBudgetSettings {
    window: window_secs secs,
});

impl Settings {
    /// Loads defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    format!("names {}, which is not a readable file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            )
            .merge(
                Env::prefixed("CBTL_")
                    .filter(|key| key.as_str() != "config")
                    .split("__"),
            );
        let settings: Settings = figment.extract()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: ranges, URL shapes, credentials that real upstreams need.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let db = self.database_url.as_str();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "DATABASE_URL",
                "must start with sqlite: or postgres://",
            ));
        }
        let pool = self.database.pool_size(db);
        if pool < 2 {
            return Err(invalid("database.max_connections", "must be at least 2"));
        }
        if self.database.acquire_timeout_ms == 0 {
            return Err(invalid("database.acquire_timeout_ms", "must be above 0"));
        }
        if self.database.max_connections_per_customer == 0
            || self.database.max_connections_per_customer >= pool
        {
            return Err(invalid(
                "database.max_connections_per_customer",
                format!(
                    "must be between 1 and the pool size less one ({})",
                    pool - 1
                ),
            ));
        }
        if self.graphql.max_aliases == 0
            || self.graphql.max_root_fields == 0
            || self.graphql.max_operations == 0
            || self.graphql.operation_timeout_secs == 0
        {
            return Err(invalid(
                "graphql.max_aliases/max_root_fields/max_operations/operation_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.graphql.subscription_recheck_secs == 0 {
            return Err(invalid(
                "graphql.subscription_recheck_secs",
                "must be at least 1",
            ));
        }
        if self.catalog.fresh_secs == 0 || self.catalog.max_stale_secs < self.catalog.fresh_secs {
            return Err(invalid(
                "catalog.fresh_secs/max_stale_secs",
                "fresh_secs must be above 0 and max_stale_secs at least fresh_secs",
            ));
        }
        if self.graphql.max_depth == 0 || self.graphql.max_complexity == 0 {
            return Err(invalid(
                "graphql.max_depth/max_complexity",
                "must be above 0",
            ));
        }
        if self.graphql.ws_max_operations == 0 || self.graphql.ws_max_operations_per_customer == 0 {
            return Err(invalid(
                "graphql.ws_max_operations/ws_max_operations_per_customer",
                "must be above 0",
            ));
        }
        if self.graphql.max_body_bytes < 1024 {
            return Err(invalid("graphql.max_body_bytes", "must be at least 1024"));
        }
        if !(0.0..=1.0).contains(&self.sandbox.error_rate) {
            return Err(invalid("sandbox.error_rate", "must be between 0.0 and 1.0"));
        }
        if !(self.breaker.failure_ratio > 0.0 && self.breaker.failure_ratio <= 1.0) {
            return Err(invalid(
                "breaker.failure_ratio",
                "must be above 0.0 and at most 1.0",
            ));
        }
        if self.breaker.min_calls == 0 || self.breaker.window_secs == 0 {
            return Err(invalid(
                "breaker.min_calls/window_secs",
                "must be at least 1",
            ));
        }
        // tower's `TpsBudget` asserts these ranges; checked here so a setting cannot panic.
        if !(0.0..=10.0).contains(&self.retry_budget.ratio) {
            return Err(invalid(
                "retry_budget.ratio",
                "must be between 0.0 and 10.0",
            ));
        }
        if !(1..=60).contains(&self.retry_budget.window_secs) {
            return Err(invalid(
                "retry_budget.window_secs",
                "must be between 1 and 60",
            ));
        }
        if self.retry_budget.min_per_sec > 1_000_000 {
            return Err(invalid(
                "retry_budget.min_per_sec",
                "must be at most 1000000",
            ));
        }
        if self.webhooks.okya_secrets.is_empty() || self.webhooks.stripe_secrets.is_empty() {
            return Err(invalid("webhooks.*_secrets", "needs at least one secret"));
        }
        check_upstream(
            "okya.base_url",
            self.okya.base_url.as_deref(),
            &self.okya.timeouts(),
        )?;
        check_upstream(
            "okya.auth_base_url",
            self.okya.auth_base_url.as_deref(),
            &self.okya.timeouts(),
        )?;
        check_upstream(
            "stripe.base_url",
            self.stripe.base_url.as_deref(),
            &self.stripe.timeouts(),
        )?;
        check_upstream(
            "epoint.base_url",
            self.epoint.base_url.as_deref(),
            &self.epoint.timeouts(),
        )?;
        check_upstream(
            "sessionm.core_url",
            self.sessionm.core_url.as_deref(),
            &self.sessionm.timeouts(),
        )?;
        check_upstream(
            "sessionm.pos_url",
            self.sessionm.pos_url.as_deref(),
            &self.sessionm.timeouts(),
        )?;
        for (setting, calls) in [
            ("okya.max_concurrent_calls", self.okya.max_concurrent_calls),
            (
                "stripe.max_concurrent_calls",
                self.stripe.max_concurrent_calls,
            ),
            (
                "epoint.max_concurrent_calls",
                self.epoint.max_concurrent_calls,
            ),
            (
                "sessionm.max_concurrent_calls",
                self.sessionm.max_concurrent_calls,
            ),
        ] {
            // A tokio semaphore holds at most `Semaphore::MAX_PERMITS`; far more than any
            // upstream would let one client have in flight.
            if !(1..=100_000).contains(&calls) {
                return Err(invalid(setting, "must be between 1 and 100000"));
            }
        }
        if self.auth.jwt_secret.expose_secret().len() < 32 {
            return Err(invalid("auth.jwt_secret", "must be at least 32 bytes"));
        }
        let sandbox = self.sandbox_credentials_with_real_upstreams();
        if !sandbox.is_empty() {
            return Err(ConfigError::SandboxCredentials(sandbox));
        }
        if self.sessionm.core_url.is_some() != self.sessionm.pos_url.is_some() {
            return Err(invalid(
                "sessionm.core_url",
                "sessionm.core_url and sessionm.pos_url are set together: members made in one \
                 SessionM cannot use offers of another (or of the simulator)",
            ));
        }
        if self.sessionm.pos_url.is_some()
            && self.sessionm.client_id == SessionmSettings::default().client_id
        {
            return Err(invalid(
                "sessionm.client_id",
                "must be the client id SessionM issued when sessionm.pos_url is set",
            ));
        }
        if self.sessionm.is_real() && self.sessionm.ecommerce_store_id.is_none() {
            return Err(invalid(
                "sessionm.ecommerce_store_id",
                "is required with a real SessionM (the store SessionM provides for the app)",
            ));
        }
        if self.auth.access_token_ttl_secs == 0
            || self.auth.otp_ttl_secs == 0
            || self.auth.otp_max_attempts == 0
        {
            return Err(invalid("auth.*", "lifetimes and attempts must be above 0"));
        }
        if self.orders.pos_max_attempts == 0
            || self.orders.lease_ms < 1_000
            || self.orders.sweep_interval_ms == 0
        {
            return Err(invalid(
                "orders.*",
                "POS attempts and the sweep interval must be above 0, the lease at least 1000 ms",
            ));
        }
        if !(1..=1_024).contains(&self.jobs.workers) {
            return Err(invalid("jobs.workers", "must be between 1 and 1024"));
        }
        if self.jobs.poll_interval_ms == 0 || self.jobs.lease_ms < 1_000 {
            return Err(invalid(
                "jobs.*",
                "poll interval must be above 0 and the lease at least 1000 ms",
            ));
        }
        for (setting, rate) in self.rate_limits.rates() {
            if rate.burst == 0 || rate.per_hour == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    problem: "needs burst and per_hour of at least 1".to_owned(),
                });
            }
        }
        if self.stripe.base_url.is_some() {
            let key = self.stripe.secret_key.expose_secret();
            if !(key.starts_with("sk_") || key.starts_with("rk_")) {
                return Err(invalid(
                    "stripe.secret_key",
                    "must be a real sk_test_… or sk_live_… key when stripe.base_url is set",
                ));
            }
        }
        Ok(())
    }

    /// Whether the schema answers introspection: `graphql.introspection` when set, else on
    /// only while no upstream is real.
    pub fn introspection(&self) -> bool {
        self.graphql.introspection.unwrap_or_else(|| {
            !(self.okya.base_url.is_some()
                || self.stripe.base_url.is_some()
                || self.epoint.base_url.is_some()
                || self.sessionm.is_real())
        })
    }

    /// Which credentials still hold a sandbox value while the upstream they are for is
    /// real (its URL is set); the JWT key counts as soon as any upstream is real, since
    /// the service then serves real customers.
    ///
    /// Every settings struct involved is destructured without `..`, so a field added
    /// later does not compile until it is classified here as a credential or not.
    pub fn sandbox_credentials_with_real_upstreams(&self) -> Vec<SandboxCredential> {
        use sandbox_credentials as sandbox;
        let OkyaSettings {
            base_url: okya_url,
            auth_base_url: okya_auth_url,
            api_key: okya_key,
            connect_timeout_ms: _,
            timeout_ms: _,
            max_concurrent_calls: _,
        } = &self.okya;
        let StripeSettings {
            base_url: stripe_url,
            secret_key: stripe_key,
            connect_timeout_ms: _,
            timeout_ms: _,
            max_concurrent_calls: _,
        } = &self.stripe;
        let EpointSettings {
            base_url: epoint_url,
            api_key: epoint_key,
            connect_timeout_ms: _,
            timeout_ms: _,
            max_concurrent_calls: _,
        } = &self.epoint;
        let SessionmSettings {
            core_url: sessionm_core_url,
            api_key: sessionm_key,
            api_secret: sessionm_secret,
            pos_url: sessionm_pos_url,
            pos_api_key: sessionm_pos_key,
            pos_api_secret: sessionm_pos_secret,
            // Identifiers SessionM issues, not secrets: a wrong one is refused by SessionM
            // itself and cannot be used by anyone else.
            client_id: _,
            store_ids: _,
            ecommerce_store_id: _,
            connect_timeout_ms: _,
            timeout_ms: _,
            max_concurrent_calls: _,
        } = &self.sessionm;
        let WebhookSettings {
            okya_secrets,
            stripe_secrets,
            tolerance_secs: _,
        } = &self.webhooks;
        let AuthSettings {
            jwt_secret,
            access_token_ttl_secs: _,
            refresh_token_ttl_secs: _,
            otp_ttl_secs: _,
            otp_max_attempts: _,
            otp_resend_interval_secs: _,
            otp_sends_per_hour: _,
        } = &self.auth;

        let set = |url: &Option<String>, setting: &'static str| url.as_ref().map(|_| setting);
        let okya_commerce = set(okya_url, "okya.base_url");
        let okya_any = okya_commerce.or(set(okya_auth_url, "okya.auth_base_url"));
        let stripe = set(stripe_url, "stripe.base_url");
        let epoint = set(epoint_url, "epoint.base_url");
        let sessionm_core = set(sessionm_core_url, "sessionm.core_url");
        let sessionm_pos = set(sessionm_pos_url, "sessionm.pos_url");
        let any = okya_any
            .or(stripe)
            .or(epoint)
            .or(sessionm_core)
            .or(sessionm_pos);

        let is = |secret: &SecretString, value: &str| secret.expose_secret() == value;
        let contains = |secrets: &[SecretString], value: &str| secrets.iter().any(|s| is(s, value));
        // (real because, setting, environment variable, still the sandbox value)
        let checks: [(Option<&'static str>, &'static str, &'static str, bool); 10] = [
            (
                any,
                "auth.jwt_secret",
                "CBTL_AUTH__JWT_SECRET",
                is(jwt_secret, sandbox::JWT_SECRET),
            ),
            (
                okya_any,
                "okya.api_key",
                "CBTL_OKYA__API_KEY",
                is(okya_key, sandbox::OKYA_API_KEY),
            ),
            // Okya commerce sends the order webhooks; Okya Auth sends none.
            (
                okya_commerce,
                "webhooks.okya_secrets",
                "CBTL_WEBHOOKS__OKYA_SECRETS",
                contains(okya_secrets, sandbox::OKYA_WEBHOOK_SECRET),
            ),
            (
                stripe,
                "stripe.secret_key",
                "CBTL_STRIPE__SECRET_KEY",
                is(stripe_key, sandbox::STRIPE_SECRET_KEY),
            ),
            (
                stripe,
                "webhooks.stripe_secrets",
                "CBTL_WEBHOOKS__STRIPE_SECRETS",
                contains(stripe_secrets, sandbox::STRIPE_WEBHOOK_SECRET),
            ),
            (
                epoint,
                "epoint.api_key",
                "CBTL_EPOINT__API_KEY",
                is(epoint_key, sandbox::EPOINT_API_KEY),
            ),
            (
                sessionm_core,
                "sessionm.api_key",
                "CBTL_SESSIONM__API_KEY",
                sessionm_key == sandbox::SESSIONM_API_KEY,
            ),
            (
                sessionm_core,
                "sessionm.api_secret",
                "CBTL_SESSIONM__API_SECRET",
                is(sessionm_secret, sandbox::SESSIONM_API_SECRET),
            ),
            (
                sessionm_pos,
                "sessionm.pos_api_key",
                "CBTL_SESSIONM__POS_API_KEY",
                sessionm_pos_key == sandbox::SESSIONM_POS_API_KEY,
            ),
            (
                sessionm_pos,
                "sessionm.pos_api_secret",
                "CBTL_SESSIONM__POS_API_SECRET",
                is(sessionm_pos_secret, sandbox::SESSIONM_POS_API_SECRET),
            ),
        ];
        checks
            .into_iter()
            .filter_map(|(real, setting, env, sandbox_value)| {
                Some(SandboxCredential {
                    setting,
                    env,
                    real_because: real.filter(|_| sandbox_value)?,
                })
            })
            .collect()
    }
}

fn check_upstream(
    setting: &'static str,
    url: Option<&str>,
    timeouts: &Timeouts,
) -> Result<(), ConfigError> {
    if let Some(url) = url {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| invalid(setting, format!("is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(invalid(setting, "must be an http:// or https:// URL"));
        }
    }
    if timeouts.connect.is_zero() || timeouts.total.is_zero() {
        return Err(invalid(setting, "has a zero timeout"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(settings: &Settings) -> Vec<(&'static str, &'static str)> {
        settings
            .sandbox_credentials_with_real_upstreams()
            .into_iter()
            .map(|c| (c.setting, c.real_because))
            .collect()
    }

    const URL: &str = "https://upstream.example";

    #[test]
    fn the_simulators_may_keep_every_sandbox_credential() {
        let settings = Settings::default();
        assert_eq!(names(&settings), vec![]);
        settings.validate().expect("the defaults are valid");
    }

    #[test]
    fn introspection_is_on_with_the_sandbox_and_off_with_a_real_upstream_unless_set() {
        assert!(Settings::default().introspection());
        let real = |tweak: fn(&mut Settings)| {
            let mut settings = Settings::default();
            tweak(&mut settings);
            settings.introspection()
        };
        assert!(!real(|s| s.okya.base_url = Some(URL.into())));
        assert!(!real(|s| s.stripe.base_url = Some(URL.into())));
        assert!(!real(|s| s.epoint.base_url = Some(URL.into())));
        assert!(real(|s| {
            s.okya.base_url = Some(URL.into());
            s.graphql.introspection = Some(true);
        }));
        assert!(!real(|s| s.graphql.introspection = Some(false)));
    }

    #[test]
    fn each_real_upstream_names_its_sandbox_credentials_and_the_jwt_key() {
        type Tweak = fn(&mut Settings);
        let cases: [(Tweak, Vec<(&str, &str)>); 6] = [
            (
                |s| s.okya.base_url = Some(URL.into()),
                vec![
                    ("auth.jwt_secret", "okya.base_url"),
                    ("okya.api_key", "okya.base_url"),
                    ("webhooks.okya_secrets", "okya.base_url"),
                ],
            ),
            (
                |s| s.okya.auth_base_url = Some(URL.into()),
                vec![
                    ("auth.jwt_secret", "okya.auth_base_url"),
                    ("okya.api_key", "okya.auth_base_url"),
                ],
            ),
            (
                |s| s.stripe.base_url = Some(URL.into()),
                vec![
                    ("auth.jwt_secret", "stripe.base_url"),
                    ("stripe.secret_key", "stripe.base_url"),
                    ("webhooks.stripe_secrets", "stripe.base_url"),
                ],
            ),
            (
                |s| s.epoint.base_url = Some(URL.into()),
                vec![
                    ("auth.jwt_secret", "epoint.base_url"),
                    ("epoint.api_key", "epoint.base_url"),
                ],
            ),
            (
                |s| s.sessionm.core_url = Some(URL.into()),
                vec![
                    ("auth.jwt_secret", "sessionm.core_url"),
                    ("sessionm.api_key", "sessionm.core_url"),
                    ("sessionm.api_secret", "sessionm.core_url"),
                ],
            ),
            (
                |s| s.sessionm.pos_url = Some(URL.into()),
                vec![
                    ("auth.jwt_secret", "sessionm.pos_url"),
                    ("sessionm.pos_api_key", "sessionm.pos_url"),
                    ("sessionm.pos_api_secret", "sessionm.pos_url"),
                ],
            ),
        ];
        for (tweak, expected) in cases {
            let mut settings = Settings::default();
            tweak(&mut settings);
            assert_eq!(names(&settings), expected);
            assert!(matches!(
                settings.validate(),
                Err(ConfigError::SandboxCredentials(found)) if found.len() == expected.len()
            ));
        }
    }

    #[test]
    fn real_credentials_pass_and_a_sandbox_secret_among_rotated_ones_does_not() {
        let mut settings = Settings::default();
        settings.okya.base_url = Some(URL.into());
        settings.stripe.base_url = Some(URL.into());
        settings.epoint.base_url = Some(URL.into());
        settings.sessionm.core_url = Some(URL.into());
        settings.sessionm.pos_url = Some(URL.into());
        settings.sessionm.ecommerce_store_id = Some("sm-ecommerce".into());
        settings.sessionm.client_id = "sm-client-1".into();
        settings.auth.jwt_secret = "a-private-key-of-at-least-32-bytes!!".to_owned().into();
        settings.okya.api_key = "okya_live_1".to_owned().into();
        settings.stripe.secret_key = "sk_live_1".to_owned().into();
        settings.epoint.api_key = "epoint_1".to_owned().into();
        settings.sessionm.api_key = "sm_1".to_owned();
        settings.sessionm.api_secret = "sm_secret_1".to_owned().into();
        settings.sessionm.pos_api_key = "sm_pos_1".to_owned();
        settings.sessionm.pos_api_secret = "sm_pos_secret_1".to_owned().into();
        settings.webhooks.okya_secrets = vec!["whsec_okya_1".to_owned().into()];
        settings.webhooks.stripe_secrets = vec![
            "whsec_stripe_new".to_owned().into(),
            "whsec_stripe_old".to_owned().into(),
        ];
        assert_eq!(names(&settings), vec![]);
        settings.validate().expect("real credentials are valid");

        settings
            .webhooks
            .stripe_secrets
            .push(sandbox_credentials::STRIPE_WEBHOOK_SECRET.to_owned().into());
        assert_eq!(
            names(&settings),
            vec![("webhooks.stripe_secrets", "stripe.base_url")]
        );
    }

    #[test]
    fn the_message_names_each_setting_and_its_environment_variable() {
        let mut settings = Settings::default();
        settings.epoint.base_url = Some(URL.into());
        let message = settings.validate().expect_err("refused").to_string();
        for part in [
            "`auth.jwt_secret` (CBTL_AUTH__JWT_SECRET)",
            "`epoint.api_key` (CBTL_EPOINT__API_KEY)",
            "`epoint.base_url` is set",
        ] {
            assert!(message.contains(part), "{part} in {message}");
        }
        assert!(!message.contains(DEV_JWT_SECRET), "no secret in {message}");
        assert!(
            !message.contains(sandbox_credentials::EPOINT_API_KEY),
            "{message}"
        );
    }
}
