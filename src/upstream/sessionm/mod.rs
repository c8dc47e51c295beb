//! SessionM loyalty, as SessionM's developer documentation describes it
//! (`docs/upstreams/sessionm.md` cites the page of every call):
//! - the **Core API** (`{core_url}/priv/v1/apps/{api_key}/…`, Basic `api_key:api_secret`)
//!   for members, each write made idempotent by a `Message-ID` header;
//! - the **POS/eCommerce API** (`{pos_url}/api/2.0/…`, Basic `pos_api_key:pos_api_secret`)
//!   for offers and transactions, each call wrapped in the general request container whose
//!   `request_id` is its idempotency.
//!
//! Amounts on the wire are decimals in currency units; [`wire`] converts them, once, from
//! and to our integer minor units. Everything public material leaves open lives in
//! [`wire`] too.

#[cfg(test)]
mod tests;
mod wire;

use super::{Call, Rejection, System, UpstreamError, join};
use crate::config::SessionmSettings;
use crate::domain::{Currency, Money, MoneyError};
use chrono::{DateTime, Utc};
use reqwest::RequestBuilder;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use std::{collections::BTreeMap, fmt, time::Duration};

pub(crate) use wire::rejection as parse_sessionm_error;

/// The refusal codes the flows act on, lower-cased as [`parse_sessionm_error`] leaves
/// them. SessionM publishes the Core API's generic codes; the offer codes are not
/// published (see the contract's "Unconfirmed" table) and are ours until onboarding.
pub mod codes {
    /// Basic credentials, API key or `client_id` refused (Core generic code).
    pub const ACCESS_DENIED: &str = "access_denied";
    /// Missing or malformed field (Core generic code).
    pub const VALIDATION: &str = "validation";
    /// No such member (Core generic code).
    pub const USER_NOT_FOUND: &str = "user_not_found";
    /// No such object (Core generic code).
    pub const NOT_FOUND: &str = "not_found";
    pub const OFFER_NOT_FOUND: &str = "offer_not_found";
    /// The offer is locked by another transaction.
    pub const OFFER_LOCKED: &str = "offer_locked";
    pub const OFFER_REDEEMED: &str = "offer_redeemed";
    pub const OFFER_EXPIRED: &str = "offer_expired";
    /// The offer gives no discount on this basket (e.g. below its minimum spend, which
    /// lookup does not check).
    pub const OFFER_NOT_APPLICABLE: &str = "offer_not_applicable";
    /// Reinstate asked for an offer that is locked, not redeemed.
    pub const OFFER_NOT_REDEEMED: &str = "offer_not_redeemed";

    /// SessionM's refusals of a voucher that are about the voucher, for the customer to
    /// act on; `None` for anything else (credentials, a request SessionM could not read),
    /// which is ours.
    pub fn voucher_failure(code: &str) -> Option<crate::domain::Failure> {
        use crate::domain::Failure;
        Some(match code {
            OFFER_EXPIRED => Failure::VoucherExpired,
            OFFER_REDEEMED => Failure::VoucherAlreadyUsed,
            OFFER_LOCKED => Failure::VoucherInUse,
            OFFER_NOT_FOUND | USER_NOT_FOUND => Failure::VoucherNotFound,
            OFFER_NOT_APPLICABLE => Failure::VoucherNotApplicable,
            _ => return None,
        })
    }
}

/// SessionM requires an `employee_id` on unlock and reinstate, and transactions name the
/// POS employee; the app has no cashier.
pub const EMPLOYEE_ID: &str = "cbtl-app";

/// How often a "pending processing" answer is waited out before giving up (transiently).
const PENDING_RETRIES: u32 = 6;

// ---------------------------------------------------------------------------------------
// Public types (amounts as `Money`; see `wire` for SessionM's shapes)
// ---------------------------------------------------------------------------------------

/// A member to create in SessionM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// E.164; sent as the member's mobile number.
    pub phone: Option<String>,
    /// Our customer id: how the member is found again whatever happened to an answer.
    pub external_id: String,
}

/// A SessionM member from the Core API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionmUser {
    pub id: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    /// `None` when the tenant does not show points on members (unknown, never 0).
    pub available_points: Option<i64>,
    pub tier: Option<String>,
}

