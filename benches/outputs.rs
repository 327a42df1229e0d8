//! Output benchmark: records/s sustained into each real receiver — rsyslog over TCP and over TLS
//! (until rsyslog has written every message to its file), and the in-process HTTP receiver in the
//! Elasticsearch `_bulk`, Splunk HEC and NDJSON formats (until every request was answered), and a
//! tansu Kafka broker (acks = all, gzip; plaintext, and TLS through an in-process rustls front
//! since tansu 0.6.0 cannot serve TLS itself), and the file output (fsync per blob; without
//! rotation, rotating every 8 MiB, and rotating with gzip of rotated files on the background
//! thread, whose catch-up after the last send is reported apart), and the Sentinel output into the
//! emulator's Logs Ingestion API (in this process: it checks the token, undoes gzip and parses
//! every body, on the same runtime) — plus
//! the latency of one `send` (one blob) and the peak RSS. Each case runs several times; the median
//! is reported.
//!
//! `cargo bench --bench outputs -- [records] [runs] [case]` (default 50000 records in blobs of 1000,
//! 3 runs, every case; a case name such as `kafka` runs only the cases containing it).

#[path = "../tests/outputs_support/mod.rs"]
mod outputs_support;

use std::time::{Duration, Instant};

use o365_collector::config::Config;
use o365_collector::output::{AnyOutput, Batch, Output};
use outputs_support::http::HttpReceiver;
use outputs_support::{Rsyslog, SyslogMode, Tansu, batch};

const BLOB: usize = 1_000;

/// Kept alive for the duration of a case.
enum Server {
    Syslog(Rsyslog),
    Http(#[allow(dead_code)] HttpReceiver),
    Kafka(
        #[allow(dead_code)] Tansu,
        #[allow(dead_code)] Option<tempfile::TempDir>,
    ),
    File(#[allow(dead_code)] tempfile::TempDir),
    Sentinel(
        #[allow(dead_code)] o365_emulator::Emulator,
        #[allow(dead_code)] tempfile::TempDir,
    ),
}

/// The emulated DCR of the sentinel case.
const DCR: &str = "dcr-00112233445566778899aabbccddeeff";

fn open(yaml: &str) -> AnyOutput {
    let text = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         outputs:\n  out:\n{yaml}"
    );
    let cfg = Config::parse(&text, &|_| None).expect("bench config");
    AnyOutput::open("out", cfg.outputs.get("out").expect("output")).expect("open output")
}

fn start(rt: &tokio::runtime::Runtime, case: &str) -> (Server, AnyOutput) {
    match case {
        "sentinel" => {
            use o365_emulator::{DataCollectionRule, EmulatorConfig, TenantSpec};
            let (tenant, client, secret) = (
                "41463f53-8812-40f4-890f-865bf6e35190",
                "2d4f5a8c-1111-4222-8333-444455556666",
                "bench-client-secret",
            );
            let emu = rt
                .block_on(o365_emulator::Emulator::start(EmulatorConfig {
                    tenants: vec![TenantSpec::with_secret(tenant, client, secret)],
                    data_collection_rules: vec![DataCollectionRule {
                        immutable_id: DCR.into(),
                        streams: vec!["Custom-O365Audit_CL".into()],
                        publishers: vec![client.into()],
                    }],
                    ..EmulatorConfig::default()
                }))
                .expect("emulator");
            let dir = tempfile::tempdir().expect("temp dir");
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, emu.ca_pem()).expect("write CA");
            let out = open(&format!(
                "    type: sentinel\n    endpoint: {base}\n    authority: {base}\n    dcr_immutable_id: {DCR}\n    tenant_id: {tenant}\n    client_id: {client}\n    client_secret: {secret}\n    ca_file: '{}'\n",
                ca.display(),
                base = emu.base_url(),
            ));
            (Server::Sentinel(emu, dir), out)
        }
        "syslog-tcp" | "syslog-tls" => {
            let tls = case == "syslog-tls";
            let r = Rsyslog::start(if tls {
                SyslogMode::Tls
            } else {
                SyslogMode::Tcp
            });
            let mut y = format!(
                "    type: syslog\n    address: '{}'\n    transport: {}\n",
                r.address(),
                if tls { "tls" } else { "tcp" }
            );
            if tls {
                y.push_str(&format!(
                    "    ca_file: '{}'\n    server_name: localhost\n",
                    r.ca_file.display()
                ));
            }
            let out = open(&y);
            (Server::Syslog(r), out)
        }
        "file" | "file-rotate" | "file-rotate-gzip" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut y = format!(
                "    type: file\n    path: '{}'\n",
                dir.path().join("events.ndjson").display()
            );
            if case != "file" {
                y.push_str("    rotate_bytes: 8MiB\n");
            }
            if case == "file-rotate-gzip" {
                y.push_str("    compression: gzip\n");
            }
            let out = open(&y);
            (Server::File(dir), out)
        }
        "kafka" => {
            let t = Tansu::start();
            outputs_support::kafka_create_topic(&t.address(), "o365-Audit.SharePoint", 3);
            let out = open(&format!(
                "    type: kafka\n    brokers: '{}'\n    compression: gzip\n",
                t.address()
            ));
            (Server::Kafka(t, None), out)
        }
        "kafka-tls" => {
            let pki = outputs_support::TestPki::generate();
            let t = Tansu::start_with(outputs_support::TansuOptions {
                tls: Some(outputs_support::TlsFrontConfig {
                    cert_pem: pki.cert_pem.clone(),
                    key_pem: pki.key_pem.clone(),
                    client_ca_pem: None,
                }),
                ..outputs_support::TansuOptions::default()
            });
            outputs_support::kafka_create_topic_with(
                &t.address(),
                "o365-Audit.SharePoint",
                3,
                Some(outputs_support::kafka_test_tls(&pki.ca_pem, None)),
            );
            let dir = tempfile::tempdir().expect("temp dir");
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, &pki.ca_pem).expect("write CA");
            let out = open(&format!(
                "    type: kafka\n    brokers: '{}'\n    compression: gzip\n    tls: true\n    ca_file: '{}'\n",
                t.address(),
                ca.display()
            ));
            (Server::Kafka(t, Some(dir)), out)
        }
        _ => {
            let r = HttpReceiver::start();
            let format = case.trim_start_matches("http-");
            let out = open(&format!(
                "    type: http\n    format: {format}\n    url: '{}'\n    token: bench-token\n    gzip: true\n",
                r.url("")
            ));
            (Server::Http(r), out)
        }
    }
}

