//! Listing one Graph feed of one tenant into the durable queue, round after round.
//!
//! A round reads from the feed's cursor minus [`OVERLAP`] (the first round: `graph_backfill`
//! back), never further back than the feed keeps ([`GraphFeed::max_back`]), up to now (whole
//! seconds), in windows of at most [`GraphFeed::max_window`], each with both time bounds
//! (`<time> ge … and <time> le …`). Every page, its `@odata.nextLink` followed only when
//! [`GraphClient::next_url`](crate::graph::client::GraphClient::next_url) accepts it, becomes one queue item carrying its records with their
//! identities; the store keeps only records it has not seen, so the overlap (late arrivals) and
//! a window read again after a crash add nothing twice. The cursor moves to a window's end only
//! after all its pages are stored. Workers then deliver the items like blobs: same batches,
//! progress, outputs, dedup keys.
//!
//! Failures are per tenant × feed: a 429 pauses this feed for its `Retry-After` (the client),
//! 401/403 (permission or licence missing, message trace's service principal absent) are kept
//! in the status and retried every [`denied_retry`], anything else soon; the other feeds and
//! tenants go on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Timelike, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::puller::{gap_in_ledger, held_back};
use super::tenant::{Gap, TenantRuntime};
use crate::graph::GraphFeed;
use crate::graph::runtime::GraphRuntime;
use crate::mgmt_api::ApiError;
use crate::store::{ContentRef, InlineRecord, Store, StoreError};
use crate::telemetry::Counters;

/// Each round re-reads this much before the cursor: sign-ins and audits can appear well after
/// their time (Microsoft gives no bound; hours are seen), and the dedup makes the overlap free.
pub const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(2);
/// Wait after a failed round that was neither a refusal nor a 429.
pub const RETRY_SOON: Duration = Duration::from_secs(10);
/// Longest wait between tries while a permission or licence is missing.
pub const MAX_DENIED_RETRY: Duration = Duration::from_secs(15 * 60);

/// How often a refused feed (401/403) is tried again: ten intervals, at most 15 minutes: slow
/// enough not to hammer Microsoft, soon enough to notice a new grant.
pub fn denied_retry(interval: Duration) -> Duration {
    interval.saturating_mul(10).min(MAX_DENIED_RETRY)
}

#[derive(Debug, thiserror::Error)]
pub enum GraphPullError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "@odata.nextLink refused ({reason}): not under {path} on the Graph host; no token sent"
    )]
    ForeignNextLink { path: String, reason: String },
}

impl GraphPullError {
    /// A permission, licence or service principal is missing: retried slowly.
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            GraphPullError::Api(ApiError::Http {
                status: 401 | 403,
                ..
            })
        )
    }
}

/// One round's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub windows: usize,
    pub pages: usize,
    pub listed: usize,
    /// Records new to the store.
    pub added: usize,
}

/// Graph's date-time literal (UTC, whole seconds, `Z`).
pub fn graph_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Splits `[start, end]` into consecutive windows of at most `max`.
pub fn windows(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max: chrono::TimeDelta,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + max).min(end);
        out.push((from, to));
        from = to;
    }
    out
}

/// Where a round starts: cursor − overlap, or `backfill` back on the first round; never before
/// what the feed keeps. Whole seconds (the filter's literal).
pub fn round_start(
    feed: GraphFeed,
    cursor: Option<DateTime<Utc>>,
    backfill: Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let wanted = match cursor {
        Some(c) => c - OVERLAP,
        None => now - chrono::TimeDelta::from_std(backfill).unwrap_or(chrono::TimeDelta::days(1)),
    };
    let start = wanted.max(now - feed.max_back());
    // Rounded up, so a start at the edge of the reach stays inside it.
    let whole = start.with_nanosecond(0).unwrap_or(start);
    if whole < start {
        whole + chrono::TimeDelta::seconds(1)
    } else {
        whole
    }
}

