//! The client against the SessionM simulator over HTTP. The simulator follows SessionM's
//! published shapes with wire types of its own, so these tests fail when the client
//! drifts from them.

use super::*;
use crate::config::{SessionmSettings, sandbox_credentials as creds};
use cbtl_sandbox::{
    faults::{FaultUpdate, Faults},
    sessionm::{SessionmSandbox, SessionmSimConfig, start},
};
use serde_json::json;

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::usd())
}

const STORE: &str = "str_pasadena";

async fn setup() -> (SessionmSandbox, SessionmClient) {
    let sim = start(
        SessionmSimConfig {
            api_key: creds::SESSIONM_API_KEY.to_owned(),
            api_secret: creds::SESSIONM_API_SECRET.to_owned(),
            pos_api_key: creds::SESSIONM_POS_API_KEY.to_owned(),
            pos_api_secret: creds::SESSIONM_POS_API_SECRET.to_owned(),
            client_id: SessionmSettings::default().client_id,
            okya_store_ids: vec![STORE.to_owned(), "str_burbank".to_owned()],
        },
        Faults::new(0, 0.0),
    )
    .await
    .expect("simulator");
    let client = SessionmClient::new(
        SessionmEndpoints {
            core_url: sim.core.base_url.clone(),
            pos_url: sim.pos.base_url.clone(),
            store_ids: sim.store_ids.clone(),
            ecommerce_store_id: sim.ecommerce_store_id.clone(),
        },
        &SessionmSettings::default(),
        &crate::upstream::Guards::for_tests(),
    )
    .expect("client");
    (sim, client)
}

fn new_user(n: u32) -> NewUser {
    NewUser {
        email: format!("member{n}@example.com"),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        phone: Some(format!("+1626555{n:04}")),
        external_id: format!("cus_{n}"),
    }
}

fn line(id: &str, price: i64, quantity: u32) -> TransactionLine {
    TransactionLine {
        line_id: id.into(),
        product_id: format!("prd_{id}"),
        name: format!("Item {id}"),
        quantity,
        unit_price: usd(price),
    }
}

fn basket(id: &str, lines: Vec<TransactionLine>) -> Transaction {
    Transaction::new(id, STORE, Currency::usd(), lines).expect("basket")
}

fn sale(user_id: &str, txn: Transaction, discounts: Vec<Discount>, tax: i64) -> SendTransaction {
    let discount: i64 = discounts.iter().map(|d| d.amount.minor).sum();
    let paid = txn.subtotal.minor - discount + tax;
    SendTransaction {
        user_id: user_id.into(),
        transaction: txn,
        discounts,
        tax: usd(tax),
        paid: usd(paid),
        payment_id: "pi_1".into(),
        opened_at: Utc::now(),
        modified_at: Utc::now(),
    }
}

async fn ledger(sim: &SessionmSandbox) -> Value {
    reqwest::get(format!("{}/_sandbox/ledger", sim.pos.base_url))
        .await
        .expect("ledger")
        .json()
        .await
        .expect("ledger JSON")
}

fn code_of(err: &UpstreamError) -> String {
    err.rejection()
        .map(|(_, r)| r.code.clone())
        .unwrap_or_else(|| format!("not a refusal: {err}"))
}

fn offer<'a>(lookup: &'a Lookup, name: &str) -> &'a Offer {
    lookup
        .offers
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no {name} in {lookup:?}"))
}

