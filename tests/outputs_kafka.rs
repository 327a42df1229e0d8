//! The kafka output against a real Kafka-protocol broker (tansu, started here on a loopback port):
//! records produced with acks = all are consumed back with rskafka and compared (value, key,
//! headers, timestamp, partition by key, order within a partition), with gzip and snappy; a broker
//! that is stopped in the middle of a run and restarted (its data in a local S3 server) ends up
//! with every record sent exactly once; TLS (a server certificate from our test CA, mutual TLS,
//! `server_name`) and its refusals; SASL as far as tansu 0.6.0 supports it.

mod outputs_support;

use std::collections::HashMap;
use std::sync::Arc;

use o365_collector::config::Config;
use o365_collector::output::OutputConfig;
use o365_collector::output::{AnyOutput, Batch, Output, OutputError};
use outputs_support::{
    Tansu, TansuOptions, TestPki, TlsFrontConfig, batch, id_of, kafka_create_topic_with,
    kafka_records_with, kafka_test_tls,
};
use rskafka::record::Record;

const TOPIC: &str = "o365-Audit.SharePoint";

fn open(t: &Tansu, extra: &str) -> AnyOutput {
    open_with_timeout(t, "5s", extra)
}

/// [`open`] with another `timeout` (rskafka's own retry deadline is 0.8 × it).
fn open_with_timeout(t: &Tansu, timeout: &str, extra: &str) -> AnyOutput {
    let text = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         outputs:\n  k:\n    type: kafka\n    brokers: '{}'\n    timeout: {timeout}\n{extra}",
        t.address()
    );
    let cfg = Config::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let o = cfg.outputs.get("k").unwrap();
    assert!(matches!(o, OutputConfig::Kafka(_)));
    AnyOutput::open("k", o).unwrap()
}

async fn create_topic(t: &Tansu, partitions: i32) {
    create_topic_tls(t, partitions, None);
}

fn create_topic_tls(t: &Tansu, partitions: i32, tls: Option<Arc<rustls::ClientConfig>>) {
    kafka_create_topic_with(&t.address(), TOPIC, partitions, tls);
}

/// Every record of every partition: partition → records in offset order.
async fn consume(t: &Tansu, partitions: i32) -> HashMap<i32, Vec<Record>> {
    consume_tls(t, partitions, None)
}

fn consume_tls(
    t: &Tansu,
    partitions: i32,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> HashMap<i32, Vec<Record>> {
    kafka_records_with(&t.address(), TOPIC, partitions, tls)
        .into_iter()
        .collect()
}

/// Sends until accepted, as the worker does (bounded: the broker is back by then).
async fn send_until_accepted(out: &AnyOutput, b: &Batch) -> usize {
    let mut failures = 0;
    loop {
        match out.send(b).await {
            Ok(_) => return failures,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                failures += 1;
                assert!(failures < 10, "never recovered: {e}");
            }
        }
    }
}

fn check(consumed: &HashMap<i32, Vec<Record>>, sent: &[&Batch]) {
    let by_id: HashMap<String, (&Batch, usize)> = sent
        .iter()
        .flat_map(|b| {
            b.events
                .iter()
                .enumerate()
                .map(move |(i, e)| (id_of(std::str::from_utf8(&e.json).unwrap()), (*b, i)))
        })
        .collect();
    let total: usize = consumed.values().map(Vec::len).sum();
    assert_eq!(total, by_id.len(), "each record exactly once");
    for records in consumed.values() {
        let mut last: Option<(String, usize)> = None;
        for r in records {
            let value = r.value.as_ref().unwrap();
            let id = id_of(std::str::from_utf8(value).unwrap());
            let (b, i) = by_id[&id];
            assert_eq!(value, &b.events[i].json);
            assert_eq!(r.key.as_deref(), Some(id.as_bytes()), "key = record Id");
            assert_eq!(r.headers["content_id"], b.content_id.as_bytes());
            assert_eq!(r.headers["content_type"], b"Audit.SharePoint");
            assert_eq!(r.headers["tenant"], b.tenant_id.as_bytes());
            let v: serde_json::Value = serde_json::from_slice(value).unwrap();
            let ts =
                chrono::DateTime::parse_from_rfc3339(v["@timestamp"].as_str().unwrap()).unwrap();
            assert_eq!(r.timestamp.timestamp_millis(), ts.timestamp_millis());
            // Within a partition, a blob's records keep their order.
            if let Some((c, j)) = &last
                && *c == b.content_id
            {
                assert!(i > *j, "order within the partition");
            }
            last = Some((b.content_id.clone(), i));
        }
    }
}

