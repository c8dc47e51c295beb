//! The Okya simulator's own wire types, written from `docs/upstreams/okya.md` and never
//! from the client in cbtl-bff, so that a change in the client cannot quietly change what
//! the simulator accepts or answers. `tests/fixtures/okya/` holds the contract's examples;
//! the tests at the end of this file read every one of them.
//!
//! Field order follows the contract's examples; key order is not significant on the wire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// Part 1: catalogue and carts
// ---------------------------------------------------------------------------------------

/// A money object: `{"amount": <integer minor units>, "currency": "USD"}`. No floats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMoney {
    /// Minor units (cents).
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// `GET /v1/stores`: a store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Store {
    /// `str_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Street address, one line.
    pub address: String,
    /// Whether the store takes orders now; carts cannot be created or changed otherwise.
    pub is_open: bool,
    /// Every cart and order at the store is in this currency.
    pub currency: String,
    /// Sales tax in basis points of the taxable amount (`1025` = 10.25 %).
    pub tax_rate_bps: i64,
    /// The store's menu, in display order.
    pub product_ids: Vec<String>,
}

/// `GET /v1/products`: a product with its modifier groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Product {
    /// `prd_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// One sentence for the menu.
    pub description: String,
    /// Menu section, e.g. `Espresso`.
    pub category: String,
    /// Base price, before options.
    pub price: WireMoney,
    /// `false` when sold out.
    pub available: bool,
    /// Choices, in display order.
    pub modifier_groups: Vec<ModifierGroup>,
}

/// A choice on a product, e.g. Size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModifierGroup {
    /// `grp_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Fewest options a line must choose (1 makes the choice required).
    pub min_selections: u32,
    /// Most options a line may choose.
    pub max_selections: u32,
    /// The options, in display order.
    pub options: Vec<ModifierOption>,
}

/// One option of a group, e.g. Oat milk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModifierOption {
    /// `opt_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Added to the unit price when chosen.
    pub price_delta: WireMoney,
    /// `false` when sold out.
    pub available: bool,
}

/// A cart, as every cart route answers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cart {
    /// `crt_…`.
    pub id: String,
    /// The store it orders from.
    pub store_id: String,
    /// Echoed from the create request; `null` when none was sent.
    pub customer_ref: Option<String>,
    /// The store's currency.
    pub currency: String,
    /// In the order they were added.
    pub lines: Vec<CartLine>,
    /// Σ `line_total`.
    pub subtotal: WireMoney,
    /// Always 0 on carts.
    pub discount: WireMoney,
    /// The store's rate on `subtotal − discount`, half away from zero.
    pub tax: WireMoney,
    /// `subtotal − discount + tax`.
    pub total: WireMoney,
    /// When the cart last changed.
    pub updated_at: DateTime<Utc>,
}

/// A line of a cart (and of an order, which copies them).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CartLine {
    /// `ln_…`.
    pub id: String,
    /// The product.
    pub product_id: String,
    /// 1–99.
    pub quantity: u32,
    /// Sorted, so two lines with the same options in another order are one line.
    pub modifier_option_ids: Vec<String>,
    /// Product price plus the options' deltas, fixed when the line was created.
    pub unit_price: WireMoney,
    /// `unit_price × quantity`.
    pub line_total: WireMoney,
}

/// The body of `POST /v1/carts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateCart {
    /// The store to order from.
    pub store_id: String,
    /// Optional; echoed back on the cart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<String>,
}

/// A line to add: `POST /v1/carts/{id}/lines`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewLine {
    /// The product.
    pub product_id: String,
    /// 1–99 (merged lines too).
    pub quantity: u32,
    /// May be omitted, meaning none; omitted and `[]` are the same request.
    #[serde(default)]
    pub modifier_option_ids: Vec<String>,
}

/// The body of `POST /v1/carts/{id}/lines`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddLines {
    /// Added in order, all or none.
    pub lines: Vec<NewLine>,
}

/// A quantity to set: `PATCH /v1/carts/{id}/lines`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LineQuantity {
    /// The line.
    pub line_id: String,
    /// 1–99; set, not added.
    pub quantity: u32,
}

/// The body of `PATCH /v1/carts/{id}/lines`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpdateLines {
    /// Applied in order; the last entry for a line wins.
    pub lines: Vec<LineQuantity>,
}

/// The body of `POST /v1/carts/{id}/lines/remove`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveLines {
    /// Each must name a line still present.
    pub line_ids: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Part 2: orders and the webhook
// ---------------------------------------------------------------------------------------

