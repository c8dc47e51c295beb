//! Okya commerce (catalogue, carts, orders) and Okya Auth. The contract is ours to write,
//! since Okya publishes none: `docs/upstreams/okya.md`. Everything that would change if
//! the real contract differs lives in this one module.

pub mod auth;
pub mod catalog;
pub mod orders;

use super::{Call, Guard, Guards, System, UpstreamError, join, parse_plain_error};
use crate::config::OkyaSettings;
use crate::domain::{CartId, CartLineId, Currency, ModifierOptionId, Money, ProductId, StoreId};
use reqwest::{Method, RequestBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Money on Okya's wire: integer minor units and an ISO currency, like Stripe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMoney {
    pub amount: i64,
    pub currency: String,
}

impl WireMoney {
    pub fn from_money(money: &Money) -> Self {
        Self {
            amount: money.minor,
            currency: money.currency.code().to_owned(),
        }
    }

    /// Converts to our `Money`, refusing a currency code we cannot read.
    pub fn to_money(&self) -> Result<Money, UpstreamError> {
        let currency = Currency::parse(&self.currency).map_err(|e| UpstreamError::Protocol {
            system: System::Okya,
            operation: "money",
            reason: e.to_string(),
        })?;
        Ok(Money::new(self.amount, currency))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Store {
    pub id: String,
    pub name: String,
    pub address: String,
    pub is_open: bool,
    pub currency: String,
    /// Sales tax the store charges, in basis points of the taxable amount.
    pub tax_rate_bps: i64,
    /// The store's menu, in display order.
    pub product_ids: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: WireMoney,
    pub available: bool,
    pub modifier_groups: Vec<ModifierGroup>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModifierGroup {
    pub id: String,
    pub name: String,
    pub min_selections: u32,
    pub max_selections: u32,
    pub options: Vec<ModifierOption>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModifierOption {
    pub id: String,
    pub name: String,
    pub price_delta: WireMoney,
    pub available: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cart {
    pub id: String,
    pub store_id: String,
    pub customer_ref: Option<String>,
    pub currency: String,
    pub lines: Vec<CartLine>,
    pub subtotal: WireMoney,
    pub discount: WireMoney,
    pub tax: WireMoney,
    pub total: WireMoney,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CartLine {
    pub id: String,
    pub product_id: String,
    pub quantity: u32,
    pub modifier_option_ids: Vec<String>,
    pub unit_price: WireMoney,
    pub line_total: WireMoney,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateCart {
    pub store_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewLine {
    pub product_id: String,
    pub quantity: u32,
    #[serde(default)]
    pub modifier_option_ids: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LineQuantity {
    pub line_id: String,
    pub quantity: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddLines {
    pub lines: Vec<NewLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpdateLines {
    pub lines: Vec<LineQuantity>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveLines {
    pub line_ids: Vec<String>,
}

#[derive(Deserialize)]
struct StoresEnvelope {
    stores: Vec<Store>,
}

#[derive(Deserialize)]
struct ProductsEnvelope {
    products: Vec<Product>,
}

/// Okya's refusal codes that callers act on; anything else is passed through as text.
pub mod codes {
    pub const STORE_NOT_FOUND: &str = "store_not_found";
    pub const STORE_CLOSED: &str = "store_closed";
    pub const CART_NOT_FOUND: &str = "cart_not_found";
    pub const PRODUCT_NOT_FOUND: &str = "product_not_found";
    pub const PRODUCT_UNAVAILABLE: &str = "product_unavailable";
    pub const INVALID_QUANTITY: &str = "invalid_quantity";
    pub const INVALID_MODIFIER: &str = "invalid_modifier";
    pub const MODIFIER_SELECTION: &str = "modifier_selection";
    pub const LINE_NOT_FOUND: &str = "line_not_found";
    pub const CART_FULL: &str = "cart_full";
    pub const ORDER_NOT_FOUND: &str = "order_not_found";
    pub const INVALID_STATE: &str = "invalid_state";
    pub const PAYMENT_EXISTS: &str = "payment_exists";
    pub const CART_ALREADY_ORDERED: &str = "cart_already_ordered";
    pub const CART_EMPTY: &str = "cart_empty";
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    pub const ADJUSTMENT_TOO_LARGE: &str = "adjustment_too_large";
    pub const ADJUSTMENT_REFERENCE_REUSED: &str = "adjustment_reference_reused";
    pub const PAYMENT_AMOUNT_MISMATCH: &str = "payment_amount_mismatch";
    pub const INVALID_REQUEST: &str = "invalid_request";

    /// Okya's refusals of a submitted order that are about the cart, for the customer to
    /// act on; `None` for anything else (a bad key, a request Okya could not read), which
    /// is ours.
    pub fn order_failure(code: &str) -> Option<crate::domain::Failure> {
        use crate::domain::Failure;
        Some(match code {
            STORE_CLOSED => Failure::StoreClosed,
            STORE_NOT_FOUND | CART_NOT_FOUND => Failure::CartNotFound,
            CART_EMPTY => Failure::CartEmpty,
            CART_ALREADY_ORDERED => Failure::CartAlreadyOrdered,
            PRODUCT_UNAVAILABLE | PRODUCT_NOT_FOUND => Failure::ProductUnavailable,
            _ => return None,
        })
    }
}

#[derive(Clone)]
pub struct OkyaClient {
    http: reqwest::Client,
    base_url: String,
    auth_base_url: String,
    api_key: SecretString,
    /// Okya commerce's breaker and retry budget.
    guard: Guard,
    /// Okya Auth's: a separate system, which can be down while commerce is up.
    auth_guard: Guard,
}

impl std::fmt::Debug for OkyaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OkyaClient")
            .field("base_url", &self.base_url)
            .field("auth_base_url", &self.auth_base_url)
            .finish_non_exhaustive()
    }
}

impl OkyaClient {
    pub fn new(
        base_url: &str,
        auth_base_url: &str,
        settings: &OkyaSettings,
        guards: &Guards,
    ) -> Result<Self, UpstreamError> {
        Ok(Self {
            http: super::http_client(settings.timeouts())?,
            base_url: base_url.to_owned(),
            auth_base_url: auth_base_url.to_owned(),
            api_key: settings.api_key.clone(),
            guard: guards.get(System::Okya).clone(),
            auth_guard: guards.get(System::OkyaAuth).clone(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, join(&self.base_url, path))
            .bearer_auth(self.api_key.expose_secret())
    }

    fn call(&self, operation: &'static str) -> Call<'_> {
        Call {
            system: System::Okya,
            operation,
            parse_error: parse_plain_error,
            guard: &self.guard,
        }
    }

    /// Every store, or only those with the given ids (unknown ids are left out).
    #[tracing::instrument(skip_all, fields(count = ids.map(<[StoreId]>::len)))]
    pub async fn stores(&self, ids: Option<&[StoreId]>) -> Result<Vec<Store>, UpstreamError> {
        let mut request = self.request(Method::GET, "/v1/stores");
        if let Some(ids) = ids {
            request = request.query(&[("ids", comma_join(ids.iter().map(StoreId::as_str)))]);
        }
        let envelope: StoresEnvelope = self.call("stores.list").json(request).await?;
        Ok(envelope.stores)
    }

    /// The products with the given ids, in one call; unknown ids are left out.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn products(&self, ids: &[ProductId]) -> Result<Vec<Product>, UpstreamError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let request = self
            .request(Method::GET, "/v1/products")
            .query(&[("ids", comma_join(ids.iter().map(ProductId::as_str)))]);
        let envelope: ProductsEnvelope = self.call("products.list").json(request).await?;
        Ok(envelope.products)
    }

    /// Creates a cart. `idempotency_key` makes a retried create return the first cart.
    #[tracing::instrument(skip_all, fields(store_id = %store_id))]
    pub async fn create_cart(
        &self,
        store_id: &StoreId,
        customer_ref: Option<&str>,
        idempotency_key: &str,
    ) -> Result<Cart, UpstreamError> {
        let body = CreateCart {
            store_id: store_id.as_str().to_owned(),
            customer_ref: customer_ref.map(str::to_owned),
        };
        let request = self
            .request(Method::POST, "/v1/carts")
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        self.call("carts.create").json(request).await
    }

    /// The cart, or `None` when Okya does not know it.
    #[tracing::instrument(skip_all, fields(cart_id = %cart_id))]
    pub async fn cart(&self, cart_id: &CartId) -> Result<Option<Cart>, UpstreamError> {
        let request = self.request(Method::GET, &format!("/v1/carts/{cart_id}"));
        match self.call("carts.get").json(request).await {
            Ok(cart) => Ok(Some(cart)),
            Err(e) if is_code(&e, codes::CART_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(cart_id = %cart_id, lines = lines.len()))]
    pub async fn add_lines(
        &self,
        cart_id: &CartId,
        lines: &[(ProductId, u32, Vec<ModifierOptionId>)],
        idempotency_key: &str,
    ) -> Result<Cart, UpstreamError> {
        let body = AddLines {
            lines: lines
                .iter()
                .map(|(product, quantity, modifiers)| NewLine {
                    product_id: product.as_str().to_owned(),
                    quantity: *quantity,
                    modifier_option_ids: modifiers.iter().map(|m| m.as_str().to_owned()).collect(),
                })
                .collect(),
        };
        let request = self
            .request(Method::POST, &format!("/v1/carts/{cart_id}/lines"))
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        self.call("carts.lines.add").json(request).await
    }

    #[tracing::instrument(skip_all, fields(cart_id = %cart_id, lines = lines.len()))]
    pub async fn update_lines(
        &self,
        cart_id: &CartId,
        lines: &[(CartLineId, u32)],
        idempotency_key: &str,
    ) -> Result<Cart, UpstreamError> {
        let body = UpdateLines {
            lines: lines
                .iter()
                .map(|(line, quantity)| LineQuantity {
                    line_id: line.as_str().to_owned(),
                    quantity: *quantity,
                })
                .collect(),
        };
        let request = self
            .request(Method::PATCH, &format!("/v1/carts/{cart_id}/lines"))
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        self.call("carts.lines.update").json(request).await
    }

    #[tracing::instrument(skip_all, fields(cart_id = %cart_id, lines = line_ids.len()))]
    pub async fn remove_lines(
        &self,
        cart_id: &CartId,
        line_ids: &[CartLineId],
        idempotency_key: &str,
    ) -> Result<Cart, UpstreamError> {
        let body = RemoveLines {
            line_ids: line_ids.iter().map(|l| l.as_str().to_owned()).collect(),
        };
        let request = self
            .request(Method::POST, &format!("/v1/carts/{cart_id}/lines/remove"))
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        self.call("carts.lines.remove").json(request).await
    }
}

/// True when the upstream refused the call with this Okya error code.
pub fn is_code(err: &UpstreamError, code: &str) -> bool {
    err.rejection().is_some_and(|(_, r)| r.code == code)
}

fn comma_join<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    ids.collect::<Vec<_>>().join(",")
}
