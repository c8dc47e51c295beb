//! SessionM loyalty: the Core API for members (`/priv/v1/apps/{api_key}/users`) and the
//! POS/eCommerce API (`/api/2.0/…`) for offers and transactions. The contract we speak is
//! `docs/upstreams/sessionm.md`; everything that would change with it lives here.
//!
//! Two quirks of SessionM shape this module:
//! - a refusal often arrives as HTTP 200 with `"status": "error"`, so every body's
//!   `status` is checked, not only the HTTP code;
//! - the POS API's idempotency is the body's `request_id`: a repeat returns the first
//!   response, or `pending_processing` while the first is still running, which we wait out.

use super::{Call, Rejection, System, UpstreamError, join};
use crate::config::SessionmSettings;
use crate::domain::{Currency, Money, MoneyError};
use chrono::{DateTime, Utc};
use reqwest::RequestBuilder;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned, de::IgnoredAny};
use serde_json::Value;
use std::{fmt, time::Duration};

/// The error codes SessionM (and our simulator) answer with, lower-cased by
/// [`parse_sessionm_error`] so callers can compare them directly.
pub mod codes {
    /// Basic credentials or API key refused.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// The same `request_id` is still being processed (transient; the client waits it out).
    pub const PENDING: &str = "pending_processing";
    /// The same `request_id` came with a different body.
    pub const REQUEST_ID_CONFLICT: &str = "request_id_conflict";
    /// Required fields missing or malformed; `field` names the culprit when known.
    pub const VALIDATION: &str = "validation";
    pub const USER_NOT_FOUND: &str = "user_not_found";
    /// Another member already has this email (`field` is `email`).
    pub const EMAIL_TAKEN: &str = "email_taken";
    pub const OFFER_NOT_FOUND: &str = "offer_not_found";
    /// The offer is locked by another transaction.
    pub const OFFER_LOCKED: &str = "offer_locked";
    pub const OFFER_REDEEMED: &str = "offer_redeemed";
    pub const OFFER_EXPIRED: &str = "offer_expired";
    /// The offer gives no discount on this basket.
    pub const OFFER_NOT_APPLICABLE: &str = "offer_not_applicable";
    /// Reinstate asked for an offer that is locked, not redeemed.
    pub const OFFER_NOT_REDEEMED: &str = "offer_not_redeemed";
    pub const TRANSACTION_NOT_FOUND: &str = "transaction_not_found";
}

/// The POS API needs a `store_id` in every body; calls not tied to a basket (and baskets
/// from the app) are made as this e-commerce "store", which SessionM provisions per client.
pub const APP_STORE_ID: &str = "cbtl-app";

/// The POS API requires an `employee_id` on unlock and reinstate; the app has no cashier.
const EMPLOYEE_ID: &str = "cbtl-app";

/// How often a `pending_processing` answer is waited out before giving up (transiently).
const PENDING_RETRIES: u32 = 6;

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// A member to create in SessionM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// E.164, sent as the member's mobile number.
    pub phone: Option<String>,
    /// Our customer id; lets a retried creation find the member it already made.
    pub external_id: Option<String>,
}

/// A SessionM member, with the loyalty fields the Core API adds when loyalty is enabled.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SessionmUser {
    pub id: String,
    #[serde(default)]
    pub external_id: Option<String>,
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub available_points: i64,
    #[serde(default)]
    pub tier: Option<String>,
}

/// One basket line as SessionM sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionLine {
    pub line_id: String,
    pub product_id: String,
    pub sku: Option<String>,
    pub name: String,
    pub quantity: u32,
    /// Price of one unit, modifiers included.
    pub unit_price: Money,
}

/// A basket: what `lookup`, `lock` and `redeem` price offers against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Stable across re-locks of the same basket (SessionM updates a lock by this id).
    pub transaction_id: String,
    pub store_id: String,
    pub lines: Vec<TransactionLine>,
    /// Sum of the lines' unit price × quantity, in the basket's currency.
    pub subtotal: Money,
}

impl Transaction {
    /// Builds a basket, computing its subtotal; every line must share `currency`.
    pub fn new(
        transaction_id: impl Into<String>,
        store_id: impl Into<String>,
        currency: Currency,
        lines: Vec<TransactionLine>,
    ) -> Result<Self, MoneyError> {
        let mut subtotal = Money::zero(currency);
        for line in &lines {
            subtotal = subtotal.checked_add(&line.unit_price.checked_mul(line.quantity.into())?)?;
        }
        Ok(Self {
            transaction_id: transaction_id.into(),
            store_id: store_id.into(),
            lines,
            subtotal,
        })
    }

    pub fn currency(&self) -> &Currency {
        &self.subtotal.currency
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscountKind {
    /// One item free: the most expensive unit in the basket.
    FreeItem,
    FixedAmount,
    Percentage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfferStatus {
    Available,
    Locked,
    Redeemed,
    Expired,
}

/// What an offer gives, independent of any basket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferDiscount {
    pub kind: DiscountKind,
    /// Set for `FixedAmount`.
    pub amount: Option<Money>,
    /// Whole percent, set for `Percentage`.
    pub percentage: Option<u32>,
}

/// One offer in a member's wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The wallet entry: what lock, redeem, unlock and reinstate take.
    pub user_offer_id: String,
    /// The campaign offer it was issued from.
    pub offer_id: String,
    pub name: String,
    pub description: String,
    pub discount: OfferDiscount,
    pub expires_at: Option<DateTime<Utc>>,
    pub status: OfferStatus,
    /// The transaction holding the lock, while `Locked`.
    pub locked_transaction_id: Option<String>,
    /// The discount on the basket given to `lookup`; `None` without a basket.
    pub discount_amount: Option<Money>,
}

/// The member's balance as the POS API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoyaltySummary {
    pub user_id: String,
    pub available_points: i64,
    pub tier: Option<String>,
}

