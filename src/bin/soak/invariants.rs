//! What must hold after a soak, read from the database and the simulators' ledgers, and
//! the table it is printed as. A violation prints the order's whole history and every
//! upstream call made for it.

use crate::processes::{Cluster, Simulators};
use cbtl_bff::{
    config::DatabaseSettings,
    domain::{OrderStatus, Step, StepKind},
    store::{
        self,
        entities::{customer, job, order, order_status_history},
    },
};
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder};
use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Statuses in which an order keeps the customer's money.
fn keeps_money(status: OrderStatus) -> bool {
    match status {
        OrderStatus::AwaitingAcceptance
        | OrderStatus::InPreparation
        | OrderStatus::ReadyForPickup
        | OrderStatus::Completed => true,
        OrderStatus::AwaitingPayment
        | OrderStatus::PaymentFailed
        | OrderStatus::Rejected
        | OrderStatus::Cancelled => false,
    }
}

/// Statuses of an order the store accepted and the POS has.
fn accepted(status: OrderStatus) -> bool {
    match status {
        OrderStatus::InPreparation | OrderStatus::ReadyForPickup | OrderStatus::Completed => true,
        OrderStatus::AwaitingPayment
        | OrderStatus::AwaitingAcceptance
        | OrderStatus::PaymentFailed
        | OrderStatus::Rejected
        | OrderStatus::Cancelled => false,
    }
}

async fn connect(cluster: &Cluster) -> Result<DatabaseConnection, Error> {
    Ok(store::connect(cluster.database_url(), &DatabaseSettings::default()).await?)
}

