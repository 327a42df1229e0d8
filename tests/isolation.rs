//! Tenants are isolated from each other's backlog, and a listing that Microsoft's retention cut
//! short is never silent. The real binary in pull mode against the emulator:
//! - tenant A's output (NDJSON over HTTP) is down and A's queue holds 3 × `queue_high_water`
//!   blobs: A's listing waits, while tenant B's new content and B's sign-ins are listed and
//!   delivered within two pull intervals; once A's output is back, every A record arrives;
//! - a cursor older than the 7 days Microsoft keeps yields a `gap` in `/status`, a log line and
//!   `o365_listing_gaps_total`, and listing goes on from the oldest time Microsoft keeps.

mod outputs_support;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use chrono::{TimeDelta, Utc};
use o365_collector::store::{EmbeddedStore, Store};
use o365_emulator::graph::GraphGenerate;
use o365_emulator::{GenerateRequest, TenantSpec};
use outputs_support::http::HttpReceiver;
use support::*;

const OTHER: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const TYPE: &str = "Audit.General";
const HIGH_WATER: u64 = 4;
const INTERVAL: Duration = Duration::from_secs(3);

async fn status(c: &Collector) -> serde_json::Value {
    wait_for(Duration::from_secs(30), "the admin listener", || {
        let up = c.logs().contains("admin listener ready");
        async move { up }
    })
    .await;
    reqwest::get(admin_url(&c.logs(), "/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metrics(c: &Collector) -> String {
    reqwest::get(admin_url(&c.logs(), "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn tenant_status<'a>(status: &'a serde_json::Value, tenant: &str) -> &'a serde_json::Value {
    status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["tenant_id"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(tenant)
        })
        .unwrap_or_else(|| panic!("no status for {tenant}: {status}"))
}

/// Every record id (`o365.audit.Id`, or the Graph record's key) in the file output, with counts.
fn file_ids(path: &std::path::Path) -> HashMap<String, u32> {
    output_ids(path)
}

/// The ids the emulator published for `tenant` (activity API).
async fn published_for(emu: &o365_emulator::Emulator, tenant: &str) -> Vec<String> {
    emu.published(tenant).await.record_ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_dead_output_holds_only_its_own_listing() {
    let emu = emulator(|cfg| {
        cfg.tenants
            .push(TenantSpec::with_secret(OTHER, CLIENT, SECRET))
    })
    .await;
    // A's output is down from the start.
    let mut down = HttpReceiver::start();
    down.stop();
    let blobs_a = 3 * HIGH_WATER;
    emu.generate(GenerateRequest {
        tenant_id: TENANT.into(),
        content_type: TYPE.into(),
        records: (blobs_a * 10) as usize,
        blobs: blobs_a as usize,
        created: None,
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), emu.ca_pem()).unwrap();
    let base = emu.base_url();
    let yaml = format!(
        "client_id: {CLIENT}\nclient_secret: {SECRET}\nresource: {base}\nauthority: {base}\n\
         content_type: {TYPE}\nlast_value_storage: {d}/store\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {d}/ca.pem\n\
         pull:\n  interval: {interval}s\npipeline:\n  queue_high_water: {HIGH_WATER}\n\
         outputs:\n  down:\n    type: http\n    format: ndjson\n    url: '{url}'\n    timeout: 2s\n\
         \x20 file:\n    type: file\n    path: {d}/events.ndjson\n\
         tenants:\n  - tenant_id: {TENANT}\n    output: down\n\
         \x20 - tenant_id: {OTHER}\n    output: file\n    graph_feeds: sign_ins\n    graph_backfill: 1h\n",
        interval = INTERVAL.as_secs(),
        url = down.url(""),
        d = d.display(),
    );
    let setup = custom_setup(d, &yaml, &d.join("events.ndjson"));
    let c = Collector::spawn(&setup);

    // A's first round stored all its blobs; its output refuses them, so its next round waits.
    wait_for(
        Duration::from_secs(60),
        "A's listing held back by its own backlog",
        || async { tenant_status(&status(&c).await, TENANT)["listing_deferred"] == true },
    )
    .await;
    let st = status(&c).await;
    assert_eq!(
        st["queue"]["pending"].as_u64().unwrap() + st["queue"]["leased"].as_u64().unwrap(),
        blobs_a,
        "{st}"
    );
    assert_eq!(tenant_status(&st, OTHER)["listing_deferred"], false, "{st}");

    // B's new content and sign-ins arrive although the queue is far above the high water mark.
    let published_at = Instant::now();
    let b_ids = emu
        .generate(GenerateRequest {
            tenant_id: OTHER.into(),
            content_type: TYPE.into(),
            records: 50,
            blobs: 5,
            created: None,
        })
        .await
        .unwrap();
    assert_eq!(b_ids.len(), 5, "blob ids");
    let sign_ins = emu
        .graph_generate(GraphGenerate {
            tenant_id: OTHER.into(),
            feed: "sign_ins".into(),
            records: 20,
            from: None,
            to: None,
            recipients: None,
        })
        .await
        .unwrap();
    let want_b = published_for(&emu, OTHER).await;
    assert_eq!(want_b.len(), 50);
    let sign_in_keys: Vec<String> = sign_ins
        .iter()
        .map(|id| {
            o365_collector::demo::graph_key(
                OTHER,
                o365_collector::graph::GraphFeed::SignIns.content_type(),
                id,
            )
        })
        .collect();
    // Two pull intervals, plus the time to fetch and write (generous: a noisy 2-core machine).
    wait_for(
        2 * INTERVAL + Duration::from_secs(20),
        "B's records and sign-ins delivered while A's output is down",
        || {
            let out = file_ids(&setup.events);
            let done = want_b
                .iter()
                .chain(&sign_in_keys)
                .all(|k| out.contains_key(k));
            async move { done }
        },
    )
    .await;
    println!("B delivered {:?} after publishing", published_at.elapsed());
    let out = file_ids(&setup.events);
    assert_exactly_once(
        &want_b
            .iter()
            .chain(&sign_in_keys)
            .cloned()
            .collect::<Vec<_>>(),
        &out,
    );
    let st = status(&c).await;
    assert_eq!(tenant_status(&st, TENANT)["listing_deferred"], true, "{st}");
    assert!(down.record_ids().is_empty());

    // A's output comes back: every A record arrives, and A's listing resumes.
    down.restart();
    let want_a = published_for(&emu, TENANT).await;
    assert_eq!(want_a.len() as u64, blobs_a * 10);
    wait_for(
        Duration::from_secs(120),
        "A's records delivered after recovery",
        || {
            let got = down.record_ids();
            let done = want_a.iter().all(|id| got.contains(id));
            async move { done }
        },
    )
    .await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for id in down.record_ids() {
        *counts.entry(id).or_default() += 1;
    }
    assert_exactly_once(&want_a, &counts);
    wait_for(Duration::from_secs(60), "A's listing resumed", || async {
        tenant_status(&status(&c).await, TENANT)["listing_deferred"] == false
    })
    .await;
    assert!(
        c.logs().contains("tenant's queue at its high water mark"),
        "the hold is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_microsoft_keeps_is_a_reported_gap() {
    let emu = emulator(|_| {}).await;
    // One blob 6 days old (still kept) and one new: both must arrive.
    let now = emu.now();
    for created in [now - TimeDelta::days(6), now - TimeDelta::minutes(5)] {
        emu.generate(GenerateRequest {
            tenant_id: TENANT.into(),
            content_type: TYPE.into(),
            records: 10,
            blobs: 1,
            created: Some(created),
        })
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The collector was stopped 9 days ago (its activity cursor is that old), and its sign-ins
    // cursor is 40 days old (Graph keeps sign-ins 30).
    let stopped = SystemTime::now() - Duration::from_secs(9 * 86400);
    let sign_ins_cursor = SystemTime::now() - Duration::from_secs(40 * 86400);
    {
        let store = EmbeddedStore::open(&d.join("store")).unwrap();
        store.advance_cursor(TENANT, TYPE, stopped).await.unwrap();
        store
            .advance_cursor(TENANT, "Graph.SignIns", sign_ins_cursor)
            .await
            .unwrap();
    }
    std::fs::write(d.join("ca.pem"), emu.ca_pem()).unwrap();
    let base = emu.base_url();
    let yaml = format!(
        "tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret: {SECRET}\nresource: {base}\n\
         authority: {base}\ncontent_type: {TYPE}\noutput: file\nlast_value_storage: {d}/store\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {d}/ca.pem\n\
         graph_feeds: sign_ins\n\
         outputs:\n  file:\n    type: file\n    path: {d}/events.ndjson\n\
         store:\n  completeness_retention: 45d\n",
        d = d.display(),
    );
    let setup = custom_setup(d, &yaml, &d.join("events.ndjson"));
    let c = Collector::spawn(&setup);
    let want = published_for(&emu, TENANT).await;
    assert_eq!(want.len(), 20);
    wait_for(
        Duration::from_secs(60),
        "every kept record delivered",
        || {
            let out = file_ids(&setup.events);
            let done = want.iter().all(|k| out.contains_key(k));
            async move { done }
        },
    )
    .await;
    assert_exactly_once(&want, &file_ids(&setup.events));

    wait_for(
        Duration::from_secs(60),
        "the sign-ins feed read",
        || async {
            tenant_status(&status(&c).await, TENANT)["gaps"]
                .as_array()
                .is_some_and(|g| g.len() == 2)
        },
    )
    .await;
    let st = status(&c).await;
    let gaps = tenant_status(&st, TENANT)["gaps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(gaps.len(), 2, "{st}");
    let gap = gaps
        .iter()
        .find(|g| g["source"] == TYPE)
        .expect("the activity gap");
    let from: chrono::DateTime<Utc> = gap["from"].as_str().unwrap().parse().unwrap();
    let to: chrono::DateTime<Utc> = gap["to"].as_str().unwrap().parse().unwrap();
    let cursor = chrono::DateTime::<Utc>::from(stopped);
    assert!((from - cursor).num_seconds().abs() <= 1, "{gap}");
    // Listing resumed at the oldest time Microsoft keeps: 7 days back (minus our margin).
    let kept_from = Utc::now() - TimeDelta::days(7);
    assert!((to - kept_from).num_minutes().abs() <= 10, "{gap}");
    assert!(gap["reason"].as_str().unwrap().contains("7 days"), "{gap}");

    // Sign-ins: from the cursor to 30 days back.
    let graph = gaps
        .iter()
        .find(|g| g["source"] == "Graph.SignIns")
        .expect("the sign-ins gap");
    let from: chrono::DateTime<Utc> = graph["from"].as_str().unwrap().parse().unwrap();
    let to: chrono::DateTime<Utc> = graph["to"].as_str().unwrap().parse().unwrap();
    assert!(
        (from - chrono::DateTime::<Utc>::from(sign_ins_cursor))
            .num_seconds()
            .abs()
            <= 1
    );
    assert!(
        (to - (Utc::now() - TimeDelta::days(30)))
            .num_minutes()
            .abs()
            <= 10,
        "{graph}"
    );
    assert!(
        graph["reason"].as_str().unwrap().contains("30 days"),
        "{graph}"
    );
    // Both gaps' hours are incomplete in the ledger (kept 45 days here: the sign-ins gap lies
    // beyond the default 30).
    for (ct, lost_at) in [
        (
            TYPE,
            chrono::DateTime::<Utc>::from(stopped) + TimeDelta::days(1),
        ),
        (
            "Graph.SignIns",
            chrono::DateTime::<Utc>::from(sign_ins_cursor) + TimeDelta::days(5),
        ),
    ] {
        let at = lost_at.format("%Y-%m-%dT%H:00:00Z");
        let answer: serde_json::Value = reqwest::get(admin_url(
            &c.logs(),
            &format!("/completeness?tenant={TENANT}&from={at}&to={at}"),
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let hour = answer["content_types"]
            .as_array()
            .and_then(|types| types.iter().find(|t| t["content_type"] == ct))
            .map(|t| t["hours"][0].clone())
            .unwrap_or_else(|| panic!("{ct}: {answer}"));
        assert_eq!(hour["state"], "incomplete", "{ct}: {hour}");
        assert!(hour["counts"]["gaps"].as_u64() >= Some(1), "{ct}: {hour}");
        assert!(
            hour["reason"].as_str().unwrap().contains("clamped"),
            "{ct}: {hour}"
        );
    }

    let m = metrics(&c).await;
    let line = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(line("o365_listing_gaps_total"), Some(2.0), "{m}");
    // A recent loss is the tenant's state; collection goes on, so the tenant counts as up.
    let t = tenant_status(&st, TENANT);
    assert_eq!(t["state"], "gap", "{t}");
    assert_eq!(t["last_error"]["reason"], "content_lost", "{t}");
    assert_eq!(
        line(&format!(
            "o365_tenant_up{{tenant_id=\"{TENANT}\",tenant_name=\"\"}}"
        )),
        Some(1.0),
        "{m}"
    );
    let by_tenant = format!(
        "o365_listing_gaps_by_tenant_total{{tenant_id=\"{TENANT}\",content_type=\"{TYPE}\"}}"
    );
    assert_eq!(line(&by_tenant), Some(1.0), "{m}");
    let lost = line(&format!(
        "o365_listing_gap_seconds_total{{tenant_id=\"{TENANT}\",content_type=\"{TYPE}\"}}"
    ))
    .unwrap();
    assert!(
        (lost - 2.0 * 86400.0).abs() < 3600.0,
        "about 2 days lost: {lost}"
    );
    let logs = c.logs();
    assert_eq!(
        logs.matches("content lost: Microsoft no longer keeps this window")
            .count(),
        2,
        "once per gap\n{logs}"
    );
}
