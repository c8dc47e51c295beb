//! Live order status: one feed per order that someone on this instance follows.
//!
//! A committed status change publishes a hint (the order id). With SQLite the hint stays in
//! this process; with PostgreSQL it travels through `LISTEN/NOTIFY`, so a change made by one
//! instance reaches subscribers on every other. An instance with subscribers for the order
//! reads the order and its history once (one query, [`store::orders::snapshot`]) and puts the
//! snapshot in the order's `watch` channel: only that order's subscribers wake, and they all
//! share the one read. An instance with no subscriber for the order reads nothing.
//!
//! Hints that arrive while a read is under way are folded into one more read, so a burst of
//! changes costs at most two. A hint can be lost (a NOTIFY sent while the listener
//! reconnects); a safety net checks the newest history entry of every followed order, in one
//! query per [`RECHECK_BATCH`] orders, every `graphql.subscription_recheck_secs`, and after the
//! listener reconnects, and reads again only the orders that moved.

use crate::{
    domain::OrderId,
    store::{self, entities::order_status_history as history, orders::Order},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::watch;

const CHANNEL: &str = "cbtl_order_events";
/// Followed orders checked by one query of the safety net.
pub const RECHECK_BATCH: usize = 500;

/// An order and every status it took, oldest first, as one read found them.
#[derive(Debug)]
pub struct Snapshot {
    pub order: Arc<Order>,
    pub history: Arc<[history::Model]>,
}

impl Snapshot {
    pub fn new(order: Order, history: Vec<history::Model>) -> Self {
        Self {
            order: Arc::new(order),
            history: history.into(),
        }
    }

    /// The `seq` of the newest history entry (0 when there is none).
    fn head(&self) -> i32 {
        self.history.last().map_or(0, |h| h.seq)
    }

    /// Whether `self` knows more than `other`: histories only grow, so the longer one is
    /// the newer.
    fn is_newer_than(&self, other: Option<&Arc<Snapshot>>) -> bool {
        other.is_none_or(|other| self.history.len() > other.history.len())
    }
}

/// One followed order.
struct Feed {
    latest: watch::Sender<Option<Arc<Snapshot>>>,
    /// Subscribers on this instance; changed only under the hub's lock, so a feed is
    /// removed exactly when its last follower leaves.
    followers: AtomicUsize,
    /// Hints received, and how many of them the last finished read covers: a hint that
    /// comes in while a read runs is covered by the next read, not by that one.
    hints: AtomicU64,
    read_upto: AtomicU64,
    /// One read of this order at a time.
    reading: tokio::sync::Mutex<()>,
}

impl Feed {
    fn offer(&self, snapshot: Arc<Snapshot>) {
        self.latest.send_if_modified(|current| {
            let newer = snapshot.is_newer_than(current.as_ref());
            if newer {
                *current = Some(snapshot);
            }
            newer
        });
    }
}

struct Hub {
    db: DatabaseConnection,
    feeds: Mutex<HashMap<OrderId, Arc<Feed>>>,
}

impl Hub {
    fn feeds(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, Arc<Feed>>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An order changed: its followers here, if any, get one fresh read.
    fn hint(self: &Arc<Self>, order_id: &str) {
        let Some(id) = OrderId::parse(order_id) else {
            return;
        };
        let Some(feed) = self.feeds().get(&id).cloned() else {
            return;
        };
        feed.hints.fetch_add(1, Ordering::SeqCst);
        let hub = self.clone();
        tokio::spawn(async move { hub.refresh(&id, &feed).await });
    }

    /// Reads the order once for every hint received so far, unless a read that started
    /// after the newest hint has already done so.
    async fn refresh(&self, id: &OrderId, feed: &Feed) {
        let wanted = feed.hints.load(Ordering::SeqCst);
        let _reading = feed.reading.lock().await;
        if feed.read_upto.load(Ordering::SeqCst) >= wanted {
            return;
        }
        let upto = feed.hints.load(Ordering::SeqCst);
        match store::orders::snapshot(&self.db, id).await {
            Ok(Some((order, history))) => {
                feed.read_upto.store(upto, Ordering::SeqCst);
                feed.offer(Arc::new(Snapshot::new(order, history)));
            }
            Ok(None) => feed.read_upto.store(upto, Ordering::SeqCst),
            // The safety net reads it again.
            Err(e) => tracing::warn!(order_id = %id, error = %e, "cannot read a changed order"),
        }
    }

    /// The safety net: reads again every followed order whose newest history entry is not
    /// the one its feed holds.
    async fn recheck(self: &Arc<Self>) {
        let followed: Vec<(OrderId, Arc<Feed>)> = self
            .feeds()
            .iter()
            .map(|(id, feed)| (id.clone(), feed.clone()))
            .collect();
        // A final status ends every subscription, so only live orders can move.
        let live: Vec<(OrderId, Arc<Feed>, i32)> = followed
            .into_iter()
            .filter_map(|(id, feed)| {
                let latest = feed.latest.borrow().clone();
                match latest {
                    Some(s) if s.order.status.is_final() => None,
                    Some(s) => Some((id, feed, s.head())),
                    None => Some((id, feed, 0)),
                }
            })
            .collect();
        for batch in live.chunks(RECHECK_BATCH) {
            let ids: Vec<OrderId> = batch.iter().map(|(id, _, _)| id.clone()).collect();
            let heads: HashMap<String, i32> =
                match store::orders::history_heads(&self.db, &ids).await {
                    Ok(heads) => heads.into_iter().collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check followed orders");
                        return;
                    }
                };
            for (id, feed, head) in batch {
                if heads.get(id.as_str()).is_some_and(|newest| newest > head) {
                    tracing::debug!(order_id = %id, "a status change arrived without its hint");
                    feed.hints.fetch_add(1, Ordering::SeqCst);
                    self.refresh(id, feed).await;
                }
            }
        }
    }
}

/// The hub of live order status; cheap to clone.
#[derive(Clone)]
pub struct OrderEvents {
    hub: Arc<Hub>,
}

impl OrderEvents {
    /// Creates the hub and starts its background work: the safety net every `recheck`, and
    /// with PostgreSQL the listener for other instances' hints.
    pub fn start(
        db: DatabaseConnection,
        recheck: Duration,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let events = Self {
            hub: Arc::new(Hub {
                db,
                feeds: Mutex::new(HashMap::new()),
            }),
        };
        let mut tasks = Vec::new();
        let net = events.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(recheck);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                net.hub.recheck().await;
            }
        }));
        if events.hub.db.get_database_backend() == DbBackend::Postgres {
            let events = events.clone();
            tasks.push(tokio::spawn(async move { events.listen().await }));
        }
        (events, tasks)
    }

    /// Follows `order_id` from now on: every change committed after this call reaches the
    /// returned [`Watch`]. Register before reading the order, so no change falls between.
    pub fn watch(&self, order_id: &OrderId) -> Watch {
        let mut feeds = self.hub.feeds();
        let feed = feeds.entry(order_id.clone()).or_insert_with(|| {
            Arc::new(Feed {
                latest: watch::Sender::new(None),
                followers: AtomicUsize::new(0),
                hints: AtomicU64::new(0),
                read_upto: AtomicU64::new(0),
                reading: tokio::sync::Mutex::new(()),
            })
        });
        feed.followers.fetch_add(1, Ordering::Relaxed);
        let feed = feed.clone();
        drop(feeds);
        Watch {
            latest: feed.latest.subscribe(),
            feed,
            hub: self.hub.clone(),
            order_id: order_id.clone(),
        }
    }

    /// Orders followed on this instance.
    pub fn followed_orders(&self) -> usize {
        self.hub.feeds().len()
    }

    /// Announces that `order_id` changed. Call after the change is committed.
    pub async fn publish(&self, order_id: &str) {
        let db = &self.hub.db;
        if db.get_database_backend() == DbBackend::Postgres {
            // Our own listener delivers it locally too, so every instance follows one path.
            let notify = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [CHANNEL.into(), order_id.into()],
            );
            if let Err(e) = db.execute_raw(notify).await {
                tracing::warn!(error = %e, "NOTIFY failed; delivering locally only");
                self.hub.hint(order_id);
            }
        } else {
            self.hub.hint(order_id);
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
            let pool = self.hub.db.get_postgres_connection_pool();
            match sea_orm::sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        tracing::info!("listening for order events from other instances");
                        failures = 0;
                        // Hints sent while we were not listening are lost: look for them.
                        let hub = self.hub.clone();
                        tokio::spawn(async move { hub.recheck().await });
                        loop {
                            match listener.recv().await {
                                Ok(notification) => self.hub.hint(notification.payload()),
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

/// One subscriber's hold on an order's feed; dropping it stops following (the feed goes
/// when its last follower does).
pub struct Watch {
    latest: watch::Receiver<Option<Arc<Snapshot>>>,
    feed: Arc<Feed>,
    hub: Arc<Hub>,
    order_id: OrderId,
}

impl Watch {
    /// The newest snapshot the feed holds, if any read has been made since it was created.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.borrow().clone()
    }

    /// Gives the feed a snapshot this subscriber read itself; the feed keeps whichever is
    /// newer, and that one is returned.
    pub fn offer(&mut self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.feed.offer(Arc::new(snapshot));
        self.latest
            .borrow_and_update()
            .clone()
            .expect("a feed offered a snapshot holds one")
    }

    /// Waits for a snapshot newer than the last one seen; `None` once the hub is gone.
    pub async fn changed(&mut self) -> Option<Arc<Snapshot>> {
        loop {
            self.latest.changed().await.ok()?;
            if let Some(snapshot) = self.latest.borrow_and_update().clone() {
                return Some(snapshot);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut feeds = self.hub.feeds();
        if self.feed.followers.fetch_sub(1, Ordering::Relaxed) == 1 {
            feeds.remove(&self.order_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::DatabaseSettings,
        domain::{CaptureMode, CartId, CustomerId, IdempotencyKey, OrderStatus, PaymentMethodId},
        flows::place_order::CheckoutRequest,
    };
    use std::sync::atomic::AtomicUsize;

    /// A migrated SQLite database in a temp file, and a count of the queries made on it.
    async fn database() -> (tempfile::TempDir, DatabaseConnection, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("events.db").display()
        );
        let mut db = store::connect(&url, &DatabaseSettings::default())
            .await
            .expect("connect");
        store::migrate(&db).await.expect("migrate");
        let queries = Arc::new(AtomicUsize::new(0));
        let count = queries.clone();
        db.set_metric_callback(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        (dir, db, queries)
    }

    async fn placed_order(db: &DatabaseConnection, key: &str) -> OrderId {
        let request = CheckoutRequest {
            customer_id: CustomerId::from_upstream("cus_1".into()),
            cart_id: CartId::from_upstream("crt_1".into()),
            payment_method_id: PaymentMethodId::parse("pm_card_visa").expect("id"),
            voucher_id: None,
            idempotency_key: IdempotencyKey::parse(key).expect("key"),
        };
        let order = request.new_order("hash".into(), CaptureMode::Immediate, 1_000);
        let id = order.id.clone();
        assert!(store::orders::insert_new(db, order).await.expect("insert"));
        store::orders::start_history(db, &id, OrderStatus::AwaitingAcceptance, 1_000)
            .await
            .expect("history");
        id
    }

    async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), what)
            .await
            .expect("in time")
    }

    #[tokio::test]
    async fn a_change_is_read_once_for_all_followers_and_reaches_only_them() {
        let (_dir, db, queries) = database().await;
        let followed = placed_order(&db, "key-1").await;
        let other = placed_order(&db, "key-2").await;
        let (events, _tasks) = OrderEvents::start(db.clone(), Duration::from_secs(3_600));
        let mut watches: Vec<Watch> = (0..100).map(|_| events.watch(&followed)).collect();
        let elsewhere = events.watch(&other);
        let (order, history) = store::orders::snapshot(&db, &followed)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(
            watches[0]
                .offer(Snapshot::new(order, history))
                .history
                .len(),
            1
        );
        for watch in &mut watches {
            let seen = watch.latest().expect("the offered snapshot");
            assert_eq!(seen.history.len(), 1);
        }

        store::orders::append_history(&db, &followed, OrderStatus::InPreparation, 2_000)
            .await
            .expect("append");
        let before = queries.load(Ordering::SeqCst);
        events.publish(followed.as_str()).await;
        for watch in &mut watches {
            let snapshot = within(watch.changed()).await.expect("a change");
            assert_eq!(snapshot.history.len(), 2);
            assert_eq!(snapshot.history[1].status, OrderStatus::InPreparation);
        }
        assert_eq!(
            queries.load(Ordering::SeqCst) - before,
            1,
            "one read for 100 followers"
        );
        assert!(
            elsewhere.latest.has_changed().is_ok_and(|changed| !changed),
            "another order's follower is not woken"
        );
        assert!(elsewhere.latest().is_none());

        // An order nobody here follows costs nothing.
        let unfollowed = placed_order(&db, "key-3").await;
        let before = queries.load(Ordering::SeqCst);
        events.publish(unfollowed.as_str()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(queries.load(Ordering::SeqCst), before);
        drop(elsewhere);
    }

    #[tokio::test]
    async fn a_burst_of_hints_costs_at_most_two_reads() {
        let (_dir, db, queries) = database().await;
        let id = placed_order(&db, "key-1").await;
        let (events, _tasks) = OrderEvents::start(db.clone(), Duration::from_secs(3_600));
        let mut watch = events.watch(&id);
        let before = queries.load(Ordering::SeqCst);
        for _ in 0..10 {
            events.publish(id.as_str()).await;
        }
        within(watch.changed()).await.expect("a snapshot");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reads = queries.load(Ordering::SeqCst) - before;
        assert!((1..=2).contains(&reads), "{reads} reads for 10 hints");
    }

    #[tokio::test]
    async fn the_safety_net_finds_a_change_whose_hint_was_lost() {
        let (_dir, db, queries) = database().await;
        let id = placed_order(&db, "key-1").await;
        let (events, _tasks) = OrderEvents::start(db.clone(), Duration::from_secs(3_600));
        let mut watch = events.watch(&id);
        let (order, history) = store::orders::snapshot(&db, &id)
            .await
            .expect("read")
            .expect("found");
        watch.offer(Snapshot::new(order, history));

        // Nothing moved: one query looks, nothing is read.
        let before = queries.load(Ordering::SeqCst);
        events.hub.recheck().await;
        assert_eq!(queries.load(Ordering::SeqCst) - before, 1);

        // Committed, but its hint lost.
        store::orders::append_history(&db, &id, OrderStatus::InPreparation, 2_000)
            .await
            .expect("append");
        let before = queries.load(Ordering::SeqCst);
        events.hub.recheck().await;
        let snapshot = within(watch.changed()).await.expect("the missed change");
        assert_eq!(snapshot.history.len(), 2);
        assert_eq!(
            queries.load(Ordering::SeqCst) - before,
            2,
            "a look, then one read"
        );
    }

    #[tokio::test]
    async fn a_feed_goes_with_its_last_follower() {
        let (_dir, db, _queries) = database().await;
        let id = placed_order(&db, "key-1").await;
        let (events, _tasks) = OrderEvents::start(db.clone(), Duration::from_secs(3_600));
        let first = events.watch(&id);
        let second = events.watch(&id);
        assert_eq!(events.followed_orders(), 1);
        drop(first);
        assert_eq!(events.followed_orders(), 1);
        drop(second);
        assert_eq!(events.followed_orders(), 0);
        // A follower that comes back starts a new feed.
        let _again = events.watch(&id);
        assert_eq!(events.followed_orders(), 1);
    }
}
