//! The app's side of the setup and of the checkout loop: GraphQL over reqwest, sign-up,
//! carts and checkout, as the mobile app sends them.

use crate::Error;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const REGISTER: &str = "mutation($i: AccountRegisterInput!) { accountRegister(input: $i) { customer { id } userErrors { code message } } }";
const CONFIRM: &str = "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { customer { id } accessToken userErrors { code message } } }";
const LOYALTY: &str = "{ me { loyalty { pointsBalance } } }";
const CART_CREATE: &str = "mutation($i: CartCreateInput!) { cartCreate(input: $i) { cart { id } userErrors { code message } } }";
const LINES_ADD: &str = "mutation($c: ID!, $l: [CartLineInput!]!) { cartLinesAdd(cartId: $c, lines: $l) { cart { id } userErrors { code message } } }";
/// The checkout mutation the checkout scenario times.
pub const CHECKOUT: &str = "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id number status payment { status clientSecret } } userErrors { code message } } }";

/// A GraphQL client of one service.
#[derive(Clone)]
pub struct Gql {
    pub http: reqwest::Client,
    pub url: String,
}

impl Gql {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
            url: format!("{base}/graphql"),
        }
    }

    /// Sends `query`; `Err` for anything but a 200 with `data` and no `errors`.
    pub async fn send(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Value, Error> {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        if status != 200 {
            return Err(format!("status {status}: {}", bench::check::excerpt(&body)).into());
        }
        Ok(bench::check::graphql_data(&body)?)
    }
}

/// The `userErrors` of a payload, when there are any.
fn user_errors(payload: &Value) -> Result<(), Error> {
    match payload["userErrors"].as_array() {
        Some(errors) if !errors.is_empty() => Err(format!("userErrors: {payload}").into()),
        _ => Ok(()),
    }
}

/// A signed-in customer.
#[derive(Clone, Debug)]
pub struct Customer {
    pub token: String,
    /// E.164, how the simulators know the customer.
    pub phone: String,
}

/// Registers and confirms customer `n` (phone `+1626555nnnn`), then waits until its SessionM
/// account is linked.
pub async fn sign_up(gql: &Gql, n: u32) -> Result<Customer, Error> {
    let phone = format!("+1626555{:04}", n % 10_000);
    let input = json!({"email": format!("bench{n}@example.com"), "phone": phone, "firstName": "Ada", "lastName": "Lovelace"});
    let data = gql.send(None, REGISTER, json!({"i": input})).await?;
    user_errors(&data["accountRegister"])?;
    let code = cbtl_sandbox::credentials::OTP_CODE;
    let data = gql
        .send(None, CONFIRM, json!({"i": {"phone": phone, "code": code}}))
        .await?;
    user_errors(&data["accountConfirm"])?;
    let token = data["accountConfirm"]["accessToken"]
        .as_str()
        .ok_or("no access token")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let data = gql.send(Some(&token), LOYALTY, json!({})).await?;
        if !data["me"]["loyalty"].is_null() {
            break;
        }
        if Instant::now() > deadline {
            return Err("the SessionM account was not linked within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Customer { token, phone })
}

/// A cart at `str_pasadena` with two large oat lattes; its id.
pub async fn cart_with_a_line(gql: &Gql, customer: &Customer) -> Result<String, Error> {
    let token = Some(customer.token.as_str());
    let data = gql
        .send(
            token,
            CART_CREATE,
            json!({"i": {"storeId": "str_pasadena"}}),
        )
        .await?;
    user_errors(&data["cartCreate"])?;
    let cart = data["cartCreate"]["cart"]["id"]
        .as_str()
        .ok_or("no cart id")?
        .to_owned();
    let lines = json!([{"productId": "prd_latte", "quantity": 2, "modifierOptionIds": ["opt_size_large", "opt_milk_oat"]}]);
    let data = gql
        .send(token, LINES_ADD, json!({"c": cart, "l": lines}))
        .await?;
    user_errors(&data["cartLinesAdd"])?;
    Ok(cart)
}

/// The `checkout` payload's order for `cart` paid with `payment_method`.
pub async fn checkout(
    gql: &Gql,
    customer: &Customer,
    cart: &str,
    payment_method: &str,
) -> Result<Value, Error> {
    let key = format!("bench-{}-{}", cart, fastrand::u64(..));
    let input = json!({"cartId": cart, "paymentMethodId": payment_method, "idempotencyKey": key});
    let data = gql
        .send(Some(&customer.token), CHECKOUT, json!({"i": input}))
        .await?;
    user_errors(&data["checkout"])?;
    Ok(data["checkout"]["order"].clone())
}

/// Places one order paid with `payment_method`; the order as `checkout` answered.
pub async fn place_order(
    gql: &Gql,
    customer: &Customer,
    payment_method: &str,
) -> Result<Value, Error> {
    let cart = cart_with_a_line(gql, customer).await?;
    checkout(gql, customer, &cart, payment_method).await
}
