//! The store choice under load: the embedded store (one process) beside the PostgreSQL store with
//! one and with three replicas (a real PostgreSQL server on a temporary directory, each collector
//! in its own process, the emulator in its own). This program is the notifier (the emulator's own
//! notifications are switched off) and spreads its POSTs over the replicas in turn, as a
//! round-robin proxy would.
//!
//! Per case and run: (1) webhook acknowledgement, single-notification POSTs open loop at `rate`
//! per second for `secs` (latency from the scheduled send to the answer); (2) end to end, `records`
//! records in blobs of 1,000 notified all at once, from the first POST to the last record in the
//! outputs (records/s). Every blob must land exactly once across the replicas' file outputs.
//! Prints the medians of `runs` runs.
//!
//! `cargo bench --bench replicas -- [rate=500] [secs=10] [records=50000] [runs=3] [cases=embedded,pg1,pg3]`

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Proc, median, wait_until};

const CONTENT_TYPE: &str = "Audit.General";

struct Outcome {
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    records_per_s: f64,
    peak_mib: f64,
}

fn main() {
    let args = support::Args::from_env();
    let rate: u64 = args.value("rate", 500);
    let secs: u64 = args.value("secs", 10);
    let records: usize = args.value("records", 50_000);
    let runs: usize = args.value("runs", 3);
    let cases: String = args.value("cases", "embedded,pg1,pg3".to_string());
    let rt = support::runtime();
    let pg = postgres::Postgres::start();
    let mut table = Vec::new();
    for case in cases.split(',') {
        let replicas = match case {
            "embedded" => 0,
            "pg1" => 1,
            "pg3" => 3,
            other => panic!("unknown case {other}: embedded, pg1 or pg3"),
        };
        let mut outcomes = Vec::new();
        for run in 0..runs {
            let db = (replicas > 0).then(|| rt.block_on(pg.create_database()));
            let o = run_once(&rt, rate, secs, records, replicas, db);
            println!(
                "{case} run {run}: ack p50 {:.2} ms p99 {:.2} ms, {} errors; end to end {:.0} records/s; peak RSS {:.0} MiB",
                o.p50_ms, o.p99_ms, o.errors, o.records_per_s, o.peak_mib
            );
            outcomes.push(o);
        }
        let med =
            |f: &dyn Fn(&Outcome) -> f64| median(&mut outcomes.iter().map(f).collect::<Vec<_>>());
        let name = match replicas {
            0 => "embedded, 1 process".to_string(),
            n => format!("postgres, {n} replica{}", if n == 1 { "" } else { "s" }),
        };
        table.push(format!(
            "| {name} | {:.2} ms | {:.2} ms | {} | {:.0} | {:.0} MiB |",
            med(&|o| o.p50_ms),
            med(&|o| o.p99_ms),
            outcomes.iter().map(|o| o.errors).sum::<usize>(),
            med(&|o| o.records_per_s),
            med(&|o| o.peak_mib),
        ));
    }
    println!(
        "\nstores: webhook ack at {rate}/s for {secs} s, end to end {records} records in blobs of 1,000; medians of {runs} runs:"
    );
    println!(
        "| store | ack p50 | ack p99 | errors | end to end records/s | peak RSS per process |"
    );
    println!("|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
}

/// One collector process's files.
struct Replica {
    proc: Proc,
    webhook: String,
    events: PathBuf,
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    rate: u64,
    secs: u64,
    records: usize,
    replicas: usize,
    db: Option<String>,
) -> Outcome {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (ca, cert, key) = support::webhook_certs(dir);
    let (_emu, base, emu_ca) = support::start_notified_emulator(dir, &ca);
    let http = support::client(&emu_ca);
    let mut procs: Vec<Replica> = (0..replicas.max(1))
        .map(|i| {
            let rdir = dir.join(format!("r{i}"));
            std::fs::create_dir_all(&rdir).expect("replica dir");
            let port = support::free_port();
            let events = rdir.join("events.ndjson");
            let store = match &db {
                None => format!("last_value_storage: {}\n", rdir.join("store").display()),
                Some(url) => format!(
                    "store:\n  type: postgres\n  url: {url}\n  sslmode: disable\n  allow_file_output: true\n"
                ),
            };
            let yaml = support::push_collector_yaml(
                &base,
                CONTENT_TYPE,
                &emu_ca,
                &events,
                port,
                (&cert, &key),
                &store,
            );
            let config = rdir.join("config.yaml");
            std::fs::write(&config, yaml).expect("config");
            Replica {
                proc: support::start_collector(&rdir, &config, &[]),
                webhook: format!("https://127.0.0.1:{port}/o365/webhook"),
                events,
            }
        })
        .collect();
    let webhooks: Vec<String> = procs.iter().map(|r| r.webhook.clone()).collect();
    let lines =
        |procs: &[Replica]| -> usize { procs.iter().map(|r| support::lines(&r.events)).sum() };

    // (1) Acknowledgement latency at a fixed rate.
    let blobs = (rate * secs) as usize;
    let notices = rt.block_on(async {
        support::wait_validated(&http, &base, || procs.iter_mut().all(|r| r.proc.alive())).await;
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
    let latencies = rt.block_on(support::post_notices(
        support::client(&ca),
        &webhooks,
        notices,
        rate,
    ));
    let errors = latencies.iter().filter(|(_, ok)| !ok).count();
    let mut ms: Vec<f64> = latencies
        .iter()
        .map(|(d, _)| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    wait_until(
        Duration::from_secs(900),
        "every small blob delivered",
        || lines(&procs) >= blobs,
    );

    // (2) End to end: every blob notified at once, until the last record is written.
    let big = records.div_ceil(1000);
    let notices = rt.block_on(support::publish_notices(
        &http,
        &base,
        CONTENT_TYPE,
        records,
        big,
    ));
    let started = Instant::now();
    let acks = rt.block_on(support::post_notices(
        support::client(&ca),
        &webhooks,
        notices,
        0,
    ));
    assert!(acks.iter().all(|(_, ok)| *ok), "a notification was refused");
    wait_until(Duration::from_secs(900), "every record delivered", || {
        lines(&procs) >= blobs + records
    });
    let elapsed = started.elapsed();
    let mut counts = std::collections::HashMap::new();
    for r in &procs {
        for (id, n) in support::record_counts(&r.events) {
            *counts.entry(id).or_insert(0) += n;
        }
    }
    assert_eq!(counts.len(), blobs + records, "records missing");
    assert!(
        counts.values().all(|&c| c == 1),
        "a record was delivered twice"
    );
    let peak_mib = procs
        .iter()
        .map(|r| r.proc.memory().peak_mib)
        .fold(0.0, f64::max);
    Outcome {
        p50_ms: support::percentile(&ms, 0.5),
        p99_ms: support::percentile(&ms, 0.99),
        errors,
        records_per_s: records as f64 / elapsed.as_secs_f64(),
        peak_mib,
    }
}
