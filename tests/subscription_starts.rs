//! Microsoft's 15-minute rule between subscription starts, with 3 replicas of the real binary on
//! the PostgreSQL store (a real server, tests/support/postgres.rs) against the emulator, whose
//! clock the control surface moves. The emulator's request log is the witness.

use std::time::Duration;

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use chrono::{DateTime, Utc};
use postgres::Postgres;
use support::{Collector, TENANT};

const TYPE: &str = "Audit.General";
/// Bounds a hang.
const WAIT: Duration = Duration::from_secs(120);
/// What is left of Microsoft's 15 minutes when the replicas come up.
const LEFT: i64 = 30;

/// A push-mode replica on the shared store. Every replica announces the same public webhook
/// address (`address`, the first replica's listener, as a load balancer in front of them would
/// be); each listens on its own port. Lists every second while a start waits, reconciles every
/// 4 s (so the keeper looks every 4 s).
fn replica(
    emu: &o365_emulator::Emulator,
    dir: &std::path::Path,
    url: &str,
    address: Option<&str>,
) -> support::Setup {
    let s = support::setup(
        emu,
        dir,
        &[TYPE],
        &format!(
            "pull:\n  interval: 1s\n  reconcile_every: 4s\n\
             store:\n  type: postgres\n  url: {url}\n  sslmode: disable\n  pool_size: 4\n  \
             allow_file_output: true\n  tenant_lease: 4s\n"
        ),
    );
    if let Some(a) = address {
        let yaml = std::fs::read_to_string(&s.config).unwrap();
        let yaml = yaml.replacen(
            &format!("address: {}", s.webhook_url()),
            &format!("address: {a}"),
            1,
        );
        std::fs::write(&s.config, yaml).unwrap();
    }
    s
}

/// `StartSubscription` calls for the test tenant: (arrival, user agent).
async fn starts(emu: &o365_emulator::Emulator) -> Vec<(DateTime<Utc>, String)> {
    let v: Vec<o365_emulator::ApiRequest> = support::control_get(emu, "requests", TENANT).await;
    v.into_iter()
        .filter(|r| r.operation == "StartSubscription")
        .map(|r| (r.at, r.user_agent.unwrap_or_default()))
        .collect()
}

/// Record ids across the replicas' file outputs, with their counts.
fn outputs(setups: &[support::Setup]) -> std::collections::HashMap<String, u32> {
    let mut all = std::collections::HashMap::new();
    for s in setups {
        for (id, n) in support::output_ids(&s.events) {
            *all.entry(id).or_insert(0) += n;
        }
    }
    all
}

async fn wait_delivered(emu: &o365_emulator::Emulator, setups: &[support::Setup], what: &str) {
    let published = support::published_ids(emu).await;
    support::wait_for(WAIT, what, || async {
        let out = outputs(setups);
        published.iter().all(|id| out.contains_key(id))
    })
    .await;
}

/// `records` in `blobs` blobs created now on the wall clock: Microsoft's clock was moved 14.5
/// minutes ahead (the rule is counted on it), content times stay on the collector's.
async fn generate(emu: &o365_emulator::Emulator, records: usize, blobs: usize) {
    emu.generate(o365_emulator::GenerateRequest {
        tenant_id: TENANT.into(),
        content_type: TYPE.into(),
        records,
        blobs,
        created: Some(Utc::now()),
    })
    .await
    .expect("generate");
}

async fn webhook_status(emu: &o365_emulator::Emulator) -> serde_json::Value {
    support::subscriptions(emu)
        .await
        .into_iter()
        .find(|s| s["contentType"] == TYPE)
        .map(|s| s["webhook"]["status"].clone())
        .unwrap_or_default()
}

