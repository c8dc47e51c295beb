//! Per-customer bounds on what is shared by everyone (database connections, live
//! operations), so that a customer who asks for too much waits or is refused alone, while
//! every other customer is served as usual.

use crate::config::Settings;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds every customer is held to.
#[derive(Clone)]
pub struct Quotas {
    /// Database connections one customer's live subscriptions may use at once
    /// (`database.max_connections_per_customer`); more readers wait their turn.
    pub db_connections: KeyedLimit,
    /// Websocket operations one customer may run at once over all their sockets
    /// (`graphql.ws_max_operations_per_customer`); more are refused.
    pub ws_operations: KeyedLimit,
}

impl Quotas {
    pub fn new(settings: &Settings) -> Self {
        Self {
            db_connections: KeyedLimit::new(settings.database.max_connections_per_customer),
            ws_operations: KeyedLimit::new(settings.graphql.ws_max_operations_per_customer),
        }
    }
}

/// At most `limit` holders at once per key (a customer id). Keys nobody holds are
/// forgotten, so the map is as large as the set of customers active right now.
#[derive(Clone)]
pub struct KeyedLimit {
    limit: u32,
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// One of a key's slots; dropping it frees the slot.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    key: String,
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl KeyedLimit {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            slots: Arc::default(),
        }
    }

    /// How many holders one key may have.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn semaphore(&self, key: &str) -> Arc<Semaphore> {
        // The map is only touched briefly and never across an await, so a poisoned lock
        // (a panic elsewhere while holding it) left it consistent.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(usize::try_from(self.limit).unwrap_or(1))))
            .clone()
    }

    fn slot(&self, key: &str, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            key: key.to_owned(),
            slots: self.slots.clone(),
        }
    }

    /// A slot for `key` now, or `None` when all of its slots are held.
    pub fn try_acquire(&self, key: &str) -> Option<Slot> {
        let permit = self.semaphore(key).try_acquire_owned().ok()?;
        Some(self.slot(key, permit))
    }

    /// A slot for `key`, waiting for one to be freed if need be.
    pub async fn acquire(&self, key: &str) -> Slot {
        let semaphore = self.semaphore(key);
        // The semaphore is never closed, so acquiring only ever waits.
        let permit = loop {
            if let Ok(permit) = semaphore.clone().acquire_owned().await {
                break permit;
            }
        };
        self.slot(key, permit)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map still refers to it: no holder and nobody waiting.
        if slots
            .get(&self.key)
            .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
        {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedLimit;

    #[test]
    fn each_key_has_its_own_slots_and_idle_keys_are_forgotten() {
        let limit = KeyedLimit::new(2);
        let a1 = limit.try_acquire("a").expect("first");
        let a2 = limit.try_acquire("a").expect("second");
        assert!(limit.try_acquire("a").is_none(), "a third is refused");
        let b = limit.try_acquire("b").expect("another key is not affected");
        drop(a1);
        let a3 = limit.try_acquire("a").expect("a freed slot is reused");
        drop((a2, a3, b));
        assert!(limit.slots.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn acquire_waits_for_a_free_slot() {
        let limit = KeyedLimit::new(1);
        let held = limit.acquire("a").await;
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire("a").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        drop(waiting.await.unwrap());
        assert!(limit.slots.lock().unwrap().is_empty());
    }
}
