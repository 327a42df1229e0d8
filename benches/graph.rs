//! The Graph feeds end to end: the emulator and the collector in their own processes; for each
//! feed, N records are published in the emulator before the collector starts, and the run ends when
//! all are in the file output. Prints records/s (from the collector's start to the last record:
//! token, listing at Microsoft's documented request limits, store, mapping, file with fsync) and the
//! collector's peak RSS; medians of the runs.
//!
//! `cargo bench --bench graph -- [N] [runs=3] [FEED…]` (default 10000 records per feed, every
//! feed; message trace counts rows: N/2 messages × 2 recipients).

mod support;

use std::time::{Duration, Instant};

use support::{median, wait_until};

const FEEDS: [&str; 4] = [
    "sign_ins",
    "directory_audits",
    "message_trace",
    "service_health",
];

fn main() {
    let args = support::Args::from_env();
    let n: usize = args.numbers(&[10_000])[0];
    let runs: usize = args.value("runs", 3);
    let rt = support::runtime();
    let named: Vec<&str> = FEEDS.into_iter().filter(|f| args.has(f)).collect();
    let feeds = if named.is_empty() {
        FEEDS.to_vec()
    } else {
        named
    };
    let mut table = Vec::new();
    for feed in feeds {
        let mut rates = Vec::new();
        let mut peaks = Vec::new();
        for run in 0..runs {
            let (records, elapsed, peak) = run_once(&rt, feed, n);
            let rate = records as f64 / elapsed.as_secs_f64();
            println!(
                "{feed} run {run}: {records} records in {:.2} s = {rate:.0} records/s, peak RSS {peak:.0} MiB",
                elapsed.as_secs_f64()
            );
            rates.push(rate);
            peaks.push(peak);
        }
        table.push((feed, median(&mut rates), median(&mut peaks)));
    }
    println!("\n| feed | records | records/s (median) | collector peak RSS (median) |");
    println!("|---|---|---|---|");
    for (feed, rate, peak) in table {
        println!("| {feed} | {n} | {rate:.0} | {peak:.0} MiB |");
    }
}

fn run_once(rt: &tokio::runtime::Runtime, feed: &str, n: usize) -> (usize, Duration, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_emu, base, ca) = support::start_emulator(dir.path(), 1, "");
    let records = if feed == "message_trace" { n / 2 } else { n };
    let client = support::client(&ca);
    let published: usize = rt.block_on(async {
        let body = serde_json::json!({
            "tenant_id": support::tenant_id(0),
            "feed": feed,
            "records": records,
            "recipients": 2,
        });
        let resp = client
            .post(format!("{base}/_emulator/graph/generate"))
            .json(&body)
            .send()
            .await
            .expect("generate");
        assert!(resp.status().is_success(), "generate: {}", resp.status());
        let v: serde_json::Value = resp.json().await.expect("generate answer");
        v["identities"].as_array().map_or(0, Vec::len)
    });
    let events = dir.path().join("events.ndjson");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tenant_id: {t}\nclient_id: {c}\nclient_secret: {s}\nresource: {base}\nauthority: {base}\n\
             content_type: Audit.General\ngraph_feeds: {feed}\ngraph_backfill: 1h\n\
             last_value_storage: {d}/store\noutput: file\nlisten:\n  admin: 127.0.0.1:0\n\
             pull:\n  interval: 1s\noutbound:\n  ca_file: {ca}\n\
             outputs:\n  file:\n    type: file\n    path: {e}\n",
            t = support::tenant_id(0),
            c = support::client_id(0),
            s = support::SECRET,
            d = dir.path().display(),
            ca = ca.display(),
            e = events.display(),
        ),
    )
    .expect("config");
    let started = Instant::now();
    let collector = support::start_collector(dir.path(), &config, &[]);
    wait_until(Duration::from_secs(600), "every record", || {
        support::lines(&events) >= published
    });
    let elapsed = started.elapsed();
    let peak = collector.memory().peak_mib;
    let counts = support::record_counts(&events);
    assert_eq!(counts.len(), published, "{feed}: not exactly once");
    (published, elapsed, peak)
}
