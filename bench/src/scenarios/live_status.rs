//! LIVE-STATUS (issue 12 item 6): NOT WRITTEN HERE. The lead writes this scenario with the
//! rebuilt live-status path: 20,000 `orderStatusChanged` subscriptions over
//! graphql-transport-ws, RSS per idle subscription, idle CPU, webhook-to-last-subscriber
//! p99, and the same across two instances on PostgreSQL. It receives the shared [`Ctx`]
//! (binaries, pinning, `ctx.stack()`, `ctx.rows`, `ctx.raw`) like every other scenario.

use super::Ctx;
use crate::Error;

pub async fn run(ctx: &mut Ctx) -> Result<(), Error> {
    println!("live-status: not written yet (issue 12 item 6; the lead's)");
    ctx.raw
        .insert("live_status".to_owned(), "not written yet".into());
    Ok(())
}
