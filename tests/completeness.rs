//! The completeness ledger end to end: the real binary in push mode against the emulator. Three
//! hours of content are delivered and sealed; a blob that always fails (served broken) leaves its
//! hour incomplete, named by its contentId; a blob published hours late opens its hour again
//! until it is delivered, then the hour is sealed. `GET /completeness` and `o365-collector
//! completeness` say exactly that.

mod support;

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use o365_emulator::{ContentType, Emulator};
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(90);
const ADMIN_TOKEN: &str = "completeness-admin-token-0123456789";

/// `n` records of the test tenant created at `at` + i seconds.
fn records(n: usize, at: DateTime<Utc>) -> Vec<Value> {
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

async fn completeness(c: &Collector) -> Value {
    let resp = reqwest::Client::new()
        .get(admin_url(&c.logs(), "/completeness"))
        .query(&[("from", "2000-01-01T00:00:00Z")])
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    // `from` far back is refused: the range is bounded.
    assert_eq!(resp.status(), 400, "a range over 31 days is refused");
    let resp = reqwest::Client::new()
        .get(admin_url(&c.logs(), "/completeness"))
        .query(&[("tenant", TENANT)])
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

/// The verdict of the hour starting at `hour` of Audit.General.
/// `o365_completeness_incomplete_hours` of the test tenant's Audit.General, as `/metrics` shows it.
async fn incomplete_hours_metric(c: &Collector) -> String {
    let metrics = reqwest::Client::new()
        .get(admin_url(&c.logs(), "/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find(|l| {
            l.starts_with("o365_completeness_incomplete_hours{") && l.contains("Audit.General")
        })
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("{metrics}"))
}

fn hour_of(answer: &Value, hour: DateTime<Utc>) -> Value {
    let key = hour.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    answer["content_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["content_type"] == "Audit.General")
        .expect("Audit.General judged")["hours"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hour"] == key.as_str())
        .unwrap_or_else(|| panic!("hour {key} in {answer}"))
        .clone()
}

async fn publish(emu: &Emulator, n: usize, at: DateTime<Utc>, broken: bool) -> String {
    let created = Some(at + TimeDelta::minutes(20));
    let r = records(n, at);
    if broken {
        emu.publish_broken(TENANT, ContentType::General, r, created)
            .await
    } else {
        emu.publish(TENANT, ContentType::General, r, created).await
    }
    .unwrap()
}

/// `o365-collector completeness` against the running collector's admin API.
fn cli_table(c: &Collector) -> (String, i32) {
    let admin = admin_url(&c.logs(), "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(["completeness", "--admin", &admin, "--tenant-id", TENANT])
        .env("O365_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_failing_blobs_show_in_the_ledger() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &format!(
            "admin:\n  token: {ADMIN_TOKEN}\npipeline:\n  max_attempts: 2\ncompleteness:\n  horizon: 1h\n  metrics_refresh: 1s\n"
        ),
    );
    let c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;
    // Listing reached now (the start-up listing moved the cursor): hours ending an hour
    // (the horizon) before it can be sealed.
    wait_for(WAIT, "the first listing", || async {
        c.logs().contains("admin listener ready")
            && completeness(&c).await["content_types"][0]["listed_until"].is_string()
    })
    .await;
    // The metrics show the content type before anything is wrong (judged, then kept for a
    // second between scrapes).
    assert_eq!(incomplete_hours_metric(&c).await, "0");

    // Three hours of content, 4 to 6 hours ago; a blob of the middle hour always fails.
    let h0 = emu.now().duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::hours(6);
    let (h1, h2) = (h0 + TimeDelta::hours(1), h0 + TimeDelta::hours(2));
    publish(&emu, 5, h0, false).await;
    publish(&emu, 5, h1, false).await;
    let broken = publish(&emu, 6, h1, true).await;
    publish(&emu, 5, h2, false).await;
    wait_for(
        WAIT,
        "the broken blob dead-lettered, the others delivered",
        || async {
            let a = completeness(&c).await;
            hour_of(&a, h1)["state"] == "incomplete"
                && hour_of(&a, h0)["state"] == "sealed"
                && hour_of(&a, h2)["state"] == "sealed"
        },
    )
    .await;
    let a = completeness(&c).await;
    let bad = hour_of(&a, h1);
    assert!(
        bad["reason"].as_str().unwrap().contains(&broken),
        "the incomplete hour names the blob: {bad}"
    );
    assert_eq!(bad["counts"]["queued"], 2, "{bad}");
    assert_eq!(bad["counts"]["done"], 1, "{bad}");
    assert_eq!(bad["counts"]["dead"], 1, "{bad}");
    let good = hour_of(&a, h0);
    assert_eq!(good["counts"]["accepted"]["file"], 5, "{good}");
    assert_eq!(good["counts"]["parsed"], 5, "{good}");
    assert!(good["counts"]["announced"].as_u64().unwrap() >= 1, "{good}");
    assert_eq!(a["incomplete"], 1, "only the broken blob's hour: {a}");
    let (table, code) = cli_table(&c);
    assert_eq!(code, 1, "an incomplete hour fails the command: {table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("incomplete") && l.contains(&broken)),
        "{table}"
    );

    // A blob of the first hour published late (over 5 hours after its records): its hour is
    // open while it waits in the queue (its fetches fail for a while), sealed once delivered.
    faults(
        &emu,
        json!({"content_fail_next": 3, "content_error_status": 503}),
    )
    .await;
    let late = publish(&emu, 4, h0 + TimeDelta::minutes(30), false).await;
    wait_for(WAIT, "the late blob's hour open", || async {
        hour_of(&completeness(&c).await, h0)["state"] == "open"
    })
    .await;
    let open = hour_of(&completeness(&c).await, h0);
    assert_eq!(
        open["reason"], "1 of 2 blob(s) not delivered yet",
        "{open} ({late})"
    );
    let (table, _) = cli_table(&c);
    let day = h0.format("%Y-%m-%d").to_string();
    assert!(
        table.lines().any(|l| l.contains("open")
            && l.contains(&h0.format("%Y-%m-%dT%H:00:00Z").to_string())
            && l.contains("not delivered yet")),
        "{table}"
    );
    assert!(table.contains(&day), "{table}");
    wait_for(
        WAIT,
        "the late blob delivered and its hour sealed",
        || async { hour_of(&completeness(&c).await, h0)["state"] == "sealed" },
    )
    .await;
    let sealed = hour_of(&completeness(&c).await, h0);
    assert_eq!(sealed["counts"]["queued"], 2, "{sealed}");
    assert_eq!(sealed["counts"]["done"], 2, "{sealed}");
    assert_eq!(sealed["counts"]["accepted"]["file"], 9, "{sealed}");
    let (table, code) = cli_table(&c);
    assert_eq!(code, 1, "{table}");
    let day = h1.format("%Y-%m-%d").to_string();
    let row = table
        .lines()
        .find(|l| l.starts_with(&day) && l.contains("Audit.General"))
        .unwrap_or_else(|| panic!("a row for {day}: {table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[4], "1", "one incomplete hour that day: {table}");

    // The metrics count the incomplete hour once the tenant is judged again.
    wait_for(WAIT, "the incomplete hour in the metrics", || async {
        incomplete_hours_metric(&c).await == "1"
    })
    .await;
}
