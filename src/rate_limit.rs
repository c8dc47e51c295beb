//! Rate limits on what an attacker would repeat: codes sent and tried (per phone and per
//! client address), checkouts and declined payments (per customer and per client address:
//! card testing). Each limit is a GCRA bucket per key, `burst` requests at once and
//! `per_hour` in the long run (`rate_limits.*` settings).
//!
//! Two lines of defence, both GCRA:
//! - in process, `governor`'s keyed limiter answers a flood from memory, without touching
//!   the database. It allows twice the burst at twice the rate: it sees every request,
//!   the refused ones too, so at the same rate it would drift ahead of the shared bucket
//!   and refuse a client that waited the shared bucket's hint. Looser, it only ever cuts
//!   off the part of a flood the shared bucket would refuse anyway;
//! - what passes it draws on the bucket in the database (`store::rate_limits`), which every
//!   instance on that database shares, so N instances do not allow N times the rate. That
//!   bucket is the limit; its answer gives the hint.
//!
//! The client address is the socket's peer, or, when that peer is a trusted proxy
//! (`rate_limits.trusted_proxies`), the first address in `X-Forwarded-For` read from the
//! right that is not one: a client can put anything in that header, but only the part our
//! own proxies appended is believed.

use crate::{
    config::{ProxyNet, Rate, RateLimitSettings},
    store::{
        self, StoreError,
        rate_limits::{Draw, Verdict},
    },
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use http::HeaderMap;
use sea_orm::DatabaseConnection;
use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use strum::IntoEnumIterator;

/// Each limit, named as its setting (`rate_limits.<name>`) and as the prefix of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Limit {
    OtpSendPerAddress,
    OtpVerifyPerPhone,
    OtpVerifyPerAddress,
    CheckoutPerCustomer,
    CheckoutPerAddress,
    DeclinesPerCustomer,
    DeclinesPerAddress,
}

impl Limit {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The rate its setting gives it.
    pub fn rate(self, settings: &RateLimitSettings) -> Rate {
        match self {
            Limit::OtpSendPerAddress => settings.otp_send_per_address,
            Limit::OtpVerifyPerPhone => settings.otp_verify_per_phone,
            Limit::OtpVerifyPerAddress => settings.otp_verify_per_address,
            Limit::CheckoutPerCustomer => settings.checkout_per_customer,
            Limit::CheckoutPerAddress => settings.checkout_per_address,
            Limit::DeclinesPerCustomer => settings.declines_per_customer,
            Limit::DeclinesPerAddress => settings.declines_per_address,
        }
    }
}

