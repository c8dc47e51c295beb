//! One retry policy for every wait after a failed try (an upstream call's inline retries,
//! a pending SessionM request, a flow step, a job, a busy job, the start's store check,
//! the order-event listener's reconnection): exponential from a base, capped, with
//! jitter so the retries of many callers spread out instead of arriving together.

use std::time::Duration;

/// How the delay is spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the exponential delay (a flow step's own schedule, kept in its row).
    None,
    /// The delay plus up to this percentage of it.
    Added(u32),
    /// Between half the delay and the whole of it ("equal jitter").
    Equal,
}

/// `base × 2^(retry − 1)`, at most `max`, then jittered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub jitter: Jitter,
}

impl RetryPolicy {
    pub const fn new(base: Duration, max: Duration, jitter: Jitter) -> Self {
        Self { base, max, jitter }
    }

    /// The wait before retry number `retry` (1 is the first retry; 0 counts as 1).
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let exact = self
            .base
            .saturating_mul(2_u32.saturating_pow(exponent))
            .min(self.max);
        let millis = u64::try_from(exact.as_millis()).unwrap_or(u64::MAX);
        let jittered = match self.jitter {
            Jitter::None => millis,
            Jitter::Added(percent) => {
                millis.saturating_add(fastrand::u64(0..=millis * u64::from(percent) / 100))
            }
            Jitter::Equal => millis / 2 + fastrand::u64(0..=millis / 2),
        };
        Duration::from_millis(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap_within_their_jitter() {
        let exact = RetryPolicy::new(ms(200), ms(60_000), Jitter::None);
        assert_eq!(exact.delay(0), ms(200));
        assert_eq!(exact.delay(1), ms(200));
        assert_eq!(exact.delay(2), ms(400));
        assert_eq!(exact.delay(12), ms(60_000));
        assert_eq!(exact.delay(u32::MAX), ms(60_000));
        for _ in 0..100 {
            let added = RetryPolicy::new(ms(50), ms(1_000), Jitter::Added(50)).delay(3);
            assert!((ms(200)..=ms(300)).contains(&added), "{added:?}");
            let equal = RetryPolicy::new(ms(250), ms(300_000), Jitter::Equal).delay(10);
            assert!((ms(64_000)..=ms(128_000)).contains(&equal), "{equal:?}");
        }
    }
}
