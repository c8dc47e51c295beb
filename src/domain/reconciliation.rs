//! What reconciliation can find (see `flows::reconcile`, which finds and repairs), and
//! the counts of what it handled, kept with the shared state for `/readyz`.

use super::{OrderId, OrderStatus};
use std::sync::atomic::{AtomicU64, Ordering};

/// Money an intent holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Captured and not yet refunded, in minor units.
    Captured { refundable: i64, refunded: i64 },
    /// Authorised, not captured: cancelling the intent releases it.
    Authorised,
}

/// Something an upstream holds that our orders do not account for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Okya's copy of an open order is at `version`, newer than ours (now recorded).
    OkyaChangeMissed { order_id: OrderId, version: i64 },
    /// The intent holds money and `order_id` (from its metadata) names no order, or an
    /// order whose payment is another intent.
    ChargeWithoutOrder {
        intent_id: String,
        order_id: Option<OrderId>,
        held: Held,
    },
    /// The intent holds money, and its order is final (`status`) with its flow finished.
    PaidAfterGivingUp {
        intent_id: String,
        order_id: OrderId,
        status: OrderStatus,
        held: Held,
    },
    /// An authorisation `age_secs` old whose order still waits for the store.
    AuthorisationLapsing {
        intent_id: String,
        order_id: OrderId,
        age_secs: i64,
    },
}

/// Findings repaired or handed over since start, by kind, for `/readyz`.
#[derive(Debug, Default)]
pub struct Counts {
    okya_change_missed: AtomicU64,
    charge_without_order: AtomicU64,
    paid_after_giving_up: AtomicU64,
    authorisation_lapsing: AtomicU64,
}

impl Counts {
    fn counter(&self, finding: &Finding) -> &AtomicU64 {
        match finding {
            Finding::OkyaChangeMissed { .. } => &self.okya_change_missed,
            Finding::ChargeWithoutOrder { .. } => &self.charge_without_order,
            Finding::PaidAfterGivingUp { .. } => &self.paid_after_giving_up,
            Finding::AuthorisationLapsing { .. } => &self.authorisation_lapsing,
        }
    }

    /// Counts one handled finding.
    pub fn count(&self, finding: &Finding) {
        self.counter(finding).fetch_add(1, Ordering::Relaxed);
    }

    /// The counts as `/readyz` shows them.
    pub fn to_json(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "okya_change_missed": n(&self.okya_change_missed),
            "charge_without_order": n(&self.charge_without_order),
            "paid_after_giving_up": n(&self.paid_after_giving_up),
            "authorisation_lapsing": n(&self.authorisation_lapsing),
        })
    }
}
