//! Crash points for the durability tests (feature `crash-points`, never in production
//! builds): arming a point makes the flow die just before it records that step, as a
//! process killed between an upstream call and its bookkeeping would.

use crate::domain::Step;
use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

#[derive(Clone, Default)]
pub struct CrashPoints {
    armed: Arc<Mutex<HashSet<Step>>>,
    fired: Arc<AtomicUsize>,
}

impl CrashPoints {
    /// Arms a point: the next time a flow is about to record `step`, it dies instead.
    pub fn arm(&self, step: Step) {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(step);
    }

    /// True (once) when `step` is armed.
    pub fn hit(&self, step: Step) -> bool {
        let hit = self
            .armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&step);
        if hit {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// How many armed points fired.
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
}
