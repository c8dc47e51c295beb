//! Runs durable jobs: claims due ones from the database, runs them, and records success
//! or a retry with exponential backoff. Any instance may run any job; the lease keeps two
//! from running the same one at once, and every job is idempotent, so a job interrupted
//! by a crash is simply run again. A shutdown stops the workers claiming; the job in
//! hand finishes first. The dispatch from a [`JobKind`] to its flow lives here,
//! above both.

use crate::{
    auth::now_ms,
    context::AppState,
    flows,
    jobs::{JobError, JobKind},
    lifecycle::Held,
    store::{self, jobs::Claimed},
};
use std::time::Duration;
use tokio::task::JoinHandle;

/// After this many attempts a job is buried and an operator must look at it.
const MAX_ATTEMPTS: i32 = 100;

pub fn spawn_workers(state: AppState) -> Vec<JoinHandle<()>> {
    (0..state.settings.jobs.workers)
        .map(|worker| {
            let state = state.clone();
            tokio::spawn(async move { run_worker(state, worker).await })
        })
        .collect()
}

async fn run_worker(state: AppState, worker: usize) {
    let poll = state.settings.jobs.poll_interval();
    let lease = crate::domain::millis(state.settings.jobs.lease());
    // A shutdown lets the job in hand finish (within the grace), then stops claiming.
    while !state.lifecycle.is_stopping() {
        let notified = state.job_signal.notified();
        match store::jobs::claim(&state.db, state.lifecycle.instance(), now_ms(), lease).await {
            Ok(Some(job)) => {
                let _running = state.lifecycle.running(Held::Job, &job.id);
                run_one(&state, job).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(worker, error = %e, "claiming a job failed"),
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(poll) => {}
            () = state.lifecycle.stopping() => {}
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
                crate::domain::millis(BUSY_RETRY.delay(1))
            } else {
                backoff_ms(job.attempts, state.settings.jobs.max_backoff())
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
/// A job waiting for a record another runner holds: soon, spread over 100–200 ms.
const BUSY_RETRY: crate::retry::RetryPolicy = crate::retry::RetryPolicy::new(
    Duration::from_millis(100),
    Duration::from_millis(100),
    crate::retry::Jitter::Added(100),
);

fn backoff_ms(attempts: i32, max: Duration) -> i64 {
    let policy = crate::retry::RetryPolicy::new(
        Duration::from_millis(250),
        max.max(Duration::from_millis(1)),
        crate::retry::Jitter::Equal,
    );
    let retry = u32::try_from(attempts.max(1)).unwrap_or(1);
    crate::domain::millis(policy.delay(retry))
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;
    use crate::jobs::JobKind;
    use std::time::Duration;

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
            let first = backoff_ms(1, Duration::from_millis(300_000));
            assert!((125..=250).contains(&first));
            let tenth = backoff_ms(10, Duration::from_millis(300_000));
            assert!((64_000..=128_000).contains(&tenth), "{tenth}");
            assert!(backoff_ms(40, Duration::from_millis(300_000)) <= 300_000);
            assert!(backoff_ms(40, Duration::from_millis(200)) <= 200);
        }
    }
}
