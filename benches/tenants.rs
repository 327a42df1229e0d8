//! Memory per tenant: the collector in its own process serving N tenants × 5 content types against
//! the emulator in its own process, in pull mode and in push mode (webhook over TLS). Each content
//! type of each tenant gets one blob of 10 records; the run ends when every record is in the file
//! output exactly once. Prints the collector's peak RSS (VmHWM), and its RSS and thread count 10 s
//! after the last record arrived; medians of the runs.
//!
//! `cargo bench --bench tenants -- [COUNTS…] [pull|push] [runs=N]`
//! (default: 10 100 1000, both modes, 3 runs).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use o365_collector::mgmt_api::wire::CONTENT_TYPES;
use support::{Memory, median, wait_until};

const RECORDS_PER_BLOB: usize = 10;
/// How long after the last record the idle RSS and threads are read.
const SETTLE: Duration = Duration::from_secs(10);

struct Outcome {
    elapsed: Duration,
    peak: Memory,
    peak_threads: u64,
    after: Memory,
}

fn main() {
    let args = support::Args::from_env();
    let counts: Vec<usize> = args.numbers(&[10, 100, 1000]);
    // `pull` first: `either` answers true for its first word.
    let modes: Vec<bool> = args
        .either("pull", "push")
        .into_iter()
        .map(|pull| !pull)
        .collect();
    let runs: usize = args.value("runs", 3);
    let rt = support::runtime();

    let mut table = Vec::new();
    for &n in &counts {
        for &push in &modes {
            let mode = if push { "push" } else { "pull" };
            let mut outcomes = Vec::new();
            for run in 0..runs {
                let o = run_once(&rt, n, push);
                println!(
                    "{n} tenants {mode} run {run}: {:.1} s, peak RSS {:.0} MiB, peak {} threads; {} s later RSS {:.0} MiB, {} threads",
                    o.elapsed.as_secs_f64(),
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
            table.push(format!(
                "| {n} × 5 | {mode} | {:.0} MiB | {:.0} | {:.0} MiB | {:.0} | {:.1} s |",
                med(&|o| o.peak.peak_mib),
                med(&|o| o.peak_threads as f64),
                med(&|o| o.after.rss_mib),
                med(&|o| o.after.threads as f64),
                med(&|o| o.elapsed.as_secs_f64()),
            ));
        }
    }
    println!("\ntenants × content types, medians of {runs} runs:");
    println!(
        "| tenants | mode | peak RSS | peak threads | RSS 10 s later | threads 10 s later | all records in |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
}

fn run_once(rt: &tokio::runtime::Runtime, n: usize, push: bool) -> Outcome {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let mut emu_extra = String::from("throttle_per_minute: 1000000\n");
    let certs = push.then(|| support::webhook_certs(dir));
    if let Some((ca, _, _)) = &certs {
        emu_extra.push_str(&format!("webhook_ca_files: [{}]\n", ca.display()));
    }
    let (_emu, base, emu_ca) = support::start_emulator(dir, n, &emu_extra);
    let http = support::client(&emu_ca);
    if !push {
        generate_all(rt, &http, &base, n);
    }

    let events = dir.join("events.ndjson");
    let mut yaml = format!(
        "resource: {base}\nauthority: {base}\ncontent_type: {types}\noutput: file\n\
         last_value_storage: {store}\noutbound:\n  ca_file: {ca}\n\
         outputs:\n  file:\n    type: file\n    path: {events}\n\
         listen:\n  admin: 127.0.0.1:0\n",
        types = CONTENT_TYPES.join(" "),
        store = dir.join("store").display(),
        ca = emu_ca.display(),
        events = events.display(),
    );
    if let Some((_, cert, key)) = &certs {
        let port = support::free_port();
        yaml.push_str(&format!(
            "  public: 127.0.0.1:{port}\nwebhook:\n  address: https://127.0.0.1:{port}/o365/webhook\n  auth_id: {auth}\n\
             tls:\n  cert: {cert}\n  key: {key}\n",
            auth = support::AUTH_ID,
            cert = cert.display(),
            key = key.display(),
        ));
    }
    yaml.push_str(&support::tenants_yaml(n));
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).expect("config");

    let started = Instant::now();
    let mut collector = support::start_collector(dir, &config, &[]);
    let threads = support::ThreadPeak::start(collector.pid());
    if push {
        // Every subscription validated its webhook; then publish, and the emulator notifies.
        let want = n * CONTENT_TYPES.len();
        wait_until(Duration::from_secs(600), "webhook validations", || {
            assert!(collector.alive(), "collector exited: see {}", dir.display());
            std::thread::sleep(Duration::from_millis(450));
            validations(rt, &http, &base) >= want
        });
        generate_all(rt, &http, &base, n);
    }
    let total = n * CONTENT_TYPES.len() * RECORDS_PER_BLOB;
    wait_until(Duration::from_secs(900), "every record", || {
        assert!(collector.alive(), "collector exited");
        support::lines(&events) >= total
    });
    let elapsed = started.elapsed();
    let peak = collector.memory();
    let peak_threads = threads.stop();
    std::thread::sleep(SETTLE);
    let after = collector.memory();
    let counts = support::record_counts(&events);
    assert_eq!(counts.len(), total, "records missing");
    assert!(
        counts.values().all(|&c| c == 1),
        "a record was written twice"
    );
    check_log(dir);
    Outcome {
        elapsed,
        peak,
        peak_threads,
        after,
    }
}

/// One blob of [`RECORDS_PER_BLOB`] records for every tenant and content type.
fn generate_all(rt: &tokio::runtime::Runtime, http: &reqwest::Client, base: &str, n: usize) {
    rt.block_on(async {
        let calls = (0..n).flat_map(|i| {
            CONTENT_TYPES.iter().map(move |ct| {
                let body = serde_json::json!({
                    "tenant_id": support::tenant_id(i),
                    "content_type": ct,
                    "records": RECORDS_PER_BLOB,
                    "blobs": 1,
                });
                async move {
                    let r = http
                        .post(format!("{base}/_emulator/generate"))
                        .json(&body)
                        .send()
                        .await
                        .expect("generate");
                    assert!(r.status().is_success(), "generate: {}", r.status());
                }
            })
        });
        futures_util::stream::iter(calls)
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    });
}

/// Successful webhook validations the emulator made.
fn validations(rt: &tokio::runtime::Runtime, http: &reqwest::Client, base: &str) -> usize {
    rt.block_on(async {
        let Ok(r) = http
            .get(format!("{base}/_emulator/deliveries"))
            .send()
            .await
        else {
            return 0;
        };
        let list: Vec<serde_json::Value> = r.json().await.unwrap_or_default();
        list.iter()
            .filter(|d| d["kind"] == "validation" && d["success"] == true)
            .count()
    })
}

/// The collector logged no error (warnings about start-up listing are expected).
fn check_log(dir: &Path) {
    let log = std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "collector errors: {errors:?}");
}
