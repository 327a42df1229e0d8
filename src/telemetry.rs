//! Logs (tracing, human or JSON) and the process-wide counters that progress reports and the admin
//! API's metrics read.

use std::sync::atomic::{AtomicU64, Ordering};

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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
