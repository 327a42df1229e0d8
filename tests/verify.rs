//! `verify` and `verify --repair` end to end: the real binary and its CLI against the emulator.
//! Three blobs are published unlisted (fault `unlist_next`: never listed nor announced, found by
//! the Audit Log Query API); the collector delivers the others; `verify` names exactly the hours
//! and record types they leave short with the right counts, marks those hours incomplete in the
//! ledger, `--repair` delivers the missing records exactly once and a second `verify` finds no
//! difference.

mod support;

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use o365_emulator::audit_query::AuditSearch;
use o365_emulator::{ContentType, FaultsPatch};
use serde_json::{Value, json};
use support::*;

const ADMIN_TOKEN: &str = "verify-test-admin-token-0123456789";
const TYPES: [&str; 2] = ["Audit.Exchange", "Audit.SharePoint"];
const WAIT: Duration = Duration::from_secs(90);

/// Records of the given RecordTypes, created at `at` + i seconds.
fn records(types: &[i64], at: DateTime<Utc>) -> Vec<Value> {
    types
        .iter()
        .enumerate()
        .map(|(i, rt)| {
            json!({
                "CreationTime": (at + TimeDelta::seconds(i as i64)).format("%Y-%m-%dT%H:%M:%S").to_string(),
                "Id": uuid::Uuid::new_v4().to_string(),
                "Operation": if *rt == 2 { "MailItemsAccessed" } else { "FileAccessed" },
                "OrganizationId": TENANT,
                "RecordType": rt,
                "UserType": 0,
                "Version": 1,
                "Workload": if *rt == 2 { "Exchange" } else { "SharePoint" },
                "UserId": "megan.bowen@contoso.onmicrosoft.com"
            })
        })
        .collect()
}

