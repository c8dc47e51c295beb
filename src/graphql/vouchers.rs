//! The signed-in customer's SessionM vouchers. However many fields of one request ask for
//! them, SessionM is asked once: the wallet is looked up through a per-request cache.

use super::{context, errors::ApiError, scalars::MoneyObject};
use crate::{
    domain::CustomerId,
    store,
    upstream::sessionm::{DiscountKind, Lookup, Offer, OfferStatus, SessionmClient},
};
use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::sync::OnceCell;

/// The wallets looked up during one request. SessionM looks wallets up one member at a
/// time, so there is nothing to batch; what matters is that fields resolved at different
/// moments, even concurrently, share one lookup: the first asks, the others wait for it.
pub struct Wallets {
    sessionm: SessionmClient,
    cells: Mutex<HashMap<String, Arc<OnceCell<Lookup>>>>,
}

impl Wallets {
    pub fn new(sessionm: &SessionmClient) -> Self {
        Self {
            sessionm: sessionm.clone(),
            cells: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, user_id: &str) -> Result<Lookup, ApiError> {
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(user_id.to_owned())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let request_id = uuid::Uuid::new_v4().to_string();
            self.sessionm.lookup(user_id, None, &request_id).await
        })
        .await
        .cloned()
        .map_err(ApiError::from)
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "VoucherDiscountKind")]
pub enum VoucherKind {
    /// One item free (the most expensive one in the order).
    FreeItem,
    FixedAmount,
    Percentage,
    /// A kind of discount this service does not know yet; the voucher is `UNUSABLE`.
    Other,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum VoucherStatus {
    Available,
    /// Held by an order being paid for.
    Locked,
    Redeemed,
    Expired,
    /// SessionM describes it in a way this service does not understand yet; see
    /// `unusableReason`. Cannot be used at checkout.
    Unusable,
}

/// What a voucher gives.
#[derive(SimpleObject)]
pub struct VoucherDiscount {
    pub kind: VoucherKind,
    /// Set for `FIXED_AMOUNT`.
    pub amount: Option<MoneyObject>,
    /// Whole percent, set for `PERCENTAGE`.
    pub percentage: Option<u32>,
}

pub struct VoucherObject(Offer);

/// A reward in the customer's SessionM wallet, usable at checkout with `voucherId`.
#[Object(name = "Voucher")]
impl VoucherObject {
    async fn id(&self) -> ID {
        ID(self.0.user_offer_id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> &str {
        &self.0.description
    }

    async fn discount(&self) -> VoucherDiscount {
        let discount = &self.0.discount;
        VoucherDiscount {
            kind: match discount.kind {
                DiscountKind::FreeItem => VoucherKind::FreeItem,
                DiscountKind::FixedAmount => VoucherKind::FixedAmount,
                DiscountKind::Percentage => VoucherKind::Percentage,
                DiscountKind::Unrecognised(_) => VoucherKind::Other,
            },
            amount: discount.amount.clone().map(MoneyObject),
            percentage: discount.percentage,
        }
    }

    async fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.expires_at
    }

    async fn status(&self) -> VoucherStatus {
        if self.0.unusable_reason().is_some() {
            return VoucherStatus::Unusable;
        }
        match self.0.status {
            OfferStatus::Available => VoucherStatus::Available,
            OfferStatus::Locked => VoucherStatus::Locked,
            OfferStatus::Redeemed => VoucherStatus::Redeemed,
            OfferStatus::Expired => VoucherStatus::Expired,
            OfferStatus::Unrecognised(_) => VoucherStatus::Unusable,
        }
    }

    /// Why the voucher is `UNUSABLE`; null otherwise.
    async fn unusable_reason(&self) -> Option<String> {
        self.0.unusable_reason()
    }
}

/// The wallet of a customer by id: empty while their SessionM account is being linked.
pub async fn wallet(ctx: &Context<'_>, customer_id: &CustomerId) -> Result<Option<Lookup>> {
    let state = context::state(ctx)?;
    let Some(customer) = store::customers::find(&state.db, customer_id)
        .await
        .map_err(ApiError::from)?
    else {
        return Ok(None);
    };
    let Some(user_id) = customer.sessionm_user_id else {
        return Ok(None);
    };
    let state = context::state(ctx)?;
    Ok(Some(
        context::loaders(ctx)?.wallets(state).get(&user_id).await?,
    ))
}

pub fn vouchers_of(lookup: Option<Lookup>) -> Vec<VoucherObject> {
    lookup
        .map(|l| l.offers.into_iter().map(VoucherObject).collect())
        .unwrap_or_default()
}

#[derive(Default)]
pub struct VoucherQuery;

#[Object]
impl VoucherQuery {
    /// Every voucher the signed-in customer holds, expired ones included so the app can
    /// show them greyed out.
    async fn vouchers(&self, ctx: &Context<'_>) -> Result<Vec<VoucherObject>> {
        let customer = context::customer(ctx)?;
        Ok(vouchers_of(wallet(ctx, customer).await?))
    }
}
