use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest id accepted from a client; upstream ids are far shorter, and the cap keeps
/// hostile input out of upstream URLs and logs.
const MAX_ID_LEN: usize = 128;

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts a client-supplied id: non-empty, bounded, and made only of characters
            /// that are safe in a URL path segment.
            pub fn parse(raw: &str) -> Option<Self> {
                let ok = !raw.is_empty()
                    && raw.len() <= MAX_ID_LEN
                    && raw
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                ok.then(|| Self(raw.to_owned()))
            }

            /// Wraps an id that an upstream system gave us.
            pub fn from_upstream(raw: String) -> Self {
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// An Okya store.
    StoreId
);
opaque_id!(
    /// An Okya catalogue product.
    ProductId
);
opaque_id!(
    /// One option of a product's modifier group (a size, a milk, a syrup).
    ModifierOptionId
);
opaque_id!(
    /// An Okya cart.
    CartId
);
opaque_id!(
    /// One line of an Okya cart.
    CartLineId
);
opaque_id!(
    /// A customer: the id of their Okya Auth account.
    CustomerId
);
opaque_id!(
    /// One of our orders (one Place Order flow); Okya's order id is kept beside it.
    OrderId
);

/// Defines a client-supplied value with one rule: `$max` bytes at most, every byte
/// passing `$ok`. Each type has exactly one `parse`, so a limit is stated once.
macro_rules! checked_text {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, ok = $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Accepts a client's value, trimmed: non-empty, at most [`Self::MAX_LEN`]
            /// bytes, every byte allowed.
            pub fn parse(raw: &str) -> Option<Self> {
                let raw = raw.trim();
                let allowed: fn(u8) -> bool = $ok;
                let ok = !raw.is_empty() && raw.len() <= $max && raw.bytes().all(allowed);
                ok.then(|| Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_text!(
    /// The app's key for one checkout attempt (a UUID, say): retries send the same one.
    IdempotencyKey,
    max = 200,
    ok = |b| !b.is_ascii_control()
);
checked_text!(
    /// A Stripe PaymentMethod id as the app sends it (`pm_…`); Stripe decides whether it
    /// exists.
    PaymentMethodId,
    max = 255,
    ok = |b| b.is_ascii_graphic()
);
checked_text!(
    /// A SessionM wallet entry (`user_offer_id`), as the app sends it back.
    VoucherId,
    max = 128,
    ok = |b| b.is_ascii_graphic()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_url_safe_ids_only() {
        assert!(ProductId::parse("prd_latte-1.2").is_some());
        assert!(ProductId::parse("").is_none());
        assert!(ProductId::parse("../admin").is_none());
        assert!(ProductId::parse("a b").is_none());
        assert!(ProductId::parse(&"x".repeat(129)).is_none());
    }
}
