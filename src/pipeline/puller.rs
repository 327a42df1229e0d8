//! Listing available content (`subscriptions/content`): the only source in pull mode, and in push mode
//! the reconciliation that closes gaps (webhook disabled, downtime, lost notifications). Windows are at
//! most 24 h, never start more than 7 days back, every `NextPageUri` is followed, and the cursor moves
//! only after everything listed up to it is stored. Dedup by contentId makes overlap with push harmless.
//!
//! Back-pressure, per tenant: while a tenant has `queue_high_water` blobs or more queued, its listing
//! waits (the cursor stays, and Microsoft keeps the content 7 days), so a slow or dead output does
//! not grow the queue from this side, and other tenants (even those of the same output) go on. The
//! webhook keeps storing notifications: refusing them would get it disabled. A listing held back
//! longer than Microsoft keeps content resumes from the oldest time it keeps, and the window in
//! between is recorded as a [`Gap`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Timelike, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::tenant::{Gap, TenantRuntime, Tenants};
use crate::mgmt_api::ApiError;
use crate::store::{ContentRef, Store, StoreError};
use crate::telemetry::Counters;

/// The API refuses windows longer than this.
pub const MAX_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How far back the API lists; we stay a few minutes inside it so a request never starts out of range.
pub const MAX_BACK: chrono::TimeDelta = chrono::TimeDelta::minutes(7 * 24 * 60 - 5);
/// Each pull re-lists this much before the cursor: content can be listed a while after its
/// `contentCreated`, and contentId dedup makes the overlap free.
pub const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Where the very first pull starts (the API's own default window).
pub const FIRST_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Wait after a failed round instead of the full interval.
pub const RETRY_SOON: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PullError {
    /// AF20022: the content type's subscription is not started (yet).
    pub fn is_no_subscription(&self) -> bool {
        matches!(self, PullError::Api(e) if e.code() == Some("AF20022"))
    }
}

/// What one pull of one content type did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    pub listed: usize,
    pub added: usize,
    pub pages: usize,
    /// Listed entries whose contentUri is not on the configured resource (never stored or fetched).
    pub refused: usize,
    /// The gap was longer than the API keeps: content before `start` is gone.
    pub truncated: bool,
    /// With `truncated` on a listing from the cursor: the window lost, from the cursor to where
    /// listing resumed.
    pub lost: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Splits `[start, end)` into consecutive windows of at most [`MAX_WINDOW`].
pub fn windows(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + MAX_WINDOW).min(end);
        out.push((from, to));
        from = to;
    }
    out
}

/// Where to start listing: the cursor minus the overlap, never before the API's retention.
/// The flag says the requested start was older than the API keeps.
pub fn start_at(cursor: Option<DateTime<Utc>>, now: DateTime<Utc>) -> (DateTime<Utc>, bool) {
    let wanted = match cursor {
        Some(c) => c - OVERLAP,
        None => now - FIRST_LOOKBACK,
    };
    let oldest = now - MAX_BACK;
    if wanted < oldest {
        (oldest, cursor.is_some_and(|c| c < oldest))
    } else {
        (wanted, false)
    }
}

/// Where a listing up to `now` ends: the API takes whole seconds, so `now` is rounded up to the
/// next one and the cursor moves exactly there. Rounded down (as `api_time` alone would), the
/// content published in the last fraction of a second would be left out of the listing while the
/// cursor moved past it, and wait a whole `pull.interval` for the overlap of the next round.
pub fn listing_end(now: DateTime<Utc>) -> DateTime<Utc> {
    let whole = now.with_nanosecond(0).unwrap_or(now);
    if whole == now {
        now
    } else {
        whole + chrono::TimeDelta::seconds(1)
    }
}

/// Every window a listing of `[start, end)` sends when the collector's clock says `now`: the one
/// pure computation behind pull, reconciliation, backfill and the admin API's backfill, so that one
/// property test covers what they all send (tests/listing_windows.rs). Each window keeps
/// Microsoft's AF20055 rules: both ends given, start before end, at most 24 hours apart, start no
/// more than 7 days back. The start is moved inside what Microsoft keeps ([`MAX_BACK`]) and down
/// to a whole second (the API takes seconds: what is sent is then exactly what is listed, and a
/// window never loses its fraction to truncation); the end is `min(end, now)` rounded up to a whole
/// second ([`listing_end`]). Empty when nothing is left to list.
pub fn listing_windows(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let start = start.max(now - MAX_BACK);
    let start = start.with_nanosecond(0).unwrap_or(start);
    windows(start, listing_end(end.min(now)))
}

