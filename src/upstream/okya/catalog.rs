//! Okya's catalogue (every store, and every product on a store's menu) held in process, so
//! catalogue queries are answered from memory.
//!
//! One copy, read as a whole: `GET /v1/stores`, then `GET /v1/products` for the union of the
//! menus (200 ids a call). The copy is:
//! - **fresh** up to `catalog.fresh_secs` old: served as it is;
//! - **stale** after that, up to `catalog.max_stale_secs`: still served, while ONE background
//!   read replaces it (stale-while-revalidate). When that read fails (Okya down), the stale
//!   copy keeps being served, with a warning, until it is `max_stale_secs` old;
//! - **gone** after `max_stale_secs` (the cache's time to live): the next query reads Okya
//!   itself, and fails with Okya's error if Okya is down.
//!
//! A cold cache costs one read however many requests arrive at once: moka's `try_get_with`
//! runs one load per key and hands its result to every waiter. Okya's `menu.updated`
//! webhook drops the copy (a new generation: a read begun before the webhook is stored under
//! the old one, which nobody asks for). Carts are never held here: their prices and totals
//! are always Okya's of the moment.

use super::{OkyaClient, Product, Store};
use crate::{
    config::CatalogSettings,
    domain::{ProductId, StoreId},
    upstream::UpstreamError,
};
use moka::{future::Cache, policy::EvictionPolicy};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The type of Okya's webhook announcing a change to a store or a menu
/// (`docs/upstreams/okya.md`, "Webhook to us: `menu.updated`").
pub const MENU_UPDATED: &str = "menu.updated";

/// Okya answers at most this many ids per `GET /v1/products`.
const PRODUCTS_PER_CALL: usize = 200;

/// After a failed background read, the next one waits at least this long, so an outage
/// does not turn every request in the stale window into a call.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Errors are shared by every request that waited on the same read.
pub type CatalogError = Arc<UpstreamError>;

/// One read of the catalogue, immutable once made.
#[derive(Debug)]
pub struct Snapshot {
    /// Every store, in Okya's order.
    pub stores: Vec<Arc<Store>>,
    by_store: HashMap<String, Arc<Store>>,
    products: HashMap<String, Arc<Product>>,
    /// Each store's menu, by store id, for the stores whose every product was read.
    menus: HashMap<String, Vec<Arc<Product>>>,
    read_at: Instant,
}

impl Snapshot {
    fn new(stores: Vec<Store>, products: Vec<Product>) -> Self {
        let stores: Vec<Arc<Store>> = stores.into_iter().map(Arc::new).collect();
        let products: HashMap<String, Arc<Product>> = products
            .into_iter()
            .map(|p| (p.id.clone(), Arc::new(p)))
            .collect();
        let menus = stores
            .iter()
            .filter_map(|store| {
                let menu: Option<Vec<Arc<Product>>> = store
                    .product_ids
                    .iter()
                    .map(|id| products.get(id).cloned())
                    .collect();
                Some((store.id.clone(), menu?))
            })
            .collect();
        Self {
            by_store: stores.iter().map(|s| (s.id.clone(), s.clone())).collect(),
            stores,
            products,
            menus,
            read_at: Instant::now(),
        }
    }

    /// The menu of `store`, in its order, when `store` is this copy's own (not one read
    /// since) and the copy holds every product on it.
    pub fn menu(&self, store: &Arc<Store>) -> Option<&[Arc<Product>]> {
        let own = self.by_store.get(&store.id)?;
        if !Arc::ptr_eq(own, store) {
            return None;
        }
        self.menus.get(&store.id).map(Vec::as_slice)
    }

    /// The store with this id, if Okya listed it.
    pub fn store(&self, id: &str) -> Option<&Arc<Store>> {
        self.by_store.get(id)
    }

    /// The product with this id, if it is on some store's menu.
    pub fn product(&self, id: &str) -> Option<&Arc<Product>> {
        self.products.get(id)
    }
}

