//! The bodies of the fuzz targets in `fuzz/` (`cargo fuzz run okya_webhook`, …), kept in
//! the library so the normal test suite runs the very same code on stable Rust, over the
//! seed corpus in `fuzz/corpus/` and proptest's bytes. Not an API: each function takes
//! arbitrary bytes, runs what a webhook delivery runs before it reaches the database (the
//! signature check, the envelope, the typed event), and panics only when a property
//! fails, which is a bug.

use crate::{
    config::sandbox_credentials,
    flows::place_order::stripe_intent_id,
    http::webhooks::parse_envelope,
    upstream::{okya::orders::OrderEvent, signature, stripe::PaymentIntent},
};
use secrecy::SecretString;

/// The clock every target checks signatures against (any fixed instant does).
const NOW: i64 = 1_800_000_000;
const TOLERANCE_SECS: u64 = 300;

/// Splits a fuzz input into a signature header (up to the first newline, when it is
/// UTF-8, as `HeaderValue::to_str` must be) and a body (the rest).
fn header_and_body(data: &[u8]) -> (Option<&str>, &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(at) => (std::str::from_utf8(&data[..at]).ok(), &data[at + 1..]),
        None => (None, data),
    }
}

/// What both webhook endpoints share: the header is checked (any answer but a panic is
/// fine), and the body signed with the real secret at `NOW` must verify, while the same
/// signature over a different body or outside the tolerance must not.
fn check_signature(header: Option<&str>, body: &[u8], secret: &str) {
    let secrets = [SecretString::from(secret)];
    if let Some(header) = header {
        let _ = signature::verify(header, body, &secrets, NOW, TOLERANCE_SECS);
    }
    let signed = signature::sign(secret, NOW, body);
    assert_eq!(
        signature::verify(&signed, body, &secrets, NOW, TOLERANCE_SECS),
        Ok(()),
        "a body signed with the secret must verify"
    );
    let mut other = body.to_vec();
    other.push(b' ');
    assert_eq!(
        signature::verify(&signed, &other, &secrets, NOW, TOLERANCE_SECS),
        Err(signature::SignatureError::Mismatch),
        "a signature must not verify another body"
    );
    let late = NOW + i64::try_from(TOLERANCE_SECS).unwrap_or(i64::MAX) + 1;
    assert_eq!(
        signature::verify(&signed, body, &secrets, late, TOLERANCE_SECS),
        Err(signature::SignatureError::Stale),
        "a signature outside the tolerance must be stale"
    );
}

/// `POST /webhooks/okya`: `X-Okya-Signature` header, newline, body. The body is then read
/// as if its signature held (a fuzzer cannot forge an HMAC): the envelope, the
/// `order.updated` event and what the order row takes from it.
pub fn okya_webhook(data: &[u8]) {
    let (header, body) = header_and_body(data);
    check_signature(header, body, sandbox_credentials::OKYA_WEBHOOK_SECRET);
    let Ok(envelope) = parse_envelope(body) else {
        return;
    };
    assert!(!envelope.id.is_empty() && envelope.id.len() <= 200);
    assert!(envelope.event_type.len() <= 64);
    // The job reads the stored event back: what was stored must read the same.
    let stored = envelope.event.to_string();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).ok(),
        Some(envelope.event.clone()),
        "a stored event must read back as itself"
    );
    if let Ok(event) = serde_json::from_value::<OrderEvent>(envelope.event) {
        let order = event.data.order;
        let _ = order.state();
        for amount in [&order.subtotal, &order.discount, &order.tax, &order.total] {
            if let Ok(money) = amount.to_money() {
                let _ = money.to_decimal_string();
            }
        }
    }
}

/// `POST /webhooks/stripe`: `Stripe-Signature` header, newline, body; then the envelope,
/// the intent the event is about, and the intent as the Stripe client reads one.
pub fn stripe_webhook(data: &[u8]) {
    let (header, body) = header_and_body(data);
    check_signature(header, body, sandbox_credentials::STRIPE_WEBHOOK_SECRET);
    let Ok(envelope) = parse_envelope(body) else {
        return;
    };
    if let Some(intent) = stripe_intent_id(&envelope.event) {
        // Looked up in the database as given: any string is a valid (unknown) key.
        let _ = intent.len();
    }
    let _ = serde_json::from_value::<PaymentIntent>(envelope.event["data"]["object"].clone());
}

