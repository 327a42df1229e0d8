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
//! Case `takeover`: two pull-mode replicas share a tenant with a `lease` (seconds) tenant lease.
//! The holder is stalled (SIGSTOP), later the new holder killed (SIGKILL); per handover, the time
//! from the signal until the other replica holds the lease (the database's row) and until it
//! first lists the tenant (the emulator's request log), against the bound of invariant 13: taken
//! over within three quarters of the lease. tests/replicas.rs checks the order and ownership of
//! the handovers; this measures how long they take.
//!
//! `cargo bench --bench replicas -- [rate=500] [secs=10] [records=50000] [runs=3] [lease=6] [cases=embedded,pg1,pg3,takeover]`

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use o365_collector::store::Store;

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
    let lease = Duration::from_secs(args.value("lease", 6));
    let cases: String = args.value("cases", "embedded,pg1,pg3,takeover".to_string());
    let rt = support::runtime();
    let pg = postgres::Postgres::start();
    let mut table = Vec::new();
    let mut takeovers = Vec::new();
    for case in cases.split(',') {
        if case == "takeover" {
            for run in 0..runs {
                let db = rt.block_on(pg.create_database());
                let t = takeover_once(&rt, lease, &db);
                println!(
                    "takeover run {run}: stalled holder: lease taken after {:.2} s, first listing after {:.2} s; killed holder: {:.2} s, {:.2} s (lease {:.0} s)",
                    t[0].0,
                    t[0].1,
                    t[1].0,
                    t[1].1,
                    lease.as_secs_f64()
                );
                takeovers.push(t);
            }
            continue;
        }
        let replicas = match case {
            "embedded" => 0,
            "pg1" => 1,
            "pg3" => 3,
            other => panic!("unknown case {other}: embedded, pg1, pg3 or takeover"),
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
    if !takeovers.is_empty() {
        let bound = lease.as_secs_f64() * 0.75;
        println!(
            "\ntenant takeover, lease {:.0} s (bound: within {bound:.1} s), medians of {} runs:",
            lease.as_secs_f64(),
            takeovers.len()
        );
        println!("| holder | lease taken after | first listing after | within the bound |");
        println!("|---|---|---|---|");
        for (i, name) in ["stalled (SIGSTOP)", "killed (SIGKILL)"].iter().enumerate() {
            let taken = median(&mut takeovers.iter().map(|t| t[i].0).collect::<Vec<_>>());
            let listed = median(&mut takeovers.iter().map(|t| t[i].1).collect::<Vec<_>>());
            let worst = takeovers.iter().map(|t| t[i].0).fold(0.0, f64::max);
            println!(
                "| {name} | {taken:.2} s | {listed:.2} s | {} (slowest {worst:.2} s) |",
                if worst <= bound { "yes" } else { "NO" }
            );
        }
    }
}

/// One run of the takeover case: [(lease taken after, first listing after)] in seconds for the
/// stalled holder, then for the killed one.
fn takeover_once(rt: &tokio::runtime::Runtime, lease: Duration, db: &str) -> [(f64, f64); 2] {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (_emu, base, emu_ca) = support::start_emulator(dir, 1, "throttle_per_minute: 1000000\n");
    let http = support::client(&emu_ca);
    let mut procs: Vec<Proc> = (0..2)
        .map(|i| {
            let rdir = dir.join(format!("r{i}"));
            std::fs::create_dir_all(&rdir).expect("replica dir");
            let yaml = format!(
                "resource: {base}\nauthority: {base}\ncontent_type: {CONTENT_TYPE}\noutput: file\n\
                 outbound:\n  ca_file: {ca}\n\
                 outputs:\n  file:\n    type: file\n    path: {events}\n\
                 listen:\n  admin: 127.0.0.1:0\npull:\n  interval: 1s\n\
                 store:\n  type: postgres\n  url: {db}\n  sslmode: disable\n  allow_file_output: true\n  tenant_lease: {lease}ms\n{tenants}",
                ca = emu_ca.display(),
                events = rdir.join("events.ndjson").display(),
                lease = lease.as_millis(),
                tenants = support::tenants_yaml(1),
            );
            let config = rdir.join("config.yaml");
            std::fs::write(&config, yaml).expect("config");
            support::start_collector(&rdir, &config, &[("RUST_LOG", "info")])
        })
        .collect();
    let logs = |i: usize| {
        std::fs::read_to_string(dir.join(format!("r{i}/collector.log"))).unwrap_or_default()
    };
    let mut tokens = Vec::new();
    for (i, p) in procs.iter_mut().enumerate() {
        wait_until(Duration::from_secs(60), "a replica connected", || {
            assert!(p.alive(), "collector exited");
            postgres::replica_token(&logs(i)).is_some()
        });
        tokens.push(postgres::replica_token(&logs(i)).expect("token"));
    }
    let tenant = support::tenant_id(0);
    let observer = rt
        .block_on(o365_collector::store::PostgresStore::connect(
            &postgres::Postgres::config(db),
        ))
        .expect("connect");
    let holder_now = || -> Option<(String, SystemTime)> {
        let rows = rt.block_on(observer.tenant_holders()).ok()?;
        let row = rows.into_iter().find(|r| r.tenant_id == tenant)?;
        Some((row.holder, row.since))
    };
    // The first listing of `token` at or after `after`, from the emulator's request log.
    let listed_after = |token: &str,
                        after: chrono::DateTime<chrono::Utc>|
     -> Option<chrono::DateTime<chrono::Utc>> {
        let calls: Vec<o365_emulator::ApiRequest> = rt.block_on(async {
            http.get(format!("{base}/_emulator/requests"))
                .query(&[("tenant_id", tenant.as_str())])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        })?;
        calls
            .into_iter()
            .filter(|c| c.operation == "ListContent" && c.at >= after)
            .find(|c| {
                c.user_agent
                    .as_deref()
                    .unwrap_or("")
                    .ends_with(&format!("replica/{token}"))
            })
            .map(|c| c.at)
    };
    wait_until(Duration::from_secs(60), "a first holder", || {
        holder_now().is_some()
    });
    let first = holder_now().expect("holder").0;
    let holder = tokens
        .iter()
        .position(|t| *t == first)
        .expect("a known replica holds");
    let other = 1 - holder;
    let handover = |from: usize, to: usize, sig: &str| -> (f64, f64) {
        let at = chrono::Utc::now();
        let ok = std::process::Command::new("kill")
            .args([sig, &procs[from].pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
        let mut since = None;
        wait_until(lease * 10, "the lease taken over", || {
            since = holder_now()
                .filter(|(h, _)| *h == tokens[to])
                .map(|(_, s)| s);
            since.is_some()
        });
        // From when it holds the lease: a listing the resumed replica had under way when it was
        // stopped can still arrive late, and is not a takeover.
        let since: chrono::DateTime<chrono::Utc> = since.expect("since").into();
        let mut listed = None;
        wait_until(lease * 10, "a listing by the new holder", || {
            listed = listed_after(&tokens[to], since);
            listed.is_some()
        });
        let secs = |t: chrono::DateTime<chrono::Utc>| (t - at).num_milliseconds() as f64 / 1000.0;
        (secs(since), secs(listed.expect("listed")))
    };
    let stalled = handover(holder, other, "-STOP");
    // Resumed, the stalled replica finds its lease gone; then the new holder dies.
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &procs[holder].pid().to_string()])
        .status();
    let killed = handover(other, holder, "-KILL");
    drop(procs.drain(..));
    [stalled, killed]
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