/// The shared catalogue; cheap to clone (every clone is the same cache).
#[derive(Clone)]
pub struct CatalogCache {
    okya: OkyaClient,
    /// Generation → its copy. Entries live `max_stale` from insertion.
    copies: Cache<u64, Arc<Snapshot>>,
    generation: Arc<AtomicU64>,
    fresh: Duration,
    /// True while a background read runs: at most one at a time.
    refreshing: Arc<AtomicBool>,
    /// When the last background read failed, to space the next one.
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for CatalogCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogCache")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("fresh", &self.fresh)
            .finish_non_exhaustive()
    }
}

impl CatalogCache {
    /// An empty cache reading from `okya`, bounded by `settings`.
    pub fn new(okya: OkyaClient, settings: &CatalogSettings) -> Self {
        Self {
            okya,
            // One live copy; the second slot holds a copy read under a generation that a
            // webhook has since replaced, until it is evicted. Plain LRU, so the newest copy
            // is always admitted (TinyLFU could refuse it at this size).
            copies: Cache::builder()
                .max_capacity(2)
                .eviction_policy(EvictionPolicy::lru())
                .time_to_live(settings.max_stale())
                .build(),
            generation: Arc::new(AtomicU64::new(0)),
            fresh: settings.fresh(),
            refreshing: Arc::new(AtomicBool::new(false)),
            failed_at: Arc::new(Mutex::new(None)),
        }
    }

    /// The catalogue: the held copy if it is younger than `max_stale` (starting a
    /// background read when it is older than `fresh`), otherwise a read of Okya shared
    /// with every request asking at the same moment.
    ///
    /// # Errors
    /// Okya's error when there is no copy to serve and the read failed.
    pub async fn get(&self) -> Result<Arc<Snapshot>, CatalogError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(copy) = self.copies.get(&generation).await {
            if copy.read_at.elapsed() >= self.fresh {
                self.refresh(generation);
            }
            return Ok(copy);
        }
        let okya = self.okya.clone();
        self.copies
            .try_get_with(generation, async move { read(&okya).await.map(Arc::new) })
            .await
    }

    /// Drops the copy: the next query reads Okya (Okya's `menu.updated` webhook).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.copies.invalidate_all();
        tracing::info!("catalogue dropped; the next query reads Okya");
    }

    /// Starts one background read for `generation`, unless one runs or one failed less
    /// than [`RETRY_AFTER_FAILURE`] ago.
    fn refresh(&self, generation: u64) {
        if self
            .failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
        {
            return;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = read(&this.okya).await;
            *this
                .failed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = outcome.is_err().then(Instant::now);
            match outcome {
                // A webhook during the read made it out of date before it was stored.
                Ok(copy) if this.generation.load(Ordering::Acquire) == generation => {
                    this.copies.insert(generation, Arc::new(copy)).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "reading the catalogue failed; serving the stale copy until catalog.max_stale_secs"
                    );
                }
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }
}

/// Reads every store, then every product on their menus.
async fn read(okya: &OkyaClient) -> Result<Snapshot, UpstreamError> {
    let stores = okya.stores(None).await?;
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<ProductId> = stores
        .iter()
        .flat_map(|s| s.product_ids.iter())
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| ProductId::from_upstream(id.clone()))
        .collect();
    let reads = ids
        .chunks(PRODUCTS_PER_CALL)
        .map(|chunk| okya.products(chunk));
    let mut products = Vec::with_capacity(ids.len());
    for read in futures_util::future::join_all(reads).await {
        products.extend(read?);
    }
    Ok(Snapshot::new(stores, products))
}

/// Splits `ids` into what the copy holds and what it does not (to ask Okya for).
pub fn split_stores(copy: &Snapshot, ids: &[StoreId]) -> (Vec<Arc<Store>>, Vec<StoreId>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match copy.store(id.as_str()) {
            Some(store) => found.push(store.clone()),
            None => missing.push(id.clone()),
        }
    }
    (found, missing)
}

/// Splits `ids` into what the copy holds and what it does not (to ask Okya for).
pub fn split_products(copy: &Snapshot, ids: &[ProductId]) -> (Vec<Arc<Product>>, Vec<ProductId>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match copy.product(id.as_str()) {
            Some(product) => found.push(product.clone()),
            None => missing.push(id.clone()),
        }
    }
    (found, missing)
}
