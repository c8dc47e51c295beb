//! Orders and their status history.

use super::{
    StoreError,
    entities::{order, order_status_history as history},
    sql::stmt,
};
use crate::domain::{CustomerId, IdempotencyKey, OkyaState, OrderId, OrderStatus, Step, StepKind};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};

pub use order::Model as Order;

/// Inserts a new order unless this customer already used the idempotency key; returns
/// whether this call created it. Concurrent duplicates race on the unique index, and
/// exactly one wins.
pub async fn insert_new(db: &impl ConnectionTrait, row: Order) -> Result<bool, StoreError> {
    let result = order::Entity::insert(row.into_active_model())
        .on_conflict(
            sea_orm::sea_query::OnConflict::columns([
                order::Column::CustomerId,
                order::Column::IdempotencyKey,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(result == 1)
}

pub async fn find(db: &impl ConnectionTrait, id: &OrderId) -> Result<Option<Order>, StoreError> {
    Ok(order::Entity::find_by_id(id.to_owned()).one(db).await?)
}

/// The orders among `ids` that exist, in no particular order (one query).
pub async fn find_many(
    db: &impl ConnectionTrait,
    ids: &[OrderId],
) -> Result<Vec<Order>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(order::Entity::find()
        .filter(order::Column::Id.is_in(ids.iter().map(|id| id.as_str().to_owned())))
        .all(db)
        .await?)
}

pub async fn find_by_key(
    db: &impl ConnectionTrait,
    customer_id: &CustomerId,
    key: &IdempotencyKey,
) -> Result<Option<Order>, StoreError> {
    Ok(order::Entity::find()
        .filter(order::Column::CustomerId.eq(customer_id.as_str()))
        .filter(order::Column::IdempotencyKey.eq(key.as_str()))
        .one(db)
        .await?)
}

pub async fn find_by_okya_id(
    db: &impl ConnectionTrait,
    okya_order_id: &str,
) -> Result<Option<Order>, StoreError> {
    Ok(order::Entity::find()
        .filter(order::Column::OkyaOrderId.eq(okya_order_id))
        .one(db)
        .await?)
}

pub async fn find_by_payment_intent(
    db: &impl ConnectionTrait,
    intent_id: &str,
) -> Result<Option<Order>, StoreError> {
    Ok(order::Entity::find()
        .filter(order::Column::PaymentIntentId.eq(intent_id))
        .one(db)
        .await?)
}

/// Saves the flow's columns of the row, only while the lease the row was loaded under
/// (`row.locked_by`, one token per acquisition) is still the order's: a runner whose lease
/// lapsed and was taken by another (a step slower than the lease, a paused process) gets
/// `false` and writes nothing, so its stale copy can never overwrite the newer runner's
/// work (found by the chaos soak: an order completed at the store went back to awaiting
/// acceptance). Columns other writers own are left alone: Okya's state (webhooks record
/// it, version-guarded), the points (the SessionM job) and the lease
/// (`acquire`/`renew`/`release`).
pub async fn save(db: &impl ConnectionTrait, row: Order) -> Result<bool, StoreError> {
    let id = row.id.clone();
    let held_by = row.locked_by.clone();
    let mut active = row.into_active_model().reset_all();
    active.okya_version = sea_orm::ActiveValue::NotSet;
    active.okya_approval = sea_orm::ActiveValue::NotSet;
    active.okya_fulfilment = sea_orm::ActiveValue::NotSet;
    active.points_earned = sea_orm::ActiveValue::NotSet;
    active.loyalty_sent_at_ms = sea_orm::ActiveValue::NotSet;
    active.locked_until_ms = sea_orm::ActiveValue::NotSet;
    active.locked_by = sea_orm::ActiveValue::NotSet;
    active.id = sea_orm::ActiveValue::NotSet;
    let fence = match held_by {
        Some(token) => order::Column::LockedBy.eq(token),
        None => order::Column::LockedBy.is_null(),
    };
    let result = order::Entity::update_many()
        .set(active)
        .filter(order::Column::Id.eq(id.as_str()))
        .filter(fence)
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Extends `token`'s lease to `now + lease_ms`; false when the lease is no longer
/// `token`'s. A runner renews while a step runs, so a slow step keeps its order.
pub async fn renew(
    db: &impl ConnectionTrait,
    id: &OrderId,
    token: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    let result = db
        .execute_raw(stmt(
            db,
            "UPDATE orders SET locked_until_ms = ? WHERE id = ? AND locked_by = ?",
            vec![(now_ms + lease_ms).into(), id.as_str().into(), token.into()],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Reserves the order for one runner until `now + lease_ms` under `token` (see
/// [`lease_token`]: the instance, and what tells this acquisition from any other); false
/// if another holds it.
pub async fn acquire(
    db: &impl ConnectionTrait,
    id: &OrderId,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    let result = db
        .execute_raw(stmt(
            db,
            "UPDATE orders SET locked_until_ms = ?, locked_by = ? WHERE id = ? AND (locked_until_ms IS NULL OR locked_until_ms < ?)",
            vec![
                (now_ms + lease_ms).into(),
                owner.into(),
                id.as_str().into(),
                now_ms.into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// A new lease token of instance `owner`: `{owner}/{random}`, so a shutdown frees every
/// lease of the instance ([`release_all_held_by`]) while each runner is fenced by its own.
pub fn lease_token(owner: &str) -> String {
    format!("{owner}/{}", uuid::Uuid::new_v4().simple())
}

/// Ends the lease `owner` (a token) holds on the order. A lease that lapsed and was taken
/// by another runner is that runner's now, and is left alone.
pub async fn release(
    db: &impl ConnectionTrait,
    id: &OrderId,
    owner: &str,
) -> Result<(), StoreError> {
    db.execute_raw(stmt(
        db,
        "UPDATE orders SET locked_until_ms = NULL, locked_by = NULL WHERE id = ? AND locked_by = ?",
        vec![id.as_str().into(), owner.into()],
    ))
    .await?;
    Ok(())
}

/// Ends every lease `owner` holds on orders except those of `running` (work still in
/// progress keeps its lease until it runs out); returns how many were released. Called by
/// an instance shutting down, so others resume its orders at once.
pub async fn release_all_held_by(
    db: &impl ConnectionTrait,
    owner: &str,
    running: &[String],
) -> Result<u64, StoreError> {
    release_held(db, "orders", owner, running).await
}

/// `UPDATE <table> SET locked_until_ms = NULL, locked_by = NULL WHERE locked_by = owner`,
/// sparing the ids in `running`; `table` is one of ours (orders, jobs), never input.
pub(super) async fn release_held(
    db: &impl ConnectionTrait,
    table: &'static str,
    owner: &str,
    running: &[String],
) -> Result<u64, StoreError> {
    let spared = if running.is_empty() {
        String::new()
    } else {
        format!(" AND id NOT IN ({})", vec!["?"; running.len()].join(", "))
    };
    // Order leases carry a token per runner under the instance's id; job leases the id.
    let mut values: Vec<sea_orm::Value> = vec![owner.into(), format!("{owner}/%").into()];
    values.extend(running.iter().map(|id| id.as_str().into()));
    let result = db
        .execute_raw(stmt(
            db,
            &format!(
                "UPDATE {table} SET locked_until_ms = NULL, locked_by = NULL WHERE (locked_by = ? OR locked_by LIKE ?){spared}"
            ),
            values,
        ))
        .await?;
    Ok(result.rows_affected())
}

/// Orders whose flow should run now: an active step that is due, or a wait for the
/// customer (3-D Secure, a payment retry) that has run out. Locked orders are skipped
/// (the lease decides who runs them), and so are orders waiting for an operator.
pub async fn due(
    db: &impl ConnectionTrait,
    now_ms: i64,
    customer_deadline_ms: i64,
    limit: u64,
) -> Result<Vec<OrderId>, StoreError> {
    let rows = order::Entity::find()
        .select_only()
        .column(order::Column::Id)
        .filter(
            sea_orm::Condition::any()
                .add(
                    order::Column::Step
                        .is_in(Step::of_kind(StepKind::Active))
                        .and(order::Column::NextAttemptAtMs.lte(now_ms)),
                )
                .add(
                    order::Column::Step
                        .is_in(Step::of_kind(StepKind::AwaitingCustomer))
                        .and(order::Column::UpdatedAtMs.lt(customer_deadline_ms)),
                ),
        )
        .filter(order::Column::Attention.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(order::Column::LockedUntilMs.is_null())
                .add(order::Column::LockedUntilMs.lt(now_ms)),
        )
        .order_by_asc(order::Column::NextAttemptAtMs)
        .limit(limit)
        .into_tuple::<OrderId>()
        .all(db)
        .await?;
    Ok(rows)
}

/// Records a status change after checking it is allowed; returns false (and changes
/// nothing) when the order is no longer in `from`.
pub async fn transition(
    db: &impl ConnectionTrait,
    id: &OrderId,
    from: OrderStatus,
    to: OrderStatus,
    now_ms: i64,
) -> Result<bool, StoreError> {
    if !from.can_become(to) {
        return Ok(false);
    }
    let result = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(to))
        .col_expr(order::Column::UpdatedAtMs, Expr::value(now_ms))
        .filter(order::Column::Id.eq(id.as_str()))
        .filter(order::Column::Status.eq(from))
        .exec(db)
        .await?;
    if result.rows_affected != 1 {
        return Ok(false);
    }
    append_history(db, id, to, now_ms).await?;
    Ok(true)
}

/// Adds a status to the history; the first status of an order too.
pub async fn append_history(
    db: &impl ConnectionTrait,
    id: &OrderId,
    status: OrderStatus,
    now_ms: i64,
) -> Result<(), StoreError> {
    let count = history::Entity::find()
        .filter(history::Column::OrderId.eq(id.as_str()))
        .count(db)
        .await?;
    let row = history::ActiveModel {
        order_id: Set(id.to_string()),
        seq: Set(i32::try_from(count).unwrap_or(i32::MAX - 1) + 1),
        status: Set(status),
        at_ms: Set(now_ms),
    };
    history::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Records an order's first visible status, once. A single write statement: SQLite
/// refuses (rather than waits) a transaction that reads before it writes while another
/// connection writes.
pub async fn start_history(
    db: &impl ConnectionTrait,
    id: &OrderId,
    status: OrderStatus,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = db
        .execute_raw(stmt(
            db,
            "INSERT INTO order_status_history (order_id, seq, status, at_ms) SELECT ?, 1, ?, ? \
             WHERE NOT EXISTS (SELECT 1 FROM order_status_history WHERE order_id = ?)",
            vec![
                id.as_str().into(),
                status.as_str().into(),
                now_ms.into(),
                id.as_str().into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn history(
    db: &impl ConnectionTrait,
    id: &OrderId,
) -> Result<Vec<history::Model>, StoreError> {
    Ok(history::Entity::find()
        .filter(history::Column::OrderId.eq(id.as_str()))
        .order_by_asc(history::Column::Seq)
        .all(db)
        .await?)
}

/// The order and its whole history, oldest first, in one query (a join): what a status
/// change needs to reach the order's subscribers.
pub async fn snapshot(
    db: &impl ConnectionTrait,
    id: &OrderId,
) -> Result<Option<(Order, Vec<history::Model>)>, StoreError> {
    let found = order::Entity::find_by_id(id.to_owned())
        .find_with_related(history::Entity)
        .all(db)
        .await?;
    Ok(found.into_iter().next().map(|(order, mut history)| {
        history.sort_by_key(|h| h.seq);
        (order, history)
    }))
}

/// The newest history `seq` of each order among `ids` that has one, in one query.
pub async fn history_heads(
    db: &impl ConnectionTrait,
    ids: &[OrderId],
) -> Result<Vec<(String, i32)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(history::Entity::find()
        .select_only()
        .column(history::Column::OrderId)
        .column_as(history::Column::Seq.max(), "seq")
        .filter(history::Column::OrderId.is_in(ids.iter().map(|id| id.as_str().to_owned())))
        .group_by(history::Column::OrderId)
        .into_tuple()
        .all(db)
        .await?)
}

/// A customer's visible orders, newest first, strictly before the `(created, id)` cursor.
pub async fn page_for_customer(
    db: &impl ConnectionTrait,
    customer_id: &CustomerId,
    before: Option<(i64, String)>,
    limit: u64,
) -> Result<Vec<Order>, StoreError> {
    let mut query = order::Entity::find()
        .filter(order::Column::CustomerId.eq(customer_id.as_str()))
        .filter(order::Column::Step.ne(Step::Invalid))
        .filter(order::Column::OkyaOrderId.is_not_null());
    if let Some((created, id)) = before {
        query = query.filter(
            sea_orm::Condition::any()
                .add(order::Column::CreatedAtMs.lt(created))
                .add(
                    order::Column::CreatedAtMs
                        .eq(created)
                        .and(order::Column::Id.lt(id)),
                ),
        );
    }
    Ok(query
        .order_by_desc(order::Column::CreatedAtMs)
        .order_by_desc(order::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Records Okya's state of the order when `version` is newer than the one held; older or
/// repeated webhooks change nothing.
pub async fn record_okya_state(
    db: &impl ConnectionTrait,
    id: &OrderId,
    okya: OkyaState,
) -> Result<bool, StoreError> {
    let result = order::Entity::update_many()
        .col_expr(order::Column::OkyaVersion, Expr::value(okya.version))
        .col_expr(order::Column::OkyaApproval, Expr::value(okya.approval))
        .col_expr(order::Column::OkyaFulfilment, Expr::value(okya.fulfilment))
        .filter(order::Column::Id.eq(id.as_str()))
        .filter(order::Column::OkyaVersion.lt(okya.version))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn set_points(
    db: &impl ConnectionTrait,
    id: &OrderId,
    points: i64,
) -> Result<(), StoreError> {
    order::Entity::update_many()
        .col_expr(order::Column::PointsEarned, Expr::value(points))
        .filter(order::Column::Id.eq(id.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// The time the sale was first sent to SessionM: `now_ms` the first time, the stored one
/// after that, so every retry sends the same body.
pub async fn loyalty_sent_at(
    db: &impl ConnectionTrait,
    id: &OrderId,
    now_ms: i64,
) -> Result<i64, StoreError> {
    order::Entity::update_many()
        .col_expr(order::Column::LoyaltySentAtMs, Expr::value(now_ms))
        .filter(order::Column::Id.eq(id.as_str()))
        .filter(order::Column::LoyaltySentAtMs.is_null())
        .exec(db)
        .await?;
    let row = order::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("order {id} vanished")))?;
    row.loyalty_sent_at_ms
        .ok_or_else(|| StoreError::Corrupt(format!("order {id} has no send time")))
}

/// Open orders Okya still decides about (waiting for the store, or being prepared), the
/// longest untouched first: what reconciliation compares with Okya.
pub async fn open_with_okya(
    db: &impl ConnectionTrait,
    limit: u64,
) -> Result<Vec<Order>, StoreError> {
    Ok(order::Entity::find()
        .filter(order::Column::OkyaOrderId.is_not_null())
        .filter(order::Column::Step.is_in([Step::AwaitAcceptance, Step::Done]))
        .filter(order::Column::Status.is_in([
            OrderStatus::AwaitingAcceptance,
            OrderStatus::InPreparation,
            OrderStatus::ReadyForPickup,
        ]))
        .order_by_asc(order::Column::UpdatedAtMs)
        .limit(limit)
        .all(db)
        .await?)
}

/// How many orders wait for an operator (`attention` set), for `/readyz`.
pub async fn needing_attention(db: &impl ConnectionTrait) -> Result<u64, StoreError> {
    Ok(order::Entity::find()
        .filter(order::Column::Attention.is_not_null())
        .count(db)
        .await?)
}

/// The orders waiting for an operator, oldest first.
pub async fn list_needing_attention(
    db: &impl ConnectionTrait,
    limit: u64,
) -> Result<Vec<Order>, StoreError> {
    Ok(order::Entity::find()
        .filter(order::Column::Attention.is_not_null())
        .order_by_asc(order::Column::AttentionAtMs)
        .limit(limit)
        .all(db)
        .await?)
}

/// Clears an order's attention mark and makes its step due now, with a fresh count of
/// attempts; false when the order was not waiting for an operator.
pub async fn resume(
    db: &impl ConnectionTrait,
    id: &OrderId,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = order::Entity::update_many()
        .col_expr(
            order::Column::Attention,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            order::Column::AttentionAtMs,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(order::Column::StepAttempts, Expr::value(0))
        .col_expr(order::Column::NextAttemptAtMs, Expr::value(now_ms))
        .filter(order::Column::Id.eq(id.as_str()))
        .filter(order::Column::Attention.is_not_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
