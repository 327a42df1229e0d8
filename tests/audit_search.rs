//! `backfill --source audit-search` end to end: the real binary and its CLI against the
//! emulator's Audit Log Query API, whose records are the blobs it publishes as Management API
//! content.

mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use o365_emulator::GenerateRequest;
use o365_emulator::audit_query::{AUDIT_RECORD_LIMIT, AuditSearch};
use o365_emulator::graph::{GraphFaults, GraphThrottle};
use support::*;

const ADMIN_TOKEN: &str = "audit-search-test-admin-token";
const TYPES: [&str; 2] = ["Audit.Exchange", "Audit.SharePoint"];

/// Runs the real binary's `backfill` against the collector's admin API; returns (code, stdout,
/// stderr).
async fn backfill_cli(admin: &str, start: &str, end: Option<&str>) -> (i32, String, String) {
    let mut args = vec![
        "backfill",
        "--source",
        "audit-search",
        "--start",
        start,
        "--json",
    ];
    if let Some(end) = end {
        args.extend(["--end", end]);
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(args)
        .env("O365_ADMIN_URL", admin)
        .env("O365_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn publish(emu: &o365_emulator::Emulator, ct: &str, records: usize, ago: TimeDelta) {
    emu.generate(GenerateRequest {
        tenant_id: TENANT.into(),
        content_type: ct.into(),
        records,
        blobs: 1,
        created: Some(emu.now() - ago),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_day_backfill_delivers_every_record_once_splitting_and_waiting_for_queries() {
    let emu = emulator(|_| {}).await;
    // A small record limit (Microsoft's is 50,000), so one dense day must be split; queries that
    // are not done before the clock moves an hour.
    const { assert!(AUDIT_RECORD_LIMIT > 40) };
    emu.audit_search(AuditSearch {
        record_limit: 40,
        ready_after_secs: 3600,
    })
    .await;
    // Days 8 to 29 back: beyond the Management API's reach, only the audit search has them. Day
    // 20 holds 70 records, more than one query returns.
    for day in 8..30 {
        let ct = TYPES[day % 2];
        let n = if day == 20 { 70 } else { 3 };
        publish(
            &emu,
            ct,
            n,
            TimeDelta::days(day as i64) + TimeDelta::hours(2),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(
        &emu,
        dir.path(),
        &TYPES,
        &format!("admin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let c = Collector::spawn(&setup);
    let admin = wait_admin(&c).await;
    wait_webhooks_enabled(&emu, &TYPES).await;
    // Within the last 7 days: delivered through the Management API (announced to the webhook).
    for (ago, ct) in [
        (TimeDelta::days(3), "Audit.Exchange"),
        (TimeDelta::days(1), "Audit.SharePoint"),
        (TimeDelta::hours(1), "Audit.Exchange"),
    ] {
        publish(&emu, ct, 5, ago).await;
    }
    let recent: usize = 15;
    wait_for(
        Duration::from_secs(60),
        "the last 7 days delivered through the Management API",
        || {
            let n = output_ids(&setup.events).len();
            async move { n == recent }
        },
    )
    .await;

    // Graph throttles the first two calls: the collector waits for their Retry-After.
    emu.graph_faults(GraphFaults {
        throttle: vec![GraphThrottle {
            tenant_id: TENANT.into(),
            feed: "audit_search".into(),
            next: 2,
            retry_after_secs: 1,
        }],
        ..GraphFaults::default()
    })
    .await;
    let start = (Utc::now() - TimeDelta::days(30)).to_rfc3339();
    let run = tokio::spawn({
        let admin = admin.clone();
        async move { backfill_cli(&admin, &start, None).await }
    });
    // The first query is not done: the collector polls it until it is.
    wait_for(
        Duration::from_secs(60),
        "a query polled while not done",
        || async {
            emu.audit_queries()
                .await
                .iter()
                .any(|q| q.polls >= 2 && q.status != "succeeded")
        },
    )
    .await;
    let first = emu.audit_queries().await;
    assert_eq!(first.len(), 1, "one query at a time: {first:?}");
    emu.audit_search(AuditSearch {
        record_limit: 40,
        ready_after_secs: 0,
    })
    .await;
    emu.advance_clock(Duration::from_secs(3600)).await;

    let (code, out, err) = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the backfill ends")
        .unwrap();
    assert_eq!(code, 0, "{out}{err}\n{}", c.logs());
    assert!(
        c.logs().contains("audit search throttled"),
        "the 429s were waited out"
    );
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let report = &answer["audit_search"];
    assert!(
        report["splits"].as_u64().unwrap() >= 1,
        "the dense day was split: {answer}"
    );
    let published = published_ids(&emu).await;
    assert_eq!(
        report["records"].as_u64().unwrap() as usize,
        published.len(),
        "the audit search found every published record: {answer}"
    );
    assert!(
        emu.audit_queries()
            .await
            .iter()
            .all(|q| q.status == "succeeded"),
        "every query was waited out"
    );
    wait_for(Duration::from_secs(120), "every record delivered", || {
        let n = output_ids(&setup.events).len();
        let want = published.len();
        async move { n >= want }
    })
    .await;
    // Delivered once, the 15 of the last 7 days included; then nothing more comes.
    let metrics_url = format!("{admin}/metrics");
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(60), "the queue drained", || async {
        let text = http
            .get(&metrics_url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .any(|l| l.starts_with("o365_queue_pending ") && l.ends_with(" 0"))
            && text
                .lines()
                .any(|l| l.starts_with("o365_queue_leased ") && l.ends_with(" 0"))
    })
    .await;
    assert_exactly_once(&published, &output_ids(&setup.events));

    // The dense, split day's range again adds nothing. (Not the whole 30 days again: its
    // queries would wait two minutes for the audit search's request budget, proving nothing new.)
    let (code, out, err) = backfill_cli(
        &admin,
        &(Utc::now() - TimeDelta::days(21)).to_rfc3339(),
        Some(&(Utc::now() - TimeDelta::days(19)).to_rfc3339()),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        again["audit_search"]["records"].as_u64().unwrap() >= 70,
        "the dense day was read again: {again}"
    );
    assert_eq!(again["added"], 0, "{again}");
    assert_exactly_once(&published, &output_ids(&setup.events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_a_403_in_status_and_another_cloud_named() {
    let emu = emulator(|c| {
        // The app has the Management API roles but not AuditLogsQuery.Read.All.
        c.app_roles.insert(
            CLIENT.into(),
            vec!["ActivityFeed.Read".into(), "ActivityFeed.ReadDlp".into()],
        );
    })
    .await;
    emu.audit_search(AuditSearch {
        record_limit: 1000,
        ready_after_secs: 0,
    })
    .await;
    publish(&emu, "Audit.Exchange", 4, TimeDelta::days(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(
        &emu,
        dir.path(),
        &["Audit.Exchange"],
        &format!("admin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let c = Collector::spawn(&setup);
    let admin = wait_admin(&c).await;
    let start = (Utc::now() - TimeDelta::days(12)).to_rfc3339();
    let (code, out, err) = backfill_cli(&admin, &start, None).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("403") && err.contains("AuditLogsQuery.Read.All"),
        "{err}"
    );
    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("{admin}/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = status.to_string();
    assert!(
        text.contains("AuditSearch") && text.contains("forbidden"),
        "the refusal is in /status: {status}"
    );
    // A one-off backfill refused is no outage: the tenant's collection, and its state, go on.
    assert!(
        !text.contains("\"state\":\"denied\""),
        "a refused backfill marks no tenant down: {status}"
    );

    drop(c);

    // A tenant in a national cloud: Microsoft offers the API in the global cloud only.
    let dir = tempfile::tempdir().unwrap();
    let national = support::setup(
        &emu,
        dir.path(),
        &["Audit.Exchange"],
        &format!("graph_host: https://graph.microsoft.us\nadmin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let c = Collector::spawn(&national);
    let admin = wait_admin(&c).await;
    let (code, out, err) = backfill_cli(&admin, &start, None).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("global cloud only") && err.contains("graph_host https://graph.microsoft.us"),
        "{err}"
    );
}
