//! Pure retry decisions: back-off growth and `Retry-After` parsing.

use std::time::{Duration, SystemTime};

/// Exponential back-off for attempt `attempt` (0-based): `base · 2^attempt`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// `Retry-After` as delta-seconds or an HTTP date; `None` when absent or unreadable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(500);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(b, m, 0), Duration::from_millis(500));
        assert_eq!(backoff(b, m, 3), Duration::from_secs(4));
        assert_eq!(backoff(b, m, 30), m);
        assert_eq!(backoff(b, m, u32::MAX), m);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