/// An order's `status`: whether it is live. `COMPLETED` and `CANCELED` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    /// Live.
    Open,
    /// Picked up.
    Completed,
    /// Cancelled, recalled or rejected.
    Canceled,
}

/// An order's `approval`: the store's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Approval {
    /// Not decided yet.
    NeedsApproval,
    /// Accepted.
    Approved,
    /// Rejected.
    NotApproved,
}

/// An order's `fulfilment`: how far the store is with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Fulfilment {
    /// Submitted.
    Received,
    /// Accepted and being made.
    InPreparation,
    /// Waiting at the counter.
    ReadyForPickup,
    /// Collected.
    Completed,
    /// Cancelled, recalled or rejected.
    Void,
}

/// The recorded payment's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentRecordStatus {
    /// Held on the card (manual capture).
    Authorized,
    /// Taken.
    Captured,
}

/// `cancellation.kind`: why an order is `CANCELED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationKind {
    /// The partner cancelled it before acceptance.
    Cancelled,
    /// The partner recalled it after acceptance.
    Recalled,
    /// The store rejected it.
    Rejected,
}

/// An order, as every order route and the `order.updated` webhook carry it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    /// `ord_…`.
    pub id: String,
    /// The short number the barista calls out, per store.
    pub number: String,
    /// The cart it was submitted from.
    pub cart_id: String,
    /// The store.
    pub store_id: String,
    /// The customer's Okya Auth account id.
    pub customer_ref: String,
    /// Live or final.
    pub status: OrderState,
    /// The store's decision.
    pub approval: Approval,
    /// How far the store is.
    pub fulfilment: Fulfilment,
    /// The store's currency.
    pub currency: String,
    /// Copied from the cart; never repriced.
    pub lines: Vec<CartLine>,
    /// Copied from the cart.
    pub subtotal: WireMoney,
    /// Σ `adjustments[].amount`.
    pub discount: WireMoney,
    /// Recomputed after every adjustment.
    pub tax: WireMoney,
    /// `subtotal − discount + tax`.
    pub total: WireMoney,
    /// Discounts applied after submission.
    pub adjustments: Vec<Adjustment>,
    /// What the partner recorded, or `null`.
    pub payment: Option<PaymentRecord>,
    /// Why it is `CANCELED`, or `null`.
    pub cancellation: Option<Cancellation>,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
    /// 1, then + 1 on every change; newer wins.
    pub version: i64,
}

/// A discount on an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// `adj_…`.
    pub id: String,
    /// `sessionm`.
    pub source: String,
    /// The partner's reference; idempotent on it.
    pub reference: String,
    /// Shown to the store.
    pub description: String,
    /// Positive, in the order's currency.
    pub amount: WireMoney,
    /// When it was applied.
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /v1/orders/{id}/adjustments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAdjustment {
    /// `sessionm`, the only source.
    pub source: String,
    /// 1–128 characters.
    pub reference: String,
    /// 1–200 characters.
    pub description: String,
    /// The discount, positive.
    pub amount: WireMoney,
}

/// The card a payment was taken from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// e.g. `visa`, 1–32 characters.
    pub brand: String,
    /// Four digits.
    pub last4: String,
}

/// The payment recorded on an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// `stripe` or `voucher`.
    pub provider: String,
    /// The payment's id at the provider.
    pub reference: String,
    /// The order's total.
    pub amount: WireMoney,
    /// Authorised or captured.
    pub status: PaymentRecordStatus,
    /// The first call's card, if it sent one.
    pub card: Option<Card>,
    /// When the first call recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// The body of `POST /v1/orders/{id}/payments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPayment {
    /// `stripe`, or `voucher` for an order a reward made free (amount 0).
    pub provider: String,
    /// 1–255 characters, e.g. a PaymentIntent id.
    pub reference: String,
    /// Must equal the order's `total`.
    pub amount: WireMoney,
    /// Authorised or captured.
    pub status: PaymentRecordStatus,
    /// Optional (absent or `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
}

/// `cancellation`: why a `CANCELED` order is void.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// Cancelled, recalled or rejected.
    pub kind: CancellationKind,
    /// The first reason given.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The body of `POST /v1/orders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateOrder {
    /// 1–128 characters.
    pub cart_id: String,
    /// The customer's Okya Auth account id, 1–128 characters.
    pub customer_ref: String,
}

/// The body of `POST /v1/orders/{id}/cancel`, `…/recall` and the store's reject.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reason {
    /// 1–500 characters, shown to the store.
    pub reason: String,
}