/// The API's datetime form (UTC, seconds).
pub fn api_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Lists one content type from its cursor to `now`, stores what was listed, advances the cursor.
pub async fn pull_once<S: Store>(
    tenant: &TenantRuntime,
    content_type: &str,
    store: &S,
    now: DateTime<Utc>,
) -> Result<PullReport, PullError> {
    let tid = &tenant.cfg.tenant_id;
    let cursor = store
        .cursor(tid, content_type)
        .await?
        .map(DateTime::<Utc>::from);
    if !tenant.listing.held() {
        // Another replica took the tenant over while the cursor was read.
        return Ok(PullReport::default());
    }
    let (start, truncated) = start_at(cursor, now);
    let mut report = PullReport {
        truncated,
        lost: cursor.filter(|_| truncated).map(|c| (c, start)),
        ..PullReport::default()
    };
    if let Some((from, to)) = report.lost {
        // The lost hours are incomplete for good (durable before the cursor moves past them).
        store
            .ledger_add(gap_in_ledger(tid, content_type, from, to))
            .await?;
        // Recorded before listing: once a window is stored the cursor is past the loss.
        tenant.health.gap(
            tid,
            Gap {
                source: content_type.to_owned(),
                from,
                to,
                reason: "the cursor is older than the 7 days Microsoft keeps content: listing was held back, or the collector stopped, that long".into(),
                noticed_at: Utc::now(),
            },
        );
    }
    let wins = listing_windows(start, now, now);
    list_range(tenant, content_type, store, wins, true, &mut report).await?;
    Ok(report)
}

