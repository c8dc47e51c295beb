//! Several instances on one PostgreSQL behave as one service: a webhook received by one
//! reaches subscribers connected to another (LISTEN/NOTIFY), and background work is done
//! once however many instances are running (leases, `FOR UPDATE SKIP LOCKED`).

use crate::helpers::{Db, World, next_status, spawn_with_settings};
use crate::routes::{INJECT, INTENTS, ORDERS, PAYMENTS, SALE};
use crate::shop::{StoreAction::Accept, placed};
use serde_json::json;

#[tokio::test]
async fn two_instances_share_one_database_as_one_service() {
    let world = World::start(Db::Postgres, |s| {
        s.orders.sweep_interval_ms = 50;
        s.jobs.poll_interval_ms = 20;
    })
    .await;

    // A receives Okya's webhooks; B serves the subscriber.
    let a = world.spawn().await;
    let b = spawn_with_settings(world.settings.clone()).await;

    let customer = a.sign_up_and_use("+16265550150", "ada@example.com").await;
    b.use_token(Some(&customer.access_token));
    let mut orders = Vec::new();
    let mut carts = Vec::new();
    for n in 0..4 {
        let app = if n % 2 == 0 { &a } else { &b };
        let cart = app
            .cart_with(
                "str_pasadena",
                json!([{"productId": "prd_water", "quantity": 3}]),
            )
            .await;
        let placed_order = app
            .checkout_selecting("id status", &cart, "pm_card_visa", None, &format!("k{n}"))
            .await;
        assert_eq!(
            placed_order["order"]["status"], "AWAITING_ACCEPTANCE",
            "{placed_order}"
        );
        orders.push(placed(&placed_order));
        carts.push(cart);
    }

    // Follow the first order through B.
    let mut ws = b
        .subscribe_to_order(&customer.access_token, &orders[0], "status")
        .await;
    let mut statuses = Vec::new();
    statuses.push(next_status(&mut ws).await);

    // The store accepts every order; A gets the webhooks.
    assert_eq!(a.okya_orders().await.len(), 4);
    for cart in &carts {
        a.store_action(cart, Accept).await;
    }
    // How fast the change crosses instances is the benchmarks' business.
    statuses.push(next_status(&mut ws).await);
    assert_eq!(statuses, ["AWAITING_ACCEPTANCE", "IN_PREPARATION"]);

    // Every order was injected, charged and sent to SessionM exactly once, with two
    // instances' workers and sweepers running: no step ran on both. The simulators'
    // ledgers would hide a second run (each replays a repeated key); the requests cannot.
    for id in &orders {
        a.wait_for_status(id, "IN_PREPARATION").await;
        a.eventually("the order sent to SessionM", || async {
            a.order(id).await["pointsEarned"].is_number()
        })
        .await;
        a.wait_until_settled(id).await;
        for route in [ORDERS, INTENTS, PAYMENTS, INJECT, SALE] {
            let sent = a.assert_sent_once(route, id, 1).await;
            assert_eq!(sent, 1, "{route} sent {sent} times for {id}");
        }
        let seen_by_b = b.order_selecting("status", id).await;
        assert_eq!(seen_by_b["status"], "IN_PREPARATION");
    }
    a.assert_money_invariants().await;
    drop(a);
    drop(b);
    drop(world);
}
