//! Carts: owned by Okya, remembered by us, changed only through these mutations.

use super::{
    catalog::{ModifierOptionObject, ProductObject, StoreObject, load_products, money},
    context,
    errors::{ApiError, UserError, UserErrorCode, input_path},
    scalars::MoneyObject,
};
use crate::{
    domain::{CartId, CartLineId, ModifierOptionId, ProductId, StoreId},
    store,
    upstream::{UpstreamError, okya},
};
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};

const MAX_QUANTITY: i32 = 99;
/// Lines one mutation may touch; a real basket is far smaller.
const MAX_LINES_PER_CALL: usize = 50;

pub struct CartObject(pub okya::Cart);

/// A basket at one store. Okya computes its prices, tax and totals.
#[Object(name = "Cart")]
impl CartObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn store(&self, ctx: &Context<'_>) -> Result<Option<StoreObject>> {
        let state = context::state(ctx)?;
        let store = context::loaders(ctx)?
            .stores(state)
            .load_one(StoreId::from_upstream(self.0.store_id.clone()))
            .await
            .map_err(ApiError::from)?;
        Ok(store.map(StoreObject))
    }

    async fn lines(&self) -> Vec<CartLineObject<'_>> {
        self.0
            .lines
            .iter()
            .map(|l| CartLineObject(std::borrow::Cow::Borrowed(l)))
            .collect()
    }

    /// Number of items, all lines together.
    async fn total_quantity(&self) -> u32 {
        self.0.lines.iter().map(|l| l.quantity).sum()
    }

    async fn subtotal(&self) -> Result<MoneyObject> {
        money(&self.0.subtotal)
    }

    async fn discount(&self) -> Result<MoneyObject> {
        money(&self.0.discount)
    }

    async fn tax(&self) -> Result<MoneyObject> {
        money(&self.0.tax)
    }

    /// Subtotal less discount plus tax.
    async fn total(&self) -> Result<MoneyObject> {
        money(&self.0.total)
    }

    async fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.updated_at
    }
}

/// A cart line, borrowed from a cart or owned when read from an order.
pub struct CartLineObject<'a>(std::borrow::Cow<'a, okya::CartLine>);

impl CartLineObject<'static> {
    pub fn owned(line: okya::CartLine) -> Self {
        Self(std::borrow::Cow::Owned(line))
    }
}

#[Object(name = "CartLine")]
impl CartLineObject<'_> {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Null only if the product left the catalogue after it was added.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<ProductObject>> {
        let id = ProductId::from_upstream(self.0.product_id.clone());
        Ok(load_products(ctx, &[id]).await?.pop().flatten())
    }

    async fn quantity(&self) -> u32 {
        self.0.quantity
    }

    /// The chosen modifier options, each with its price.
    async fn modifiers(&self, ctx: &Context<'_>) -> Result<Vec<ModifierOptionObject>> {
        let id = ProductId::from_upstream(self.0.product_id.clone());
        let Some(ProductObject(product)) = load_products(ctx, &[id]).await?.pop().flatten() else {
            return Ok(Vec::new());
        };
        Ok(self
            .0
            .modifier_option_ids
            .iter()
            .filter_map(|chosen| {
                product
                    .modifier_groups
                    .iter()
                    .flat_map(|g| g.options.iter())
                    .find(|o| &o.id == chosen)
                    .cloned()
                    .map(ModifierOptionObject)
            })
            .collect())
    }

    /// Product price plus modifiers, for one item.
    async fn unit_price(&self) -> Result<MoneyObject> {
        money(&self.0.unit_price)
    }

    async fn line_total(&self) -> Result<MoneyObject> {
        money(&self.0.line_total)
    }
}

#[derive(Default)]
pub struct CartQuery;

