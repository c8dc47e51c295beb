//! The simulator over HTTP, pinned to the published shapes by the fixtures in
//! `tests/fixtures/sessionm/` (see its README for each one's source).

use super::{SessionmSandbox, SessionmSimConfig, start};
use crate::{contract, faults::Faults};
use serde_json::{Value, json};
use std::time::Duration;

fn config() -> SessionmSimConfig {
    SessionmSimConfig {
        api_key: "core_key".to_owned(),
        api_secret: "core_secret".to_owned(),
        pos_api_key: "pos_key".to_owned(),
        pos_api_secret: "pos_secret".to_owned(),
        client_id: "client-1".to_owned(),
        okya_store_ids: vec!["str_a".to_owned(), "str_b".to_owned()],
    }
}

/// A fixture with its `"{{name}}"` placeholders replaced by whole JSON values.
fn fixture(name: &str, subs: &[(&str, Value)]) -> Value {
    let mut value = contract::fixture("sessionm", name).unwrap_or_else(|e| panic!("{e}"));
    contract::fill(&mut value, subs);
    value
}

/// Every key of `expected` is in `actual` with a value of the same JSON kind, recursively
/// (arrays: each element of `actual` against the first of `expected`).
fn assert_shape(expected: &Value, actual: &Value, at: &str) {
    if let Err(e) = contract::covers(expected, actual) {
        panic!("{at}: {e}");
    }
}

struct Sim {
    sandbox: SessionmSandbox,
    http: reqwest::Client,
}

struct Member {
    id: String,
    external_id: String,
}

impl Sim {
    async fn start() -> Self {
        Self {
            sandbox: start(config(), Faults::new(0, 0.0)).await.unwrap(),
            http: reqwest::Client::new(),
        }
    }

    fn store(&self) -> Value {
        json!(self.sandbox.store_ids["str_a"])
    }

    fn core_url(&self, path: &str) -> String {
        format!("{}/priv/v1/apps/core_key{path}", self.sandbox.core.base_url)
    }

