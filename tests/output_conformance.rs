//! One conformance suite, run against every output with its real receiver:
//! - accepted means at the destination (`Ok` only once the whole batch arrived);
//! - a receiver that is down surfaces as `Retryable` (also on a connection that was open before);
//! - an outage in the middle of a run, then recovery, loses nothing (batches are retried as the
//!   worker does until accepted);
//! - secrets never appear in errors or in the configuration's Debug output.
//!
//! The file output takes part too: every batch rotates (`rotate_bytes: 1`), and its outage is the
//! output directory going away (an unmounted volume), so a rotation cannot happen until it is back.
//!
//! Syslog over UDP is left out: RFC 5426 has no delivery confirmation, so it cannot conform.
//! The Kafka broker (tansu) keeps its data in a local S3 server, so it is restarted on the same
//! topics and records like any other receiver.

mod outputs_support;

use std::collections::HashSet;
use std::time::Duration;

use o365_collector::config::Config;
use o365_collector::output::{AnyOutput, Output, OutputError};
use outputs_support::http::HttpReceiver;
use outputs_support::{Rsyslog, SyslogMode, Tansu, TansuOptions, batch, id_of};

/// Topic of the conformance batches (`batch` uses Audit.SharePoint).
const KAFKA_TOPIC: &str = "o365-Audit.SharePoint";

const SECRET: &str = "tok3n-S3cret-value-xyz";

#[derive(Clone, Copy, Debug)]
enum Kind {
    SyslogTcp,
    SyslogTls,
    Elasticsearch,
    SplunkHec,
    Ndjson,
    Kafka,
    File,
}

const ALL: [Kind; 7] = [
    Kind::File,
    Kind::Kafka,
    Kind::SyslogTcp,
    Kind::SyslogTls,
    Kind::Elasticsearch,
    Kind::SplunkHec,
    Kind::Ndjson,
];

enum Server {
    Syslog(Rsyslog),
    Http(HttpReceiver),
    Kafka(Tansu),
    /// The output directory (`live`) inside a temporary directory; away at `away` while down.
    File {
        _tmp: tempfile::TempDir,
        live: std::path::PathBuf,
        away: std::path::PathBuf,
    },
}

struct Harness {
    kind: Kind,
    server: Server,
    config: Config,
}

impl Harness {
    fn start(kind: Kind) -> Harness {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (server, yaml) = match kind {
            Kind::SyslogTcp | Kind::SyslogTls => {
                let tls = matches!(kind, Kind::SyslogTls);
                let r = Rsyslog::start(if tls {
                    SyslogMode::Tls
                } else {
                    SyslogMode::Tcp
                });
                let mut y = format!(
                    "    type: syslog\n    address: '{}'\n    transport: {}\n    timeout: 5s\n",
                    r.address(),
                    if tls { "tls" } else { "tcp" }
                );
                if tls {
                    y.push_str(&format!(
                        "    ca_file: '{}'\n    server_name: localhost\n",
                        r.ca_file.display()
                    ));
                }
                (Server::Syslog(r), y)
            }
            Kind::Kafka => {
                let t = Tansu::start_with(TansuOptions {
                    durable: true,
                    ..TansuOptions::default()
                });
                outputs_support::kafka_create_topic(&t.address(), KAFKA_TOPIC, 2);
                let y = format!(
                    "    type: kafka\n    brokers: '{}'\n    timeout: 3s\n",
                    t.address()
                );
                (Server::Kafka(t), y)
            }
            Kind::File => {
                let tmp = tempfile::tempdir().unwrap();
                let (live, away) = (tmp.path().join("out"), tmp.path().join("away"));
                let y = format!(
                    "    type: file\n    path: '{}'\n    rotate_bytes: 1\n",
                    live.join("events.ndjson").display()
                );
                let server = Server::File {
                    _tmp: tmp,
                    live,
                    away,
                };
                (server, y)
            }
            Kind::Elasticsearch | Kind::SplunkHec | Kind::Ndjson => {
                let r = HttpReceiver::start();
                let (format, header) = match kind {
                    Kind::Elasticsearch => ("elasticsearch", format!("Bearer {SECRET}")),
                    Kind::SplunkHec => ("splunk_hec", format!("Splunk {SECRET}")),
                    _ => ("ndjson", format!("Bearer {SECRET}")),
                };
                *r.state.auth.lock().unwrap() = Some(("authorization".into(), header));
                let y = format!(
                    "    type: http\n    format: {format}\n    url: '{}'\n    token: '{SECRET}'\n    timeout: 5s\n    max_events: 16\n",
                    r.url("")
                );
                (Server::Http(r), y)
            }
        };
        let text = format!(
            "tenant_id: 66666666-7777-8888-9999-000000000000\n\
             client_id: 11111111-2222-3333-4444-555555555555\n\
             client_secret: s3cr3t~Value.From_Azure-Portal\n\
             outputs:\n  out:\n{yaml}"
        );
        let config = Config::parse(&text, &|_| None).unwrap();
        Harness {
            kind,
            server,
            config,
        }
    }

