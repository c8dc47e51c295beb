//! DataLoaders: every lookup by id in one request is batched into one upstream call per
//! resource type. Keys are domain newtypes, so a store id can never be looked up as a
//! product. Loaders live for one request. Stores and products are first looked up in the
//! in-process catalogue (`upstream::okya::catalog`, bounded staleness); only ids it does not hold
//! (a product on no menu, a store opened since the copy was read) are asked of Okya.

use crate::{
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
use std::{collections::HashMap, sync::Arc};

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
/// one upstream call per resource.
pub struct Loaders {
    pub products: DataLoader<ProductLoader, HashMapCache>,
    pub stores: DataLoader<StoreLoader, HashMapCache>,
    pub wallets: super::vouchers::Wallets,
    /// Status histories; `None` where the request was built without the database
    /// ([`Loaders::with_db`]), and each order then reads its own.
    pub histories: Option<DataLoader<HistoryLoader, HashMapCache>>,
}

impl Loaders {
    pub fn new(upstreams: &crate::upstream::Upstreams) -> Self {
        let (okya, catalog) = (&upstreams.okya, &upstreams.catalog);
        Self {
            wallets: super::vouchers::Wallets::new(&upstreams.sessionm),
            // Okya answers at most 200 ids per call.
            products: DataLoader::with_cache(
                ProductLoader {
                    okya: okya.clone(),
                    catalog: catalog.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            )
            .max_batch_size(200),
            stores: DataLoader::with_cache(
                StoreLoader {
                    okya: okya.clone(),
                    catalog: catalog.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            )
            .max_batch_size(200),
            histories: None,
        }
    }

    /// Adds the status-history loader, reading from `db`.
    pub fn with_db(mut self, db: &sea_orm::DatabaseConnection) -> Self {
        self.histories = Some(
            DataLoader::with_cache(
                HistoryLoader { db: db.clone() },
                tokio::spawn,
                HashMapCache::default(),
            )
            // A page is at most 100 orders; one `IN` list of that size is fine on both
            // databases.
            .max_batch_size(100),
        );
        self
    }
}
