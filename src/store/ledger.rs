//! The completeness ledger: per tenant × content type (or Graph feed) × UTC hour, what Microsoft
//! announced and what became of it, so that "did we get everything?" has an answer per hour.
//!
//! Blob counters (`queued`, `done`, `dead`) are keyed by the hour of the blob's `contentCreated`
//! (the only time known when it is announced) and are written by the store in the same
//! transaction as the queue change they count (`enqueue`, `complete`, `dead_letter`,
//! `requeue_dead`): the sealed verdict rests on them, so a crash can never make an hour look more
//! complete than it was. Record counters (`parsed`, `duplicates`, `accepted`) are keyed by the hour
//! of each record's `CreationTime` and arrive through [`super::Store::ledger_add`], which the
//! embedded store writes with a durable transaction about a second later (a crash may lose the
//! last ones: they are reported, not relied on); a listing gap (part of the verdict) goes with its
//! next durable transaction. Rows are pruned after `store.completeness_retention`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::core::settings::{Section, de};

/// Seconds in an hour: ledger hours are Unix seconds divisible by it.
pub const HOUR: i64 = 3600;
/// Dead-lettered contentIds kept per row (the count stays exact beyond it).
pub const MAX_DEAD_IDS: usize = 50;
/// Default of `completeness.horizon`: Microsoft gives no latency guarantee; content is usually
/// listed within 60–90 minutes, and a day covers the late stragglers.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Default of `store.completeness_retention`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Environment variable that, set to `off`, stops every ledger write (the queue's blob counters
/// included), so that benchmarks measure what the ledger costs in one build. Never for production:
/// hours are then never sealed.
pub const LEDGER_ENV: &str = "O365_LEDGER";

/// Whether the ledger is written (see [`LEDGER_ENV`]).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(LEDGER_ENV).map_or(true, |v| v != "off"))
}

/// The start (Unix seconds) of the UTC hour of a `2026-01-01T10:…` text (`CreationTime`,
/// `contentCreated`); `None` when it is not one.
pub fn hour_of_text(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 13 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    Some(date.and_hms_opt(num(11..13)?, 0, 0)?.and_utc().timestamp())
}

/// The start of the UTC hour of `t`.
pub fn hour_of(t: SystemTime) -> i64 {
    let s = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    s.div_euclid(HOUR) * HOUR
}

/// The start of the UTC hour of a record key's creation minute (the key's top 32 bits, see
/// `output::time_ordered`); `None` for a key without a time.
pub fn hour_of_key(key: u128) -> Option<i64> {
    let minute = (key >> 96) as i64;
    (minute > 0).then(|| (minute * 60).div_euclid(HOUR) * HOUR)
}

/// One ledger row's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LedgerKey {
    /// Lower-case tenant id.
    pub tenant_id: String,
    pub content_type: String,
    /// Start of the UTC hour, Unix seconds.
    pub hour: i64,
}

impl LedgerKey {
    pub fn new(tenant_id: &str, content_type: &str, hour: i64) -> LedgerKey {
        LedgerKey {
            tenant_id: tenant_id.to_ascii_lowercase(),
            content_type: content_type.to_owned(),
            hour,
        }
    }
}