/// Polls the member statement until SessionM has processed the transaction.
async fn points_of(client: &SessionmClient, external_id: &str, txn: &str) -> i64 {
    for _ in 0..200 {
        if let Some(points) = client
            .transaction_points(external_id, txn)
            .await
            .expect("statement")
        {
            return points;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{txn} was never processed");
}

#[tokio::test]
async fn a_member_is_found_by_external_id_before_any_creation() {
    let (sim, client) = setup().await;
    let made = client
        .ensure_user(&new_user(1), "link-cus_1")
        .await
        .expect("made");
    assert_eq!(made.external_id.as_deref(), Some("cus_1"));
    assert_eq!(made.available_points, Some(0));
    let again = client
        .ensure_user(&new_user(1), "link-cus_1-other")
        .await
        .expect("found");
    assert_eq!(again.id, made.id);
    let ledger = ledger(&sim).await;
    assert_eq!(
        ledger["users"].as_array().map(Vec::len),
        Some(1),
        "{ledger}"
    );
    assert_eq!(
        ledger["message_ids"],
        json!({"link-cus_1": 1}),
        "the second call found the member and created nothing"
    );
    assert_eq!(client.get_user(&made.id).await.expect("by id").id, made.id);
}

#[tokio::test]
async fn a_creation_whose_answers_are_lost_is_replayed_under_its_message_id() {
    let (sim, client) = setup().await;
    // SessionM makes the member, then the answer is lost twice: the retries carry the
    // same Message-ID, and the replay gives the member made the first time.
    sim.pos.faults.apply(FaultUpdate {
        lose_next: [(
            "POST /priv/v1/apps/{api_key}/users".to_owned(),
            cbtl_sandbox::faults::Loss {
                times: 2,
                status: cbtl_sandbox::faults::LostAs::Status(503),
            },
        )]
        .into(),
        ..FaultUpdate::default()
    });
    let made = client
        .create_user(&new_user(2), "link-cus_2")
        .await
        .expect("answered by the replay");
    let ledger = ledger(&sim).await;
    assert_eq!(
        ledger["users"].as_array().map(Vec::len),
        Some(1),
        "{ledger}"
    );
    assert_eq!(ledger["users"][0]["id"], made.id.as_str());
    assert_eq!(ledger["message_ids"], json!({"link-cus_2": 3}), "{ledger}");
}

#[tokio::test]
async fn a_refused_creation_is_believed_only_when_no_member_has_our_id() {
    let (_sim, client) = setup().await;
    client.ensure_user(&new_user(3), "m-3").await.expect("made");
    // Another customer of ours with the same email: SessionM allows one member per email.
    let mut other = new_user(3);
    other.external_id = "cus_other".into();
    let err = client
        .ensure_user(&other, "m-other")
        .await
        .expect_err("one member per email");
    assert_eq!(code_of(&err), codes::VALIDATION, "{err}");
}

#[tokio::test]
async fn the_wallet_lists_every_offer_with_amounts_in_currency_units() {
    let (_sim, client) = setup().await;
    let member = client.ensure_user(&new_user(4), "m-4").await.expect("made");
    let wallet = client
        .lookup(&member.id, None, "w-4")
        .await
        .expect("wallet");
    assert_eq!(wallet.offers.len(), 4, "{wallet:?}");
    assert_eq!(wallet.user.available_points, Some(0));
    let two_off = offer(&wallet, "$2 off");
    assert_eq!(two_off.discount.kind, DiscountKind::FixedAmount);
    assert_eq!(two_off.discount.amount, Some(usd(200)));
    assert_eq!(two_off.discount_amount, None, "no basket, no discount");
    assert_eq!(
        offer(&wallet, "$5 off (expired)").status,
        OfferStatus::Expired
    );
    assert!(wallet.offers.iter().all(|o| o.unusable_reason().is_none()));
}

#[tokio::test]
async fn a_minimum_spend_passes_lookup_and_is_refused_at_lock() {
    let (_sim, client) = setup().await;
    let member = client.ensure_user(&new_user(5), "m-5").await.expect("made");
    let small = basket("ord_small", vec![line("a", 300, 1)]);
    let priced = client
        .lookup(&member.id, Some(&small), "l-5")
        .await
        .expect("lookup");
    let two_off = offer(&priced, "$2 off");
    assert_eq!(two_off.status, OfferStatus::Available);
    assert!(
        priced
            .offers
            .iter()
            .all(|o| o.status != OfferStatus::Expired),
        "only offers that may apply: {priced:?}"
    );
    let err = client
        .lock(&two_off.user_offer_id, &small, "lock-5")
        .await
        .expect_err("below the minimum spend");
    assert_eq!(code_of(&err), codes::OFFER_NOT_APPLICABLE);
}

#[tokio::test]
async fn the_lock_discount_goes_back_unchanged_and_points_land_later() {
    let (sim, client) = setup().await;
    let member = client.ensure_user(&new_user(6), "m-6").await.expect("made");
    let wallet = client
        .lookup(&member.id, None, "w-6")
        .await
        .expect("wallet");
    let pct = offer(&wallet, "20% off").user_offer_id.clone();
    let txn = basket("ord_6", vec![line("a", 450, 2), line("b", 325, 1)]);
    let discount = client.lock(&pct, &txn, "lock-6").await.expect("locked");
    assert_eq!(discount.amount, usd(245), "20% of 12.25");
    assert_eq!(discount.object["amount"], json!(2.45));
    assert_eq!(discount.user_offer_id, pct);

    let sale = sale(&member.id, txn, vec![discount], 90);
    client
        .send_transaction(&sale, "sale-6")
        .await
        .expect("queued");
    // 12.25 − 2.45 + 0.90 = 10.70 paid: 10 points.
    assert_eq!(points_of(&client, "cus_6", "ord_6").await, 10);
    let ledger = ledger(&sim).await;
    assert_eq!(ledger["rejected"], json!([]), "{ledger}");
    let offers = ledger["users"][0]["offers"].as_array().expect("offers");
    assert!(
        offers
            .iter()
            .any(|o| o["user_offer_id"] == pct.as_str() && o["status"] == "REDEEMED"),
        "{ledger}"
    );
    assert_eq!(
        client
            .get_user(&member.id)
            .await
            .expect("member")
            .available_points,
        Some(10)
    );

    // A return resends the original with its items removed: the points come back off.
    client
        .send_return(&sale, Utc::now(), "return-6")
        .await
        .expect("queued");
    for _ in 0..200 {
        if client
            .transaction_points("cus_6", "ord_6")
            .await
            .expect("statement")
            == Some(0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the return never took the points back: {}",
        ledger_text(&sim).await
    );
}

async fn ledger_text(sim: &SessionmSandbox) -> String {
    ledger(sim).await.to_string()
}

#[tokio::test]
async fn a_sale_whose_discount_is_not_the_locks_earns_nothing() {
    let (sim, client) = setup().await;
    let member = client.ensure_user(&new_user(7), "m-7").await.expect("made");
    let wallet = client
        .lookup(&member.id, None, "w-7")
        .await
        .expect("wallet");
    let pct = offer(&wallet, "20% off").user_offer_id.clone();
    let txn = basket("ord_7", vec![line("a", 1000, 1)]);
    let mut discount = client.lock(&pct, &txn, "lock-7").await.expect("locked");
    // Rebuilt instead of passed back: SessionM's Lock Offer page requires the object.
    discount.object = json!({"reference_id": pct, "amount": 2.0});
    discount.amount = usd(200);
    client
        .send_transaction(&sale(&member.id, txn, vec![discount], 0), "sale-7")
        .await
        .expect("queued all the same: the send is asynchronous");
    for _ in 0..200 {
        let ledger = ledger(&sim).await;
        if ledger["rejected"].as_array().is_some_and(|r| !r.is_empty()) {
            assert_eq!(ledger["rejected"][0]["transaction_id"], "ord_7", "{ledger}");
            assert_eq!(
                client
                    .transaction_points("cus_7", "ord_7")
                    .await
                    .expect("statement"),
                None
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the rebuilt discount was accepted");
}

#[tokio::test]
async fn unlock_and_reinstate_send_only_the_documented_fields() {
    let (sim, client) = setup().await;
    let member = client.ensure_user(&new_user(8), "m-8").await.expect("made");
    let wallet = client
        .lookup(&member.id, None, "w-8")
        .await
        .expect("wallet");
    let free = offer(&wallet, "Free drink").user_offer_id.clone();
    let txn = basket("ord_8", vec![line("a", 450, 1)]);
    client.lock(&free, &txn, "lock-8").await.expect("locked");
    client.unlock(&free, "unlock-8").await.expect("unlocked");
    client
        .unlock(&free, "unlock-8b")
        .await
        .expect("again: harmless");
    let redeemed = client
        .redeem(&free, &txn, "redeem-8")
        .await
        .expect("redeemed");
    assert_eq!(redeemed.amount, usd(450));
    let err = client
        .unlock(&free, "unlock-8c")
        .await
        .expect_err("redeemed");
    assert_eq!(code_of(&err), codes::OFFER_REDEEMED);
    client
        .reinstate(&free, "reinstate-8")
        .await
        .expect("reinstated");
    let ledger = ledger(&sim).await;
    let status = ledger["users"][0]["offers"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["user_offer_id"] == free.as_str()))
        .map(|o| o["status"].clone());
    assert_eq!(status, Some(json!("AVAILABLE")), "{ledger}");
}

#[tokio::test]
async fn a_request_id_replays_its_first_answer_refusals_included() {
    let (_sim, client) = setup().await;
    let member = client.ensure_user(&new_user(9), "m-9").await.expect("made");
    let wallet = client
        .lookup(&member.id, None, "w-9")
        .await
        .expect("wallet");
    let two_off = offer(&wallet, "$2 off").user_offer_id.clone();
    let small = basket("ord_9", vec![line("a", 300, 1)]);
    let first = client
        .lock(&two_off, &small, "lock-9")
        .await
        .expect_err("below the minimum");
    // The same request_id with a basket that would now qualify: SessionM answers what it
    // answered the first time.
    let big = basket("ord_9", vec![line("a", 300, 3)]);
    let replay = client
        .lock(&two_off, &big, "lock-9")
        .await
        .expect_err("the first answer, replayed");
    assert_eq!(code_of(&first), code_of(&replay));
    client
        .lock(&two_off, &big, "lock-9b")
        .await
        .expect("a new request_id is a new request");
}

#[tokio::test]
async fn a_pending_request_is_waited_out_under_its_request_id() {
    let (sim, client) = setup().await;
    let member = client
        .ensure_user(&new_user(10), "m-10")
        .await
        .expect("made");
    reqwest::Client::new()
        .put(format!("{}/_sandbox/settings", sim.pos.base_url))
        .json(&json!({"processing_delay_ms": 300}))
        .send()
        .await
        .expect("settings");
    let (a, b) = tokio::join!(client.lookup(&member.id, None, "w-10"), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.lookup(&member.id, None, "w-10").await
    });
    assert_eq!(a.expect("first").offers, b.expect("replayed").offers);
    let ledger = ledger(&sim).await;
    assert!(
        ledger["request_ids"]["w-10"].as_u64().unwrap_or(0) >= 3,
        "the repeat saw 'pending processing' and asked again: {ledger}"
    );
}

#[tokio::test]
async fn okya_stores_are_sent_as_sessionm_stores_and_a_missing_one_is_ours() {
    let (_sim, client) = setup().await;
    assert!(client.store_id(STORE).expect("mapped").starts_with("sm-"));
    let err = client.store_id("str_unknown").expect_err("not mapped");
    assert!(matches!(err, UpstreamError::Setup(_)), "{err}");
    assert!(!err.is_transient());
    assert_eq!(
        client.stores_without_mapping([STORE, "str_unknown"]),
        vec!["str_unknown".to_owned()]
    );
}

#[tokio::test]
async fn wrong_credentials_are_refused_on_both_hosts() {
    let (sim, _) = setup().await;
    let mut settings = SessionmSettings {
        api_secret: "wrong".to_owned().into(),
        pos_api_secret: "wrong".to_owned().into(),
        ..SessionmSettings::default()
    };
    settings.client_id = SessionmSettings::default().client_id;
    let client = SessionmClient::new(
        SessionmEndpoints {
            core_url: sim.core.base_url.clone(),
            pos_url: sim.pos.base_url.clone(),
            store_ids: sim.store_ids.clone(),
            ecommerce_store_id: sim.ecommerce_store_id.clone(),
        },
        &settings,
        &crate::upstream::Guards::for_tests(),
    )
    .expect("client");
    let core = client.get_user("u1").await.expect_err("core refused");
    assert_eq!(code_of(&core), codes::ACCESS_DENIED, "{core}");
    let pos = client
        .lookup("u1", None, "w")
        .await
        .expect_err("pos refused");
    assert_eq!(code_of(&pos), codes::ACCESS_DENIED, "{pos}");
}

// ----- The client's bodies and readings against the published fixtures ---------------

fn fixture(name: &str) -> Value {
    cbtl_sandbox::contract::fixture("sessionm", name).unwrap_or_else(|e| panic!("{e}"))
}

/// Every key the client sends is one the published example has, with a value of the same
/// JSON kind; objects and arrays' elements are compared the same way. Placeholders
/// (`"{{…}}"`) stand for any value.
fn assert_within(ours: &Value, published: &Value, at: &str) {
    if let Err(e) = cbtl_sandbox::contract::within(ours, published) {
        panic!("{at}: {e}");
    }
}

fn contract_basket() -> Transaction {
    let mut latte = line("1", 450, 2);
    latte.product_id = "prd_latte".into();
    latte.name = "Latte".into();
    let mut muffin = line("2", 325, 1);
    muffin.product_id = "prd_muffin".into();
    muffin.name = "Muffin".into();
    basket("ord_123", vec![latte, muffin])
}

#[test]
fn the_bodies_we_send_are_the_published_ones() {
    let member = serde_json::to_value(wire::NewUserBody {
        user: wire::NewUserFields {
            email: "ada@example.com",
            first_name: "Ada",
            last_name: "Lovelace",
            external_id: "cus_123",
            opted_in: true,
            phone_numbers: vec![wire::PhoneNumber {
                phone_number: wire::phone("+15550001111"),
                phone_type: "mobile",
            }],
        },
    })
    .expect("member");
    assert_eq!(member, fixture("create_user.contract.request.json"));

    let txn = contract_basket();
    let lock = serde_json::to_value(wire::OfferOnTransaction {
        offer_lookup_code: "uo_000003",
        offer_lookup_type: "UserOfferId",
        transaction: wire::transaction(&txn, None).expect("basket"),
    })
    .expect("lock");
    assert_within(
        &lock,
        &fixture("lock.request.json")["request_payload"],
        "lock",
    );
    let release = serde_json::to_value(wire::OfferRelease {
        user_offer_id: "uo_000003",
        employee_id: EMPLOYEE_ID,
    })
    .expect("unlock");
    for name in ["unlock.request.json", "reinstate.request.json"] {
        let published = &fixture(name)["request_payload"];
        assert_within(&release, published, name);
        assert_eq!(
            release.as_object().map(|o| o.len()),
            published.as_object().map(|o| o.len()),
            "exactly the documented fields"
        );
    }

    let discount = wire::discount(
        "uo_000002",
        fixture("lock.response.json")["payload"].clone(),
        &Currency::usd(),
    )
    .expect("the published Discount object reads");
    let sale = SendTransaction {
        user_id: "6c1f".into(),
        transaction: txn,
        discounts: vec![discount.clone()],
        tax: usd(90),
        paid: usd(1225 - 245 + 90),
        payment_id: "pi_3N".into(),
        opened_at: Utc::now(),
        modified_at: Utc::now(),
    };
    let ours = wire::transaction(&sale.transaction, Some(&sale)).expect("sale");
    let published = fixture("send_transaction.contract.request.json")["request_payload"].clone();
    assert_within(&ours, &published, "sale");
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&ours), keys(&published), "every field of the sale");
    assert_eq!(
        ours["discounts"][0], discount.object,
        "the lock's object, unchanged"
    );
    // The public integration's sale carries the same fields we rely on.
    let public = fixture("send_transaction.request.json")["request_payload"].clone();
    for field in [
        "transaction_id",
        "subtotal",
        "tax_total",
        "open_time",
        "modified_time",
    ] {
        assert!(
            public.get(field).is_some(),
            "{field} in the public integration's sale"
        );
    }
    assert_within(&ours["items"][0], &public["items"][0], "item");
}

#[test]
fn the_answers_we_read_are_the_published_ones() {
    let created = wire::member(&fixture("create_user.response.json")).expect("member");
    assert!(!created.id.is_empty());
    let lookup = fixture("lookup.response.json");
    let offers: Vec<Offer> = lookup["payload"]["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|o| wire::offer(o, Some(&Currency::usd())).expect("offer"))
        .collect();
    assert_eq!(offers[0].discount.amount, Some(usd(200)));
    assert_eq!(offers[0].discount_amount, Some(usd(200)));
    assert_eq!(offers[1].status, OfferStatus::Locked);
    assert_eq!(offers[1].discount.percentage, Some(20));
    let discount = wire::discount(
        "uo_000003",
        fixture("lock.response.json")["payload"].clone(),
        &Currency::usd(),
    )
    .expect("discount");
    assert_eq!(discount.amount, usd(245));
    assert_eq!(discount.name.as_deref(), Some("20% off"));
    assert_eq!(
        wire::statement_points(&fixture("statement.response.json"), "ord_123"),
        Ok(Some(11))
    );
    let missing = wire::rejection(&fixture("user_not_found.response.json"));
    assert_eq!(missing.code, codes::USER_NOT_FOUND);
    assert!(matches!(
        wire::outcome(&fixture("no_payload.response.json")),
        wire::Outcome::Ok
    ));
}
