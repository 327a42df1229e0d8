//! One worker: claim a blob → fetch (token attached by the client) → decode + map → output, batch
//! by batch with the progress recorded after each ([`super::stream`]) → complete.
//! Failures reschedule the blob with back-off; only failures that belong to the blob itself
//! (gone, expired, unreadable) can dead-letter it — an output or credential outage never drops data.
//!
//! Back-pressure: a worker holds one blob at a time, so blobs are fetched only as fast as the output
//! accepts them. When the output is down its [`super::gate`] closes: its blobs are neither claimed
//! nor fetched until a probe gets through, and a blob that was in flight is given back in its place.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::PipelineConfig;
use super::gate::{MAX_PAUSE, Pass, ProbeGuard};
use super::stream::{BlobStream, MapSpec, Piece, StreamError};
use super::tenant::{TenantRuntime, Tenants};
use crate::mgmt_api::throttle::backoff;
use crate::mgmt_api::{ApiError, uri::ApiUri};
use crate::output::{Batch, Event, Output};
use crate::store::ledger::{self, LedgerCounts, LedgerDelta, LedgerKey};
use crate::store::retention::AUDIT_SEARCH_CLAIM_WINDOW;
use crate::store::{Claimed, KeyHashing, Store, StoreError, tenant_claim_mix};
use crate::telemetry::{Counters, Labels, Metrics, unix_now};

/// How long an idle worker waits before looking at the queue again without a wake-up
/// (covers rescheduled blobs whose `not_before` passed).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long a worker may finish its blob after shutdown was requested.
/// The source name under which content fetches report to the tenant's health.
const FETCHES: &str = "content fetches";
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the blobs of a tenant this replica is not configured for are passed over before one
/// is looked at again (to dead-letter it once its content expired, or to see the tenant gone).
const UNKNOWN_RECHECK: Duration = Duration::from_secs(600);
/// How long Microsoft keeps content; a blob whose expiry is unknown (a Graph page carried in the
/// queue) counts from when it was queued.
const CONTENT_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Shared by all workers of the process.
pub struct Workers<S> {
    pub store: Arc<S>,
    pub tenants: Arc<Tenants>,
    pub cfg: PipelineConfig,
    /// Notified after every enqueue so idle workers start at once.
    pub wake: Arc<Notify>,
    pub counters: Arc<Counters>,
    pub shutdown: CancellationToken,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// Format `ecs` enrichment, when configured.
    pub enrichment: Option<Arc<crate::mapping::enrich::Enrichment>>,
    /// How long a record delivered by one blob is dropped from others (`store.record_dedup_window`;
    /// zero: off).
    pub record_dedup_window: Duration,
    /// Whether record counters go to the completeness ledger (`completeness.record`).
    pub ledger: bool,
}

/// What one attempt at a blob did, per hour of the records' `CreationTime`, for the completeness
/// ledger: kept in memory while the blob streams and handed to the store once at the end.
#[derive(Default)]
struct Tally {
    fetched: bool,
    /// hour → (parsed, kept after Microsoft's duplicates were dropped, accepted by the output).
    hours: std::collections::BTreeMap<i64, [u64; 3]>,
    /// (hour, RecordType) → records accepted: what `verify` compares with Audit Search. Counted
    /// in runs of one key (records of a blob come in runs), so the map is touched per run.
    types: std::collections::BTreeMap<(i64, i32), u64>,
}

impl Tally {
    /// Counts `events` into column `col` by the hour in their key (`fallback` without one, and
    /// for a Graph page: its keys are hashes, not time-ordered).
    fn count(&mut self, events: &[Event], col: usize, fallback: i64, by_key: bool) {
        let mut last: Option<(i64, u64)> = None;
        let mut run: Option<((i64, i32), u64)> = None;
        for e in events {
            let h = e
                .key
                .filter(|_| by_key)
                .and_then(ledger::hour_of_key)
                .unwrap_or(fallback);
            if col == 2
                && let Some(rt) = e.record_type
            {
                match &mut run {
                    Some((k, n)) if *k == (h, rt) => *n += 1,
                    _ => {
                        if let Some((k, n)) = run.replace(((h, rt), 1)) {
                            *self.types.entry(k).or_default() += n;
                        }
                    }
                }
            }
            match &mut last {
                Some((lh, n)) if *lh == h => *n += 1,
                _ => {
                    if let Some((lh, n)) = last.take() {
                        self.hours.entry(lh).or_default()[col] += n;
                    }
                    last = Some((h, 1));
                }
            }
        }
        if let Some((lh, n)) = last {
            self.hours.entry(lh).or_default()[col] += n;
        }
        if let Some((k, n)) = run {
            *self.types.entry(k).or_default() += n;
        }
    }