/// The real binary's `verify`; returns (code, stdout, stderr).
async fn verify_cli(admin: &str, start: &str, extra: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(["verify", "--start", start])
        .args(extra)
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

async fn get(admin: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{admin}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until no blob is queued or leased (the workers' ledger counts are added before a blob
/// completes, so they are all in).
async fn wait_drained(admin: &str) {
    let http = reqwest::Client::new();
    let url = format!("{admin}/metrics");
    wait_for(WAIT, "the queue drained", || async {
        let text = http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        ["o365_queue_pending ", "o365_queue_leased "]
            .iter()
            .all(|m| text.lines().any(|l| l.starts_with(m) && l.ends_with(" 0")))
    })
    .await;
}

/// (content type, hour) of every incomplete hour in `/completeness`, with its reason.
async fn incomplete(admin: &str) -> Vec<(String, String, String)> {
    let c = get(admin, &format!("/completeness?tenant={TENANT}")).await;
    let mut out = Vec::new();
    for ct in c["content_types"].as_array().unwrap() {
        for h in ct["hours"].as_array().unwrap() {
            if h["state"] == "incomplete" {
                out.push((
                    ct["content_type"].as_str().unwrap().to_owned(),
                    h["hour"].as_str().unwrap().to_owned(),
                    h["reason"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_the_unlisted_blobs_hours_and_repair_delivers_them_once() {
    let emu = emulator(|_| {}).await;
    emu.audit_search(AuditSearch {
        record_limit: 1000,
        ready_after_secs: 0,
    })
    .await;
    let now = emu.now();
    let h3 = now.duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::hours(1);
    let (h2, h1) = (h3 - TimeDelta::hours(1), h3 - TimeDelta::hours(2));
    let at = |h: DateTime<Utc>, min: i64| h + TimeDelta::minutes(min);
    let exchange = ContentType::parse("Audit.Exchange").unwrap();
    let sharepoint = ContentType::parse("Audit.SharePoint").unwrap();
    // Listed: collected by the collector's start-up listing.
    for (ct, types, created) in [
        (exchange, vec![2, 2, 2, 2], at(h1, 5)),
        (sharepoint, vec![6, 6, 6], at(h1, 6)),
        (sharepoint, vec![6, 6, 6, 36, 36], at(h2, 5)),
        (exchange, vec![2, 2], at(h3, 5)),
    ] {
        emu.publish(TENANT, ct, records(&types, created), Some(created))
            .await
            .unwrap();
    }
    // Three blobs the Management API never lists nor announces; Audit Search has them.
    emu.set_faults(FaultsPatch {
        unlist_next: Some(3),
        ..FaultsPatch::default()
    })
    .await;
    for (ct, types, created) in [
        (exchange, vec![2, 2], at(h1, 30)),
        (sharepoint, vec![36, 6, 6], at(h2, 30)),
        (sharepoint, vec![6, 6], at(h3, 30)),
    ] {
        emu.publish(TENANT, ct, records(&types, created), Some(created))
            .await
            .unwrap();
    }
    let faults = emu.set_faults(FaultsPatch::default()).await;
    assert_eq!(faults.unlist_next, 0, "the fault hid exactly three blobs");
    let published = published_ids(&emu).await;
    assert_eq!(published.len(), 21);

    let dir = tempfile::tempdir().unwrap();
    let setup = setup(
        &emu,
        dir.path(),
        &TYPES,
        &format!("admin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let c = Collector::spawn(&setup);
    let admin = wait_admin(&c).await;
    wait_for(WAIT, "the 14 listed records delivered", || {
        let n = output_ids(&setup.events).len();
        async move { n == 14 }
    })
    .await;
    wait_drained(&admin).await;
    let start = (h1 - TimeDelta::hours(1)).to_rfc3339();

    // verify: exactly the hours and record types the three blobs left short.
    let (code, out, err) = verify_cli(&admin, &start, &["--json"]).await;
    assert_eq!(code, 1, "records are missing: {out}{err}\n{}", c.logs());
    let v: Value = serde_json::from_str(&out).unwrap();
    let hour = |h: DateTime<Utc>| h.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let found: Vec<(String, &str, i64, u64, u64, u64)> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["hour"].as_str().unwrap().to_owned(),
                d["content_type"].as_str().unwrap(),
                d["record_type"].as_i64().unwrap(),
                d["delivered"].as_u64().unwrap(),
                d["audit_search"].as_u64().unwrap(),
                d["missing"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (hour(h1), "Audit.Exchange", 2, 4, 6, 2),
            (hour(h2), "Audit.SharePoint", 6, 3, 5, 2),
            (hour(h2), "Audit.SharePoint", 36, 2, 3, 1),
            (hour(h3), "Audit.SharePoint", 6, 0, 2, 2),
        ],
        "{v}"
    );
    assert_eq!(
        (&v["records"], &v["delivered"], &v["missing"]),
        (&json!(21), &json!(14), &json!(7)),
        "{v}"
    );
    // The verdict is in the ledger: those hours are incomplete, the others are not.
    let bad = incomplete(&admin).await;
    let keys: Vec<(&str, String)> = bad.iter().map(|b| (b.0.as_str(), b.1.clone())).collect();
    assert_eq!(
        keys,
        vec![
            ("Audit.Exchange", hour(h1)),
            ("Audit.SharePoint", hour(h2)),
            ("Audit.SharePoint", hour(h3)),
        ],
        "{bad:?}"
    );
    assert!(bad[1].2.contains("3 record(s)"), "{bad:?}");

    // verify --repair: the table on stdout, the missing records queued and delivered once.
    let (code, out, err) = verify_cli(&admin, &start, &["--repair"]).await;
    assert_eq!(code, 1, "records were missing when compared: {out}{err}");
    println!("{out}");
    for (h, ct, rt, d, a, m) in &found {
        let want = [h.as_str(), ct, &rt.to_string()];
        let tail = [d.to_string(), a.to_string(), m.to_string()];
        assert!(
            out.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 6 && w[..3] == want && w[w.len() - 3..] == tail
            }),
            "a row {want:?} … {tail:?} in:\n{out}"
        );
    }
    // Every record of the short hours and record types (16) is queued; the record dedup drops
    // the 9 delivered before, so 7 reach the output.
    assert!(out.contains("repair: 16 record(s)"), "{out}");
    wait_for(WAIT, "the 7 missing records delivered", || {
        let n = output_ids(&setup.events).len();
        async move { n == 21 }
    })
    .await;
    wait_drained(&admin).await;
    assert_exactly_once(&published, &output_ids(&setup.events));

    // A second verify finds no difference, and the hours are no longer incomplete.
    let (code, out, err) = verify_cli(&admin, &start, &[]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", c.logs());
    assert!(out.contains("no difference"), "{out}");
    assert!(out.contains("delivered 21, missing 0"), "{out}");
    assert_eq!(incomplete(&admin).await, Vec::new());
    assert_exactly_once(&published, &output_ids(&setup.events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_a_403_in_status_another_cloud_and_bad_input_change_nothing() {
    let emu = emulator(|c| {
        // The Management API roles, not AuditLogsQuery.Read.All.
        c.app_roles.insert(
            CLIENT.into(),
            vec!["ActivityFeed.Read".into(), "ActivityFeed.ReadDlp".into()],
        );
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(
        &emu,
        dir.path(),
        &TYPES,
        &format!("admin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let c = Collector::spawn(&setup);
    let admin = wait_admin(&c).await;
    let start = (Utc::now() - TimeDelta::hours(3)).to_rfc3339();
    let (code, out, err) = verify_cli(&admin, &start, &["--repair"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("403") && err.contains("AuditLogsQuery.Read.All"),
        "{err}"
    );
    let status = get(&admin, "/status").await.to_string();
    assert!(
        status.contains("AuditSearch") && status.contains("forbidden"),
        "the refusal is in /status: {status}"
    );
    // Bad input: a usage error from the CLI, a 400 from the API; no verdict written.
    let (code, _, err) = verify_cli(&admin, "yesterday", &[]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = verify_cli(&admin, &start, &["--end", "2000-01-01"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not before end"), "{err}");
    assert_eq!(incomplete(&admin).await, Vec::new());
    drop(c);

    // A tenant in a national cloud: Microsoft offers Audit Search in the global cloud only.
    let dir = tempfile::tempdir().unwrap();
    let national = support::setup(
        &emu,
        dir.path(),
        &TYPES,
        &format!("graph_host: https://graph.microsoft.us\nadmin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let c = Collector::spawn(&national);
    wait_for(WAIT, "the admin listener", || {
        let up = c.logs().contains("admin listener ready");
        async move { up }
    })
    .await;
    let (code, out, err) = verify_cli(&admin_url(&c.logs(), ""), &start, &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("global cloud only") && err.contains("graph_host https://graph.microsoft.us"),
        "{err}"
    );
}
