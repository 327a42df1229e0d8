//! A replica whose clock is hours off, on the PostgreSQL store (a real server,
//! tests/support/postgres.rs) against the emulator: the real binary, its clock moved with
//! libfaketime (`faketime` package; scripts/test installs it). Listing ends and the shared cursor
//! go by the database's clock, so nothing is skipped, and the replica reports its skew.

use std::time::Duration;

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use o365_collector::store::{PostgresStore, Store};
use postgres::Postgres;
use support::{Collector, TENANT};

const TYPE: &str = "Audit.General";
/// Bounds a hang.
const WAIT: Duration = Duration::from_secs(120);
/// Where Debian's libfaketime lives.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that moves a process's clock `offset` (e.g. `+3h`): every clock, monotonic
/// included (tokio's timers only see a constant shift), but not file times.
fn faketime(offset: &str) -> Vec<(&'static str, String)> {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install the `faketime` package (apt-get install faketime; scripts/test does)"
    );
    vec![
        ("LD_PRELOAD", LIBFAKETIME.to_owned()),
        ("FAKETIME", offset.to_owned()),
        ("NO_FAKE_STAT", "1".to_owned()),
        ("FAKETIME_DONT_RESET", "1".to_owned()),
    ]
}

/// A collector in pull mode (listing every second) on the shared store, its own file output.
fn pull_replica(emu: &o365_emulator::Emulator, dir: &std::path::Path, url: &str) -> support::Setup {
    std::fs::create_dir_all(dir).unwrap();
    let ca = support::write_certs(emu, dir);
    let events = dir.join("events.ndjson");
    let yaml = format!(
        "client_id: {client}\ntenant_id: {TENANT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\n\
         resource: {b}\nauthority: {b}\ncontent_type: {TYPE}\noutput: file\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
         outputs:\n  file:\n    type: file\n    path: {e}\n\
         store:\n  type: postgres\n  url: {url}\n  sslmode: disable\n  pool_size: 4\n  \
         allow_file_output: true\n  tenant_lease: 4s\n",
        client = support::CLIENT,
        b = emu.base_url(),
        ca = ca.display(),
        e = events.display(),
    );
    support::custom_setup(dir, &yaml, &events)
}

/// The replica token a collector logged at start-up.
fn token_of(c: &Collector) -> String {
    postgres::replica_token(&c.logs())
        .unwrap_or_else(|| panic!("no replica token logged\n{}", c.logs()))
}

async fn admin_get(c: &Collector, path: &str) -> (u16, String) {
    let resp = reqwest::get(support::admin_url(&c.logs(), path))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// `o365_clock_skew_seconds` as scraped.
async fn skew_metric(c: &Collector) -> f64 {
    let (_, text) = admin_get(c, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("o365_clock_skew_seconds "))
        .unwrap_or_else(|| panic!("no o365_clock_skew_seconds\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Records across the replicas' file outputs, with their counts.
fn outputs(setups: &[support::Setup]) -> std::collections::HashMap<String, u32> {
    let mut all = std::collections::HashMap::new();
    for s in setups {
        for (id, n) in support::output_ids(&s.events) {
            *all.entry(id).or_insert(0) += n;
        }
    }
    all
}

/// Replica A's clock is 3 hours ahead and it lists the tenant: content published while it lists
/// (and after replica B joined) all arrives, exactly once; the shared cursor never passes the
/// database's now; A reports its skew in `/status`, `o365_clock_skew_seconds` and `/readyz`
/// (503 with the reason) while B, on time, is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_ahead_skips_no_content() {
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let observer = PostgresStore::connect(&Postgres::config(&url))
        .await
        .expect("connect");
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let setups = [
        pull_replica(&emu, &dir.path().join("ahead"), &url),
        pull_replica(&emu, &dir.path().join("on-time"), &url),
    ];
    let env = faketime("+3h");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ahead = Collector::spawn_with_env(&setups[0], &env);
    support::wait_for(WAIT, "the skewed replica holds the tenant", || async {
        ahead.logs().contains("replica=")
            && observer.tenant_holders().await.is_ok_and(|h| {
                h.iter()
                    .any(|h| h.holder == token_of(&ahead) && h.expires_in_ms > 0)
            })
    })
    .await;
    // It lists while its clock is ahead; content published now must still be listed later.
    support::generate(&emu, TYPE, 100, 5).await;
    support::wait_for(WAIT, "the first records delivered", || async {
        outputs(&setups).len() >= 100
    })
    .await;
    let on_time = Collector::spawn(&setups[1]);
    support::generate(&emu, TYPE, 100, 5).await;
    let published = support::published_ids(&emu).await;
    assert_eq!(published.len(), 200);
    support::wait_for(WAIT, "every published record delivered", || async {
        let out = outputs(&setups);
        published.iter().all(|id| out.contains_key(id))
    })
    .await;
    support::assert_exactly_once(&published, &outputs(&setups));
    let cursor = observer
        .cursor(TENANT, TYPE)
        .await
        .unwrap()
        .expect("a cursor");
    let db_now = observer.now().await.unwrap();
    assert!(
        cursor <= db_now,
        "the cursor {cursor:?} is past the database's now {db_now:?}"
    );
    // The skewed replica did list the tenant (so its clock had the chance to do harm).
    let requests: Vec<o365_emulator::ApiRequest> =
        support::control_get(&emu, "requests", TENANT).await;
    let by_ahead = requests
        .iter()
        .filter(|r| r.operation == "ListContent")
        .filter(|r| {
            r.user_agent
                .as_deref()
                .unwrap_or("")
                .ends_with(&format!("replica/{}", token_of(&ahead)))
        })
        .count();
    assert!(by_ahead > 0, "the skewed replica never listed");

    // What the skewed replica reports.
    let (_, status) = admin_get(&ahead, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let skew = status["replicas"]["clock_skew_secs"]
        .as_f64()
        .unwrap_or_else(|| panic!("no clock_skew_secs: {status}"));
    assert!((skew - 10_800.0).abs() < 60.0, "{status}");
    let problem = status["replicas"]["clock_problem"].as_str().unwrap();
    assert!(problem.contains("ahead of the database's"), "{problem}");
    let metric = skew_metric(&ahead).await;
    assert!((metric - 10_800.0).abs() < 60.0, "{metric}");
    let (code, body) = admin_get(&ahead, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("clock: this replica's clock is") && body.contains("NTP"),
        "{body}"
    );
    assert_eq!(
        ahead
            .logs()
            .matches("ahead of the database's (more than 5s)")
            .count(),
        1,
        "logged once when it started, not at every measure"
    );
    // The replica on time: no problem, ready.
    support::wait_for(WAIT, "the on-time replica measured its clock", || async {
        let (_, s) = admin_get(&on_time, "/status").await;
        let s: serde_json::Value = serde_json::from_str(&s).unwrap();
        s["replicas"]["clock_skew_secs"].is_number()
    })
    .await;
    let (_, status) = admin_get(&on_time, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["replicas"]["clock_skew_secs"]
            .as_f64()
            .unwrap()
            .abs()
            < 5.0,
        "{status}"
    );
    assert!(status["replicas"]["clock_problem"].is_null(), "{status}");
    assert!(skew_metric(&on_time).await.abs() < 5.0);
    assert_eq!(admin_get(&on_time, "/readyz").await.0, 200);
    for mut c in [ahead, on_time] {
        c.terminate(Duration::from_secs(20));
    }
}
