//! The people of a soak: customers who sign up and order as the app lets them (cards
//! that pay, decline or ask for 3-D Secure, vouchers, retries with the same idempotency
//! key, two checkouts racing for one voucher), and the store staff who accept, reject,
//! prepare and hand over the orders in Okya's order manager.

use crate::client::{Client, Failure, RETRYABLE_USER_ERRORS};
use crate::processes::Simulators;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

const REGISTER: &str = "mutation($i: AccountRegisterInput!) { accountRegister(input: $i) { customer { id } userErrors { code message } } }";
const CONFIRM: &str = "mutation($i: AccountConfirmInput!) { accountConfirm(input: $i) { customer { id } accessToken userErrors { code message } } }";
const RESEND: &str = "mutation($i: AccountResendOtpInput!) { accountResendOtp(input: $i) { userErrors { code message } } }";
const SIGN_IN_CODE: &str = "mutation($i: SignInRequestOtpInput!) { signInRequestOtp(input: $i) { userErrors { code message } } }";
const SIGN_IN: &str =
    "mutation($i: SignInInput!) { signIn(input: $i) { accessToken userErrors { code message } } }";
const CART_CREATE: &str = "mutation($i: CartCreateInput!) { cartCreate(input: $i) { cart { id } userErrors { code message } } }";
const LINES_ADD: &str = "mutation($c: ID!, $l: [CartLineInput!]!) { cartLinesAdd(cartId: $c, lines: $l) { cart { id total { amount } } userErrors { code message } } }";
const VOUCHERS: &str = "{ vouchers { id status } }";
const CHECKOUT: &str = "mutation($i: CheckoutInput!) { checkout(input: $i) { order { id status payment { status clientSecret } } userErrors { code message } } }";
const ORDER: &str = "query($id: ID!) { order(id: $id) { id status } }";

/// The sandbox's one-time code (`cbtl-sandbox --otp-code`, by default).
const OTP_CODE: &str = cbtl_sandbox::credentials::OTP_CODE;

/// What the customers did and saw.
#[derive(Default, Debug)]
pub struct Stats {
    pub signed_up: u64,
    pub signed_in: u64,
    pub sign_up_failed: u64,
    pub wrong_codes_refused: u64,
    pub checkouts: u64,
    pub duplicate_checkouts: u64,
    pub voucher_races: u64,
    pub authenticated: u64,
    pub abandoned: u64,
    pub retries: u64,
    /// Final answers by `userErrors` code or order status.
    pub outcomes: BTreeMap<String, u64>,
    /// Requests that never got an answer within their attempts.
    pub gave_up: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.signed_up += other.signed_up;
        self.signed_in += other.signed_in;
        self.sign_up_failed += other.sign_up_failed;
        self.wrong_codes_refused += other.wrong_codes_refused;
        self.checkouts += other.checkouts;
        self.duplicate_checkouts += other.duplicate_checkouts;
        self.voucher_races += other.voucher_races;
        self.authenticated += other.authenticated;
        self.abandoned += other.abandoned;
        self.retries += other.retries;
        self.gave_up += other.gave_up;
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k.clone()).or_default() += v;
        }
    }

    fn outcome(&mut self, what: &str) {
        *self.outcomes.entry(what.to_owned()).or_default() += 1;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} signed up ({} could not), {} signed in again, {} wrong codes refused, {} checkouts ({} sent twice or three times at once, {} voucher races), {} 3-D Secure completed, {} abandoned, {} requests retried, {} given up; first answers: {:?}",
            self.signed_up,
            self.sign_up_failed,
            self.signed_in,
            self.wrong_codes_refused,
            self.checkouts,
            self.duplicate_checkouts,
            self.voucher_races,
            self.authenticated,
            self.abandoned,
            self.retries,
            self.gave_up,
            self.outcomes
        )
    }
}

/// The first `userErrors` code of `payload`, if any.
fn user_error(payload: &Value) -> Option<String> {
    payload["userErrors"]
        .as_array()
        .and_then(|e| e.first())
        .map(|e| e["code"].as_str().unwrap_or("?").to_owned())
}

/// One customer: signs up, then orders until `stop_ordering`.
pub async fn run_customer(
    n: usize,
    client: Client,
    sims: Arc<Simulators>,
    stop_ordering: Instant,
) -> Stats {
    let mut stats = Stats::default();
    // Spread the sign-ups over the first seconds, as real traffic would.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5_000))).await;
    let Some(mut token) = sign_up(n, &client, &mut stats).await else {
        stats.sign_up_failed += 1;
        return stats;
    };
    stats.signed_up += 1;
    // Some sign in again on another device after their first order (once the code they
    // were sent at sign-up allows another), and order from there.
    let signs_in_again = fastrand::u8(0..4) == 0;
    let mut orders = 0;
    while Instant::now() < stop_ordering {
        if signs_in_again
            && orders == 1
            && let Some(again) = sign_in(n, &client, &mut stats).await
        {
            stats.signed_in += 1;
            token = again;
        }
        orders += 1;
        let mut customer = Customer {
            client: &client,
            sims: &sims,
            token: &token,
            stats: &mut stats,
        };
        customer.order_once().await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(500..3_000))).await;
    }
    stats
}