/// One basket line as SessionM sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionLine {
    pub line_id: String,
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    /// Price of one unit, modifiers included.
    pub unit_price: Money,
}

/// A basket: what `lookup`, `lock` and `redeem` price offers against, and the lines of a
/// sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Stable across re-locks of the same basket (SessionM updates a lock by this id).
    pub transaction_id: String,
    /// Okya's store id; the client sends SessionM's id for it (`sessionm.store_ids`).
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

/// What an offer gives. A type SessionM added that we do not know is kept by name: the
/// offer is then shown as unusable, not dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscountKind {
    /// One item free: the most expensive unit in the basket.
    FreeItem,
    FixedAmount,
    Percentage,
    Unrecognised(String),
}

/// Where an offer is in the wallet; an unknown status is kept by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfferStatus {
    Available,
    Locked,
    Redeemed,
    Expired,
    Unrecognised(String),
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
    /// The discount on the basket given to `lookup`; `None` without a basket.
    pub discount_amount: Option<Money>,
}

impl Offer {
    /// Why this offer cannot be used by the app, when SessionM described it in a way we
    /// do not understand (a new status or discount type, an unreadable field).
    pub fn unusable_reason(&self) -> Option<String> {
        if let OfferStatus::Unrecognised(status) = &self.status {
            return Some(format!(
                "SessionM reports a status this app does not know ({status})"
            ));
        }
        if let DiscountKind::Unrecognised(kind) = &self.discount.kind {
            return Some(format!(
                "SessionM reports a discount this app does not know ({kind})"
            ));
        }
        None
    }
}

/// The member's balance as the POS lookup reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoyaltySummary {
    pub user_id: String,
    /// `None` when SessionM's answer had no points figure: unknown, never 0.
    pub available_points: Option<i64>,
    pub tier: Option<String>,
}

/// `lookup`'s answer: without a basket every offer in the wallet (expired ones included);
/// with one, only the offers that may apply, each with its discount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub user: LoyaltySummary,
    pub offers: Vec<Offer>,
}

/// The Discount object a lock or redeem answered. `object` is SessionM's object exactly as
/// received; it goes back unchanged in [`SendTransaction::discounts`].
#[derive(Clone, Debug, PartialEq)]
pub struct Discount {
    pub user_offer_id: String,
    pub name: Option<String>,
    pub amount: Money,
    pub object: Value,
}

/// A paid purchase, sent after payment so SessionM credits points and finalises the
/// redemption of locked offers. Keep every field stable across retries of one
/// `request_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct SendTransaction {
    /// The member (SessionM's id) the payment is attributed to.
    pub user_id: String,
    pub transaction: Transaction,
    pub discounts: Vec<Discount>,
    pub tax: Money,
    /// What the customer paid: subtotal − discounts + tax.
    pub paid: Money,
    /// Our payment's id (the PaymentIntent), as the Payment object's `payment_id`.
    pub payment_id: String,
    /// When the order was placed (`open_time`).
    pub opened_at: DateTime<Utc>,
    /// When this version of the transaction was made (`modified_time`).
    pub modified_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// Where the two APIs are and which SessionM stores stand for Okya's.
#[derive(Clone, Debug, Default)]
pub struct SessionmEndpoints {
    pub core_url: String,
    pub pos_url: String,
    /// Okya store id → SessionM store id.
    pub store_ids: BTreeMap<String, String>,
    /// SessionM's store for calls tied to no store (the wallet).
    pub ecommerce_store_id: String,
}

#[derive(Clone)]
pub struct SessionmClient {
    http: reqwest::Client,
    endpoints: SessionmEndpoints,
    api_key: String,
    api_secret: SecretString,
    pos_api_key: String,
    pos_api_secret: SecretString,
    client_id: String,
    /// SessionM's breaker and retry budget (Core and POS hosts alike: one tenant).
    guard: super::Guard,
}

