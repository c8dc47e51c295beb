//! Webhook signatures in Stripe's scheme, which Okya's contract copies:
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{raw body}")>[,v1=…]`.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header missing or malformed")]
    Malformed,
    #[error("signature timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The header value that signs `body` at `timestamp` with `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Length of a `v1` signature: an HMAC-SHA256 tag.
const SIGNATURE_LEN: usize = 32;

/// Verifies `header` over the raw `body` against any of `secrets` (several while one is
/// rotated), rejecting timestamps more than `tolerance_secs` from `now`. Comparison is
/// constant-time.
///
/// The body is hashed once per secret, whatever the header holds: a `v1` that is not a
/// 32-byte hex tag is ignored, and every candidate is compared with the one tag per
/// secret, so a header of thousands of `v1=` entries costs no more than one.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => {
                if let Ok(bytes) = hex::decode(sig)
                    && bytes.len() == SIGNATURE_LEN
                {
                    candidates.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // A clone of the keyed state holds the body's hash: checking a candidate is one
        // finalisation, not another pass over the body.
        if candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(*s)).collect()
    }

    #[test]
    fn a_signature_verifies_within_tolerance_only() {
        let header = sign("whsec_a", 1_000, b"{\"id\":1}");
        assert_eq!(
            verify(&header, b"{\"id\":1}", &secrets(&["whsec_a"]), 1_100, 300),
            Ok(())
        );
        assert_eq!(
            verify(&header, b"{\"id\":1}", &secrets(&["whsec_a"]), 1_400, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header, b"{\"id\":2}", &secrets(&["whsec_a"]), 1_100, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_any_listed_secret_and_any_listed_signature() {
        let old = sign("whsec_old", 50, b"x");
        let new = sign("whsec_new", 50, b"x");
        let both = format!("{new},v1={}", old.split("v1=").nth(1).unwrap());
        assert_eq!(
            verify(&old, b"x", &secrets(&["whsec_new", "whsec_old"]), 50, 300),
            Ok(())
        );
        assert_eq!(
            verify(&both, b"x", &secrets(&["whsec_old"]), 50, 300),
            Ok(())
        );
        assert_eq!(
            verify(&old, b"x", &secrets(&["whsec_other"]), 50, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let tag = "ab".repeat(32);
        for header in [
            "",
            "t=abc,v1=00",
            "v1=00",
            "t=5",
            "t=5,v1=zz",
            // Hex, but not a 32-byte tag: never hashed against.
            "t=5,v1=00",
            "t=5,v1=",
            &format!("t=5,v1={tag}00"),
        ] {
            assert_eq!(
                verify(header, b"x", &secrets(&["s"]), 5, 300),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        assert_eq!(
            verify(&format!("t=5,v1={tag}"), b"x", &secrets(&["s"]), 5, 300),
            Err(SignatureError::Mismatch)
        );
    }

    /// A header stuffed with candidates (a webhook endpoint is public) is checked against
    /// one tag per secret; the right tag among thousands of wrong ones still verifies.
    #[test]
    fn many_candidates_cost_one_hash_and_still_find_the_tag() {
        let body = vec![b'x'; 64 * 1024];
        let good = sign("whsec_a", 50, &body);
        let junk = format!(",v1={}", "00".repeat(32)).repeat(2_000);
        let header = format!("t=50{junk},{}", good.split_once(',').unwrap().1);
        assert_eq!(
            verify(&header, &body, &secrets(&["whsec_a"]), 50, 300),
            Ok(())
        );
    }
}
