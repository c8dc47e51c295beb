//! Time as the database keeps it: milliseconds since the Unix epoch (`i64`), with
//! settings' `Duration`s converted once, here.

use std::time::Duration;

/// Milliseconds since the Unix epoch, the unit the database compares.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A duration in the database's unit, saturating (a setting too large for `i64`
/// milliseconds means "for ever", not a wrap to the past).
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_once_and_saturate() {
        assert_eq!(millis(Duration::from_secs(600)), 600_000);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
