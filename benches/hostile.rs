//! Webhook acknowledgement latency while the public listener is under a stalled-POST attack.
//! `attackers` connections (TLS, to the collector in its own process) each declare a 1 MiB body
//! without the AuthID, send it (or as much as the collector takes) and stall. Meanwhile this
//! program POSTs honest single-notification batches open loop at `rate` per second for `secs`
//! (latency from the scheduled send to the answer), and the same without the attack first, as
//! the baseline. tests/hostile.rs checks that the honest POSTs are answered and memory stays low
//! during the attack; this measures how fast.
//!
//! Prints per phase the median over the runs of p50/p99/max latency and errors, and the
//! collector's peak RSS and threads.
//!
//! `cargo bench --bench hostile -- [attackers=1300] [rate=50] [secs=5] [runs=3]`

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::median;
use tokio::io::AsyncWriteExt;

const CONTENT_TYPE: &str = "Audit.General";
const BODY: usize = 1 << 20;

struct Latencies {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: usize,
}

struct Outcome {
    quiet: Latencies,
    attacked: Latencies,
    peak_mib: f64,
    peak_threads: u64,
}

fn main() {
    let args = support::Args::from_env();
    let attackers: usize = args.value("attackers", 1300);
    let rate: u64 = args.value("rate", 50);
    let secs: u64 = args.value("secs", 5);
    let runs: usize = args.value("runs", 3);
    raise_fd_limit();
    let rt = support::runtime();
    let mut outcomes = Vec::new();
    for run in 0..runs {
        let o = run_once(&rt, attackers, rate, secs);
        for (phase, l) in [("quiet", &o.quiet), ("attacked", &o.attacked)] {
            println!(
                "run {run} {phase}: p50 {:.2} ms p99 {:.2} ms max {:.1} ms, {} errors",
                l.p50_ms, l.p99_ms, l.max_ms, l.errors
            );
        }
        println!(
            "run {run}: collector peak RSS {:.0} MiB, peak {} threads",
            o.peak_mib, o.peak_threads
        );
        outcomes.push(o);
    }
    let med = |f: &dyn Fn(&Outcome) -> f64| median(&mut outcomes.iter().map(f).collect::<Vec<_>>());
    println!(
        "\nhonest notifications at {rate}/s for {secs} s, {attackers} stalled unauthenticated 1 MiB POSTs, medians of {runs} runs:"
    );
    println!("| phase | p50 | p99 | max | errors |");
    println!("|---|---|---|---|---|");
    for (phase, pick) in [
        (
            "quiet",
            (|o: &Outcome| &o.quiet) as fn(&Outcome) -> &Latencies,
        ),
        ("attacked", |o: &Outcome| &o.attacked),
    ] {
        println!(
            "| {phase} | {:.2} ms | {:.2} ms | {:.1} ms | {} |",
            med(&|o| pick(o).p50_ms),
            med(&|o| pick(o).p99_ms),
            med(&|o| pick(o).max_ms),
            outcomes.iter().map(|o| pick(o).errors).sum::<usize>(),
        );
    }
    println!(
        "collector peak RSS {:.0} MiB, peak {:.0} threads (medians)",
        med(&|o| o.peak_mib),
        med(&|o| o.peak_threads as f64)
    );
}

fn run_once(rt: &tokio::runtime::Runtime, attackers: usize, rate: u64, secs: u64) -> Outcome {
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
    let mut collector = support::start_collector(dir, &config, &[]);
    let webhook = format!("https://127.0.0.1:{port}/o365/webhook");
    let per_phase = (rate * secs) as usize;

    let notices = rt.block_on(async {
        // Subscribed (the collector answered the emulator's validation), then the emulator's own
        // notifications are switched off so that only this program notifies.
        support::wait_validated(&http, &base, || collector.alive()).await;
        let r = http
            .post(format!("{base}/_emulator/faults"))
            .json(&serde_json::json!({ "webhook_fail_status": 503 }))
            .send()
            .await
            .expect("faults");
        assert!(r.status().is_success());
        support::publish_notices(&http, &base, CONTENT_TYPE, 2 * per_phase, 2 * per_phase).await
    });
    let (quiet_notices, attacked_notices) = {
        let mut n = notices;
        let second = n.split_off(per_phase);
        (n, second)
    };

    let threads = support::ThreadPeak::start(collector.pid());
    let quiet = rt.block_on(support::post_notices(
        support::client(&ca),
        std::slice::from_ref(&webhook),
        quiet_notices,
        rate,
    ));
    let attacked = rt.block_on(async {
        let connector = tls_connector(&ca);
        let release = Arc::new(tokio::sync::Notify::new());
        let stalled = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::with_capacity(attackers);
        for _ in 0..attackers {
            let (connector, release, stalled) =
                (connector.clone(), release.clone(), stalled.clone());
            tasks.push(tokio::spawn(async move {
                let released = release.notified();
                let conn = stall(&connector, port).await;
                stalled.add_permits(1);
                released.await;
                drop(conn);
            }));
        }
        stalled
            .acquire_many(attackers as u32)
            .await
            .expect("attackers")
            .forget();
        let l = support::post_notices(
            support::client(&ca),
            std::slice::from_ref(&webhook),
            attacked_notices,
            rate,
        )
        .await;
        release.notify_waiters();
        for t in tasks {
            t.await.expect("attacker");
        }
        l
    });
    assert!(collector.alive(), "collector exited");
    Outcome {
        quiet: summarize(&quiet),
        attacked: summarize(&attacked),
        peak_mib: collector.memory().peak_mib,
        peak_threads: threads.stop(),
    }
}

/// One attacker: a TLS connection that declares a 1 MiB body without the AuthID, sends as much
/// of it as the collector takes, and is returned open (stalled).
async fn stall(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = connector.connect(name, tcp).await.ok()?;
    let head = format!(
        "POST /o365/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    );
    let spaces = vec![b' '; 64 * 1024];
    let mut sent = conn.write_all(head.as_bytes()).await.is_ok();
    let mut n = 0;
    while sent && n < BODY {
        sent = conn.write_all(&spaces).await.is_ok();
        n += spaces.len();
    }
    Some(conn)
}

fn summarize(latencies: &[(Duration, bool)]) -> Latencies {
    let mut ms: Vec<f64> = latencies
        .iter()
        .map(|(d, _)| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    Latencies {
        p50_ms: support::percentile(&ms, 0.5),
        p99_ms: support::percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        errors: latencies.iter().filter(|(_, ok)| !ok).count(),
    }
}

/// A TLS client trusting `ca` (PEM file), on aws-lc-rs.
fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// This program holds thousands of sockets: raise its soft open-file limit to the hard one.
fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
}
