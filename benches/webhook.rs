//! Webhook acknowledgement latency under load. This program is the load generator: it POSTs
//! single-notification batches at a fixed rate (open loop: each POST leaves at its scheduled time
//! whatever the earlier ones are doing) to the collector running in its own process, which stores
//! them (fsync) before answering, then fetches every blob from the emulator (its own process too).
//! The emulator's own notifications are switched off (a fault) so that only this program notifies.
//!
//! Prints, per rate, the median over the runs of p50/p99/max latency (from the scheduled send to
//! the answer), errors, the collector's peak RSS, and its RSS and threads 10 s after the load;
//! each run checks that every notified blob ends up in the file output exactly once.
//! `single` runs the same with `O365_STORE_GROUP_COMMIT=off` (one transaction per POST).
//!
//! `cargo bench --bench webhook -- [RATES…] [secs=10] [runs=3] [group|single]`
//! (default: 200 500 1000 per second, 10 s, 3 runs, both paths).
//!
//! `cargo bench --bench webhook -- ledger [RATE] [secs=10] [runs=3]` measures what the
//! completeness ledger costs instead: `runs` pairs of group-commit runs at the fixed rate (default
//! 500/s) with the ledger on and off (`O365_LEDGER=off`), interleaved (on, off, off, on, …) so that
//! load drifting on a shared machine hits both alike; printed are the medians of p50/p99 and of
//! the collector's CPU-milliseconds per notification (from the first POST until every blob is in
//! the file: the POST, its fetch and its delivery), with the ratios on / off. The CPU time is the
//! figure to judge by: other processes' load lengthens latencies, hardly the collector's CPU time.

mod support;

use std::time::Duration;

use support::{Memory, median, wait_until};

const CONTENT_TYPE: &str = "Audit.General";
/// How long after the load the idle RSS and threads are read.
const SETTLE: Duration = Duration::from_secs(10);

struct Outcome {
    /// The collector's CPU time from the first POST until every blob was delivered, per POST.
    cpu_ms_per_post: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: usize,
    peak: Memory,
    peak_threads: u64,
    after: Memory,
}

fn main() {
    let args = support::Args::from_env();
    let rates: Vec<u64> = args.numbers(&[200, 500, 1000]);
    let secs: u64 = args.value("secs", 10);
    let runs: usize = args.value("runs", 3);
    let paths: Vec<bool> = args.either("group", "single");
    let rt = support::runtime();
    if args.has("ledger") {
        let rate = args.numbers(&[500])[0];
        compare_ledger(&rt, rate, secs, runs);
        return;
    }

    let mut table = Vec::new();
    for &rate in &rates {
        let mut p99s = Vec::new();
        for &group in &paths {
            let name = if group {
                "group commit"
            } else {
                "one commit per POST"
            };
            let mut outcomes = Vec::new();
            for run in 0..runs {
                let o = run_once(&rt, rate, secs, group, true, true);
                println!(
                    "{rate}/s {name} run {run}: p50 {:.2} ms p99 {:.2} ms max {:.1} ms, {} errors, peak RSS {:.0} MiB, peak {} threads; {} s later RSS {:.0} MiB, {} threads",
                    o.p50_ms,
                    o.p99_ms,
                    o.max_ms,
                    o.errors,
                    o.peak.peak_mib,
                    o.peak_threads,
                    SETTLE.as_secs(),
                    o.after.rss_mib,
                    o.after.threads
                );
                outcomes.push(o);
            }
            let med = |f: &dyn Fn(&Outcome) -> f64| {
                median(&mut outcomes.iter().map(f).collect::<Vec<_>>())
            };
            let p99 = med(&|o| o.p99_ms);
            p99s.push(p99);
            table.push(format!(
                "| {rate}/s | {name} | {:.2} ms | {p99:.2} ms | {:.1} ms | {} | {:.0} MiB, {:.0} threads | {:.0} MiB, {:.0} threads |",
                med(&|o| o.p50_ms),
                med(&|o| o.max_ms),
                outcomes.iter().map(|o| o.errors).sum::<usize>(),
                med(&|o| o.peak.peak_mib),
                med(&|o| o.peak_threads as f64),
                med(&|o| o.after.rss_mib),
                med(&|o| o.after.threads as f64),
            ));
        }
        if let [group, single] = p99s[..] {
            println!(
                "{rate}/s: p99 one commit per POST / group commit = {:.1}",
                single / group
            );
        }
    }
    println!("\nwebhook acknowledgement, {secs} s per run, medians of {runs} runs:");
    println!("| rate | path | p50 | p99 | max | errors | peak | 10 s later |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
}

/// A figure of the comparison: its name, how it is read from a run, the decimals printed.
type Figure<'a> = (&'a str, &'a dyn Fn(&Outcome) -> f64, usize);

/// `pairs` group-commit runs at `rate` with the ledger on and as many with it off, interleaved;
/// prints each run and the medians with their ratios (see the module doc).
fn compare_ledger(rt: &tokio::runtime::Runtime, rate: u64, secs: u64, pairs: usize) {
    let mut results: Vec<(bool, Outcome)> = Vec::new();
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            let o = run_once(rt, rate, secs, true, on, false);
            println!(
                "{rate}/s pair {pair} ledger {}: {:.3} CPU-ms per POST, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} errors, peak RSS {:.0} MiB",
                if on { "on " } else { "off" },
                o.cpu_ms_per_post,
                o.p50_ms,
                o.p99_ms,
                o.max_ms,
                o.errors,
                o.peak.peak_mib
            );
            results.push((on, o));
        }
    }
    let med = |on: bool, f: &dyn Fn(&Outcome) -> f64| {
        median(
            &mut results
                .iter()
                .filter(|(o, _)| *o == on)
                .map(|(_, r)| f(r))
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "\nwebhook {rate}/s for {secs} s (group commit), ledger on vs off: medians of {pairs} interleaved pairs, load average {}",
        support::load_average()
    );
    println!("| figure | ledger on | ledger off | on / off |");
    println!("|---|---|---|---|");
    let figures: [Figure; 3] = [
        ("collector CPU-ms per POST", &|o| o.cpu_ms_per_post, 3),
        ("p50 ack latency (ms)", &|o| o.p50_ms, 2),
        ("p99 ack latency (ms)", &|o| o.p99_ms, 2),
    ];
    for (name, f, digits) in figures {
        let (on, off) = (med(true, f), med(false, f));
        println!(
            "| {name} | {on:.digits$} | {off:.digits$} | {:.3} |",
            on / off
        );
    }
    let errors: usize = results.iter().map(|(_, o)| o.errors).sum();
    println!("errors in all runs: {errors}");
}

