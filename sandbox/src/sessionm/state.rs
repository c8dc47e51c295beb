//! The simulator's state, shared by both hosts: members, their offers, processed and
//! rejected transactions, and the idempotency records of both APIs.

use super::wire::{Amount, PhoneNumber, Reply, StatementEntry, UserOut, seconds};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Everything the simulator knows, behind one mutex.
#[derive(Default)]
pub(super) struct State {
    pub(super) users: Vec<User>,
    pub(super) offers: Vec<UserOffer>,
    pub(super) transactions: Vec<TransactionRecord>,
    pub(super) rejected: Vec<Rejected>,
    /// The last Discount object lock or redeem returned, per (user offer, transaction): a
    /// sent transaction must carry it unchanged.
    pub(super) discounts: HashMap<(String, String), Value>,
    /// POS `request_id` → its first answer, or pending while that is being produced.
    pub(super) requests: HashMap<String, RequestRecord>,
    pub(super) request_counts: BTreeMap<String, u64>,
    /// Core `Message-ID` → the answer it got and when.
    pub(super) messages: HashMap<String, CachedMessage>,
    pub(super) message_counts: BTreeMap<String, u64>,
    /// How long each new POS request stays "pending processing" before it is handled.
    pub(super) processing_delay_ms: u64,
    /// How long a queued transaction waits before it is processed.
    pub(super) transaction_delay_ms: u64,
    /// Lookups leave out the member's points, as a tenant without
    /// `enable_mpoints_info_in_customers_api` may: the app must not show 0.
    pub(super) omit_points: bool,
    next_id: u64,
}

/// Default wait before a queued transaction is processed: long enough that a test sees
/// it queued, short enough not to slow the suite.
pub(super) const DEFAULT_TRANSACTION_DELAY_MS: u64 = 50;

pub(super) struct User {
    pub(super) id: String,
    pub(super) external_id: Option<String>,
    pub(super) email: String,
    pub(super) first_name: Option<String>,
    pub(super) last_name: Option<String>,
    pub(super) opted_in: bool,
    pub(super) phone_numbers: Vec<PhoneNumber>,
    pub(super) points: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) statement: Vec<StatementEntry>,
}

impl User {
    pub(super) fn to_wire(&self) -> UserOut<'_> {
        UserOut {
            id: &self.id,
            external_id: self.external_id.as_deref(),
            email: &self.email,
            first_name: self.first_name.as_deref(),
            last_name: self.last_name.as_deref(),
            opted_in: self.opted_in,
            phone_numbers: &self.phone_numbers,
            available_points: self.points,
            tier: tier(self.points),
            created_at: seconds(self.created_at),
        }
    }
}

/// The sandbox program's tiers: Bronze < 100 ≤ Silver < 500 ≤ Gold.
pub(super) fn tier(points: i64) -> &'static str {
    match points {
        ..100 => "Bronze",
        100..500 => "Silver",
        _ => "Gold",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OfferKind {
    FreeItem,
    FixedAmount(Amount),
    Percentage(u32),
}

impl OfferKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            OfferKind::FreeItem => "FREE_ITEM",
            OfferKind::FixedAmount(_) => "FIXED_AMOUNT",
            OfferKind::Percentage(_) => "PERCENTAGE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum OfferState {
    Available,
    Locked { transaction_id: String },
    Redeemed { transaction_id: String },
}

pub(super) struct UserOffer {
    /// Global across members, so the offer alone names its member.
    pub(super) user_offer_id: String,
    pub(super) offer_id: &'static str,
    pub(super) user_id: String,
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) kind: OfferKind,
    /// A minimum spend: checked at lock and redeem, not at lookup (a lookup checks only
    /// catalog and store restrictions).
    pub(super) min_subtotal: Option<Amount>,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) state: OfferState,
    /// What lookups show instead of the real status or discount type: how a status or
    /// type SessionM adds later (one this client does not know) reaches the app.
    pub(super) shown_status: Option<String>,
    pub(super) shown_discount_type: Option<String>,
}