/// The subscription was started (without a webhook: by another tool, or an earlier pull-mode
/// run) 14.5 minutes ago on Microsoft's clock. Three push-mode replicas come up: one start is
/// sent, refused (429 AF429, Retry-After), and the next is sent only once the 15 minutes are over;
/// meanwhile the content type is listed every second, so every record published during the wait
/// arrives without a webhook. Then Microsoft disables the webhook: no replica starts it again
/// within 15 minutes of that start (the store holds the time for all of them), and listing by
/// pull delivers everything published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_wait_fifteen_minutes_across_replicas_and_pull_carries_the_records() {
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let emu = support::emulator(|c| {
        c.webhook_max_failures = 3;
        c.webhook_retry_base = Duration::from_millis(20);
    })
    .await;

    // Someone else's start, accepted; then Microsoft's clock moves 14.5 minutes on.
    let resp = support::client(&emu)
        .post(format!(
            "{}/api/v1.0/{TENANT}/activity/feed/subscriptions/start?contentType={TYPE}",
            emu.base_url()
        ))
        .bearer_auth(support::token(&emu).await)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let first = starts(&emu).await;
    assert_eq!(first.len(), 1);
    emu.advance_clock(Duration::from_secs(15 * 60 - LEFT as u64))
        .await;
    // On the wall clock (the request log's), Microsoft allows the next start from here on.
    let allowed = first[0].0 + chrono::TimeDelta::seconds(15 * 60)
        - chrono::TimeDelta::seconds(15 * 60 - LEFT);

    let dir = tempfile::tempdir().unwrap();
    let a = replica(&emu, &dir.path().join("a"), &url, None);
    let address = a.webhook_url();
    let setups = [
        a,
        replica(&emu, &dir.path().join("b"), &url, Some(&address)),
        replica(&emu, &dir.path().join("c"), &url, Some(&address)),
    ];
    let mut replicas: Vec<Collector> = setups.iter().map(Collector::spawn).collect();

    // The refused start.
    support::wait_for(WAIT, "a start by a replica", || async {
        starts(&emu).await.len() >= 2
    })
    .await;
    let refused_at = starts(&emu).await[1].0;
    assert!(
        refused_at < allowed,
        "the first start came after the wait anyway"
    );
    // Records published during the wait arrive by pull (no webhook yet).
    generate(&emu, 120, 3).await;
    wait_delivered(
        &emu,
        &setups,
        "the records published during the wait, by pull",
    )
    .await;
    assert!(
        Utc::now() < allowed,
        "the records arrived only after the wait: not by the fallback listing"
    );
    assert_eq!(
        webhook_status(&emu).await,
        serde_json::Value::Null,
        "no webhook yet"
    );
    // The start at the allowed time; webhook on; push delivers.
    support::wait_webhooks_enabled(&emu, &[TYPE]).await;
    let log = starts(&emu).await;
    assert_eq!(log.len(), 3, "one refused start and one on time: {log:?}");
    assert!(
        log[2].0 >= allowed,
        "a second start before Microsoft's 15 minutes were over: {log:?}, allowed from {allowed}"
    );
    assert!(
        log[1..].iter().all(|(_, ua)| ua.contains("o365-collector")),
        "{log:?}"
    );
    let accepted_at = log[2].0;
    generate(&emu, 60, 2).await;
    wait_delivered(&emu, &setups, "records by push").await;

    // Microsoft disables the webhook.
    support::faults(&emu, serde_json::json!({"webhook_fail_status": 500})).await;
    generate(&emu, 90, 3).await;
    support::wait_for(WAIT, "the webhook disabled", || async {
        webhook_status(&emu).await == "disabled"
    })
    .await;
    support::faults(&emu, serde_json::json!({"reset": true})).await;
    let disabled_at = Utc::now();
    // Listing by pull carries what was published meanwhile, and what comes after.
    generate(&emu, 90, 3).await;
    wait_delivered(
        &emu,
        &setups,
        "the records while the webhook is disabled, by pull",
    )
    .await;
    // Three keeper rounds (each lists the subscriptions) went by: none sent a start early.
    support::wait_for(
        WAIT,
        "three keeper rounds after the webhook was disabled",
        || async {
            let v: Vec<o365_emulator::ApiRequest> =
                support::control_get(&emu, "requests", TENANT).await;
            v.iter()
                .filter(|r| r.operation == "ListSubscriptions" && r.at > disabled_at)
                .count()
                >= 3
        },
    )
    .await;
    let log = starts(&emu).await;
    assert_eq!(
        log.len(),
        3,
        "a start within 15 minutes of the last one ({accepted_at}): {log:?}"
    );
    // /status of every replica shows the wait and when it ends.
    for c in &replicas {
        let status: serde_json::Value = reqwest::get(support::admin_url(&c.logs(), "/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ct = &status["tenants"][0]["content_types"][0];
        let next: DateTime<Utc> = ct["next_allowed_start"]
            .as_str()
            .unwrap_or_else(|| panic!("no next_allowed_start: {status}"))
            .parse()
            .unwrap();
        let expect = accepted_at + chrono::TimeDelta::seconds(15 * 60);
        assert!(
            (next - expect).num_seconds().abs() <= 5,
            "next allowed start {next}, expected about {expect}"
        );
    }
    let out = outputs(&setups);
    support::assert_exactly_once(&support::published_ids(&emu).await, &out);
    for c in &mut replicas {
        c.terminate(Duration::from_secs(20));
    }
}
