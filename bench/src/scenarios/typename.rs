//! `typename`: `{ __typename }` at saturation (closed loop) from bare axum, bare
//! async-graphql and the service, one after the other on the same core; every body must
//! be `{"data":{"__typename":"Query"}}`.

use super::{Ctx, TYPENAME_BODY, with_failures};
use crate::{Error, procs::Baseline};
use bench::{
    check::Expected,
    load::{self, Target},
    table::{Goal, Row, ratio_text, rps_text},
};
use bytes::Bytes;

const QUERY: &str = "{ __typename }";

pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    let expected = Expected::Exact(Bytes::from_static(TYPENAME_BODY.as_bytes()));
    let plan = ctx.closed_plan();
    let service_addr = ctx.service_addr().await?;

    let axum = Baseline::start(&ctx.binaries.bare_axum, ctx.pinning, &[]).await?;
    let bare_axum = load::run(&Target::graphql(axum.addr, QUERY, expected.clone()), plan).await;
    axum.stop().await;
    ctx.record("typename.bare_axum", &bare_axum);

    let graphql = Baseline::start(&ctx.binaries.bare_graphql, ctx.pinning, &[]).await?;
    let bare_graphql = load::run(
        &Target::graphql(graphql.addr, QUERY, expected.clone()),
        plan,
    )
    .await;
    graphql.stop().await;
    ctx.record("typename.bare_graphql", &bare_graphql);

    let service = load::run(&Target::graphql(service_addr, QUERY, expected), plan).await;
    ctx.record("typename.service", &service);

    let ratio = service.rps() / bare_graphql.rps();
    println!("service / bare async-graphql: {}", ratio_text(ratio));
    ctx.rows.push(Row {
        what: "`{ __typename }` req/s".into(),
        bare_axum: Some(with_failures(rps_text(bare_axum.rps()), bare_axum.failures)),
        bare_graphql: Some(with_failures(
            rps_text(bare_graphql.rps()),
            bare_graphql.failures,
        )),
        service: with_failures(rps_text(service.rps()), service.failures),
        judged: Some(if service.failures == 0 {
            ratio
        } else {
            f64::NAN
        }),
        judged_text: Some(format!("{} service/bare-graphql", ratio_text(ratio))),
        target: Some((Goal::AtLeast(0.9), "×".into())),
    });
    Ok(())
}
