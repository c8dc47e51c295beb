//! DataLoaders: every lookup by id in one request is batched into one upstream call per
//! resource type. Keys are domain newtypes, so a store id can never be looked up as a
//! product. Loaders live for one request. Stores and products are first looked up in the
//! in-process catalogue (`upstream::okya::catalog`, bounded staleness); only ids it does not hold
//! (a product on no menu, a store opened since the copy was read) are asked of Okya.

use crate::{
    context::AppState,
    domain::{OrderId, ProductId, StoreId},
    store::{self, StoreError, entities::order_status_history},
    upstream::{
        UpstreamError,
        okya::{
            OkyaClient, Product, Store,
            catalog::{self as catalog_cache, CatalogCache},
        },
    },
};
use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

/// DataLoader errors must be `Clone`; upstream errors are shared behind an `Arc`.
pub type LoadError = Arc<UpstreamError>;

pub struct ProductLoader {
    okya: OkyaClient,
    catalog: CatalogCache,
}

impl Loader<ProductId> for ProductLoader {
    type Value = Arc<Product>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[ProductId],
    ) -> Result<HashMap<ProductId, Arc<Product>>, LoadError> {
        let copy = self.catalog.get().await?;
        let (mut found, missing) = catalog_cache::split_products(&copy, keys);
        if !missing.is_empty() {
            let read = self.okya.products(&missing).await.map_err(Arc::new)?;
            found.extend(read.into_iter().map(Arc::new));
        }
        Ok(found
            .into_iter()
            .map(|p| (ProductId::from_upstream(p.id.clone()), p))
            .collect())
    }
}

pub struct StoreLoader {
    okya: OkyaClient,
    catalog: CatalogCache,
}

impl Loader<StoreId> for StoreLoader {
    type Value = Arc<Store>;
    type Error = LoadError;

    async fn load(&self, keys: &[StoreId]) -> Result<HashMap<StoreId, Arc<Store>>, LoadError> {
        let copy = self.catalog.get().await?;
        let (mut found, missing) = catalog_cache::split_stores(&copy, keys);
        if !missing.is_empty() {
            let read = self.okya.stores(Some(&missing)).await.map_err(Arc::new)?;
            found.extend(read.into_iter().map(Arc::new));
        }
        Ok(found
            .into_iter()
            .map(|s| (StoreId::from_upstream(s.id.clone()), s))
            .collect())
    }
}

/// Order status histories, read for a whole page of orders in one query.
pub struct HistoryLoader {
    db: sea_orm::DatabaseConnection,
}

/// One order's history, oldest first, shared by every field that reads it.
pub type History = Arc<[order_status_history::Model]>;

impl Loader<OrderId> for HistoryLoader {
    type Value = History;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[OrderId]) -> Result<HashMap<OrderId, History>, Self::Error> {
        let found = store::order_history::for_orders(&self.db, keys)
            .await
            .map_err(Arc::new)?;
        Ok(found
            .into_iter()
            .map(|(id, rows)| (id, History::from(rows)))
            .collect())
    }
}

/// The loaders of one GraphQL request. Each caches what it loaded for the rest of the
/// request: fields resolved at different moments (after a database read, say) still share
/// one upstream call per resource. Each is made when a resolver first asks for it, from the
/// request's `AppState`: a request that needs none (`{ __typename }`) pays for none.
#[derive(Default)]
pub struct Loaders {
    products: OnceLock<DataLoader<ProductLoader, HashMapCache>>,
    stores: OnceLock<DataLoader<StoreLoader, HashMapCache>>,
    wallets: OnceLock<super::vouchers::Wallets>,
    histories: OnceLock<DataLoader<HistoryLoader, HashMapCache>>,
}

impl Loaders {
    /// The same as [`Loaders::default`]: the loaders take their clients from the request's
    /// `AppState` when first used.
    pub fn new(_upstreams: &crate::upstream::Upstreams) -> Self {
        Self::default()
    }

    /// Products by id: the catalogue, then one Okya call for the ids it lacks.
    pub fn products(&self, state: &AppState) -> &DataLoader<ProductLoader, HashMapCache> {
        self.products.get_or_init(|| {
            DataLoader::with_cache(
                ProductLoader {
                    okya: state.upstreams.okya.clone(),
                    catalog: state.upstreams.catalog.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            )
            // Okya answers at most 200 ids per call.
            .max_batch_size(200)
        })
    }

    /// Stores by id: the catalogue, then one Okya call for the ids it lacks.
    pub fn stores(&self, state: &AppState) -> &DataLoader<StoreLoader, HashMapCache> {
        self.stores.get_or_init(|| {
            DataLoader::with_cache(
                StoreLoader {
                    okya: state.upstreams.okya.clone(),
                    catalog: state.upstreams.catalog.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            )
            .max_batch_size(200)
        })
    }

    /// SessionM wallets by user id.
    pub fn wallets(&self, state: &AppState) -> &super::vouchers::Wallets {
        self.wallets
            .get_or_init(|| super::vouchers::Wallets::new(&state.upstreams.sessionm))
    }

    /// Order status histories: one query for every order of the request that asks.
    pub fn histories(&self, state: &AppState) -> &DataLoader<HistoryLoader, HashMapCache> {
        self.histories.get_or_init(|| {
            DataLoader::with_cache(
                HistoryLoader {
                    db: state.db.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            )
            // A page is at most 100 orders; one `IN` list of that size is fine on both
            // databases.
            .max_batch_size(100)
        })
    }
}
