use crate::helpers::{Sim, spawn_app};
use serde_json::{Value, json};

#[tokio::test]
async fn stores_list_the_sandbox_estate_with_a_closed_store_and_an_offline_pos() {
    let app = spawn_app().await;
    let data = app
        .data(
            "{ stores { id name address isOpen currencyCode } }",
            json!({}),
        )
        .await;
    let stores = data["stores"].as_array().expect("stores");
    assert!(stores.len() >= 3);
    assert_eq!(stores.iter().filter(|s| s["isOpen"] == false).count(), 1);
    assert!(
        stores
            .iter()
            .any(|s| s["name"].as_str().unwrap().contains("POS offline"))
    );
    assert!(stores.iter().all(|s| s["currencyCode"] == "USD"));
}

#[tokio::test]
async fn products_carry_prices_as_decimal_strings_and_modifier_groups() {
    let app = spawn_app().await;
    let data = app
        .data(
            r#"{ product(id: "prd_latte") { id name available price { amount currencyCode }
                 modifierGroups { name minSelections maxSelections options { id name available priceDelta { amount } } } } }"#,
            json!({}),
        )
        .await;
    let latte = &data["product"];
    assert_eq!(
        latte["price"],
        json!({"amount": "4.95", "currencyCode": "USD"})
    );
    assert_eq!(latte["available"], true);
    let size = &latte["modifierGroups"][0];
    assert_eq!(
        (
            size["name"].as_str(),
            size["minSelections"].as_i64(),
            size["maxSelections"].as_i64()
        ),
        (Some("Size"), Some(1), Some(1))
    );
    assert_eq!(size["options"][2]["priceDelta"]["amount"], "1.00");
    let total_products =
        app.data("{ stores { products { id } } }", json!({})).await["stores"][0]["products"]
            .as_array()
            .unwrap()
            .len();
    assert!(total_products >= 20);
}

#[tokio::test]
async fn unknown_and_malformed_product_ids_are_null_and_order_is_kept() {
    let app = spawn_app().await;
    let data = app
        .data(
            r#"{ a: product(id: "prd_nope") { id } b: product(id: "../etc") { id }
                 products(ids: ["prd_mocha", "prd_nope", "bad id", "prd_latte"]) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["a"], json!(null));
    assert_eq!(data["b"], json!(null));
    assert_eq!(
        data["products"],
        json!([{"id": "prd_mocha"}, null, null, {"id": "prd_latte"}])
    );
}

#[tokio::test]
async fn every_store_menu_in_one_query_costs_one_product_lookup() {
    let app = spawn_app().await;
    app.reset_calls(Sim::Okya).await;
    let data = app
        .data(
            "{ stores { id products { id name modifierGroups { id } } } }",
            json!({}),
        )
        .await;
    assert!(data["stores"].as_array().unwrap().len() >= 3);
    let calls = app.calls(Sim::Okya).await;
    assert_eq!(calls.get("GET /v1/products"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("GET /v1/stores"), Some(&1), "{calls:?}");
}

#[tokio::test]
async fn a_cart_of_twenty_distinct_products_costs_no_product_lookup_on_a_read_catalogue() {
    let app = spawn_app().await;
    let cart = app.new_cart("str_pasadena").await;
    let menu = app.data(r#"{ store(id: "str_pasadena") { products { id available modifierGroups { minSelections options { id } } } } }"#, json!({})).await;
    let lines: Vec<_> = menu["store"]["products"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["available"] == true)
        .take(20)
        .map(|p| {
            // Satisfy each required group with its first option.
            let modifiers: Vec<_> = p["modifierGroups"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["minSelections"].as_i64() > Some(0))
                .map(|g| g["options"][0]["id"].clone())
                .collect();
            json!({"productId": p["id"], "quantity": 1, "modifierOptionIds": modifiers})
        })
        .collect();
    assert_eq!(lines.len(), 20);
    app.add_lines(&cart, json!(lines)).await;
    app.reset_calls(Sim::Okya).await;
    let data = app
        .data(
            "query($c: ID!) { cart(id: $c) { store { name } lines { product { name price { amount } } modifiers { name } } } }",
            json!({"c": cart}),
        )
        .await;
    let lines = data["cart"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 20);
    assert!(lines.iter().all(|l| l["product"]["name"].is_string()));
    let calls = app.calls(Sim::Okya).await;
    // The store and the products come from the catalogue, read once for the menu above;
    // the cart itself is Okya's of the moment.
    assert_eq!(calls.get("GET /v1/products"), None, "{calls:?}");
    assert_eq!(calls.get("GET /v1/stores"), None, "{calls:?}");
    assert_eq!(calls.get("GET /v1/carts/{cart_id}"), Some(&1), "{calls:?}");
}

#[tokio::test]
async fn a_repeated_id_gets_its_answer_at_every_place_it_was_asked() {
    let app = spawn_app().await;
    // The catalogue holds every product on a menu; only ids it lacks are asked of Okya.
    app.data("{ stores { id } }", json!({})).await;
    app.reset_calls(Sim::Okya).await;
    let data = app
        .data(
            r#"{ products(ids: ["prd_latte", "prd_latte"]) { id }
                 mixed: products(ids: ["prd_mocha", "prd_nope", "prd_mocha", "bad id", "prd_nope", "prd_latte", "prd_mocha"]) { id name } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        data["products"],
        json!([{"id": "prd_latte"}, {"id": "prd_latte"}])
    );
    let ids: Vec<Value> = data["mixed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![
            json!("prd_mocha"),
            Value::Null,
            json!("prd_mocha"),
            Value::Null,
            Value::Null,
            json!("prd_latte"),
            json!("prd_mocha")
        ]
    );
    assert_eq!(data["mixed"][0], data["mixed"][6]);
    let calls = app.calls(Sim::Okya).await;
    assert_eq!(
        calls.get("GET /v1/products"),
        Some(&1),
        "still one batch: {calls:?}"
    );
}