    fn deltas(self, item: &Claimed, output: &str) -> Vec<LedgerDelta> {
        let c = &item.content;
        let blob_hour = ledger::blob_hour(c.content_created.as_deref(), item.enqueued_at);
        let key = |hour| LedgerKey::new(&c.tenant_id, &c.content_type, hour);
        let mut out = Vec::with_capacity(self.hours.len() + 1);
        if self.fetched {
            out.push(LedgerDelta {
                key: key(blob_hour),
                counts: LedgerCounts {
                    fetched: 1,
                    ..Default::default()
                },
            });
        }
        for (hour, [parsed, kept, accepted]) in self.hours {
            let mut counts = LedgerCounts {
                parsed,
                duplicates: parsed.saturating_sub(kept),
                ..Default::default()
            };
            if accepted > 0 {
                counts.accepted.insert(output.to_owned(), accepted);
            }
            for ((_, rt), n) in self.types.range((hour, i32::MIN)..=(hour, i32::MAX)) {
                counts.record_types.insert(rt.to_string(), *n);
            }
            out.push(LedgerDelta {
                key: key(hour),
                counts,
            });
        }
        out
    }
}

enum Failure {
    /// The output is paused: give the blob back untouched, in its place in line.
    Release,
    /// Try again after the delay. `blob_specific` failures count towards dead-lettering.
    Retry {
        after: Duration,
        reason: String,
        blob_specific: bool,
    },
    /// The blob can never be fetched (gone, expired, refused URL).
    Dead(String),
}