/// Whether every order's flow is over: a final status with nothing left to run, or an
/// operator's mark with its reason; and no job is pending. `Ok(false)` after `bound`.
pub async fn wait_until_settled(cluster: &Cluster, bound: Duration) -> Result<bool, Error> {
    let deadline = Instant::now() + bound;
    let mut last = String::new();
    while Instant::now() < deadline {
        let unsettled = match unsettled(cluster).await {
            Ok(unsettled) => unsettled,
            Err(e) => {
                last = format!("the database did not answer: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if unsettled.is_empty() {
            return Ok(true);
        }
        let now = unsettled.join(", ");
        if now != last {
            println!("soak: still running: {now}");
            last = now;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(false)
}

/// What is not finished yet, counted by status and step.
async fn unsettled(cluster: &Cluster) -> Result<Vec<String>, Error> {
    let db = connect(cluster).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for o in order::Entity::find().all(&db).await? {
        if !finished(&o) {
            *counts
                .entry(format!("{} at {}", o.status.as_str(), o.step.as_str()))
                .or_default() += 1;
        }
    }
    for j in job::Entity::find().all(&db).await? {
        if j.state == "pending" {
            *counts.entry(format!("job {}", j.kind)).or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect())
}

fn finished(o: &order::Model) -> bool {
    o.attention.is_some()
        || refused(o)
        || (o.status.is_final() && o.step.kind() == StepKind::Finished)
}

/// A checkout refused before an order was made (the row only keeps the idempotency key's
/// answer): it has no status history, and must keep no money and leave nothing open.
fn refused(o: &order::Model) -> bool {
    o.step == Step::Invalid
}

/// One invariant's line in the table.
struct Row {
    name: &'static str,
    checked: usize,
    violations: Vec<String>,
}

/// The invariants table, with what the run did.
pub struct Report {
    rows: Vec<Row>,
    summary: Vec<String>,
    details: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.rows.iter().map(|r| r.violations.len()).sum()
    }

    pub fn print(&self) {
        println!();
        for line in &self.summary {
            println!("{line}");
        }
        println!();
        println!("| invariant | checked | violations |");
        println!("| --- | ---: | ---: |");
        for row in &self.rows {
            println!(
                "| {} | {} | {} |",
                row.name,
                row.checked,
                row.violations.len()
            );
        }
        println!();
        for row in &self.rows {
            for v in &row.violations {
                println!("VIOLATION [{}]: {v}", row.name);
            }
        }
        for detail in &self.details {
            println!("{detail}");
        }
    }
}

/// The ledgers of the four simulators.
struct Ledgers {
    stripe: Value,
    epoint: Value,
    sessionm: Value,
    okya_orders: Value,
    okya_accounts: Value,
}

impl Ledgers {
    async fn read(sims: &Simulators) -> Result<Self, Error> {
        Ok(Self {
            stripe: sims.get(&sims.stripe, "/_sandbox/ledger").await?,
            epoint: sims.get(&sims.epoint, "/_sandbox/ledger").await?,
            sessionm: sims.get(&sims.sessionm, "/_sandbox/ledger").await?,
            okya_orders: sims.get(&sims.okya, "/_sandbox/orders").await?,
            okya_accounts: sims.get(&sims.okya, "/_sandbox/accounts").await?,
        })
    }
}

fn list<'a>(value: &'a Value, key: &str) -> Result<&'a Vec<Value>, Error> {
    value[key]
        .as_array()
        .ok_or_else(|| format!("a ledger without its `{key}` list").into())
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("").to_owned()
}

/// Checks every invariant; `finished` is whether the flows settled within `bound`.
pub async fn check(
    cluster: &Cluster,
    sims: &Simulators,
    finished_in_bound: bool,
    settle_took: Duration,
    bound: Duration,
) -> Result<Report, Error> {
    let db = connect(cluster).await?;
    let orders = order::Entity::find().all(&db).await?;
    let histories = order_status_history::Entity::find()
        .order_by_asc(order_status_history::Column::OrderId)
        .order_by_asc(order_status_history::Column::Seq)
        .all(&db)
        .await?;
    let customers = customer::Entity::find().all(&db).await?;
    let jobs = job::Entity::find().all(&db).await?;
    let ledgers = Ledgers::read(sims).await?;
    let by_id: BTreeMap<String, &order::Model> =
        orders.iter().map(|o| (o.id.to_string(), o)).collect();
    let mut history: BTreeMap<String, Vec<OrderStatus>> = BTreeMap::new();
    for h in &histories {
        history
            .entry(h.order_id.clone())
            .or_default()
            .push(h.status);
    }

    let intents = list(&ledgers.stripe, "payment_intents")?;
    let refunds = list(&ledgers.stripe, "refunds")?;
    let mut intents_of: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for intent in intents {
        intents_of
            .entry(text(&intent["metadata"]["order_id"]))
            .or_default()
            .push(intent);
    }
    let mut suspects: BTreeSet<String> = BTreeSet::new();

    // 1. Money kept per order.
    let mut money = Row {
        name: "captured − refunded is 0 or the total; 0 unless live or completed",
        checked: 0,
        violations: Vec::new(),
    };
    for (order_id, its) in &intents_of {
        let kept: i64 = its
            .iter()
            .map(|i| {
                i["amount_captured"].as_i64().unwrap_or(0)
                    - i["amount_refunded"].as_i64().unwrap_or(0)
            })
            .sum();
        let holding = its.iter().any(|i| i["status"] == "requires_capture");
        money.checked += 1;
        match by_id.get(order_id) {
            None => {
                if kept != 0 || holding {
                    money.violations.push(format!(
                        "PaymentIntent(s) for unknown order {order_id:?} keep {kept} (holding: {holding})"
                    ));
                }
            }
            Some(o) if o.attention.is_some() => {}
            Some(o) if keeps_money(o.status) => {
                if kept != 0 && Some(kept) != o.total_minor {
                    money.violations.push(format!(
                        "order {order_id} ({}) kept {kept} of {:?}",
                        o.status.as_str(),
                        o.total_minor
                    ));
                    suspects.insert(order_id.clone());
                }
                if o.status == OrderStatus::Completed && kept == 0 && o.total_minor.unwrap_or(0) > 0
                {
                    money
                        .violations
                        .push(format!("order {order_id} was completed and never paid for"));
                    suspects.insert(order_id.clone());
                }
            }
            Some(o) => {
                if kept != 0 || holding {
                    money.violations.push(format!(
                        "order {order_id} ({}) kept {kept} (holding an authorisation: {holding})",
                        o.status.as_str()
                    ));
                    suspects.insert(order_id.clone());
                }
            }
        }
    }

    // 2. Charged twice.
    let mut twice = Row {
        name: "no order charged twice",
        checked: 0,
        violations: Vec::new(),
    };
    let unkeyed = ledgers.stripe["requests_without_idempotency_key"]
        .as_i64()
        .unwrap_or(0);
    if unkeyed != 0 {
        twice.violations.push(format!(
            "{unkeyed} Stripe writes without an Idempotency-Key"
        ));
    }
    for (order_id, its) in &intents_of {
        twice.checked += 1;
        if its.len() > 1 {
            twice
                .violations
                .push(format!("order {order_id} has {} PaymentIntents", its.len()));
            suspects.insert(order_id.clone());
        }
        for intent in its {
            let n = refunds
                .iter()
                .filter(|r| r["payment_intent"] == intent["id"])
                .count();
            if n > 1 {
                twice
                    .violations
                    .push(format!("order {order_id} refunded {n} times"));
                suspects.insert(order_id.clone());
            }
        }
    }

    // 3. Vouchers.
    let mut vouchers = Row {
        name: "each voucher redeemed at most once, released when its order failed",
        checked: 0,
        violations: Vec::new(),
    };
    let users = list(&ledgers.sessionm, "users")?;
    let mut offers_of: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for user in users {
        for offer in user["offers"].as_array().into_iter().flatten() {
            let status = text(&offer["status"]);
            let transaction = text(&offer["transaction_id"]);
            if status == "LOCKED" {
                vouchers.violations.push(format!(
                    "offer {} still LOCKED by {transaction}",
                    text(&offer["user_offer_id"])
                ));
                suspects.insert(transaction.clone());
            }
            if !transaction.is_empty() {
                offers_of
                    .entry(transaction)
                    .or_default()
                    .push((text(&offer["user_offer_id"]), status));
            }
        }
    }
    for o in orders.iter().filter(|o| o.voucher_id.is_some()) {
        vouchers.checked += 1;
        let id = o.id.to_string();
        let redeemed: Vec<&(String, String)> = offers_of
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|(_, s)| s == "REDEEMED")
            .collect();
        let ok = if o.attention.is_some() {
            true
        } else if accepted(o.status) {
            redeemed.len() == 1
        } else {
            redeemed.is_empty()
        };
        if !ok {
            vouchers.violations.push(format!(
                "order {id} ({}) has {} redeemed offer(s): {:?}",
                o.status.as_str(),
                redeemed.len(),
                offers_of.get(&id)
            ));
            suspects.insert(id);
        }
    }

    // 4. POS.
    let mut pos = Row {
        name: "each accepted order in the POS exactly once, or recalled with its money returned",
        checked: 0,
        violations: Vec::new(),
    };
    let mut tickets: BTreeMap<String, usize> = BTreeMap::new();
    for ticket in list(&ledgers.epoint, "orders")? {
        *tickets.entry(text(&ticket["external_id"])).or_default() += 1;
    }
    for o in &orders {
        let id = o.id.to_string();
        let n = tickets.get(&id).copied().unwrap_or(0);
        if o.attention.is_some() {
            continue;
        }
        pos.checked += 1;
        let ok = if accepted(o.status) { n == 1 } else { n <= 1 };
        if !ok {
            pos.violations.push(format!(
                "order {id} ({}) has {n} POS ticket(s)",
                o.status.as_str()
            ));
            suspects.insert(id);
        }
    }
    for (external, n) in &tickets {
        if !by_id.contains_key(external) {
            pos.violations
                .push(format!("{n} POS ticket(s) for unknown order {external:?}"));
        }
    }

    // 5. Accounts.
    let mut accounts = Row {
        name: "each account linked to exactly one SessionM user",
        checked: 0,
        violations: Vec::new(),
    };
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for user in users {
        members
            .entry(text(&user["external_id"]))
            .or_default()
            .push(text(&user["id"]));
    }
    let okya_accounts = list(&ledgers.okya_accounts, "accounts")?;
    for c in customers.iter().filter(|c| c.confirmed) {
        accounts.checked += 1;
        let id = c.id.to_string();
        let found = members.get(&id).cloned().unwrap_or_default();
        let okya_link = okya_accounts
            .iter()
            .find(|a| a["phone"] == c.phone.as_str())
            .map(|a| text(&a["loyalty_id"]));
        let ok = found.len() == 1
            && c.sessionm_user_id.as_deref() == Some(found[0].as_str())
            && okya_link.as_deref() == Some(found[0].as_str());
        if !ok {
            accounts.violations.push(format!(
                "customer {id}: SessionM users {found:?}, ours {:?}, Okya's {okya_link:?}",
                c.sessionm_user_id
            ));
        }
    }

    // 6. Webhooks applied once: each history moves forward only, one status at a time.
    let mut applied = Row {
        name: "no webhook event applied twice (histories only move forward)",
        checked: 0,
        violations: Vec::new(),
    };
    for o in &orders {
        applied.checked += 1;
        let id = o.id.to_string();
        let statuses = history.get(&id).cloned().unwrap_or_default();
        if refused(o) {
            if !statuses.is_empty() {
                applied
                    .violations
                    .push(format!("refused checkout {id} has a history {statuses:?}"));
                suspects.insert(id);
            }
            continue;
        }
        let repeated = statuses.len()
            != statuses
                .iter()
                .map(|s| s.as_str())
                .collect::<BTreeSet<_>>()
                .len();
        let illegal = statuses
            .windows(2)
            .any(|w| !w[0].successors().contains(&w[1]));
        if repeated || illegal || statuses.last() != Some(&o.status) {
            applied.violations.push(format!(
                "order {id} ({}): history {statuses:?}",
                o.status.as_str()
            ));
            suspects.insert(id);
        }
    }

    // 7. Points.
    let mut points = Row {
        name: "points credited exactly once per accepted order",
        checked: 0,
        violations: Vec::new(),
    };
    let mut sales: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for t in list(&ledgers.sessionm, "transactions")? {
        sales.entry(text(&t["transaction_id"])).or_default().push(t);
    }
    for o in &orders {
        if o.attention.is_some() {
            continue;
        }
        points.checked += 1;
        let id = o.id.to_string();
        let its = sales.get(&id).cloned().unwrap_or_default();
        let ok = if accepted(o.status) {
            its.len() == 1 && its[0]["versions"].as_u64() == Some(1)
        } else {
            its.is_empty()
        };
        if !ok {
            points.violations.push(format!(
                "order {id} ({}): SessionM transactions {its:?}",
                o.status.as_str()
            ));
            suspects.insert(id);
        }
    }
    for (transaction, its) in &sales {
        if !by_id.contains_key(transaction) {
            points.violations.push(format!(
                "{} SessionM transaction(s) for unknown order {transaction:?}",
                its.len()
            ));
        }
    }

    // 8. Finished.
    let mut unfinished = Row {
        name: "no flow left unfinished; no order needing attention without a reason",
        checked: 0,
        violations: Vec::new(),
    };
    if !finished_in_bound {
        unfinished.violations.push(format!(
            "the flows did not finish within {} s of the faults stopping",
            bound.as_secs()
        ));
    }
    let okya_by_id: BTreeMap<String, &Value> = list(&ledgers.okya_orders, "orders")?
        .iter()
        .map(|o| (text(&o["id"]), o))
        .collect();
    for o in &orders {
        unfinished.checked += 1;
        let id = o.id.to_string();
        if let Some(reason) = &o.attention {
            if reason.trim().is_empty() {
                unfinished
                    .violations
                    .push(format!("order {id} needs attention without a reason"));
                suspects.insert(id);
            }
            continue;
        }
        if !finished(o) {
            unfinished.violations.push(format!(
                "order {id} left at {} / {}",
                o.status.as_str(),
                o.step.as_str()
            ));
            suspects.insert(id.clone());
            continue;
        }
        // Okya must agree: an order that ended for us is not open at the store.
        if let Some(okya) = o.okya_order_id.as_ref().and_then(|k| okya_by_id.get(k))
            && okya["status"] == "OPEN"
        {
            unfinished.violations.push(format!(
                "order {id} is {} but Okya's {} is still open",
                o.status.as_str(),
                text(&okya["id"])
            ));
            suspects.insert(id);
        }
    }
    for j in &jobs {
        if j.state != "done" {
            unfinished.violations.push(format!(
                "job {} ({}) is {} after {} attempts: {:?}",
                j.id, j.kind, j.state, j.attempts, j.last_error
            ));
        }
    }

    // The run, in numbers.
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &orders {
        *by_status.entry(o.status.as_str()).or_default() += 1;
    }
    let attention: Vec<String> = orders
        .iter()
        .filter_map(|o| {
            o.attention
                .as_ref()
                .map(|r| format!("{} ({}): {r}", o.id, o.status.as_str()))
        })
        .collect();
    let mut summary = vec![
        format!(
            "orders: {} ({by_status:?}); customers: {} confirmed; PaymentIntents: {}; refunds: {}; POS tickets: {}; SessionM transactions: {}",
            orders.len(),
            customers.iter().filter(|c| c.confirmed).count(),
            intents.len(),
            refunds.len(),
            tickets.values().sum::<usize>(),
            sales.len()
        ),
        format!(
            "settled {:.1} s after the faults stopped (bound {} s); instance starts {:?}",
            settle_took.as_secs_f64(),
            bound.as_secs(),
            cluster.starts()
        ),
        format!(
            "orders needing attention (with their reason): {}",
            attention.len()
        ),
    ];
    summary.extend(attention.iter().map(|a| format!("  {a}")));
    summary.extend(cluster.events.iter().map(|e| format!("  {e}")));

    let rows = vec![
        money, twice, vouchers, pos, accounts, applied, points, unfinished,
    ];
    let mut details = Vec::new();
    for id in suspects.iter().take(20) {
        details.push(history_of(id, &by_id, &history, &intents_of, sims).await);
    }
    Ok(Report {
        rows,
        summary,
        details,
    })
}

/// An order's row, its status history, and every upstream call that names it.
async fn history_of(
    id: &str,
    by_id: &BTreeMap<String, &order::Model>,
    history: &BTreeMap<String, Vec<OrderStatus>>,
    intents_of: &BTreeMap<String, Vec<&Value>>,
    sims: &Simulators,
) -> String {
    let mut out = format!("\n--- order {id}\n");
    match by_id.get(id) {
        Some(o) => out.push_str(&format!("{o:#?}\n")),
        None => out.push_str("(not in the database)\n"),
    }
    out.push_str(&format!("history: {:?}\n", history.get(id)));
    let mut names: Vec<String> = vec![id.to_owned()];
    if let Some(o) = by_id.get(id) {
        names.extend(o.okya_order_id.clone());
        names.extend(o.payment_intent_id.clone());
    }
    for intent in intents_of.get(id).into_iter().flatten() {
        out.push_str(&format!("stripe: {intent}\n"));
        names.push(text(&intent["id"]));
    }
    for (system, base) in [
        ("okya", &sims.okya),
        ("stripe", &sims.stripe),
        ("epoint", &sims.epoint),
        ("sessionm", &sims.sessionm),
        ("sessionm-pos", &sims.sessionm_pos),
    ] {
        let Ok(log) = sims.get(base, "/_sandbox/calls/log").await else {
            continue;
        };
        for call in log.as_array().into_iter().flatten() {
            let said = format!("{} {}", call["path"], call["key"]);
            if names
                .iter()
                .any(|n| !n.is_empty() && said.contains(n.as_str()))
            {
                out.push_str(&format!(
                    "{system}: #{} {} {} key={} fault={} status={}\n",
                    call["seq"],
                    call["route"],
                    call["path"],
                    call["key"],
                    call["fault"],
                    call["status"]
                ));
            }
        }
    }
    out
}