#[Object]
impl CartQuery {
    /// A cart created through this service, or null.
    async fn cart(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CartObject>> {
        let state = context::state(ctx)?;
        let customer = context::customer(ctx)?;
        let Some(cart_id) = CartId::parse(&id) else {
            return Ok(None);
        };
        let owned = store::carts::find(&state.db, &cart_id)
            .await
            .map_err(ApiError::from)?
            .is_some_and(|cart| cart.customer_id.as_ref() == Some(customer));
        // Another customer's cart is answered exactly like a missing one.
        if !owned {
            return Ok(None);
        }
        let cart = state
            .upstreams
            .okya
            .cart(&cart_id)
            .await
            .map_err(ApiError::from)?;
        Ok(cart.map(CartObject))
    }
}

#[derive(InputObject)]
pub struct CartCreateInput {
    pub store_id: ID,
}

#[derive(InputObject)]
pub struct CartLineInput {
    pub product_id: ID,
    /// 1 to 99.
    pub quantity: i32,
    /// One option id per choice; each group's minimum and maximum apply.
    #[graphql(default)]
    pub modifier_option_ids: Vec<ID>,
}

#[derive(InputObject)]
pub struct CartLineUpdateInput {
    pub line_id: ID,
    /// 1 to 99; remove a line with `cartLinesRemove`.
    pub quantity: i32,
}

#[derive(SimpleObject)]
pub struct CartPayload {
    /// The cart after the change; on failure, null (or unchanged when it exists).
    pub cart: Option<CartObject>,
    pub user_errors: Vec<UserError>,
}

impl CartPayload {
    fn ok(cart: okya::Cart) -> Self {
        Self {
            cart: Some(CartObject(cart)),
            user_errors: Vec::new(),
        }
    }

    fn failed(errors: Vec<UserError>) -> Self {
        Self {
            cart: None,
            user_errors: errors,
        }
    }
}

#[derive(Default)]
pub struct CartMutation;

#[Object]
impl CartMutation {
    /// Starts an empty cart at a store.
    async fn cart_create(&self, ctx: &Context<'_>, input: CartCreateInput) -> Result<CartPayload> {
        let state = context::state(ctx)?;
        let customer = context::customer(ctx)?;
        let Some(store_id) = StoreId::parse(&input.store_id) else {
            return Ok(CartPayload::failed(vec![UserError::new(
                UserErrorCode::StoreNotFound,
                &["input", "storeId"],
                "There is no such store.",
            )]));
        };
        let key = uuid::Uuid::new_v4().to_string();
        let cart = match state
            .upstreams
            .okya
            .create_cart(&store_id, Some(customer.as_str()), &key)
            .await
        {
            Ok(cart) => cart,
            Err(e) => return refusal(e, &["input"]),
        };
        let cart_id = CartId::from_upstream(cart.id.clone());
        store::carts::record(&state.db, &cart_id, &store_id, Some(customer))
            .await
            .map_err(ApiError::from)?;
        tracing::info!(cart_id = %cart_id, store_id = %store_id, "cart created");
        Ok(CartPayload::ok(cart))
    }

    /// Adds products to the cart; the same product with the same modifiers adds up on
    /// one line.
    async fn cart_lines_add(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        lines: Vec<CartLineInput>,
    ) -> Result<CartPayload> {
        let state = context::state(ctx)?;
        let mut errors = check_line_count(lines.len());
        let mut parsed = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let index = i.to_string();
            if let Some(e) = check_quantity(line.quantity, &["lines", &index, "quantity"]) {
                errors.push(e);
            }
            let product = ProductId::parse(&line.product_id);
            if product.is_none() {
                errors.push(UserError::new(
                    UserErrorCode::ProductNotFound,
                    &["lines", &index, "productId"],
                    "There is no such product.",
                ));
            }
            let modifiers: Option<Vec<ModifierOptionId>> = line
                .modifier_option_ids
                .iter()
                .map(|m| ModifierOptionId::parse(m))
                .collect();
            if modifiers.is_none() || line.modifier_option_ids.len() > 20 {
                errors.push(UserError::new(
                    UserErrorCode::InvalidModifier,
                    &["lines", &index, "modifierOptionIds"],
                    "One of these modifier options does not exist.",
                ));
            }
            if let (Some(product), Some(modifiers)) = (product, modifiers) {
                parsed.push((product, line.quantity.unsigned_abs(), modifiers));
            }
        }
        change_cart(ctx, errors, &cart_id, |cart_id, key| async move {
            state
                .upstreams
                .okya
                .add_lines(&cart_id, &parsed, &key)
                .await
        })
        .await
    }