/// Who a request comes from, as far as the network can tell: the address it is limited
/// by. `None` when the transport gave no peer address (not over TCP); such a request is
/// limited by its phone or customer only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// The client behind `peer`: `peer` itself unless it is a trusted proxy, in which case
    /// the rightmost `X-Forwarded-For` entry that is not a trusted proxy (every header of
    /// that name, in order, read as one list). An entry that is not an address ends the
    /// walk at the last trusted hop: it was not written by one of ours.
    pub fn resolve(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[ProxyNet]) -> Self {
        let Some(peer) = peer.map(|p| canonical(p.ip())) else {
            return ClientAddr(None);
        };
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        if !is_trusted(&peer) {
            return ClientAddr(Some(peer));
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !is_trusted(&ip) {
                break;
            }
        }
        ClientAddr(Some(client))
    }

    /// The key the address is limited by: IPv4 as is, IPv6 by its /64, the block one
    /// subscriber is usually given (limiting single IPv6 addresses would let anyone with a
    /// /64 choose among 2^64 of them).
    pub fn key(&self) -> Option<String> {
        self.0.map(|ip| match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let net = ipnet::Ipv6Net::new(v6, 64).map(|n| n.trunc());
                net.map_or_else(|_| v6.to_string(), |n| n.to_string())
            }
        })
    }
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:1.2.3.4`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`), as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// Over a limit: `retry_after_secs` (at least 1) until one more request is let through.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate limit {limit} reached; retry after {retry_after_secs} s")]
    Limited {
        limit: &'static str,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whole seconds, rounded up, at least 1: a client that waits this long is served.
fn whole_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// How much looser the in-process line is than the shared one, in burst and in rate.
const LOCAL_SLACK: u32 = 2;

/// Checks between two sweeps of idle keys out of the in-process limiters.
const SWEEP_EVERY: u64 = 4_096;

/// The limits of one process, drawing on the shared buckets in `db`.
pub struct RateLimiter {
    db: DatabaseConnection,
    settings: RateLimitSettings,
    /// One in-process limiter per limit, in `Limit::iter()` order.
    local: Vec<(Limit, DefaultKeyedRateLimiter<String>)>,
    checks: AtomicU64,
}

impl RateLimiter {
    /// Limits with the rates of `settings` (validated: every burst and rate at least 1).
    pub fn new(db: DatabaseConnection, settings: &RateLimitSettings) -> Self {
        let local = Limit::iter()
            .map(|limit| {
                let rate = limit.rate(settings);
                let burst = NonZeroU32::new(rate.burst.saturating_mul(LOCAL_SLACK))
                    .unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(rate.interval() / LOCAL_SLACK)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(burst);
                (limit, DefaultKeyedRateLimiter::keyed(quota))
            })
            .collect();
        Self {
            db,
            settings: settings.clone(),
            local,
            checks: AtomicU64::new(0),
        }
    }

    /// The trusted proxies the client address is read through.
    pub fn trusted_proxies(&self) -> &[ProxyNet] {
        &self.settings.trusted_proxies
    }

    fn draw(&self, limit: Limit, add: bool) -> Draw {
        let rate = limit.rate(&self.settings);
        let interval_ms = i64::try_from(rate.interval().as_millis()).unwrap_or(i64::MAX / 4);
        Draw {
            interval_ms,
            limit_ms: interval_ms.saturating_mul(i64::from(rate.burst)),
            add_ms: if add { interval_ms } else { 0 },
        }
    }

    fn local(&self, limit: Limit) -> Option<&DefaultKeyedRateLimiter<String>> {
        self.local
            .iter()
            .find_map(|(l, limiter)| (*l == limit).then_some(limiter))
    }

    /// Takes one request from `subject`'s bucket of `limit` (a phone, a customer id, an
    /// address key), or refuses with the time until one would be let through.
    pub async fn take(&self, limit: Limit, subject: &str) -> Result<(), RateLimitError> {
        let key = format!("{}:{subject}", limit.name());
        if let Some(local) = self.local(limit) {
            if let Err(not_until) = local.check_key(&key) {
                let wait = not_until.wait_time_from(local.clock().now());
                return Err(self.refused(limit, subject, wait));
            }
            if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                for (_, limiter) in &self.local {
                    limiter.retain_recent();
                }
            }
        }
        self.shared(limit, subject, &key, true).await
    }

    /// Whether `subject` has room in `limit` for one more, without taking it: for a count
    /// of what went wrong (declines), checked before and recorded after.
    pub async fn check(&self, limit: Limit, subject: &str) -> Result<(), RateLimitError> {
        let key = format!("{}:{subject}", limit.name());
        self.shared(limit, subject, &key, false).await
    }

    /// Records one more against `subject` in `limit` whatever its room (a decline that
    /// happened cannot be refused).
    pub async fn record(&self, limit: Limit, subject: &str) -> Result<(), StoreError> {
        let key = format!("{}:{subject}", limit.name());
        let draw = Draw {
            limit_ms: i64::MAX / 4,
            ..self.draw(limit, true)
        };
        store::rate_limits::draw(&self.db, &key, now_ms(), draw).await?;
        Ok(())
    }

    async fn shared(
        &self,
        limit: Limit,
        subject: &str,
        key: &str,
        add: bool,
    ) -> Result<(), RateLimitError> {
        match store::rate_limits::draw(&self.db, key, now_ms(), self.draw(limit, add)).await? {
            Verdict::Allowed => Ok(()),
            Verdict::Refused { retry_after_ms } => {
                let wait = Duration::from_millis(u64::try_from(retry_after_ms).unwrap_or(1));
                Err(self.refused(limit, subject, wait))
            }
        }
    }

    fn refused(&self, limit: Limit, subject: &str, wait: Duration) -> RateLimitError {
        let retry_after_secs = whole_secs(wait);
        // The subject is a phone, a customer id or an address: identifiers an operator
        // needs to see abuse, never a code or a token.
        tracing::warn!(
            limit = limit.name(),
            subject,
            retry_after_secs,
            "rate limited"
        );
        RateLimitError::Limited {
            limit: limit.name(),
            retry_after_secs,
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(list: &[&str]) -> Vec<ProxyNet> {
        list.iter()
            .map(|s| ProxyNet::try_from((*s).to_owned()).unwrap())
            .collect()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn resolve(peer: &str, xff: &[&str], proxies: &[&str]) -> Option<String> {
        ClientAddr::resolve(
            Some(peer.parse().unwrap()),
            &forwarded(xff),
            &trusted(proxies),
        )
        .key()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(
            resolve("198.51.100.7:4000", &["203.0.113.9"], &[]),
            Some("198.51.100.7".into())
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_a_spoofed_entry_is_skipped() {
        // The client wrote 1.1.1.1 itself; our proxy appended the address it saw.
        assert_eq!(
            resolve("10.0.0.2:4000", &["1.1.1.1, 203.0.113.9"], &["10.0.0.0/8"]),
            Some("203.0.113.9".into())
        );
        // Two of our proxies in a row, the headers split over two lines.
        assert_eq!(
            resolve(
                "10.0.0.2:4000",
                &["1.1.1.1, 203.0.113.9", "10.0.0.3"],
                &["10.0.0.0/8"]
            ),
            Some("203.0.113.9".into())
        );
        // An untrusted peer's header counts for nothing.
        assert_eq!(
            resolve("192.0.2.1:4000", &["203.0.113.9"], &["10.0.0.0/8"]),
            Some("192.0.2.1".into())
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            resolve("10.0.0.2:4000", &["nonsense"], &["10.0.0.2"]),
            Some("10.0.0.2".into())
        );
        // No header: the proxy itself.
        assert_eq!(
            resolve("10.0.0.2:4000", &[], &["10.0.0.2"]),
            Some("10.0.0.2".into())
        );
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            resolve("[2001:db8:1:2:3:4:5:6]:443", &[], &[]),
            Some("2001:db8:1:2::/64".into())
        );
        assert_eq!(
            resolve("[::ffff:198.51.100.7]:443", &[], &[]),
            Some("198.51.100.7".into())
        );
        assert_eq!(
            resolve("[::1]:443", &["[2001:db8::9]:5555"], &["::1"]),
            Some("2001:db8::/64".into())
        );
    }

    #[test]
    fn waits_round_up_to_whole_seconds_of_at_least_one() {
        assert_eq!(whole_secs(Duration::ZERO), 1);
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(whole_secs(Duration::from_secs(120)), 120);
    }
}
