//! The signed-in customer's SessionM vouchers. However many fields of one request ask for
//! them, SessionM is asked once: the wallet is loaded through a per-request DataLoader.

use super::{context, errors::ApiError, loaders::LoadError, scalars::MoneyObject};
use crate::{
    store,
    upstream::sessionm::{DiscountKind, Lookup, Offer, OfferStatus, SessionmClient},
};
use async_graphql::{
    Context, Enum, ID, Object, Result, SimpleObject,
    dataloader::{DataLoader, HashMapCache, Loader},
};
use std::{collections::HashMap, sync::Arc};

/// A SessionM user id, so a wallet can never be looked up by another kind of id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoyaltyUserId(pub String);

pub struct WalletLoader {
    sessionm: SessionmClient,
}

impl WalletLoader {
    pub fn new(sessionm: &SessionmClient) -> DataLoader<Self, HashMapCache> {
        DataLoader::with_cache(
            Self {
                sessionm: sessionm.clone(),
            },
            tokio::spawn,
            HashMapCache::default(),
        )
    }
}

impl Loader<LoyaltyUserId> for WalletLoader {
    type Value = Lookup;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[LoyaltyUserId],
    ) -> Result<HashMap<LoyaltyUserId, Lookup>, LoadError> {
        // SessionM looks wallets up one member at a time; a request only ever asks for one.
        let mut wallets = HashMap::with_capacity(keys.len());
        for key in keys {
            let request_id = uuid::Uuid::new_v4().to_string();
            let lookup = self
                .sessionm
                .lookup(&key.0, None, &request_id)
                .await
                .map_err(Arc::new)?;
            wallets.insert(key.clone(), lookup);
        }
        Ok(wallets)
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "VoucherDiscountKind")]
pub enum VoucherKind {
    /// One item free (the most expensive one in the order).
    FreeItem,
    FixedAmount,
    Percentage,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum VoucherStatus {
    Available,
    /// Held by an order being paid for.
    Locked,
    Redeemed,
    Expired,
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
            },
            amount: discount.amount.clone().map(MoneyObject),
            percentage: discount.percentage,
        }
    }

    async fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.expires_at
    }

    async fn status(&self) -> VoucherStatus {
        match self.0.status {
            OfferStatus::Available => VoucherStatus::Available,
            OfferStatus::Locked => VoucherStatus::Locked,
            OfferStatus::Redeemed => VoucherStatus::Redeemed,
            OfferStatus::Expired => VoucherStatus::Expired,
        }
    }
}

/// The wallet of a customer by id: empty while their SessionM account is being linked.
pub async fn wallet(ctx: &Context<'_>, customer_id: &str) -> Result<Option<Lookup>> {
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
    let loaders = context::loaders(ctx)?;
    Ok(loaders
        .wallets
        .load_one(LoyaltyUserId(user_id))
        .await
        .map_err(ApiError::from)?)
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
        Ok(vouchers_of(wallet(ctx, customer.as_str()).await?))
    }
}
