//! How long the dedup set remembers, and the task that makes it forget: without it the set (every
//! contentId and Graph record identity ever seen) grows until the disk is full.
//!
//! Microsoft announces a blob for at most 7 days, so an id first seen longer ago than that is
//! never announced again; `store.dedup_retention` (8 days) keeps one day of margin. The prune runs
//! every [`PRUNE_EVERY`] (or an eighth of a shorter retention) off the hot path, in transactions of at most [`PRUNE_BATCH`] entries, so
//! the webhook and the workers wait at most one short transaction for it. With PostgreSQL one
//! replica at a time prunes (an advisory lock); the others skip the round.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Store;
use crate::core::settings::{Section, de};
use crate::telemetry::Counters;

/// Microsoft keeps content 7 days; one more day of margin.
pub const DEFAULT_DEDUP_RETENTION: Duration = Duration::from_secs(8 * 24 * 3600);
/// How far back Microsoft may announce a blob again (its content retention).
pub const ANNOUNCE_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a record's claim by the blob that delivered it holds (record dedup).
pub const DEFAULT_RECORD_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long an audit-search record's claim looks back for a delivery of the same record
/// (`pipeline::audit_backfill`): the Management API's reach (7 days) plus an hour of listing
/// overlap. Record claims are kept at least this long ([`record_claims_kept`]), so a backfill
/// through Purview's audit search drops what a blob delivered within that reach.
pub const AUDIT_SEARCH_CLAIM_WINDOW: Duration = Duration::from_secs((7 * 24 + 1) * 3600);
/// How often the prune runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);
/// Entries deleted per transaction.
pub const PRUNE_BATCH: usize = 10_000;

/// The retention keys of `store:` (for either store type).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long a contentId or Graph record identity is remembered after it was first seen.
    #[serde(deserialize_with = "de::duration")]
    pub dedup_retention: Duration,
    /// Accepts a `dedup_retention` shorter than Microsoft's 7-day horizon (tests, small disks).
    #[serde(deserialize_with = "de::flag")]
    pub allow_short_retention: bool,
    /// How long a record delivered by one blob is dropped from any other blob (Microsoft's own
    /// duplicates); 0 turns record dedup off.
    #[serde(deserialize_with = "de::duration")]
    pub record_dedup_window: Duration,
    /// How long the completeness ledger keeps an hour's row (pruned with the dedup set).
    #[serde(deserialize_with = "de::duration")]
    pub completeness_retention: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            dedup_retention: DEFAULT_DEDUP_RETENTION,
            allow_short_retention: false,
            record_dedup_window: DEFAULT_RECORD_DEDUP_WINDOW,
            completeness_retention: super::ledger::DEFAULT_RETENTION,
        }
    }
}

impl RetentionConfig {
    /// The keys this type reads out of `store:`.
    pub const KEYS: [&str; 4] = [
        "dedup_retention",
        "allow_short_retention",
        "record_dedup_window",
        "completeness_retention",
    ];

    pub fn check(&mut self, s: &mut Section) {
        if self.completeness_retention.is_zero() {
            s.problem(
                "completeness_retention",
                "is 0: the completeness ledger would forget every hour at once",
                "use a duration such as 30d (the default)",
            );
            self.completeness_retention = super::ledger::DEFAULT_RETENTION;
        }
        if self.dedup_retention < ANNOUNCE_HORIZON && !self.allow_short_retention {
            s.problem(
                "dedup_retention",
                "is shorter than the 7 days Microsoft may announce a blob again: a blob announced again after its id was forgotten would be delivered twice",
                "use 8d (the default) or longer, or set store.allow_short_retention: true if you accept duplicates",
            );
            self.dedup_retention = DEFAULT_DEDUP_RETENTION;
        } else if self.dedup_retention.is_zero() {
            s.problem(
                "dedup_retention",
                "is 0: every id would be forgotten at once",
                "use a duration such as 8d (the default)",
            );
            self.dedup_retention = DEFAULT_DEDUP_RETENTION;
        }
        if self.record_dedup_window > self.dedup_retention && !s.given("record_dedup_window") {
            // The default window, under a retention shorter than it: the retention bounds it.
            self.record_dedup_window = self.dedup_retention;
        } else if self.record_dedup_window > self.dedup_retention {
            s.problem(
                "record_dedup_window",
                "is longer than store.dedup_retention: a blob announced again after its contentId was forgotten is fetched anyway",
                "use 24h (the default), at most dedup_retention; 0 turns record dedup off",
            );
            self.record_dedup_window = DEFAULT_RECORD_DEDUP_WINDOW.min(self.dedup_retention);
        }
    }
}

/// One prune of both sets and of the completeness ledger: batch after batch until less than a
/// batch is left. Returns the entries removed (contentIds and Graph identities, record claims).
pub async fn prune_once<S: Store>(
    store: &S,
    cfg: &RetentionConfig,
    now: SystemTime,
) -> Result<(u64, u64), super::StoreError> {
    let before = |d: Duration| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
    let ids = drain(|max| store.prune(before(cfg.dedup_retention), max)).await?;
    let records = drain(|max| store.prune_records(before(record_claims_kept(cfg)), max)).await?;
    let hours = drain(|max| store.ledger_prune(before(cfg.completeness_retention), max)).await?;
    if hours > 0 {
        debug!(hours, "completeness ledger rows pruned");
    }
    Ok((ids, records))
}

/// How long record claims are kept: `record_dedup_window` decides whether another blob's record
/// is a duplicate, but an audit-search backfill looks back [`AUDIT_SEARCH_CLAIM_WINDOW`], so
/// claims stay that long (never beyond `dedup_retention`); 0 (record dedup off) keeps none.
pub fn record_claims_kept(cfg: &RetentionConfig) -> Duration {
    if cfg.record_dedup_window.is_zero() {
        return Duration::ZERO;
    }
    cfg.record_dedup_window
        .max(AUDIT_SEARCH_CLAIM_WINDOW)
        .min(cfg.dedup_retention)
}

async fn drain<F, Fut>(mut prune: F) -> Result<u64, super::StoreError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64, super::StoreError>>,
{
    let mut removed = 0;
    loop {
        let n = prune(PRUNE_BATCH).await?;
        removed += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(removed);
        }
        // Let the webhook's and the workers' transactions in between batches.
        tokio::task::yield_now().await;
    }
}

/// Prunes at start and every [`PRUNE_EVERY`] (an eighth of a shorter retention) until shutdown;
/// a failed round is logged and tried at the next one.
pub async fn run<S: Store>(
    store: Arc<S>,
    cfg: RetentionConfig,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let shortest = cfg
        .dedup_retention
        .min(if cfg.record_dedup_window.is_zero() {
            cfg.dedup_retention
        } else {
            cfg.record_dedup_window
        });
    let every = PRUNE_EVERY.min(shortest / 8).max(Duration::from_secs(1));
    loop {
        let now = SystemTime::now();
        match prune_once(store.as_ref(), &cfg, now).await {
            Ok((ids, records)) => {
                Counters::add(&counters.dedup_pruned, ids);
                Counters::add(&counters.record_claims_pruned, records);
                counters.activity.pruned(now);
                if ids + records > 0 {
                    info!(
                        ids,
                        records,
                        retention_s = cfg.dedup_retention.as_secs(),
                        record_window_s = cfg.record_dedup_window.as_secs(),
                        "dedup sets pruned"
                    );
                } else {
                    debug!("dedup sets: nothing to prune");
                }
            }
            Err(e) => warn!(error = %e, "pruning the dedup set failed; trying again next round"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
