//! `catalogue`: the store list with menus at saturation, bare async-graphql against the
//! service. The service's first answer is the expected body; its `stores` are written to a
//! file that bare async-graphql parses into typed structs and serves through its own
//! resolvers, and its answer must be byte-equal to the service's before the run (said in
//! the output). Every answer of both is then compared byte for byte.

use super::{Ctx, with_failures};
use crate::Error;
use crate::procs::Baseline;
use bench::{
    check::{self, Expected},
    load::{self, Target},
    table::{Goal, Row, ratio_text, rps_text},
};
use bytes::Bytes;
use serde_json::json;

/// The catalogue query.
pub const QUERY: &str = "{ stores { id name products { id name price { amount currencyCode } } } }";

async fn fetch(http: &reqwest::Client, addr: std::net::SocketAddr) -> Result<Bytes, Error> {
    let response = http
        .post(format!("http://{addr}/graphql"))
        .json(&json!({"query": QUERY}))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    if status != 200 {
        return Err(format!("catalogue: status {status}: {}", check::excerpt(&body)).into());
    }
    Ok(body)
}

pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    let plan = ctx.closed_plan();
    let service_addr = ctx.service_addr().await?;
    let http = reqwest::Client::new();
    let body = fetch(&http, service_addr).await?;
    let data = check::graphql_data(&body)?;
    let stores = data["stores"].as_array().map_or(0, Vec::len);
    let products: usize = data["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["products"].as_array().map_or(0, Vec::len))
        .sum();
    println!(
        "service's catalogue: {stores} stores, {products} menu entries, {} bytes",
        body.len()
    );
    let file = ctx.work_dir.join("catalogue.json");
    std::fs::write(&file, serde_json::to_vec(&data["stores"])?)?;
    let file = file.to_string_lossy().into_owned();

    let graphql = Baseline::start(&ctx.binaries.bare_graphql, ctx.pinning, &[&file]).await?;
    let bare_body = fetch(&http, graphql.addr).await?;
    let equal = bare_body == body;
    if equal {
        println!("bodies byte-equal: yes ({} bytes from both)", body.len());
    } else {
        println!(
            "bodies byte-equal: NO, first difference at byte {} (service {} bytes, bare {} bytes); every bare answer counts as a failure",
            check::first_difference(&body, &bare_body),
            body.len(),
            bare_body.len()
        );
    }
    ctx.raw.insert(
        "catalogue.bodies_byte_equal".into(),
        json!({"equal": equal, "bytes": body.len(), "stores": stores, "products": products}),
    );
    let expected = Expected::Exact(body.clone());
    let bare = load::run(
        &Target::graphql(graphql.addr, QUERY, expected.clone()),
        plan,
    )
    .await;
    graphql.stop().await;
    ctx.record("catalogue.bare_graphql", &bare);

    let service = load::run(&Target::graphql(service_addr, QUERY, expected), plan).await;
    ctx.record("catalogue.service", &service);
    let ratio = service.rps() / bare.rps();
    println!("service / bare async-graphql: {}", ratio_text(ratio));
    ctx.rows.push(Row {
        what: format!(
            "catalogue `stores {{ id name products {{ id name price {{ amount currencyCode }} }} }}` req/s ({stores} stores, {:.1} KB, bodies byte-equal: {})",
            body.len() as f64 / 1000.0,
            if equal { "yes" } else { "NO" }
        ),
        bare_axum: None,
        bare_graphql: Some(with_failures(rps_text(bare.rps()), bare.failures)),
        service: with_failures(rps_text(service.rps()), service.failures),
        judged: Some(if service.failures == 0 && equal { ratio } else { f64::NAN }),
        judged_text: Some(format!("{} service/bare-graphql", ratio_text(ratio))),
        target: Some((Goal::AtLeast(0.8), "×".into())),
    });
    Ok(())
}
