//! The upstream routes the tests arm faults on and read the call logs of, each with the
//! simulator that serves it and named as that simulator's call log names it.

use crate::helpers::Sim;

/// One route of one simulator: `POST /v1/orders` of Okya, `POST /api/2.0/lock` of SessionM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub sim: Sim,
    /// Method and path template, as the call log and the faults name the route.
    pub name: &'static str,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const fn okya(name: &'static str) -> Route {
    Route {
        sim: Sim::Okya,
        name,
    }
}

const fn stripe(name: &'static str) -> Route {
    Route {
        sim: Sim::Stripe,
        name,
    }
}

const fn epoint(name: &'static str) -> Route {
    Route {
        sim: Sim::Epoint,
        name,
    }
}

const fn sessionm(name: &'static str) -> Route {
    Route {
        sim: Sim::Sessionm,
        name,
    }
}

// Place Order and Use Reward.

/// Okya: submit the cart as an order.
pub const ORDERS: Route = okya("POST /v1/orders");
/// Okya: put a voucher's discount on the order.
pub const ADJUST: Route = okya("POST /v1/orders/{order_id}/adjustments");
/// Okya: record the payment on the order.
pub const PAYMENTS: Route = okya("POST /v1/orders/{order_id}/payments");
/// Okya: cancel an order no store may see.
pub const CANCEL: Route = okya("POST /v1/orders/{order_id}/cancel");
/// Okya: recall an accepted order the POS refused.
pub const RECALL: Route = okya("POST /v1/orders/{order_id}/recall");
/// Stripe: charge (or authorise) the order.
pub const INTENTS: Route = stripe("POST /v1/payment_intents");
/// Stripe: find an order's intent by its metadata.
pub const INTENT_SEARCH: Route = stripe("GET /v1/payment_intents/search");
/// Stripe: capture an authorisation.
pub const CAPTURE: Route = stripe("POST /v1/payment_intents/{id}/capture");
/// Stripe: release an authorisation.
pub const RELEASE: Route = stripe("POST /v1/payment_intents/{id}/cancel");
/// Stripe: refund a charge.
pub const REFUNDS: Route = stripe("POST /v1/refunds");
/// Epoint: inject the accepted order into the POS.
pub const INJECT: Route = epoint("POST /v1/locations/{location_id}/orders");
/// Epoint: look a ticket up by our order id.
pub const FIND_TICKET: Route = epoint("GET /v1/locations/{location_id}/orders/{external_id}");
/// SessionM: read the member's wallet.
pub const LOOKUP: Route = sessionm("POST /api/2.0/lookup");
/// SessionM: lock a voucher for an order.
pub const LOCK: Route = sessionm("POST /api/2.0/lock");
/// SessionM: release a voucher's lock.
pub const UNLOCK: Route = sessionm("POST /api/2.0/unlock");
/// SessionM: send the sale, which credits the points and redeems the voucher.
pub const SALE: Route = sessionm("POST /api/2.0/send_transaction");

// Accounts and carts.

/// Okya: create an account.
pub const CREATE_ACCOUNT: Route = okya("POST /auth/v1/accounts");
/// Okya: send a one-time code.
pub const SEND_OTP: Route = okya("POST /auth/v1/otp");
/// Okya: check a one-time code.
pub const VERIFY_OTP: Route = okya("POST /auth/v1/otp/verify");
/// SessionM: create a member.
pub const CREATE_MEMBER: Route = sessionm("POST /priv/v1/apps/{api_key}/users");
/// SessionM: find a member by our customer id.
pub const FIND_MEMBER: Route = sessionm("GET /priv/v1/apps/{api_key}/external/users/{external_id}");
/// Okya: create a cart.
pub const CARTS: Route = okya("POST /v1/carts");
/// Okya: add lines to a cart.
pub const CART_LINES: Route = okya("POST /v1/carts/{cart_id}/lines");
