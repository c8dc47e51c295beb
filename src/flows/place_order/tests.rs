//! The steps that decide without calling anyone, tested as the transitions they return.

use super::*;
use crate::domain::{CustomerId, IdempotencyKey, PaymentMethodId};

fn order() -> Order {
    let request = CheckoutRequest {
        customer_id: CustomerId::from_upstream("cus_1".into()),
        cart_id: CartId::from_upstream("crt_1".into()),
        payment_method_id: PaymentMethodId::parse("pm_card_visa").expect("id"),
        voucher_id: None,
        idempotency_key: IdempotencyKey::parse("key-1").expect("key"),
    };
    request.new_order("hash".into(), CaptureMode::Immediate, 1_000)
}

/// The transition a step returned: its step, status, job and whether the runner goes on.
fn moved(next: Result<Next, FlowError>) -> (Step, Option<OrderStatus>, Option<JobKind>, Then) {
    match next {
        Ok(Next::Move(t)) => (t.to, t.status, t.job, t.then),
        Ok(Next::Again(_)) => panic!("expected a move, got Again"),
        Ok(Next::Rest) => panic!("expected a move, got Rest"),
        Ok(Next::Retry(reason)) => panic!("expected a move, got Retry({reason})"),
        Ok(Next::Attention(reason)) => panic!("expected a move, got Attention({reason})"),
        Err(e) => panic!("expected a move, got {e}"),
    }
}

fn rests(next: Result<Next, FlowError>) -> bool {
    matches!(next, Ok(Next::Rest))
}

#[test]
fn a_new_checkout_starts_at_submit_awaiting_payment_and_unheld() {
    let order = order();
    assert_eq!(order.step, Step::Submit);
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
    assert_eq!(order.locked_until_ms, None);
    assert!(order.id.as_str().starts_with("ord_"));
}

#[test]
fn acceptance_waits_for_the_store_then_injects_or_refunds() {
    let mut waiting = order();
    waiting.okya_approval = Some(Approval::NeedsApproval);
    assert!(rests(await_acceptance(waiting)));
    assert!(rests(await_acceptance(order())));

    let mut accepted = order();
    accepted.okya_approval = Some(Approval::Approved);
    assert_eq!(
        moved(await_acceptance(accepted)),
        (Step::Inject, None, None, Then::RunOn)
    );

    let mut rejected = order();
    rejected.okya_approval = Some(Approval::NotApproved);
    let Ok(Next::Move(t)) = await_acceptance(rejected) else {
        panic!("a rejection moves on");
    };
    assert_eq!(t.to, Step::Refund);
    assert_eq!(failure_of(&t.order), Some(Failure::Rejected));
}

#[test]
fn an_injected_order_is_captured_first_or_goes_to_the_store_with_its_sessionm_job() {
    let mut authorised = order();
    authorised.payment_status = Some(PaymentStatus::Authorized);
    assert_eq!(
        moved(finish_injection(authorised)),
        (Step::Capture, None, None, Then::RunOn)
    );
    for payment in [Some(PaymentStatus::Captured), None] {
        let mut paid = order();
        paid.payment_status = payment;
        assert_eq!(
            moved(finish_injection(paid)),
            (
                Step::Done,
                Some(OrderStatus::InPreparation),
                Some(JobKind::SendToSessionm),
                Then::RunOn
            ),
            "payment {payment:?}"
        );
    }
    for impossible in [
        PaymentStatus::RequiresAction,
        PaymentStatus::Failed,
        PaymentStatus::Refunded,
        PaymentStatus::Cancelled,
    ] {
        let mut row = order();
        row.payment_status = Some(impossible);
        assert!(
            matches!(finish_injection(row), Err(FlowError::Corrupt(_))),
            "{impossible:?}"
        );
    }
}

#[test]
fn following_the_store_moves_one_status_at_a_time_and_rests_when_there() {
    let at = |status, fulfilment| {
        let mut row = order();
        row.step = Step::Done;
        row.status = status;
        row.okya_fulfilment = fulfilment;
        row
    };
    // Collected before the app saw "ready": ready first, then (next run) collected.
    assert_eq!(
        moved(follow_store(at(
            OrderStatus::InPreparation,
            Some(Fulfilment::Completed)
        ))),
        (
            Step::Done,
            Some(OrderStatus::ReadyForPickup),
            None,
            Then::RunOn
        )
    );
    assert_eq!(
        moved(follow_store(at(
            OrderStatus::ReadyForPickup,
            Some(Fulfilment::Completed)
        ))),
        (Step::Done, Some(OrderStatus::Completed), None, Then::Rest)
    );
    assert_eq!(
        moved(follow_store(at(
            OrderStatus::InPreparation,
            Some(Fulfilment::ReadyForPickup)
        ))),
        (
            Step::Done,
            Some(OrderStatus::ReadyForPickup),
            None,
            Then::RunOn
        )
    );
    for (status, fulfilment) in [
        (
            OrderStatus::ReadyForPickup,
            Some(Fulfilment::ReadyForPickup),
        ),
        (OrderStatus::Completed, Some(Fulfilment::Completed)),
        (OrderStatus::InPreparation, Some(Fulfilment::InPreparation)),
        (OrderStatus::InPreparation, Some(Fulfilment::Void)),
        (OrderStatus::Cancelled, Some(Fulfilment::Completed)),
        (OrderStatus::InPreparation, None),
    ] {
        assert!(
            rests(follow_store(at(status, fulfilment))),
            "{status:?} with {fulfilment:?}"
        );
    }
}

fn intent(status: &str) -> PaymentIntent {
    serde_json::from_value(serde_json::json!({
        "id": "pi_1",
        "status": status,
        "amount": 450,
        "currency": "usd",
    }))
    .expect("a PaymentIntent")
}

#[test]
fn an_intent_is_adopted_from_what_stripe_says_it_is() {
    for (status, expected) in [
        ("succeeded", (Step::RecordPayment, None, None, Then::RunOn)),
        (
            "requires_capture",
            (Step::RecordPayment, None, None, Then::RunOn),
        ),
        (
            "requires_action",
            (
                Step::AwaitAuthentication,
                Some(OrderStatus::AwaitingPayment),
                None,
                Then::Rest,
            ),
        ),
        (
            "processing",
            (
                Step::AwaitAuthentication,
                Some(OrderStatus::AwaitingPayment),
                None,
                Then::Rest,
            ),
        ),
        (
            "requires_payment_method",
            (Step::CancelOkya, None, None, Then::RunOn),
        ),
        ("canceled", (Step::CancelOkya, None, None, Then::RunOn)),
    ] {
        assert_eq!(
            moved(adopt_intent(order(), &intent(status))),
            expected,
            "{status}"
        );
    }
}