    /// Changes line quantities.
    async fn cart_lines_update(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        lines: Vec<CartLineUpdateInput>,
    ) -> Result<CartPayload> {
        let state = context::state(ctx)?;
        let mut errors = check_line_count(lines.len());
        let mut parsed = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let index = i.to_string();
            if let Some(e) = check_quantity(line.quantity, &["lines", &index, "quantity"]) {
                errors.push(e);
            }
            match CartLineId::parse(&line.line_id) {
                Some(id) => parsed.push((id, line.quantity.unsigned_abs())),
                None => errors.push(UserError::new(
                    UserErrorCode::LineNotFound,
                    &["lines", &index, "lineId"],
                    "This cart has no such line.",
                )),
            }
        }
        change_cart(ctx, errors, &cart_id, |cart_id, key| async move {
            state
                .upstreams
                .okya
                .update_lines(&cart_id, &parsed, &key)
                .await
        })
        .await
    }

    /// Removes lines.
    async fn cart_lines_remove(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        line_ids: Vec<ID>,
    ) -> Result<CartPayload> {
        let state = context::state(ctx)?;
        let mut errors = check_line_count(line_ids.len());
        let mut parsed = Vec::with_capacity(line_ids.len());
        for (i, line) in line_ids.iter().enumerate() {
            match CartLineId::parse(line) {
                Some(id) => parsed.push(id),
                None => errors.push(UserError::new(
                    UserErrorCode::LineNotFound,
                    &["lineIds", &i.to_string()],
                    "This cart has no such line.",
                )),
            }
        }
        change_cart(ctx, errors, &cart_id, |cart_id, key| async move {
            state
                .upstreams
                .okya
                .remove_lines(&cart_id, &parsed, &key)
                .await
        })
        .await
    }
}

fn check_line_count(count: usize) -> Vec<UserError> {
    if count == 0 || count > MAX_LINES_PER_CALL {
        vec![UserError::new(
            UserErrorCode::InvalidInput,
            &["lines"],
            format!("Send between 1 and {MAX_LINES_PER_CALL} lines."),
        )]
    } else {
        Vec::new()
    }
}

fn check_quantity(quantity: i32, field: &[&str]) -> Option<UserError> {
    (!(1..=MAX_QUANTITY).contains(&quantity)).then(|| {
        UserError::new(
            UserErrorCode::InvalidQuantity,
            field,
            format!("Quantity must be between 1 and {MAX_QUANTITY}."),
        )
    })
}

/// Runs one change to an owned cart, unless the input already failed: the change gets a
/// fresh idempotency key (so its retries are safe) and Okya's refusals become `userErrors`.
async fn change_cart<F, Fut>(
    ctx: &Context<'_>,
    errors: Vec<UserError>,
    raw_cart_id: &ID,
    change: F,
) -> Result<CartPayload>
where
    F: FnOnce(CartId, String) -> Fut,
    Fut: std::future::Future<Output = Result<okya::Cart, UpstreamError>>,
{
    if !errors.is_empty() {
        return Ok(CartPayload::failed(errors));
    }
    let cart_id = match owned_cart(ctx, raw_cart_id).await? {
        Ok(id) => id,
        Err(e) => return Ok(CartPayload::failed(vec![e])),
    };
    match change(cart_id, uuid::Uuid::new_v4().to_string()).await {
        Ok(cart) => Ok(CartPayload::ok(cart)),
        Err(e) => refusal(e, &[]),
    }
}