/// One round of `feed` for `tenant` up to `now` (see the module doc).
pub async fn round<S: Store>(
    tenant: &TenantRuntime,
    graph: &GraphRuntime,
    feed: GraphFeed,
    store: &S,
    now: DateTime<Utc>,
) -> Result<RoundReport, GraphPullError> {
    let tid = &tenant.cfg.tenant_id;
    let ct = feed.content_type();
    let cursor = store.cursor(tid, ct).await?.map(DateTime::<Utc>::from);
    if !tenant.listing.held() {
        // With replicas, another one took the tenant over while the cursor was read.
        return Ok(RoundReport::default());
    }
    let start = round_start(feed, cursor, tenant.cfg.graph.backfill, now);
    // Only the overlap clipped is no loss; a cursor before the reach is (the round start is
    // rounded up to a whole second).
    if let Some(c) = cursor.filter(|c| *c + chrono::TimeDelta::seconds(1) < start) {
        // The lost hours are incomplete for good, in the ledger as for the activity feeds
        // (durable before the cursor moves past them).
        store.ledger_add(gap_in_ledger(tid, ct, c, start)).await?;
        // Recorded before listing: once a window is stored the cursor is past the loss.
        tenant.health.gap(
            tid,
            Gap {
                source: ct.to_owned(),
                from: c,
                to: start,
                reason: format!(
                    "the cursor is older than the {} days Microsoft keeps this feed: listing was held back, or the collector stopped, that long",
                    // The reach is a few minutes short of whole days.
                    (feed.max_back().num_hours() + 23) / 24
                ),
                noticed_at: Utc::now(),
            },
        );
    }
    // The end may not lie in the future (message trace refuses it): now, rounded down.
    let end = now.with_nanosecond(0).unwrap_or(now);
    let mut report = RoundReport::default();
    for (from, to) in windows(start, end, feed.max_window()) {
        report.windows += 1;
        for path in feed.paths() {
            let filter = format!(
                "{p} ge {} and {p} le {}",
                graph_time(from),
                graph_time(to),
                p = feed.time_property()
            );
            let mut url = graph.client.first_url(feed, path, &filter);
            loop {
                // With replicas, reading stops as soon as the lease ends (the cursor stays at the
                // last window stored whole), not only at the round's start.
                if !tenant.listing.held() {
                    return Ok(report);
                }
                let page = graph.client.page(feed, &url).await?;
                report.pages += 1;
                report.listed += page.records.len();
                if !page.records.is_empty() {
                    let added = store
                        .enqueue(vec![page_item(tid, feed, url.as_str(), page.records)])
                        .await?;
                    if added.added > 0 {
                        // The store counts items; the new records are what it kept.
                        report.added += 1;
                    }
                }
                graph.update(feed, |s| s.pages += 1);
                let Some(next) = page.next else { break };
                url = graph.client.next_url(path, &next).map_err(|e| {
                    GraphPullError::ForeignNextLink {
                        path: (*path).to_owned(),
                        reason: e.to_string(),
                    }
                })?;
            }
        }
        store.advance_cursor(tid, ct, SystemTime::from(to)).await?;
        graph.update(feed, |s| s.cursor = Some(SystemTime::from(to)));
    }
    Ok(report)
}

/// A listed page as one queue item: its records with their identities (`tenant/feed/identity`,
/// lower-case tenant). A record without its identity fields is keyed by its whole text.
fn page_item(
    tenant_id: &str,
    feed: GraphFeed,
    url: &str,
    records: Vec<serde_json::Map<String, serde_json::Value>>,
) -> ContentRef {
    let tenant = tenant_id.to_ascii_lowercase();
    let ct = feed.content_type();
    let records = records
        .into_iter()
        .map(|r| {
            let identity = feed.identity(&r);
            let json = serde_json::Value::Object(r).to_string();
            let identity =
                identity.unwrap_or_else(|| format!("text:{}", crate::output::graph_key(ct, &json)));
            InlineRecord {
                key: format!("{tenant}/{ct}/{identity}"),
                json,
            }
        })
        .collect();
    ContentRef {
        tenant_id: tenant_id.to_owned(),
        content_type: ct.to_owned(),
        // The store names the item after its first new record.
        content_id: String::new(),
        content_uri: url.to_owned(),
        content_created: Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        content_expiration: None,
        records: Some(records),
    }
}