    async fn create_user(&self, body: &Value, message_id: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.core_url("/users"))
            .basic_auth("core_key", Some("core_secret"))
            .json(body);
        if let Some(id) = message_id {
            request = request.header("Message-ID", id);
        }
        request.send().await.unwrap()
    }

    async fn member(&self, n: u32) -> Member {
        let body = json!({"user": {"email": format!("m{n}@example.com"),
            "external_id": format!("cus_{n}")}});
        let answer: Value = self.create_user(&body, None).await.json().await.unwrap();
        Member {
            id: answer["user"]["id"].as_str().unwrap().to_owned(),
            external_id: format!("cus_{n}"),
        }
    }

    async fn core_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.core_url(path))
            .basic_auth("core_key", Some("core_secret"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn pos(&self, op: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/2.0/{op}", self.sandbox.pos.base_url))
            .basic_auth("pos_key", Some("pos_secret"))
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// A request container around `payload`.
    fn container(&self, request_id: &str, payload: Value) -> Value {
        json!({"store_id": self.store(), "client_id": "client-1",
            "request_id": request_id, "request_payload": payload})
    }

    /// The container placeholders of a fixture, plus `extra`.
    fn subs<'a>(&self, request_id: &str, extra: &[(&'a str, Value)]) -> Vec<(&'a str, Value)> {
        let mut subs = vec![
            ("store_id", self.store()),
            ("client_id", json!("client-1")),
            ("request_id", json!(request_id)),
        ];
        subs.extend(extra.iter().cloned());
        subs
    }

    async fn ledger(&self) -> Value {
        self.http
            .get(format!("{}/_sandbox/ledger", self.sandbox.pos.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn settings(&self, update: Value) {
        let status = self
            .http
            .put(format!("{}/_sandbox/settings", self.sandbox.pos.base_url))
            .json(&update)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }

    /// The member's user offer for a catalogue offer (`offer_2_off`, …).
    async fn user_offer(&self, member: &Member, offer_id: &str) -> String {
        let ledger = self.ledger().await;
        let user = ledger["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == json!(member.id))
            .unwrap()
            .clone();
        user["offers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["offer_id"] == json!(offer_id))
            .unwrap()["user_offer_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn offer_status(&self, user_offer_id: &str) -> Value {
        let ledger = self.ledger().await;
        ledger["users"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| u["offers"].as_array().unwrap().clone())
            .find(|o| o["user_offer_id"] == json!(user_offer_id))
            .unwrap()["status"]
            .clone()
    }

    async fn lock(&self, request_id: &str, user_offer_id: &str) -> (u16, Value) {
        let body = fixture(
            "lock.request.json",
            &self.subs(request_id, &[("user_offer_id", json!(user_offer_id))]),
        );
        self.pos("lock", &body).await
    }

    async fn statement(&self, member: &Member) -> Vec<Value> {
        let (status, body) = self
            .core_get(&format!(
                "/external/users/{}/timelines/END_USER_MEMBER_STATEMENT",
                member.external_id
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["statement"].as_array().unwrap().clone()
    }

    /// Waits (up to 3 s) until `ready` holds on the ledger.
    async fn until(&self, ready: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..150 {
            let ledger = self.ledger().await;
            if ready(&ledger) {
                return ledger;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the ledger never got there: {}", self.ledger().await);
    }
}

fn code(body: &Value) -> &str {
    body["errors"]["code"].as_str().unwrap_or_default()
}

fn processed(ledger: &Value, transaction_id: &str, versions: u64) -> bool {
    ledger["transactions"].as_array().is_some_and(|t| {
        t.iter().any(|t| {
            t["transaction_id"] == json!(transaction_id) && t["versions"] == json!(versions)
        })
    })
}

fn rejected(ledger: &Value) -> usize {
    ledger["rejected"].as_array().map_or(0, Vec::len)
}

// ---------------------------------------------------------------------------------------
// Core API
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_authentication_pages_create_user_body_creates_a_member() {
    let sim = Sim::start().await;
    let response = sim
        .create_user(&fixture("create_user.request.json", &[]), None)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["user"]["email"], "foo@bar.com");
    assert_eq!(body["user"]["available_points"], 0);
    assert_eq!(body["user"]["tier"], "Bronze");
    assert!(body["user"]["id"].is_string());
}

#[tokio::test]
async fn the_contract_create_user_body_answers_the_documented_user() {
    let sim = Sim::start().await;
    let body: Value = sim
        .create_user(&fixture("create_user.contract.request.json", &[]), None)
        .await
        .json()
        .await
        .unwrap();
    assert_shape(&fixture("create_user.response.json", &[]), &body, "$");
    let id = body["user"]["id"].as_str().unwrap();
    for path in [format!("/users/{id}"), "/external/users/cus_123".to_owned()] {
        let (status, read) = sim.core_get(&path).await;
        assert_eq!(status, 200);
        assert_eq!(read["user"], body["user"], "{path}");
    }
    for path in ["/users/nobody", "/external/users/nobody"] {
        let (status, read) = sim.core_get(path).await;
        assert_eq!(
            (status, &read),
            (404, &fixture("user_not_found.response.json", &[]))
        );
    }
    let (status, read) = sim
        .core_get("/external/users/nobody/timelines/END_USER_MEMBER_STATEMENT")
        .await;
    assert_eq!((status, code(&read)), (404, "user_not_found"));
}

#[tokio::test]
async fn core_refuses_other_credentials_and_another_api_key() {
    let sim = Sim::start().await;
    let body = fixture("create_user.request.json", &[]);
    let wrong_secret = sim
        .http
        .post(sim.core_url("/users"))
        .basic_auth("core_key", Some("nope"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let pos_credentials = sim
        .http
        .post(sim.core_url("/users"))
        .basic_auth("pos_key", Some("pos_secret"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let other_path = sim
        .http
        .post(format!(
            "{}/priv/v1/apps/other_key/users",
            sim.sandbox.core.base_url
        ))
        .basic_auth("core_key", Some("core_secret"))
        .json(&body)
        .send()
        .await
        .unwrap();
    for response in [wrong_secret, pos_credentials, other_path] {
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"status": "error", "errors": {"code": "access_denied"}})
        );
    }
    assert_eq!(sim.ledger().await["users"], json!([]));
}

#[tokio::test]
async fn one_member_per_email_and_per_external_id() {
    let sim = Sim::start().await;
    sim.member(1).await;
    for body in [
        json!({"user": {"email": "M1@example.com"}}),
        json!({"user": {"email": "other@example.com", "external_id": "cus_1"}}),
    ] {
        let response = sim.create_user(&body, None).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["status"], "error");
        assert_eq!(code(&answer), "validation");
    }
    let answer: Value = sim
        .create_user(&json!({"user": {"email": "M1@example.com"}}), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errors"]["message"], "email has already been taken");
    assert_eq!(sim.ledger().await["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_repeated_message_id_replays_the_first_answer_and_creates_nothing() {
    let sim = Sim::start().await;
    let first = sim
        .create_user(&fixture("create_user.request.json", &[]), Some("msg-1"))
        .await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["message-id"], "msg-1");
    let date = first.headers()["message-date"].to_str().unwrap().to_owned();
    assert!(date.ends_with(" GMT"), "{date}");
    assert!(
        chrono::DateTime::parse_from_rfc2822(&date).is_ok(),
        "{date}"
    );
    assert!(first.headers().get("cached-message").is_none());
    let first: Value = first.json().await.unwrap();

    // Another body under the same Message-ID: still the first answer.
    let again = sim
        .create_user(
            &json!({"user": {"email": "else@example.com"}}),
            Some("msg-1"),
        )
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["cached-message"], "true");
    assert_eq!(again.headers()["message-id"], "msg-1");
    assert_eq!(again.headers()["message-date"].to_str().unwrap(), date);
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let ledger = sim.ledger().await;
    assert_eq!(ledger["users"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["message_ids"], json!({"msg-1": 2}));
}

// ---------------------------------------------------------------------------------------
// POS containers and idempotency
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pos_validates_its_request_container() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let lookup = |request_id: &str| {
        fixture(
            "lookup.request.json",
            &sim.subs(request_id, &[("user_id", json!(member.id))]),
        )
    };
    let mut unknown_store = lookup("r1");
    unknown_store["store_id"] = json!("sm-store-9999");
    let mut other_client = lookup("r2");
    other_client["client_id"] = json!("client-2");
    let mut no_payload = lookup("r3");
    no_payload
        .as_object_mut()
        .unwrap()
        .remove("request_payload");
    let mut no_store = lookup("r4");
    no_store.as_object_mut().unwrap().remove("store_id");
    let mut no_request_id = lookup("r5");
    no_request_id.as_object_mut().unwrap().remove("request_id");
    for (body, expected, field) in [
        (unknown_store, "store_not_found", ""),
        (other_client, "access_denied", ""),
        (no_payload, "validation", "request_payload"),
        (no_store, "validation", "store_id"),
        (no_request_id, "validation", "request_id"),
    ] {
        let (status, answer) = sim.pos("lookup", &body).await;
        assert_eq!((status, code(&answer)), (200, expected), "{answer}");
        assert_eq!(answer["status"], "error");
        assert!(
            answer["errors"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{answer}"
        );
    }
    // The e-commerce store is a store too.
    let mut ecommerce = lookup("r6");
    ecommerce["store_id"] = json!(sim.sandbox.ecommerce_store_id);
    assert_eq!(sim.pos("lookup", &ecommerce).await.1["status"], "OK");

    let core_credentials = sim
        .http
        .post(format!("{}/api/2.0/lookup", sim.sandbox.pos.base_url))
        .basic_auth("core_key", Some("core_secret"))
        .json(&lookup("r7"))
        .send()
        .await
        .unwrap();
    assert_eq!(core_credentials.status(), 401);
}

#[tokio::test]
async fn a_repeated_request_id_replays_its_first_refusal_whatever_the_body() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let expired = sim.user_offer(&member, "offer_5_off_expired").await;
    let twenty = sim.user_offer(&member, "offer_20_pct").await;
    let (_, first) = sim.lock("req-1", &expired).await;
    assert_eq!(code(&first), "offer_expired");
    // Same request_id, now for an offer that would lock: the first answer again.
    let (status, again) = sim.lock("req-1", &twenty).await;
    assert_eq!((status, &again), (200, &first));
    assert_eq!(sim.offer_status(&twenty).await, "AVAILABLE");
    assert_eq!(sim.ledger().await["request_ids"]["req-1"], 2);
}

#[tokio::test]
async fn a_repeat_during_processing_is_pending_processing_then_gets_the_answer() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    sim.settings(json!({"processing_delay_ms": 400})).await;
    let body = fixture(
        "lookup.request.json",
        &sim.subs("slow-1", &[("user_id", json!(member.id))]),
    );
    let first = sim.pos("lookup", &body);
    let repeat = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sim.pos("lookup", &body).await
    };
    let ((_, first), (status, pending)) = tokio::join!(first, repeat);
    assert_eq!(first["status"], "OK");
    assert_eq!((status, code(&pending)), (200, "PENDING_PROCESSING"));
    sim.settings(json!({"processing_delay_ms": 0})).await;
    assert_eq!(sim.pos("lookup", &body).await.1, first);
}

#[tokio::test]
async fn faults_are_shared_by_both_hosts() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let twenty = sim.user_offer(&member, "offer_20_pct").await;
    let status = sim
        .http
        .put(format!("{}/_sandbox/faults", sim.sandbox.core.base_url))
        .json(&json!({"fail_next": {"POST /api/2.0/lock": 1}}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
    let response = sim
        .http
        .post(format!("{}/api/2.0/lock", sim.sandbox.pos.base_url))
        .basic_auth("pos_key", Some("pos_secret"))
        .json(&fixture(
            "lock.request.json",
            &sim.subs("f-1", &[("user_offer_id", json!(twenty))]),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let calls = sim.sandbox.core.faults.calls();
    assert_eq!(calls["POST /api/2.0/lock"], 1);
    assert_eq!(calls["POST /priv/v1/apps/{api_key}/users"], 1);
}

// ---------------------------------------------------------------------------------------
// Offers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn lookup_without_a_transaction_lists_the_whole_wallet() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let twenty = sim.user_offer(&member, "offer_20_pct").await;
    sim.lock("l-1", &twenty).await;
    let (status, answer) = sim
        .pos(
            "lookup",
            &fixture(
                "lookup.request.json",
                &sim.subs("lk-1", &[("user_id", json!(member.id))]),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let mut shape = fixture("lookup.response.json", &[]);
    // `discount_amount` comes only with a transaction.
    shape["payload"]["offers"][0]
        .as_object_mut()
        .unwrap()
        .remove("discount_amount");
    assert_shape(
        &shape["payload"]["user"],
        &answer["payload"]["user"],
        "user",
    );
    let offers = answer["payload"]["offers"].as_array().unwrap();
    let statuses: Vec<(&str, &str)> = offers
        .iter()
        .map(|o| {
            (
                o["offer_id"].as_str().unwrap(),
                o["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("offer_free_drink", "AVAILABLE"),
            ("offer_2_off", "AVAILABLE"),
            ("offer_20_pct", "LOCKED"),
            ("offer_5_off_expired", "EXPIRED"),
        ]
    );
    assert_shape(&shape["payload"]["offers"][0], &offers[1], "offers[1]");
    assert_shape(&shape["payload"]["offers"][1], &offers[2], "offers[2]");
    assert!(offers.iter().all(|o| o.get("discount_amount").is_none()));
    assert_eq!(offers[1]["amount"], json!(2.0));
    assert_eq!(offers[2]["percentage"], 20);
    assert_eq!(answer["payload"]["user"]["id"], json!(member.id));
    assert_eq!(answer["payload"]["user"]["external_id"], "cus_1");
}

#[tokio::test]
async fn lookup_with_a_transaction_prices_only_usable_offers() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let (_, answer) = sim
        .pos(
            "lookup",
            &fixture(
                "lookup_with_transaction.request.json",
                &sim.subs("lk-1", &[("user_id", json!(member.id))]),
            ),
        )
        .await;
    assert_shape(
        &fixture("lookup.response.json", &[])["payload"]["offers"][0],
        &answer["payload"]["offers"][1],
        "offers[1]",
    );
    let priced: Vec<(&str, Value)> = answer["payload"]["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["offer_id"].as_str().unwrap(),
                o["discount_amount"].clone(),
            )
        })
        .collect();
    // The expired offer is gone; the free drink is the dearest unit (a 4.50 latte).
    assert_eq!(
        priced,
        [
            ("offer_free_drink", json!(4.5)),
            ("offer_2_off", json!(2.0)),
            ("offer_20_pct", json!(2.45)),
        ]
    );
}

/// A basket of one item at `price` (a JSON decimal) under `transaction_id`.
fn small_basket(transaction_id: &str, price: Value) -> Value {
    json!({"transaction_id": transaction_id, "subtotal": price, "tax_total": 0,
        "items": [{"line_id": "1", "item_id": "prd_cookie", "quantity": 1,
            "unit_price": price, "subtotal": price}]})
}

#[tokio::test]
async fn two_off_is_applicable_at_lookup_but_refused_at_lock_below_four() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let two_off = sim.user_offer(&member, "offer_2_off").await;
    let (_, answer) = sim
        .pos(
            "lookup",
            &sim.container(
                "lk-1",
                json!({"user_id": member.id, "transaction": small_basket("ord_small", json!(3.0))}),
            ),
        )
        .await;
    let offer = answer["payload"]["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["offer_id"] == "offer_2_off")
        .unwrap()
        .clone();
    assert_eq!(offer["status"], "AVAILABLE");
    assert_eq!(offer["discount_amount"], json!(2.0));

    let lock = |request_id: &str, basket: Value| {
        sim.container(
            request_id,
            json!({"offer_lookup_code": two_off, "offer_lookup_type": "UserOfferId",
                "transaction": basket}),
        )
    };
    let (_, refused) = sim
        .pos(
            "lock",
            &lock("lock-1", small_basket("ord_small", json!(3.0))),
        )
        .await;
    assert_eq!(code(&refused), "offer_not_applicable");
    assert_eq!(sim.offer_status(&two_off).await, "AVAILABLE");
    let (_, locked) = sim
        .pos(
            "lock",
            &lock("lock-2", small_basket("ord_small", json!(4.0))),
        )
        .await;
    assert_eq!(locked["payload"]["amount"], json!(2.0));
    assert_eq!(sim.offer_status(&two_off).await, "LOCKED");
}

#[tokio::test]
async fn lock_answers_the_discount_object_and_a_relock_reprices_it() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let twenty = sim.user_offer(&member, "offer_20_pct").await;
    let (status, answer) = sim.lock("lock-1", &twenty).await;
    assert_eq!(status, 200);
    let published = fixture("lock.response.json", &[]);
    assert_shape(&published, &answer, "$");
    let discount = &answer["payload"];
    for field in [
        "reference_id_type",
        "pos_discount_id",
        "status",
        "display_name",
        "discounted_line_ids",
        "discount_source",
        "amount",
        "stack_order",
    ] {
        assert_eq!(discount[field], published["payload"][field], "{field}");
    }
    assert_eq!(discount["reference_id"], json!(twenty));
    assert_eq!(discount["user_id"], json!(member.id));
    assert!(
        chrono::DateTime::parse_from_rfc3339(discount["applied_time"].as_str().unwrap()).is_ok()
    );

    // The basket changed (a second muffin): lock again under the same transaction.
    let mut relock = fixture(
        "lock.request.json",
        &sim.subs("lock-2", &[("user_offer_id", json!(twenty))]),
    );
    let txn = &mut relock["request_payload"]["transaction"];
    txn["items"][1]["quantity"] = json!(2);
    txn["items"][1]["subtotal"] = json!(6.5);
    txn["subtotal"] = json!(15.5);
    let (_, again) = sim.pos("lock", &relock).await;
    assert_eq!(again["payload"]["amount"], json!(3.1));
    assert_eq!(again["payload"]["stack_order"], 1);

    // Another transaction cannot take it; expired and unknown offers are refused.
    let mut other = relock.clone();
    other["request_id"] = json!("lock-3");
    other["request_payload"]["transaction"]["transaction_id"] = json!("ord_other");
    assert_eq!(code(&sim.pos("lock", &other).await.1), "offer_locked");
    let expired = sim.user_offer(&member, "offer_5_off_expired").await;
    assert_eq!(code(&sim.lock("lock-4", &expired).await.1), "offer_expired");
    assert_eq!(
        code(&sim.lock("lock-5", "uo_nope").await.1),
        "offer_not_found"
    );
    let mut missing = relock.clone();
    missing["request_id"] = json!("lock-6");
    missing["request_payload"]
        .as_object_mut()
        .unwrap()
        .remove("offer_lookup_type");
    let (_, refused) = sim.pos("lock", &missing).await;
    assert_eq!(code(&refused), "validation");
    assert!(
        refused["errors"]["message"]
            .as_str()
            .unwrap()
            .contains("offer_lookup_type")
    );
}

#[tokio::test]
async fn unlock_and_reinstate_take_exactly_the_documented_fields() {
    let sim = &Sim::start().await;
    let member = sim.member(1).await;
    let twenty = sim.user_offer(&member, "offer_20_pct").await;
    let drink = sim.user_offer(&member, "offer_free_drink").await;
    let release = |op: &'static str, request_id: &str, offer: &str| {
        let body = fixture(
            &format!("{op}.request.json"),
            &sim.subs(request_id, &[("user_offer_id", json!(offer))]),
        );
        async move { sim.pos(op, &body).await }
    };
    let no_payload = fixture("no_payload.response.json", &[]);

    // Unlocking an available offer is harmless; a locked one comes back.
    assert_eq!(
        release("unlock", "u-1", &twenty).await,
        (200, no_payload.clone())
    );
    sim.lock("lock-1", &twenty).await;
    assert_eq!(
        code(&release("reinstate", "r-1", &twenty).await.1),
        "offer_not_redeemed"
    );
    assert_eq!(release("unlock", "u-2", &twenty).await.1, no_payload);
    assert_eq!(sim.offer_status(&twenty).await, "AVAILABLE");

    // Redeemed at once: unlock is refused, reinstate gives it back.
    let redeem = fixture(
        "redeem.request.json",
        &sim.subs("red-1", &[("user_offer_id", json!(drink))]),
    );
    let (_, redeemed) = sim.pos("redeem", &redeem).await;
    assert_eq!(redeemed["payload"]["status"], "REDEEMED");
    assert_eq!(redeemed["payload"]["amount"], json!(4.5));
    assert_eq!(
        code(&release("unlock", "u-3", &drink).await.1),
        "offer_redeemed"
    );
    assert_eq!(release("reinstate", "r-2", &drink).await.1, no_payload);
    assert_eq!(sim.offer_status(&drink).await, "AVAILABLE");

    // Nothing but the two documented fields, both required.
    for (i, payload) in [
        json!({"user_offer_id": twenty}),
        json!({"user_offer_id": twenty, "employee_id": "cbtl-app", "user_id": member.id}),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, refused) = sim
            .pos("unlock", &sim.container(&format!("u-x{i}"), payload))
            .await;
        assert_eq!(code(&refused), "validation", "{refused}");
    }
}

#[tokio::test]
async fn amounts_are_decimals_read_exactly() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let twenty = sim.user_offer(&member, "offer_20_pct").await;
    // Three units at 0.10: 0.30 exactly (as floats, 0.1 × 3 is not 0.3).
    let basket = json!({"transaction_id": "ord_dimes", "subtotal": 0.3,
        "items": [{"line_id": "1", "item_id": "prd_dime", "quantity": 3.0,
            "unit_price": 0.1, "subtotal": 0.3}]});
    let (_, locked) = sim
        .pos(
            "lock",
            &sim.container(
                "d-1",
                json!({"offer_lookup_code": twenty, "offer_lookup_type": "UserOfferId",
                    "transaction": basket}),
            ),
        )
        .await;
    assert_eq!(locked["payload"]["amount"], json!(0.06), "{locked}");

    let (_, refused) = sim
        .pos(
            "lookup",
            &sim.container(
                "d-2",
                json!({"user_id": member.id,
                    "transaction": small_basket("ord_odd", json!(4.505))}),
            ),
        )
        .await;
    assert_eq!(code(&refused), "validation");
    assert!(
        refused["errors"]["message"]
            .as_str()
            .unwrap()
            .contains("4.505"),
        "{refused}"
    );
}

// ---------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_sent_transaction_is_queued_then_its_points_reach_the_statement() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    sim.settings(json!({"transaction_delay_ms": 300})).await;
    let body = fixture(
        "send_transaction.request.json",
        &sim.subs(
            "send-1",
            &[
                ("transaction_id", json!("txn-public-1")),
                ("external_id", json!(member.external_id)),
            ],
        ),
    );
    let (status, answer) = sim.pos("send_transaction", &body).await;
    assert_eq!(
        (status, answer),
        (200, fixture("no_payload.response.json", &[]))
    );
    // Queued, not yet processed.
    assert!(sim.statement(&member).await.is_empty());

    let ledger = sim.until(|l| processed(l, "txn-public-1", 1)).await;
    assert_eq!(ledger["transactions"][0]["points"], 57);
    assert_eq!(ledger["transactions"][0]["total"], json!(57.0));
    let statement = sim.statement(&member).await;
    let published = fixture("statement.response.json", &[]);
    assert_shape(
        &published,
        &json!({"status": "ok", "statement": statement}),
        "$",
    );
    assert_eq!(statement[0]["event_type"], "transaction");
    assert_eq!(statement[0]["transaction_id"], "txn-public-1");
    assert_eq!(statement[0]["points"], 57);
    let (_, user) = sim.core_get(&format!("/users/{}", member.id)).await;
    assert_eq!(user["user"]["available_points"], 57);
    assert_eq!(user["user"]["tier"], "Bronze");
}

/// Locks $2 off on the contract's basket and sends the contract's sale with the lock's
/// Discount: 12.25 − 2.00 + 0.90 = 11.15 paid.
async fn contract_sale(sim: &Sim, member: &Member) -> (String, Value) {
    let two_off = sim.user_offer(member, "offer_2_off").await;
    let (_, locked) = sim.lock("lock-1", &two_off).await;
    let discount = locked["payload"].clone();
    assert_eq!(discount["amount"], json!(2.0));
    let sale = fixture(
        "send_transaction.contract.request.json",
        &sim.subs(
            "send-1",
            &[("user_id", json!(member.id)), ("discount", discount)],
        ),
    );
    assert_eq!(sim.pos("send_transaction", &sale).await.1["status"], "OK");
    (two_off, sale)
}

#[tokio::test]
async fn the_contract_sale_redeems_its_locked_offer_and_earns_points() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let (two_off, _) = contract_sale(&sim, &member).await;
    let ledger = sim.until(|l| processed(l, "ord_123", 1)).await;
    assert_eq!(ledger["transactions"][0]["total"], json!(11.15));
    assert_eq!(ledger["transactions"][0]["points"], 11);
    assert_eq!(sim.offer_status(&two_off).await, "REDEEMED");
    let statement = sim.statement(&member).await;
    assert_eq!(statement.len(), 1);
    assert_eq!(statement[0]["points"], 11);
}

#[tokio::test]
async fn a_resent_transaction_replaces_the_first_and_takes_points_back() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let (two_off, mut sale) = contract_sale(&sim, &member).await;
    sim.until(|l| processed(l, "ord_123", 1)).await;

    // The muffin is refunded: the original transaction again, without it.
    sale["request_id"] = json!("send-2");
    let txn = &mut sale["request_payload"];
    txn["modified_time"] = json!("2026-01-13T10:00:00.000Z");
    txn["items"].as_array_mut().unwrap().truncate(1);
    txn["subtotal"] = json!(9.0);
    txn["tax_total"] = json!(0.66);
    txn["payments"][0]["amount"] = json!(7.66);
    assert_eq!(sim.pos("send_transaction", &sale).await.1["status"], "OK");

    let ledger = sim.until(|l| processed(l, "ord_123", 2)).await;
    assert_eq!(ledger["transactions"][0]["points"], 7);
    assert_eq!(ledger["transactions"][0]["total"], json!(7.66));
    assert_eq!(rejected(&ledger), 0, "{ledger}");
    let entries: Vec<(Value, Value)> = sim
        .statement(&member)
        .await
        .iter()
        .map(|e| (e["event_type"].clone(), e["points"].clone()))
        .collect();
    assert_eq!(
        entries,
        [
            (json!("transaction"), json!(11)),
            (json!("return"), json!(-4))
        ]
    );
    let (_, user) = sim.core_get(&format!("/users/{}", member.id)).await;
    assert_eq!(user["user"]["available_points"], 7);
    assert_eq!(sim.offer_status(&two_off).await, "REDEEMED");
}

#[tokio::test]
async fn a_discount_other_than_the_locks_answer_is_rejected() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let two_off = sim.user_offer(&member, "offer_2_off").await;
    let (_, locked) = sim.lock("lock-1", &two_off).await;
    let mut discount = locked["payload"].clone();
    discount["display_name"] = json!("Two dollars off");
    let sale = fixture(
        "send_transaction.contract.request.json",
        &sim.subs(
            "send-1",
            &[("user_id", json!(member.id)), ("discount", discount)],
        ),
    );
    assert_eq!(sim.pos("send_transaction", &sale).await.1["status"], "OK");

    let ledger = sim.until(|l| rejected(l) == 1).await;
    assert_eq!(ledger["rejected"][0]["transaction_id"], "ord_123");
    let reason = ledger["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("not the Discount object"), "{reason}");
    assert_eq!(ledger["transactions"], json!([]));
    assert_eq!(sim.offer_status(&two_off).await, "LOCKED");
    assert!(sim.statement(&member).await.is_empty());
}

#[tokio::test]
async fn sums_that_do_not_add_up_are_rejected() {
    let sim = Sim::start().await;
    let member = sim.member(1).await;
    let mut body = fixture(
        "send_transaction.request.json",
        &sim.subs(
            "send-1",
            &[
                ("transaction_id", json!("txn-1")),
                ("external_id", json!(member.external_id)),
            ],
        ),
    );
    body["request_payload"]["payments"][0]["amount"] = json!(56.99);
    assert_eq!(sim.pos("send_transaction", &body).await.1["status"], "OK");
    let ledger = sim.until(|l| rejected(l) == 1).await;
    assert!(
        ledger["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("payments")
    );
    assert_eq!(ledger["users"][0]["points"], 0);

    // Only a payload without a transaction_id is refused at once.
    let (_, refused) = sim
        .pos(
            "send_transaction",
            &sim.container("send-2", json!({"subtotal": 1.0})),
        )
        .await;
    assert_eq!(code(&refused), "validation");
    assert!(
        refused["errors"]["message"]
            .as_str()
            .unwrap()
            .contains("transaction_id")
    );
}
