//! An output outage end to end (syslog, the three http formats, Kafka on a durable broker): the
//! real binary in push mode against the emulator and a real receiver, which is stopped in the
//! middle of the run and started again. Shows:
//! - every published record arrives once the receiver is back;
//! - the webhook keeps acknowledging (storing) notifications while the output is down;
//! - back-pressure: while the output is down the workers stop fetching blobs (the emulator serves
//!   each waiting blob once, plus one blob per probe), rather than fetching and failing in a loop;
//! - after recovery the waiting blobs flow in order of arrival (the probes' blobs excepted).

mod outputs_support;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use outputs_support::http::HttpReceiver;
use outputs_support::receiver::{KAFKA_TOPIC, Receiver};
use outputs_support::{Rsyslog, SyslogMode, Tansu, TansuOptions};
use support::{Collector, TENANT, admin_url};

const TYPE: &str = "Audit.General";
const PER_BLOB: u64 = 40;
const BEFORE: u64 = 5;
const DURING: u64 = 20;
const WAIT: Duration = Duration::from_secs(60);

/// Length of the longest strictly increasing subsequence (n is small).
fn longest_increasing(xs: &[usize]) -> usize {
    let mut best = vec![1; xs.len()];
    for i in 0..xs.len() {
        for j in 0..i {
            if xs[j] < xs[i] {
                best[i] = best[i].max(best[j] + 1);
            }
        }
    }
    best.into_iter().max().unwrap_or(0)
}

async fn published(emu: &o365_emulator::Emulator) -> (Vec<String>, u64) {
    let p = emu.published(TENANT).await;
    (p.record_ids, p.content_fetches)
}

/// The collector binary in push mode with `workers`, sending to `receiver`, webhooks enabled.
async fn push_collector(
    emu: &o365_emulator::Emulator,
    dir: &std::path::Path,
    receiver: &Receiver,
    workers: u64,
) -> Collector {
    let extra = format!(
        "{}pipeline:\n  workers: {workers}\n",
        receiver.output_yaml()
    );
    let setup = support::setup(emu, dir, &[TYPE], &extra);
    let yaml = std::fs::read_to_string(&setup.config).unwrap();
    let yaml = yaml.replace("output: file\n", "output: siem\n");
    std::fs::write(&setup.config, yaml).unwrap();
    let collector = Collector::spawn(&setup);
    support::wait_webhooks_enabled(emu, &[TYPE]).await;
    collector
}

async fn outage_then_recovery(mut receiver: Receiver) {
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // One worker keeps the order of deliveries observable.
    let collector = push_collector(&emu, dir.path(), &receiver, 1).await;

    // Before the outage: everything flows.
    support::generate(&emu, TYPE, BEFORE * PER_BLOB, BEFORE).await;
    let before = (BEFORE * PER_BLOB) as usize;
    support::wait_for(WAIT, "records before the outage", || async {
        receiver.ids().len() >= before
    })
    .await;

    // The receiver goes down, and more content is published.
    receiver.stop();
    support::generate(&emu, TYPE, DURING * PER_BLOB, DURING).await;
    let all_blobs = (BEFORE + DURING) as usize;
    support::wait_for(WAIT, "every notification acknowledged", || async {
        support::acknowledged_content_ids(&emu).await.len() >= all_blobs
    })
    .await;
    let closes = |c: &Collector| c.logs().matches("output unavailable").count();
    support::wait_for(WAIT, "the outage noticed and one probe failed", || async {
        closes(&collector) >= 2
    })
    .await;
    let (_, fetched) = published(&emu).await;
    let closed = closes(&collector) as u64;
    // The blobs before the outage, then per close of the gate one blob (the first close: the blob
    // in flight; each later one: a probe), plus a probe that may be between fetch and verdict.
    assert!(
        fetched <= BEFORE + closed + 1,
        "{fetched} fetches with the output down ({closed} closes): the workers did not pause\n{}",
        collector.logs()
    );

    // The admin status says so.
    let status = admin_url(&collector.logs(), "/status");
    let deliveries = || async {
        let v: serde_json::Value = reqwest::get(&status).await.unwrap().json().await.unwrap();
        let out = &v["outputs"].as_array().unwrap()[0];
        assert_eq!(out["name"], "siem");
        out["deliveries"].as_str().unwrap().to_owned()
    };
    let state = deliveries().await;
    assert!(state == "paused" || state == "probing", "{state}");

    receiver.restart();
    let (ids, _) = published(&emu).await;
    support::wait_for(WAIT, "every record after the outage", || async {
        let have: std::collections::HashSet<String> = receiver.ids().into_iter().collect();
        ids.iter().all(|id| have.contains(id))
    })
    .await;
    let (_, fetched) = published(&emu).await;
    let closed = closes(&collector) as u64;
    assert!(
        fetched <= all_blobs as u64 + closed + 1,
        "{fetched} fetches for {all_blobs} blobs and {closed} closes"
    );
    let logs = collector.logs();
    assert!(logs.contains("deliveries resume"), "{logs}");
    assert_eq!(deliveries().await, "open");

    // Order of arrival: the blobs published during the outage reach the receiver in publish
    // order, except the few used as probes (they count an attempt and go behind the line).
    if matches!(receiver, Receiver::Http(_, "elasticsearch")) {
        return; // the receiver keeps documents by `_id`, not in arrival order
    }
    let blob_of: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i / PER_BLOB as usize))
        .collect();
    let mut order: Vec<usize> = Vec::new();
    for id in receiver.ids() {
        let Some(&b) = blob_of.get(id.as_str()) else {
            continue;
        };
        if b >= BEFORE as usize && !order.contains(&b) {
            order.push(b);
        }
    }
    assert_eq!(order.len(), DURING as usize);
    let in_order = longest_increasing(&order);
    assert!(
        in_order + closed as usize >= order.len(),
        "blob order after recovery {order:?}: only {in_order} in publish order, {closed} probes"
    );
}

