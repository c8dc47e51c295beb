//! Epoint, the in-store POS: we inject accepted orders so the store's printer prints the
//! ticket. Epoint publishes no API, so the contract is ours: `docs/upstreams/epoint.md`.
//! Everything that would change if the real gateway differs lives in this module.

use super::{Call, Guard, Guards, System, UpstreamError, join, parse_plain_error};
use crate::config::EpointSettings;
use crate::domain::{Money, MoneyError};
use chrono::{DateTime, Utc};
use reqwest::RequestBuilder;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Epoint's refusal codes (`{"error": {"code", "message", "field"}}`).
pub mod codes {
    /// 409: the location's POS is not connected; nothing was printed. Definite: not retried.
    pub const POS_OFFLINE: &str = "pos_offline";
    /// 404: Epoint knows no such location.
    pub const LOCATION_UNKNOWN: &str = "location_unknown";
    /// 422: the order does not add up or misses a field; `field` names it.
    pub const INVALID_ORDER: &str = "invalid_order";
    /// 422: this `Idempotency-Key` was first used with a different body.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency_key_reused";
    /// 400: the `Idempotency-Key` header is missing or longer than 255 characters.
    pub const IDEMPOTENCY_KEY_INVALID: &str = "idempotency_key_invalid";
    /// 409: this external id was already injected under another idempotency key.
    pub const DUPLICATE_ORDER: &str = "duplicate_order";
    /// 404 on `GET …/orders/{external_id}`: never injected.
    pub const ORDER_NOT_FOUND: &str = "order_not_found";
    /// 401: missing or wrong `X-Api-Key`.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 400: the body is not JSON.
    pub const INVALID_REQUEST: &str = "invalid_request";
}

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// An accepted order, as the store's POS should print it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectOrder {
    /// Our order id; unique per location, and how an injection is found again.
    pub external_id: String,
    /// The short number the customer is called by.
    pub order_number: String,
    pub customer_name: String,
    /// When the customer placed the order. Build the order from stored data so a retry
    /// sends the same body: the same key with a different body is `idempotency_key_reused`.
    pub placed_at: DateTime<Utc>,
    /// `None`: as soon as possible.
    pub pickup_at: Option<DateTime<Utc>>,
    pub lines: Vec<InjectLine>,
    /// Σ (unit price + modifier prices) × quantity.
    pub subtotal: Money,
    pub discount: Money,
    pub tax: Money,
    /// subtotal − discount + tax: what the customer paid.
    pub total: Money,
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectLine {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    /// The product's base price, without modifiers (they carry their own price).
    pub unit_price: Money,
    pub modifiers: Vec<InjectModifier>,
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectModifier {
    pub id: String,
    pub name: String,
    /// Added to the line's unit price, per unit.
    pub price: Money,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Accepted,
    /// A status this client does not know yet.
    #[serde(other)]
    Other,
}

/// Epoint's proof that a ticket exists for the order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct InjectionReceipt {
    pub ticket_id: String,
    pub external_id: String,
    pub location_id: String,
    pub status: TicketStatus,
    pub printed: bool,
    pub accepted_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LocationStatus {
    pub location_id: String,
    pub online: bool,
    pub checked_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Wire shapes (amounts in integer minor units, with the order's currency)
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct WireOrder<'a> {
    external_id: &'a str,
    order_number: &'a str,
    placed_at: DateTime<Utc>,
    channel: &'static str,
    customer: WireCustomer<'a>,
    pickup: WirePickup,
    currency: &'a str,
    lines: Vec<WireLine<'a>>,
    totals: WireTotals,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

#[derive(Serialize)]
struct WireCustomer<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
enum WirePickup {
    Asap,
    Scheduled { at: DateTime<Utc> },
}

#[derive(Serialize)]
struct WireLine<'a> {
    product_id: &'a str,
    name: &'a str,
    quantity: u32,
    unit_price: i64,
    modifiers: Vec<WireModifier<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

#[derive(Serialize)]
struct WireModifier<'a> {
    id: &'a str,
    name: &'a str,
    price: i64,
}

#[derive(Serialize)]
struct WireTotals {
    subtotal: i64,
    discount: i64,
    tax: i64,
    total: i64,
}

fn wire_order(order: &InjectOrder) -> Result<WireOrder<'_>, UpstreamError> {
    let currency = &order.total.currency;
    let same = |m: &Money| -> Result<i64, UpstreamError> {
        if &m.currency == currency {
            Ok(m.minor)
        } else {
            Err(UpstreamError::Setup(format!(
                "epoint order {}: {}",
                order.external_id,
                MoneyError::CurrencyMismatch(currency.clone(), m.currency.clone())
            )))
        }
    };
    let mut lines = Vec::with_capacity(order.lines.len());
    for line in &order.lines {
        let mut modifiers = Vec::with_capacity(line.modifiers.len());
        for m in &line.modifiers {
            modifiers.push(WireModifier {
                id: &m.id,
                name: &m.name,
                price: same(&m.price)?,
            });
        }
        lines.push(WireLine {
            product_id: &line.product_id,
            name: &line.name,
            quantity: line.quantity,
            unit_price: same(&line.unit_price)?,
            modifiers,
            note: line.note.as_deref(),
        });
    }
    Ok(WireOrder {
        external_id: &order.external_id,
        order_number: &order.order_number,
        placed_at: order.placed_at,
        channel: "mobile_app",
        customer: WireCustomer {
            name: &order.customer_name,
        },
        pickup: match order.pickup_at {
            Some(at) => WirePickup::Scheduled { at },
            None => WirePickup::Asap,
        },
        currency: currency.code(),
        lines,
        totals: WireTotals {
            subtotal: same(&order.subtotal)?,
            discount: same(&order.discount)?,
            tax: same(&order.tax)?,
            total: order.total.minor,
        },
        note: order.note.as_deref(),
    })
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct EpointClient {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    /// Epoint's breaker and retry budget.
    guard: Guard,
}

impl fmt::Debug for EpointClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpointClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl EpointClient {
    /// Every Epoint call is a read or carries an idempotency key, so every one is retried.
    fn call(&self, operation: &'static str) -> Call<'_> {
        Call {
            system: System::Epoint,
            operation,
            parse_error: parse_plain_error,
            guard: &self.guard,
        }
    }

    pub fn new(
        base_url: &str,
        settings: &EpointSettings,
        guards: &Guards,
    ) -> Result<Self, UpstreamError> {
        reqwest::Url::parse(base_url)
            .map_err(|e| UpstreamError::Setup(format!("epoint base URL: {e}")))?;
        Ok(Self {
            http: super::http_client(settings.timeouts())?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
            guard: guards.get(System::Epoint).clone(),
        })
    }

    /// Injects an accepted order into the location's POS, which prints its ticket.
    ///
    /// Retried after a transient failure with the same `idempotency_key`, which replays
    /// the first acceptance instead of printing twice. A refusal (`pos_offline`,
    /// `location_unknown`, `invalid_order`, …) is definite. After an error that leaves the
    /// outcome unknown (a timeout), [`Self::find_order`] tells whether it landed.
    pub async fn inject_order(
        &self,
        location_id: &str,
        order: &InjectOrder,
        idempotency_key: &str,
    ) -> Result<InjectionReceipt, UpstreamError> {
        let body = wire_order(order)?;
        let path = format!("v1/locations/{}/orders", path_segment(location_id));
        let request = self
            .request(reqwest::Method::POST, &path)
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        self.call("epoint.inject_order").json(request).await
    }

    /// The ticket of an order injected earlier, or `None` if it never landed.
    pub async fn find_order(
        &self,
        location_id: &str,
        external_id: &str,
    ) -> Result<Option<InjectionReceipt>, UpstreamError> {
        let path = format!(
            "v1/locations/{}/orders/{}",
            path_segment(location_id),
            path_segment(external_id)
        );
        let request = self.request(reqwest::Method::GET, &path);
        match self.call("epoint.find_order").json(request).await {
            Ok(receipt) => Ok(Some(receipt)),
            Err(err)
                if err
                    .rejection()
                    .is_some_and(|(_, r)| r.code == codes::ORDER_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Whether the location's POS is connected and would take an injection now.
    pub async fn status(&self, location_id: &str) -> Result<LocationStatus, UpstreamError> {
        let path = format!("v1/locations/{}/status", path_segment(location_id));
        let request = self.request(reqwest::Method::GET, &path);
        self.call("epoint.status").json(request).await
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, join(&self.base_url, path))
            .header("X-Api-Key", self.api_key.expose_secret())
    }
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
    use crate::domain::Currency;
    use cbtl_sandbox::{
        Simulator,
        epoint::EpointSimConfig,
        faults::{FaultUpdate, Faults, Loss, LostAs},
    };
    use serde_json::{Value, json};

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::usd())
    }

    async fn setup(offline: &[&str]) -> (Simulator, EpointClient) {
        let config = EpointSimConfig {
            offline_locations: offline.iter().map(|s| (*s).to_owned()).collect(),
            ..EpointSimConfig::default()
        };
        let sim = cbtl_sandbox::epoint::start(config, Faults::new(0, 0.0))
            .await
            .expect("simulator starts");
        let client = EpointClient::new(
            &sim.base_url,
            &EpointSettings::default(),
            &crate::upstream::Guards::for_tests(),
        )
        .expect("client builds");
        (sim, client)
    }

    /// Two lattes at 4.00 with oat milk (+0.50) and a muffin at 3.25:
    /// subtotal 12.25, 2.00 off, 0.90 tax, total 11.15.
    fn order(external_id: &str) -> InjectOrder {
        InjectOrder {
            external_id: external_id.to_owned(),
            order_number: "A-17".into(),
            customer_name: "Ada L.".into(),
            placed_at: Utc::now(),
            pickup_at: None,
            lines: vec![
                InjectLine {
                    product_id: "prd_latte".into(),
                    name: "Latte".into(),
                    quantity: 2,
                    unit_price: usd(400),
                    modifiers: vec![InjectModifier {
                        id: "mod_oat".into(),
                        name: "Oat milk".into(),
                        price: usd(50),
                    }],
                    note: None,
                },
                InjectLine {
                    product_id: "prd_muffin".into(),
                    name: "Muffin".into(),
                    quantity: 1,
                    unit_price: usd(325),
                    modifiers: vec![],
                    note: Some("warmed".into()),
                },
            ],
            subtotal: usd(1225),
            discount: usd(200),
            tax: usd(90),
            total: usd(1115),
            note: None,
        }
    }

    async fn ledger(sim: &Simulator) -> Value {
        reqwest::get(format!("{}/_sandbox/ledger", sim.base_url))
            .await
            .expect("ledger")
            .json()
            .await
            .expect("ledger json")
    }

    async fn set_location(sim: &Simulator, id: &str, body: Value) {
        reqwest::Client::new()
            .put(format!("{}/_sandbox/locations/{id}", sim.base_url))
            .json(&body)
            .send()
            .await
            .expect("admin call")
            .error_for_status()
            .expect("admin accepted");
    }

    fn refusal(err: &UpstreamError) -> (u16, String, Option<String>) {
        let (status, r) = err.rejection().expect("a rejection");
        (status, r.code.clone(), r.field.clone())
    }

    #[tokio::test]
    async fn injects_finds_and_reports_status() {
        let (sim, client) = setup(&[]).await;
        assert_eq!(client.find_order("loc_1", "ord_1").await.unwrap(), None);

        let receipt = client
            .inject_order("loc_1", &order("ord_1"), "inject-ord_1")
            .await
            .unwrap();
        assert_eq!(receipt.status, TicketStatus::Accepted);
        assert!(receipt.printed);
        assert_eq!(
            (receipt.external_id.as_str(), receipt.location_id.as_str()),
            ("ord_1", "loc_1")
        );
        assert_eq!(
            client.find_order("loc_1", "ord_1").await.unwrap(),
            Some(receipt.clone())
        );
        assert_eq!(client.find_order("loc_2", "ord_1").await.unwrap(), None);

        let status = client.status("loc_1").await.unwrap();
        assert!(status.online);
        assert_eq!(status.location_id, "loc_1");

        let ledger = ledger(&sim).await;
        assert_eq!(ledger["orders"][0]["ticket_id"], receipt.ticket_id.as_str());
        assert_eq!(ledger["orders"][0]["idempotency_key"], "inject-ord_1");
        assert_eq!(ledger["orders"][0]["total"], 1115);
    }

    #[tokio::test]
    async fn the_same_key_replays_and_a_changed_body_is_refused() {
        let (sim, client) = setup(&[]).await;
        let original = order("ord_1");
        let first = client.inject_order("loc_1", &original, "k1").await.unwrap();
        let again = client.inject_order("loc_1", &original, "k1").await.unwrap();
        assert_eq!(first, again);

        let mut changed = original.clone();
        changed.customer_name = "Someone else".into();
        let err = client
            .inject_order("loc_1", &changed, "k1")
            .await
            .unwrap_err();
        assert_eq!(
            refusal(&err),
            (422, codes::IDEMPOTENCY_KEY_REUSED.into(), None)
        );

        // The same order under another key is a duplicate, not a second ticket.
        let err = client
            .inject_order("loc_1", &original, "k2")
            .await
            .unwrap_err();
        assert_eq!(refusal(&err).1, codes::DUPLICATE_ORDER);
        assert_eq!(ledger(&sim).await["orders"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_offline_pos_refuses_definitely_and_once() {
        let (sim, client) = setup(&["loc_off"]).await;
        sim.faults.reset_calls();
        let err = client
            .inject_order("loc_off", &order("ord_1"), "k1")
            .await
            .unwrap_err();
        assert_eq!(refusal(&err), (409, codes::POS_OFFLINE.into(), None));
        assert!(!err.is_transient());
        assert_eq!(
            sim.faults.calls()["POST /v1/locations/{location_id}/orders"],
            1,
            "a definite refusal is not retried"
        );
        assert!(!client.status("loc_off").await.unwrap().online);
        assert_eq!(client.find_order("loc_off", "ord_1").await.unwrap(), None);
        let ledger = ledger(&sim).await;
        assert_eq!(ledger["refusals"][0]["code"], codes::POS_OFFLINE);
        assert_eq!(ledger["refusals"][0]["external_id"], "ord_1");
        assert_eq!(ledger["orders"].as_array().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn locations_toggle_at_run_time() {
        let (sim, client) = setup(&[]).await;
        set_location(&sim, "loc_1", json!({"online": false})).await;
        let err = client
            .inject_order("loc_1", &order("ord_1"), "k1")
            .await
            .unwrap_err();
        assert_eq!(refusal(&err).1, codes::POS_OFFLINE);

        // A refusal is not stored under the key: the same key works once the POS is back.
        set_location(&sim, "loc_1", json!({"online": true})).await;
        let receipt = client
            .inject_order("loc_1", &order("ord_1"), "k1")
            .await
            .unwrap();
        assert!(receipt.printed);

        set_location(&sim, "loc_gone", json!({"online": true, "known": false})).await;
        let err = client
            .inject_order("loc_gone", &order("ord_2"), "k2")
            .await
            .unwrap_err();
        assert_eq!(refusal(&err), (404, codes::LOCATION_UNKNOWN.into(), None));
        let err = client.status("loc_gone").await.unwrap_err();
        assert_eq!(refusal(&err).1, codes::LOCATION_UNKNOWN);
        let err = client.find_order("loc_gone", "ord_2").await.unwrap_err();
        assert_eq!(refusal(&err).1, codes::LOCATION_UNKNOWN);
    }

    #[tokio::test]
    async fn invalid_orders_name_the_field() {
        let (_sim, client) = setup(&[]).await;
        let mut bad = order("ord_1");
        bad.lines[0].quantity = 0;
        let err = client.inject_order("loc_1", &bad, "k1").await.unwrap_err();
        assert_eq!(
            refusal(&err),
            (
                422,
                codes::INVALID_ORDER.into(),
                Some("lines[0].quantity".into())
            )
        );

        let mut bad = order("ord_2");
        bad.total = usd(999);
        let err = client.inject_order("loc_1", &bad, "k2").await.unwrap_err();
        assert_eq!(refusal(&err).2.as_deref(), Some("totals.total"));

        let mut bad = order("ord_3");
        bad.subtotal = usd(1200);
        bad.total = usd(1090);
        let err = client.inject_order("loc_1", &bad, "k3").await.unwrap_err();
        assert_eq!(refusal(&err).2.as_deref(), Some("totals.subtotal"));

        let mut mixed = order("ord_4");
        mixed.tax = Money::new(90, Currency::parse("EUR").unwrap());
        let err = client
            .inject_order("loc_1", &mixed, "k4")
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Setup(_)), "{err}");
    }

    /// The POS printed the ticket, then its answers were lost twice: every retry must
    /// carry the first try's key, so the POS replays that ticket (under another key it
    /// would refuse the order as a duplicate).
    #[tokio::test]
    async fn a_lost_answer_is_retried_with_the_same_key() {
        let (sim, client) = setup(&[]).await;
        let route = "POST /v1/locations/{location_id}/orders";
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
        sim.faults.reset_calls();
        let receipt = client
            .inject_order("loc_1", &order("ord_1"), "k1")
            .await
            .unwrap();
        assert!(receipt.printed);
        let sent: Vec<(Option<String>, String)> = sim
            .faults
            .log(Some(route))
            .into_iter()
            .map(|r| (r.key, r.fault))
            .collect();
        let k1 = Some("k1".to_owned());
        assert_eq!(
            sent,
            [
                (k1.clone(), "lost".to_owned()),
                (k1.clone(), "lost".to_owned()),
                (k1, "none".to_owned())
            ]
        );
        let ledger = ledger(&sim).await;
        assert_eq!(ledger["orders"].as_array().unwrap().len(), 1);
        assert_eq!(ledger["orders"][0]["ticket_id"], receipt.ticket_id.as_str());
    }

    #[tokio::test]
    async fn a_wrong_api_key_is_refused() {
        let (sim, _client) = setup(&[]).await;
        let settings = EpointSettings {
            api_key: SecretString::from("wrong"),
            ..EpointSettings::default()
        };
        let client = EpointClient::new(
            &sim.base_url,
            &settings,
            &crate::upstream::Guards::for_tests(),
        )
        .unwrap();
        let err = client.status("loc_1").await.unwrap_err();
        assert_eq!(refusal(&err), (401, codes::UNAUTHORIZED.into(), None));
    }

    #[tokio::test]
    async fn a_missing_idempotency_key_is_refused() {
        let (sim, _client) = setup(&[]).await;
        let response = reqwest::Client::new()
            .post(format!("{}/v1/locations/loc_1/orders", sim.base_url))
            .header("X-Api-Key", "epoint_sandbox_key")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], codes::IDEMPOTENCY_KEY_INVALID);
    }
}
