//! This process's part in a shared database, and its orderly stop.
//!
//! Each start makes an instance id (a UUID v4) that names the leases this process takes
//! on orders and jobs (`locked_by`). On SIGTERM the service stops starting new work
//! ([`Lifecycle::stopping`]: the sweeper, the job workers and the flow runner check it
//! between steps), waits for the steps and jobs in flight within `shutdown_grace_secs`,
//! and then releases every lease it still holds except those of work still running, so
//! another instance resumes those flows at once instead of after the lease expires.
//! Work still running at the end of the grace keeps its lease: it dies with the process
//! and its lease runs out, as after a crash, so no step is ever run twice at once.

use std::{
    collections::HashSet,
    sync::{Mutex, PoisonError},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What the background runners and the shutdown share.
pub struct Lifecycle {
    instance: String,
    stopping: CancellationToken,
    /// Flow runners and jobs in flight, so the shutdown can wait for them.
    work: TaskTracker,
    /// The orders and jobs whose work is running now (their leases are not released).
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    orders: HashSet<String>,
    jobs: HashSet<String>,
}

/// Which kind of lease a piece of running work holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Order,
    Job,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            instance: uuid::Uuid::new_v4().to_string(),
            stopping: CancellationToken::new(),
            work: TaskTracker::new(),
            running: Mutex::new(Running::default()),
        }
    }
}

impl Lifecycle {
    /// This process's id, stored as the owner of the leases it takes.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether a shutdown has begun: no new step, job or sweep starts.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Resolves when a shutdown begins.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// Begins the shutdown.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// The tracker the flow runners are spawned on.
    pub fn work(&self) -> &TaskTracker {
        &self.work
    }

    /// Marks the lease on `id` as held by running work until the guard is dropped.
    pub fn running(&self, kind: Held, id: &str) -> RunningGuard<'_> {
        self.with_running(|r| set_of(r, kind).insert(id.to_owned()));
        RunningGuard {
            lifecycle: self,
            kind,
            id: id.to_owned(),
        }
    }

    /// The ids of `kind` whose work is running now.
    pub fn running_ids(&self, kind: Held) -> Vec<String> {
        self.with_running(|r| set_of(r, kind).iter().cloned().collect())
    }

    fn with_running<T>(&self, f: impl FnOnce(&mut Running) -> T) -> T {
        // A panic while holding this lock cannot leave the sets half-changed.
        f(&mut self.running.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn set_of(running: &mut Running, kind: Held) -> &mut HashSet<String> {
    match kind {
        Held::Order => &mut running.orders,
        Held::Job => &mut running.jobs,
    }
}

/// Work holding a lease; dropping it (when the work ends, however) unmarks it.
pub struct RunningGuard<'a> {
    lifecycle: &'a Lifecycle,
    kind: Held,
    id: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let (kind, id) = (self.kind, &self.id);
        self.lifecycle
            .with_running(|r| set_of(r, kind).remove(id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_work_is_listed_until_it_ends() {
        let lifecycle = Lifecycle::default();
        let order = lifecycle.running(Held::Order, "ord_1");
        let job = lifecycle.running(Held::Job, "job_1");
        assert_eq!(lifecycle.running_ids(Held::Order), ["ord_1"]);
        assert_eq!(lifecycle.running_ids(Held::Job), ["job_1"]);
        drop(order);
        assert!(lifecycle.running_ids(Held::Order).is_empty());
        assert_eq!(lifecycle.running_ids(Held::Job), ["job_1"]);
        drop(job);
        assert!(lifecycle.running_ids(Held::Job).is_empty());
        assert_ne!(Lifecycle::default().instance(), lifecycle.instance());
    }
}