    fn open(&self) -> AnyOutput {
        AnyOutput::open("out", self.config.outputs.get("out").unwrap()).unwrap()
    }

    fn stop(&mut self) {
        match &mut self.server {
            Server::Syslog(r) => r.stop(),
            Server::Http(r) => r.stop(),
            Server::Kafka(t) => t.stop(),
            Server::File { live, away, .. } => std::fs::rename(live, away).unwrap(),
        }
    }

    fn restart(&mut self) {
        match &mut self.server {
            Server::Syslog(r) => r.restart(),
            Server::Http(r) => r.restart(),
            Server::Kafka(t) => t.restart(),
            Server::File { live, away, .. } => std::fs::rename(away, live).unwrap(),
        }
    }

    /// Record ids at the destination.
    fn delivered(&self) -> Vec<String> {
        match &self.server {
            Server::Syslog(r) => r.received().iter().map(|m| id_of(&m.msg)).collect(),
            Server::File { live, .. } => {
                use o365_collector::output::file::{read_rotated, rotated_files};
                let active = live.join("events.ndjson");
                let mut text = std::fs::read(&active).unwrap_or_default();
                for f in rotated_files(&active).unwrap() {
                    text.extend(read_rotated(&f).unwrap());
                }
                String::from_utf8(text)
                    .unwrap()
                    .lines()
                    .map(id_of)
                    .collect()
            }
            Server::Kafka(t) => outputs_support::kafka_values(&t.address(), KAFKA_TOPIC, 2)
                .iter()
                .map(|v| id_of(std::str::from_utf8(v).unwrap()))
                .collect(),
            Server::Http(r) => r.record_ids(),
        }
    }

    /// Waits (bounded) until every id of `0..n` is at the destination; HTTP receivers have it
    /// before answering, rsyslog writes its file shortly after reading the socket.
    fn wait_all(&self, n: usize) -> HashSet<String> {
        let want: HashSet<String> = batch(0..n)
            .events
            .iter()
            .map(|e| id_of(std::str::from_utf8(&e.json).unwrap()))
            .collect();
        let mut have: HashSet<String>;
        let limit = match self.server {
            Server::Syslog(_) => Duration::from_secs(30),
            Server::Http(_) | Server::Kafka(_) | Server::File { .. } => Duration::ZERO,
        };
        let start = std::time::Instant::now();
        loop {
            have = self.delivered().into_iter().collect();
            if want.is_subset(&have) || start.elapsed() >= limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let missing: Vec<_> = want.difference(&have).take(5).collect();
        assert!(
            missing.is_empty(),
            "{:?}: missing e.g. {missing:?}",
            self.kind
        );
        have
    }
}

fn assert_no_secret(kind: Kind, e: &OutputError) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(SECRET), "{kind:?}: secret in {text}");
    }
}

#[tokio::test]
async fn accepted_means_at_the_destination() {
    for kind in ALL {
        let h = Harness::start(kind);
        let out = h.open();
        let report = out.send(&batch(0..40)).await.unwrap();
        assert_eq!(report.written + report.duplicates, 40, "{kind:?}");
        h.wait_all(40);
        let got = h.delivered();
        assert_eq!(got.len(), 40, "{kind:?}: nothing more than sent");
    }
}