/// `lookup`'s answer: without a basket every offer in the wallet (expired ones included);
/// with one, only the offers that apply, each with its discount (the "adjusted order").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub user: LoyaltySummary,
    pub offers: Vec<Offer>,
}

/// A discount SessionM granted a transaction (from `lock` or `redeem`); pass it back in
/// [`SendTransaction::discounts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discount {
    pub user_offer_id: String,
    pub transaction_id: String,
    pub name: Option<String>,
    pub amount: Money,
}

/// A finished purchase, sent after payment so SessionM credits points and finalises the
/// redemption of locked offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendTransaction {
    pub user_id: String,
    pub transaction: Transaction,
    pub discounts: Vec<Discount>,
    pub tax: Money,
    /// What the customer paid: subtotal − discounts + tax. Points are earned on it.
    pub total: Money,
    /// When the purchase was paid. Keep it stable across retries: a `request_id` sent again
    /// with a different body is refused as `request_id_conflict`.
    pub occurred_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TransactionReceipt {
    pub transaction_id: String,
    pub points_earned: i64,
    /// The balance just after this transaction was first recorded.
    pub available_points: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct VoidReceipt {
    pub original_transaction_id: String,
    pub points_reversed: i64,
    pub available_points: i64,
}

// ---------------------------------------------------------------------------------------
// Wire shapes (amounts in integer minor units; see docs/upstreams/sessionm.md)
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct PosRequest<'a, P> {
    store_id: &'a str,
    client_id: &'a str,
    request_id: &'a str,
    request_payload: &'a P,
}

#[derive(Serialize)]
struct WireTransaction<'a> {
    transaction_id: &'a str,
    store_id: &'a str,
    currency: &'a str,
    subtotal: i64,
    items: Vec<WireItem<'a>>,
}

#[derive(Serialize)]
struct WireItem<'a> {
    line_id: &'a str,
    item_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<&'a str>,
    name: &'a str,
    quantity: u32,
    price: i64,
    subtotal: i64,
}

#[derive(Serialize)]
struct WireNewUser<'a> {
    user: WireNewUserInner<'a>,
}

#[derive(Serialize)]
struct WireNewUserInner<'a> {
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    phone_numbers: Vec<WirePhone<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WirePhone<'a> {
    phone_number: &'a str,
    phone_type: &'static str,
}

#[derive(Deserialize)]
struct UserEnvelope {
    user: SessionmUser,
}

#[derive(Serialize)]
struct LookupPayload<'a> {
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<WireTransaction<'a>>,
}

#[derive(Serialize)]
struct OfferOnTransaction<'a> {
    offer_lookup_code: &'a str,
    offer_lookup_type: &'static str,
    user_id: &'a str,
    transaction: WireTransaction<'a>,
}

#[derive(Serialize)]
struct OfferRelease<'a> {
    user_offer_id: &'a str,
    employee_id: &'static str,
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireSale<'a> {
    transaction_type: &'static str,
    transaction_id: &'a str,
    user_id: &'a str,
    store_id: &'a str,
    currency: &'a str,
    transaction_date: DateTime<Utc>,
    subtotal: i64,
    discount_total: i64,
    tax: i64,
    total: i64,
    items: Vec<WireItem<'a>>,
    discounts: Vec<WireAppliedDiscount<'a>>,
}

#[derive(Serialize)]
struct WireAppliedDiscount<'a> {
    user_offer_id: &'a str,
    amount: i64,
}

#[derive(Serialize)]
struct WireReturn<'a> {
    transaction_type: &'static str,
    transaction_id: String,
    original_transaction_id: &'a str,
    user_id: &'a str,
}

#[derive(Deserialize)]
struct WireLookup {
    user: WireLookupUser,
    #[serde(default)]
    offers: Vec<WireOffer>,
}

#[derive(Deserialize)]
struct WireLookupUser {
    id: String,
    #[serde(default)]
    available_points: i64,
    #[serde(default)]
    tier: Option<String>,
}

#[derive(Deserialize)]
struct WireOffer {
    user_offer_id: String,
    offer_id: String,
    name: String,
    #[serde(default)]
    description: String,
    discount_type: DiscountKind,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    percentage: Option<u32>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    expiration_date: Option<DateTime<Utc>>,
    status: OfferStatus,
    #[serde(default)]
    locked_transaction_id: Option<String>,
    #[serde(default)]
    discount_amount: Option<i64>,
}