impl UserOffer {
    pub(super) fn expired(&self, now: DateTime<Utc>) -> bool {
        self.state == OfferState::Available && self.expires_at <= now
    }

    pub(super) fn status(&self, now: DateTime<Utc>) -> &'static str {
        match &self.state {
            OfferState::Locked { .. } => "LOCKED",
            OfferState::Redeemed { .. } => "REDEEMED",
            OfferState::Available if self.expired(now) => "EXPIRED",
            OfferState::Available => "AVAILABLE",
        }
    }

    pub(super) fn transaction_id(&self) -> Option<&str> {
        match &self.state {
            OfferState::Locked { transaction_id } | OfferState::Redeemed { transaction_id } => {
                Some(transaction_id)
            }
            OfferState::Available => None,
        }
    }
}

/// A processed transaction (its latest version).
pub(super) struct TransactionRecord {
    pub(super) transaction_id: String,
    pub(super) user_id: String,
    pub(super) total: Amount,
    pub(super) points: i64,
    pub(super) processed_at: DateTime<Utc>,
    /// How many versions were processed (a return resends the transaction).
    pub(super) versions: u32,
}

/// A transaction that failed processing, with why.
pub(super) struct Rejected {
    pub(super) transaction_id: String,
    pub(super) reason: String,
}

pub(super) enum RequestRecord {
    Pending,
    Done(Reply),
}

pub(super) struct CachedMessage {
    pub(super) at: DateTime<Utc>,
    pub(super) reply: Reply,
}

impl State {
    pub(super) fn new() -> Self {
        Self {
            transaction_delay_ms: DEFAULT_TRANSACTION_DELAY_MS,
            omit_points: false,
            ..Self::default()
        }
    }

    /// A fresh id with a readable prefix (`uo_000002`, `evt_000007`).
    pub(super) fn next(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:06}", self.next_id)
    }

    pub(super) fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub(super) fn user_by_external(&self, external_id: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.external_id.as_deref() == Some(external_id))
    }

    pub(super) fn offer(&self, user_offer_id: &str) -> Option<&UserOffer> {
        self.offers
            .iter()
            .find(|o| o.user_offer_id == user_offer_id)
    }

    pub(super) fn offer_mut(&mut self, user_offer_id: &str) -> Option<&mut UserOffer> {
        self.offers
            .iter_mut()
            .find(|o| o.user_offer_id == user_offer_id)
    }

    /// The four sandbox offers every new member starts with.
    pub(super) fn issue_welcome_offers(&mut self, user_id: &str, now: DateTime<Utc>) {
        let month = now + chrono::Duration::days(30);
        let templates = [
            (
                "offer_free_drink",
                "Free drink",
                "One item on us",
                OfferKind::FreeItem,
                None,
                month,
            ),
            (
                "offer_2_off",
                "$2 off",
                "$2.00 off an order of $4.00 or more",
                OfferKind::FixedAmount(Amount(200)),
                Some(Amount(400)),
                month,
            ),
            (
                "offer_20_pct",
                "20% off",
                "20% off your order",
                OfferKind::Percentage(20),
                None,
                month,
            ),
            (
                "offer_5_off_expired",
                "$5 off (expired)",
                "$5.00 off, expired yesterday",
                OfferKind::FixedAmount(Amount(500)),
                None,
                now - chrono::Duration::days(1),
            ),
        ];
        for (offer_id, name, description, kind, min_subtotal, expires_at) in templates {
            let user_offer_id = self.next("uo");
            self.offers.push(UserOffer {
                user_offer_id,
                offer_id,
                user_id: user_id.to_owned(),
                name,
                description,
                kind,
                min_subtotal,
                expires_at,
                state: OfferState::Available,
                shown_status: None,
                shown_discount_type: None,
            });
        }
    }
}
