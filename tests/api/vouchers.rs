//! The customer's SessionM vouchers, asked for once per request.

use crate::helpers::{Db, Sim, spawn_app_with};
use serde_json::{Value, json};

#[tokio::test]
async fn vouchers_list_the_wallet_with_expired_ones_and_cost_one_lookup() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    let ada = app.sign_up("+16265550160", "ada@example.com").await;
    let bob = app.sign_up("+16265550161", "bob@example.com").await;
    app.use_token(Some(&ada.access_token));
    app.eventually("the SessionM link", || async {
        app.data("{ me { loyalty { pointsBalance } } }", json!({}))
            .await["me"]["loyalty"]
            .is_object()
    })
    .await;
    app.reset_calls(Sim::Sessionm).await;
    let data = app
        .data(
            "{ vouchers { id name description status expiresAt discount { kind amount { amount currencyCode } percentage } }
               me { loyalty { pointsBalance tier vouchers { id status } } } }",
            json!({}),
        )
        .await;
    let calls = app.calls(Sim::Sessionm).await;
    // Bob's account may still be being linked meanwhile; only wallet lookups count here.
    assert_eq!(
        calls.get("POST /api/2.0/lookup"),
        Some(&1),
        "one SessionM lookup for the whole request: {calls:?}"
    );
    let vouchers = data["vouchers"].as_array().unwrap();
    assert_eq!(vouchers.len(), 4);
    let kinds: Vec<&str> = vouchers
        .iter()
        .map(|v| v["discount"]["kind"].as_str().unwrap())
        .collect();
    for kind in ["FREE_ITEM", "FIXED_AMOUNT", "PERCENTAGE"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    assert_eq!(
        vouchers.iter().filter(|v| v["status"] == "EXPIRED").count(),
        1
    );
    let fixed = vouchers
        .iter()
        .find(|v| v["discount"]["kind"] == "FIXED_AMOUNT")
        .unwrap();
    assert_eq!(fixed["discount"]["amount"]["currencyCode"], "USD");
    let percentage = vouchers
        .iter()
        .find(|v| v["discount"]["kind"] == "PERCENTAGE")
        .unwrap();
    assert!(percentage["discount"]["percentage"].as_u64().is_some());
    let nested: Vec<&Value> = data["me"]["loyalty"]["vouchers"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(nested.len(), 4);
    assert_eq!(data["me"]["loyalty"]["pointsBalance"], 0);

    // Bob's wallet is his own.
    app.eventually("Bob's link", || async {
        app.gql_as(
            Some(&bob.access_token),
            "{ me { loyalty { pointsBalance } } }",
            json!({}),
        )
        .await["data"]["me"]["loyalty"]
            .is_object()
    })
    .await;
    let bobs = app
        .gql_as(Some(&bob.access_token), "{ vouchers { id } }", json!({}))
        .await;
    let bob_ids: Vec<&Value> = bobs["data"]["vouchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["id"])
        .collect();
    assert!(vouchers.iter().all(|v| !bob_ids.contains(&&v["id"])));

    let anonymous = app.gql_as(None, "{ vouchers { id } }", json!({})).await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
}
