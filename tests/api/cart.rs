use crate::helpers::{Sim, TestApp, error_code, error_codes, spawn_app};
use crate::routes::{CART_LINES, CARTS};
use serde_json::{Value, json};

const CART_FIELDS: &str = "id store { id } totalQuantity lines { id quantity product { id } modifiers { id } unitPrice { amount } lineTotal { amount } } subtotal { amount currencyCode } discount { amount } tax { amount } total { amount }";

async fn add(app: &TestApp, cart: &str, lines: Value) -> Value {
    let query = format!(
        "mutation($c: ID!, $l: [CartLineInput!]!) {{ cartLinesAdd(cartId: $c, lines: $l) {{ cart {{ {CART_FIELDS} }} userErrors {{ code field message }} }} }}"
    );
    app.data(&query, json!({"c": cart, "l": lines})).await["cartLinesAdd"].clone()
}

async fn update(app: &TestApp, cart: &str, lines: Value) -> Value {
    let query = format!(
        "mutation($c: ID!, $l: [CartLineUpdateInput!]!) {{ cartLinesUpdate(cartId: $c, lines: $l) {{ cart {{ {CART_FIELDS} }} userErrors {{ code field message }} }} }}"
    );
    app.data(&query, json!({"c": cart, "l": lines})).await["cartLinesUpdate"].clone()
}

async fn remove(app: &TestApp, cart: &str, line_ids: Value) -> Value {
    let query = format!(
        "mutation($c: ID!, $l: [ID!]!) {{ cartLinesRemove(cartId: $c, lineIds: $l) {{ cart {{ {CART_FIELDS} }} userErrors {{ code field message }} }} }}"
    );
    app.data(&query, json!({"c": cart, "l": line_ids})).await["cartLinesRemove"].clone()
}

fn latte(quantity: i64) -> Value {
    json!({"productId": "prd_latte", "quantity": quantity, "modifierOptionIds": ["opt_size_large", "opt_milk_oat"]})
}

#[tokio::test]
async fn a_cart_is_created_filled_changed_and_emptied_with_okya_totals() {
    let app = spawn_app().await;
    let cart = app.new_cart("str_pasadena").await;

    // Latte 4.95 + large 1.00 + oat 0.80 = 6.75; two of them 13.50.
    let payload = add(
        &app,
        &cart,
        json!([latte(2), {"productId": "prd_croissant", "quantity": 1}]),
    )
    .await;
    assert_eq!(payload["userErrors"], json!([]));
    let c = &payload["cart"];
    assert_eq!(c["store"]["id"], "str_pasadena");
    assert_eq!(c["lines"][0]["unitPrice"]["amount"], "6.75");
    assert_eq!(c["lines"][0]["lineTotal"]["amount"], "13.50");
    assert_eq!(
        c["lines"][0]["modifiers"],
        json!([{"id": "opt_milk_oat"}, {"id": "opt_size_large"}])
    );
    // Subtotal 13.50 + 3.50 = 17.00; tax 10.25% = 1.7425 -> 1.74; total 18.74.
    assert_eq!(
        c["subtotal"],
        json!({"amount": "17.00", "currencyCode": "USD"})
    );
    assert_eq!(c["discount"]["amount"], "0.00");
    assert_eq!(c["tax"]["amount"], "1.74");
    assert_eq!(c["total"]["amount"], "18.74");
    assert_eq!(c["totalQuantity"], 3);

    // The same product with the same modifiers adds up on one line.
    let payload = add(&app, &cart, json!([latte(1)])).await;
    assert_eq!(payload["cart"]["lines"].as_array().unwrap().len(), 2);
    assert_eq!(payload["cart"]["lines"][0]["quantity"], 3);

    let latte_line = payload["cart"]["lines"][0]["id"].clone();
    let payload = update(&app, &cart, json!([{"lineId": latte_line, "quantity": 5}])).await;
    assert_eq!(payload["userErrors"], json!([]));
    assert_eq!(payload["cart"]["lines"][0]["quantity"], 5);
    assert_eq!(payload["cart"]["subtotal"]["amount"], "37.25");

    let payload = remove(&app, &cart, json!([latte_line])).await;
    assert_eq!(payload["userErrors"], json!([]));
    assert_eq!(payload["cart"]["subtotal"]["amount"], "3.50");

    // Reading it back gives the same cart.
    let read = app
        .data(
            &format!("query($c: ID!) {{ cart(id: $c) {{ {CART_FIELDS} }} }}"),
            json!({"c": cart}),
        )
        .await;
    assert_eq!(read["cart"], payload["cart"]);
}

