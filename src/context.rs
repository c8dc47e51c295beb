//! What the flows, resolvers and handlers share, built once by `app` and handed down: the
//! database, the upstream clients, the settings, the job signal, the order events, the
//! quotas and the rate limits. It lives below everything that uses it, so no module needs `app`.

use crate::{
    auth::tokens::TokenKeys, config::Settings, events::OrderEvents, jobs::JobSignal, quota::Quotas,
    rate_limit::RateLimiter, upstream::Upstreams,
};
use sea_orm::DatabaseConnection;
use std::{ops::Deref, sync::Arc};

pub struct AppInner {
    pub db: DatabaseConnection,
    /// Statements `db` ran since start.
    pub db_statements: crate::store::StatementCount,
    pub upstreams: Upstreams,
    pub settings: Settings,
    pub token_keys: TokenKeys,
    pub job_signal: JobSignal,
    pub order_events: OrderEvents,
    /// What one customer may hold of what everyone shares.
    pub quotas: Quotas,
    /// This instance's id (the owner of its leases) and its shutdown.
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// How often a phone, customer or client address may ask for what abuse repeats.
    pub rate_limits: RateLimiter,
    /// What reconciliation found and handled since start, by kind (`/readyz`).
    pub reconciliation: crate::domain::reconciliation::Counts,
    #[cfg(feature = "crash-points")]
    pub crash_points: crate::crash::CrashPoints,
}

/// What every request and background task shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}
