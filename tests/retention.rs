//! The dedup set's retention runs by itself: ids older than `store.dedup_retention` are pruned,
//! counted and timed in `/metrics`, and `compact` gives the space back.

mod support;

use std::time::Duration;

use o365_collector::app::App;
use o365_collector::config::Config;
use o365_collector::store::{EmbeddedStore, Store};
use support::*;
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "retention-test-admin-token";

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dedup_set_is_pruned_after_its_retention() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &format!(
            "admin:\n  token: {ADMIN_TOKEN}\nstore:\n  dedup_retention: 4s\n  allow_short_retention: true\n  record_dedup_window: 2s\n"
        ),
    );
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    let cfg = Config::parse(&yaml, &|name| {
        (name == "TEST_CLIENT_SECRET").then(|| SECRET.to_string())
    })
    .expect("valid config");
    let shutdown = CancellationToken::new();
    let app = App::start(cfg, shutdown.clone()).await.unwrap();
    let url = format!("http://{}/metrics", app.admin_addr);
    let http = reqwest::Client::new();
    let scrape = || async {
        let r = http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;
    let text = scrape().await;
    assert!(
        sample(&text, "o365_store_bytes").is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "o365_dedup_last_prune_timestamp_seconds").is_some(),
        "a prune runs at start\n{text}"
    );

    generate(&emu, "Audit.General", 60, 3).await;
    wait_for(Duration::from_secs(60), "60 records delivered", || async {
        sample(&scrape().await, "o365_records_delivered_total") == Some(60.0)
    })
    .await;
    // The three contentIds are forgotten once they are older than 4 s.
    wait_for(
        Duration::from_secs(60),
        "the blobs' contentIds pruned",
        || async {
            let text = scrape().await;
            sample(&text, "o365_dedup_pruned_total").is_some_and(|n| n >= 3.0)
                && sample(&text, "o365_dedup_entries") == Some(0.0)
        },
    )
    .await;
    let text = scrape().await;
    assert_eq!(
        sample(&text, "o365_dedup_pruned_total"),
        Some(3.0),
        "{text}"
    );
    assert_exactly_once(&published_ids(&emu).await, &output_ids(&s.events));
    app.stop();
    app.wait().await;

    // Stopped: `compact` gives the freed pages back, and the store still opens with its cursors.
    let store_dir = s.dir.join("store");
    let (before, after) = EmbeddedStore::compact(&store_dir).expect("compact");
    assert!(after <= before, "{before} → {after}");
    let store = EmbeddedStore::open(&store_dir).expect("reopen after compaction");
    assert!(
        store
            .cursor(TENANT, "Audit.General")
            .await
            .expect("cursor")
            .is_some(),
        "the cursor survived compaction"
    );
}

#[test]
fn compact_refuses_a_store_in_use_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddedStore::compact(dir.path()).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let err = EmbeddedStore::compact(dir.path()).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    drop(store);
    EmbeddedStore::compact(dir.path()).expect("compacts once closed");
}
