//! A model-based property test of the steps that decide without calling anyone
//! (`await_acceptance`, `finish_injection`, `follow_store`), fast and pure: the store acts
//! on the order in a random order (Okya's own rules decide which actions take, each a new
//! version), Okya's webhooks carry random versions of that history (late, reordered,
//! repeated, lost) and are applied as the order row applies them (newer version wins), and
//! the POS and the capture succeed or not. The steps that call upstreams are stood in for
//! by the model (the POS takes the ticket or refuses; a capture succeeds; a refund ends the
//! order as rejected or cancelled).
//!
//! What must hold: every status a step asks for is an allowed move from where the order
//! is (`OrderStatus::can_become`), a final status never changes, and once the newest
//! version has arrived (as reconciliation guarantees) the order shows what the store did.

use super::*;
use crate::domain::{CustomerId, IdempotencyKey, PaymentMethodId};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum StoreAction {
    Accept,
    Reject,
    Ready,
    Complete,
}

/// Okya's side of the order: `(version, approval, fulfilment)`, by the sandbox's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OkyaCopy {
    version: i64,
    approval: Approval,
    fulfilment: Fulfilment,
}

impl OkyaCopy {
    /// The store's action, when Okya allows it from here (a new version), else `None`.
    fn act(self, action: StoreAction) -> Option<OkyaCopy> {
        let (approval, fulfilment) = match (action, self.approval, self.fulfilment) {
            (StoreAction::Accept, Approval::NeedsApproval, _) => {
                (Approval::Approved, Fulfilment::InPreparation)
            }
            (StoreAction::Reject, Approval::NeedsApproval, _) => {
                (Approval::NotApproved, Fulfilment::Void)
            }
            (StoreAction::Ready, Approval::Approved, Fulfilment::InPreparation) => {
                (Approval::Approved, Fulfilment::ReadyForPickup)
            }
            (StoreAction::Complete, Approval::Approved, Fulfilment::ReadyForPickup) => {
                (Approval::Approved, Fulfilment::Completed)
            }
            _ => return None,
        };
        Some(OkyaCopy {
            version: self.version + 1,
            approval,
            fulfilment,
        })
    }
}

/// A paid order waiting for the store, as `record_payment` leaves it.
fn awaiting_acceptance(payment: PaymentStatus) -> Order {
    let request = CheckoutRequest {
        customer_id: CustomerId::from_upstream("cus_1".into()),
        cart_id: CartId::from_upstream("crt_1".into()),
        payment_method_id: PaymentMethodId::parse("pm_card_visa").expect("id"),
        voucher_id: None,
        idempotency_key: IdempotencyKey::parse("key-1").expect("key"),
    };
    let mut order = request.new_order("hash".into(), CaptureMode::Immediate, 1_000);
    order.step = Step::AwaitAcceptance;
    order.status = OrderStatus::AwaitingAcceptance;
    order.payment_status = Some(payment);
    order.okya_version = 1;
    order.okya_approval = Some(Approval::NeedsApproval);
    order.okya_fulfilment = Some(Fulfilment::Received);
    order
}

