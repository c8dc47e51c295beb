//! Okya carts: lines, modifier validation and totals with the store's tax.

use super::wire::{
    AddLines, Cart, CartLine, CreateCart, Product, RemoveLines, UpdateLines, WireMoney,
};
use super::{Inner, OkyaError, OkyaState, idempotent};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use std::sync::Arc;

const MAX_QUANTITY: u32 = 99;
const MAX_LINES: usize = 50;

fn not_found(cart_id: &str) -> OkyaError {
    OkyaError::new(
        StatusCode::NOT_FOUND,
        "cart_not_found",
        format!("no cart {cart_id}"),
    )
}

pub(super) async fn create(
    State(state): State<Arc<OkyaState>>,
    headers: HeaderMap,
    Json(body): Json<CreateCart>,
) -> Response {
    let fingerprint = format!(
        "POST /v1/carts {}",
        serde_json::to_string(&body).unwrap_or_default()
    );
    idempotent(&state, &headers, fingerprint, |inner| {
        let store = inner
            .stores
            .iter()
            .find(|s| s.id == body.store_id)
            .ok_or_else(|| {
                OkyaError::new(StatusCode::NOT_FOUND, "store_not_found", "no such store")
                    .field("store_id")
            })?;
        if !store.is_open {
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "store_closed",
                format!("{} is closed", store.name),
            )
            .field("store_id"));
        }
        let currency = store.currency.clone();
        let zero = WireMoney {
            amount: 0,
            currency: currency.clone(),
        };
        let cart = Cart {
            id: inner.next_id("crt"),
            store_id: body.store_id.clone(),
            customer_ref: body.customer_ref.clone(),
            currency,
            lines: Vec::new(),
            subtotal: zero.clone(),
            discount: zero.clone(),
            tax: zero.clone(),
            total: zero,
            updated_at: chrono::Utc::now(),
        };
        inner.carts.insert(cart.id.clone(), cart.clone());
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(&cart).unwrap_or_default(),
        ))
    })
}

pub(super) async fn get(
    State(state): State<Arc<OkyaState>>,
    Path(cart_id): Path<String>,
) -> Response {
    let inner = state.lock();
    match inner.carts.get(&cart_id) {
        Some(cart) => Json(cart).into_response(),
        None => not_found(&cart_id).into_response(),
    }
}

/// The cart, checked writable: it exists, has not been ordered, and its store still takes
/// orders.
fn writable_cart<'a>(
    inner: &'a Inner,
    cart_id: &str,
) -> Result<(&'a Cart, i64, Vec<String>), OkyaError> {
    let cart = inner.carts.get(cart_id).ok_or_else(|| not_found(cart_id))?;
    if inner.orders.has_order_for_cart(cart_id) {
        return Err(OkyaError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cart_already_ordered",
            "this cart has been ordered; it can no longer change",
        ));
    }
    let store = inner
        .stores
        .iter()
        .find(|s| s.id == cart.store_id)
        .ok_or_else(|| not_found(cart_id))?;
    if !store.is_open {
        return Err(OkyaError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "store_closed",
            format!("{} is closed", store.name),
        ));
    }
    Ok((cart, store.tax_rate_bps, store.product_ids.clone()))
}

fn check_quantity(quantity: u32, field: String) -> Result<(), OkyaError> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(())
    } else {
        Err(OkyaError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
            format!("quantity must be between 1 and {MAX_QUANTITY}"),
        )
        .field(field))
    }
}

/// The unit price of `product` with `options`, after checking every option belongs to the
/// product, is available, is not repeated, and each group's min/max holds.
fn price_with_modifiers(
    product: &Product,
    options: &[String],
    field: &str,
) -> Result<i64, OkyaError> {
    let invalid = |message: String| {
        OkyaError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_modifier",
            message,
        )
        .field(field.to_owned())
    };
    let mut price = product.price.amount;
    for (i, option_id) in options.iter().enumerate() {
        if options[..i].contains(option_id) {
            return Err(invalid(format!("modifier option {option_id} is repeated")));
        }
        let option = product
            .modifier_groups
            .iter()
            .flat_map(|g| g.options.iter())
            .find(|o| &o.id == option_id)
            .ok_or_else(|| {
                invalid(format!(
                    "{} has no modifier option {option_id}",
                    product.name
                ))
            })?;
        if !option.available {
            return Err(invalid(format!("{} is not available", option.name)));
        }
        price += option.price_delta.amount;
    }
    for group in &product.modifier_groups {
        let chosen = group
            .options
            .iter()
            .filter(|o| options.contains(&o.id))
            .count() as u32;
        if chosen < group.min_selections || chosen > group.max_selections {
            let rule = if group.min_selections == group.max_selections {
                format!("exactly {}", group.min_selections)
            } else {
                format!(
                    "between {} and {}",
                    group.min_selections, group.max_selections
                )
            };
            return Err(OkyaError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "modifier_selection",
                format!("{}: choose {rule}", group.name),
            )
            .field(field.to_owned()));
        }
    }
    Ok(price)
}

