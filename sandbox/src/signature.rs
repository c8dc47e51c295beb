//! Signing the webhooks the simulators send, the sender's side of the scheme Stripe
//! documents and Okya's contract copies (`docs/upstreams/okya.md`, "Webhook to us"):
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{raw body}")>`.
//!
//! Only the receiver verifies, so only signing lives here; the service's verifier and this
//! signer meet in the tests that deliver a simulator's webhook to the service.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The signature header's value for `body` sent at `timestamp` (unix seconds), signed with
/// `secret`: `t=1764068760,v1=5f2b…`.
pub fn header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // The signed payload is the timestamp, a full stop, and the raw body.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in [timestamp.to_string().as_bytes(), b".", body] {
        mac.update(part);
    }
    let digest = mac.finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value computed independently: `printf '1700000000.{"id":"evt_1"}' |
    /// openssl dgst -sha256 -hmac whsec_test`.
    #[test]
    fn the_header_is_stripes_scheme() {
        assert_eq!(
            header("whsec_test", 1_700_000_000, br#"{"id":"evt_1"}"#),
            "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
        );
    }
}
