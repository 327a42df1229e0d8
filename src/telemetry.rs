//! Logs (tracing, human or JSON) and the process-wide counters that progress reports and the admin
//! API's metrics read.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides `default_level`. Logs go to stderr so that
/// the stdout output stays pure NDJSON.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: log files and journald would keep the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Monotonic counters of what flowed through the collector.
#[derive(Debug, Default)]
pub struct Counters {
    pub notifications_accepted: AtomicU64,
    pub notifications_rejected: AtomicU64,
    pub notifications_duplicate: AtomicU64,
    pub validations: AtomicU64,
    pub blobs_fetched: AtomicU64,
    pub blobs_failed: AtomicU64,
    pub blobs_completed: AtomicU64,
    pub blobs_dead_lettered: AtomicU64,
    pub records_delivered: AtomicU64,
    pub records_duplicate: AtomicU64,
    pub mapping_issues: AtomicU64,
    pub output_errors: AtomicU64,
    pub token_refreshes: AtomicU64,
    pub subscriptions_started: AtomicU64,
    pub throttled: AtomicU64,
    /// Tenant listing rounds skipped while the tenant's queue was at `pipeline.queue_high_water`.
    pub listings_deferred: AtomicU64,
    /// Times an output went down and its deliveries were paused (its gate closed).
    pub output_pauses: AtomicU64,
    /// Dedup entries forgotten by the retention prune.
    pub dedup_pruned: AtomicU64,
    /// Record claims (record dedup) forgotten after `store.record_dedup_window`.
    pub record_claims_pruned: AtomicU64,
    /// Records dropped because another blob already delivered them (Microsoft's duplicates).
    pub duplicate_records_dropped: AtomicU64,
    /// Listing windows lost because Microsoft no longer kept them (`/status` gaps).
    pub listing_gaps: AtomicU64,
    /// Blobs a worker stopped delivering because its lease ran out or another replica took or
    /// completed the blob.
    pub blob_leases_lost: AtomicU64,
    pub activity: Activity,
    pub metrics: Metrics,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Last-seen times that the admin API's status reports: notifications per (tenant, content type)
/// and the last success / failure of each output.
#[derive(Debug, Default)]
pub struct Activity {
    notifications:
        std::sync::Mutex<std::collections::BTreeMap<(String, String), std::time::SystemTime>>,
    outputs: std::sync::Mutex<std::collections::BTreeMap<String, OutputHealth>>,
    /// When the dedup set's prune last completed.
    last_prune: std::sync::Mutex<Option<std::time::SystemTime>>,
    /// Tenants whose queued blobs this replica met but its configuration does not name (another
    /// replica's newer or older configuration does), by lower-case id. At most one entry per
    /// tenant with queued blobs.
    unknown_tenants: std::sync::Mutex<std::collections::BTreeMap<String, UnknownTenant>>,
    /// The last measure of this replica's clock against the shared store's
    /// (`store::clock`); `None` with a store of one process or before the first.
    clock_skew: std::sync::Mutex<Option<ClockSkew>>,
}

/// How far this replica's clock is ahead of the shared store's (negative: behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClockSkew {
    pub skew_ms: i64,
    /// When it was measured (this replica's clock).
    pub measured_at: std::time::SystemTime,
}

/// A tenant with queued blobs that this replica is not configured for: it leaves them to the
/// replicas that are.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnknownTenant {
    pub first_seen: std::time::SystemTime,
    pub last_seen: std::time::SystemTime,
    /// Its blobs this replica claimed and gave back untouched.
    pub blobs_left: u64,
}

/// What the status page says about one output.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutputHealth {
    pub last_success: Option<std::time::SystemTime>,
    pub last_error: Option<std::time::SystemTime>,
    pub last_error_reason: Option<String>,
    pub consecutive_errors: u64,
}

impl Activity {
    pub fn notified(&self, tenant_id: &str, content_type: &str) {
        if let Ok(mut m) = self.notifications.lock() {
            m.insert(
                (tenant_id.to_string(), content_type.to_string()),
                std::time::SystemTime::now(),
            );
        }
    }

    pub fn output_ok(&self, output: &str) {
        if let Ok(mut m) = self.outputs.lock() {
            let h = m.entry(output.to_string()).or_default();
            h.last_success = Some(std::time::SystemTime::now());
            h.consecutive_errors = 0;
        }
    }

    pub fn output_failed(&self, output: &str, reason: &str) {
        if let Ok(mut m) = self.outputs.lock() {
            let h = m.entry(output.to_string()).or_default();
            h.last_error = Some(std::time::SystemTime::now());
            h.last_error_reason = Some(reason.to_string());
            h.consecutive_errors += 1;
        }
    }

    pub fn pruned(&self, at: std::time::SystemTime) {
        if let Ok(mut t) = self.last_prune.lock() {
            *t = Some(at);
        }
    }

    pub fn last_prune(&self) -> Option<std::time::SystemTime> {
        self.last_prune.lock().ok().and_then(|t| *t)
    }

    pub fn set_clock_skew(&self, skew: ClockSkew) {
        if let Ok(mut s) = self.clock_skew.lock() {
            *s = Some(skew);
        }
    }

    pub fn clock_skew(&self) -> Option<ClockSkew> {
        self.clock_skew.lock().ok().and_then(|s| *s)
    }

    /// A blob of a tenant this replica is not configured for was given back; `true` the first
    /// time the tenant is met.
    pub fn unknown_tenant_met(&self, tenant_id: &str, at: std::time::SystemTime) -> bool {
        let Ok(mut m) = self.unknown_tenants.lock() else {
            return false;
        };
        let mut first = false;
        let e = m.entry(tenant_id.to_ascii_lowercase()).or_insert_with(|| {
            first = true;
            UnknownTenant {
                first_seen: at,
                last_seen: at,
                blobs_left: 0,
            }
        });
        e.last_seen = at;
        e.blobs_left += 1;
        first
    }

