//! Customer contact details, validated at the boundary.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An email address, trimmed and lower-cased. The check is deliberately modest (one `@`,
/// a dotted domain, no spaces): the confirmation code is the real proof.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Option<Self> {
        let email = raw.trim().to_ascii_lowercase();
        let (local, domain) = email.split_once('@')?;
        let ok = email.len() <= 254
            && !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@')
            && email.chars().all(|c| c.is_ascii_graphic());
        ok.then_some(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number in E.164: `+`, then 8 to 15 digits, the first not zero. Spaces, dashes
/// and brackets that people type are removed first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Option<Self> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let digits = compact.strip_prefix('+')?;
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        ok.then_some(Self(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A first or last name: trimmed, 1 to 50 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonName(String);

impl PersonName {
    pub const MAX_CHARS: usize = 50;

    pub fn parse(raw: &str) -> Option<Self> {
        let name = raw.trim();
        let count = name.chars().count();
        let ok = (1..=Self::MAX_CHARS).contains(&count) && !name.chars().any(char::is_control);
        ok.then(|| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada@@example.com",
            "ada@.example.com",
            "ada@example..com",
        ] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn phones_are_e164() {
        assert_eq!(
            Phone::parse("+1 (626) 555-0100").unwrap().as_str(),
            "+16265550100"
        );
        assert_eq!(Phone::parse("+6591234567").unwrap().as_str(), "+6591234567");
        for bad in [
            "",
            "6265550100",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+1626555O100",
        ] {
            assert!(Phone::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(PersonName::parse("  Zoë ").unwrap().as_str(), "Zoë");
        assert!(PersonName::parse("   ").is_none());
        assert!(PersonName::parse(&"a".repeat(51)).is_none());
        assert!(PersonName::parse(&"é".repeat(50)).is_some());
        assert!(PersonName::parse("a\u{0}b").is_none());
    }
}
