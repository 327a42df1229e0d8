//! Back-pressure from an output that is down. After a retryable send failure the output's gate
//! closes: no worker claims or fetches a blob for it until a back-off has passed. Then one worker
//! sends a probe (a real blob); its success reopens the gate for every worker, its failure closes it
//! again for twice as long (up to [`MAX_PAUSE`]). Meanwhile the blobs stay queued untouched, in
//! arrival order, and Microsoft is not asked for content that nobody could deliver.
//!
//! The decisions are pure functions of the state and a given `now`; only [`OutputGate`] holds a
//! lock and wakes the workers when the gate opens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::mgmt_api::throttle::backoff;

/// The longest pause between two probes of an output that stays down.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Where a gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// Deliveries flow.
    Open,
    /// The output failed `failures` times in a row; nothing is sent before `until`.
    Closed { until: Instant, failures: u32 },
    /// One worker is trying the output again.
    Probing { failures: u32 },
}

/// What a worker holding a claimed blob may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Fetch and send as usual.
    Go,
    /// Fetch and send: this delivery decides whether the gate opens again.
    Probe,
    /// Give the blob back untouched; the output is paused.
    Wait,
}

impl GateState {
    /// Whether a blob of this output may be claimed at `now`.
    pub fn claimable(self, now: Instant) -> bool {
        match self {
            GateState::Open => true,
            GateState::Closed { until, .. } => now >= until,
            GateState::Probing { .. } => false,
        }
    }

    /// Admits one blob: the first worker after the pause becomes the prober.
    pub fn admit(self, now: Instant) -> (GateState, Pass) {
        match self {
            GateState::Open => (self, Pass::Go),
            GateState::Closed { until, failures } if now >= until => {
                (GateState::Probing { failures }, Pass::Probe)
            }
            _ => (self, Pass::Wait),
        }
    }

    /// After a retryable failure. A failure of a send admitted before the gate closed (a worker
    /// that was already in flight) does not lengthen a pause that another failure started.
    pub fn failed(self, probe: bool, now: Instant, base: Duration) -> GateState {
        let failures = match self {
            GateState::Open => 1,
            GateState::Probing { failures } if probe => failures.saturating_add(1),
            other => return other,
        };
        GateState::Closed {
            until: now + backoff(base, MAX_PAUSE, failures - 1),
            failures,
        }
    }

    /// A probe that ended without a verdict (its blob could not be fetched, shutdown): the next
    /// worker may probe at once.
    pub fn abandoned(self, now: Instant) -> GateState {
        match self {
            GateState::Probing { failures } => GateState::Closed {
                until: now,
                failures,
            },
            other => other,
        }
    }
}

/// The gate of one output, shared by the workers of every tenant that uses the output.
pub struct OutputGate {
    /// The state, and since when the gate is not open (for `/status`: a tenant `paused` since).
    state: Mutex<(GateState, Option<SystemTime>)>,
    /// First pause; doubles with each failed probe.
    base: Duration,
    /// The workers' wake-up: notified when the gate opens or a probe may start.
    wake: Arc<Notify>,
}

impl OutputGate {
    pub fn new(base: Duration, wake: Arc<Notify>) -> OutputGate {
        OutputGate {
            state: Mutex::new((GateState::Open, None)),
            base,
            wake,
        }
    }

    pub fn state(&self) -> GateState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Since when deliveries to the output are paused (closed or probing); `None` while open.
    pub fn paused_since(&self) -> Option<SystemTime> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    pub fn claimable(&self, now: Instant) -> bool {
        self.state().claimable(now)
    }

    /// When a closed gate lets a probe through; `None` when open or probing.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state() {
            GateState::Closed { until, .. } => Some(until),
            _ => None,
        }
    }

    pub fn admit(&self, now: Instant) -> Pass {
        self.update(|s| s.admit(now))
    }

    /// The output answered (accepted a batch, or refused it for a reason of its own): open for
    /// everyone. True when this reopened a closed gate.
    pub fn succeeded(&self) -> bool {
        let was = self.update(|s| (GateState::Open, s));
        let reopened = was != GateState::Open;
        if reopened {
            self.wake.notify_waiters();
        }
        reopened
    }

    /// A retryable failure. Returns the end of the pause when this failure (re)closed the gate.
    pub fn failed(&self, probe: bool, now: Instant) -> Option<Instant> {
        let base = self.base;
        self.update(|s| {
            let next = s.failed(probe, now, base);
            let closed = match next {
                GateState::Closed { until, .. } if next != s => Some(until),
                _ => None,
            };
            (next, closed)
        })
    }

    pub fn abandoned(&self, now: Instant) {
        self.update(|s| (s.abandoned(now), ()));
        self.wake.notify_waiters();
    }

    fn update<T>(&self, f: impl FnOnce(GateState) -> (GateState, T)) -> T {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (next, out) = f(s.0);
        s.1 = match next {
            GateState::Open => None,
            _ => s.1.or_else(|| Some(SystemTime::now())),
        };
        s.0 = next;
        out
    }
}

