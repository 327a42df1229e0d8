//! Retry decisions (back-off growth, `Retry-After` parsing) and the per-tenant request budget.
//!
//! Microsoft throttles each tenant (and PublisherIdentifier) at a baseline of 2,000 requests per
//! minute and answers 429 with `Retry-After` beyond it. [`RequestBudget`] keeps one tenant's client
//! below that on its own (a GCRA limiter at [`DEFAULT_REQUESTS_PER_MINUTE`] with a small burst), and
//! when a 429 arrives anyway it holds every call of that tenant until the `Retry-After` has passed.
//! Each tenant has its own budget, so one tenant being throttled never slows another.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use governor::clock::{Clock, DefaultClock};

use crate::core::settings::Section;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Requests per minute one tenant's client allows itself: 10 % under Microsoft's baseline quota of
/// 2,000, leaving room for other tools of the same tenant and PublisherIdentifier.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 1_800;

/// Requests that may go out back to back before the steady rate applies. Over any minute the
/// limiter allows at most `burst + rate`, so 100 keeps the worst minute at 1,900 (< 2,000).
pub const DEFAULT_BURST: u32 = 100;

/// Pause after a 429 that carried no (readable) `Retry-After`.
pub const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(10);

/// Longest pause honoured from one `Retry-After`: a far-future HTTP date must not stop a tenant for
/// good; the call after the cap meets the quota again and is told again.
pub const MAX_THROTTLE_PAUSE: Duration = Duration::from_secs(15 * 60);

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

/// How many Management Activity API calls one tenant allows itself (`requests_per_minute`,
/// `request_burst`). Microsoft's quota is per tenant and grows with its seats, so it is
/// configurable; the default stays under the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBudgetConfig {
    /// Steady rate (`requests_per_minute`).
    pub per_minute: u32,
    /// Calls that may go out back to back before the rate applies (`request_burst`).
    pub burst: u32,
}

/// Far above any tenant's quota; a larger value is a typo.
const MAX_REQUESTS_PER_MINUTE: u64 = 1_000_000;

impl RequestBudgetConfig {
    /// `requests_per_minute` and `request_burst` of one level, falling back to `inherited`. A burst
    /// not given follows the rate (at most [`DEFAULT_BURST`], never above the rate) unless an
    /// upper level gave one.
    pub fn resolve(
        per_minute: Option<u64>,
        burst: Option<u64>,
        inherited: RequestBudgetConfig,
        burst_inherited: bool,
        s: &mut Section,
    ) -> RequestBudgetConfig {
        let per_minute = match per_minute {
            Some(v) if v == 0 || v > MAX_REQUESTS_PER_MINUTE => {
                s.problem(
                    "requests_per_minute",
                    format!("is {v}, outside 1..={MAX_REQUESTS_PER_MINUTE}"),
                    format!(
                        "use the calls per minute Microsoft allows this tenant, e.g. {DEFAULT_REQUESTS_PER_MINUTE} (the default, under the baseline quota of 2000)"
                    ),
                );
                inherited.per_minute
            }
            Some(v) => u32::try_from(v).unwrap_or(inherited.per_minute),
            None => inherited.per_minute,
        };
        let burst = match burst {
            Some(v) if v == 0 || v > u64::from(per_minute) => {
                s.problem(
                    "request_burst",
                    format!("is {v}, outside 1..={per_minute} (requests_per_minute)"),
                    format!("use a burst below the rate, e.g. {DEFAULT_BURST} (the default)"),
                );
                DEFAULT_BURST.min(per_minute)
            }
            Some(v) => u32::try_from(v).unwrap_or(DEFAULT_BURST),
            None if burst_inherited => inherited.burst.min(per_minute),
            None => DEFAULT_BURST.min(per_minute),
        };
        RequestBudgetConfig { per_minute, burst }
    }
}

impl Default for RequestBudgetConfig {
    fn default() -> Self {
        RequestBudgetConfig {
            per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            burst: DEFAULT_BURST,
        }
    }
}

/// One tenant's request budget: a rate limiter plus the pause a 429 imposes. Cheap to share
/// behind a reference; every method takes `&self`.
pub struct RequestBudget<C: Clock = DefaultClock> {
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// Until when Microsoft asked this tenant to stop (tokio clock, so waits are plain sleeps).
    paused_until: Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget").finish_non_exhaustive()
    }
}

impl RequestBudget {
    /// `per_minute` requests per minute with [`DEFAULT_BURST`] (or less, when the rate is lower);
    /// 0 is taken as 1.
    pub fn per_minute(per_minute: u32) -> Self {
        Self::new(
            per_minute,
            Duration::from_secs(60),
            DEFAULT_BURST.min(per_minute),
        )
    }

