//! One worker: claim a blob → fetch (token attached by the client) → decode + map → output → complete.
//! Failures reschedule the blob with back-off; only failures that belong to the blob itself
//! (gone, expired, unreadable) can dead-letter it — an output or credential outage never drops data.
//!
//! Back-pressure: a worker holds one blob at a time, so blobs are fetched only as fast as the output
//! accepts them. When the output is down its [`super::gate`] closes: its blobs are neither claimed
//! nor fetched until a probe gets through, and a blob that was in flight is given back in its place.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Tenants;
use super::blob;
use super::gate::{MAX_PAUSE, Pass, ProbeGuard};
use crate::config::PipelineConfig;
use crate::mapping::Context;
use crate::mgmt_api::throttle::backoff;
use crate::mgmt_api::{ApiError, uri::ApiUri};
use crate::output::{Batch, Output};
use crate::store::{Claimed, Store};
use crate::telemetry::{Counters, Metrics};

/// How long an idle worker waits before looking at the queue again without a wake-up
/// (covers rescheduled blobs whose `not_before` passed).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long a worker may finish its blob after shutdown was requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    pub enrichment: Option<Arc<crate::enrich::Enrichment>>,
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

    /// Tenants whose output is paused now (their blobs are not claimed).
    fn paused_tenants(&self, now: Instant) -> Vec<String> {
        self.tenants
            .values()
            .filter(|t| !t.gate.claimable(now))
            .map(|t| t.cfg.tenant_id.clone())
            .collect()
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
        let renew = async {
            let mut tick =
                tokio::time::interval((self.cfg.lease / 3).max(Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = self.store.renew(seq, self.cfg.lease).await {
                    warn!(error = %e, "cannot renew a lease");
                }
            }
        };
        let outcome = tokio::select! {
            r = self.deliver(&item) => r,
            () = renew => unreachable_renew(),
        };
        let c = &item.content;
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

    async fn deliver(&self, item: &Claimed) -> Result<(), Failure> {
        let c = &item.content;
        let tenant = self
            .tenants
            .get(&c.tenant_id.to_ascii_lowercase())
            .ok_or_else(|| Failure::Dead("tenant is no longer configured".into()))?;
        let uri: ApiUri = tenant
            .client
            .base()
            .content_uri(&c.content_uri)
            .map_err(|e| Failure::Dead(format!("contentUri refused: {e}")))?;
        let pass = tenant.gate.admit(Instant::now());
        if pass == Pass::Wait {
            return Err(Failure::Release);
        }
        // A probe whose blob cannot be fetched or mapped is abandoned when this guard drops.
        let probe = ProbeGuard::new(&tenant.gate, pass);
        let labels = Metrics::tenant_labels(&tenant.cfg.tenant_id, &c.content_type);
        let fetch_started = Instant::now();
        let body = tenant
            .client
            .fetch_content(&uri)
            .await
            .map_err(|e| self.fetch_failure(item, e))?;
        let metrics = &self.counters.metrics;
        metrics
            .fetch_seconds
            .get_or_create(&labels)
            .observe(fetch_started.elapsed().as_secs_f64());
        Counters::add(&self.counters.blobs_fetched, 1);
        let received = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (format, encoding) = (tenant.cfg.format, tenant.cfg.encoding);
        let (tenant_id, content) = (tenant.cfg.tenant_id.clone(), c.clone());
        let (tenant_name, enrichment) = (tenant.cfg.tenant_name.clone(), self.enrichment.clone());
        // Mapping a large blob is CPU work: keep it off the async threads.
        let decoded = tokio::task::spawn_blocking(move || {
            let ctx = Context {
                format,
                tenant_id: &tenant_id,
                content_type: &content.content_type,
                content_id: &content.content_id,
                content_created: content.content_created.as_deref(),
                received: &received,
                tenant_name: tenant_name.as_deref(),
                enrichment: enrichment.as_deref(),
            };
            blob::decode(&body, encoding, &ctx)
        })
        .await
        .map_err(|e| Failure::Retry {
            after: self.delay(item, None),
            reason: format!("mapping task failed: {e}"),
            blob_specific: false,
        })?
        .map_err(|e| Failure::Retry {
            after: self.delay(item, None),
            reason: e.to_string(),
            blob_specific: true,
        })?;
        Counters::add(&self.counters.mapping_issues, decoded.issues as u64);
        metrics
            .records_mapped
            .get_or_create(&labels)
            .inc_by(decoded.events.len() as u64);
        let batch = Batch {
            tenant_id: tenant.cfg.tenant_id.clone(),
            content_type: c.content_type.clone(),
            content_id: c.content_id.clone(),
            events: decoded.events,
        };
        let send_started = Instant::now();
        let sent = tenant.output.send(&batch).await;
        metrics
            .delivery_seconds
            .get_or_create(&Metrics::one_label("output", &tenant.output_name))
            .observe(send_started.elapsed().as_secs_f64());
        let output = &tenant.output_name;
        let is_probe = probe.is_probe();
        probe.decided();
        let e = match sent {
            Ok(report) => {
                if tenant.gate.succeeded() {
                    info!(output.name = %output, "output accepts again: deliveries resume");
                }
                self.counters.activity.output_ok(output);
                metrics
                    .records_delivered
                    .get_or_create(&labels)
                    .inc_by(report.written as u64);
                Counters::add(&self.counters.records_delivered, report.written as u64);
                Counters::add(&self.counters.records_duplicate, report.duplicates as u64);
                debug!(tenant.id = %c.tenant_id, content.id = %c.content_id, output.name = %output,
                       written = report.written, duplicates = report.duplicates, "blob delivered");
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

fn unreachable_renew() -> Result<(), Failure> {
    Err(Failure::Retry {
        after: Duration::from_secs(1),
        reason: "lease renewal loop ended".into(),
        blob_specific: false,
    })
}
