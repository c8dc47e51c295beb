//! Stripe's test payment methods, and how each behaves when confirmed.

use super::model::CardFailure;

#[derive(Clone, Copy)]
pub(super) enum Behaviour {
    Approve,
    Decline(CardFailure),
    Authenticate,
}

pub(super) struct TestCard {
    token: &'static str,
    pub(super) brand: &'static str,
    pub(super) last4: &'static str,
    pub(super) funding: &'static str,
    pub(super) behaviour: Behaviour,
}

const fn declined(
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
) -> Behaviour {
    Behaviour::Decline(CardFailure {
        code,
        decline_code,
        message,
    })
}

static CARDS: &[TestCard] = &[
    TestCard {
        token: "pm_card_visa",
        brand: "visa",
        last4: "4242",
        funding: "credit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_visa_debit",
        brand: "visa",
        last4: "5556",
        funding: "debit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_mastercard",
        brand: "mastercard",
        last4: "4444",
        funding: "credit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_amex",
        brand: "amex",
        last4: "8431",
        funding: "credit",
        behaviour: Behaviour::Approve,
    },
    TestCard {
        token: "pm_card_chargeDeclined",
        brand: "visa",
        last4: "0002",
        funding: "credit",
        behaviour: declined(
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        ),
    },
    TestCard {
        token: "pm_card_chargeDeclinedInsufficientFunds",
        brand: "visa",
        last4: "9995",
        funding: "credit",
        behaviour: declined(
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
    },
    TestCard {
        token: "pm_card_chargeDeclinedFraudulent",
        brand: "visa",
        last4: "0019",
        funding: "credit",
        behaviour: declined("card_declined", "fraudulent", "Your card was declined."),
    },
    TestCard {
        token: "pm_card_chargeDeclinedExpiredCard",
        brand: "visa",
        last4: "0069",
        funding: "credit",
        behaviour: declined("expired_card", "expired_card", "Your card has expired."),
    },
    TestCard {
        token: "pm_card_chargeDeclinedIncorrectCvc",
        brand: "visa",
        last4: "0127",
        funding: "credit",
        behaviour: declined(
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
    },
    TestCard {
        token: "pm_card_authenticationRequired",
        brand: "visa",
        last4: "3184",
        funding: "credit",
        behaviour: Behaviour::Authenticate,
    },
];

pub(super) fn test_card(token: &str) -> Option<&'static TestCard> {
    CARDS.iter().find(|card| card.token == token)
}
