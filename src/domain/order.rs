//! The order state machine: the statuses the app sees, which moves between them are
//! allowed, and the internal steps of the Place Order flow. Drawn in
//! `docs/order-state-machine.md`.

use std::fmt;

/// What the app sees. Moves only forward; the last four are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum OrderStatus {
    /// Only while the card needs 3-D Secure.
    #[sea_orm(string_value = "AWAITING_PAYMENT")]
    AwaitingPayment,
    /// Submitted and paid; the store has not accepted it yet.
    #[sea_orm(string_value = "AWAITING_ACCEPTANCE")]
    AwaitingAcceptance,
    /// Accepted by the store and injected into its POS.
    #[sea_orm(string_value = "IN_PREPARATION")]
    InPreparation,
    #[sea_orm(string_value = "READY_FOR_PICKUP")]
    ReadyForPickup,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "PAYMENT_FAILED")]
    PaymentFailed,
    /// The store declined it; the payment was refunded or released.
    #[sea_orm(string_value = "REJECTED")]
    Rejected,
    /// Recalled because the POS could not take it; the payment was refunded or released.
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

impl OrderStatus {
    /// Every status, in declaration order (derived, so a new variant cannot be missed).
    pub fn all() -> impl Iterator<Item = OrderStatus> {
        <OrderStatus as sea_orm::Iterable>::iter()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::AwaitingPayment => "AWAITING_PAYMENT",
            OrderStatus::AwaitingAcceptance => "AWAITING_ACCEPTANCE",
            OrderStatus::InPreparation => "IN_PREPARATION",
            OrderStatus::ReadyForPickup => "READY_FOR_PICKUP",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::PaymentFailed => "PAYMENT_FAILED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// Final statuses never change again.
    pub fn is_final(self) -> bool {
        self.successors().is_empty()
    }

    /// The statuses the order may move to from `self`: one exhaustive table, so a new
    /// status must be placed in it before the code compiles.
    pub fn successors(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            AwaitingPayment => &[AwaitingAcceptance, PaymentFailed],
            AwaitingAcceptance => &[InPreparation, Rejected, Cancelled],
            InPreparation => &[ReadyForPickup, Completed],
            ReadyForPickup => &[Completed],
            Completed | PaymentFailed | Rejected | Cancelled => &[],
        }
    }

    /// Whether the order may move from `self` to `next`. Everything else, including any
    /// move out of a final status and any move backwards, is refused.
    pub fn can_become(self, next: OrderStatus) -> bool {
        self.successors().contains(&next)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a Place Order flow stands: its recovery point. Each active step is one upstream
/// call under an idempotency key derived from the order and the step, so a step re-run
/// after a crash repeats nothing. Waiting steps need an outside event (a webhook, the
/// customer) or a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Step {
    /// Submit the cart to Okya as an order, and snapshot its lines.
    #[sea_orm(string_value = "submit")]
    Submit,
    /// Use Reward: SessionM locks the voucher and prices it; the discount goes on the Okya order.
    #[sea_orm(string_value = "discount")]
    Discount,
    /// Take the payment with Stripe.
    #[sea_orm(string_value = "charge")]
    Charge,
    /// Stripe refused our own request (a bad key, a malformed request): nothing was
    /// charged, and the customer may retry the same checkout; abandoned after the
    /// authentication timeout.
    #[sea_orm(string_value = "await_payment_retry")]
    AwaitPaymentRetry,
    /// Waiting for the customer's 3-D Secure, reported by Stripe's webhook.
    #[sea_orm(string_value = "await_authentication")]
    AwaitAuthentication,
    /// Save the payment details on the Okya order.
    #[sea_orm(string_value = "record_payment")]
    RecordPayment,
    /// Waiting for the store to accept or reject, reported by Okya's webhook.
    #[sea_orm(string_value = "await_acceptance")]
    AwaitAcceptance,
    /// Inject the accepted order into the Epoint POS.
    #[sea_orm(string_value = "inject")]
    Inject,
    /// Capture an authorisation once the POS has the order (capture on acceptance).
    #[sea_orm(string_value = "capture")]
    Capture,
    /// The POS refused: recall the order in Okya.
    #[sea_orm(string_value = "recall")]
    Recall,
    /// Give the money back: refund a capture, cancel an authorisation.
    #[sea_orm(string_value = "refund")]
    Refund,
    /// The payment failed: cancel the Okya order so no store sees it.
    #[sea_orm(string_value = "cancel_okya")]
    CancelOkya,
    /// Submission was refused; nothing was charged and the order is not shown.
    #[sea_orm(string_value = "invalid")]
    Invalid,
    /// The flow has nothing left to do but follow the store (ready, completed) or is final.
    #[sea_orm(string_value = "done")]
    Done,
}

/// What the flow runner does with an order at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// The runner performs it on its own (an upstream call), now or at `next_attempt_at`.
    Active,
    /// Waits for the customer (3-D Secure, a retried checkout) until a deadline, after
    /// which the sweeper runs it to give up.
    AwaitingCustomer,
    /// Waits for the store, through Okya's webhooks or reconciliation.
    AwaitingStore,
    /// Nothing left to do but follow the store's fulfilment, or nothing at all.
    Finished,
}

