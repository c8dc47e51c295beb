//! The customer's SessionM vouchers, asked for once per request.

use crate::helpers::{Db, Sim, TestApp, spawn_app_with};
use crate::routes::LOOKUP;
use crate::shop::placed;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[tokio::test]
async fn vouchers_list_the_wallet_with_expired_ones_and_cost_one_lookup() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    let ada = app.sign_up_and_use("+16265550160", "ada@example.com").await;
    let bob = app.sign_up("+16265550161", "bob@example.com").await;
    app.wait_for_link(&ada.access_token).await;
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
        calls.get(LOOKUP.name),
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
    app.wait_for_link(&bob.access_token).await;
    let bobs = app
        .gql_as(Some(&bob.access_token), "{ vouchers { id } }", json!({}))
        .await;
    let bob_ids: Vec<&Value> = bobs["data"]["vouchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["id"])
        .collect();
    // Bob has a wallet of his own, and none of it is Ada's.
    assert_eq!(bob_ids.len(), 4, "{bobs}");
    assert!(vouchers.iter().all(|v| !bob_ids.contains(&&v["id"])));

    let anonymous = app.gql_as(None, "{ vouchers { id } }", json!({})).await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
}

/// What a normalised client cache (Apollo's `InMemoryCache`, urql's Graphcache) does with
/// a response: every object with `__typename` and `id` is stored once under that key and
/// its fields merged. Panics when one key would hold two different values of a field:
/// two objects sharing an id, one's data shown as the other's.
fn assert_normalisable(response: &Value) {
    fn walk(value: &Value, store: &mut BTreeMap<String, serde_json::Map<String, Value>>) -> Value {
        match value {
            Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, store)).collect()),
            Value::Object(fields) => {
                let normalised: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(name, v)| (name.clone(), walk(v, store)))
                    .collect();
                let (Some(typename), Some(id)) = (fields.get("__typename"), fields.get("id"))
                else {
                    return Value::Object(normalised);
                };
                let key = format!("{}:{}", typename.as_str().unwrap(), id.as_str().unwrap());
                let entry = store.entry(key.clone()).or_default();
                for (name, v) in normalised {
                    if let Some(seen) = entry.get(&name) {
                        assert_eq!(seen, &v, "{key}.{name}: two objects share one identity");
                    }
                    entry.insert(name, v);
                }
                json!({ "__ref": key })
            }
            other => other.clone(),
        }
    }
    walk(response, &mut BTreeMap::new());
}

/// A cart at `str_pasadena` with `quantity` small lattes.
async fn lattes(app: &TestApp, quantity: u32) -> String {
    app.cart_with(
        "str_pasadena",
        json!([{"productId": "prd_latte", "quantity": quantity, "modifierOptionIds": ["opt_size_small"]}]),
    )
    .await
}

/// Every type with an `id` is identified by it alone: a declined checkout and its retry
/// with the same voucher are two orders, each with its own applied voucher.
#[tokio::test]
async fn two_orders_that_used_one_voucher_never_share_an_identity() {
    let app = spawn_app_with(Db::Sqlite, |s| s.sandbox.auto_accept_delay_ms = 0).await;
    let ada = app.sign_up_and_use("+16265550162", "ada@example.com").await;
    app.wait_for_link(&ada.access_token).await;
    let percent = app.voucher("PERCENTAGE", "AVAILABLE").await;
    let mut orders = Vec::new();
    for (quantity, card, key) in [
        (1, "pm_card_chargeDeclined", "declined"),
        (3, "pm_card_visa", "retry"),
    ] {
        let cart = lattes(&app, quantity).await;
        let payload = app
            .checkout_selecting("id status", &cart, card, Some(&percent), key)
            .await;
        orders.push(placed(&payload));
    }
    let order_fields = "__typename id status discount { amount } voucher { __typename id voucherId name discount { amount currencyCode } } lines { __typename id quantity product { __typename id name } } store { __typename id name }";
    let data = app
        .data(
            &format!(
                "query($a: ID!, $b: ID!) {{ a: order(id: $a) {{ {order_fields} }} b: order(id: $b) {{ {order_fields} }}
                   me {{ __typename id orders {{ nodes {{ {order_fields} }} }} loyalty {{ vouchers {{ __typename id status }} }} }}
                   vouchers {{ __typename id status }} }}"
            ),
            json!({"a": orders[0], "b": orders[1]}),
        )
        .await;
    assert_eq!(data["a"]["status"], "PAYMENT_FAILED");
    assert_normalisable(&data);
    let (a, b) = (&data["a"]["voucher"], &data["b"]["voucher"]);
    assert_eq!(a["voucherId"], percent);
    assert_eq!(b["voucherId"], percent);
    assert_ne!(
        a["discount"], b["discount"],
        "different baskets, different discounts"
    );
    assert_ne!(
        a["id"], b["id"],
        "two applications of one voucher are two objects"
    );
    assert_normalisable(&data);
}