    /// `requests` per `period`, `burst` of them back to back (both at least 1; a zero period is
    /// taken as one millisecond).
    pub fn new(requests: u32, period: Duration, burst: u32) -> Self {
        Self::with_clock(requests, period, burst, DefaultClock::default())
    }
}

impl Default for RequestBudget {
    fn default() -> Self {
        Self::per_minute(DEFAULT_REQUESTS_PER_MINUTE)
    }
}

impl<C: Clock + Clone> RequestBudget<C> {
    /// As [`RequestBudget::new`] on a given clock (tests use governor's fake clock).
    pub fn with_clock(requests: u32, period: Duration, burst: u32, clock: C) -> Self {
        let requests = requests.max(1);
        let interval = period.max(Duration::from_millis(1)) / requests;
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        RequestBudget {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            paused_until: Mutex::new(None),
        }
    }

    /// Takes one request from the budget now, or says how long until one is available (the
    /// longer of the rate wait and a 429 pause). Taking nothing when it answers `Err`.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        if let Some(left) = self.paused_for() {
            return Err(left);
        }
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Waits until this tenant may send one more request, then takes it from the budget.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire() {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }

    /// Holds every call until `for_at_least` from now has passed (a 429's `Retry-After`). An
    /// earlier end never shortens a longer pause already in force.
    pub fn pause(&self, for_at_least: Duration) {
        let until = tokio::time::Instant::now() + for_at_least.min(MAX_THROTTLE_PAUSE);
        let mut p = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    /// How much of a 429 pause is left, if any.
    pub fn paused_for(&self) -> Option<Duration> {
        let p = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let left = p.map(|u| u.saturating_duration_since(tokio::time::Instant::now()))?;
        (!left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn budget_allows_the_burst_then_the_rate() {
        let clock = FakeRelativeClock::default();
        // 10 per second, 3 back to back: one every 100 ms after the burst.
        let b = RequestBudget::with_clock(10, Duration::from_secs(1), 3, clock.clone());
        for _ in 0..3 {
            assert_eq!(b.try_acquire(), Ok(()));
        }
        let wait = b.try_acquire().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        clock.advance(Duration::from_millis(99));
        assert!(b.try_acquire().is_err(), "not before the interval");
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.try_acquire(), Ok(()));
        assert!(b.try_acquire().is_err(), "one per interval");
        // Idle time refills the burst, never beyond it.
        clock.advance(Duration::from_secs(10));
        for _ in 0..3 {
            assert_eq!(b.try_acquire(), Ok(()));
        }
        assert!(b.try_acquire().is_err());
    }

    #[test]
    fn default_budget_stays_under_microsofts_quota() {
        let clock = FakeRelativeClock::default();
        let b = RequestBudget::with_clock(
            DEFAULT_REQUESTS_PER_MINUTE,
            Duration::from_secs(60),
            DEFAULT_BURST,
            clock.clone(),
        );
        // Greedy caller for one simulated minute, 1 ms steps.
        let mut sent = 0u32;
        for _ in 0..60_000 {
            while b.try_acquire().is_ok() {
                sent += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        assert!(sent < 2_000, "{sent} requests in one minute");
        assert!(
            sent >= DEFAULT_REQUESTS_PER_MINUTE,
            "{sent} requests in one minute"
        );
    }

    #[tokio::test]
    async fn a_pause_holds_every_call_until_it_passes() {
        let b = RequestBudget::new(1_000, Duration::from_secs(1), 10);
        b.pause(Duration::from_millis(150));
        b.pause(Duration::from_millis(10)); // a shorter pause does not cut the longer one
        let left = b.paused_for().unwrap();
        assert!(left > Duration::from_millis(100), "{left:?}");
        assert!(b.try_acquire().is_err());
        let start = std::time::Instant::now();
        b.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(140));
        assert_eq!(b.paused_for(), None);
        b.pause(Duration::from_secs(365 * 24 * 3600));
        assert!(b.paused_for().unwrap() <= MAX_THROTTLE_PAUSE);
    }

    #[tokio::test]
    async fn acquire_waits_for_the_rate_with_a_short_period() {
        let b = RequestBudget::new(5, Duration::from_millis(100), 1);
        let start = std::time::Instant::now();
        for _ in 0..4 {
            b.acquire().await;
        }
        // 1 immediately, then 3 at 20 ms intervals.
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

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
