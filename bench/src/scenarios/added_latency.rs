//! `added-latency`: what the service adds to a pass-through. The operation is the signed-in
//! customer's `{ vouchers { id status } }`: one SessionM POS `lookup` of the member's wallet
//! and nothing else upstream (plus the service's own session check and customer read),
//! the simplest read that is a pass-through to exactly one upstream. First the service's
//! saturation rate is found (closed loop); then, at half of it, open loop at a fixed rate,
//! p99 through the service and p99 of the same SessionM lookup sent directly to the
//! simulator (same credentials, same envelope, a fresh `request_id` per request so the
//! simulator does not answer from its replay cache). The difference is the added p99.

use super::{Ctx, addr_of, with_failures};
use crate::Error;
use base64::Engine;
use bench::{
    check::{self, Expected},
    load::{self, Plan, Target},
    table::{Goal, Row, rps_text},
};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;

const QUERY: &str = "{ vouchers { id status } }";

pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    let customer = ctx.customer().await?;
    let gql = ctx.gql().await?;
    let stack = ctx.stack().await?;
    let service_addr = stack.addr;
    let okya = stack.url("CBTL_OKYA__BASE_URL")?;
    let pos_url = stack.url("CBTL_SESSIONM__POS_URL")?;
    let pos_key = stack.url("CBTL_SESSIONM__POS_API_KEY")?;
    let pos_secret = stack.url("CBTL_SESSIONM__POS_API_SECRET")?;
    let client_id = stack.url("CBTL_SESSIONM__CLIENT_ID")?;
    let store_id = stack.url("CBTL_SESSIONM__ECOMMERCE_STORE_ID")?;

    // The expected body: the first answer, which must be data without errors.
    let first = gql
        .http
        .post(&gql.url)
        .bearer_auth(&customer.token)
        .json(&json!({"query": QUERY}))
        .send()
        .await?
        .bytes()
        .await?;
    let data = check::graphql_data(&first)?;
    println!(
        "service's answer: {} vouchers, {} bytes",
        data["vouchers"].as_array().map_or(0, Vec::len),
        first.len()
    );
    let service_target = Target::graphql(service_addr, QUERY, Expected::Exact(first))
        .with_header("authorization", &format!("Bearer {}", customer.token));

    // The member's SessionM id, from Okya's account (the service saved it there).
    let accounts: Value = gql
        .http
        .get(format!("{okya}/_sandbox/accounts"))
        .send()
        .await?
        .json()
        .await?;
    let list = accounts
        .as_array()
        .or_else(|| accounts["accounts"].as_array())
        .ok_or("/_sandbox/accounts is not a list")?;
    let user_id = list
        .iter()
        .find(|a| a["phone"] == customer.phone.as_str())
        .and_then(|a| a["loyalty_id"].as_str())
        .ok_or("the customer's Okya account has no SessionM id")?
        .to_owned();
    let envelope = json!({
        "store_id": store_id,
        "client_id": client_id,
        "request_id": "bench-lookup-{n}",
        "culture": "en-US",
        "request_payload": {"user_id": user_id},
    });
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{pos_key}:{pos_secret}"));
    let lookup_ok: check::BodyTest = Arc::new(|body| {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("not JSON ({e}): {}", check::excerpt(body)))?;
        if v["status"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("ok"))
            && v["payload"]["offers"].is_array()
        {
            Ok(())
        } else {
            Err(format!("SessionM refused: {}", check::excerpt(body)))
        }
    });
    let direct_target = Target {
        addr: addr_of(&pos_url)?,
        method: hyper::Method::POST,
        path: "/api/2.0/lookup".into(),
        headers: vec![("authorization".into(), format!("Basic {auth}"))],
        body: Bytes::from(envelope.to_string()),
        unique: Some("{n}"),
        expected: Expected::Test(lookup_ok),
    };

    let saturation = load::run(&service_target, ctx.closed_plan()).await;
    ctx.record("added_latency.service_saturation", &saturation);
    let rate = (saturation.rps() / 2.0).max(1.0);
    println!("open loop at {rate:.0} req/s (half of the service's saturation)");
    let open = Plan {
        rate: Some(rate),
        ..ctx.closed_plan()
    };
    let through = load::run(&service_target, open).await;
    ctx.record("added_latency.through_service", &through);
    let direct = load::run(&direct_target, open).await;
    ctx.record("added_latency.direct_sessionm", &direct);
    let added = through.latency_ms(0.99) - direct.latency_ms(0.99);
    println!("added p99: {added:.2} ms");
    ctx.raw.insert("added_latency.rate".into(), rate.into());
    ctx.raw
        .insert("added_latency.added_p99_ms".into(), added.into());
    let ok = through.failures == 0 && direct.failures == 0;
    ctx.rows.push(Row {
        what: format!(
            "added p99, `{QUERY}` (one SessionM lookup) vs the lookup sent directly, open loop at {} (half the service's saturation of {})",
            rps_text(rate),
            rps_text(saturation.rps())
        ),
        service: with_failures(
            format!(
                "p99 {:.2} ms through the service, {:.2} ms direct (p50 {:.2} / {:.2})",
                through.latency_ms(0.99),
                direct.latency_ms(0.99),
                through.latency_ms(0.5),
                direct.latency_ms(0.5)
            ),
            through.failures + direct.failures,
        ),
        judged: Some(if ok { added } else { f64::NAN }),
        judged_text: Some(format!("{added:.2} ms added")),
        target: Some((Goal::AtMost(2.0), " ms".into())),
        ..Row::default()
    });
    Ok(())
}