/// The cart id, when it names a cart the signed-in customer created; another customer's
/// cart is answered exactly like a missing one.
async fn owned_cart(ctx: &Context<'_>, raw: &ID) -> Result<Result<CartId, UserError>, ApiError> {
    let state = context::state(ctx)?;
    let customer = context::customer(ctx)?;
    let not_found = || {
        UserError::new(
            UserErrorCode::CartNotFound,
            &["cartId"],
            "There is no such cart.",
        )
    };
    let Some(cart_id) = CartId::parse(raw) else {
        return Ok(Err(not_found()));
    };
    match store::carts::find(&state.db, &cart_id).await? {
        Some(cart) if cart.customer_id.as_ref() == Some(customer) => Ok(Ok(cart_id)),
        _ => Ok(Err(not_found())),
    }
}

/// Okya's refusal as a `userError`, or an unexpected failure as a GraphQL error.
fn refusal(err: UpstreamError, prefix: &[&str]) -> Result<CartPayload> {
    let Some((_, rejection)) = err.rejection() else {
        return Err(ApiError::from(err).into());
    };
    let code = match rejection.code.as_str() {
        okya::codes::STORE_NOT_FOUND => UserErrorCode::StoreNotFound,
        okya::codes::STORE_CLOSED => UserErrorCode::StoreClosed,
        okya::codes::CART_NOT_FOUND => UserErrorCode::CartNotFound,
        okya::codes::PRODUCT_NOT_FOUND => UserErrorCode::ProductNotFound,
        okya::codes::PRODUCT_UNAVAILABLE => UserErrorCode::ProductUnavailable,
        okya::codes::INVALID_QUANTITY => UserErrorCode::InvalidQuantity,
        okya::codes::INVALID_MODIFIER => UserErrorCode::InvalidModifier,
        okya::codes::MODIFIER_SELECTION => UserErrorCode::ModifierSelection,
        okya::codes::LINE_NOT_FOUND => UserErrorCode::LineNotFound,
        okya::codes::CART_FULL => UserErrorCode::CartFull,
        okya::codes::CART_ALREADY_ORDERED => UserErrorCode::CartAlreadyOrdered,
        _ => return Err(ApiError::from(err).into()),
    };
    let field = input_path(prefix, rejection.field.as_deref());
    let message = if rejection.message.is_empty() {
        "This change could not be made.".to_owned()
    } else {
        rejection.message.clone()
    };
    Ok(CartPayload::failed(vec![UserError {
        code,
        field: (!field.is_empty()).then_some(field),
        message,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any `Int` a client sends (GraphQL's is 32-bit; async-graphql refuses the rest)
        /// is a quantity from 1 to 99 or an `INVALID_QUANTITY` at the field it came in.
        #[test]
        fn quantities_are_one_to_ninety_nine_or_a_user_error(
            quantity in prop_oneof![any::<i32>(), -2_i32..120, Just(i32::MIN), Just(i32::MAX)],
        ) {
            match check_quantity(quantity, &["lines", "0", "quantity"]) {
                None => prop_assert!((1..=MAX_QUANTITY).contains(&quantity)),
                Some(error) => {
                    prop_assert!(!(1..=MAX_QUANTITY).contains(&quantity));
                    prop_assert_eq!(error.code, UserErrorCode::InvalidQuantity);
                    prop_assert_eq!(
                        error.field,
                        Some(vec!["lines".to_owned(), "0".to_owned(), "quantity".to_owned()])
                    );
                }
            }
        }

        #[test]
        fn line_counts_are_one_to_fifty_or_a_user_error(count in prop_oneof![0_usize..60, any::<usize>()]) {
            let errors = check_line_count(count);
            prop_assert_eq!(errors.is_empty(), (1..=MAX_LINES_PER_CALL).contains(&count));
            prop_assert!(errors.iter().all(|e| e.code == UserErrorCode::InvalidInput));
        }
    }
}
