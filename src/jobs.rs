//! The durable jobs' vocabulary: what a job does ([`JobKind`]), how it failed
//! ([`JobError`]) and the signal that wakes the workers. The flows enqueue jobs and
//! implement them; `worker` (above the flows) claims, dispatches and retries them.

use std::sync::Arc;
use tokio::sync::Notify;

/// What a job does: stored by name in `jobs.kind`, dispatched by an exhaustive `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter)]
pub enum JobKind {
    /// Create Account: create the SessionM user and save its id on Okya.
    LinkLoyalty,
    /// Apply a stored Okya order-update webhook.
    OkyaEvent,
    /// Apply a stored Stripe webhook.
    StripeEvent,
    /// Place Order step 25: send the order to SessionM, which queues it.
    SendToSessionm,
    /// After the send: read the points SessionM credited for the order.
    ReadLoyaltyPoints,
}

impl JobKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::LinkLoyalty => "link_loyalty",
            JobKind::OkyaEvent => "okya_event",
            JobKind::StripeEvent => "stripe_event",
            JobKind::SendToSessionm => "sessionm_order",
            JobKind::ReadLoyaltyPoints => "sessionm_points",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        <JobKind as strum::IntoEnumIterator>::iter().find(|k| k.as_str() == raw)
    }
}

/// How a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying later (an upstream is down, a timeout).
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (the payload is unreadable, the record is gone).
    #[error("permanent: {0}")]
    Permanent(String),
    /// The thing it acts on is being worked on right now; try again in a moment. Normal,
    /// so neither logged loudly nor counted towards giving up.
    #[error("busy: {0}")]
    Busy(String),
}

impl JobError {
    /// An upstream's failure as a job's: waiting heals its transient failures only; a
    /// refusal stays a refusal.
    pub fn from_upstream(err: &crate::upstream::UpstreamError) -> Self {
        if err.is_transient() {
            JobError::Transient(err.to_string())
        } else {
            JobError::Permanent(err.to_string())
        }
    }
}

/// Wakes one idle worker when a job is enqueued, so new work starts at once rather than
/// at the next poll. One, not all: every worker woken claims, and all but one find
/// nothing, a wasted write each. A worker claims until it finds nothing, so jobs enqueued
/// together are all run; a wake while no worker waits is kept for the next to wait.
#[derive(Clone, Default)]
pub struct JobSignal(Arc<Notify>);

impl JobSignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Completes at the next [`Self::wake`] that no other waiter took, or at once when a
    /// wake came while no worker waited.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.notified()
    }
}