#[derive(Deserialize)]
struct WireDiscount {
    user_offer_id: String,
    transaction_id: String,
    #[serde(default)]
    name: Option<String>,
    amount: i64,
    currency: String,
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct SessionmClient {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    api_secret: SecretString,
    client_id: String,
    client_secret: SecretString,
}

impl fmt::Debug for SessionmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionmClient")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SessionmClient {
    pub fn new(base_url: &str, settings: &SessionmSettings) -> Result<Self, UpstreamError> {
        reqwest::Url::parse(base_url)
            .map_err(|e| UpstreamError::Setup(format!("sessionm base URL: {e}")))?;
        Ok(Self {
            http: super::http_client(settings.timeouts())?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
            api_secret: settings.api_secret.clone(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
        })
    }

    // ----- Core API ----------------------------------------------------------------

    /// Creates a member. `request_id` only travels as `X-Request-Id` for correlation: the
    /// Core API has no idempotency, so when a retried creation meets its own earlier
    /// success as `email_taken`, the member is found again by `external_id`.
    pub async fn create_user(
        &self,
        user: &NewUser,
        request_id: &str,
    ) -> Result<SessionmUser, UpstreamError> {
        let operation = "core.create_user";
        let body = WireNewUser {
            user: WireNewUserInner {
                email: &user.email,
                first_name: &user.first_name,
                last_name: &user.last_name,
                phone_numbers: user
                    .phone
                    .as_deref()
                    .map(|phone_number| WirePhone {
                        phone_number,
                        phone_type: "mobile",
                    })
                    .into_iter()
                    .collect(),
                external_id: user.external_id.as_deref(),
            },
        };
        let request = self
            .core_request(reqwest::Method::POST, "users")
            .header("X-Request-Id", request_id)
            .json(&body);
        match self.core::<UserEnvelope>(operation, request).await {
            Ok(envelope) => Ok(envelope.user),
            Err(err) => {
                let taken = err
                    .rejection()
                    .is_some_and(|(_, r)| r.code == codes::EMAIL_TAKEN);
                if let (true, Some(external_id)) = (taken, user.external_id.as_deref())
                    && let Some(existing) = self.find_user_by_external_id(external_id).await?
                    && existing.email.eq_ignore_ascii_case(&user.email)
                {
                    return Ok(existing);
                }
                Err(err)
            }
        }
    }

    /// A member with their points balance and tier; an unknown id is a rejection with
    /// code `user_not_found`.
    pub async fn get_user(&self, user_id: &str) -> Result<SessionmUser, UpstreamError> {
        let path = format!("users/{}", path_segment(user_id));
        let request = self.core_request(reqwest::Method::GET, &path);
        Ok(self
            .core::<UserEnvelope>("core.get_user", request)
            .await?
            .user)
    }

    /// The member created with our `external_id`, if any.
    pub async fn find_user_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<SessionmUser>, UpstreamError> {
        let path = format!("external/users/{}", path_segment(external_id));
        let request = self.core_request(reqwest::Method::GET, &path);
        match self
            .core::<UserEnvelope>("core.get_external_user", request)
            .await
        {
            Ok(envelope) => Ok(Some(envelope.user)),
            Err(err) if is_code(&err, codes::USER_NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn core_request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let url = join(
            &self.base_url,
            &format!("priv/v1/apps/{}/{path}", path_segment(&self.api_key)),
        );
        self.http
            .request(method, url)
            .basic_auth(&self.api_key, Some(self.api_secret.expose_secret()))
    }

    async fn core<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<T, UpstreamError> {
        let call = Call {
            system: System::Sessionm,
            operation,
            parse_error: parse_sessionm_error,
        };
        let body: Value = call.json(request).await?;
        if !status_ok(&body) {
            return Err(rejected(operation, 200, parse_sessionm_error(&body)));
        }
        serde_json::from_value(body).map_err(|e| protocol(operation, e))
    }

    // ----- POS / eCommerce API -----------------------------------------------------

    /// The member's offers; given a basket, only those that apply, each with its discount.
    pub async fn lookup(
        &self,
        user_id: &str,
        transaction: Option<&Transaction>,
        request_id: &str,
    ) -> Result<Lookup, UpstreamError> {
        let operation = "pos.lookup";
        let payload = LookupPayload {
            user_id,
            transaction: transaction.map(wire_transaction).transpose()?,
        };
        let store_id = transaction.map_or(APP_STORE_ID, |t| t.store_id.as_str());
        let wire: WireLookup = self
            .pos(operation, "api/2.0/lookup", store_id, request_id, &payload)
            .await?;
        let basket_currency = transaction.map(Transaction::currency);
        let offers = wire
            .offers
            .into_iter()
            .map(|o| offer_from_wire(operation, o, basket_currency))
            .collect::<Result<_, _>>()?;
        Ok(Lookup {
            user: LoyaltySummary {
                user_id: wire.user.id,
                available_points: wire.user.available_points,
                tier: wire.user.tier,
            },
            offers,
        })
    }

    /// Locks an offer to a basket just before payment and returns its discount. Locking
    /// again with the same transaction id (the basket changed) updates the discount.
    pub async fn lock(
        &self,
        user_id: &str,
        user_offer_id: &str,
        transaction: &Transaction,
        request_id: &str,
    ) -> Result<Discount, UpstreamError> {
        self.apply_offer(
            "pos.lock",
            "api/2.0/lock",
            user_id,
            user_offer_id,
            transaction,
            request_id,
        )
        .await
    }

    /// Releases a lock (the payment failed); releasing an unlocked offer succeeds.
    pub async fn unlock(
        &self,
        user_id: &str,
        user_offer_id: &str,
        transaction_id: &str,
        request_id: &str,
    ) -> Result<(), UpstreamError> {
        let payload = OfferRelease {
            user_offer_id,
            employee_id: EMPLOYEE_ID,
            user_id,
            transaction_id: Some(transaction_id),
        };
        self.pos::<_, IgnoredAny>(
            "pos.unlock",
            "api/2.0/unlock",
            APP_STORE_ID,
            request_id,
            &payload,
        )
        .await
        .map(drop)
    }

    /// Consumes an offer at once (available, or locked by this basket).
    pub async fn redeem(
        &self,
        user_id: &str,
        user_offer_id: &str,
        transaction: &Transaction,
        request_id: &str,
    ) -> Result<Discount, UpstreamError> {
        self.apply_offer(
            "pos.redeem",
            "api/2.0/redeem",
            user_id,
            user_offer_id,
            transaction,
            request_id,
        )
        .await
    }

    /// Reverses a redemption, returning the offer to the wallet.
    pub async fn reinstate(
        &self,
        user_id: &str,
        user_offer_id: &str,
        request_id: &str,
    ) -> Result<(), UpstreamError> {
        let payload = OfferRelease {
            user_offer_id,
            employee_id: EMPLOYEE_ID,
            user_id,
            transaction_id: None,
        };
        self.pos::<_, IgnoredAny>(
            "pos.reinstate",
            "api/2.0/reinstate",
            APP_STORE_ID,
            request_id,
            &payload,
        )
        .await
        .map(drop)
    }

    /// Records a paid purchase: credits points (once per transaction id, however often it
    /// is sent) and finalises the redemption of the discounts' offers.
    pub async fn send_transaction(
        &self,
        sale: &SendTransaction,
        request_id: &str,
    ) -> Result<TransactionReceipt, UpstreamError> {
        let operation = "pos.send_transaction";
        let txn = &sale.transaction;
        let currency = txn.currency();
        let mut discount_total = Money::zero(currency.clone());
        let mut discounts = Vec::with_capacity(sale.discounts.len());
        for d in &sale.discounts {
            discount_total = discount_total
                .checked_add(&d.amount)
                .map_err(|e| bad_input(operation, &e))?;
            discounts.push(WireAppliedDiscount {
                user_offer_id: &d.user_offer_id,
                amount: d.amount.minor,
            });
        }
        for amount in [&sale.tax, &sale.total] {
            if &amount.currency != currency {
                return Err(bad_input(
                    operation,
                    &MoneyError::CurrencyMismatch(currency.clone(), amount.currency.clone()),
                ));
            }
        }
        let wire = wire_transaction(txn)?;
        let payload = WireSale {
            transaction_type: "sale",
            transaction_id: &txn.transaction_id,
            user_id: &sale.user_id,
            store_id: &txn.store_id,
            currency: currency.code(),
            transaction_date: sale.occurred_at,
            subtotal: txn.subtotal.minor,
            discount_total: discount_total.minor,
            tax: sale.tax.minor,
            total: sale.total.minor,
            items: wire.items,
            discounts,
        };
        self.pos(
            operation,
            "api/2.0/send_transaction",
            &txn.store_id,
            request_id,
            &payload,
        )
        .await
    }

    /// Reverses a recorded purchase in full (a SessionM return transaction): the points it
    /// earned are taken back exactly once. Offers it redeemed are not reinstated; call
    /// [`Self::reinstate`] for those.
    pub async fn void_transaction(
        &self,
        user_id: &str,
        original_transaction_id: &str,
        request_id: &str,
    ) -> Result<VoidReceipt, UpstreamError> {
        let payload = WireReturn {
            transaction_type: "return",
            transaction_id: format!("{original_transaction_id}-return"),
            original_transaction_id,
            user_id,
        };
        self.pos(
            "pos.void_transaction",
            "api/2.0/send_transaction",
            APP_STORE_ID,
            request_id,
            &payload,
        )
        .await
    }

    async fn apply_offer(
        &self,
        operation: &'static str,
        path: &str,
        user_id: &str,
        user_offer_id: &str,
        transaction: &Transaction,
        request_id: &str,
    ) -> Result<Discount, UpstreamError> {
        let payload = OfferOnTransaction {
            offer_lookup_code: user_offer_id,
            offer_lookup_type: "UserOfferId",
            user_id,
            transaction: wire_transaction(transaction)?,
        };
        let wire: WireDiscount = self
            .pos(operation, path, &transaction.store_id, request_id, &payload)
            .await?;
        Ok(Discount {
            user_offer_id: wire.user_offer_id,
            transaction_id: wire.transaction_id,
            name: wire.name,
            amount: Money::new(wire.amount, currency(operation, &wire.currency)?),
        })
    }

    /// One POS call: the general request container, Basic client credentials, and the
    /// `pending_processing` answer waited out with the same `request_id`.
    async fn pos<P: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        store_id: &str,
        request_id: &str,
        payload: &P,
    ) -> Result<T, UpstreamError> {
        let envelope = PosRequest {
            store_id,
            client_id: &self.client_id,
            request_id,
            request_payload: payload,
        };
        let request = self
            .http
            .post(join(&self.base_url, path))
            .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            .json(&envelope);
        let call = Call {
            system: System::Sessionm,
            operation,
            parse_error: parse_sessionm_error,
        };
        let mut waits = 0;
        loop {
            let Some(attempt) = request.try_clone() else {
                return Err(UpstreamError::Setup(
                    "streaming bodies cannot be sent".into(),
                ));
            };
            let (status, rejection) = match call.json::<Value>(attempt).await {
                Ok(mut body) if status_ok(&body) => {
                    let payload = body.get_mut("payload").map(Value::take);
                    return serde_json::from_value(payload.unwrap_or(Value::Null))
                        .map_err(|e| protocol(operation, e));
                }
                Ok(body) => (200, parse_sessionm_error(&body)),
                Err(UpstreamError::Rejected {
                    status, rejection, ..
                }) => (status, *rejection),
                Err(other) => return Err(other),
            };
            if rejection.code != codes::PENDING {
                return Err(rejected(operation, status, rejection));
            }
            if waits >= PENDING_RETRIES {
                return Err(UpstreamError::Unavailable {
                    system: System::Sessionm,
                    operation,
                    reason: "request_id still pending processing".into(),
                });
            }
            tracing::debug!(operation, waits, "sessionm request pending; waiting");
            tokio::time::sleep(pending_backoff(waits)).await;
            waits += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Reads SessionM's error bodies: `{"status": "error", "errors": {"code", "message",
/// "field"?}}` (Core and POS alike), tolerating an `errors` list or a bare `error`.
/// Codes are lower-cased: SessionM's pages spell them both ways.
pub(crate) fn parse_sessionm_error(body: &Value) -> Rejection {
    let errors = match &body["errors"] {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        Value::Null => body.get("error").cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let text = |key: &str| errors.get(key).and_then(Value::as_str).map(str::to_owned);
    let message = match &errors {
        Value::String(s) => s.clone(),
        _ => text("message").unwrap_or_default(),
    };
    // Validation errors name the field either as `field` or as a key holding messages.
    let field = text("field").or_else(|| {
        errors.as_object().and_then(|map| {
            map.iter()
                .find(|(k, v)| {
                    !matches!(k.as_str(), "code" | "message" | "field")
                        && (v.is_array() || v.is_string())
                })
                .map(|(k, _)| k.clone())
        })
    });
    Rejection {
        code: text("code")
            .unwrap_or_else(|| "unknown".to_owned())
            .to_ascii_lowercase(),
        message,
        field,
        detail: errors,
        // `pending_processing` is waited out by `pos_call` itself.
        in_progress: false,
    }
}

fn status_ok(body: &Value) -> bool {
    body["status"]
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("ok"))
}

fn is_code(err: &UpstreamError, code: &str) -> bool {
    err.rejection().is_some_and(|(_, r)| r.code == code)
}

fn rejected(operation: &'static str, status: u16, rejection: Rejection) -> UpstreamError {
    UpstreamError::Rejected {
        system: System::Sessionm,
        operation,
        status,
        rejection: Box::new(rejection),
    }
}

fn protocol(operation: &'static str, err: impl fmt::Display) -> UpstreamError {
    UpstreamError::Protocol {
        system: System::Sessionm,
        operation,
        reason: err.to_string(),
    }
}

/// Our own input could not be put on the wire (mixed currencies, overflow): a bug upstream
/// of this client, reported before anything is sent.
fn bad_input(operation: &'static str, err: &MoneyError) -> UpstreamError {
    UpstreamError::Setup(format!("sessionm {operation}: {err}"))
}

fn currency(operation: &'static str, code: &str) -> Result<Currency, UpstreamError> {
    Currency::parse(code).map_err(|e| protocol(operation, e))
}

fn wire_transaction(txn: &Transaction) -> Result<WireTransaction<'_>, UpstreamError> {
    let operation = "pos.transaction";
    let currency = txn.currency();
    let mut items = Vec::with_capacity(txn.lines.len());
    for line in &txn.lines {
        if &line.unit_price.currency != currency {
            return Err(bad_input(
                operation,
                &MoneyError::CurrencyMismatch(currency.clone(), line.unit_price.currency.clone()),
            ));
        }
        let subtotal = line
            .unit_price
            .checked_mul(line.quantity.into())
            .map_err(|e| bad_input(operation, &e))?;
        items.push(WireItem {
            line_id: &line.line_id,
            item_id: &line.product_id,
            sku: line.sku.as_deref(),
            name: &line.name,
            quantity: line.quantity,
            price: line.unit_price.minor,
            subtotal: subtotal.minor,
        });
    }
    Ok(WireTransaction {
        transaction_id: &txn.transaction_id,
        store_id: &txn.store_id,
        currency: currency.code(),
        subtotal: txn.subtotal.minor,
        items,
    })
}

fn offer_from_wire(
    operation: &'static str,
    wire: WireOffer,
    basket_currency: Option<&Currency>,
) -> Result<Offer, UpstreamError> {
    let offer_currency = wire
        .currency
        .as_deref()
        .map(|c| currency(operation, c))
        .transpose()?;
    let amount = match (wire.amount, &offer_currency) {
        (Some(minor), Some(c)) => Some(Money::new(minor, c.clone())),
        (Some(_), None) => return Err(protocol(operation, "offer amount without a currency")),
        (None, _) => None,
    };
    // A basket discount is in the basket's currency, which SessionM does not repeat.
    let discount_amount = match (wire.discount_amount, basket_currency) {
        (Some(minor), Some(c)) => Some(Money::new(minor, c.clone())),
        (Some(_), None) => return Err(protocol(operation, "discount without a basket")),
        (None, _) => None,
    };
    Ok(Offer {
        user_offer_id: wire.user_offer_id,
        offer_id: wire.offer_id,
        name: wire.name,
        description: wire.description,
        discount: OfferDiscount {
            kind: wire.discount_type,
            amount,
            percentage: wire.percentage,
        },
        expires_at: wire.expiration_date,
        status: wire.status,
        locked_transaction_id: wire.locked_transaction_id,
        discount_amount,
    })
}

fn pending_backoff(waits: u32) -> Duration {
    let base = (50_u64 << waits.min(5)).min(1_000);
    Duration::from_millis(base + fastrand::u64(0..=base / 4))
}

/// Percent-encodes one URL path segment, so ids never change the path's shape.
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{
        Simulator,
        faults::{FaultUpdate, Faults, Loss, LostAs},
    };
    use serde_json::json;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::usd())
    }

    async fn setup() -> (Simulator, SessionmClient) {
        // Interim: the simulator now follows SessionM's published API (two hosts); these
        // tests of the old client only compile against it until the client is rewritten.
        let config = crate::sandbox::sessionm::SessionmSimConfig {
            api_key: crate::config::sandbox_credentials::SESSIONM_API_KEY.to_owned(),
            api_secret: crate::config::sandbox_credentials::SESSIONM_API_SECRET.to_owned(),
            pos_api_key: "cbtl-bff".to_owned(),
            pos_api_secret: crate::config::sandbox_credentials::SESSIONM_CLIENT_SECRET.to_owned(),
            client_id: "cbtl-bff".to_owned(),
            okya_store_ids: Vec::new(),
        };
        let sim = crate::sandbox::sessionm::start(config, Faults::new(0, 0.0))
            .await
            .expect("simulator starts")
            .pos;
        let client = SessionmClient::new(&sim.base_url, &SessionmSettings::default())
            .expect("client builds");
        (sim, client)
    }

    fn new_user(n: u32) -> NewUser {
        NewUser {
            email: format!("ada{n}@example.com"),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            phone: Some("+15550001111".into()),
            external_id: Some(format!("cus_{n}")),
        }
    }

    fn line(id: &str, price: i64, quantity: u32) -> TransactionLine {
        TransactionLine {
            line_id: format!("line_{id}"),
            product_id: format!("prd_{id}"),
            sku: None,
            name: id.to_owned(),
            quantity,
            unit_price: usd(price),
        }
    }

    /// A latte at 4.50 ×2 and a muffin at 3.25: subtotal 12.25.
    fn basket(id: &str) -> Transaction {
        Transaction::new(
            id,
            "store_1",
            Currency::usd(),
            vec![line("latte", 450, 2), line("muffin", 325, 1)],
        )
        .expect("basket")
    }

    fn offer_of(lookup: &Lookup, kind: DiscountKind, status: OfferStatus) -> Offer {
        lookup
            .offers
            .iter()
            .find(|o| o.discount.kind == kind && o.status == status)
            .cloned()
            .expect("offer of that kind")
    }

    async fn ledger(sim: &Simulator) -> Value {
        reqwest::get(format!("{}/_sandbox/ledger", sim.base_url))
            .await
            .expect("ledger")
            .json()
            .await
            .expect("ledger json")
    }

    fn code_of(err: &UpstreamError) -> String {
        err.rejection()
            .map(|(_, r)| r.code.clone())
            .unwrap_or_else(|| format!("not a rejection: {err}"))
    }

    #[tokio::test]
    async fn creates_and_reads_members() {
        let (_sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "req-1").await.unwrap();
        assert_eq!(user.email, "ada1@example.com");
        assert_eq!(user.external_id.as_deref(), Some("cus_1"));
        assert_eq!(user.available_points, 0);
        assert!(user.tier.is_some());

        let read = client.get_user(&user.id).await.unwrap();
        assert_eq!(read, user);
        let by_external = client.find_user_by_external_id("cus_1").await.unwrap();
        assert_eq!(by_external, Some(user.clone()));
        assert_eq!(
            client.find_user_by_external_id("cus_nobody").await.unwrap(),
            None
        );

        let err = client.get_user("no-such-user").await.unwrap_err();
        assert_eq!(code_of(&err), codes::USER_NOT_FOUND);
        assert_eq!(err.rejection().map(|(s, _)| s), Some(404));
    }

    #[tokio::test]
    async fn duplicate_email_is_refused_but_a_retried_creation_finds_its_member() {
        let (_sim, client) = setup().await;
        let first = client.create_user(&new_user(1), "req-1").await.unwrap();

        // Same customer again (a retry after a lost response): the same member comes back.
        let again = client.create_user(&new_user(1), "req-2").await.unwrap();
        assert_eq!(again.id, first.id);

        // Someone else with that email: SessionM's refusal, on a 200 with status error.
        let mut other = new_user(2);
        other.email = "ADA1@example.com".into();
        let err = client.create_user(&other, "req-3").await.unwrap_err();
        let (status, rejection) = err.rejection().expect("rejected");
        assert_eq!((status, rejection.code.as_str()), (200, codes::EMAIL_TAKEN));
        assert_eq!(rejection.field.as_deref(), Some("email"));
    }

    #[tokio::test]
    async fn wrong_credentials_are_refused_on_both_apis() {
        let (sim, _client) = setup().await;
        let settings = SessionmSettings {
            api_secret: SecretString::from("wrong"),
            client_secret: SecretString::from("wrong"),
            ..SessionmSettings::default()
        };
        let client = SessionmClient::new(&sim.base_url, &settings).unwrap();
        let err = client.create_user(&new_user(1), "r").await.unwrap_err();
        assert_eq!(err.rejection().map(|(s, _)| s), Some(401));
        assert_eq!(code_of(&err), codes::ACCESS_DENIED);
        let err = client.lookup("anyone", None, "r").await.unwrap_err();
        assert_eq!(err.rejection().map(|(s, _)| s), Some(401));
        assert_eq!(code_of(&err), codes::ACCESS_DENIED);
    }

    #[tokio::test]
    async fn lookup_lists_the_wallet_and_prices_a_basket() {
        let (_sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "r0").await.unwrap();

        let wallet = client.lookup(&user.id, None, "r1").await.unwrap();
        assert_eq!(wallet.user.user_id, user.id);
        assert_eq!(wallet.offers.len(), 4);
        assert!(wallet.offers.iter().all(|o| o.discount_amount.is_none()));
        let statuses: Vec<_> = wallet.offers.iter().map(|o| o.status).collect();
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == OfferStatus::Available)
                .count(),
            3
        );
        let expired = offer_of(&wallet, DiscountKind::FixedAmount, OfferStatus::Expired);
        assert!(expired.expires_at.is_some_and(|t| t < Utc::now()));
        let fixed = offer_of(&wallet, DiscountKind::FixedAmount, OfferStatus::Available);
        assert_eq!(fixed.discount.amount, Some(usd(200)));
        let pct = offer_of(&wallet, DiscountKind::Percentage, OfferStatus::Available);
        assert_eq!(pct.discount.percentage, Some(20));