/// Lists `feed` of `tenant` every `interval` until shutdown (one task per tenant × feed, so a
/// refused or throttled feed holds nothing else).
#[allow(clippy::too_many_arguments)]
pub async fn run<S: Store>(
    tenant: Arc<TenantRuntime>,
    feed: GraphFeed,
    store: Arc<S>,
    interval: Duration,
    high_water: u64,
    counters: Arc<Counters>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let Some(graph) = tenant.graph.as_ref() else {
        return;
    };
    let tid = tenant.cfg.tenant_id.clone();
    let mut reported: Option<String> = None;
    loop {
        let wait = if !tenant.listing.held() {
            // With replicas, only the holder of the tenant's lease reads its feeds.
            interval
        } else if held_back(&tenant, store.as_ref(), high_water, &counters).await {
            // The tenant's own backlog (its output is slow or down): other tenants go on.
            interval
        } else {
            let outcome = tokio::select! {
                // The round ends at the store's now (the database's clock with replicas).
                r = async {
                    let now = store.now().await?;
                    round(&tenant, graph, feed, store.as_ref(), now.into()).await
                } => r,
                _ = shutdown.cancelled() => return,
            };
            match outcome {
                Ok(r) => {
                    graph.update(feed, |s| {
                        s.last_success = Some(SystemTime::now());
                        s.denied = false;
                        s.records += r.listed as u64;
                    });
                    if r.added > 0 {
                        wake.notify_waiters();
                    }
                    tenant.health.succeeded(&tenant.cfg, feed.content_type());
                    if reported.take().is_some() {
                        debug!(tenant.id = %tid, graph.feed = %feed, "Graph feed reads again");
                    }
                    debug!(tenant.id = %tid, graph.feed = %feed, windows = r.windows, pages = r.pages, listed = r.listed, "Graph round done");
                    interval
                }
                Err(e) => {
                    let text = e.to_string();
                    let denied = e.is_denied();
                    graph.update(feed, |s| {
                        s.last_error = Some(text.clone());
                        s.last_error_at = Some(SystemTime::now());
                        s.denied = denied;
                    });
                    let wait = if denied {
                        denied_retry(interval)
                    } else {
                        interval.min(RETRY_SOON)
                    };
                    // The tenant's health logs API errors when they start and end.
                    let logged = match &e {
                        GraphPullError::Api(api) => {
                            tenant.health.failed(&tenant.cfg, feed.content_type(), api)
                        }
                        _ => false,
                    };
                    if logged {
                        debug!(tenant.id = %tid, graph.feed = %feed, error = %text, retry_in_s = wait.as_secs(), "Graph feed failed");
                        reported = Some(text);
                    } else if reported.as_deref() != Some(text.as_str()) {
                        if denied {
                            warn!(tenant.id = %tid, graph.feed = %feed, error = %text, retry_in_s = wait.as_secs(),
                                "Graph feed refused: a permission, licence or service principal is missing; retrying slowly");
                        } else {
                            warn!(tenant.id = %tid, graph.feed = %feed, error = %text, retry_in_s = wait.as_secs(),
                                "Graph feed failed; retrying");
                        }
                        reported = Some(text);
                    }
                    wait
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap() + chrono::TimeDelta::hours(h)
    }

    #[test]
    fn a_30_day_message_trace_backfill_is_three_windows_of_10_days() {
        let now = t(0);
        let start = round_start(
            GraphFeed::MessageTrace,
            None,
            Duration::from_secs(30 * 86400),
            now,
        );
        let w = windows(start, now, GraphFeed::MessageTrace.max_window());
        assert_eq!(w.len(), 3);
        assert!(
            w.iter()
                .all(|(a, b)| *b - *a <= chrono::TimeDelta::days(10))
        );
        assert_eq!(w[0].0, now - chrono::TimeDelta::days(30));
        assert_eq!(w[2].1, now);
    }

    #[test]
    fn nothing_is_asked_beyond_the_reach() {
        let now = t(0) + chrono::TimeDelta::milliseconds(300);
        for (feed, days) in [(GraphFeed::MessageTrace, 90), (GraphFeed::SignIns, 30)] {
            let start = round_start(feed, None, Duration::from_secs(365 * 86400), now);
            assert!(start > now - chrono::TimeDelta::days(days));
            assert!(start < now - chrono::TimeDelta::days(days) + chrono::TimeDelta::minutes(10));
            assert_eq!(start.nanosecond(), 0);
        }
        // A cursor re-reads the overlap.
        let start = round_start(GraphFeed::SignIns, Some(t(-1)), Duration::ZERO, t(0));
        assert_eq!(start, t(-3));
    }

    #[test]
    fn filter_literal() {
        assert_eq!(graph_time(t(9)), "2026-11-30T09:00:00Z");
    }
}