/// Counts newlines without parsing (rsyslog's output file).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// Records/s, the latency of each send, and for the file output the time its background work
/// (compressing rotated files) still took after the last send.
fn run_case(
    rt: &tokio::runtime::Runtime,
    case: &str,
    batches: &[Batch],
) -> (f64, Vec<Duration>, Option<Duration>) {
    let (server, out) = start(rt, case);
    let records: usize = batches.iter().map(|b| b.events.len()).sum();
    let mut lat = Vec::with_capacity(batches.len());
    let t0 = Instant::now();
    rt.block_on(async {
        for b in batches {
            let s = Instant::now();
            out.send(b).await.expect("send");
            lat.push(s.elapsed());
        }
    });
    if let Server::Syslog(r) = &server {
        outputs_support::wait_for(
            "rsyslog to write everything",
            Duration::from_secs(300),
            || lines_in(&r.out) >= records,
        );
    }
    let elapsed = t0.elapsed();
    let background = match &out {
        AnyOutput::File(f) if case.ends_with("gzip") => {
            let s = Instant::now();
            assert!(f.settle(Duration::from_secs(600)), "background work");
            Some(s.elapsed())
        }
        _ => None,
    };
    if let Server::Sentinel(emu, _) = &server {
        assert_eq!(emu.ingested_records(), records, "every record accepted");
    }
    (records as f64 / elapsed.as_secs_f64(), lat, background)
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let records: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let only = args.get(2).cloned().unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let batches: Vec<Batch> = (0..records.div_ceil(BLOB))
        .map(|i| batch(i * BLOB..((i + 1) * BLOB).min(records)))
        .collect();
    let bytes: usize = batches
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.json.len()))
        .sum();
    println!(
        "outputs: {records} records ({} bytes of JSON on average) in blobs of {BLOB}, {runs} runs per case",
        bytes / records.max(1)
    );
    for case in [
        "syslog-tcp",
        "syslog-tls",
        "http-elasticsearch",
        "http-splunk_hec",
        "http-ndjson",
        "kafka",
        "kafka-tls",
        "file",
        "file-rotate",
        "file-rotate-gzip",
        "sentinel",
    ]
    .into_iter()
    .filter(|c| c.contains(only.as_str()))
    {
        let mut rates = Vec::new();
        let mut lat = Vec::new();
        let mut background = Vec::new();
        for _ in 0..runs {
            let (rate, l, bg) = run_case(&rt, case, &batches);
            rates.push(rate);
            lat.extend(l);
            background.extend(bg);
        }
        background.sort();
        rates.sort_by(|a, b| a.total_cmp(b));
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
        println!(
            "  {case:<20} median {:>8.0} records/s (min {:.0}, max {:.0}); send of one blob p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.9).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
        if let Some(bg) = background.get(background.len() / 2) {
            println!(
                "  {:<20} background work (gzip of rotated files) done {:.0} ms after the last send (median)",
                "",
                bg.as_secs_f64() * 1e3
            );
        }
    }
    println!(
        "  peak RSS {} MiB (this process: outputs, the in-process HTTP receiver, the file output's gzip thread; rsyslog and tansu run apart)",
        o365_collector::telemetry::peak_rss_kib().unwrap_or(0) / 1024
    );
}