/// Held by the worker carrying a probe; a probe dropped without a verdict is abandoned, so the gate
/// never stays in `Probing` (a failed fetch, a cancelled task).
pub struct ProbeGuard<'a> {
    gate: Option<&'a OutputGate>,
}

impl<'a> ProbeGuard<'a> {
    pub fn new(gate: &'a OutputGate, pass: Pass) -> ProbeGuard<'a> {
        ProbeGuard {
            gate: (pass == Pass::Probe).then_some(gate),
        }
    }

    pub fn is_probe(&self) -> bool {
        self.gate.is_some()
    }

    /// The verdict was given (`succeeded` or `failed`): nothing to undo.
    pub fn decided(mut self) {
        self.gate = None;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.gate.take() {
            g.abandoned(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);

    #[test]
    fn a_failure_closes_and_the_first_worker_after_the_pause_probes() {
        let t0 = Instant::now();
        let s = GateState::Open.failed(false, t0, BASE);
        assert_eq!(
            s,
            GateState::Closed {
                until: t0 + BASE,
                failures: 1
            }
        );
        assert!(!s.claimable(t0));
        assert_eq!(s.admit(t0).1, Pass::Wait);
        let later = t0 + BASE;
        assert!(s.claimable(later));
        let (s, pass) = s.admit(later);
        assert_eq!(pass, Pass::Probe);
        assert_eq!(s.admit(later).1, Pass::Wait, "one probe at a time");
        assert!(!s.claimable(later));
    }

    #[test]
    fn failed_probes_double_the_pause_up_to_the_limit() {
        let t0 = Instant::now();
        let mut s = GateState::Open.failed(false, t0, BASE);
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let GateState::Closed { until, .. } = s else {
                panic!("closed expected")
            };
            let (probing, pass) = s.admit(until);
            assert_eq!(pass, Pass::Probe);
            s = probing.failed(true, until, BASE);
            let GateState::Closed { until: next, .. } = s else {
                panic!("closed expected")
            };
            pauses.push((next - until).as_secs());
        }
        assert_eq!(pauses, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
    }

    #[test]
    fn stragglers_do_not_lengthen_the_pause_and_success_opens() {
        let t0 = Instant::now();
        let closed = GateState::Open.failed(false, t0, BASE);
        // A worker that was sending when the output went down fails a bit later.
        assert_eq!(closed.failed(false, t0 + BASE / 2, BASE), closed);
        let (probing, _) = closed.admit(t0 + BASE);
        assert_eq!(
            probing.failed(false, t0 + BASE, BASE),
            probing,
            "only the probe decides"
        );
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_worker_probe_at_once() {
        let t0 = Instant::now();
        let (probing, _) = GateState::Open.failed(false, t0, BASE).admit(t0 + BASE);
        let s = probing.abandoned(t0 + BASE * 2);
        assert_eq!(s.admit(t0 + BASE * 2).1, Pass::Probe);
        assert_eq!(GateState::Open.abandoned(t0), GateState::Open);
    }

    #[test]
    fn the_guard_abandons_an_undecided_probe() {
        let gate = OutputGate::new(BASE, Arc::new(Notify::new()));
        gate.failed(false, Instant::now() - BASE * 2);
        let pass = gate.admit(Instant::now());
        assert_eq!(pass, Pass::Probe);
        drop(ProbeGuard::new(&gate, pass));
        assert!(matches!(gate.state(), GateState::Closed { .. }));
        assert_eq!(gate.admit(Instant::now()), Pass::Probe);
        let guard = ProbeGuard::new(&gate, Pass::Probe);
        gate.succeeded();
        guard.decided();
        assert_eq!(gate.state(), GateState::Open);
    }
}
