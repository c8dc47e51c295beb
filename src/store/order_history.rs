//! Status histories of many orders in one query, for a page of orders (the `statusHistory`
//! DataLoader): the number of queries does not grow with the page.

use super::{StoreError, entities::order_status_history as history};
use crate::domain::OrderId;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use std::collections::HashMap;

/// Each order's history, oldest first; an order with no history is absent from the map.
/// One query, whatever the number of ids (callers batch at most a page: 100 ids).
///
/// # Errors
/// `Db` when the query fails.
pub async fn for_orders(
    db: &impl ConnectionTrait,
    ids: &[OrderId],
) -> Result<HashMap<OrderId, Vec<history::Model>>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = history::Entity::find()
        .filter(history::Column::OrderId.is_in(ids.iter().map(OrderId::as_str)))
        .order_by_asc(history::Column::OrderId)
        .order_by_asc(history::Column::Seq)
        .all(db)
        .await?;
    let mut by_order: HashMap<OrderId, Vec<history::Model>> = HashMap::new();
    for row in rows {
        by_order
            .entry(OrderId::from_upstream(row.order_id.clone()))
            .or_default()
            .push(row);
    }
    Ok(by_order)
}
