//! DataLoaders: every lookup by id in one request is batched into one upstream call per
//! resource type. Keys are domain newtypes, so a store id can never be looked up as a
//! product. Loaders live for one request: data is fresh per request, never stale.

use crate::{
    domain::{ProductId, StoreId},
    upstream::{
        UpstreamError,
        okya::{OkyaClient, Product, Store},
    },
};
use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use std::{collections::HashMap, sync::Arc};

/// DataLoader errors must be `Clone`; upstream errors are shared behind an `Arc`.
pub type LoadError = Arc<UpstreamError>;

pub struct ProductLoader {
    okya: OkyaClient,
}

impl Loader<ProductId> for ProductLoader {
    type Value = Product;
    type Error = LoadError;

    async fn load(&self, keys: &[ProductId]) -> Result<HashMap<ProductId, Product>, LoadError> {
        let products = self.okya.products(keys).await.map_err(Arc::new)?;
        Ok(products
            .into_iter()
            .map(|p| (ProductId::from_upstream(p.id.clone()), p))
            .collect())
    }
}

pub struct StoreLoader {
    okya: OkyaClient,
}

impl Loader<StoreId> for StoreLoader {
    type Value = Store;
    type Error = LoadError;

    async fn load(&self, keys: &[StoreId]) -> Result<HashMap<StoreId, Store>, LoadError> {
        let stores = self.okya.stores(Some(keys)).await.map_err(Arc::new)?;
        Ok(stores
            .into_iter()
            .map(|s| (StoreId::from_upstream(s.id.clone()), s))
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
}

impl Loaders {
    pub fn new(upstreams: &crate::upstream::Upstreams) -> Self {
        let okya = &upstreams.okya;
        Self {
            wallets: super::vouchers::Wallets::new(&upstreams.sessionm),
            // Okya answers at most 200 ids per call.
            products: DataLoader::with_cache(
                ProductLoader { okya: okya.clone() },
                tokio::spawn,
                HashMapCache::default(),
            )
            .max_batch_size(200),
            stores: DataLoader::with_cache(
                StoreLoader { okya: okya.clone() },
                tokio::spawn,
                HashMapCache::default(),
            )
            .max_batch_size(200),
        }
    }
}