/// Create Account: register, (sometimes) a wrong code first, then the right one; a lost
/// answer is retried as the app would (an `ACCOUNT_EXISTS` after a lost answer moves on to
/// the code; an expired or missing code asks for a new one).
async fn sign_up(n: usize, client: &Client, stats: &mut Stats) -> Option<String> {
    let phone = format!("+1626555{:04}", n % 10_000);
    let email = format!("soak{n}@example.com");
    let input = json!({"i": {"email": email, "phone": phone, "firstName": "Soak", "lastName": format!("Customer{n}")}});
    let mut registered = false;
    for _ in 0..8 {
        match client
            .retried(None, REGISTER, input.clone(), 10, &mut stats.retries)
            .await
        {
            Ok(data) => match user_error(&data["accountRegister"]).as_deref() {
                None | Some("ACCOUNT_EXISTS") => {
                    registered = true;
                    break;
                }
                Some(code) if RETRYABLE_USER_ERRORS.contains(&code) || code == "OTP_THROTTLED" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Some(_) => return None,
            },
            Err(_) => stats.gave_up += 1,
        }
    }
    if !registered {
        return None;
    }
    if fastrand::u8(0..10) == 0 {
        let wrong = json!({"i": {"phone": phone, "code": "000000"}});
        if let Ok(data) = client
            .retried(None, CONFIRM, wrong, 10, &mut stats.retries)
            .await
            && user_error(&data["accountConfirm"]).is_some()
        {
            stats.wrong_codes_refused += 1;
        }
    }
    let confirm = json!({"i": {"phone": phone, "code": OTP_CODE}});
    for _ in 0..8 {
        match client
            .retried(None, CONFIRM, confirm.clone(), 10, &mut stats.retries)
            .await
        {
            Ok(data) => {
                let payload = &data["accountConfirm"];
                if let Some(token) = payload["accessToken"].as_str() {
                    return Some(token.to_owned());
                }
                // The code was lost, expired or used up: ask for a new one.
                let resend = json!({"i": {"phone": phone}});
                let _ = client
                    .retried(None, RESEND, resend, 10, &mut stats.retries)
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => stats.gave_up += 1,
        }
    }
    None
}

/// Sign-in with a code sent to the phone, retried as the app would.
async fn sign_in(n: usize, client: &Client, stats: &mut Stats) -> Option<String> {
    let phone = format!("+1626555{:04}", n % 10_000);
    for _ in 0..8 {
        let request = json!({"i": {"phone": phone}});
        match client
            .retried(None, SIGN_IN_CODE, request, 10, &mut stats.retries)
            .await
        {
            Ok(data) if user_error(&data["signInRequestOtp"]).is_some() => {
                // Too soon after the last code: the app waits and asks again.
                tokio::time::sleep(Duration::from_secs(8)).await;
                continue;
            }
            Ok(_) => {}
            Err(_) => {
                stats.gave_up += 1;
                continue;
            }
        }
        let code = json!({"i": {"phone": phone, "code": OTP_CODE}});
        match client
            .retried(None, SIGN_IN, code, 10, &mut stats.retries)
            .await
        {
            Ok(data) => {
                if let Some(token) = data["signIn"]["accessToken"].as_str() {
                    return Some(token.to_owned());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(_) => stats.gave_up += 1,
        }
    }
    None
}

struct Customer<'a> {
    client: &'a Client,
    sims: &'a Simulators,
    token: &'a str,
    stats: &'a mut Stats,
}

/// Which card a checkout uses.
#[derive(Clone, Copy)]
enum Card {
    Pays,
    Declines,
    /// 3-D Secure, then completed (`true`) or abandoned.
    Authenticates(bool),
}

impl Card {
    fn draw() -> Self {
        match fastrand::u8(0..100) {
            0..70 => Card::Pays,
            70..80 => Card::Declines,
            _ => Card::Authenticates(fastrand::u8(0..3) != 0),
        }
    }

    fn payment_method(self) -> &'static str {
        match self {
            Card::Pays => "pm_card_visa",
            Card::Declines => "pm_card_chargeDeclined",
            Card::Authenticates(_) => "pm_card_authenticationRequired",
        }
    }
}

impl Customer<'_> {
    async fn gql(&mut self, query: &str, variables: Value) -> Option<Value> {
        match self
            .client
            .retried(
                Some(self.token),
                query,
                variables,
                12,
                &mut self.stats.retries,
            )
            .await
        {
            Ok(data) => Some(data),
            Err(Failure::Final(body)) => {
                self.stats.outcome(&format!(
                    "error {}",
                    body["errors"][0]["extensions"]["code"]
                        .as_str()
                        .unwrap_or("?")
                ));
                None
            }
            Err(Failure::Transport(why) | Failure::Retryable(why)) => {
                self.stats.gave_up += 1;
                let why: String = why.chars().take(60).collect();
                self.stats.outcome(&format!("gave up: {why}"));
                None
            }
        }
    }

    /// A cart at a store (mostly Pasadena; some at the POS-offline Burbank), 1 to 3 lines.
    async fn cart(&mut self) -> Option<String> {
        let store = match fastrand::u8(0..10) {
            0 => cbtl_sandbox::okya::catalog::POS_OFFLINE_STORE,
            1 => "str_santa_monica",
            _ => "str_pasadena",
        };
        let data = self
            .gql(CART_CREATE, json!({"i": {"storeId": store}}))
            .await?;
        let cart = data["cartCreate"]["cart"]["id"].as_str()?.to_owned();
        let choices = [
            json!({"productId": "prd_latte", "quantity": 1, "modifierOptionIds": ["opt_size_large", "opt_milk_oat"]}),
            json!({"productId": "prd_cappuccino", "quantity": 2, "modifierOptionIds": ["opt_size_small", "opt_milk_whole"]}),
            json!({"productId": "prd_mocha", "quantity": 1, "modifierOptionIds": ["opt_size_regular", "opt_milk_nonfat"]}),
            json!({"productId": "prd_espresso", "quantity": 1}),
        ];
        let lines: Vec<Value> = (0..fastrand::usize(1..=3))
            .map(|_| choices[fastrand::usize(0..choices.len())].clone())
            .collect();
        let data = self.gql(LINES_ADD, json!({"c": cart, "l": lines})).await?;
        if let Some(code) = user_error(&data["cartLinesAdd"]) {
            self.stats.outcome(&format!("cart {code}"));
            return None;
        }
        Some(cart)
    }

    async fn available_voucher(&mut self) -> Option<String> {
        let data = self.gql(VOUCHERS, json!({})).await?;
        let available: Vec<String> = data["vouchers"]
            .as_array()?
            .iter()
            .filter(|v| v["status"] == "AVAILABLE")
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect();
        if available.is_empty() {
            None
        } else {
            Some(available[fastrand::usize(0..available.len())].clone())
        }
    }

    /// One checkout, as the app sends it: retried with the same key until an answer.
    /// The order id, if an order was made.
    async fn checkout(&mut self, input: Value) -> Option<(String, Value)> {
        let variables = json!({"i": input});
        for _ in 0..6 {
            let data = self.gql(CHECKOUT, variables.clone()).await?;
            let payload = &data["checkout"];
            match user_error(payload) {
                Some(code) if RETRYABLE_USER_ERRORS.contains(&code.as_str()) => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Some(code) => {
                    self.stats.outcome(&code);
                    // A decline still made an order (PAYMENT_FAILED), which the checks read.
                    return payload["order"]["id"]
                        .as_str()
                        .map(|id| (id.to_owned(), payload["order"].clone()));
                }
                None => {
                    let order = payload["order"].clone();
                    self.stats
                        .outcome(order["status"].as_str().unwrap_or("no order"));
                    return order["id"]
                        .as_str()
                        .map(|id| (id.to_owned(), order.clone()));
                }
            }
        }
        self.stats.gave_up += 1;
        None
    }

    async fn order_once(&mut self) {
        let Some(cart) = self.cart().await else {
            return;
        };
        let card = Card::draw();
        let voucher = if fastrand::u8(0..10) < 3 {
            self.available_voucher().await
        } else {
            None
        };
        let key = uuid::Uuid::new_v4().to_string();
        let input = json!({
            "cartId": cart,
            "paymentMethodId": card.payment_method(),
            "voucherId": voucher,
            "idempotencyKey": key,
        });
        self.stats.checkouts += 1;
        let placed = match fastrand::u8(0..10) {
            // The app sends the same checkout twice or three times at once (a double tap,
            // a retry racing the first answer): one order, one charge.
            0 | 1 => {
                self.stats.duplicate_checkouts += 1;
                let copies = fastrand::usize(2..=3);
                let answers = self.concurrently(vec![input.clone(); copies]).await;
                let ids: BTreeSet<&str> = answers
                    .iter()
                    .filter_map(|a| a.as_ref().map(|(id, _)| id.as_str()))
                    .collect();
                if ids.len() > 1 {
                    self.stats.outcome("VIOLATION: one key, several orders");
                    eprintln!("soak: one idempotency key {key} made orders {ids:?}");
                }
                answers.into_iter().flatten().next()
            }
            // Two carts race for one voucher: at most one may have it.
            2 if voucher.is_some() => {
                self.stats.voucher_races += 1;
                let Some(other_cart) = self.cart().await else {
                    return;
                };
                let mut rival = input.clone();
                rival["cartId"] = json!(other_cart);
                rival["idempotencyKey"] = json!(uuid::Uuid::new_v4().to_string());
                rival["paymentMethodId"] = json!("pm_card_visa");
                let answers = self.concurrently(vec![input, rival]).await;
                answers.into_iter().flatten().next()
            }
            _ => self.checkout(input).await,
        };
        let Some((order_id, order)) = placed else {
            return;
        };
        if let Card::Authenticates(complete) = card
            && order["status"] == "AWAITING_PAYMENT"
        {
            let intent = order["payment"]["clientSecret"]
                .as_str()
                .and_then(|secret| secret.split("_secret_").next())
                .map(str::to_owned);
            match (complete, intent) {
                (true, Some(intent)) => {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(200..3_000))).await;
                    let body = json!({"outcome": if fastrand::u8(0..5) == 0 { "fail" } else { "succeed" }});
                    let sent = self
                        .sims
                        .http
                        .post(format!(
                            "{}/_sandbox/payment_intents/{intent}/authenticate",
                            self.sims.stripe
                        ))
                        .json(&body)
                        .send()
                        .await;
                    if sent.is_ok() {
                        self.stats.authenticated += 1;
                    }
                }
                _ => self.stats.abandoned += 1,
            }
        }
        // Follow the order for a while, as the app's order screen does.
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Some(data) = self.gql(ORDER, json!({"id": order_id})).await else {
                continue;
            };
            if matches!(
                data["order"]["status"].as_str(),
                Some("COMPLETED" | "PAYMENT_FAILED" | "REJECTED" | "CANCELLED")
            ) {
                break;
            }
        }
    }

    /// The checkouts sent at once; each one's order, if it made one.
    async fn concurrently(&mut self, inputs: Vec<Value>) -> Vec<Option<(String, Value)>> {
        let mut tasks = Vec::new();
        for input in inputs {
            let (client, token) = (self.client.clone(), self.token.to_owned());
            let sims = self.sims.clone();
            tasks.push(tokio::spawn(async move {
                let mut stats = Stats::default();
                let mut customer = Customer {
                    client: &client,
                    sims: &sims,
                    token: &token,
                    stats: &mut stats,
                };
                let placed = customer.checkout(input).await;
                (placed, stats)
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            match task.await {
                Ok((placed, stats)) => {
                    self.stats.add(&stats);
                    out.push(placed);
                }
                Err(_) => out.push(None),
            }
        }
        out
    }
}

/// The store staff of every store, in Okya's order manager: each paid order is accepted
/// (one in ten rejected), prepared once its ticket is in the POS, made ready and handed
/// over; until `settled` is cancelled.
pub async fn run_store(sims: Arc<Simulators>, settled: CancellationToken) {
    let mut acted: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            () = settled.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(700)) => {}
        }
        let (Ok(okya), Ok(epoint)) = (
            sims.get(&sims.okya, "/_sandbox/orders").await,
            sims.get(&sims.epoint, "/_sandbox/ledger").await,
        ) else {
            continue;
        };
        let tickets: BTreeSet<(String, String)> = epoint["orders"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["location_id"].as_str().unwrap_or("").to_owned(),
                    t["order_number"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        for order in okya["orders"].as_array().into_iter().flatten() {
            let id = order["id"].as_str().unwrap_or("").to_owned();
            if order["status"] != "OPEN" {
                continue;
            }
            // Give each step a moment, as people do.
            if acted
                .get(&id)
                .is_some_and(|at| at.elapsed() < Duration::from_millis(1_500))
            {
                continue;
            }
            let action = match (order["approval"].as_str(), order["fulfilment"].as_str()) {
                (Some("NEEDS_APPROVAL"), _) if order["payment"].is_object() => {
                    if fastrand::u8(0..10) == 0 {
                        "reject"
                    } else {
                        "accept"
                    }
                }
                (Some("APPROVED"), Some("IN_PREPARATION")) => {
                    let ticket = (
                        order["store_id"].as_str().unwrap_or("").to_owned(),
                        order["number"].as_str().unwrap_or("").to_owned(),
                    );
                    if !tickets.contains(&ticket) {
                        continue;
                    }
                    "ready"
                }
                (Some("APPROVED"), Some("READY_FOR_PICKUP")) => "complete",
                _ => continue,
            };
            let path = format!("/_sandbox/orders/{id}/{action}");
            if sims.post(&sims.okya, &path).await.is_ok() {
                acted.insert(id, Instant::now());
            }
        }
    }
}