#[tokio::test]
async fn receiver_down_is_retryable() {
    for kind in ALL {
        let mut h = Harness::start(kind);
        let out = h.open();
        out.send(&batch(0..5)).await.unwrap();
        h.stop();
        // Twice: the first send notices the closed connection, the second finds nobody listening.
        for _ in 0..2 {
            let err = out.send(&batch(5..10)).await.unwrap_err();
            assert!(err.is_retryable(), "{kind:?}: {err}");
            assert_no_secret(kind, &err);
        }
        // A fresh output against the stopped receiver: the same. (Opening a file output creates its
        // directory, so for it a missing directory is only an outage once it is running.)
        if matches!(kind, Kind::File) {
            continue;
        }
        let err = h.open().send(&batch(5..10)).await.unwrap_err();
        assert!(err.is_retryable(), "{kind:?}: {err}");
    }
}

#[tokio::test]
async fn outage_and_recovery_lose_nothing() {
    const BATCHES: usize = 30;
    const PER: usize = 10;
    for kind in ALL {
        let mut h = Harness::start(kind);
        let out = h.open();
        let mut failures = 0;
        for i in 0..BATCHES {
            if i == 10 {
                h.stop();
            }
            let b = batch(i * PER..(i + 1) * PER);
            let mut attempts = 0;
            loop {
                match out.send(&b).await {
                    Ok(_) => break,
                    Err(e) => {
                        assert!(e.is_retryable(), "{kind:?}: {e}");
                        failures += 1;
                        attempts += 1;
                        // The receiver comes back after a few failed attempts.
                        if attempts == 3 {
                            h.restart();
                        }
                        assert!(attempts < 10, "{kind:?}: never recovered: {e}");
                    }
                }
            }
        }
        assert!(failures >= 3, "{kind:?}: the outage was not noticed");
        let have = h.wait_all(BATCHES * PER);
        assert_eq!(have.len(), BATCHES * PER, "{kind:?}");
    }
}

#[tokio::test]
async fn secrets_never_appear_in_config_or_errors() {
    for kind in [
        Kind::Elasticsearch,
        Kind::SplunkHec,
        Kind::Ndjson,
        Kind::Kafka,
    ] {
        let mut h = Harness::start(kind);
        let dump = format!("{:?}\n{}", h.config, h.config.summary());
        assert!(!dump.contains(SECRET), "{kind:?}: {dump}");
        if let Server::Kafka(t) = &h.server {
            // The test broker runs without authentication, so SASL credentials are refused by it.
            let text = format!(
                "tenant_id: 66666666-7777-8888-9999-000000000000\n\
                 client_id: 11111111-2222-3333-4444-555555555555\n\
                 client_secret: s3cr3t~Value.From_Azure-Portal\n\
                 outputs:\n  out: {{type: kafka, brokers: '{}', timeout: 2s, sasl_mechanism: PLAIN, username: u, password: '{SECRET}'}}\n",
                t.address()
            );
            let config = Config::parse(&text, &|_| None).unwrap();
            let dump = format!("{config:?}\n{}", config.summary());
            assert!(!dump.contains(SECRET), "{kind:?}: {dump}");
            let out = AnyOutput::open("out", config.outputs.get("out").unwrap()).unwrap();
            let err = out.send(&batch(0..3)).await.unwrap_err();
            assert!(err.to_string().contains("Sasl"), "{err}");
            assert_no_secret(kind, &err);
            h.stop();
            let err = out.send(&batch(0..3)).await.unwrap_err();
            assert_no_secret(kind, &err);
            continue;
        }
        // Refused credentials.
        if let Server::Http(r) = &h.server {
            *r.state.auth.lock().unwrap() = Some(("authorization".into(), "something else".into()));
        }
        let err = h.open().send(&batch(0..3)).await.unwrap_err();
        assert!(!err.is_retryable(), "{kind:?}: {err}");
        assert_no_secret(kind, &err);
        h.stop();
        let err = h.open().send(&batch(0..3)).await.unwrap_err();
        assert_no_secret(kind, &err);
    }
}