impl Step {
    /// Every step, in declaration order (derived, so a new variant cannot be missed).
    pub fn all() -> impl Iterator<Item = Step> {
        <Step as sea_orm::Iterable>::iter()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Submit => "submit",
            Step::Discount => "discount",
            Step::Charge => "charge",
            Step::AwaitPaymentRetry => "await_payment_retry",
            Step::AwaitAuthentication => "await_authentication",
            Step::RecordPayment => "record_payment",
            Step::AwaitAcceptance => "await_acceptance",
            Step::Inject => "inject",
            Step::Capture => "capture",
            Step::Recall => "recall",
            Step::Refund => "refund",
            Step::CancelOkya => "cancel_okya",
            Step::Invalid => "invalid",
            Step::Done => "done",
        }
    }

    /// How the runner treats the step. Exhaustive: a new step must say what it is.
    pub fn kind(self) -> StepKind {
        match self {
            Step::Submit
            | Step::Discount
            | Step::Charge
            | Step::RecordPayment
            | Step::Inject
            | Step::Capture
            | Step::Recall
            | Step::Refund
            | Step::CancelOkya => StepKind::Active,
            Step::AwaitPaymentRetry | Step::AwaitAuthentication => StepKind::AwaitingCustomer,
            Step::AwaitAcceptance => StepKind::AwaitingStore,
            Step::Invalid | Step::Done => StepKind::Finished,
        }
    }

    /// True for steps the flow runner performs on its own, as opposed to waiting.
    pub fn is_active(self) -> bool {
        self.kind() == StepKind::Active
    }

    /// The steps of one kind, for the sweeper's query.
    pub fn of_kind(kind: StepKind) -> Vec<Step> {
        Self::all().filter(|s| s.kind() == kind).collect()
    }
}

/// The state of an order's payment as the app sees it (`Payment.status`), kept in step
/// with Stripe's PaymentIntent: stored by name in `orders.payment_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum PaymentStatus {
    /// 3-D Secure (or another customer action) is pending.
    #[sea_orm(string_value = "REQUIRES_ACTION")]
    RequiresAction,
    /// Authorised and held, not yet captured (capture on acceptance).
    #[sea_orm(string_value = "AUTHORIZED")]
    Authorized,
    /// Captured: the money was taken (also a free order covered by a voucher).
    #[sea_orm(string_value = "CAPTURED")]
    Captured,
    /// Declined or otherwise not taken; nothing to give back.
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Captured, then given back in full.
    #[sea_orm(string_value = "REFUNDED")]
    Refunded,
    /// An authorisation released (or an intent cancelled) before capture.
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

impl PaymentStatus {
    pub fn all() -> impl Iterator<Item = PaymentStatus> {
        <PaymentStatus as sea_orm::Iterable>::iter()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresAction => "REQUIRES_ACTION",
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Cancelled => "CANCELLED",
        }
    }

    /// Whether money is taken or held that a compensation must give back.
    pub fn holds_money(self) -> bool {
        match self {
            PaymentStatus::Authorized | PaymentStatus::Captured => true,
            PaymentStatus::RequiresAction
            | PaymentStatus::Failed
            | PaymentStatus::Refunded
            | PaymentStatus::Cancelled => false,
        }
    }
}

/// When a card is charged.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    serde::Deserialize,
    sea_orm::EnumIter,
    sea_orm::DeriveActiveEnum,
)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Charged at checkout; refunded if the store rejects or the POS refuses.
    #[sea_orm(string_value = "immediate")]
    Immediate,
    /// Authorised at checkout, captured once the POS has the order, released otherwise, so
    /// no refund fees are paid.
    #[sea_orm(string_value = "on_acceptance")]
    OnAcceptance,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Immediate => "immediate",
            CaptureMode::OnAcceptance => "on_acceptance",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Okya's `approval` of an order (`docs/upstreams/okya.md`): the store's decision. Our