impl<S: Store> Workers<S> {
    /// Runs one worker until shutdown.
    pub async fn run(self: Arc<Self>, worker: usize) {
        debug!(worker, "worker started");
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            let skip = self.paused_tenants(now);
            if !skip.is_empty() && skip.len() >= self.tenants.len() {
                // Every output is paused: claim nothing until a gate lets a probe through.
                let until = self.next_reopen().unwrap_or(now + IDLE_POLL);
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                continue;
            }
            let claimed = match self.store.claim_except(1, self.cfg.lease, &skip).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(worker, error = %e, "cannot claim from the store");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            let Some(item) = claimed.into_iter().next() else {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                continue;
            };
            if !self
                .tenants
                .contains_key(&item.content.tenant_id.to_ascii_lowercase())
            {
                self.not_configured_here(item).await;
                continue;
            }
            let shutdown = self.shutdown.clone();
            tokio::select! {
                _ = self.process(item) => {}
                _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                    info!(worker, "shutdown: leaving the blob in flight to the next start");
                    break;
                }
            }
        }
        debug!(worker, "worker stopped");
    }

    /// Tenants whose blobs are not claimed now: those whose output is paused, and those this
    /// replica is not configured for (met in the last `UNKNOWN_RECHECK`).
    fn paused_tenants(&self, now: Instant) -> Vec<String> {
        let recent = SystemTime::now()
            .checked_sub(UNKNOWN_RECHECK)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.tenants
            .values()
            .filter(|t| !t.gate.claimable(now))
            .map(|t| t.cfg.tenant_id.clone())
            .chain(
                self.counters
                    .activity
                    .unknown_tenants()
                    .into_iter()
                    .filter(|(_, u)| u.last_seen > recent)
                    .map(|(id, _)| id),
            )
            .collect()
    }

    /// A blob of a tenant this replica's configuration does not name. During a rolling
    /// configuration change another replica may know the tenant, so the blob is given back
    /// untouched (dead-lettering it would lose it: its contentId stays in the dedup set) and the
    /// tenant's blobs are passed over for a while. Only a blob whose content Microsoft no longer
    /// keeps is dead-lettered: no replica could fetch it any more.
    async fn not_configured_here(&self, item: Claimed) {
        let c = &item.content;
        let now = SystemTime::now();
        if content_expired(&item, now) {
            self.dead_letter(
                &item,
                "its tenant is not configured on this replica, and its content expired before a replica configured for it fetched it",
            )
            .await;
            return;
        }
        if self.counters.activity.unknown_tenant_met(&c.tenant_id, now) {
            info!(tenant.id = %c.tenant_id, "queued blobs of a tenant this replica is not configured for: left to the replicas that are (see /status)");
        }
        if let Err(e) = self.store.release(item.seq).await {
            warn!(error = %e, "cannot give a blob back; its lease will expire instead");
        }
    }

    /// The earliest moment a closed gate lets a probe through.
    fn next_reopen(&self) -> Option<Instant> {
        self.tenants
            .values()
            .filter_map(|t| t.gate.reopens_at())
            .min()
    }

    async fn process(&self, item: Claimed) {
        let seq = item.seq;
        let lease = self.cfg.lease;
        // The lease as this worker can vouch for it: from the claim (or the last renewal that
        // succeeded) on, less a margin for the clocks and the call that took it. Past it another
        // replica may hold the blob, so this one stops delivering, whether or not the store
        // answers (at most the batch in flight is repeated by the next holder).
        let margin = (lease / 5).min(Duration::from_secs(30));
        let renew = async {
            let mut deadline = Instant::now() + lease - margin;
            let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tokio::time::sleep_until(deadline.into()) => return "its lease ran out without a renewal (the store did not answer)",
                }
                let asked = Instant::now();
                let renewed = tokio::select! {
                    r = self.store.renew(seq, lease) => r,
                    () = tokio::time::sleep_until(deadline.into()) => return "its lease ran out without a renewal (the store did not answer)",
                };
                match renewed {
                    Ok(()) => deadline = asked + lease - margin,
                    // Another replica claimed it after our lease lapsed: it is theirs now.
                    Err(StoreError::LeaseLost(_)) => {
                        return "another replica took it over after its lease lapsed";
                    }
                    // Completed by another replica (it claimed it after our lease lapsed).
                    Err(StoreError::NotFound(_)) => return "another replica completed it",
                    Err(e) => warn!(error = %e, "cannot renew a lease"),
                }
            }
        };
        let c = &item.content;
        let mut tally = Tally::default();
        let outcome = tokio::select! {
            r = self.deliver(&item, &mut tally) => r,
            why = renew => {
                Counters::add(&self.counters.blob_leases_lost, 1);
                warn!(tenant.id = %c.tenant_id, content.id = %c.content_id, why,
                      "stopped delivering a blob: leaving it to the replica that holds it now");
                return;
            }
        };
        if self.ledger
            && let Some(tenant) = self.tenants.get(&c.tenant_id.to_ascii_lowercase())
        {
            let deltas = tally.deltas(&item, &tenant.output_name);
            if !deltas.is_empty()
                && let Err(e) = self.store.ledger_add(deltas).await
            {
                // Counts only: the ledger's verdict rests on the queue's own counters.
                debug!(error = %e, "cannot add a blob's counts to the completeness ledger");
            }
        }
        match outcome {
            Err(Failure::Release) => {
                debug!(tenant.id = %c.tenant_id, content.id = %c.content_id, "output paused: blob given back");
                if let Err(e) = self.store.release(seq).await {
                    warn!(error = %e, "cannot give a blob back; its lease will expire instead");
                }
            }
            Ok(()) => {
                if let Err(e) = self.store.complete(seq).await {
                    // The lease expires and the blob is sent again; the output's dedup absorbs it.
                    warn!(tenant.id = %c.tenant_id, content.id = %c.content_id, error = %e, "cannot complete a delivered blob");
                } else {
                    Counters::add(&self.counters.blobs_completed, 1);
                }
            }
            Err(Failure::Retry {
                after,
                reason,
                blob_specific,
            }) => {
                Counters::add(&self.counters.blobs_failed, 1);
                if blob_specific && item.attempts + 1 >= self.cfg.max_attempts {
                    self.dead_letter(
                        &item,
                        &format!("{} attempts, last: {reason}", item.attempts + 1),
                    )
                    .await;
                    return;
                }
                warn!(tenant.id = %c.tenant_id, content.type = %c.content_type, content.id = %c.content_id,
                      attempt = item.attempts + 1, retry_in_ms = after.as_millis() as u64, reason = %reason, "blob will be retried");
                if let Err(e) = self
                    .store
                    .reschedule(seq, SystemTime::now() + after, &reason)
                    .await
                {
                    warn!(error = %e, "cannot reschedule; the lease will expire instead");
                }
            }
            Err(Failure::Dead(reason)) => self.dead_letter(&item, &reason).await,
        }
    }

    async fn dead_letter(&self, item: &Claimed, reason: &str) {
        let c = &item.content;
        warn!(tenant.id = %c.tenant_id, content.type = %c.content_type, content.id = %c.content_id, reason, "blob dead-lettered");
        Counters::add(&self.counters.blobs_dead_lettered, 1);
        if let Err(e) = self.store.dead_letter(item.seq, reason).await {
            warn!(error = %e, "cannot dead-letter");
        }
    }

    /// Fetches the blob and delivers it batch by batch, resuming after the records the output
    /// accepted before (`item.delivered`); after each accepted batch but the last, the progress is
    /// recorded. `Ok` when the whole blob was accepted.
    async fn deliver(&self, item: &Claimed, tally: &mut Tally) -> Result<(), Failure> {
        let c = &item.content;
        let tenant = self
            .tenants
            .get(&c.tenant_id.to_ascii_lowercase())
            // Checked before the claim was processed; a release makes it another replica's.
            .ok_or(Failure::Release)?;
        // Records the queue carries (a Graph page) need no fetch; a blob is checked before its
        // contentUri gets a token.
        let uri: Option<ApiUri> = match &c.records {
            Some(_) => None,
            None => Some(
                tenant
                    .client
                    .base()
                    .content_uri(&c.content_uri, &c.content_id)
                    .map_err(|e| Failure::Dead(format!("contentUri refused: {e}")))?,
            ),
        };
        let pass = tenant.gate.admit(Instant::now());
        if pass == Pass::Wait {
            return Err(Failure::Release);
        }
        // A probe whose blob cannot be fetched or mapped is abandoned when this guard drops.
        let mut probe = Some(ProbeGuard::new(&tenant.gate, pass));
        let labels = Metrics::tenant_labels(&tenant.cfg.tenant_id, &c.content_type);
        let metrics = &self.counters.metrics;
        let body = match &uri {
            Some(uri) => {
                let fetch_started = Instant::now();
                let body = match tenant.client.fetch_content(uri).await {
                    Ok(body) => {
                        tenant.health.succeeded(&tenant.cfg, FETCHES);
                        body
                    }
                    Err(e) => {
                        tenant.health.failed(&tenant.cfg, FETCHES, &e);
                        return Err(self.fetch_failure(item, e));
                    }
                };
                metrics
                    .fetch_seconds
                    .get_or_create(&labels)
                    .observe(fetch_started.elapsed().as_secs_f64());
                Counters::add(&self.counters.blobs_fetched, 1);
                tally.fetched = true;
                Some(body)
            }
            None => None,
        };
        let spec = MapSpec {
            // Carried records were re-encoded as UTF-8 when listed.
            encoding: if c.records.is_some() {
                encoding_rs::UTF_8
            } else {
                tenant.cfg.encoding
            },
            format: tenant.cfg.format,
            tenant_name: tenant.cfg.tenant_name.clone(),
            enrichment: self.enrichment.clone(),
            tenant_id: tenant.cfg.tenant_id.clone(),
            content_type: c.content_type.clone(),
            content_id: c.content_id.clone(),
            content_created: c.content_created.clone(),
            received: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            skip: item.delivered,
            batch_records: self.cfg.batch_records,
            batch_bytes: self.cfg.batch_bytes,
        };
        let stream = match (body, &c.records) {
            (Some(body), _) => BlobStream::start(body, spec),
            (None, records) => BlobStream::inline(inline_array(records.as_deref()), spec),
        };
        let mut stream = stream.map_err(|e| self.stream_failure(item, e))?;
        // The progress of batch k is written while batch k+1 is sent: both wait on an fsync, and
        // one after the other they would halve the pace of a large blob. At most one write is in
        // flight, so a crash repeats at most two batches of the blob (k and k+1).
        let mut recording: Option<tokio::task::JoinHandle<()>> = None;
        let blob_hour = ledger::blob_hour(c.content_created.as_deref(), item.enqueued_at);
        // Keys of Management API records (audit-search ones included) begin with their creation
        // minute; a Graph page's are hashes.
        let by_key = !c.content_type.starts_with("Graph.");
        let outcome = loop {
            let piece = match stream.next().await {
                Ok(p) => p,
                Err(e) => break Err(self.stream_failure(item, e)),
            };
            let Piece { part, last } = piece;
            Counters::add(&self.counters.mapping_issues, part.issues as u64);
            for (record_type, n) in &part.unknown_record_types {
                metrics.unknown_record_types.met(*record_type, *n);
            }
            metrics
                .records_mapped
                .get_or_create(&labels)
                .inc_by(part.events.len() as u64);
            if self.ledger {
                tally.count(&part.events, 0, blob_hour, by_key);
            }
            let events = match self.drop_duplicates(item, &labels, part.events).await {
                Ok(events) => events,
                Err(f) => break Err(f),
            };
            if self.ledger {
                tally.count(&events, 1, blob_hour, by_key);
            }
            let batch = Batch {
                tenant_id: tenant.cfg.tenant_id.clone(),
                tenant_name: tenant.cfg.tenant_name.clone(),
                content_type: c.content_type.clone(),
                content_id: c.content_id.clone(),
                events,
            };
            // The first batch sent decides a probe; a batch of duplicates only is not sent.
            if !batch.events.is_empty()
                && let Err(f) = self.send(tenant, item, &labels, &batch, probe.take()).await
            {
                break Err(f);
            }
            if self.ledger {
                tally.count(&batch.events, 2, blob_hour, by_key);
            }
            if let Some(previous) = recording.take() {
                let _ = previous.await;
            }
            if last {
                break Ok(());
            }
            recording = Some(self.record_progress(item, part.through));
        };
        if let Some(previous) = recording {
            let _ = previous.await;
        }
        outcome
    }

    /// Microsoft's own duplicates out of a batch of a Management API blob: records another blob
    /// delivered within `record_dedup_window` (claimed in the store, so across replicas), and
    /// repeats within the batch. Graph pages need none: the store kept only new records of them.
    /// Audit-search records (carried, of a Management API content type) are claimed with
    /// [`AUDIT_SEARCH_CLAIM_WINDOW`]: one a blob delivered within the Management API's reach is
    /// dropped (`pipeline::audit_backfill`).
    async fn drop_duplicates(
        &self,
        item: &Claimed,
        labels: &Labels,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, Failure> {
        let c = &item.content;
        let audit_search = c.records.is_some() && !c.content_type.starts_with("Graph.");
        if self.record_dedup_window.is_zero() || (c.records.is_some() && !audit_search) {
            return Ok(events);
        }
        let window = if audit_search {
            self.record_dedup_window.max(AUDIT_SEARCH_CLAIM_WINDOW)
        } else {
            self.record_dedup_window
        };
        let mix = tenant_claim_mix(&c.tenant_id);
        let mut seen: HashSet<u128, KeyHashing> = HashSet::default();
        let keys: Vec<u128> = events
            .iter()
            .filter_map(|e| e.key)
            .map(|k| k ^ mix)
            .filter(|k| seen.insert(*k))
            .collect();
        if keys.is_empty() {
            return Ok(events);
        }
        let verdicts = self
            .store
            .claim_records(&c.content_id, keys.clone(), window)
            .await
            .map_err(|e| Failure::Retry {
                after: self.delay(item, None),
                reason: format!("record dedup: {e}"),
                blob_specific: false,
            })?;
        // Each key taken once: a repeat within the batch finds it gone.
        let mut mine: HashSet<u128, KeyHashing> = keys
            .into_iter()
            .zip(verdicts)
            .filter_map(|(k, m)| m.then_some(k))
            .collect();
        let before = events.len();
        let kept: Vec<Event> = events
            .into_iter()
            .filter(|e| e.key.is_none_or(|k| mine.remove(&(k ^ mix))))
            .collect();
        let dropped = (before - kept.len()) as u64;
        if dropped > 0 {
            Counters::add(&self.counters.duplicate_records_dropped, dropped);
            self.counters
                .metrics
                .duplicate_records_dropped
                .get_or_create(labels)
                .inc_by(dropped);
            debug!(tenant.id = %c.tenant_id, content.id = %c.content_id, dropped,
                   "records another blob delivered already (Microsoft's duplicates) dropped");
        }
        Ok(kept)
    }

    /// Writes a blob's progress in the background (see `deliver`).
    fn record_progress(&self, item: &Claimed, through: u64) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let (seq, tenant, content) = (
            item.seq,
            item.content.tenant_id.clone(),
            item.content.content_id.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = store.record_progress(seq, through).await {
                // Only costs a resend of these batches if the process dies before the next write.
                warn!(tenant.id = %tenant, content.id = %content, error = %e,
                      "cannot record a blob's progress");
            }
        })
    }

    /// Sends one batch of the blob; on failure, pauses the output as its error calls for.
    async fn send(
        &self,
        tenant: &TenantRuntime,
        item: &Claimed,
        labels: &Labels,
        batch: &Batch,
        probe: Option<ProbeGuard<'_>>,
    ) -> Result<(), Failure> {
        let c = &item.content;
        let metrics = &self.counters.metrics;
        let send_started = Instant::now();
        let sent = tenant.output.send(batch).await;
        metrics
            .delivery_seconds
            .get_or_create(&Metrics::one_label("output", &tenant.output_name))
            .observe(send_started.elapsed().as_secs_f64());
        let output = &tenant.output_name;
        let is_probe = probe.as_ref().is_some_and(ProbeGuard::is_probe);
        if let Some(p) = probe {
            p.decided();
        }
        let e = match sent {
            Ok(report) => {
                if tenant.gate.succeeded() {
                    info!(output.name = %output, "output accepts again: deliveries resume");
                }
                self.counters.activity.output_ok(output);
                metrics
                    .records_delivered
                    .get_or_create(labels)
                    .inc_by(report.written as u64);
                metrics.last_delivery.get_or_create(labels).set(unix_now());
                Counters::add(&self.counters.records_delivered, report.written as u64);
                Counters::add(&self.counters.records_duplicate, report.duplicates as u64);
                debug!(tenant.id = %c.tenant_id, content.id = %c.content_id, output.name = %output,
                       written = report.written, duplicates = report.duplicates, "batch delivered");
                return Ok(());
            }
            Err(e) => e,
        };
        self.counters.activity.output_failed(output, &e.to_string());
        Counters::add(&self.counters.output_errors, 1);
        let now = Instant::now();
        // A refusal (`Fatal`: wrong credentials, a missing index, rejected documents) pauses the
        // output as an outage does: most refusals hold for every batch, and fetching blob after
        // blob only to have each refused would spend the tenant's API quota for nothing. A refusal
        // of one batch only costs a short pause: the next probe, with another blob, reopens.
        if let Some(until) = tenant.gate.failed(is_probe, now) {
            Counters::add(&self.counters.output_pauses, 1);
            warn!(output.name = %output, retry_in_ms = (until - now).as_millis() as u64,
                  retryable = e.is_retryable(), reason = %e,
                  "output unavailable: deliveries to it are paused and its blobs wait in the queue");
        }
        if !e.is_retryable() && !is_probe {
            // The refused blob itself counts an attempt and waits its back-off.
            return Err(Failure::Retry {
                after: self.delay(item, None).min(MAX_PAUSE),
                reason: e.to_string(),
                blob_specific: false,
            });
        }
        if !is_probe {
            // Given back in its place; the batches accepted so far stay recorded.
            return Err(Failure::Release);
        }
        // The probe's blob counts an attempt and goes behind the blobs waiting since before the
        // outage, so one blob that keeps failing cannot hold up the whole output.
        let after = tenant
            .gate
            .reopens_at()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        Err(Failure::Retry {
            after,
            reason: e.to_string(),
            blob_specific: false,
        })
    }

    /// A blob that stopped in the middle: a broken blob counts towards dead-lettering, a broken
    /// connection is retried like any failed fetch.
    fn stream_failure(&self, item: &Claimed, e: StreamError) -> Failure {
        match e {
            StreamError::Fetch(e) => self.fetch_failure(item, e),
            StreamError::Blob(e) => Failure::Retry {
                after: self.delay(item, None),
                reason: e.to_string(),
                blob_specific: true,
            },
            StreamError::Stopped(reason) => Failure::Retry {
                after: self.delay(item, None),
                reason,
                blob_specific: false,
            },
        }
    }

    fn fetch_failure(&self, item: &Claimed, e: ApiError) -> Failure {
        match e.code() {
            Some("AF20050") | Some("AF20051") | Some("AF20052") => {
                return Failure::Dead(e.to_string());
            }
            _ => {}
        }
        let blob_specific = matches!(&e, ApiError::Http { status, .. } if *status != 429 && *status < 500 && *status != 401)
            || matches!(e, ApiError::Decode(_));
        Failure::Retry {
            after: self.delay(item, e.retry_after()),
            reason: e.to_string(),
            blob_specific,
        }
    }

    fn delay(&self, item: &Claimed, asked: Option<Duration>) -> Duration {
        asked.unwrap_or_else(|| backoff(self.retry_base, Duration::from_secs(300), item.attempts))
    }
}