/// Runs the flow as the runner does, until it rests: pure steps for real, upstream steps
/// by the model. Every status asked for is checked against the allowed moves.
fn run(mut order: Order, pos_takes_it: bool) -> Result<Order, TestCaseError> {
    for _ in 0..MAX_STEPS_PER_RUN {
        let next = match order.step {
            Step::AwaitAcceptance => await_acceptance(order.clone()),
            Step::Done => follow_store(order.clone()),
            Step::Inject if pos_takes_it => {
                let mut ticketed = order.clone();
                ticketed.pos_ticket_id = Some("tkt_1".into());
                finish_injection(ticketed)
            }
            Step::Inject => {
                let mut refused = order.clone();
                fail_with(&mut refused, Failure::PosRefused, "offline");
                Ok(go(refused, Step::Recall).into())
            }
            Step::Capture => {
                let mut captured = order.clone();
                set_payment(&mut captured, PaymentStatus::Captured);
                Ok(in_preparation(captured).into())
            }
            Step::Recall => Ok(go(order.clone(), Step::Refund).into()),
            Step::Refund => {
                let ends = if failure_of(&order) == Some(Failure::Rejected) {
                    OrderStatus::Rejected
                } else {
                    OrderStatus::Cancelled
                };
                let mut refunded = order.clone();
                set_payment(&mut refunded, PaymentStatus::Refunded);
                Ok(go(refunded, Step::Done).showing(ends).then_rest().into())
            }
            other => return Err(TestCaseError::fail(format!("the model has no {other}"))),
        };
        match next {
            Ok(Next::Move(transition)) => {
                let Transition {
                    order: mut moved,
                    to,
                    status,
                    job: _,
                    then,
                } = *transition;
                if let Some(to_status) = status {
                    prop_assert!(
                        order.status.can_become(to_status),
                        "{} asked for {} -> {}",
                        order.step,
                        order.status,
                        to_status
                    );
                    moved.status = to_status;
                }
                prop_assert!(
                    !order.status.is_final() || moved.status == order.status,
                    "a final {} changed",
                    order.status
                );
                moved.step = to;
                order = moved;
                if then == Then::Rest {
                    return Ok(order);
                }
            }
            Ok(Next::Rest) => return Ok(order),
            Ok(Next::Again(_)) => return Err(TestCaseError::fail("a pure step asked Again")),
            Ok(Next::Retry(reason)) | Ok(Next::Attention(reason)) => {
                return Err(TestCaseError::fail(format!(
                    "{} gave up: {reason}",
                    order.step
                )));
            }
            Err(e) => return Err(TestCaseError::fail(format!("{} failed: {e}", order.step))),
        }
    }
    Err(TestCaseError::fail("the flow did not settle"))
}

fn store_action() -> impl Strategy<Value = StoreAction> {
    prop_oneof![
        3 => Just(StoreAction::Accept),
        1 => Just(StoreAction::Reject),
        2 => Just(StoreAction::Ready),
        2 => Just(StoreAction::Complete),
    ]
}

proptest! {
    #[test]
    fn any_delivery_of_the_stores_actions_keeps_the_status_legal_and_ends_where_the_store_is(
        actions in prop::collection::vec(store_action(), 0..8),
        deliveries in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        authorised in any::<bool>(),
        pos_takes_it in any::<bool>(),
    ) {
        // What the store did, as Okya's successive versions.
        let mut history = vec![OkyaCopy {
            version: 1,
            approval: Approval::NeedsApproval,
            fulfilment: Fulfilment::Received,
        }];
        for action in actions {
            let last = *history.last().expect("a first version");
            if let Some(next) = last.act(action) {
                history.push(next);
            }
        }
        let payment = if authorised { PaymentStatus::Authorized } else { PaymentStatus::Captured };
        let mut order = awaiting_acceptance(payment);
        let mut shown = vec![order.status];
        // Any versions in any order, repeats included; the newest always comes last, as
        // a redelivery or reconciliation brings it.
        let newest = *history.last().expect("a version");
        for copy in deliveries.iter().map(|i| *i.get(&history)).chain([newest]) {
            if copy.version > order.okya_version {
                order.okya_version = copy.version;
                order.okya_approval = Some(copy.approval);
                order.okya_fulfilment = Some(copy.fulfilment);
            }
            let before = order.status;
            order = run(order, pos_takes_it)?;
            prop_assert!(!before.is_final() || order.status == before, "final {} became {}", before, order.status);
            if shown.last() != Some(&order.status) {
                shown.push(order.status);
            }
        }
        let expected = match (newest.approval, newest.fulfilment, pos_takes_it) {
            (Approval::NeedsApproval, _, _) => OrderStatus::AwaitingAcceptance,
            (Approval::NotApproved, _, _) => OrderStatus::Rejected,
            (Approval::Approved, _, false) => OrderStatus::Cancelled,
            (Approval::Approved, Fulfilment::Completed, true) => OrderStatus::Completed,
            (Approval::Approved, Fulfilment::ReadyForPickup, true) => OrderStatus::ReadyForPickup,
            (Approval::Approved, _, true) => OrderStatus::InPreparation,
        };
        prop_assert_eq!(order.status, expected, "shown {:?} for {:?}", shown, history);
        // Money follows: kept only while the order is live or completed.
        let kept = matches!(order.payment_status, Some(PaymentStatus::Captured));
        let live = matches!(
            order.status,
            OrderStatus::InPreparation | OrderStatus::ReadyForPickup | OrderStatus::Completed
        );
        prop_assert!(kept == live || order.status == OrderStatus::AwaitingAcceptance,
            "{} with payment {:?}", order.status, order.payment_status);
    }
}