/// order row records it by the same names, through sea-orm.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    sea_orm::EnumIter,
    sea_orm::DeriveActiveEnum,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Approval {
    #[sea_orm(string_value = "NEEDS_APPROVAL")]
    NeedsApproval,
    #[sea_orm(string_value = "APPROVED")]
    Approved,
    #[sea_orm(string_value = "NOT_APPROVED")]
    NotApproved,
}

/// Okya's `fulfilment` of an order: how far the store is with it. Our order row records
/// it by the same names, through sea-orm.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    sea_orm::EnumIter,
    sea_orm::DeriveActiveEnum,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Fulfilment {
    #[sea_orm(string_value = "RECEIVED")]
    Received,
    #[sea_orm(string_value = "IN_PREPARATION")]
    InPreparation,
    #[sea_orm(string_value = "READY_FOR_PICKUP")]
    ReadyForPickup,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "VOID")]
    Void,
}

/// What our order row keeps of Okya's copy of the order; a `version` is applied only when
/// newer than the one held, so duplicated or reordered webhooks never move it backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OkyaState {
    pub version: i64,
    pub approval: Approval,
    pub fulfilment: Fulfilment,
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::{self, *};
    use super::Step;

    #[test]
    fn the_happy_path_moves_forward_one_step_at_a_time() {
        let path = [
            AwaitingPayment,
            AwaitingAcceptance,
            InPreparation,
            ReadyForPickup,
            Completed,
        ];
        for pair in path.windows(2) {
            assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
        }
        assert!(
            InPreparation.can_become(Completed),
            "a store may skip ready"
        );
    }

    #[test]
    fn every_failure_has_exactly_its_allowed_origins() {
        assert!(AwaitingPayment.can_become(PaymentFailed));
        assert!(AwaitingAcceptance.can_become(Rejected));
        assert!(AwaitingAcceptance.can_become(Cancelled));
        for from in [InPreparation, ReadyForPickup] {
            for to in [PaymentFailed, Rejected, Cancelled] {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
        assert!(
            !AwaitingAcceptance.can_become(PaymentFailed),
            "a paid order cannot fail payment"
        );
    }

    #[test]
    fn nothing_moves_backwards_or_out_of_a_final_status() {
        let all: Vec<OrderStatus> = OrderStatus::all().collect();
        let rank = |s: OrderStatus| all.iter().position(|x| *x == s).unwrap_or(0);
        for &from in &all {
            for &to in &all {
                if from.is_final() || to == from {
                    assert!(!from.can_become(to), "{from} -> {to}");
                }
                if !to.is_final() && !from.is_final() && rank(to) < rank(from) {
                    assert!(!from.can_become(to), "backwards {from} -> {to}");
                }
            }
        }
    }

    /// The drawings (the doc's mermaid blocks, not its prose) name `word` as a whole word.
    fn drawn(word: &str) -> bool {
        let doc = include_str!("../../docs/order-state-machine.md");
        let drawings = doc
            .split("```mermaid")
            .skip(1)
            .filter_map(|block| block.split("```").next());
        let part_of_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        drawings.into_iter().any(|drawing| {
            drawing.match_indices(word).any(|(at, _)| {
                let before = drawing[..at].chars().next_back();
                let after = drawing[at + word.len()..].chars().next();
                !before.is_some_and(part_of_word) && !after.is_some_and(part_of_word)
            })
        })
    }

    #[test]
    fn the_drawing_names_every_step_and_status() {
        for step in Step::all() {
            assert!(drawn(step.as_str()), "step {} is not drawn", step.as_str());
        }
        for status in OrderStatus::all() {
            assert!(drawn(status.as_str()), "status {status} is not drawn");
        }
        assert!(!drawn("await"), "a word inside another is not a match");
    }

    /// `as_str` (logs, docs, the SDL) and the name sea-orm stores must be one name.
    #[test]
    fn the_stored_names_are_the_names() {
        use sea_orm::ActiveEnum;
        for status in OrderStatus::all() {
            assert_eq!(status.to_value(), status.as_str());
            assert_eq!(
                OrderStatus::try_from_value(&status.to_value()).ok(),
                Some(status)
            );
        }
        for step in Step::all() {
            assert_eq!(step.to_value(), step.as_str());
        }
        for payment in super::PaymentStatus::all() {
            assert_eq!(payment.to_value(), payment.as_str());
        }
        for mode in [
            super::CaptureMode::Immediate,
            super::CaptureMode::OnAcceptance,
        ] {
            assert_eq!(mode.to_value(), mode.as_str());
        }
        assert!(OrderStatus::try_from_value(&"SHIPPED".to_owned()).is_err());
        assert!(
            Step::Charge.is_active()
                && Step::Discount.is_active()
                && !Step::AwaitAcceptance.is_active()
                && !Step::Done.is_active()
        );
    }
}