#[tokio::test]
async fn creating_a_cart_at_an_unknown_or_closed_store_is_a_user_error() {
    let app = spawn_app().await;
    let q = "mutation($s: ID!) { cartCreate(input: {storeId: $s}) { cart { id } userErrors { code field message } } }";
    for (store, code) in [
        ("str_nowhere", "STORE_NOT_FOUND"),
        ("a/b", "STORE_NOT_FOUND"),
        ("str_sunset", "STORE_CLOSED"),
    ] {
        let payload = app.data(q, json!({"s": store})).await["cartCreate"].clone();
        assert_eq!(payload["cart"], json!(null));
        assert_eq!(error_codes(&payload), vec![code], "{store}: {payload}");
        assert_eq!(
            payload["userErrors"][0]["field"],
            json!(["input", "storeId"])
        );
        assert!(
            !payload["userErrors"][0]["message"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn quantities_outside_1_to_99_are_refused_before_reaching_okya() {
    let app = spawn_app().await;
    let cart = app.new_cart("str_pasadena").await;
    app.reset_calls(Sim::Okya).await;
    for quantity in [0, 100, -1] {
        let payload = add(&app, &cart, json!([latte(quantity)])).await;
        assert_eq!(error_codes(&payload), vec!["INVALID_QUANTITY"]);
        assert_eq!(
            payload["userErrors"][0]["field"],
            json!(["lines", "0", "quantity"])
        );
        assert_eq!(payload["cart"], json!(null));
    }
    assert_eq!(app.call_count(CART_LINES).await, 0);

    let added = add(&app, &cart, json!([latte(99)])).await;
    assert_eq!(added["userErrors"], json!([]));
    // 99 plus one more on the same line would exceed the limit: Okya refuses it.
    let payload = add(&app, &cart, json!([latte(1)])).await;
    assert_eq!(error_codes(&payload), vec!["INVALID_QUANTITY"]);

    let line = added["cart"]["lines"][0]["id"].clone();
    let payload = update(&app, &cart, json!([{"lineId": line, "quantity": 0}])).await;
    assert_eq!(error_codes(&payload), vec!["INVALID_QUANTITY"]);
    let payload = update(&app, &cart, json!([{"lineId": line, "quantity": 100}])).await;
    assert_eq!(error_codes(&payload), vec!["INVALID_QUANTITY"]);
}

#[tokio::test]
async fn unknown_unsold_and_sold_out_products_are_user_errors() {
    let app = spawn_app().await;
    let cart = app.new_cart("str_santa_monica").await;
    let cases = [
        (
            json!({"productId": "prd_nope", "quantity": 1}),
            "PRODUCT_NOT_FOUND",
        ),
        (
            json!({"productId": "not a valid id", "quantity": 1}),
            "PRODUCT_NOT_FOUND",
        ),
        // Santa Monica does not sell food.
        (
            json!({"productId": "prd_avocado_toast", "quantity": 1}),
            "PRODUCT_NOT_FOUND",
        ),
        (
            json!({"productId": "prd_banana_bread", "quantity": 1}),
            "PRODUCT_UNAVAILABLE",
        ),
    ];
    for (line, code) in cases {
        let payload = add(&app, &cart, json!([line])).await;
        assert_eq!(error_codes(&payload), vec![code], "{line}");
        assert_eq!(
            payload["userErrors"][0]["field"],
            json!(["lines", "0", "productId"])
        );
    }
    let cart_now = app
        .data(
            "query($c: ID!) { cart(id: $c) { lines { id } } }",
            json!({"c": cart}),
        )
        .await;
    assert_eq!(cart_now["cart"]["lines"], json!([]), "nothing was added");
}

#[tokio::test]
async fn modifiers_must_belong_to_the_product_and_respect_group_limits() {
    let app = spawn_app().await;
    let cart = app.new_cart("str_pasadena").await;
    let cases = [
        // Oat milk on a croissant.
        (
            json!({"productId": "prd_croissant", "quantity": 1, "modifierOptionIds": ["opt_milk_oat"]}),
            "INVALID_MODIFIER",
        ),
        (
            json!({"productId": "prd_latte", "quantity": 1, "modifierOptionIds": ["opt_size_small", "opt_nope"]}),
            "INVALID_MODIFIER",
        ),
        // Sold-out soy milk.
        (
            json!({"productId": "prd_latte", "quantity": 1, "modifierOptionIds": ["opt_size_small", "opt_milk_soy"]}),
            "INVALID_MODIFIER",
        ),
        (
            json!({"productId": "prd_latte", "quantity": 1, "modifierOptionIds": ["opt_size_small", "opt_size_small"]}),
            "INVALID_MODIFIER",
        ),
        // Size is required: exactly one.
        (
            json!({"productId": "prd_latte", "quantity": 1, "modifierOptionIds": []}),
            "MODIFIER_SELECTION",
        ),
        (
            json!({"productId": "prd_latte", "quantity": 1, "modifierOptionIds": ["opt_size_small", "opt_size_large"]}),
            "MODIFIER_SELECTION",
        ),
        // At most one milk.
        (
            json!({"productId": "prd_latte", "quantity": 1, "modifierOptionIds": ["opt_size_small", "opt_milk_oat", "opt_milk_almond"]}),
            "MODIFIER_SELECTION",
        ),
    ];
    for (line, code) in cases {
        let payload = add(&app, &cart, json!([line])).await;
        assert_eq!(error_codes(&payload), vec![code], "{line}");
        assert_eq!(
            payload["userErrors"][0]["field"],
            json!(["lines", "0", "modifierOptionIds"]),
            "{line}"
        );
    }
    // Three extra shots are allowed.
    let ok = add(
        &app,
        &cart,
        json!([{"productId": "prd_americano", "quantity": 1, "modifierOptionIds": ["opt_size_small", "opt_shot_espresso", "opt_shot_decaf", "opt_shot_ristretto"]}]),
    )
    .await;
    assert_eq!(ok["userErrors"], json!([]));
    assert_eq!(ok["cart"]["lines"][0]["unitPrice"]["amount"], "6.45");
}

#[tokio::test]
async fn unknown_lines_and_carts_are_user_errors() {
    let app = spawn_app().await;
    let cart = app.new_cart("str_pasadena").await;
    add(&app, &cart, json!([latte(1)])).await;

    let payload = update(
        &app,
        &cart,
        json!([{"lineId": "ln_missing", "quantity": 2}]),
    )
    .await;
    assert_eq!(error_codes(&payload), vec!["LINE_NOT_FOUND"]);
    assert_eq!(
        payload["userErrors"][0]["field"],
        json!(["lines", "0", "lineId"])
    );

    let payload = remove(&app, &cart, json!(["ln_missing"])).await;
    assert_eq!(error_codes(&payload), vec!["LINE_NOT_FOUND"]);
    assert_eq!(payload["userErrors"][0]["field"], json!(["lineIds", "0"]));

    for missing in ["crt_missing", "not/a/cart"] {
        let payload = add(&app, missing, json!([latte(1)])).await;
        assert_eq!(error_codes(&payload), vec!["CART_NOT_FOUND"]);
        assert_eq!(payload["userErrors"][0]["field"], json!(["cartId"]));
        let read = app
            .data(
                "query($c: ID!) { cart(id: $c) { id } }",
                json!({"c": missing}),
            )
            .await;
        assert_eq!(read["cart"], json!(null));
    }
    let payload = remove(&app, &cart, json!([])).await;
    assert_eq!(error_codes(&payload), vec!["INVALID_INPUT"]);
}

#[tokio::test]
async fn lost_okya_answers_are_retried_under_one_key_and_persistent_failures_are_upstream_unavailable()
 {
    let app = spawn_app().await;
    // Okya makes the cart, then its answer is lost twice: the retries carry the first
    // try's key, so Okya answers with that cart rather than making two more.
    app.lose_next(CARTS, 2, 503).await;
    let cart = app.new_cart("str_pasadena").await;
    assert!(cart.starts_with("crt_"));
    app.assert_one_key(CARTS, 3).await;
    // Lines added, then the answer lost twice: added once, not three times.
    app.lose_next(CART_LINES, 2, 503).await;
    let added = add(&app, &cart, json!([latte(2)])).await;
    assert_eq!(added["userErrors"], json!([]));
    assert_eq!(added["cart"]["totalQuantity"], 2, "{added}");
    app.assert_one_key(CART_LINES, 3).await;

    app.faults(Sim::Okya, json!({"error_rate": 1.0})).await;
    // A cart is always read from Okya (the catalogue, held in process, would be served).
    let body = app
        .gql("query($c: ID!) { cart(id: $c) { id } }", json!({"c": cart}))
        .await;
    assert_eq!(error_code(&body), "UPSTREAM_UNAVAILABLE");
    assert!(
        !body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("okya"),
        "no internals leak: {body}"
    );
    let body = app
        .gql(
            "mutation { cartCreate(input: {storeId: \"str_pasadena\"}) { cart { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "UPSTREAM_UNAVAILABLE");
}
