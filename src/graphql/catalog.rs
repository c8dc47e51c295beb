//! Stores and products, from the in-process copy of Okya's catalogue
//! (`upstream::okya::catalog`), and through the DataLoaders for what it does not hold.

use super::{context, errors::ApiError, scalars::MoneyObject};
use crate::{
    domain::{ProductId, StoreId},
    upstream::okya::{self, WireMoney},
};
use async_graphql::{Context, ID, Object, Result};
use std::sync::Arc;

pub(super) fn money(wire: &WireMoney) -> Result<MoneyObject> {
    wire.to_money()
        .map(MoneyObject)
        .map_err(|e| ApiError::from(e).into())
}

pub struct StoreObject(pub Arc<okya::Store>);

/// A coffee shop that takes orders through the app.
#[Object(name = "Store")]
impl StoreObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn address(&self) -> &str {
        &self.0.address
    }

    /// Whether the store takes orders now; a closed store's carts cannot be changed.
    async fn is_open(&self) -> bool {
        self.0.is_open
    }

    async fn currency_code(&self) -> &str {
        &self.0.currency
    }

    /// The store's menu, in display order.
    async fn products(&self, ctx: &Context<'_>) -> Result<Vec<ProductObject>> {
        // The catalogue holds every product on a store's menu it read; the loader (one
        // call for the whole request) is only for a menu newer than that copy.
        let copy = catalogue(ctx).await?;
        if let Some(menu) = copy.menu(&self.0) {
            return Ok(menu.iter().cloned().map(ProductObject).collect());
        }
        let held: Option<Vec<ProductObject>> = self
            .0
            .product_ids
            .iter()
            .map(|id| copy.product(id).cloned().map(ProductObject))
            .collect();
        if let Some(held) = held {
            return Ok(held);
        }
        let ids: Vec<ProductId> = self
            .0
            .product_ids
            .iter()
            .map(|id| ProductId::from_upstream(id.clone()))
            .collect();
        load_products(ctx, &ids)
            .await
            .map(|found| found.into_iter().flatten().collect())
    }
}

/// Looks the products up in one batch and answers one entry per id asked for, in order,
/// repeats included (`None` where unknown). The loader answers a map with each id once,
/// so a repeated id reads the same entry again rather than taking it out.
pub(super) async fn load_products(
    ctx: &Context<'_>,
    ids: &[ProductId],
) -> Result<Vec<Option<ProductObject>>> {
    let state = context::state(ctx)?;
    let found = context::loaders(ctx)?
        .products(state)
        .load_many(ids.iter().cloned())
        .await
        .map_err(ApiError::from)?;
    Ok(ids
        .iter()
        .map(|id| found.get(id).cloned().map(ProductObject))
        .collect())
}

pub struct ProductObject(pub Arc<okya::Product>);

/// Something on the menu.
#[Object(name = "Product")]
impl ProductObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> &str {
        &self.0.description
    }

    async fn category(&self) -> &str {
        &self.0.category
    }

    /// Base price, before modifiers.
    async fn price(&self) -> Result<MoneyObject> {
        money(&self.0.price)
    }

    /// False while sold out.
    async fn available(&self) -> bool {
        self.0.available
    }

    async fn modifier_groups(&self) -> Vec<ModifierGroupObject<'_>> {
        self.0
            .modifier_groups
            .iter()
            .map(ModifierGroupObject)
            .collect()
    }
}

pub struct ModifierGroupObject<'a>(&'a okya::ModifierGroup);

/// A choice to make about a product (size, milk); pick between `minSelections` and
/// `maxSelections` of its options.
#[Object(name = "ModifierGroup")]
impl ModifierGroupObject<'_> {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn min_selections(&self) -> u32 {
        self.0.min_selections
    }

    async fn max_selections(&self) -> u32 {
        self.0.max_selections
    }

    async fn options(&self) -> Vec<ModifierOptionObject> {
        self.0
            .options
            .iter()
            .cloned()
            .map(ModifierOptionObject)
            .collect()
    }
}

pub struct ModifierOptionObject(pub okya::ModifierOption);

#[Object(name = "ModifierOption")]
impl ModifierOptionObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Added to the product's price when chosen.
    async fn price_delta(&self) -> Result<MoneyObject> {
        money(&self.0.price_delta)
    }

    async fn available(&self) -> bool {
        self.0.available
    }
}

/// The catalogue held in process (bounded staleness; one Okya read when it is cold).
async fn catalogue(
    ctx: &Context<'_>,
) -> Result<std::sync::Arc<crate::upstream::okya::catalog::Snapshot>> {
    Ok(context::state(ctx)?
        .upstreams
        .catalog
        .get()
        .await
        .map_err(ApiError::from)?)
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// Every store, open or closed.
    async fn stores(&self, ctx: &Context<'_>) -> Result<Vec<StoreObject>> {
        let copy = catalogue(ctx).await?;
        Ok(copy.stores.iter().cloned().map(StoreObject).collect())
    }

    /// One store, or null when there is no such store.
    async fn store(&self, ctx: &Context<'_>, id: ID) -> Result<Option<StoreObject>> {
        let Some(id) = StoreId::parse(&id) else {
            return Ok(None);
        };
        let state = context::state(ctx)?;
        Ok(context::loaders(ctx)?
            .stores(state)
            .load_one(id)
            .await
            .map_err(ApiError::from)?
            .map(StoreObject))
    }

    /// One product, or null when there is no such product.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> Result<Option<ProductObject>> {
        let Some(id) = ProductId::parse(&id) else {
            return Ok(None);
        };
        Ok(load_products(ctx, &[id]).await?.pop().flatten())
    }

    /// Several products in one call, in the order asked; null where an id is unknown.
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(max_items = 100))] ids: Vec<ID>,
    ) -> Result<Vec<Option<ProductObject>>> {
        let parsed: Vec<Option<ProductId>> = ids.iter().map(|id| ProductId::parse(id)).collect();
        let valid: Vec<ProductId> = parsed.iter().flatten().cloned().collect();
        let mut found = load_products(ctx, &valid).await?.into_iter();
        Ok(parsed
            .into_iter()
            .map(|id| id.and_then(|_| found.next().flatten()))
            .collect())
    }
}