#[tokio::test]
async fn produce_and_consume_back_with_gzip_and_snappy() {
    for compression in ["none", "gzip", "snappy"] {
        let t = Tansu::start();
        create_topic(&t, 3).await;
        let out = open(&t, &format!("    compression: {compression}\n"));
        let (a, b) = (batch(0..60), batch(60..100));
        assert_eq!(out.send(&a).await.unwrap().written, 60);
        assert_eq!(out.send(&b).await.unwrap().written, 40);
        let consumed = consume(&t, 3).await;
        assert!(
            consumed.values().filter(|r| !r.is_empty()).count() > 1,
            "records spread over partitions by key"
        );
        check(&consumed, &[&a, &b]);
    }
}

/// The broker is killed in the middle of a run and started again on its storage: every record
/// sent before the stop and after the restart is there exactly once, as sent. Plaintext, and over
/// TLS (the front stays up while the broker behind it is down, like a load balancer).
#[tokio::test]
async fn broker_outage_and_restart_lose_nothing() {
    for tls in [false, true] {
        let pki = TestPki::generate();
        let dir = tempfile::tempdir().unwrap();
        let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
        let mut t = Tansu::start_with(TansuOptions {
            durable: true,
            tls: tls.then(|| TlsFrontConfig {
                cert_pem: pki.cert_pem.clone(),
                key_pem: pki.key_pem.clone(),
                client_ca_pem: None,
            }),
            ..TansuOptions::default()
        });
        let client_tls = tls.then(|| kafka_test_tls(&pki.ca_pem, None));
        create_topic_tls(&t, 3, client_tls.clone());
        let out = open(
            &t,
            &if tls {
                tls_yaml(&ca, "")
            } else {
                String::new()
            },
        );
        let a = batch(0..60);
        let b = batch(60..120);
        assert_eq!(out.send(&a).await.unwrap().written, 60);
        assert_eq!(out.send(&b).await.unwrap().written, 60);
        t.stop();
        let c = batch(120..180);
        // Twice: the first send finds its connection dead, the second finds nobody listening.
        for _ in 0..2 {
            let err = out.send(&c).await.unwrap_err();
            assert!(err.is_retryable(), "tls {tls}: {err}");
        }
        // Same port, same storage; the topic is not created again.
        t.restart();
        send_until_accepted(&out, &c).await;
        let d = batch(180..240);
        assert_eq!(out.send(&d).await.unwrap().written, 60);
        check(&consume_tls(&t, 3, client_tls), &[&a, &b, &c, &d]);
    }
}

/// The storage really is the broker's: what a restarted broker serves was written before it.
#[tokio::test]
async fn durable_broker_keeps_topics_and_records_across_restarts() {
    let mut t = Tansu::start_with(TansuOptions {
        durable: true,
        ..TansuOptions::default()
    });
    assert!(t.is_durable());
    create_topic(&t, 1).await;
    let a = batch(0..25);
    open(&t, "").send(&a).await.unwrap();
    t.restart();
    check(&consume(&t, 1).await, &[&a]);
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tls_yaml(ca: &std::path::Path, extra: &str) -> String {
    format!("    tls: true\n    ca_file: '{}'\n{extra}", ca.display())
}

const SASL_SECRET: &str = "sasl-Pa55word-never-shown";

fn assert_clean(e: &OutputError) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(SASL_SECRET), "secret in {text}");
        assert!(!text.contains("PRIVATE KEY"), "key material in {text}");
    }
}