/// The counters of one row (or a change to them: every field adds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LedgerCounts {
    /// Blobs announced by a webhook notification (repeats included).
    pub announced: u64,
    /// Blobs seen in a content listing (repeats included).
    pub listed: u64,
    /// Distinct blobs queued (the dedup set's verdict): what must be delivered.
    pub queued: u64,
    /// Fetches of a blob's content that succeeded (retries included).
    pub fetched: u64,
    /// Blobs whose every record the output accepted.
    pub done: u64,
    /// Blobs given up (dead letters still held).
    pub dead: u64,
    /// Their contentIds (at most [`MAX_DEAD_IDS`]).
    pub dead_ids: Vec<String>,
    /// Records read out of blobs (a resent batch counts again).
    pub parsed: u64,
    /// Microsoft's duplicates dropped by the record dedup.
    pub duplicates: u64,
    /// Records accepted, per output name.
    pub accepted: BTreeMap<String, u64>,
    /// Records accepted per `RecordType` (filled by sources that know it cheaply).
    pub record_types: BTreeMap<String, u64>,
    /// Listing windows lost here (Microsoft no longer kept them: the listing was clamped).
    pub gaps: u64,
    /// When `verify` last compared this row with Audit Search, ms since the epoch (0: never).
    /// Unlike the counters, the latest verification replaces an older one (see [`Self::add`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub verified_ms: u64,
    /// Records Audit Search returned for this row that were not delivered, as that verification
    /// found them: the hour is incomplete while it is above 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub verified_missing: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LedgerCounts {
    /// Adds `other` to these counters (a negative `dead` is carried as a removal by
    /// [`LedgerCounts::undead`]).
    pub fn add(&mut self, other: &LedgerCounts) {
        self.announced += other.announced;
        self.listed += other.listed;
        self.queued += other.queued;
        self.fetched += other.fetched;
        self.done += other.done;
        self.dead += other.dead;
        for id in &other.dead_ids {
            if self.dead_ids.len() < MAX_DEAD_IDS && !self.dead_ids.contains(id) {
                self.dead_ids.push(id.clone());
            }
        }
        self.parsed += other.parsed;
        self.duplicates += other.duplicates;
        for (k, v) in &other.accepted {
            *self.accepted.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.record_types {
            *self.record_types.entry(k.clone()).or_default() += v;
        }
        self.gaps += other.gaps;
        // A verification is a verdict, not a count: the newest one stands.
        if other.verified_ms > self.verified_ms {
            self.verified_ms = other.verified_ms;
            self.verified_missing = other.verified_missing;
        }
    }

    /// A dead letter of this row put back in the queue: no longer dead, to be delivered.
    pub fn undead(&mut self, content_id: &str) {
        self.dead = self.dead.saturating_sub(1);
        self.dead_ids.retain(|id| id != content_id);
    }

    /// Records accepted by every output together.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.values().sum()
    }
}

/// A change to one row: what a source or the pipeline adds to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerDelta {
    pub key: LedgerKey,
    pub counts: LedgerCounts,
}

/// A row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub key: LedgerKey,
    pub counts: LedgerCounts,
    /// The last change, ms since the epoch.
    pub updated_ms: u64,
}

/// Adds deltas into a map of pending changes, one entry per key.
pub fn merge_into(pending: &mut BTreeMap<LedgerKey, LedgerCounts>, deltas: Vec<LedgerDelta>) {
    for d in deltas {
        pending.entry(d.key).or_default().add(&d.counts);
    }
}

/// A blob's hour: its `contentCreated`, else the time it was queued.
pub fn blob_hour(content_created: Option<&str>, queued: SystemTime) -> i64 {
    content_created
        .and_then(hour_of_text)
        .unwrap_or_else(|| hour_of(queued))
}

/// An hour's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HourState {
    /// Listing passed it by the horizon and everything queued for it was delivered.
    Sealed,
    /// Not yet known: blobs still in the queue, or listing not far enough past it.
    Open,
    /// A blob of it was given up, or its listing was clamped: content is missing.
    Incomplete,
}

/// Judges one hour of one content type: `row` (none: nothing recorded), how far listing reached
/// (`reach`, the cursor), the horizon, and `now` (reach is at most now).
pub fn assess(
    hour: i64,
    row: Option<&LedgerCounts>,
    reach: Option<SystemTime>,
    horizon: Duration,
) -> (HourState, String) {
    let empty = LedgerCounts::default();
    let c = row.unwrap_or(&empty);
    if c.dead > 0 {
        let ids = c.dead_ids.join(", ");
        return (
            HourState::Incomplete,
            format!("{} blob(s) dead-lettered: {ids}", c.dead),
        );
    }
    if c.gaps > 0 {
        return (
            HourState::Incomplete,
            "listing was clamped: Microsoft no longer kept this window (content lost)".into(),
        );
    }
    if c.verified_missing > 0 {
        return (
            HourState::Incomplete,
            format!(
                "verify: {} record(s) Audit Search returned were not delivered (verify --repair delivers them)",
                c.verified_missing
            ),
        );
    }
    let waiting = c.queued.saturating_sub(c.done);
    if waiting > 0 {
        return (
            HourState::Open,
            format!("{waiting} of {} blob(s) not delivered yet", c.queued),
        );
    }
    let needed = hour + HOUR + horizon.as_secs() as i64;
    match reach.map(hour_secs) {
        Some(r) if r >= needed => (HourState::Sealed, String::new()),
        Some(_) => (
            HourState::Open,
            format!(
                "listing has not passed the hour by the {} horizon yet",
                crate::core::units::format_duration(horizon)
            ),
        ),
        None => (HourState::Open, "never listed yet".into()),
    }
}