/// Recomputes line totals and the cart's totals; tax is the store's rate on the
/// discounted subtotal, rounded half away from zero.
fn recompute(cart: &mut Cart, tax_rate_bps: i64) {
    let money = |amount: i64| WireMoney {
        amount,
        currency: cart.currency.clone(),
    };
    let mut subtotal = 0;
    for line in &mut cart.lines {
        line.line_total = money(line.unit_price.amount * i64::from(line.quantity));
        subtotal += line.line_total.amount;
    }
    let taxable = subtotal - cart.discount.amount;
    let product = i128::from(taxable) * i128::from(tax_rate_bps);
    let tax = ((product + 5_000) / 10_000) as i64;
    cart.subtotal = money(subtotal);
    cart.tax = money(tax);
    cart.total = money(taxable + tax);
    cart.updated_at = chrono::Utc::now();
}

fn fingerprint<T: serde::Serialize>(route: &str, cart_id: &str, body: &T) -> String {
    format!(
        "{route} {cart_id} {}",
        serde_json::to_string(body).unwrap_or_default()
    )
}

pub(super) async fn add_lines(
    State(state): State<Arc<OkyaState>>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<AddLines>,
) -> Response {
    let print = fingerprint("add", &cart_id, &body);
    idempotent(&state, &headers, print, |inner| {
        let (cart, tax_rate, menu) = writable_cart(inner, &cart_id)?;
        let mut cart = cart.clone();
        for (i, line) in body.lines.iter().enumerate() {
            check_quantity(line.quantity, format!("lines[{i}].quantity"))?;
            let product = inner
                .products
                .get(&line.product_id)
                .filter(|p| menu.contains(&p.id))
                .ok_or_else(|| {
                    OkyaError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "product_not_found",
                        format!("this store does not sell {}", line.product_id),
                    )
                    .field(format!("lines[{i}].product_id"))
                })?;
            if !product.available {
                return Err(OkyaError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "product_unavailable",
                    format!("{} is sold out", product.name),
                )
                .field(format!("lines[{i}].product_id")));
            }
            let unit = price_with_modifiers(
                product,
                &line.modifier_option_ids,
                &format!("lines[{i}].modifier_option_ids"),
            )?;
            let mut modifiers = line.modifier_option_ids.clone();
            modifiers.sort();
            // The same product with the same modifiers is one line, as every POS shows it.
            if let Some(existing) = cart
                .lines
                .iter_mut()
                .find(|l| l.product_id == line.product_id && l.modifier_option_ids == modifiers)
            {
                existing.quantity += line.quantity;
                check_quantity(existing.quantity, format!("lines[{i}].quantity"))?;
            } else {
                if cart.lines.len() >= MAX_LINES {
                    return Err(OkyaError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "cart_full",
                        format!("a cart holds at most {MAX_LINES} lines"),
                    ));
                }
                let id = inner.next_id("ln");
                cart.lines.push(CartLine {
                    id,
                    product_id: line.product_id.clone(),
                    quantity: line.quantity,
                    modifier_option_ids: modifiers,
                    unit_price: WireMoney {
                        amount: unit,
                        currency: cart.currency.clone(),
                    },
                    line_total: WireMoney {
                        amount: 0,
                        currency: cart.currency.clone(),
                    },
                });
            }
        }
        recompute(&mut cart, tax_rate);
        inner.carts.insert(cart.id.clone(), cart.clone());
        Ok((
            StatusCode::OK,
            serde_json::to_value(&cart).unwrap_or_default(),
        ))
    })
}

pub(super) async fn update_lines(
    State(state): State<Arc<OkyaState>>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateLines>,
) -> Response {
    let print = fingerprint("update", &cart_id, &body);
    idempotent(&state, &headers, print, |inner| {
        let (cart, tax_rate, _) = writable_cart(inner, &cart_id)?;
        let mut cart = cart.clone();
        for (i, change) in body.lines.iter().enumerate() {
            check_quantity(change.quantity, format!("lines[{i}].quantity"))?;
            let line = cart
                .lines
                .iter_mut()
                .find(|l| l.id == change.line_id)
                .ok_or_else(|| {
                    OkyaError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "line_not_found",
                        "no such line in this cart",
                    )
                    .field(format!("lines[{i}].line_id"))
                })?;
            line.quantity = change.quantity;
        }
        recompute(&mut cart, tax_rate);
        inner.carts.insert(cart.id.clone(), cart.clone());
        Ok((
            StatusCode::OK,
            serde_json::to_value(&cart).unwrap_or_default(),
        ))
    })
}

pub(super) async fn remove_lines(
    State(state): State<Arc<OkyaState>>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<RemoveLines>,
) -> Response {
    let print = fingerprint("remove", &cart_id, &body);
    idempotent(&state, &headers, print, |inner| {
        let (cart, tax_rate, _) = writable_cart(inner, &cart_id)?;
        let mut cart = cart.clone();
        for (i, line_id) in body.line_ids.iter().enumerate() {
            let before = cart.lines.len();
            cart.lines.retain(|l| &l.id != line_id);
            if cart.lines.len() == before {
                return Err(OkyaError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "line_not_found",
                    "no such line in this cart",
                )
                .field(format!("line_ids[{i}]")));
            }
        }
        recompute(&mut cart, tax_rate);
        inner.carts.insert(cart.id.clone(), cart.clone());
        Ok((
            StatusCode::OK,
            serde_json::to_value(&cart).unwrap_or_default(),
        ))
    })
}
