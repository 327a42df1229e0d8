//! The database's clock as this replica expects it, so that a step of that clock does not end
//! other replicas' leases early. Leases end at a time on the database's clock; if that clock
//! jumps forward by more than a lease's remaining life, every lease looks expired at once and
//! each replica would take over blobs and tenants whose holders are still working on them.
//!
//! Each reading of the database's time (a tenant-lease round, `Store::now`) is kept with the
//! moment, on this replica's monotonic clock, its call was sent. From it, the database's time at
//! any later moment is bounded above: the reading plus the monotonic time elapsed, plus
//! [`TOLERANCE`]. Takeovers are judged against the smaller of that bound and the database's own
//! clock. A reading above the bound is a forward step: the basis from before the step is kept
//! for the longest lease in use, by which time every live holder has renewed on the stepped
//! clock, and then the new clock is accepted. A step backwards needs nothing: leases then only
//! look longer, which delays a takeover by the step.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Slack over the monotonic bound, for the call's own time and the clocks' rates.
pub const TOLERANCE: Duration = Duration::from_secs(1);

/// This replica's expectation of the database's clock (see the module doc).
#[derive(Debug, Default)]
pub struct LeaseClock {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last accepted reading (database ms) and when its call was sent.
    base: Option<(i64, Instant)>,
    /// After a forward step: the step (ms) and until when the basis before it is kept.
    held: Option<(i64, Instant)>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl State {
    fn bound(&self, at: Instant) -> Option<i64> {
        let (db, sent) = self.base?;
        Some(db.saturating_add(ms(at.saturating_duration_since(sent))))
    }
}

impl LeaseClock {
    /// The latest database time (ms) against which another replica's lease may be judged
    /// expired by a call sent at `at`; `None` before the first reading (no cap).
    pub fn cap(&self, at: Instant) -> Option<i64> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.bound(at).map(|b| b.saturating_add(ms(TOLERANCE)))
    }

    /// A reading: the database answered `db_ms` to a call sent at `sent` and answered at
    /// `answered`. `hold` is how long the basis from before a forward step is kept: the
    /// longest lease in use. Returns the step (ms) when this reading revealed a new one.
    pub fn observe(
        &self,
        db_ms: i64,
        sent: Instant,
        answered: Instant,
        hold: Duration,
    ) -> Option<i64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expected = state.bound(answered);
        if let Some((step, until)) = state.held {
            if answered < until {
                return None;
            }
            info!(
                step_ms = step,
                "the database's clock is trusted again after its step forward: leases are judged by it"
            );
            state.held = None;
            state.base = Some((db_ms, sent));
            return None;
        }
        match expected {
            Some(bound) if db_ms > bound.saturating_add(ms(TOLERANCE)) => {
                let step = db_ms - bound;
                warn!(
                    step_ms = step,
                    hold_secs = hold.as_secs(),
                    "the database's clock stepped forward: other replicas' leases are judged by its time before the step until every holder has renewed (fix the database server's time synchronisation)"
                );
                state.held = Some((step, answered + hold));
                Some(step)
            }
            _ => {
                state.base = Some((db_ms, sent));
                None
            }
        }
    }

    /// The step being held off (ms), if any: for `/status`.
    pub fn held_step_ms(&self) -> Option<i64> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .held
            .map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(30);

    #[test]
    fn no_cap_before_the_first_reading() {
        assert_eq!(LeaseClock::default().cap(Instant::now()), None);
    }

    #[test]
    fn the_cap_follows_the_monotonic_clock_from_the_last_reading() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        c.observe(1_000_000, t0, t0 + Duration::from_millis(5), HOLD);
        assert_eq!(
            c.cap(t0 + Duration::from_secs(10)),
            Some(1_000_000 + 10_000 + 1_000)
        );
    }

    #[test]
    fn a_forward_step_is_held_off_for_the_longest_lease_then_accepted() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        c.observe(1_000_000, t0, t0, HOLD);
        // 5 s later the database says 65 s later: a 60 s step.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(c.observe(1_065_000, t1, t1, HOLD), Some(60_000));
        assert_eq!(c.held_step_ms(), Some(60_000));
        // Judged by the time before the step, however many readings come meanwhile.
        let t2 = t0 + Duration::from_secs(20);
        assert_eq!(c.observe(1_080_000, t2, t2, HOLD), None);
        assert_eq!(c.cap(t2), Some(1_000_000 + 20_000 + 1_000));
        // Once every holder has renewed, the stepped clock is the basis.
        let t3 = t1 + HOLD;
        c.observe(1_095_000, t3, t3, HOLD);
        assert_eq!(c.held_step_ms(), None);
        assert_eq!(c.cap(t3), Some(1_095_000 + 1_000));
    }

    #[test]
    fn a_slow_call_or_a_step_back_is_no_step() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        c.observe(1_000_000, t0, t0, HOLD);
        // Sent 1 s later, answered 4 s after that: the database's 4.5 s is within the bound.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            c.observe(1_004_500, t1, t1 + Duration::from_secs(4), HOLD),
            None
        );
        // A step back is taken as it is: leases only look longer.
        let t2 = t0 + Duration::from_secs(6);
        assert_eq!(c.observe(900_000, t2, t2, HOLD), None);
        assert_eq!(c.cap(t2), Some(901_000));
    }
}
