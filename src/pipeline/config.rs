//! `pipeline:` and `pull:`: how blobs are worked off and how often content is listed; defaults
//! and checks.

use std::time::Duration;

use serde::Deserialize;

use crate::core::settings::{Section, de};

pub const DEFAULT_WORKERS: usize = 4;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Queued blobs of one tenant above which its content listing waits for its output to catch up.
pub const DEFAULT_QUEUE_HIGH_WATER: u64 = 10_000;
/// Records per batch sent to the output: large enough that the per-batch fsyncs (output and
/// progress) cost little, small enough that a crash repeats little.
pub const DEFAULT_BATCH_RECORDS: usize = 1_000;
/// Bytes of encoded events per batch at most; with `DEFAULT_BATCH_RECORDS` it only binds for
/// records larger than 4 KiB on average.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
pub const DEFAULT_PULL_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);
const MAX_WORKERS: usize = 1024;
/// Upper bounds of the batch settings: a worker holds up to three batches.
const MAX_BATCH_RECORDS: usize = 100_000;
const MAX_BATCH_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Blobs processed at once.
    #[serde(deserialize_with = "de::whole")]
    pub workers: usize,
    /// How long a claimed blob stays leased before another worker may take it.
    #[serde(deserialize_with = "de::duration")]
    pub lease: Duration,
    /// Attempts before a blob is dead-lettered.
    #[serde(deserialize_with = "de::whole")]
    pub max_attempts: u32,
    /// Queued blobs of one tenant above which its content listing (pull mode, reconciliation) and
    /// Graph feeds wait for its output to catch up; other tenants go on. The webhook keeps storing
    /// notifications whatever the queue holds.
    #[serde(deserialize_with = "de::whole")]
    pub queue_high_water: u64,
    /// Records per batch handed to the output (a blob goes out in batches; progress is recorded
    /// after each).
    #[serde(deserialize_with = "de::whole")]
    pub batch_records: usize,
    /// Bytes of encoded events per batch at most (a single larger event goes alone).
    #[serde(deserialize_with = "de::size")]
    pub batch_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: DEFAULT_WORKERS,
            lease: DEFAULT_LEASE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            queue_high_water: DEFAULT_QUEUE_HIGH_WATER,
            batch_records: DEFAULT_BATCH_RECORDS,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

impl PipelineConfig {
    pub fn check(&mut self, s: &mut Section) {
        let d = PipelineConfig::default();
        if self.workers == 0 || self.workers > MAX_WORKERS {
            let problem = format!("is {}, outside 1..={MAX_WORKERS}", self.workers);
            s.problem(
                "workers",
                problem,
                "use a small number such as 4 (the default)",
            );
            self.workers = d.workers;
        }
        if self.lease < Duration::from_secs(1) {
            s.problem(
                "lease",
                "is shorter than 1s: blobs would be taken from a worker still fetching them",
                "use a lease longer than a blob fetch, e.g. 5m (the default)",
            );
            self.lease = d.lease;
        }
        if self.max_attempts == 0 {
            let problem = format!("is 0, outside 1..={}", u32::MAX);
            s.problem(
                "max_attempts",
                problem,
                "use a number such as 10 (the default)",
            );
            self.max_attempts = d.max_attempts;
        }
        if self.queue_high_water == 0 {
            s.problem(
                "queue_high_water",
                "is 0: content listing would never run",
                "use a number of blobs such as 10000 (the default)",
            );
            self.queue_high_water = d.queue_high_water;
        }
        if self.batch_records == 0 || self.batch_records > MAX_BATCH_RECORDS {
            let problem = format!("is {}, outside 1..={MAX_BATCH_RECORDS}", self.batch_records);
            s.problem(
                "batch_records",
                problem,
                "use a number of records such as 1000 (the default)",
            );
            self.batch_records = d.batch_records;
        }
        if self.batch_bytes < 1024 || self.batch_bytes > MAX_BATCH_BYTES {
            let problem = format!("is {} bytes, outside 1KiB..=256MiB", self.batch_bytes);
            s.problem(
                "batch_bytes",
                problem,
                "use a size such as 4MiB (the default)",
            );
            self.batch_bytes = d.batch_bytes;
        }
    }
}

/// `pull:`: listing in pull mode, and reconciliation beside the webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    #[serde(deserialize_with = "de::duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "de::duration")]
    pub reconcile_every: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            interval: DEFAULT_PULL_INTERVAL,
            reconcile_every: DEFAULT_RECONCILE_EVERY,
        }
    }
}

impl PullConfig {
    pub fn check(&mut self, s: &mut Section) {
        s.positive("interval", self.interval);
        s.positive("reconcile_every", self.reconcile_every);
    }
}
