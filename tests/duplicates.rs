//! Microsoft's own duplicate records: the same record, with the same `Id`, published in two sets
//! of blobs an hour apart (Microsoft documents this as expected), reaches each output type once.
//! The real binary in push mode against the emulator and a real receiver of each type, killed
//! with SIGKILL between the two sets; and two replicas on PostgreSQL, the second set fetched by
//! the replica that did not deliver the first.

mod outputs_support;
mod support;

#[path = "support/postgres.rs"]
mod postgres;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use o365_emulator::{ContentType, Emulator};
use outputs_support::http::HttpReceiver;
use outputs_support::receiver::{KAFKA_TOPIC, Receiver};
use outputs_support::{Rsyslog, SyslogMode, Tansu, TansuOptions};
use serde_json::{Value, json};
use support::{Collector, Setup, TENANT, admin_url};

const TYPE: &str = "Audit.General";
const RECORDS: usize = 1_000;
const WAIT: Duration = Duration::from_secs(90);

/// `n` SharePoint file-access records of the test tenant, written for this test.
fn records(n: usize) -> Vec<Value> {
    let at = Utc::now() - TimeDelta::hours(2);
    (0..n)
        .map(|i| {
            json!({
                "CreationTime": (at + TimeDelta::seconds(i as i64)).format("%Y-%m-%dT%H:%M:%S").to_string(),
                "Id": uuid::Uuid::new_v4().to_string(),
                "Operation": "FileAccessed",
                "OrganizationId": TENANT,
                "RecordType": 6,
                "UserKey": format!("i:0h.f|membership|1003200{i:09}@live.com"),
                "UserType": 0,
                "Version": 1,
                "Workload": "SharePoint",
                "ClientIP": "203.0.113.7",
                "ObjectId": format!("https://contoso.sharepoint.com/sites/hr/doc{i}.docx"),
                "UserId": "megan.bowen@contoso.onmicrosoft.com"
            })
        })
        .collect()
}

/// Publishes `records` as blobs of `per_blob` records, created `ago` before now.
async fn publish(emu: &Emulator, records: &[Value], per_blob: usize, ago: TimeDelta) {
    for chunk in records.chunks(per_blob) {
        emu.publish(
            TENANT,
            ContentType::General,
            chunk.to_vec(),
            Some(emu.now() - ago),
        )
        .await
        .unwrap();
    }
}

