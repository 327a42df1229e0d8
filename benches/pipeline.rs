//! End-to-end push pipeline benchmark: the demo (emulator + collector in one process, HTTPS both
//! ways, file output with fsync) run several times. Prints the median records/s, the publish→fetch
//! latency percentiles of the records (from `o365.meta.content_created` to `o365.meta.received`) and
//! the peak RSS of the process.
//!
//! `cargo bench --bench pipeline -- [records] [runs]` (default 50000 records, 3 runs).

use std::time::Duration;

use o365_collector::demo::{self, DemoArgs};
use o365_collector::mapping::Format;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let records: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("o365-bench-{}", std::process::id()));
    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    for run in 0..runs {
        let summary = rt
            .block_on(demo::run(DemoArgs {
                records,
                blob_records: 1_000,
                dir: dir.clone(),
                workers: 4,
                timeout: 600,
                format: Format::O365,
            }))
            .expect("demo run");
        assert!(summary.ok(), "{}", summary.line());
        let rate = summary.delivered_once as f64 / summary.elapsed.as_secs_f64();
        println!(
            "run {run}: {} records in {:.2} s = {rate:.0} records/s",
            records,
            summary.elapsed.as_secs_f64()
        );
        rates.push(rate);
        latencies.extend(record_latencies(&summary.events_file));
    }
    let _ = std::fs::remove_dir_all(&dir);
    rates.sort_by(|a, b| a.total_cmp(b));
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!("pipeline: {records} records x {runs} runs");
    println!(
        "  throughput median {:.0} records/s (min {:.0}, max {:.0})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
    println!(
        "  publish->fetch latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "  peak RSS {} MiB",
        o365_collector::telemetry::peak_rss_kib().unwrap_or(0) / 1024
    );
}

fn record_latencies(path: &std::path::Path) -> Vec<Duration> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let created =
                chrono::DateTime::parse_from_rfc3339(v["o365.meta.content_created"].as_str()?)
                    .ok()?;
            let received =
                chrono::DateTime::parse_from_rfc3339(v["o365.meta.received"].as_str()?).ok()?;
            (received - created).to_std().ok()
        })
        .collect()
}