/// TLS with a certificate from our test CA: records go through and come back as sent; the
/// certificate is checked against the broker's address or `server_name`; a CA we do not trust or
/// a wrong name is refused as `Fatal` with a reason that names the problem and no secret.
#[tokio::test]
async fn tls_round_trip_and_refusals() {
    let pki = TestPki::generate();
    let t = Tansu::start_with(TansuOptions {
        tls: Some(TlsFrontConfig {
            cert_pem: pki.cert_pem.clone(),
            key_pem: pki.key_pem.clone(),
            client_ca_pem: None,
        }),
        ..TansuOptions::default()
    });
    let tls = kafka_test_tls(&pki.ca_pem, None);
    create_topic_tls(&t, 2, Some(tls.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);

    let out = open(&t, &tls_yaml(&ca, ""));
    let a = batch(0..40);
    assert_eq!(out.send(&a).await.unwrap().written, 40);
    let named = open(&t, &tls_yaml(&ca, "    server_name: localhost\n"));
    let b = batch(40..70);
    assert_eq!(named.send(&b).await.unwrap().written, 30);
    check(&consume_tls(&t, 2, Some(tls)), &[&a, &b]);

    // A CA we do not trust (SASL configured too: its password must not show up either).
    let other = TestPki::generate();
    let other_ca = write(dir.path(), "other-ca.pem", &other.ca_pem);
    let sasl = format!(
        "    sasl_mechanism: SCRAM-SHA-256\n    username: u\n    password: '{SASL_SECRET}'\n"
    );
    let err = open(&t, &tls_yaml(&other_ca, &sasl))
        .send(&batch(70..75))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("certificate was refused"), "{text}");
    // Both test CAs carry the same name, so webpki finds "an issuer" and its signature fails.
    assert!(
        text.contains("UnknownIssuer") || text.contains("BadSignature"),
        "{text}"
    );
    assert_clean(&err);

    // Trusted CA, wrong name.
    let err = open(&t, &tls_yaml(&ca, "    server_name: kafka.wrong.example\n"))
        .send(&batch(70..75))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");

    // A plaintext client against the TLS listener gets nowhere, and says so as retryable.
    let err = open(&t, "").send(&batch(70..75)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

/// Mutual TLS: a broker that wants a client certificate accepts ours and refuses a client
/// without one.
#[tokio::test]
async fn tls_client_certificate() {
    let pki = TestPki::generate();
    let t = Tansu::start_with(TansuOptions {
        tls: Some(TlsFrontConfig {
            cert_pem: pki.cert_pem.clone(),
            key_pem: pki.key_pem.clone(),
            client_ca_pem: Some(pki.ca_pem.clone()),
        }),
        ..TansuOptions::default()
    });
    // The test leaf carries clientAuth too: it doubles as the client certificate.
    let tls = kafka_test_tls(&pki.ca_pem, Some((&pki.cert_pem, &pki.key_pem)));
    create_topic_tls(&t, 1, Some(tls.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let cert = write(dir.path(), "client.pem", &pki.cert_pem);
    let key = write(dir.path(), "client-key.pem", &pki.key_pem);
    let out = open(
        &t,
        &tls_yaml(
            &ca,
            &format!(
                "    client_cert: '{}'\n    client_key: '{}'\n",
                cert.display(),
                key.display()
            ),
        ),
    );
    let a = batch(0..20);
    assert_eq!(out.send(&a).await.unwrap().written, 20);
    check(&consume_tls(&t, 1, Some(tls)), &[&a]);

    let err = open(&t, &tls_yaml(&ca, "")).send(&a).await.unwrap_err();
    assert_clean(&err);
}

#[tokio::test]
async fn unknown_topic_is_retryable() {
    let t = Tansu::start();
    let out = open(&t, "    topic: 'missing-{content_type}'\n");
    let err = out.send(&batch(0..1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("missing-Audit.SharePoint"),
        "{err}"
    );
    // It returned at all: bounded by the configured timeout, not rskafka's retry-forever default.
}

/// SASL against tansu 0.6.0, as far as it goes: with `--authentication` it offers SCRAM-SHA-256
/// and SCRAM-SHA-512 but keeps no users (`tansu user create` is refused once authentication is on,
/// and its storage engines do not persist users across the restart that would turn it on), so a
/// login can only be refused. Both SCRAM mechanisms run their exchange up to the broker's user
/// lookup and come back `Fatal`, naming the step and never the password; a broker without
/// authentication refuses SASL altogether (also `Fatal`); PLAIN is not offered and the broker
/// drops the connection, which cannot be told from an outage (`Retryable`).
#[tokio::test]
async fn sasl_scram_reaches_the_broker_and_refusals_are_fatal() {
    let t = Tansu::start_with(TansuOptions {
        authentication: true,
        ..TansuOptions::default()
    });
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        // rskafka retries a refused login until the timeout less a third (at most 5 s), then
        // reports it; what is left (5 s here) must cover the last attempt on a loaded machine, or
        // the refusal turns into a bare timeout.
        let out = open_with_timeout(
            &t,
            "15s",
            &format!(
                "    sasl_mechanism: {mechanism}\n    username: o365-producer\n    password: '{SASL_SECRET}'\n"
            ),
        );
        let err = out.send(&batch(0..2)).await.unwrap_err();
        assert!(!err.is_retryable(), "{mechanism}: {err}");
        let text = err.to_string();
        assert!(text.contains("SASL login refused"), "{mechanism}: {text}");
        assert!(
            text.contains("SCRAM") && text.contains("unknown user"),
            "{text}"
        );
        assert_clean(&err);
    }
    let plain = open(
        &t,
        &format!("    sasl_mechanism: PLAIN\n    username: u\n    password: '{SASL_SECRET}'\n"),
    );
    let err = plain.send(&batch(0..2)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_clean(&err);

    let open_broker = Tansu::start();
    let out = open(
        &open_broker,
        &format!(
            "    sasl_mechanism: SCRAM-SHA-512\n    username: u\n    password: '{SASL_SECRET}'\n"
        ),
    );
    let err = out.send(&batch(0..2)).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("UnsupportedSaslMechanism"),
        "{err}"
    );
    assert_clean(&err);
}

fn kafka_config(extra: &str) -> Result<Config, o365_collector::config::ConfigErrors> {
    let text = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         outputs:\n  k:\n    type: kafka\n    brokers: 'kafka-1:9093'\n{extra}"
    );
    Config::parse(&text, &|_| None)
}

/// The TLS keys: read into the config, refused where they would be ignored or are incomplete.
#[test]
fn tls_configuration_keys() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let cert = write(dir.path(), "c.pem", &pki.cert_pem);
    let key = write(dir.path(), "k.pem", &pki.key_pem);
    let c = kafka_config(&format!(
        "    tls: true\n    ca_file: '{}'\n    client_cert: '{}'\n    client_key: '{}'\n    server_name: kafka.test\n",
        ca.display(),
        cert.display(),
        key.display()
    ))
    .unwrap();
    let Some(OutputConfig::Kafka(k)) = c.outputs.get("k") else {
        panic!("not kafka")
    };
    let tls = k.tls.as_ref().expect("tls");
    assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(tls.client_cert.as_deref(), Some(cert.as_path()));
    assert_eq!(tls.client_key.as_deref(), Some(key.as_path()));
    assert_eq!(tls.server_name.as_deref(), Some("kafka.test"));
    assert!(
        c.summary().contains("kafka o365-{content_type}, tls"),
        "{}",
        c.summary()
    );
    // System roots only.
    let c = kafka_config("    tls: true\n").unwrap();
    assert!(matches!(c.outputs.get("k"), Some(OutputConfig::Kafka(k)) if k.tls.is_some()));
    let c = kafka_config("").unwrap();
    assert!(matches!(c.outputs.get("k"), Some(OutputConfig::Kafka(k)) if k.tls.is_none()));

    let problems = |extra: &str| kafka_config(extra).unwrap_err().to_string();
    let e = problems(&format!("    ca_file: '{}'\n", ca.display()));
    assert!(
        e.contains("outputs.k.ca_file") && e.contains("tls: true"),
        "{e}"
    );
    let e = problems(&format!(
        "    tls: true\n    client_cert: '{}'\n",
        cert.display()
    ));
    assert!(
        e.contains("outputs.k.client_key") && e.contains("missing"),
        "{e}"
    );
    let e = problems("    tls: true\n    server_name: 'not a name'\n");
    assert!(e.contains("outputs.k.server_name"), "{e}");
    let e = problems("    tls: true\n    ca_file: /nonexistent/ca.pem\n");
    assert!(e.contains("outputs.k.ca_file"), "{e}");
    let e = problems("    tls: maybe\n");
    assert!(e.contains("outputs.k.tls"), "{e}");
}

/// The topic is a name template like the other outputs' names: `{tenant_name}` and the event's
/// hour split one batch over two topics, each record in the topic of its own time.
#[tokio::test]
async fn topic_template_with_tenant_name_and_time() {
    let t = Tansu::start();
    let (early, late) = ("o365-contoso-2020091312", "o365-contoso-2020091313");
    for topic in [early, late] {
        kafka_create_topic_with(&t.address(), topic, 1, None);
    }
    let out = open(&t, "    topic: 'o365-{tenant_name}-%Y%m%d%H'\n");
    // Events are a second apart from 12:26:40 UTC: 1990..2000 before 13:00, 2000..2010 after.
    let b = Batch {
        tenant_name: Some("contoso".into()),
        ..batch(1990..2010)
    };
    assert_eq!(out.send(&b).await.unwrap().written, 20);
    let ids = |topic: &str| -> Vec<String> {
        kafka_records_with(&t.address(), topic, 1, None)
            .into_iter()
            .flat_map(|(_, records)| records)
            .map(|r| id_of(std::str::from_utf8(r.value.as_ref().unwrap()).unwrap()))
            .collect()
    };
    let want = |range: std::ops::Range<usize>| -> Vec<String> {
        batch(range)
            .events
            .iter()
            .map(|e| id_of(std::str::from_utf8(&e.json).unwrap()))
            .collect()
    };
    assert_eq!(ids(early), want(1990..2000));
    assert_eq!(ids(late), want(2000..2010));
}