impl fmt::Debug for SessionmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionmClient")
            .field("endpoints", &self.endpoints)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SessionmClient {
    /// # Errors
    /// `Setup` when a URL does not parse.
    pub fn new(
        endpoints: SessionmEndpoints,
        settings: &SessionmSettings,
        guards: &super::Guards,
    ) -> Result<Self, UpstreamError> {
        for (name, url) in [("core", &endpoints.core_url), ("pos", &endpoints.pos_url)] {
            reqwest::Url::parse(url)
                .map_err(|e| UpstreamError::Setup(format!("sessionm {name} URL: {e}")))?;
        }
        Ok(Self {
            http: super::http_client(settings.timeouts())?,
            endpoints: SessionmEndpoints {
                core_url: endpoints.core_url.trim_end_matches('/').to_owned(),
                pos_url: endpoints.pos_url.trim_end_matches('/').to_owned(),
                ..endpoints
            },
            api_key: settings.api_key.clone(),
            api_secret: settings.api_secret.clone(),
            pos_api_key: settings.pos_api_key.clone(),
            pos_api_secret: settings.pos_api_secret.clone(),
            client_id: settings.client_id.clone(),
            guard: guards.get(System::Sessionm).clone(),
        })
    }

    /// SessionM's store id for an Okya store.
    ///
    /// # Errors
    /// `Setup` (ours, not transient) when `sessionm.store_ids` has no entry for it.
    pub fn store_id(&self, okya_store_id: &str) -> Result<&str, UpstreamError> {
        self.endpoints
            .store_ids
            .get(okya_store_id)
            .map(String::as_str)
            .ok_or_else(|| {
                UpstreamError::Setup(format!(
                    "sessionm.store_ids has no SessionM store for Okya store {okya_store_id}"
                ))
            })
    }

    /// The Okya stores among `okya_store_ids` that have no SessionM store.
    pub fn stores_without_mapping<'a>(
        &self,
        okya_store_ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        okya_store_ids
            .into_iter()
            .filter(|id| !self.endpoints.store_ids.contains_key(*id))
            .map(str::to_owned)
            .collect()
    }

    // ----- Core API ----------------------------------------------------------------

    /// The member for our customer, made if there is none yet: found by `external_id`
    /// first, else created under `message_id` (SessionM replays a repeated Message-ID for
    /// 30 minutes); a refusal of the creation is checked once more by `external_id`
    /// before it is believed, since a creation whose answer was lost after the replay
    /// window is only visible that way.
    ///
    /// # Errors
    /// Transient errors to retry with the same `message_id`; a refusal (e.g. the email
    /// belongs to another member) when no member has our `external_id`.
    pub async fn ensure_user(
        &self,
        user: &NewUser,
        message_id: &str,
    ) -> Result<SessionmUser, UpstreamError> {
        if let Some(existing) = self.find_user_by_external_id(&user.external_id).await? {
            return Ok(existing);
        }
        match self.create_user(user, message_id).await {
            Ok(created) => Ok(created),
            Err(err) if err.rejection().is_some() => {
                match self.find_user_by_external_id(&user.external_id).await? {
                    Some(existing) => Ok(existing),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// `POST /priv/v1/apps/{api_key}/users` with `Message-ID: message_id`.
    pub async fn create_user(
        &self,
        user: &NewUser,
        message_id: &str,
    ) -> Result<SessionmUser, UpstreamError> {
        let operation = "core.create_user";
        let body = wire::NewUserBody {
            user: wire::NewUserFields {
                email: &user.email,
                first_name: &user.first_name,
                last_name: &user.last_name,
                external_id: &user.external_id,
                opted_in: true,
                phone_numbers: user
                    .phone
                    .as_deref()
                    .map(|phone| wire::PhoneNumber {
                        phone_number: wire::phone(phone),
                        phone_type: "mobile",
                    })
                    .into_iter()
                    .collect(),
            },
        };
        let request = self
            .core_request(reqwest::Method::POST, "users")
            .header("Message-ID", message_id)
            .json(&body);
        let body = self.core(operation, request).await?;
        wire::member(&body).map_err(|e| protocol(operation, e))
    }

    /// A member with their points balance and tier; an unknown id is a rejection with
    /// code `user_not_found`.
    pub async fn get_user(&self, user_id: &str) -> Result<SessionmUser, UpstreamError> {
        let operation = "core.get_user";
        let path = format!("users/{}", path_segment(user_id));
        let body = self
            .core(operation, self.core_request(reqwest::Method::GET, &path))
            .await?;
        wire::member(&body).map_err(|e| protocol(operation, e))
    }

    /// The member created with our `external_id`, if any.
    pub async fn find_user_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<SessionmUser>, UpstreamError> {
        let operation = "core.get_external_user";
        let path = format!("external/users/{}", path_segment(external_id));
        match self
            .core(operation, self.core_request(reqwest::Method::GET, &path))
            .await
        {
            Ok(body) => wire::member(&body)
                .map(Some)
                .map_err(|e| protocol(operation, e)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The points a transaction earned, read from the member statement once SessionM has
    /// processed it; `None` while it has not (the send is asynchronous).
    pub async fn transaction_points(
        &self,
        external_id: &str,
        transaction_id: &str,
    ) -> Result<Option<i64>, UpstreamError> {
        let operation = "core.member_statement";
        let path = format!(
            "external/users/{}/timelines/END_USER_MEMBER_STATEMENT",
            path_segment(external_id)
        );
        let body = self
            .core(operation, self.core_request(reqwest::Method::GET, &path))
            .await?;
        wire::statement_points(&body, transaction_id).map_err(|e| protocol(operation, e))
    }

    fn core_request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let url = join(
            &self.endpoints.core_url,
            &format!("priv/v1/apps/{}/{path}", path_segment(&self.api_key)),
        );
        self.http
            .request(method, url)
            .basic_auth(&self.api_key, Some(self.api_secret.expose_secret()))
    }

    /// One Core call: a 200 is only a success with `"status": "ok"`.
    async fn core(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<Value, UpstreamError> {
        let call = Call {
            system: System::Sessionm,
            operation,
            parse_error: parse_sessionm_error,
            guard: &self.guard,
        };
        let body: Value = call.json(request).await?;
        match wire::outcome(&body) {
            wire::Outcome::Ok => Ok(body),
            wire::Outcome::Refused => Err(rejected(operation, 200, parse_sessionm_error(&body))),
            wire::Outcome::Unreadable => Err(protocol(operation, unreadable(&body))),
        }
    }

    // ----- POS / eCommerce API -----------------------------------------------------

    /// The member's offers; given a basket, only those that may apply, each with its
    /// discount. An offer SessionM describes in a way we do not know is kept and marked
    /// (see [`Offer::unusable_reason`]); one without an id cannot be shown and is left
    /// out with a warning.
    pub async fn lookup(
        &self,
        user_id: &str,
        transaction: Option<&Transaction>,
        request_id: &str,
    ) -> Result<Lookup, UpstreamError> {
        let operation = "pos.lookup";
        #[derive(Serialize)]
        struct Payload<'a> {
            user_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            transaction: Option<Value>,
        }
        let payload = Payload {
            user_id,
            transaction: transaction
                .map(|t| wire::transaction(t, None))
                .transpose()
                .map_err(|e| bad_input(operation, &e))?,
        };
        let store_id = match transaction {
            Some(t) => self.store_id(&t.store_id)?,
            None => &self.endpoints.ecommerce_store_id,
        };
        let body = self
            .pos(operation, "api/2.0/lookup", store_id, request_id, &payload)
            .await?;
        // Fixed amounts are in the program's currency: the basket's, or USD for the
        // wallet (the sandbox program's; see the contract's "Money").
        let currency = transaction.map_or_else(Currency::usd, |t| t.currency().clone());
        let user = &body["user"];
        let mut offers = Vec::new();
        for raw in body["offers"].as_array().into_iter().flatten() {
            match wire::offer(raw, Some(&currency)) {
                Ok(offer) => offers.push(offer),
                Err(e) => match raw["user_offer_id"].as_str() {
                    Some(id) => offers.push(unreadable_offer(id, raw, &e)),
                    None => tracing::warn!(error = %e, "SessionM listed an offer without an id"),
                },
            }
        }
        Ok(Lookup {
            user: LoyaltySummary {
                user_id: user["id"].as_str().unwrap_or(user_id).to_owned(),
                available_points: match wire::points(&user["available_points"]) {
                    Ok(points) => Some(points),
                    Err(e) => {
                        tracing::warn!(error = %e, "SessionM's lookup gave no points figure");
                        None
                    }
                },
                tier: user["tier"].as_str().map(str::to_owned),
            },
            offers,
        })
    }

    /// Locks an offer to a basket just before payment and returns its Discount object.
    /// Locking again with the same transaction id (the basket changed) updates it.
    pub async fn lock(
        &self,
        user_offer_id: &str,
        transaction: &Transaction,
        request_id: &str,
    ) -> Result<Discount, UpstreamError> {
        self.apply_offer(
            "pos.lock",
            "api/2.0/lock",
            user_offer_id,
            transaction,
            request_id,
        )
        .await
    }

    /// Consumes an offer at once (available, or locked by this basket).
    pub async fn redeem(
        &self,
        user_offer_id: &str,
        transaction: &Transaction,
        request_id: &str,
    ) -> Result<Discount, UpstreamError> {
        self.apply_offer(
            "pos.redeem",
            "api/2.0/redeem",
            user_offer_id,
            transaction,
            request_id,
        )
        .await
    }

    /// Releases a lock (the payment failed); releasing an unlocked offer succeeds.
    pub async fn unlock(&self, user_offer_id: &str, request_id: &str) -> Result<(), UpstreamError> {
        self.release("pos.unlock", "api/2.0/unlock", user_offer_id, request_id)
            .await
    }

    /// Reverses a redemption, returning the offer to the wallet.
    pub async fn reinstate(
        &self,
        user_offer_id: &str,
        request_id: &str,
    ) -> Result<(), UpstreamError> {
        self.release(
            "pos.reinstate",
            "api/2.0/reinstate",
            user_offer_id,
            request_id,
        )
        .await
    }

    /// Queues a paid purchase at SessionM (the send is asynchronous: `OK` means queued).
    /// Points appear later in [`Self::transaction_points`].
    pub async fn send_transaction(
        &self,
        sale: &SendTransaction,
        request_id: &str,
    ) -> Result<(), UpstreamError> {
        let operation = "pos.send_transaction";
        let payload = wire::transaction(&sale.transaction, Some(sale))
            .map_err(|e| bad_input(operation, &e))?;
        let store_id = self.store_id(&sale.transaction.store_id)?;
        self.pos(
            operation,
            "api/2.0/send_transaction",
            store_id,
            request_id,
            &payload,
        )
        .await
        .map(drop)
    }

    /// Returns a whole purchase, as SessionM's "Send Return Transaction" describes: the
    /// original transaction sent again with a new modified time and its items removed
    /// (nothing left paid), under a new `request_id`. SessionM then takes back the points.
    pub async fn send_return(
        &self,
        original: &SendTransaction,
        returned_at: DateTime<Utc>,
        request_id: &str,
    ) -> Result<(), UpstreamError> {
        let currency = original.transaction.currency().clone();
        let mut returned = original.clone();
        returned.transaction.lines.clear();
        returned.transaction.subtotal = Money::zero(currency.clone());
        returned.tax = Money::zero(currency.clone());
        returned.paid = Money::zero(currency);
        returned.discounts.clear();
        returned.modified_at = returned_at;
        self.send_transaction(&returned, request_id).await
    }

    async fn apply_offer(
        &self,
        operation: &'static str,
        path: &str,
        user_offer_id: &str,
        transaction: &Transaction,
        request_id: &str,
    ) -> Result<Discount, UpstreamError> {
        let payload = wire::OfferOnTransaction {
            offer_lookup_code: user_offer_id,
            offer_lookup_type: "UserOfferId",
            transaction: wire::transaction(transaction, None)
                .map_err(|e| bad_input(operation, &e))?,
        };
        let store_id = self.store_id(&transaction.store_id)?;
        let body = self
            .pos(operation, path, store_id, request_id, &payload)
            .await?;
        wire::discount(user_offer_id, body, transaction.currency())
            .map_err(|e| protocol(operation, e))
    }

    async fn release(
        &self,
        operation: &'static str,
        path: &str,
        user_offer_id: &str,
        request_id: &str,
    ) -> Result<(), UpstreamError> {
        let payload = wire::OfferRelease {
            user_offer_id,
            employee_id: EMPLOYEE_ID,
        };
        let store_id = self.endpoints.ecommerce_store_id.clone();
        self.pos(operation, path, &store_id, request_id, &payload)
            .await
            .map(drop)
    }

    /// One POS call: the general request container, Basic credentials, and the "pending
    /// processing" answer waited out under the same `request_id`. Answers the container's
    /// `payload` (`null` when it has none).
    async fn pos<P: Serialize>(
        &self,
        operation: &'static str,
        path: &str,
        store_id: &str,
        request_id: &str,
        payload: &P,
    ) -> Result<Value, UpstreamError> {
        let envelope = wire::PosRequest {
            store_id,
            client_id: &self.client_id,
            request_id,
            culture: wire::CULTURE,
            request_payload: payload,
        };
        let request = self
            .http
            .post(join(&self.endpoints.pos_url, path))
            .basic_auth(&self.pos_api_key, Some(self.pos_api_secret.expose_secret()))
            .json(&envelope);
        let call = Call {
            system: System::Sessionm,
            operation,
            parse_error: parse_sessionm_error,
            guard: &self.guard,
        };
        let mut waits = 0;
        loop {
            let Some(attempt) = request.try_clone() else {
                return Err(UpstreamError::Setup(
                    "streaming bodies cannot be sent".into(),
                ));
            };
            let (status, rejection) = match call.json::<Value>(attempt).await {
                Ok(mut body) => match wire::outcome(&body) {
                    wire::Outcome::Ok => {
                        return Ok(body.get_mut("payload").map(Value::take).unwrap_or_default());
                    }
                    wire::Outcome::Refused => (200, parse_sessionm_error(&body)),
                    wire::Outcome::Unreadable => {
                        return Err(protocol(operation, unreadable(&body)));
                    }
                },
                Err(UpstreamError::Rejected {
                    status, rejection, ..
                }) => (status, *rejection),
                Err(other) => return Err(other),
            };
            if !wire::is_pending(&rejection.code) {
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

/// An offer whose fields could not be read: still listed, so the customer sees it, and
/// marked unusable with the reason.
fn unreadable_offer(user_offer_id: &str, raw: &Value, error: &str) -> Offer {
    tracing::warn!(
        user_offer_id,
        error,
        "SessionM offer could not be read; shown as unusable"
    );
    Offer {
        user_offer_id: user_offer_id.to_owned(),
        offer_id: raw["offer_id"].as_str().unwrap_or_default().to_owned(),
        name: raw["name"].as_str().unwrap_or("Reward").to_owned(),
        description: raw["description"].as_str().unwrap_or_default().to_owned(),
        discount: OfferDiscount {
            kind: DiscountKind::Unrecognised(format!("unreadable: {error}")),
            amount: None,
            percentage: None,
        },
        expires_at: None,
        status: OfferStatus::Unrecognised(format!("unreadable: {error}")),
        discount_amount: None,
    }
}

fn unreadable(body: &Value) -> String {
    let text = body.to_string();
    format!(
        "an answer that is neither a success nor a refusal: {}",
        text.chars().take(200).collect::<String>()
    )
}

fn is_not_found(err: &UpstreamError) -> bool {
    err.rejection().is_some_and(|(status, r)| {
        status == 404 || r.code == codes::USER_NOT_FOUND || r.code == codes::NOT_FOUND
    })
}

fn rejected(operation: &'static str, status: u16, rejection: Rejection) -> UpstreamError {
    UpstreamError::Rejected {
        system: System::Sessionm,
        operation,
        status,
        rejection: Box::new(rejection),
    }
}

/// An answer that cannot be read: for a write, an unknown outcome (see
/// [`UpstreamError::Unreadable`]).
fn protocol(operation: &'static str, err: impl fmt::Display) -> UpstreamError {
    UpstreamError::Unreadable {
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

/// Waits for a "pending processing" request: 50 ms doubling to 1 s, plus up to a quarter.
const PENDING_WAITS: crate::retry::RetryPolicy = crate::retry::RetryPolicy::new(
    Duration::from_millis(50),
    Duration::from_secs(1),
    crate::retry::Jitter::Added(25),
);

fn pending_backoff(waits: u32) -> Duration {
    PENDING_WAITS.delay(waits + 1)
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