/// One run: `group` false turns group commit off, `ledger` false the completeness ledger;
/// `settle` reads the RSS and threads [`SETTLE`] after the load (else right after it).
fn run_once(
    rt: &tokio::runtime::Runtime,
    rate: u64,
    secs: u64,
    group: bool,
    ledger: bool,
    settle: bool,
) -> Outcome {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (ca, cert, key) = support::webhook_certs(dir);
    let (_emu, base, emu_ca) = support::start_notified_emulator(dir, &ca);
    let http = support::client(&emu_ca);
    let port = support::free_port();
    let events = dir.join("events.ndjson");
    let store = format!("last_value_storage: {}\n", dir.join("store").display());
    let yaml = support::push_collector_yaml(
        &base,
        CONTENT_TYPE,
        &emu_ca,
        &events,
        port,
        (&cert, &key),
        &store,
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).expect("config");
    let mut env = vec![("O365_LEDGER", if ledger { "on" } else { "off" })];
    if !group {
        env.push(("O365_STORE_GROUP_COMMIT", "off"));
    }
    let mut collector = support::start_collector(dir, &config, &env);
    let webhook = format!("https://127.0.0.1:{port}/o365/webhook");

    let blobs = (rate * secs) as usize;
    let notices = rt.block_on(async {
        // The subscription is validated (the collector answers the emulator), then the
        // emulator's own notifications are switched off and the blobs published.
        support::wait_validated(&http, &base, || collector.alive()).await;
        // Let the listing that follows a subscription start pass first, so the blobs arrive
        // through this program's notifications only.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = http
            .post(format!("{base}/_emulator/faults"))
            .json(&serde_json::json!({ "webhook_fail_status": 503 }))
            .send()
            .await
            .expect("faults");
        assert!(r.status().is_success());
        support::publish_notices(&http, &base, CONTENT_TYPE, blobs, blobs).await
    });

    let threads = support::ThreadPeak::start(collector.pid());
    let load = support::client(&ca);
    let cpu_before = collector.cpu_seconds();
    let latencies = rt.block_on(support::post_notices(
        load,
        std::slice::from_ref(&webhook),
        notices,
        rate,
    ));
    let errors = latencies.iter().filter(|(_, ok)| !ok).count();
    let mut ms: Vec<f64> = latencies
        .iter()
        .map(|(d, _)| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| support::percentile(&ms, p);

    wait_until(Duration::from_secs(900), "every blob fetched", || {
        assert!(collector.alive(), "collector exited");
        support::lines(&events) >= blobs
    });
    let cpu_ms_per_post = (collector.cpu_seconds() - cpu_before) * 1000.0 / blobs as f64;
    let peak = collector.memory();
    let peak_threads = threads.stop();
    if settle {
        std::thread::sleep(SETTLE);
    }
    let after = collector.memory();
    let counts = support::record_counts(&events);
    assert_eq!(counts.len(), blobs, "blobs missing");
    assert!(
        counts.values().all(|&c| c == 1),
        "a blob was delivered twice"
    );
    Outcome {
        cpu_ms_per_post,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        errors,
        peak,
        peak_threads,
        after,
    }
}
