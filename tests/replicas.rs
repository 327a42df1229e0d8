//! The real binary on the PostgreSQL store (a real server, tests/support/postgres.rs) against the
//! emulator: the database going away in the middle of a run.

use std::time::Duration;

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use postgres::{PASSWORD, Postgres};
use support::{Collector, TENANT};

const TYPE: &str = "Audit.General";

/// How long the database stays down (the issue asks for 30 s; `O365_PG_OUTAGE_SECS` shortens it
/// when iterating).
fn outage() -> Duration {
    let secs = std::env::var("O365_PG_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// The `store:` block of a collector on `url` (one replica, so its file output is allowed).
fn store_yaml(url: &str) -> String {
    format!(
        "store:\n  type: postgres\n  url: {url}\n  sslmode: disable\n  pool_size: 4\n  allow_file_output: true\n"
    )
}

async fn readyz(collector: &Collector) -> u16 {
    let url = support::admin_url(&collector.logs(), "/readyz");
    match reqwest::get(url).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// PostgreSQL stopped in the middle of a run: the webhook answers 503 meanwhile (Microsoft keeps
/// retrying), readiness is false, the process stays up, and once the database is back every
/// published record is delivered without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_loses_nothing() {
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let emu = support::emulator(|c| {
        // Microsoft retries a failing webhook for hours; keep the emulator's webhook enabled too.
        c.webhook_max_failures = 100_000;
        c.webhook_max_backoff = Duration::from_millis(500);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = support::setup(&emu, dir.path(), &[TYPE], &store_yaml(&url));
    let mut collector = Collector::spawn(&s);
    support::wait_webhooks_enabled(&emu, &[TYPE]).await;
    support::generate(&emu, TYPE, 200, 4).await;
    support::wait_for(Duration::from_secs(30), "the first records", || async {
        support::line_count(&s.events) >= 200
    })
    .await;
    assert_eq!(readyz(&collector).await, 200);

    pg.stop_server();
    let before = support::deliveries(&emu).await.len();
    support::generate(&emu, TYPE, 300, 6).await;
    support::wait_for(
        Duration::from_secs(30),
        "a 503 from the webhook",
        || async {
            support::deliveries(&emu).await[before..]
                .iter()
                .any(|d| d["kind"] == "notification" && d["status"] == 503)
        },
    )
    .await;
    assert_eq!(
        readyz(&collector).await,
        503,
        "not ready without its database"
    );
    // The scenario's length, not a synchronisation: the database stays down this long.
    tokio::time::sleep(outage()).await;
    assert!(
        collector.child.try_wait().unwrap().is_none(),
        "the collector must ride the outage out\n{}",
        collector.logs()
    );
    let acknowledged_meanwhile = support::deliveries(&emu).await[before..]
        .iter()
        .filter(|d| d["kind"] == "notification" && d["status"] == 200)
        .count();
    assert_eq!(
        acknowledged_meanwhile, 0,
        "nothing acknowledged without the database"
    );

    pg.start_server();
    let published = support::published_ids(&emu).await;
    assert_eq!(published.len(), 500);
    support::wait_for(
        Duration::from_secs(60),
        "every record after the outage",
        || async {
            let out = support::output_ids(&s.events);
            published.iter().all(|id| out.contains_key(id))
        },
    )
    .await;
    support::wait_for(Duration::from_secs(10), "ready again", || async {
        readyz(&collector).await == 200
    })
    .await;
    let logs = collector.logs();
    assert!(
        logs.contains("503") || logs.contains("store unavailable"),
        "{logs}"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the database password leaked into the logs"
    );
    let _ = TENANT;
    collector.terminate(Duration::from_secs(20));
}
