//! Runs durable jobs: claims due ones from the database, runs them, and records success
//! or a retry with exponential backoff. Any instance may run any job; the lease keeps two
//! from running the same one at once, and every job is idempotent, so a job interrupted
//! by a crash is simply run again.

use crate::{
    app::AppState,
    auth::now_ms,
    flows,
    store::{self, jobs::Claimed},
};
use std::{sync::Arc, time::Duration};
use tokio::{sync::Notify, task::JoinHandle};

/// Workers per process; jobs are short upstream calls, so a few suffice.
const WORKERS: usize = 4;
/// After this many attempts a job is buried and an operator must look at it.
const MAX_ATTEMPTS: i32 = 100;

/// What a job does: stored by name in `jobs.kind`, dispatched by an exhaustive `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter)]
pub enum JobKind {
    /// Create Account: create the SessionM user and save its id on Okya.
    LinkLoyalty,
    /// Apply a stored Okya order-update webhook.
    OkyaEvent,
    /// Apply a stored Stripe webhook.
    StripeEvent,
    /// Place Order step 26: send the order to SessionM, which queues it.
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

/// Wakes idle workers when a job is enqueued, so new work starts at once rather than at
/// the next poll.
#[derive(Clone, Default)]
pub struct JobSignal(Arc<Notify>);

impl JobSignal {
    pub fn wake(&self) {
        self.0.notify_waiters();
    }
}

pub fn spawn_workers(state: AppState) -> Vec<JoinHandle<()>> {
    (0..WORKERS)
        .map(|worker| {
            let state = state.clone();
            tokio::spawn(async move { run_worker(state, worker).await })
        })
        .collect()
}

async fn run_worker(state: AppState, worker: usize) {
    let poll = Duration::from_millis(state.settings.jobs.poll_interval_ms);
    let lease = i64::try_from(state.settings.jobs.lease_ms).unwrap_or(60_000);
    loop {
        let notified = state.job_signal.0.notified();
        match store::jobs::claim(&state.db, now_ms(), lease).await {
            Ok(Some(job)) => {
                run_one(&state, job).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(worker, error = %e, "claiming a job failed"),
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

#[tracing::instrument(skip_all, fields(job_id = %job.id, kind = %job.kind, attempt = job.attempts))]
async fn run_one(state: &AppState, job: Claimed) {
    let outcome = match serde_json::from_str::<serde_json::Value>(&job.payload) {
        Ok(payload) => dispatch(state, &job.kind, payload).await,
        Err(e) => Err(JobError::Permanent(format!("unreadable payload: {e}"))),
    };
    let now = now_ms();
    let recorded = match outcome {
        Ok(()) => {
            tracing::info!("job done");
            store::jobs::complete(&state.db, &job.id, now).await
        }
        Err(error) => {
            let busy = matches!(error, JobError::Busy(_));
            let dead =
                matches!(error, JobError::Permanent(_)) || (!busy && job.attempts >= MAX_ATTEMPTS);
            let delay = if busy {
                100 + i64::try_from(fastrand::u64(0..100)).unwrap_or(0)
            } else {
                backoff_ms(job.attempts, state.settings.jobs.max_backoff_ms)
            };
            if busy {
                tracing::debug!(%error, retry_in_ms = delay, "job waits for a busy record");
            } else if dead {
                tracing::error!(%error, "job failed for good");
            } else {
                tracing::warn!(%error, retry_in_ms = delay, "job failed; will retry");
            }
            store::jobs::fail(
                &state.db,
                &job.id,
                &error.to_string(),
                now + delay,
                dead,
                now,
            )
            .await
        }
    };
    if let Err(e) = recorded {
        // The lease expires and the job runs again; every job is idempotent.
        tracing::error!(error = %e, "recording a job outcome failed");
    }
}

async fn dispatch(
    state: &AppState,
    kind: &str,
    payload: serde_json::Value,
) -> Result<(), JobError> {
    let Some(kind) = JobKind::parse(kind) else {
        return Err(JobError::Permanent(format!("unknown job kind {kind}")));
    };
    match kind {
        JobKind::LinkLoyalty => flows::create_account::link_loyalty(state, payload).await,
        JobKind::OkyaEvent => flows::place_order::apply_okya_event(state, payload).await,
        JobKind::StripeEvent => flows::place_order::apply_stripe_event(state, payload).await,
        JobKind::SendToSessionm => flows::place_order::send_to_sessionm(state, payload).await,
        JobKind::ReadLoyaltyPoints => flows::place_order::read_loyalty_points(state, payload).await,
    }
}

/// 250 ms doubling per attempt, capped, with jitter so retries of many jobs spread out.
fn backoff_ms(attempts: i32, max_ms: u64) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 30) - 1).unwrap_or(0);
    let base = 250_u64
        .saturating_mul(2_u64.saturating_pow(exponent))
        .min(max_ms.max(1));
    let jittered = base / 2 + fastrand::u64(0..=base / 2);
    i64::try_from(jittered).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::{JobKind, backoff_ms};

    #[test]
    fn every_job_kind_round_trips_and_the_flows_use_its_names() {
        for kind in <JobKind as strum::IntoEnumIterator>::iter() {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            JobKind::parse(crate::flows::create_account::LINK_LOYALTY),
            Some(JobKind::LinkLoyalty)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let first = backoff_ms(1, 300_000);
            assert!((125..=250).contains(&first));
            let tenth = backoff_ms(10, 300_000);
            assert!((64_000..=128_000).contains(&tenth), "{tenth}");
            assert!(backoff_ms(40, 300_000) <= 300_000);
            assert!(backoff_ms(40, 200) <= 200);
        }
    }
}