/// The carried records as one JSON array, the shape of a fetched blob.
fn inline_array(records: Option<&[crate::store::InlineRecord]>) -> bytes::Bytes {
    let records = records.unwrap_or_default();
    let mut out = Vec::with_capacity(2 + records.iter().map(|r| r.json.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r.json.as_bytes());
    }
    out.push(b']');
    bytes::Bytes::from(out)
}

/// Whether Microsoft no longer keeps the blob's content: past its `contentExpiration`, or, when
/// that is unknown, queued longer than Microsoft keeps content.
fn content_expired(item: &Claimed, now: SystemTime) -> bool {
    let expires = item
        .content
        .content_expiration
        .as_deref()
        .and_then(|e| {
            chrono::NaiveDateTime::parse_from_str(e.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
        })
        .map(|t| SystemTime::from(t.and_utc()))
        .unwrap_or(item.enqueued_at + CONTENT_KEPT);
    now > expires
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ContentRef;

    fn claimed(expiration: Option<&str>, enqueued_at: SystemTime) -> Claimed {
        Claimed {
            seq: 1,
            content: ContentRef {
                tenant_id: "t".into(),
                content_type: "Audit.General".into(),
                content_id: "c".into(),
                content_uri: "https://manage.office.com/api/v1.0/t/activity/feed/audit/c".into(),
                content_created: None,
                content_expiration: expiration.map(str::to_owned),
                records: None,
            },
            attempts: 0,
            enqueued_at,
            delivered: 0,
        }
    }

    #[test]
    fn accepted_records_are_counted_per_hour_and_record_type() {
        let h = 1_767_261_600;
        let ev = |minute: i64, rt: Option<i32>| Event {
            key: Some(crate::output::time_ordered((minute / 60) as u32, 7)),
            json: Vec::new(),
            record_type: rt,
        };
        let (a, b) = (h + 60, h + 3600 + 60);
        let events = [
            ev(a, Some(2)),
            ev(a, Some(2)),
            ev(a, Some(6)),
            ev(a, Some(2)),
            ev(b, Some(2)),
            ev(b, None),
        ];
        let mut t = Tally::default();
        t.count(&events, 2, 0, true);
        // Only what the output accepted (column 2) is counted by type.
        t.count(&events, 0, 0, true);
        let deltas = t.deltas(&claimed(None, SystemTime::now()), "file");
        let of = |hour: i64| {
            deltas
                .iter()
                .find(|d| d.key.hour == hour)
                .map(|d| d.counts.record_types.clone())
                .unwrap()
        };
        assert_eq!(of(h), [("2".into(), 3), ("6".into(), 1)].into());
        assert_eq!(of(h + 3600), [("2".into(), 1)].into());
    }

    #[test]
    fn content_expires_at_its_expiration_or_seven_days_after_it_was_queued() {
        let at =
            |s: &str| SystemTime::from(chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc());
        let now = at("2026-12-07T12:00:00Z");
        let queued = now - Duration::from_secs(3600);
        assert!(!content_expired(
            &claimed(Some("2026-12-08T00:00:00.000Z"), queued),
            now
        ));
        assert!(content_expired(
            &claimed(Some("2026-12-07T11:59:59.5"), queued),
            now
        ));
        // Unknown (or unreadable) expiry: Microsoft's 7 days from when it was queued.
        assert!(!content_expired(&claimed(None, queued), now));
        assert!(!content_expired(&claimed(Some("soon"), queued), now));
        let old = now - CONTENT_KEPT - Duration::from_secs(1);
        assert!(content_expired(&claimed(None, old), now));
    }
}