/// The `order.updated` webhook body: `{"id", "type", "created_at", "data": {"order"}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderEvent {
    /// `evt_…`, also sent as `X-Okya-Event-Id`.
    pub id: String,
    /// `order.updated`, also sent as `X-Okya-Event-Type`.
    pub r#type: String,
    /// When the change happened.
    pub created_at: DateTime<Utc>,
    /// The order.
    pub data: OrderEventData,
}

/// The `data` of an [`OrderEvent`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderEventData {
    /// The whole order, as `GET /v1/orders/{id}` answers it.
    pub order: Order,
}

/// The only webhook event type.
pub const ORDER_UPDATED: &str = "order.updated";

/// The type of the webhook announcing a change to stores or menus (Toast's "menus
/// updated", Square's `catalog.version.updated`): `data` names what changed, and the
/// receiver reads the catalogue again.
pub const MENU_UPDATED: &str = "menu.updated";

/// A `menu.updated` event, as sent to the app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MenuEvent {
    /// `evt_…`, unique per event.
    pub id: String,
    /// Always [`MENU_UPDATED`].
    pub r#type: String,
    /// When the change was made.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// What changed.
    pub data: MenuEventData,
}

/// The `data` of a [`MenuEvent`]: the stores and products whose catalogue entry changed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MenuEventData {
    /// Stores changed (opened, closed, menu edited).
    pub store_ids: Vec<String>,
    /// Products changed (renamed, sold out, back in stock).
    pub product_ids: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Okya Auth
// ---------------------------------------------------------------------------------------

/// An Okya Auth account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    /// `acc_…`.
    pub id: String,
    /// Compared case-insensitively, stored as given.
    pub email: String,
    /// E.164.
    pub phone: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Whether a code sent to the phone was verified.
    pub confirmed: bool,
    /// The linked SessionM user id, or `null`.
    pub loyalty_id: Option<String>,
}

/// The body of `POST /auth/v1/accounts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewAccount {
    /// An email address.
    pub email: String,
    /// E.164.
    pub phone: String,
    /// 1–100 characters.
    pub first_name: String,
    /// 1–100 characters.
    pub last_name: String,
}

/// What a one-time code is for; it only chooses the text message's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtpPurpose {
    /// Finish a registration.
    Confirm,
    /// Sign in.
    SignIn,
}

/// The body of `POST /auth/v1/otp`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendOtp {
    /// E.164.
    pub phone: String,
    /// Confirm or sign in.
    pub purpose: OtpPurpose,
}

/// The body of `POST /auth/v1/otp/verify`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyOtp {
    /// E.164.
    pub phone: String,
    /// The six digits.
    pub code: String,
}

/// The body of `PUT /auth/v1/accounts/{id}/loyalty`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SaveLoyalty {
    /// `sessionm`, the only provider.
    pub provider: String,
    /// The SessionM user id.
    pub user_id: String,
}

/// Refusal codes (`{"error": {"code"}}`) the simulator answers with.
pub mod codes {
    /// 404: no such store.
    pub const STORE_NOT_FOUND: &str = "store_not_found";
    /// 422: the store is closed.
    pub const STORE_CLOSED: &str = "store_closed";
    /// 404: no such cart.
    pub const CART_NOT_FOUND: &str = "cart_not_found";
    /// 404: no such order.
    pub const ORDER_NOT_FOUND: &str = "order_not_found";
    /// 409: the transition is not allowed now.
    pub const INVALID_STATE: &str = "invalid_state";
    /// 409: another payment is recorded.
    pub const PAYMENT_EXISTS: &str = "payment_exists";
    /// 422: the cart was submitted as an order.
    pub const CART_ALREADY_ORDERED: &str = "cart_already_ordered";
    /// 422: the cart has no lines.
    pub const CART_EMPTY: &str = "cart_empty";
    /// 422: a product or option is sold out or off the menu.
    pub const PRODUCT_UNAVAILABLE: &str = "product_unavailable";
    /// 422: an adjustment of 0 or less, or in another currency.
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    /// 422: the discounts would exceed the subtotal.
    pub const ADJUSTMENT_TOO_LARGE: &str = "adjustment_too_large";
    /// 422: the reference was used with other content.
    pub const ADJUSTMENT_REFERENCE_REUSED: &str = "adjustment_reference_reused";
    /// 422: the payment is not the order's total.
    pub const PAYMENT_AMOUNT_MISMATCH: &str = "payment_amount_mismatch";
    /// 400: a missing key, or a malformed body.
    pub const INVALID_REQUEST: &str = "invalid_request";
}
