//! Why an order failed, or waits on its customer: chosen where it happens (the flow knows
//! which upstream said what), stored by name in `orders.failure_code`, and mapped to what
//! the app sees by one exhaustive `match` in `graphql/orders.rs`. The upstreams' own codes
//! are translated next to the client that receives them.

use super::OrderStatus;

/// An order's failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter)]
pub enum Failure {
    /// Okya: the store is not taking orders.
    StoreClosed,
    /// Okya: the cart has no lines.
    CartEmpty,
    /// Okya: a product in the cart is sold out or gone.
    ProductUnavailable,
    /// Okya: the cart was ordered already.
    CartAlreadyOrdered,
    /// Okya: no such cart (or store).
    CartNotFound,
    /// Okya refused the order for a reason that is not the cart's.
    OrderNotAccepted,
    /// Stripe: the card was declined (Stripe's message is kept with it).
    CardDeclined,
    /// Stripe: 3-D Secure failed.
    AuthenticationFailed,
    /// The customer never finished 3-D Secure.
    AuthenticationAbandoned,
    /// Stripe refused our own request (key, account, parameters): nothing was charged and
    /// the same checkout may be sent again.
    PaymentUnavailable,
    /// Stripe: the payment failed for another reason.
    PaymentFailed,
    /// An upstream refused our own request outside payments (Okya, SessionM): nothing
    /// was charged; the order was not placed.
    ServiceUnavailable,
    /// Okya would not record our payment; it was given back.
    NotRecorded,
    /// The store declined the order.
    Rejected,
    /// The authorisation was cancelled or lapsed before it could be captured.
    AuthorizationLost,
    /// Stripe refused to capture a held authorisation.
    CaptureFailed,
    /// The POS could not be reached within the bounded tries; the order was recalled.
    PosUnreachable,
    /// The POS refused the order; it was recalled.
    PosRefused,
    /// SessionM: the voucher has expired.
    VoucherExpired,
    /// SessionM: the voucher was used already.
    VoucherAlreadyUsed,
    /// SessionM: another order holds the voucher.
    VoucherInUse,
    /// SessionM: no such voucher for this member.
    VoucherNotFound,
    /// SessionM: the voucher gives nothing on this order (or cannot be used by this app).
    VoucherNotApplicable,
}

impl Failure {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Failure::StoreClosed => "store_closed",
            Failure::CartEmpty => "cart_empty",
            Failure::ProductUnavailable => "product_unavailable",
            Failure::CartAlreadyOrdered => "cart_already_ordered",
            Failure::CartNotFound => "cart_not_found",
            Failure::OrderNotAccepted => "order_not_accepted",
            Failure::CardDeclined => "card_declined",
            Failure::AuthenticationFailed => "authentication_failed",
            Failure::AuthenticationAbandoned => "authentication_abandoned",
            Failure::PaymentUnavailable => "payment_unavailable",
            Failure::PaymentFailed => "payment_failed",
            Failure::ServiceUnavailable => "service_unavailable",
            Failure::NotRecorded => "order_not_recorded",
            Failure::Rejected => "rejected",
            Failure::AuthorizationLost => "authorization_lost",
            Failure::CaptureFailed => "capture_failed",
            Failure::PosUnreachable => "pos_unreachable",
            Failure::PosRefused => "pos_refused",
            Failure::VoucherExpired => "voucher_expired",
            Failure::VoucherAlreadyUsed => "voucher_already_used",
            Failure::VoucherInUse => "voucher_in_use",
            Failure::VoucherNotFound => "voucher_not_found",
            Failure::VoucherNotApplicable => "voucher_not_applicable",
        }
    }

    /// The status an order with this failure ends in once its compensation is done, or
    /// `None` for an order refused before it was placed (never shown to the app). One
    /// exhaustive mapping: a failure added later does not compile until it is placed here.
    pub const fn final_status(self) -> Option<OrderStatus> {
        match self {
            Failure::StoreClosed
            | Failure::CartEmpty
            | Failure::ProductUnavailable
            | Failure::CartAlreadyOrdered
            | Failure::CartNotFound
            | Failure::OrderNotAccepted
            | Failure::ServiceUnavailable
            | Failure::VoucherExpired
            | Failure::VoucherAlreadyUsed
            | Failure::VoucherInUse
            | Failure::VoucherNotFound
            | Failure::VoucherNotApplicable => None,
            Failure::CardDeclined
            | Failure::AuthenticationFailed
            | Failure::AuthenticationAbandoned
            | Failure::PaymentUnavailable
            | Failure::PaymentFailed
            | Failure::NotRecorded => Some(OrderStatus::PaymentFailed),
            Failure::Rejected => Some(OrderStatus::Rejected),
            Failure::AuthorizationLost
            | Failure::CaptureFailed
            | Failure::PosUnreachable
            | Failure::PosRefused => Some(OrderStatus::Cancelled),
        }
    }

    /// A stored name, including those rows written before this enum held the upstreams'
    /// own codes (`offer_expired`, Stripe's decline codes, …).
    pub fn parse(raw: &str) -> Option<Self> {
        if let Some(failure) =
            <Failure as strum::IntoEnumIterator>::iter().find(|f| f.as_str() == raw)
        {
            return Some(failure);
        }
        Some(match raw {
            "product_not_found" => Failure::ProductUnavailable,
            "store_not_found" => Failure::CartNotFound,
            "expired_card"
            | "incorrect_cvc"
            | "incorrect_number"
            | "insufficient_funds"
            | "processing_error"
            | "payment_method_invalid" => Failure::CardDeclined,
            "payment_intent_authentication_failure" => Failure::AuthenticationFailed,
            "offer_expired" => Failure::VoucherExpired,
            "offer_redeemed" => Failure::VoucherAlreadyUsed,
            "offer_locked" => Failure::VoucherInUse,
            "offer_not_found" | "user_not_found" => Failure::VoucherNotFound,
            "offer_not_applicable" | "voucher_unavailable" => Failure::VoucherNotApplicable,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Failure;

    #[test]
    fn every_failure_round_trips_and_old_rows_still_read() {
        for failure in <Failure as strum::IntoEnumIterator>::iter() {
            assert_eq!(Failure::parse(failure.as_str()), Some(failure));
        }
        assert_eq!(Failure::parse("offer_locked"), Some(Failure::VoucherInUse));
        assert_eq!(
            Failure::parse("insufficient_funds"),
            Some(Failure::CardDeclined)
        );
        assert_eq!(Failure::parse("something_else"), None);
    }

    #[test]
    fn failures_end_in_the_status_the_app_expects() {
        use super::OrderStatus;
        assert_eq!(
            Failure::Rejected.final_status(),
            Some(OrderStatus::Rejected)
        );
        assert_eq!(
            Failure::PosRefused.final_status(),
            Some(OrderStatus::Cancelled)
        );
        assert_eq!(
            Failure::CardDeclined.final_status(),
            Some(OrderStatus::PaymentFailed)
        );
        assert_eq!(
            Failure::NotRecorded.final_status(),
            Some(OrderStatus::PaymentFailed)
        );
        assert_eq!(
            Failure::VoucherInUse.final_status(),
            None,
            "never placed, never shown"
        );
    }
}
