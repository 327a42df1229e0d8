//! This replica's clock against the shared store's. Listing ends, cursors and leases go by the
//! database's clock ([`Store::now`]), so a replica whose clock is off does no harm to the data;
//! but its logs, its file output's rotation and what it reports are off too, and NTP is broken on
//! its node. [`watch`] measures the difference every [`EVERY`] and reports it (`/status`,
//! `o365_clock_skew_seconds`, `/readyz`), logging when it goes past [`LIMIT`] and when it is back.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Store;
use crate::telemetry::{ClockSkew, Counters};

/// How often the clock is measured.
pub const EVERY: Duration = Duration::from_secs(30);
/// A difference larger than this is reported as a problem (readiness fails).
pub const LIMIT: Duration = Duration::from_secs(5);

/// Whether `skew` is past [`LIMIT`] either way.
pub fn too_far(skew: &ClockSkew) -> bool {
    skew.skew_ms.unsigned_abs() > LIMIT.as_millis() as u64
}

/// What `/readyz` and `/status` say about a skew past the limit.
pub fn describe(skew: &ClockSkew) -> String {
    let secs = skew.skew_ms as f64 / 1000.0;
    let how = if secs >= 0.0 { "ahead of" } else { "behind" };
    format!(
        "this replica's clock is {:.1}s {how} the database's (more than {}s): fix its time synchronisation (NTP)",
        secs.abs(),
        LIMIT.as_secs()
    )
}

/// Measures once: this replica's time at the middle of a `now()` call to the store against the
/// store's answer. `None` when the store did not answer.
pub async fn measure<S: Store>(store: &S) -> Option<ClockSkew> {
    let before = SystemTime::now();
    let db = store.now().await.ok()?;
    let after = SystemTime::now();
    let half = after.duration_since(before).unwrap_or_default() / 2;
    let local = before + half;
    let skew_ms = match local.duration_since(db) {
        Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
    };
    Some(ClockSkew {
        skew_ms,
        measured_at: after,
    })
}

/// Measures every [`EVERY`] until shutdown (a shared store only), logging when the skew goes
/// past [`LIMIT`] and when it is back within it.
pub async fn watch<S: Store>(store: Arc<S>, counters: Arc<Counters>, shutdown: CancellationToken) {
    let mut off = false;
    loop {
        if let Some(skew) = measure(store.as_ref()).await {
            counters.activity.set_clock_skew(skew);
            match (off, too_far(&skew)) {
                (false, true) => warn!(skew_ms = skew.skew_ms, "{}", describe(&skew)),
                (true, false) => info!(
                    skew_ms = skew.skew_ms,
                    "this replica's clock agrees with the database's again"
                ),
                _ => {}
            }
            off = too_far(&skew);
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_either_way() {
        let at = SystemTime::UNIX_EPOCH;
        let skew = |ms| ClockSkew {
            skew_ms: ms,
            measured_at: at,
        };
        assert!(!too_far(&skew(5000)));
        assert!(!too_far(&skew(-5000)));
        assert!(too_far(&skew(5001)));
        assert!(too_far(&skew(-10_800_000)));
        assert!(describe(&skew(10_800_000)).contains("10800.0s ahead of"));
        assert!(describe(&skew(-6000)).contains("6.0s behind"));
    }
}