/// The signature scheme alone, with everything taken from the input: a secret, a
/// timestamp, a body and a header. Signing and verifying agree for every secret, time and
/// body; a tag never verifies under another secret.
pub fn signature_scheme(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let secret = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let header = std::str::from_utf8(parts.next().unwrap_or_default()).ok();
    let body = parts.next().unwrap_or_default();
    let timestamp = body
        .iter()
        .take(8)
        .fold(0_i64, |t, b| t.wrapping_shl(8) | i64::from(*b));
    let secrets = [SecretString::from(secret.clone())];
    if let Some(header) = header {
        for now in [timestamp, NOW, i64::MIN, i64::MAX] {
            let _ = signature::verify(header, body, &secrets, now, TOLERANCE_SECS);
        }
    }
    let signed = signature::sign(&secret, timestamp, body);
    assert_eq!(
        signature::verify(&signed, body, &secrets, timestamp, 0),
        Ok(()),
        "sign then verify, at the signing instant"
    );
    let other = [SecretString::from(format!("{secret}x"))];
    assert_eq!(
        signature::verify(&signed, body, &other, timestamp, 0),
        Err(signature::SignatureError::Mismatch),
        "another secret must not verify"
    );
}

#[cfg(test)]
mod tests {
    //! The fuzz targets' bodies on stable: over every file of the seed corpus (and the
    //! crashes fuzzing once found, kept there as regressions), then over proptest's bytes.
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the seed corpus {}: {e}", dir.display()))
            .map(|entry| std::fs::read(entry.expect("a corpus entry").path()).expect("a seed"))
            .collect();
        inputs.sort();
        assert!(inputs.len() >= 3, "a seed corpus for {target}");
        inputs
    }

    #[test]
    fn the_okya_seed_corpus_passes() {
        for input in corpus("okya_webhook") {
            okya_webhook(&input);
        }
    }

    #[test]
    fn the_stripe_seed_corpus_passes() {
        for input in corpus("stripe_webhook") {
            stripe_webhook(&input);
        }
    }

    #[test]
    fn the_signature_seed_corpus_passes() {
        for input in corpus("signature_scheme") {
            signature_scheme(&input);
        }
    }

    /// The seeds reach the deep end: at least one Okya seed is a whole `order.updated`
    /// event, so the targets exercise the typed parse and not only the refusals.
    #[test]
    fn the_okya_seeds_include_a_whole_event() {
        let whole = corpus("okya_webhook").iter().any(|input| {
            let (_, body) = header_and_body(input);
            parse_envelope(body)
                .ok()
                .and_then(|e| serde_json::from_value::<OrderEvent>(e.event).ok())
                .is_some()
        });
        assert!(whole, "no seed parses as an OrderEvent");
    }

    /// Bytes that are mostly JSON-like, so generated inputs get past `serde_json` often.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b",".to_vec()),
            Just(b":".to_vec()),
            Just(b"\"id\"".to_vec()),
            Just(b"\"type\"".to_vec()),
            Just(b"\"data\"".to_vec()),
            Just(b"\"object\"".to_vec()),
            Just(b"\"order\"".to_vec()),
            Just(b"\"pi_1\"".to_vec()),
            Just(b"\"version\"".to_vec()),
            Just(b"null".to_vec()),
            Just(b"-9223372036854775808".to_vec()),
            Just(b"1e999".to_vec()),
            "\"[^\"]{0,8}\"".prop_map(String::into_bytes),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(token, 0..40).prop_map(|parts| parts.concat())
    }

    fn input() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            ("(t=-?[0-9]{0,12}|v1=[0-9a-f]{0,70}|,|x=y){0,6}", jsonish())
                .prop_map(|(header, body)| [header.into_bytes(), b"\n".to_vec(), body].concat()),
        ]
    }

    proptest! {
        #[test]
        fn okya_webhook_never_panics(data in input()) {
            okya_webhook(&data);
        }

        #[test]
        fn stripe_webhook_never_panics(data in input()) {
            stripe_webhook(&data);
        }

        #[test]
        fn signature_scheme_holds(data in prop::collection::vec(any::<u8>(), 0..200)) {
            signature_scheme(&data);
        }
    }
}