        let priced = client
            .lookup(&user.id, Some(&basket("txn_1")), "r2")
            .await
            .unwrap();
        assert_eq!(priced.offers.len(), 3, "the expired one does not apply");
        let discount = |kind| {
            priced
                .offers
                .iter()
                .find(|o| o.discount.kind == kind)
                .and_then(|o| o.discount_amount.clone())
        };
        // The most expensive unit (a latte), 2.00 off, and 20% of 12.25 = 2.45.
        assert_eq!(discount(DiscountKind::FreeItem), Some(usd(450)));
        assert_eq!(discount(DiscountKind::FixedAmount), Some(usd(200)));
        assert_eq!(discount(DiscountKind::Percentage), Some(usd(245)));

        let err = client.lookup("nobody", None, "r3").await.unwrap_err();
        assert_eq!(code_of(&err), codes::USER_NOT_FOUND);
    }

    #[tokio::test]
    async fn lock_update_unlock_and_refusals() {
        let (sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "r0").await.unwrap();
        let wallet = client.lookup(&user.id, None, "r1").await.unwrap();
        let pct = offer_of(&wallet, DiscountKind::Percentage, OfferStatus::Available);
        let expired = offer_of(&wallet, DiscountKind::FixedAmount, OfferStatus::Expired);

        let first = client
            .lock(&user.id, &pct.user_offer_id, &basket("txn_1"), "r2")
            .await
            .unwrap();
        assert_eq!(first.amount, usd(245));
        assert_eq!(first.transaction_id, "txn_1");

        // The basket grew: locking again with the same transaction updates the discount.
        let bigger = Transaction::new(
            "txn_1",
            "store_1",
            Currency::usd(),
            vec![
                line("latte", 450, 2),
                line("muffin", 325, 1),
                line("tea", 275, 1),
            ],
        )
        .unwrap();
        let updated = client
            .lock(&user.id, &pct.user_offer_id, &bigger, "r3")
            .await
            .unwrap();
        assert_eq!(updated.amount, usd(300)); // 20% of 15.00

        let locked = client.lookup(&user.id, None, "r4").await.unwrap();
        let now = locked
            .offers
            .iter()
            .find(|o| o.user_offer_id == pct.user_offer_id)
            .unwrap();
        assert_eq!(now.status, OfferStatus::Locked);
        assert_eq!(now.locked_transaction_id.as_deref(), Some("txn_1"));

        let err = client
            .lock(&user.id, &pct.user_offer_id, &basket("txn_2"), "r5")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_LOCKED);
        let err = client
            .unlock(&user.id, &pct.user_offer_id, "txn_2", "r6")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_LOCKED);
        let err = client
            .lock(&user.id, &expired.user_offer_id, &basket("txn_1"), "r7")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_EXPIRED);
        let err = client
            .lock(&user.id, "uo_nope", &basket("txn_1"), "r8")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_NOT_FOUND);
        let empty = Transaction::new("txn_3", "store_1", Currency::usd(), vec![]).unwrap();
        let fixed = offer_of(&wallet, DiscountKind::FixedAmount, OfferStatus::Available);
        let err = client
            .lock(&user.id, &fixed.user_offer_id, &empty, "r9")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_NOT_APPLICABLE);

        client
            .unlock(&user.id, &pct.user_offer_id, "txn_1", "r10")
            .await
            .unwrap();
        let ledger = ledger(&sim).await;
        let offer = ledger["users"][0]["offers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["user_offer_id"] == pct.user_offer_id.as_str())
            .unwrap()
            .clone();
        assert_eq!(offer["status"], "AVAILABLE");
        assert_eq!(offer["transaction_id"], Value::Null);
        // Releasing twice is harmless; another transaction may now lock it.
        client
            .unlock(&user.id, &pct.user_offer_id, "txn_1", "r11")
            .await
            .unwrap();
        client
            .lock(&user.id, &pct.user_offer_id, &basket("txn_2"), "r12")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn redeem_and_reinstate() {
        let (_sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "r0").await.unwrap();
        let wallet = client.lookup(&user.id, None, "r1").await.unwrap();
        let free = offer_of(&wallet, DiscountKind::FreeItem, OfferStatus::Available);

        let discount = client
            .redeem(&user.id, &free.user_offer_id, &basket("txn_1"), "r2")
            .await
            .unwrap();
        assert_eq!(discount.amount, usd(450));
        let after = client.lookup(&user.id, None, "r3").await.unwrap();
        assert!(after.offers.iter().any(|o| o.user_offer_id == free.user_offer_id
            && o.status == OfferStatus::Redeemed));

        let err = client
            .lock(&user.id, &free.user_offer_id, &basket("txn_2"), "r4")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_REDEEMED);
        let err = client
            .redeem(&user.id, &free.user_offer_id, &basket("txn_2"), "r5")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_REDEEMED);

        client
            .reinstate(&user.id, &free.user_offer_id, "r6")
            .await
            .unwrap();
        let back = client.lookup(&user.id, None, "r7").await.unwrap();
        assert!(
            back.offers.iter().any(
                |o| o.user_offer_id == free.user_offer_id && o.status == OfferStatus::Available
            )
        );

        // A locked offer was never redeemed: nothing to reinstate.
        client
            .lock(&user.id, &free.user_offer_id, &basket("txn_3"), "r8")
            .await
            .unwrap();
        let err = client
            .reinstate(&user.id, &free.user_offer_id, "r9")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::OFFER_NOT_REDEEMED);
    }

    #[tokio::test]
    async fn send_transaction_credits_points_once_and_void_takes_them_back_once() {
        let (sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "r0").await.unwrap();
        let wallet = client.lookup(&user.id, None, "r1").await.unwrap();
        let fixed = offer_of(&wallet, DiscountKind::FixedAmount, OfferStatus::Available);
        let txn = basket("txn_1");
        let discount = client
            .lock(&user.id, &fixed.user_offer_id, &txn, "r2")
            .await
            .unwrap();

        // 12.25 − 2.00 + 1.09 tax = 11.34 paid: 11 points.
        let sale = SendTransaction {
            user_id: user.id.clone(),
            transaction: txn,
            discounts: vec![discount],
            tax: usd(109),
            total: usd(1134),
            occurred_at: Utc::now(),
        };
        let receipt = client.send_transaction(&sale, "r3").await.unwrap();
        assert_eq!(receipt.points_earned, 11);
        assert_eq!(receipt.available_points, 11);
        // The same request replayed, and the same transaction under a new request id.
        assert_eq!(client.send_transaction(&sale, "r3").await.unwrap(), receipt);
        assert_eq!(client.send_transaction(&sale, "r4").await.unwrap(), receipt);
        assert_eq!(
            client.get_user(&user.id).await.unwrap().available_points,
            11
        );

        let ledger_now = ledger(&sim).await;
        assert_eq!(ledger_now["request_ids"]["r3"], 2);
        assert_eq!(ledger_now["transactions"].as_array().unwrap().len(), 1);
        let offers = ledger_now["users"][0]["offers"].as_array().unwrap();
        let redeemed = offers
            .iter()
            .find(|o| o["user_offer_id"] == fixed.user_offer_id.as_str())
            .unwrap();
        assert_eq!(redeemed["status"], "REDEEMED");
        assert_eq!(redeemed["transaction_id"], "txn_1");

        let void = client
            .void_transaction(&user.id, "txn_1", "r5")
            .await
            .unwrap();
        assert_eq!(void.points_reversed, 11);
        assert_eq!(void.available_points, 0);
        let again = client
            .void_transaction(&user.id, "txn_1", "r6")
            .await
            .unwrap();
        assert_eq!(again.points_reversed, 11);
        assert_eq!(client.get_user(&user.id).await.unwrap().available_points, 0);
        assert_eq!(ledger(&sim).await["transactions"][0]["voided"], true);

        let err = client
            .void_transaction(&user.id, "txn_unknown", "r7")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::TRANSACTION_NOT_FOUND);
    }

    #[tokio::test]
    async fn a_request_id_reused_with_another_body_is_refused() {
        let (_sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "r0").await.unwrap();
        client.lookup(&user.id, None, "same").await.unwrap();
        let err = client
            .lookup(&user.id, Some(&basket("txn_1")), "same")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), codes::REQUEST_ID_CONFLICT);
    }

    /// SessionM recorded the sale, then its answers were lost twice: every retry must
    /// carry the first try's `request_id`, so SessionM replays that sale. (It would also
    /// answer a new `request_id` for the same transaction with the first receipt, so its
    /// ledger cannot tell; the requests it received can.)
    #[tokio::test]
    async fn a_lost_answer_is_retried_under_the_same_request_id() {
        let (sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "r0").await.unwrap();
        let route = "POST /api/2.0/send_transaction";
        sim.faults.apply(FaultUpdate {
            lose_next: [(
                route.to_owned(),
                Loss {
                    times: 2,
                    status: LostAs::Status(503),
                },
            )]
            .into(),
            ..FaultUpdate::default()
        });
        let sale = SendTransaction {
            user_id: user.id.clone(),
            transaction: basket("txn_1"),
            discounts: vec![],
            tax: usd(125),
            total: usd(1350),
            occurred_at: Utc::now(),
        };
        let receipt = client.send_transaction(&sale, "sale-1").await.unwrap();
        assert_eq!(receipt.points_earned, 13);
        let sent: Vec<(Option<String>, String)> = sim
            .faults
            .log(Some(route))
            .into_iter()
            .map(|r| (r.key, r.fault))
            .collect();
        let key = Some("sale-1".to_owned());
        assert_eq!(
            sent,
            [
                (key.clone(), "lost".to_owned()),
                (key.clone(), "lost".to_owned()),
                (key, "none".to_owned())
            ]
        );
        let ledger = ledger(&sim).await;
        assert_eq!(ledger["request_ids"]["sale-1"], 3, "{ledger}");
        assert_eq!(ledger["transactions"].as_array().unwrap().len(), 1);
        assert_eq!(
            client.get_user(&user.id).await.unwrap().available_points,
            13
        );
    }

    #[tokio::test]
    async fn a_pending_request_is_waited_out() {
        let (sim, client) = setup().await;
        let user = client.create_user(&new_user(1), "r0").await.unwrap();
        let wallet = client.lookup(&user.id, None, "r1").await.unwrap();
        let pct = offer_of(&wallet, DiscountKind::Percentage, OfferStatus::Available);
        let admin = reqwest::Client::new();
        admin
            .put(format!("{}/_sandbox/settings", sim.base_url))
            .json(&json!({"processing_delay_ms": 300}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();

        let txn = basket("txn_1");
        let (a, b) = tokio::join!(
            client.lock(&user.id, &pct.user_offer_id, &txn, "lock-1"),
            async {
                // The repeat goes once the first has arrived and is pending.
                for _ in 0..200 {
                    if ledger(&sim).await["request_ids"]["lock-1"].as_u64() >= Some(1) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                client
                    .lock(&user.id, &pct.user_offer_id, &txn, "lock-1")
                    .await
            }
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b);
        let ledger = ledger(&sim).await;
        assert!(
            ledger["request_ids"]["lock-1"].as_u64().unwrap() >= 3,
            "{ledger}"
        );
    }

    #[test]
    fn parses_sessionm_error_shapes() {
        let core = json!({"status": "error", "errors": {"code": "USER_NOT_FOUND"}});
        assert_eq!(parse_sessionm_error(&core).code, "user_not_found");
        let validation = json!({"status": "error", "errors": {
            "code": "validation", "message": "bad", "email": ["is invalid"]}});
        let r = parse_sessionm_error(&validation);
        assert_eq!(
            (r.code.as_str(), r.field.as_deref()),
            ("validation", Some("email"))
        );
        let list = json!({"errors": [{"code": "offer_locked", "message": "m"}]});
        assert_eq!(parse_sessionm_error(&list).code, "offer_locked");
        assert_eq!(parse_sessionm_error(&json!("junk")).code, "unknown");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("usr_1-2.3"), "usr_1-2.3");
    }
}