/// One value of `/metrics` (the first sample line starting with `name`); 0 before the admin
/// listener is up.
async fn metric(c: &Collector, name: &str) -> f64 {
    if !c.logs().contains("admin listener ready") {
        return 0.0;
    }
    let text = reqwest::get(admin_url(&c.logs(), "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn counts(ids: Vec<String>) -> HashMap<String, u32> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id).or_default() += 1;
    }
    m
}

/// A collector in push mode sending to `receiver` (output `siem`), `store_yaml` added.
async fn push_collector(
    emu: &Emulator,
    dir: &std::path::Path,
    receiver: &Receiver,
    store_yaml: &str,
) -> (Setup, Collector) {
    let extra = format!("{}{store_yaml}", receiver.output_yaml());
    let setup = support::setup(emu, dir, &[TYPE], &extra);
    let yaml = std::fs::read_to_string(&setup.config).unwrap();
    // `siem` replaces the file output the setup declares.
    let file_output = format!(
        "outputs:\n  file:\n    type: file\n    path: {}\n",
        setup.events.display()
    );
    assert!(yaml.contains(&file_output), "{yaml}");
    let yaml =
        yaml.replace("output: file\n", "output: siem\n")
            .replacen(&file_output, "outputs:\n", 1);
    std::fs::write(&setup.config, yaml).unwrap();
    let mut collector = Collector::spawn(&setup);
    if let Some(status) = collector.child.try_wait().unwrap() {
        panic!("collector exited ({status}):\n{}", collector.logs());
    }
    support::wait_for(WAIT, "the collector's admin listener", || {
        let done = collector.logs().contains("admin listener ready")
            || collector.child.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(
        collector.child.try_wait().unwrap().is_none(),
        "collector exited:\n{}",
        collector.logs()
    );
    support::wait_webhooks_enabled(emu, &[TYPE]).await;
    (setup, collector)
}

/// The same 1,000 records in 4 blobs, then (after a SIGKILL) in 5 other blobs an hour later: each
/// reaches `receiver` exactly once, and the second set is seen and dropped, not missed.
async fn each_record_once_across_a_kill(receiver: Receiver) {
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (setup, mut collector) = push_collector(&emu, dir.path(), &receiver, "").await;
    let set = records(RECORDS);
    let want: Vec<String> = set
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();

    publish(&emu, &set, 250, TimeDelta::hours(1)).await;
    support::wait_for(WAIT, "the first set delivered", || async {
        let got = counts(receiver.ids());
        want.iter().all(|id| got.contains_key(id))
    })
    .await;
    support::assert_exactly_once(&want, &counts(receiver.ids()));
    // The claims are written within 5 seconds of delivery (README: Outputs); kill after that.
    support::wait_for(WAIT, "the record claims on disk", || async {
        metric(&collector, "o365_record_claims ").await >= RECORDS as f64
    })
    .await;

    collector.kill();
    let collector = Collector::spawn(&setup);
    publish(&emu, &set, 200, TimeDelta::zero()).await;
    support::wait_for(WAIT, "the second set fetched and dropped", || async {
        metric(&collector, "o365_duplicate_records_dropped_total").await >= RECORDS as f64
    })
    .await;
    assert_eq!(
        emu.published(TENANT).await.content_ids.len(),
        9,
        "two sets of blobs"
    );
    support::wait_for(WAIT, "every blob completed", || async {
        metric(&collector, "o365_blobs_completed_total").await >= 5.0
    })
    .await;
    assert_eq!(
        metric(&collector, "o365_duplicate_records_dropped_total").await,
        RECORDS as f64
    );
    let by_tenant = format!(
        "o365_duplicate_records_dropped_by_tenant_total{{tenant_id=\"{TENANT}\",content_type=\"{TYPE}\"}}"
    );
    assert_eq!(metric(&collector, &by_tenant).await, RECORDS as f64);
    let status: Value = reqwest::get(admin_url(&collector.logs(), "/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["tenants"][0]["content_types"][0]["duplicates_dropped"], RECORDS as u64,
        "{status}"
    );
    support::assert_exactly_once(&want, &counts(receiver.ids()));
}

#[tokio::test]
async fn file_gets_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siem.ndjson");
    each_record_once_across_a_kill(Receiver::File(path)).await;
}

#[tokio::test]
async fn ndjson_over_http_gets_each_record_once() {
    each_record_once_across_a_kill(Receiver::Http(HttpReceiver::start(), "ndjson")).await;
}

#[tokio::test]
async fn splunk_hec_gets_each_record_once() {
    each_record_once_across_a_kill(Receiver::Http(HttpReceiver::start(), "splunk_hec")).await;
}

#[tokio::test]
async fn syslog_tcp_gets_each_record_once() {
    each_record_once_across_a_kill(Receiver::Syslog(Rsyslog::start(SyslogMode::Tcp))).await;
}

#[tokio::test]
async fn kafka_gets_each_record_once() {
    let t = Tansu::start_with(TansuOptions::default());
    outputs_support::kafka_create_topic(&t.address(), KAFKA_TOPIC, 1);
    each_record_once_across_a_kill(Receiver::Kafka(t)).await;
}

/// Two replicas on PostgreSQL: the first set is delivered while only replica A runs; A stops
/// and replica B, which never saw the first set, fetches the second: it drops every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_drop_what_the_other_delivered() {
    let pg = postgres::Postgres::shared();
    let url = pg.create_database().await;
    let emu = support::emulator(|_| {}).await;
    let receiver = Receiver::Http(HttpReceiver::start(), "ndjson");
    let store = format!(
        "store:\n  type: postgres\n  url: {url}\n  sslmode: disable\n  pool_size: 4\n  tenant_lease: 2s\n"
    );
    let dir_a = tempfile::tempdir().unwrap();
    let (_, mut a) = push_collector(&emu, dir_a.path(), &receiver, &store).await;
    let set = records(RECORDS);
    let want: Vec<String> = set
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    publish(&emu, &set, 250, TimeDelta::hours(1)).await;
    support::wait_for(WAIT, "the first set delivered by replica A", || async {
        let got = counts(receiver.ids());
        want.iter().all(|id| got.contains_key(id))
    })
    .await;
    let delivered_by_a = metric(&a, "o365_records_delivered_total").await;
    assert_eq!(delivered_by_a, RECORDS as f64);
    a.kill();

    // Replica B: its own webhook (the subscription moves to its address) and the same database.
    let dir_b = tempfile::tempdir().unwrap();
    let (_, b) = push_collector(&emu, dir_b.path(), &receiver, &store).await;
    publish(&emu, &set, 200, TimeDelta::zero()).await;
    support::wait_for(
        WAIT,
        "replica B fetched the second set and dropped it",
        || async { metric(&b, "o365_duplicate_records_dropped_total").await >= RECORDS as f64 },
    )
    .await;
    assert_eq!(metric(&b, "o365_records_delivered_total").await, 0.0);
    assert_eq!(
        metric(&b, "o365_duplicate_records_dropped_total").await,
        RECORDS as f64
    );
    support::assert_exactly_once(&want, &counts(receiver.ids()));
}