    /// Tenants met in queued blobs that this replica is not configured for.
    pub fn unknown_tenants(&self) -> Vec<(String, UnknownTenant)> {
        self.unknown_tenants
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Last notification time per (tenant id, content type).
    pub fn notifications(&self) -> Vec<((String, String), std::time::SystemTime)> {
        self.notifications
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    pub fn outputs(&self) -> Vec<(String, OutputHealth)> {
        self.outputs
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// Labelled metrics (per tenant and content type, per reason, per output) and latency histograms,
/// shared with the admin API's `/metrics`.
pub struct Metrics {
    /// Records mapped, by `tenant_id` and `content_type`.
    pub records_mapped: Family<Labels, Counter>,
    /// Records accepted by the output, by `tenant_id` and `content_type`.
    pub records_delivered: Family<Labels, Counter>,
    /// Webhook POSTs refused, by `reason`.
    pub notifications_rejected: Family<Labels, Counter>,
    /// Time until a content blob's answer starts (status and headers), by `tenant_id` and
    /// `content_type`; the body then streams while its records are delivered.
    pub fetch_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Time for an output to accept one batch, by `output`.
    pub delivery_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Records dropped as Microsoft's duplicates, by `tenant_id` and `content_type`.
    pub duplicate_records_dropped: Family<Labels, Counter>,
    /// Listing gaps (content Microsoft no longer kept), by `tenant_id` and `content_type` (or feed).
    pub listing_gaps: Family<Labels, Counter>,
    /// Seconds of content lost in those gaps, by `tenant_id` and `content_type`.
    pub listing_gap_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    /// Failed calls to Microsoft, by `tenant_id` and `reason` (`pipeline::health::classify`).
    pub tenant_errors: Family<Labels, Counter>,
    /// Content blobs newly queued (announced by a notification or found by listing), by
    /// `tenant_id` and `content_type`.
    pub content_announced: Family<Labels, Counter>,
    /// Unix time the output last accepted records, by `tenant_id` and `content_type`: "last record
    /// received" per tenant, which a dashboard turns into an age.
    pub last_delivery: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Blobs queued for a tenant (counted up to `pipeline.queue_high_water`) at its last listing
    /// round, by `tenant_id`: the count the high-water check takes anyway, so a scrape costs the
    /// store nothing per tenant.
    pub tenant_queue_depth: Family<Labels, Gauge>,
    /// Time from a notification POST's arrival to its 200 (stored with fsync): what Microsoft
    /// waits for before it counts the delivery.
    pub webhook_ack_seconds: Histogram,
    /// Records whose RecordType Microsoft's table lacks, by `record_type`.
    pub unknown_record_types: UnknownRecordTypes,
}

/// Distinct unknown RecordType values that get a label of their own; records of further values
/// count under `record_type="other"` (a bounded label set whatever Microsoft or a forger sends).
pub const UNKNOWN_RECORD_TYPES_CAP: usize = 64;

/// Records of RecordTypes missing from Microsoft's table (Microsoft adds types often): they pass
/// through unnamed, are counted by value, and each value is logged once so the table can be
/// brought up to date.
#[derive(Default)]
pub struct UnknownRecordTypes {
    seen: std::sync::Mutex<std::collections::BTreeSet<i64>>,
    pub counter: Family<Labels, Counter>,
}

impl UnknownRecordTypes {
    /// Counts `records` records of `record_type`; logs the value the first time it is met.
    pub fn met(&self, record_type: i64, records: u64) {
        let label = {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            if seen.contains(&record_type) {
                Some(record_type)
            } else if seen.len() < UNKNOWN_RECORD_TYPES_CAP {
                seen.insert(record_type);
                tracing::warn!(
                    record_type,
                    "RecordType {record_type} is not in Microsoft's AuditLogRecordType table as this version knows it: its records pass through without a name (o365.meta.record_type_name, event.code); counted in o365_unknown_record_types_total"
                );
                Some(record_type)
            } else {
                None
            }
        };
        let value = label.map_or_else(|| "other".to_string(), |t| t.to_string());
        self.counter
            .get_or_create(&Metrics::one_label("record_type", &value))
            .inc_by(records);
    }
}

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    // 5 ms … ~82 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            records_mapped: Family::default(),
            records_delivered: Family::default(),
            notifications_rejected: Family::default(),
            fetch_seconds: Family::new_with_constructor(latency_histogram),
            delivery_seconds: Family::new_with_constructor(latency_histogram),
            duplicate_records_dropped: Family::default(),
            listing_gaps: Family::default(),
            listing_gap_seconds: Family::default(),
            tenant_errors: Family::default(),
            content_announced: Family::default(),
            last_delivery: Family::default(),
            tenant_queue_depth: Family::default(),
            // 0.5 ms … ~16 s: an acknowledgement waits for one group-committed fsync.
            webhook_ack_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            unknown_record_types: UnknownRecordTypes::default(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Metrics {
    pub fn tenant_labels(tenant_id: &str, content_type: &str) -> Labels {
        vec![
            ("tenant_id".to_string(), tenant_id.to_string()),
            ("content_type".to_string(), content_type.to_string()),
        ]
    }

    pub fn one_label(name: &str, value: &str) -> Labels {
        vec![(name.to_string(), value.to_string())]
    }
}

/// Now as Unix seconds, for the `*_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Peak resident memory of this process in KiB (`VmHWM`), for the benchmarks' reports; `None` where
/// `/proc` is not available.
#[cfg(any(test, feature = "test-util"))]
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
