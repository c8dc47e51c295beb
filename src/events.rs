//! Order-status fan-out. Every status change publishes a hint (`order id`); subscribers
//! re-read what changed from the database, so a lost or repeated hint costs nothing but a
//! read. With SQLite the hints stay in this process; with PostgreSQL they travel through
//! `LISTEN/NOTIFY`, so a change made by one instance reaches subscribers on every other.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::time::Duration;
use tokio::sync::broadcast;

const CHANNEL: &str = "cbtl_order_events";
/// Hints buffered per subscriber; a slower subscriber skips ahead by re-reading.
const CAPACITY: usize = 4_096;

/// A change to one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderChanged {
    pub order_id: String,
}

#[derive(Clone)]
pub struct OrderEvents {
    local: broadcast::Sender<OrderChanged>,
    db: DatabaseConnection,
}

impl OrderEvents {
    /// Creates the bus; with PostgreSQL, also starts listening for other instances' hints.
    pub fn start(db: DatabaseConnection) -> (Self, Option<tokio::task::JoinHandle<()>>) {
        let (local, _) = broadcast::channel(CAPACITY);
        let events = Self { local, db };
        let listener = (events.db.get_database_backend() == DbBackend::Postgres).then(|| {
            let events = events.clone();
            tokio::spawn(async move { events.listen().await })
        });
        (events, listener)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<OrderChanged> {
        self.local.subscribe()
    }

    /// Announces that `order_id` changed. Call after the change is committed.
    pub async fn publish(&self, order_id: &str) {
        if self.db.get_database_backend() == DbBackend::Postgres {
            // Our own listener delivers it locally too, so every instance follows one path.
            let notify = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [CHANNEL.into(), order_id.into()],
            );
            if let Err(e) = self.db.execute_raw(notify).await {
                tracing::warn!(error = %e, "NOTIFY failed; delivering locally only");
                let _ = self.local.send(OrderChanged {
                    order_id: order_id.to_owned(),
                });
            }
        } else {
            let _ = self.local.send(OrderChanged {
                order_id: order_id.to_owned(),
            });
        }
    }

    /// Waits between reconnections of the listener: 1 s, doubling to 5 s, jittered so
    /// instances that lost PostgreSQL together do not reconnect together.
    const RECONNECT: crate::retry::RetryPolicy = crate::retry::RetryPolicy::new(
        Duration::from_secs(1),
        Duration::from_secs(5),
        crate::retry::Jitter::Equal,
    );

    async fn listen(self) {
        // Consecutive failed connections; the wait between them grows to a few seconds.
        let mut failures = 0_u32;
        loop {
            let Some(pool) = Some(self.db.get_postgres_connection_pool()) else {
                return;
            };
            match sea_orm::sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        tracing::info!("listening for order events from other instances");
                        failures = 0;
                        loop {
                            match listener.recv().await {
                                Ok(notification) => {
                                    let _ = self.local.send(OrderChanged {
                                        order_id: notification.payload().to_owned(),
                                    });
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "order event listener lost its connection");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect the order event listener"),
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(Self::RECONNECT.delay(failures)).await;
        }
    }
}
