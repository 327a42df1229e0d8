//! The kafka output against a real Kafka-protocol broker (tansu, started here on a loopback port):
//! records produced with acks = all are consumed back with rskafka and compared (value, key,
//! headers, timestamp, partition by key, order within a partition), with gzip and snappy; a broker
//! that is down is `Retryable`, and after it is back the batch goes through.

mod outputs_support;

use std::collections::HashMap;

use o365_collector::config::{Config, OutputConfig};
use o365_collector::output::{AnyOutput, Batch, Output};
use outputs_support::{Tansu, batch, id_of};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::record::Record;

const TOPIC: &str = "o365-Audit.SharePoint";

fn open(t: &Tansu, extra: &str) -> AnyOutput {
    let text = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         outputs:\n  k:\n    type: kafka\n    brokers: '{}'\n    timeout: 5s\n{extra}",
        t.address()
    );
    let cfg = Config::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let o = cfg.outputs.get("k").unwrap();
    assert!(matches!(o, OutputConfig::Kafka(_)));
    AnyOutput::open("k", o).unwrap()
}

async fn create_topic(t: &Tansu, partitions: i32) {
    let client = ClientBuilder::new(vec![t.address()]).build().await.unwrap();
    client
        .controller_client()
        .unwrap()
        .create_topic(TOPIC, partitions, 1, 5_000)
        .await
        .unwrap();
}

/// Every record of every partition: partition → records in offset order.
async fn consume(t: &Tansu, partitions: i32) -> HashMap<i32, Vec<Record>> {
    let client = ClientBuilder::new(vec![t.address()]).build().await.unwrap();
    let mut out = HashMap::new();
    for p in 0..partitions {
        let pc = client
            .partition_client(TOPIC, p, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut records = Vec::new();
        let mut offset = 0;
        loop {
            let (batch, high) = pc.fetch_records(offset, 1..10_000_000, 100).await.unwrap();
            for r in batch {
                offset = r.offset + 1;
                records.push(r.record);
            }
            if offset >= high {
                break;
            }
        }
        out.insert(p, records);
    }
    out
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

#[tokio::test]
async fn broker_down_is_retryable_and_recovery_delivers() {
    let mut t = Tansu::start();
    create_topic(&t, 1).await;
    let out = open(&t, "");
    let a = batch(0..10);
    out.send(&a).await.unwrap();
    t.stop();
    let b = batch(10..20);
    let err = out.send(&b).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // The broker keeps topics in memory: after its restart the topic is created again.
    t.restart();
    create_topic(&t, 1).await;
    let mut attempts = 0;
    loop {
        match out.send(&b).await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                attempts += 1;
                assert!(attempts < 5, "never recovered: {e}");
            }
        }
    }
    check(&consume(&t, 1).await, &[&b]);
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