/// Lists `[start, end)` (clamped to what the API keeps) and stores what is new, without touching the
/// cursor: the admin API's and CLI's backfill.
pub async fn backfill<S: Store>(
    tenant: &TenantRuntime,
    content_type: &str,
    store: &S,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<PullReport, PullError> {
    let oldest = now - MAX_BACK;
    let truncated = start < oldest;
    let mut report = PullReport {
        truncated,
        ..PullReport::default()
    };
    let wins = listing_windows(start, end, now);
    list_range(tenant, content_type, store, wins, false, &mut report).await?;
    Ok(report)
}

/// Lists `windows` ([`listing_windows`]) one by one, following every page; with `advance`, moves
/// the cursor to each window's end once everything listed in it is stored.
async fn list_range<S: Store>(
    tenant: &TenantRuntime,
    content_type: &str,
    store: &S,
    windows: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    advance: bool,
    report: &mut PullReport,
) -> Result<(), PullError> {
    let tid = &tenant.cfg.tenant_id;
    for (from, to) in windows {
        // With replicas, listing stops as soon as the lease ends (the cursor stays at the last
        // window stored whole, where the next holder resumes), not only at the round's start.
        if advance && !tenant.listing.held() {
            return Ok(());
        }
        let mut page = tenant
            .client
            .list_content(content_type, &api_time(from), &api_time(to))
            .await?;
        loop {
            let (items, next) = page;
            report.pages += 1;
            report.listed += items.len();
            let base = tenant.client.base();
            // Each entry must be the feed URL of its own contentId; the content type is stored in
            // the configured spelling (the one this listing asked for).
            let refs: Vec<ContentRef> = items
                .into_iter()
                .filter_map(|n| match base.content_uri(&n.content_uri, &n.content_id) {
                    Ok(uri) => Some(ContentRef {
                        tenant_id: tid.clone(),
                        content_type: content_type.to_owned(),
                        content_id: n.content_id,
                        content_uri: uri.as_str().to_owned(),
                        content_created: n.content_created,
                        content_expiration: n.content_expiration,
                        records: None,
                    }),
                    Err(e) => {
                        report.refused += 1;
                        warn!(tenant.id = %tid, content.type = content_type, content.id = %n.content_id, reason = %e,
                              "listed contentUri is not this blob's feed URL on the configured resource; skipped, never fetched");
                        None
                    }
                })
                .collect();
            if !refs.is_empty() {
                let listed = listed_in_ledger(&refs);
                let added = store.enqueue(refs).await?.added;
                if let Err(e) = store.ledger_add(listed).await {
                    debug!(error = %e, "cannot count listed blobs in the completeness ledger");
                }
                report.added += added;
                tenant.health.announced(tid, content_type, added as u64);
            }
            match next {
                Some(_) if advance && !tenant.listing.held() => return Ok(()),
                Some(uri) => page = tenant.client.list_content_next(&uri).await?,
                None => break,
            }
        }
        if advance {
            // Everything up to `to` is stored: the cursor may move there.
            store
                .advance_cursor(tid, content_type, SystemTime::from(to))
                .await?;
        }
    }
    Ok(())
}

/// Whether `tenant`'s listing waits for its backlog (see the module doc); logs the changes.
pub(super) async fn held_back<S: Store>(
    tenant: &TenantRuntime,
    store: &S,
    high_water: u64,
    counters: &Counters,
) -> bool {
    let tid = &tenant.cfg.tenant_id;
    // A store that cannot answer fails the listing's own writes anyway.
    let queued = store.tenant_backlog(tid, high_water).await.unwrap_or(0);
    let full = queued >= high_water;
    counters
        .metrics
        .tenant_queue_depth
        .get_or_create(&crate::telemetry::Metrics::one_label("tenant_id", tid))
        .set(i64::try_from(queued).unwrap_or(i64::MAX));
    if full {
        Counters::add(&counters.listings_deferred, 1);
    }
    tenant.health.set_deferring(tid, full, queued, high_water);
    full
}

/// Pulls every tenant's content types every `every` (and once at start), waking the workers when
/// something new was stored. A failing tenant is logged and tried again next round; it never holds
/// up the others. Content types whose subscription waits for a start (Microsoft's 15-minute rule,
/// `lifecycle`) are listed every `fallback_every` (`pull.interval`) in between: in push mode their
/// webhook may be disabled, and nothing must wait on the rule.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: Store>(
    tenants: Arc<Tenants>,
    store: Arc<S>,
    every: Duration,
    fallback_every: Duration,
    high_water: u64,
    counters: Arc<Counters>,
    wake: Arc<Notify>,
    reconcile_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    // When the next round lists every content type (the first one at once).
    let mut full_at = tokio::time::Instant::now();
    loop {
        let full = tokio::time::Instant::now() >= full_at;
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Listings end at the store's now, read once a round: with replicas, the database's
        // clock, so that one replica's clock running ahead cannot move a shared cursor past
        // content nobody listed. A store that cannot answer fails the round's writes anyway.
        let now = tokio::select! {
            r = store.now() => r,
            _ = shutdown.cancelled() => return,
        };
        let now = match now {
            Ok(t) => Some(DateTime::<Utc>::from(t)),
            Err(e) => {
                warn!(error = %e, "cannot read the store's clock; listing retries soon");
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                None
            }
        };
        // With replicas, each lists only the tenants whose lease it holds.
        let rounds = tenants.values().filter(|t| t.listing.held()).cloned().map(|t| {
            let store = store.clone();
            let wake = wake.clone();
            let failed = failed.clone();
            let counters = counters.clone();
            async move {
                let Some(now) = now else { return };
                let waiting: Vec<String> = t.start_waits().into_iter().map(|(ct, _)| ct).collect();
                if !full && waiting.is_empty() {
                    return;
                }
                if held_back(&t, store.as_ref(), high_water, &counters).await {
                    return;
                }
                for ct in t.cfg.content_types.iter().filter(|ct| full || waiting.contains(ct)) {
                    if !t.listing.held() {
                        break; // the lease ran out during the round
                    }
                    match pull_once(&t, ct, store.as_ref(), now).await {
                        Ok(r) => {
                            t.health.succeeded(&t.cfg, ct);
                            if r.added > 0 {
                                wake.notify_waiters();
                                info!(tenant.id = %t.cfg.tenant_id, content.type = %ct, listed = r.listed, added = r.added,
                                      fallback = !full, "listing found new content");
                            } else {
                                debug!(tenant.id = %t.cfg.tenant_id, content.type = %ct, listed = r.listed, "listing: nothing new");
                            }
                        }
                        Err(e) => {
                            if full {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                            if e.is_no_subscription() {
                                // At start-up the subscription keeper is starting it right now; it
                                // wakes this loop when done, and logs itself if it cannot.
                                debug!(tenant.id = %t.cfg.tenant_id, content.type = %ct, "no subscription yet; listing once it is started");
                            } else if let PullError::Api(api) = &e {
                                // The tenant's health logs when the problem starts and ends.
                                t.health.failed(&t.cfg, ct, api);
                                debug!(tenant.id = %t.cfg.tenant_id, content.type = %ct, error = %e, "content listing failed; retrying soon");
                            } else {
                                warn!(tenant.id = %t.cfg.tenant_id, content.type = %ct, error = %e, "content listing failed; retrying soon");
                            }
                        }
                    }
                }
            }
        });
        tokio::select! {
            _ = futures_util::future::join_all(rounds) => {}
            _ = shutdown.cancelled() => return,
        }
        if full {
            // A failed round (e.g. the subscription is being started right now) is retried sooner.
            let wait = if failed.load(std::sync::atomic::Ordering::Relaxed) {
                every.min(RETRY_SOON)
            } else {
                every
            };
            full_at = tokio::time::Instant::now() + wait;
        }
        let any_waiting = tenants
            .values()
            .any(|t| t.listing.held() && !t.start_waits().is_empty());
        let next = if any_waiting {
            full_at.min(tokio::time::Instant::now() + fallback_every)
        } else {
            full_at
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = reconcile_now.notified() => {
                debug!("reconciling now: a subscription was (re)started or waits for a start");
                full_at = tokio::time::Instant::now();
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The completeness ledger's `listed` counters of one page: by content type and the hour of
/// each blob's `contentCreated`.
fn listed_in_ledger(refs: &[ContentRef]) -> Vec<crate::store::LedgerDelta> {
    use crate::store::ledger::{LedgerCounts, LedgerDelta, LedgerKey, blob_hour};
    let now = SystemTime::now();
    let mut by_key = std::collections::BTreeMap::<LedgerKey, u64>::new();
    for c in refs {
        let hour = blob_hour(c.content_created.as_deref(), now);
        *by_key
            .entry(LedgerKey::new(&c.tenant_id, &c.content_type, hour))
            .or_default() += 1;
    }
    by_key
        .into_iter()
        .map(|(key, n)| LedgerDelta {
            key,
            counts: LedgerCounts {
                listed: n,
                ..Default::default()
            },
        })
        .collect()
}

/// A listing gap in the ledger: every hour of `[from, to)` marked, at most the last
/// [`MAX_GAP_HOURS`] (older rows would be pruned before anyone reads them). The Graph puller
/// marks its feeds' gaps with it too.
pub(super) fn gap_in_ledger(
    tenant: &str,
    content_type: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<crate::store::LedgerDelta> {
    use crate::store::ledger::{HOUR, LedgerCounts, LedgerDelta, LedgerKey, hour_of};
    let last = hour_of(SystemTime::from(to) - std::time::Duration::from_millis(1));
    let first = hour_of(SystemTime::from(from)).max(last - (MAX_GAP_HOURS - 1) * HOUR);
    (0..)
        .map(|i| first + i * HOUR)
        .take_while(|h| *h <= last)
        .map(|h| LedgerDelta {
            key: LedgerKey::new(tenant, content_type, h),
            counts: LedgerCounts {
                gaps: 1,
                ..Default::default()
            },
        })
        .collect()
}

/// The most hours one listing gap marks in the ledger (31 days: beyond the ledger's retention).
const MAX_GAP_HOURS: i64 = 31 * 24;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap() + chrono::TimeDelta::hours(h)
    }

    #[test]
    fn windows_are_at_most_a_day_and_contiguous() {
        let w = windows(t(-72), t(0));
        assert_eq!(w.len(), 3);
        assert_eq!(w[0], (t(-72), t(-48)));
        assert_eq!(w[2].1, t(0));
        assert_eq!(windows(t(-5), t(0)), vec![(t(-5), t(0))]);
        assert!(windows(t(0), t(0)).is_empty());
        let w = windows(t(-25), t(0));
        assert_eq!(w, vec![(t(-25), t(-1)), (t(-1), t(0))]);
    }

    #[test]
    fn start_never_leaves_retention() {
        assert_eq!(start_at(None, t(0)), (t(-24), false));
        assert_eq!(start_at(Some(t(-2)), t(0)), (t(-3), false));
        let (s, truncated) = start_at(Some(t(-24 * 10)), t(0));
        assert_eq!(s, t(0) - MAX_BACK);
        assert!(truncated);
        // Overlap alone crossing the limit is not a loss.
        let (_, truncated) = start_at(Some(t(0) - MAX_BACK + chrono::TimeDelta::minutes(1)), t(0));
        assert!(!truncated);
    }

    #[test]
    fn listing_ends_on_the_next_whole_second() {
        let exact = t(13);
        assert_eq!(listing_end(exact), exact);
        let within = exact + chrono::TimeDelta::milliseconds(700);
        let end = listing_end(within);
        assert_eq!(end, exact + chrono::TimeDelta::seconds(1));
        // What the API is asked for is exactly where the cursor moves: nothing in between.
        assert_eq!(api_time(end), "2026-11-25T13:00:01");
        assert_eq!(windows(t(12), end).last().map(|w| w.1), Some(end));
    }

    #[test]
    fn api_time_form() {
        assert_eq!(api_time(t(13)), "2026-11-25T13:00:00");
    }
}