/// A slow output paces the workers: with many blobs waiting, no more than one blob per worker is
/// ever fetched ahead of what the output accepted.
#[tokio::test]
async fn a_slow_output_paces_fetching() {
    const WORKERS: u64 = 2;
    const BLOBS: u64 = 30;
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    http.state
        .delay_ms
        .store(50, std::sync::atomic::Ordering::SeqCst);
    let state = http.state.clone();
    let receiver = Receiver::Http(http, "ndjson");
    let _collector = push_collector(&emu, dir.path(), &receiver, WORKERS).await;
    support::generate(&emu, TYPE, BLOBS * PER_BLOB, BLOBS).await;

    let (mut ahead_max, mut samples) = (0, 0);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // Fetches first: requests only grow, so the difference never overstates.
        let (_, fetched) = published(&emu).await;
        let accepted = state.requests.load(std::sync::atomic::Ordering::SeqCst) as u64;
        ahead_max = ahead_max.max(fetched.saturating_sub(accepted));
        samples += 1;
        if receiver.ids().len() >= (BLOBS * PER_BLOB) as usize {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {accepted} of {BLOBS} blobs delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(samples > 10, "too few samples ({samples}) to show anything");
    assert!(
        ahead_max <= WORKERS,
        "{ahead_max} blobs fetched ahead of the output with {WORKERS} workers"
    );
    assert_eq!(receiver.ids().len(), (BLOBS * PER_BLOB) as usize);
    let (_, fetched) = published(&emu).await;
    assert_eq!(fetched, BLOBS, "each blob fetched once");
    eprintln!("slow output: at most {ahead_max} blobs fetched ahead ({samples} samples)");
}

/// An output that refuses every batch (the receiver wants a token the configuration lacks) is
/// paused like one that is down: blobs are not fetched from Microsoft only to be refused. Once the
/// receiver accepts, everything arrives.
#[tokio::test]
async fn a_refusing_output_is_paused_too() {
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    *http.state.auth.lock().unwrap() =
        Some(("authorization".into(), "Bearer a-token-we-lack".into()));
    let state = http.state.clone();
    let receiver = Receiver::Http(http, "ndjson");
    let collector = push_collector(&emu, dir.path(), &receiver, 2).await;
    support::generate(&emu, TYPE, DURING * PER_BLOB, DURING).await;
    let closes = |c: &Collector| c.logs().matches("output unavailable").count();
    support::wait_for(
        WAIT,
        "the refusal noticed and one probe refused",
        || async { closes(&collector) >= 2 },
    )
    .await;
    let (_, fetched) = published(&emu).await;
    let closed = closes(&collector) as u64;
    assert!(
        fetched <= 2 + closed + 1,
        "{fetched} fetches while the output refused everything ({closed} closes)\n{}",
        collector.logs()
    );
    assert!(collector.logs().contains("HTTP 401"));

    *state.auth.lock().unwrap() = None;
    let (ids, _) = published(&emu).await;
    support::wait_for(WAIT, "every record once the receiver accepts", || async {
        let have: std::collections::HashSet<String> = receiver.ids().into_iter().collect();
        ids.iter().all(|id| have.contains(id))
    })
    .await;
}

#[tokio::test]
async fn syslog_outage_loses_nothing_and_pauses_fetching() {
    outage_then_recovery(Receiver::Syslog(Rsyslog::start(SyslogMode::Tcp))).await;
}

#[tokio::test]
async fn kafka_outage_loses_nothing_and_pauses_fetching() {
    let t = Tansu::start_with(TansuOptions {
        durable: true,
        ..TansuOptions::default()
    });
    outputs_support::kafka_create_topic(&t.address(), KAFKA_TOPIC, 1);
    outage_then_recovery(Receiver::Kafka(t)).await;
}

#[tokio::test]
async fn http_ndjson_outage_loses_nothing_and_pauses_fetching() {
    outage_then_recovery(Receiver::Http(HttpReceiver::start(), "ndjson")).await;
}

#[tokio::test]
async fn elasticsearch_outage_loses_nothing_and_pauses_fetching() {
    outage_then_recovery(Receiver::Http(HttpReceiver::start(), "elasticsearch")).await;
}

#[tokio::test]
async fn splunk_hec_outage_loses_nothing_and_pauses_fetching() {
    outage_then_recovery(Receiver::Http(HttpReceiver::start(), "splunk_hec")).await;
}

/// The value of one unlabelled counter in an OpenMetrics text.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Pull mode with the output down: once the queue reaches `queue_high_water`, listing waits (the
/// content stays at Microsoft) instead of growing the queue; when the output is back the queue
/// drains, listing resumes and everything arrives.
#[tokio::test]
async fn pull_listing_waits_while_the_queue_is_above_its_high_water() {
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = support::write_certs(&emu, dir.path());
    let mut receiver = Receiver::Http(HttpReceiver::start(), "ndjson");
    receiver.stop();
    let yaml = format!(
        "client_id: {c}\ntenant_id: {TENANT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\nresource: {b}\n\
         content_type: {TYPE}\noutput: siem\nlast_value_storage: {d}/store\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
         pipeline:\n  workers: 1\n  queue_high_water: 3\noutputs:\n{out}",
        c = support::CLIENT,
        b = emu.base_url(),
        d = dir.path().display(),
        ca = ca.display(),
        out = receiver.output_yaml(),
    );
    let setup = support::custom_setup(dir.path(), &yaml, &dir.path().join("unused"));
    let collector = Collector::spawn(&setup);
    let count = |what: &str| collector.logs().matches(what).count();
    support::wait_for(WAIT, "the admin listener", || async {
        count("admin listener ready") > 0
    })
    .await;
    let metrics = admin_url(&collector.logs(), "/metrics");
    let deferred = || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        counter(&text, "o365_listings_deferred_total")
    };

    support::generate(&emu, TYPE, 4 * PER_BLOB, 4).await;
    support::wait_for(
        WAIT,
        "the first listing, then a round that waits",
        || async { count("listing found new content") >= 1 && count("listing waits") >= 1 },
    )
    .await;
    support::generate(&emu, TYPE, 4 * PER_BLOB, 4).await;
    let skipped = deferred().await;
    support::wait_for(WAIT, "a round after the second publication", || async {
        deferred().await > skipped
    })
    .await;
    assert_eq!(count("listing waits"), 1, "warned once, not every round");
    assert_eq!(
        count("listing found new content"),
        1,
        "listing went on above the high water mark:\n{}",
        collector.logs()
    );

    receiver.restart();
    let (ids, _) = published(&emu).await;
    assert_eq!(ids.len(), 8 * PER_BLOB as usize);
    support::wait_for(WAIT, "listing resumes", || async {
        count("listing resumes") >= 1
    })
    .await;
    support::wait_for(WAIT, "every record once the output is back", || async {
        let have: std::collections::HashSet<String> = receiver.ids().into_iter().collect();
        ids.iter().all(|id| have.contains(id))
    })
    .await;
}
