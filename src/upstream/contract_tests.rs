//! The clients against their contracts' documented examples (`tests/fixtures/`, see its
//! README), through a stand-in upstream that answers each route with the documented
//! response and keeps what the client sent: every documented response reads, and every
//! request the client builds from the documented inputs is the documented body. The
//! simulators' side of the same fixtures is `sandbox/tests/contracts.rs`. (SessionM's is
//! `sessionm/tests.rs`.)

use super::{UpstreamError, epoint, okya, stripe};
use crate::config::{EpointSettings, OkyaSettings, StripeSettings};
use crate::domain::{CartId, CartLineId, Currency, ModifierOptionId, Money, ProductId, StoreId};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
};
use cbtl_sandbox::contract::{self, same_shape};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

fn fixture(upstream: &str, name: &str) -> Value {
    contract::fixture(upstream, name).unwrap_or_else(|e| panic!("{e}"))
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
struct Seen {
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The form body's or the query's parameter names.
    fn parameters(&self) -> Vec<String> {
        let raw = if self.body.is_empty() {
            self.query.clone().unwrap_or_default().into_bytes()
        } else {
            self.body.to_vec()
        };
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&raw)
            .expect("form-encoded")
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Routes {
    /// `"POST /v1/carts"` → the status and body to answer.
    answers: HashMap<String, (u16, Value)>,
    seen: HashMap<String, Vec<Seen>>,
}

/// An upstream that answers what it is told and keeps what it is sent.
struct StandIn {
    url: String,
    routes: Arc<Mutex<Routes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    async fn start() -> Self {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let app = Router::new()
            .fallback(
                |State(routes): State<Arc<Mutex<Routes>>>,
                 method: Method,
                 uri: Uri,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let route = format!("{method} {}", uri.path());
                    let mut routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
                    routes.seen.entry(route.clone()).or_default().push(Seen {
                        query: uri.query().map(str::to_owned),
                        headers,
                        body,
                    });
                    match routes.answers.get(&route) {
                        Some((status, body)) => (
                            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                            axum::Json(body.clone()),
                        )
                            .into_response(),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            )
            .with_state(routes.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, routes, task }
    }

    fn answer(&self, route: &str, status: u16, body: Value) {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answers
            .insert(route.to_owned(), (status, body));
    }

    /// The last request on `route`.
    fn last(&self, route: &str) -> Seen {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .get(route)
            .and_then(|seen| seen.last().cloned())
            .unwrap_or_else(|| panic!("nothing sent to {route}"))
    }
}

fn rejection(error: &UpstreamError) -> (u16, String, Option<String>) {
    let (status, rejection) = error.rejection().expect("a refusal");
    (status, rejection.code.clone(), rejection.field.clone())
}

#[tokio::test]
async fn the_okya_client_reads_every_documented_answer_and_sends_the_documented_bodies() {
    let okya_doc = |name: &str| fixture("okya", name);
    let okya = StandIn::start().await;
    let client = okya::OkyaClient::new(
        &okya.url,
        &okya.url,
        &OkyaSettings::default(),
        &crate::upstream::Guards::for_tests(),
    )
    .expect("a client");
    let id = |raw: &str| raw.to_owned();
    let store = StoreId::parse("str_pasadena").expect("a store id");
    let cart = CartId::parse("crt_0000014429").expect("a cart id");

    okya.answer("GET /v1/stores", 200, okya_doc("stores.response.json"));
    let stores = client.stores(None).await.expect("stores");
    assert_eq!(stores[0].tax_rate_bps, 1025);
    assert_eq!(
        okya.last("GET /v1/stores").header("authorization"),
        format!(
            "Bearer {}",
            crate::config::sandbox_credentials::OKYA_API_KEY
        )
    );
    okya.answer("GET /v1/products", 200, okya_doc("products.response.json"));
    let cortado = ProductId::parse("prd_cortado").expect("a product id");
    let products = client.products(&[cortado]).await.expect("products");
    assert_eq!(products[0].modifier_groups.len(), 2);

    // Carts: the documented inputs make exactly the documented bodies.
    okya.answer("POST /v1/carts", 201, okya_doc("create_cart.response.json"));
    let created = client
        .create_cart(&store, Some("acc_0000093318"), "key-1")
        .await
        .expect("a cart");
    assert_eq!(created.customer_ref, None);
    let sent = okya.last("POST /v1/carts");
    assert_eq!(sent.json(), okya_doc("create_cart.request.json"));
    assert_eq!(sent.header("idempotency-key"), "key-1");

    let lines = "POST /v1/carts/crt_0000014429/lines";
    okya.answer(lines, 200, okya_doc("add_lines.response.json"));
    let option = |raw: &str| ModifierOptionId::parse(raw).expect("an option id");
    let added = client
        .add_lines(
            &cart,
            &[
                (
                    ProductId::parse("prd_latte").expect("a product id"),
                    2,
                    vec![option("opt_size_regular"), option("opt_milk_oat")],
                ),
                (
                    ProductId::parse("prd_croissant").expect("a product id"),
                    1,
                    vec![],
                ),
            ],
            "key-2",
        )
        .await
        .expect("lines added");
    assert_eq!(added.total.amount, 1764);
    // "`modifier_option_ids` may be omitted, which means `[]`": ours always says it.
    let mut documented = okya_doc("add_lines.request.json");
    documented["lines"][1]["modifier_option_ids"] = json!([]);
    assert_eq!(okya.last(lines).json(), documented);

    let patch = "PATCH /v1/carts/crt_0000014429/lines";
    okya.answer(patch, 200, okya_doc("add_lines.response.json"));
    let line = CartLineId::parse("ln_0000023886").expect("a line id");
    client
        .update_lines(&cart, &[(line, 1)], "key-3")
        .await
        .expect("updated");
    assert_eq!(
        okya.last(patch).json(),
        okya_doc("update_lines.request.json")
    );

    let remove = "POST /v1/carts/crt_0000014429/lines/remove";
    okya.answer(remove, 200, okya_doc("create_cart.response.json"));
    let line = CartLineId::parse("ln_0000038990").expect("a line id");
    client
        .remove_lines(&cart, &[line], "key-4")
        .await
        .expect("removed");
    assert_eq!(
        okya.last(remove).json(),
        okya_doc("remove_lines.request.json")
    );

    // The refusal shape: its code and field reach the caller.
    okya.answer(lines, 422, okya_doc("error.response.json"));
    let refused = client
        .add_lines(&cart, &[], "key-5")
        .await
        .expect_err("refused");
    assert_eq!(
        rejection(&refused),
        (
            422,
            okya::codes::MODIFIER_SELECTION.to_owned(),
            Some("lines[0].modifier_option_ids".to_owned())
        )
    );

    // Orders.
    let order = okya_doc("order.response.json");
    okya.answer("POST /v1/orders", 201, order.clone());
    let submitted = client
        .create_order(&cart, "acc_0000093318", "key-6")
        .await
        .expect("an order");
    assert_eq!(submitted.total.amount, 1075);
    assert_eq!(submitted.approval, okya::orders::Approval::NeedsApproval);
    assert_eq!(
        okya.last("POST /v1/orders").json(),
        okya_doc("create_order.request.json")
    );
    okya.answer("GET /v1/orders/ord_0000521873", 200, order.clone());
    let read = client.order("ord_0000521873").await.expect("read");
    assert_eq!(read.map(|o| o.version), Some(1));
    okya.answer("GET /v1/orders", 200, json!({"orders": [order.clone()]}));
    let listed = client
        .orders(&[id("ord_0000521873")])
        .await
        .expect("listed");
    assert_eq!(listed.len(), 1);

    let writes = [
        ("adjustments", "add_adjustment.request.json"),
        ("payments", "record_payment.request.json"),
        ("cancel", "cancel.request.json"),
        ("recall", "recall.request.json"),
    ];
    for (path, _) in writes {
        okya.answer(
            &format!("POST /v1/orders/ord_0000521873/{path}"),
            200,
            order.clone(),
        );
    }
    let adjustment: okya::orders::NewAdjustment =
        serde_json::from_value(okya_doc("add_adjustment.request.json")).expect("an adjustment");
    client
        .add_adjustment("ord_0000521873", &adjustment, "key-7")
        .await
        .expect("adjusted");
    let payment: okya::orders::NewPayment =
        serde_json::from_value(okya_doc("record_payment.request.json")).expect("a payment");
    client
        .record_payment("ord_0000521873", &payment, "key-8")
        .await
        .expect("paid");
    client
        .cancel_order("ord_0000521873", "payment_failed: card_declined", "key-9")
        .await
        .expect("cancelled");
    client
        .recall_order(
            "ord_0000521873",
            "pos_offline: Epoint refused the injection",
            "key-10",
        )
        .await
        .expect("recalled");
    for (path, request) in writes {
        let sent = okya.last(&format!("POST /v1/orders/ord_0000521873/{path}"));
        assert_eq!(sent.json(), okya_doc(request), "{path}");
        assert!(!sent.header("idempotency-key").is_empty(), "{path}");
    }

    // The webhook body reads whole.
    let event: okya::orders::OrderEvent =
        serde_json::from_value(okya_doc("order_updated.webhook.json")).expect("an event");
    assert_eq!(event.r#type, okya::orders::ORDER_UPDATED);
    assert_eq!(
        event.data.order.fulfilment,
        okya::orders::Fulfilment::InPreparation
    );
    assert_eq!(event.data.order.version, 4);
}

#[tokio::test]
async fn the_okya_auth_client_reads_every_documented_answer_and_sends_the_documented_bodies() {
    let okya_doc = |name: &str| fixture("okya", name);
    let okya = StandIn::start().await;
    let client = okya::OkyaClient::new(
        &okya.url,
        &okya.url,
        &OkyaSettings::default(),
        &crate::upstream::Guards::for_tests(),
    )
    .expect("a client");

    okya.answer(
        "POST /auth/v1/accounts",
        201,
        okya_doc("register.response.json"),
    );
    let account: okya::auth::NewAccount =
        serde_json::from_value(okya_doc("register.request.json")).expect("an account");
    let registered = client
        .register(&account, "key-1")
        .await
        .expect("registered");
    assert!(registered.otp.sent);
    assert_eq!(
        okya.last("POST /auth/v1/accounts").json(),
        okya_doc("register.request.json")
    );

    okya.answer("POST /auth/v1/otp", 200, okya_doc("otp.response.json"));
    client
        .send_otp("+13105550123", okya::auth::OtpPurpose::Confirm, "key-2")
        .await
        .expect("sent");
    assert_eq!(
        okya.last("POST /auth/v1/otp").json(),
        okya_doc("send_otp.request.json")
    );

    okya.answer(
        "POST /auth/v1/otp/verify",
        200,
        okya_doc("account.response.json"),
    );
    let verified = client
        .verify_otp("+13105550123", "123456")
        .await
        .expect("verified");
    assert!(verified.confirmed);
    assert_eq!(
        okya.last("POST /auth/v1/otp/verify").json(),
        okya_doc("verify_otp.request.json")
    );

    let loyalty = "PUT /auth/v1/accounts/acc_0000093318/loyalty";
    okya.answer(loyalty, 200, okya_doc("account.response.json"));
    let linked = client
        .save_loyalty_id("acc_0000093318", "5f8a2c1e-0b7d-4c49-9e3a-2d6f1b0c7e44")
        .await
        .expect("linked");
    assert!(linked.loyalty_id.is_some());
    assert_eq!(
        okya.last(loyalty).json(),
        okya_doc("save_loyalty.request.json")
    );

    okya.answer(
        "GET /auth/v1/accounts/acc_0000093318",
        200,
        okya_doc("account.response.json"),
    );
    let read = client.account("acc_0000093318").await.expect("read");
    assert_eq!(read.map(|a| a.email), Some("ada@example.com".to_owned()));

    okya.answer(
        "POST /auth/v1/otp",
        422,
        okya_doc("otp_throttled.response.json"),
    );
    let throttled = client
        .send_otp("+13105550123", okya::auth::OtpPurpose::SignIn, "key-3")
        .await
        .expect_err("throttled");
    assert_eq!(rejection(&throttled).1, okya::auth::codes::OTP_THROTTLED);
}

#[tokio::test]
async fn the_epoint_client_sends_the_documented_order_and_reads_every_documented_answer() {
    let epoint_doc = |name: &str| fixture("epoint", name);
    let pos = StandIn::start().await;
    let client = epoint::EpointClient::new(
        &pos.url,
        &EpointSettings::default(),
        &crate::upstream::Guards::for_tests(),
    )
    .expect("a client");
    let usd = |minor| Money::new(minor, Currency::usd());
    let at = |raw: &str| raw.parse().expect("a time");
    // The document's order, as the flow would build it.
    let order = epoint::InjectOrder {
        external_id: "ord_01JH8Z".to_owned(),
        order_number: "A-17".to_owned(),
        customer_name: "Ada L.".to_owned(),
        placed_at: at("2026-01-12T09:30:00Z"),
        pickup_at: None,
        lines: vec![
            epoint::InjectLine {
                product_id: "prd_latte".to_owned(),
                name: "Latte".to_owned(),
                quantity: 2,
                unit_price: usd(400),
                modifiers: vec![epoint::InjectModifier {
                    id: "mod_oat".to_owned(),
                    name: "Oat milk".to_owned(),
                    price: usd(50),
                }],
                note: None,
            },
            epoint::InjectLine {
                product_id: "prd_muffin".to_owned(),
                name: "Muffin".to_owned(),
                quantity: 1,
                unit_price: usd(325),
                modifiers: vec![],
                note: Some("warmed".to_owned()),
            },
        ],
        subtotal: usd(1225),
        discount: usd(200),
        tax: usd(90),
        total: usd(1115),
        note: None,
    };
    let route = "POST /v1/locations/loc_1/orders";
    pos.answer(route, 201, epoint_doc("inject.response.json"));
    let receipt = client
        .inject_order("loc_1", &order, "inject-ord_01JH8Z")
        .await
        .expect("injected");
    assert_eq!(receipt.status, epoint::TicketStatus::Accepted);
    let sent = pos.last(route);
    assert_eq!(sent.header("idempotency-key"), "inject-ord_01JH8Z");
    assert_eq!(
        sent.header("x-api-key"),
        crate::config::sandbox_credentials::EPOINT_API_KEY
    );
    // The same body, but for the document's `"note": null`, which ours leaves out.
    let mut documented = epoint_doc("inject.request.json");
    if let Some(fields) = documented.as_object_mut() {
        fields.remove("note");
    }
    assert_eq!(sent.json(), documented);
    same_shape(&epoint_doc("inject.request.json"), &sent.json()).expect("the documented shape");

    pos.answer(
        "GET /v1/locations/loc_1/orders/ord_01JH8Z",
        200,
        epoint_doc("inject.response.json"),
    );
    let found = client
        .find_order("loc_1", "ord_01JH8Z")
        .await
        .expect("found");
    assert_eq!(found, Some(receipt));
    pos.answer(
        "GET /v1/locations/loc_1/status",
        200,
        epoint_doc("status.response.json"),
    );
    assert!(client.status("loc_1").await.expect("a status").online);
    pos.answer(route, 409, epoint_doc("error.response.json"));
    let refused = client
        .inject_order("loc_1", &order, "inject-ord_01JH8Z")
        .await
        .expect_err("refused");
    assert_eq!(
        rejection(&refused),
        (
            409,
            epoint::codes::POS_OFFLINE.to_owned(),
            Some("lines[0].quantity".to_owned())
        )
    );
}

#[tokio::test]
async fn the_stripe_client_sends_documented_parameters_and_reads_stripes_documented_objects() {
    let stripe_doc = |name: &str| fixture("stripe", name);
    let parameters = stripe_doc("parameters.json");
    let undocumented = |route: &str, documented_as: &str, seen: &Seen| -> Vec<String> {
        let names = seen.parameters();
        assert!(!names.is_empty(), "{route}: no parameters");
        names
            .into_iter()
            .filter(|name| !contract::documented_parameter(&parameters[documented_as], name))
            .collect()
    };
    let stripe = StandIn::start().await;
    let client = stripe::StripeClient::new(
        &stripe.url,
        &StripeSettings::default(),
        &crate::upstream::Guards::for_tests(),
    )
    .expect("a client");
    let mut expanded = stripe_doc("payment_intent.json");
    expanded["latest_charge"] = stripe_doc("charge.json");

    stripe.answer("POST /v1/payment_intents", 200, expanded.clone());
    let created = client
        .create_payment_intent(
            &stripe::CreatePaymentIntent {
                amount: Money::new(1075, Currency::usd()),
                payment_method: "pm_card_visa".to_owned(),
                capture_method: stripe::CaptureMethod::Automatic,
                description: Some("CBTL order".to_owned()),
                metadata: [("order_id".to_owned(), "ord_0000521873".to_owned())].into(),
            },
            "key-1",
        )
        .await
        .expect("an intent");
    assert_eq!(created.card(), Some(("visa", "4242")));
    assert!(created.capture_before().is_some());
    let sent = stripe.last("POST /v1/payment_intents");
    assert_eq!(
        undocumented("create", "POST /v1/payment_intents", &sent),
        Vec::<String>::new()
    );
    assert_eq!(sent.header("stripe-version"), stripe::API_VERSION);
    assert_eq!(sent.header("idempotency-key"), "key-1");

    // Unexpanded, as the reference's example has it.
    let id = "pi_3QcbtlOrder0001";
    let retrieve = format!("GET /v1/payment_intents/{id}");
    stripe.answer(&retrieve, 200, stripe_doc("payment_intent.json"));
    let read = client.retrieve_payment_intent(id).await.expect("read");
    assert_eq!(read.status, stripe::PaymentIntentStatus::Succeeded);
    assert_eq!(read.charge().map(|c| c.id.as_str()), None);
    let route = "GET /v1/payment_intents/{id}";
    assert_eq!(
        undocumented(route, route, &stripe.last(&retrieve)),
        Vec::<String>::new()
    );

    let search = "GET /v1/payment_intents/search";
    stripe.answer(search, 200, stripe_doc("search_result.json"));
    let found = client
        .search_payment_intents_by_metadata("order_id", "ord_0000521873")
        .await
        .expect("searched");
    assert_eq!(found.len(), 1);
    assert_eq!(
        undocumented(search, search, &stripe.last(search)),
        Vec::<String>::new()
    );

    let capture = format!("POST /v1/payment_intents/{id}/capture");
    stripe.answer(&capture, 200, expanded.clone());
    client
        .capture_payment_intent(id, Some(1075), "key-2")
        .await
        .expect("captured");
    let route = "POST /v1/payment_intents/{id}/capture";
    assert_eq!(
        undocumented(route, route, &stripe.last(&capture)),
        Vec::<String>::new()
    );
    let cancel = format!("POST /v1/payment_intents/{id}/cancel");
    stripe.answer(&cancel, 200, expanded.clone());
    client
        .cancel_payment_intent(id, Some("abandoned"), "key-3")
        .await
        .expect("cancelled");
    let route = "POST /v1/payment_intents/{id}/cancel";
    assert_eq!(
        undocumented(route, route, &stripe.last(&cancel)),
        Vec::<String>::new()
    );
    stripe.answer("POST /v1/refunds", 200, stripe_doc("refund.json"));
    let refund = client
        .create_refund(id, Some(1075), "key-4")
        .await
        .expect("refunded");
    assert_eq!(refund.status, stripe::RefundStatus::Succeeded);
    let route = "POST /v1/refunds";
    assert_eq!(
        undocumented(route, route, &stripe.last(route)),
        Vec::<String>::new()
    );

    // A decline in Stripe's error shape, carrying the intent.
    let mut declined = stripe_doc("error.json");
    declined["error"]["payment_intent"] = stripe_doc("payment_intent.json");
    stripe.answer("POST /v1/payment_intents", 402, declined);
    let refused = client
        .create_payment_intent(
            &stripe::CreatePaymentIntent {
                amount: Money::new(1075, Currency::usd()),
                payment_method: "pm_card_chargeDeclinedInsufficientFunds".to_owned(),
                capture_method: stripe::CaptureMethod::Automatic,
                description: None,
                metadata: Default::default(),
            },
            "key-5",
        )
        .await
        .expect_err("declined");
    let decline = stripe::decline_of(&refused).expect("a decline");
    assert_eq!(decline.code, "card_declined");
    assert_eq!(decline.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(decline.payment_intent_id.as_deref(), Some(id));

    // An event's object reads as an intent, in the version the client pins.
    let event = stripe_doc("event.json");
    assert_eq!(event["api_version"], stripe::API_VERSION);
    let object: stripe::PaymentIntent =
        serde_json::from_value(event["data"]["object"].clone()).expect("an intent");
    assert_eq!(object.id, id);
}