fn hour_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => 0,
    }
}

/// The `completeness:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompletenessConfig {
    /// How far listing must be past an hour before it can be sealed (Microsoft's latency).
    #[serde(deserialize_with = "de::duration")]
    pub horizon: Duration,
    /// Whether workers record record counters (blob counters are part of the queue's
    /// transactions and always kept); off only to measure what recording costs.
    #[serde(deserialize_with = "de::flag")]
    pub record: bool,
    /// How old a tenant's completeness metrics may be before a scrape judges its hours again
    /// (each judgement reads its rows of the metrics' 7 days).
    #[serde(deserialize_with = "de::duration")]
    pub metrics_refresh: Duration,
}

/// Default of `completeness.metrics_refresh`: hours change slowly (their verdict moves with
/// blobs delivered and listing passing the horizon), and an alert waits minutes anyway.
pub const DEFAULT_METRICS_REFRESH: Duration = Duration::from_secs(60);

impl Default for CompletenessConfig {
    fn default() -> Self {
        CompletenessConfig {
            horizon: DEFAULT_HORIZON,
            record: true,
            metrics_refresh: DEFAULT_METRICS_REFRESH,
        }
    }
}

impl CompletenessConfig {
    pub fn check(&mut self, s: &mut Section) {
        if self.horizon.is_zero() {
            s.problem(
                "horizon",
                "is 0: an hour would be sealed before Microsoft listed its late content",
                "use a duration such as 24h (the default)",
            );
            self.horizon = DEFAULT_HORIZON;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_of_texts_and_keys() {
        assert_eq!(
            hour_of_text("2026-01-01T10:59:59.123Z"),
            Some(1_767_261_600)
        );
        assert_eq!(hour_of_text("2026-01-01T10"), Some(1_767_261_600));
        assert_eq!(hour_of_text("yesterday"), None);
        let minute = (1_767_261_600 / 60 + 59) as u128;
        assert_eq!(hour_of_key(minute << 96 | 7), Some(1_767_261_600));
        assert_eq!(hour_of_key(7), None);
    }

    #[test]
    fn an_hour_is_sealed_only_when_delivered_and_passed_by_the_horizon() {
        let h = 1_767_261_600;
        let at = |s: i64| UNIX_EPOCH + Duration::from_secs(s as u64);
        let horizon = Duration::from_secs(3600);
        let mut c = LedgerCounts {
            queued: 2,
            done: 1,
            ..Default::default()
        };
        assert_eq!(
            assess(h, Some(&c), Some(at(h + 7200)), horizon).0,
            HourState::Open
        );
        c.done = 2;
        assert_eq!(
            assess(h, Some(&c), Some(at(h + 7199)), horizon).0,
            HourState::Open
        );
        assert_eq!(
            assess(h, Some(&c), Some(at(h + 7200)), horizon).0,
            HourState::Sealed
        );
        assert_eq!(assess(h, None, None, horizon).0, HourState::Open);
        c.add(&LedgerCounts {
            dead: 1,
            dead_ids: vec!["b1".into()],
            ..Default::default()
        });
        let (state, why) = assess(h, Some(&c), Some(at(h + 7200)), horizon);
        assert_eq!(state, HourState::Incomplete);
        assert!(why.contains("b1"), "{why}");
        c.undead("b1");
        assert_eq!(
            assess(h, Some(&c), Some(at(h + 7200)), horizon).0,
            HourState::Sealed
        );
        // A verification that found records missing makes the hour incomplete; a later one that
        // found none (merged in either order) seals it again.
        let verified = |ms, missing| LedgerCounts {
            verified_ms: ms,
            verified_missing: missing,
            ..Default::default()
        };
        c.add(&verified(10, 3));
        let (state, why) = assess(h, Some(&c), Some(at(h + 7200)), horizon);
        assert_eq!(state, HourState::Incomplete);
        assert!(why.contains("3 record(s)"), "{why}");
        let mut later = verified(20, 0);
        later.add(&verified(10, 3));
        c.add(&later);
        assert_eq!((c.verified_ms, c.verified_missing), (20, 0));
        assert_eq!(
            assess(h, Some(&c), Some(at(h + 7200)), horizon).0,
            HourState::Sealed
        );
    }
}
