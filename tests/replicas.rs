//! The real binary on the PostgreSQL store (a real server, tests/support/postgres.rs) against the
//! emulator: the database going away in the middle of a run, and which replica lists a tenant.

use std::time::{Duration, SystemTime};

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use o365_collector::store::{PostgresStore, Store};
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
    let answers = store_failure_answers(&logs);
    assert!(
        !answers.is_empty()
            && answers
                .iter()
                .all(|(status, error)| *status == 503 && error.starts_with("store unavailable")),
        "every POST the store could not take answered 503 for an unavailable store: {answers:?}\n{logs}"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the database password leaked into the logs"
    );
    collector.terminate(Duration::from_secs(20));
}

/// The answers the collector logged giving a webhook POST it could not store (`cannot store
/// notifications; answering NNN … error=…`): each status, parsed, with its error. A bare "503"
/// would match any timestamp's microseconds.
fn store_failure_answers(logs: &str) -> Vec<(u16, String)> {
    logs.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("cannot store notifications; answering ")?;
            let (status, fields) = rest.split_once(' ')?;
            let (_, error) = fields.split_once("error=")?;
            Some((status.parse().ok()?, error.to_owned()))
        })
        .collect()
}

/// A collector in pull mode (listing every second) on the shared store, its own file output.
fn pull_replica(
    emu: &o365_emulator::Emulator,
    dir: &std::path::Path,
    url: &str,
    lease: Duration,
) -> support::Setup {
    std::fs::create_dir_all(dir).unwrap();
    let ca = support::write_certs(emu, dir);
    let events = dir.join("events.ndjson");
    let yaml = format!(
        "client_id: {client}\ntenant_id: {TENANT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\n\
         resource: {b}\nauthority: {b}\ncontent_type: {TYPE}\noutput: file\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
         outputs:\n  file:\n    type: file\n    path: {e}\n{store}  tenant_lease: {lease}ms\n",
        client = support::CLIENT,
        b = emu.base_url(),
        ca = ca.display(),
        e = events.display(),
        store = store_yaml(url),
        lease = lease.as_millis(),
    );
    support::custom_setup(dir, &yaml, &events)
}

/// A replica in pull mode on the shared store for `tenants`, through one multi-tenant app (the
/// top level names no tenant), with `workers` workers and its own file output.
fn pull_replica_for(
    emu: &o365_emulator::Emulator,
    dir: &std::path::Path,
    url: &str,
    tenants: &[&str],
    workers: usize,
) -> support::Setup {
    std::fs::create_dir_all(dir).unwrap();
    let ca = support::write_certs(emu, dir);
    let events = dir.join("events.ndjson");
    let entries: String = tenants
        .iter()
        .map(|t| format!("  - tenant_id: {t}\n"))
        .collect();
    let yaml = format!(
        "client_id: {client}\nclient_secret: ${{TEST_CLIENT_SECRET}}\n\
         resource: {b}\nauthority: {b}\ncontent_type: {TYPE}\noutput: file\ntenants:\n{entries}\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
         pipeline:\n  workers: {workers}\n\
         outputs:\n  file:\n    type: file\n    path: {e}\n{store}  tenant_lease: 4s\n",
        client = support::CLIENT,
        b = emu.base_url(),
        ca = ca.display(),
        e = events.display(),
        store = store_yaml(url),
    );
    support::custom_setup(dir, &yaml, &events)
}

/// The replica token a collector logged at start-up.
fn token_of(c: &Collector) -> String {
    postgres::replica_token(&c.logs())
        .unwrap_or_else(|| panic!("no replica token logged\n{}", c.logs()))
}

/// `ListContent` calls for the test tenant: (arrival, replica token from the user agent).
async fn listings(emu: &o365_emulator::Emulator) -> Vec<(chrono::DateTime<chrono::Utc>, String)> {
    let v: Vec<o365_emulator::ApiRequest> = support::control_get(emu, "requests", TENANT).await;
    v.into_iter()
        .filter(|r| r.operation == "ListContent")
        .map(|r| {
            let ua = r.user_agent.unwrap_or_default();
            let token = ua.split("replica/").nth(1).unwrap_or("").to_owned();
            (r.at, token)
        })
        .collect()
}

/// The first listing by `token` after `after`.
async fn first_listing_after(
    emu: &o365_emulator::Emulator,
    token: &str,
    after: chrono::DateTime<chrono::Utc>,
    within: Duration,
) -> chrono::DateTime<chrono::Utc> {
    let found = std::sync::Mutex::new(None);
    support::wait_for(within, "a listing by the other replica", || async {
        let first = listings(emu)
            .await
            .into_iter()
            .find(|(at, t)| *at > after && t == token)
            .map(|(at, _)| at);
        *found.lock().unwrap() = first;
        first.is_some()
    })
    .await;
    found.into_inner().unwrap().unwrap()
}

fn signal(c: &Collector, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &c.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The test tenant's lease row as the database has it now: (holder, since, expires in ms), read
/// through a store of our own that holds nothing.
async fn lease_row(store: &PostgresStore) -> (String, SystemTime, i64) {
    let holders = store.tenant_holders().await.unwrap();
    let row = holders
        .iter()
        .find(|h| h.tenant_id == TENANT.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("no lease row for the tenant: {holders:?}"));
    (row.holder.clone(), row.since, row.expires_in_ms)
}

/// When `holder`'s lease lapses at the earliest, as read now (it may only get later: a renewal
/// in flight). The database's clock counts whole milliseconds, hence the one taken off.
async fn lapses_at_least(store: &PostgresStore, holder: &str) -> SystemTime {
    let read = SystemTime::now();
    let (current, _, expires_in_ms) = lease_row(store).await;
    assert_eq!(
        current, holder,
        "the tenant changed hands before its holder stopped"
    );
    read + Duration::from_millis(expires_in_ms.max(0) as u64) - Duration::from_millis(1)
}

/// Waits until every published record is in one of the replicas' outputs.
async fn wait_delivered(emu: &o365_emulator::Emulator, setups: &[support::Setup]) {
    let published = support::published_ids(emu).await;
    support::wait_for(WAIT, "every published record delivered", || async {
        let out = outputs(setups);
        published.iter().all(|id| out.contains_key(id))
    })
    .await;
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

/// Bounds a hang, not the takeover: how fast a lease is taken over is measured against the lease
/// in benches/replicas.rs (`cases=takeover`).
const WAIT: Duration = Duration::from_secs(120);

/// Exactly one replica lists the tenant at a time, and the tenant changes hands only once its
/// holder is gone. The holder stalls (SIGSTOP): the other replica takes the tenant, not before the
/// stalled holder's lease lapsed in the database, and the stalled one, resumed, lists no more. The
/// new holder is killed (SIGKILL): the first takes the tenant back, again only once the lease
/// lapsed. The emulator's request log shows the listings in three runs, never interleaved, and
/// content published before, between and after the handovers lands exactly once across the
/// replicas' outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_lists_a_tenant_and_another_takes_over_once_its_lease_lapsed() {
    const LEASE: Duration = Duration::from_secs(6);
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let observer = PostgresStore::connect(&Postgres::config(&url))
        .await
        .expect("connect");
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let setups = [
        pull_replica(&emu, &dir.path().join("a"), &url, LEASE),
        pull_replica(&emu, &dir.path().join("b"), &url, LEASE),
    ];
    let mut replicas: Vec<Collector> = setups.iter().map(Collector::spawn).collect();
    support::wait_for(WAIT, "both replicas connected", || async {
        replicas.iter().all(|c| c.logs().contains("replica="))
    })
    .await;
    let tokens: Vec<String> = replicas.iter().map(token_of).collect();
    support::wait_for(WAIT, "a first listing", || async {
        !listings(&emu).await.is_empty()
    })
    .await;
    let first = listings(&emu).await[0].1.clone();
    let holder = tokens
        .iter()
        .position(|t| *t == first)
        .expect("a known replica lists");
    let other = 1 - holder;
    // The replica that lists is the one the database names as the holder.
    assert_eq!(lease_row(&observer).await.0, tokens[holder]);
    // The other replica says so in the tenant's state, and still counts it as up.
    for (i, want) in [(holder, "ok"), (other, "not_listed_here")] {
        let logs = replicas[i].logs();
        let status: serde_json::Value = reqwest::get(support::admin_url(&logs, "/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["tenants"][0]["state"], want, "{status}");
        let metrics = reqwest::get(support::admin_url(&logs, "/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("o365_tenant_up{") && l.ends_with(" 1")),
            "{metrics}"
        );
    }
    support::generate(&emu, TYPE, 40, 2).await;
    wait_delivered(&emu, &setups).await;

    // The holder stalls: the other replica takes the tenant once the stalled lease lapsed.
    let stalled_at = chrono::Utc::now();
    signal(&replicas[holder], "-STOP");
    let lapses = lapses_at_least(&observer, &tokens[holder]).await;
    first_listing_after(&emu, &tokens[other], stalled_at, WAIT).await;
    let (now_holder, since, _) = lease_row(&observer).await;
    assert_eq!(
        now_holder, tokens[other],
        "the replica that lists holds the lease"
    );
    assert!(
        since >= lapses,
        "taken at {since:?}, before the stalled holder's lease lapsed ({lapses:?})"
    );
    // Resumed, the stalled replica finds its lease gone and leaves the listing to the other.
    signal(&replicas[holder], "-CONT");
    let resumed = chrono::Utc::now();
    support::wait_for(WAIT, "three more listings after the resume", || async {
        listings(&emu)
            .await
            .iter()
            .filter(|(at, t)| *at > resumed && *t == tokens[other])
            .count()
            >= 3
    })
    .await;
    support::generate(&emu, TYPE, 40, 2).await;
    wait_delivered(&emu, &setups).await;

    // The new holder dies: the first takes the tenant back once the dead one's lease lapsed.
    let killed_at = chrono::Utc::now();
    replicas[other].kill();
    let lapses = lapses_at_least(&observer, &tokens[other]).await;
    first_listing_after(&emu, &tokens[holder], killed_at, WAIT).await;
    let (now_holder, since, _) = lease_row(&observer).await;
    assert_eq!(now_holder, tokens[holder]);
    assert!(
        since >= lapses,
        "taken back at {since:?}, before the dead holder's lease lapsed ({lapses:?})"
    );

    // Any replica's admin API shows who holds the tenant.
    let status: serde_json::Value =
        reqwest::get(support::admin_url(&replicas[holder].logs(), "/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let leases = &status["replicas"]["tenant_leases"];
    assert_eq!(status["replicas"]["this_replica"], tokens[holder].as_str());
    assert_eq!(leases[0]["tenant_id"], TENANT.to_ascii_lowercase());
    assert_eq!(leases[0]["holder"], tokens[holder].as_str(), "{status}");

    // Content published now is listed by the survivor; every record, before, between and after
    // the handovers, is in the outputs exactly once.
    support::generate(&emu, TYPE, 40, 2).await;
    wait_delivered(&emu, &setups).await;
    let published = support::published_ids(&emu).await;
    assert_eq!(published.len(), 120);
    support::assert_exactly_once(&published, &outputs(&setups));

    // Never two listers at once: in arrival order, the listings form three runs. The one
    // exception is a request the stalled replica had decided on before SIGSTOP (lease checked,
    // request not yet sent): it goes out on SIGCONT. At most one such stray listing; none after.
    let all = listings(&emu).await;
    let strays = all
        .iter()
        .filter(|(at, t)| *at > resumed && *at < killed_at && *t == tokens[holder])
        .count();
    assert!(
        strays <= 1,
        "the resumed replica listed {strays} times while the other held the tenant"
    );
    if strays == 1 {
        println!(
            "one listing the stalled replica had decided on before SIGSTOP went out on SIGCONT"
        );
    }
    let mut runs: Vec<String> = Vec::new();
    for (at, t) in all {
        if at > resumed && at < killed_at && t == tokens[holder] {
            continue;
        }
        if runs.last() != Some(&t) {
            runs.push(t);
        }
    }
    assert_eq!(
        runs,
        [
            tokens[holder].clone(),
            tokens[other].clone(),
            tokens[holder].clone()
        ],
        "listings interleaved between replicas"
    );
    replicas[holder].terminate(Duration::from_secs(20));
}

/// A rolling configuration change: replica A still runs the old configuration (tenant T only),
/// replica B the new one (T and a new tenant N). Both run while N's content arrives; B lists N and
/// queues its blobs in the shared queue, where A's workers meet them too. A gives them back
/// untouched instead of dead-lettering them (which had lost them: their contentIds stay in the
/// dedup set), so every record of both tenants is delivered exactly once, nothing is
/// dead-lettered, and A's `/status` names N as a tenant it leaves to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_configuration_change_loses_nothing() {
    const NEW: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let observer = PostgresStore::connect(&Postgres::config(&url))
        .await
        .expect("connect");
    let emu = support::emulator(|c| {
        c.tenants.push(o365_emulator::TenantSpec::with_secret(
            NEW,
            support::CLIENT,
            support::SECRET,
        ))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // B works its queue with one worker and every call to Microsoft takes 250 ms, so B needs
    // seconds for N's 30 blobs and A's four idle workers (they look at the queue every 500 ms)
    // meet some of them.
    let setups = [
        pull_replica_for(&emu, &dir.path().join("a"), &url, &[TENANT], 4),
        pull_replica_for(&emu, &dir.path().join("b"), &url, &[TENANT, NEW], 1),
    ];
    let replicas: Vec<Collector> = setups.iter().map(Collector::spawn).collect();
    support::wait_for(WAIT, "both replicas connected", || async {
        replicas.iter().all(|c| c.logs().contains("replica="))
    })
    .await;
    support::faults(&emu, serde_json::json!({"latency_ms": 250})).await;
    support::generate(&emu, TYPE, 200, 10).await;
    let generate_new =
        serde_json::json!({"tenant_id": NEW, "content_type": TYPE, "records": 600, "blobs": 30});
    let resp = support::client(&emu)
        .post(format!("{}/_emulator/generate", emu.base_url()))
        .json(&generate_new)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "generate: {}", resp.status());
    let mut published = support::published_ids(&emu).await;
    published.extend(emu.published(NEW).await.record_ids);
    assert_eq!(published.len(), 800);
    support::wait_for(WAIT, "every record of both tenants delivered", || async {
        let out = outputs(&setups);
        published.iter().all(|id| out.contains_key(id))
    })
    .await;
    support::assert_exactly_once(&published, &outputs(&setups));
    let dead = observer.dead_letters().await.unwrap();
    assert!(dead.is_empty(), "dead letters: {dead:?}");

    let status: serde_json::Value =
        reqwest::get(support::admin_url(&replicas[0].logs(), "/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let unknown = status["unknown_tenants"]
        .as_array()
        .unwrap_or_else(|| panic!("A names no unknown tenant: {status}"));
    assert_eq!(unknown.len(), 1, "{status}");
    assert_eq!(unknown[0]["tenant_id"], NEW, "{status}");
    assert!(unknown[0]["blobs_left"].as_u64() >= Some(1), "{status}");
    assert!(
        replicas[0]
            .logs()
            .contains("queued blobs of a tenant this replica is not configured for"),
        "A logs the tenant it leaves to others"
    );
    // B, configured for both, knows of no such tenant.
    let b: serde_json::Value = reqwest::get(support::admin_url(&replicas[1].logs(), "/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(b["unknown_tenants"].is_null(), "{b}");
    for mut r in replicas {
        r.terminate(Duration::from_secs(20));
    }
}

/// Tenant leases balance over the live replicas. Two replicas split 40 tenants within the share
/// (⌈40/2⌉ + 1); a third joins and gets its part (at least a quarter; the others give back down
/// to ⌈40/3⌉, so 14/14/12), handed over by the others, while no tenant is
/// listed by two replicas at once (the emulator's request log: per tenant, each replica's
/// listings form one unbroken run); then, with no replica changing, no tenant changes hands over
/// three lease periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_leases_balance_over_the_replicas_and_then_stay_put() {
    use o365_collector::pipeline::tenant_lease::share;
    const N: usize = 40;
    const LEASE: Duration = Duration::from_secs(4); // pull_replica_for's tenant_lease
    let ids: Vec<String> = (0..N)
        .map(|i| format!("{i:08x}-1111-4000-8000-{i:012x}"))
        .collect();
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let observer = PostgresStore::connect(&Postgres::config(&url))
        .await
        .expect("connect");
    let specs = ids.clone();
    let emu = support::emulator(move |c| {
        for id in &specs {
            c.tenants.push(o365_emulator::TenantSpec::with_secret(
                id,
                support::CLIENT,
                support::SECRET,
            ));
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let setups: Vec<support::Setup> = ["a", "b", "c"]
        .iter()
        .map(|r| pull_replica_for(&emu, &dir.path().join(r), &url, &names, 1))
        .collect();
    // Held: (holder, since) of every tenant whose row has not lapsed.
    let held = || async {
        observer
            .tenant_holders()
            .await
            .unwrap()
            .into_iter()
            .filter(|h| h.expires_in_ms > 0)
            .map(|h| (h.tenant_id, (h.holder, h.since)))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let shares = |rows: &std::collections::HashMap<String, (String, SystemTime)>| {
        let mut c = std::collections::HashMap::<String, usize>::new();
        for (h, _) in rows.values() {
            *c.entry(h.clone()).or_default() += 1;
        }
        c
    };
    let mut replicas: Vec<Collector> = setups[..2].iter().map(Collector::spawn).collect();
    support::wait_for(WAIT, "two replicas connected", || async {
        replicas.iter().all(|c| c.logs().contains("replica="))
    })
    .await;
    let bound = share(N, 2);
    support::wait_for(WAIT, "40 tenants split over two replicas", || async {
        let rows = held().await;
        rows.len() == N && shares(&rows).len() == 2 && shares(&rows).values().all(|n| *n <= bound)
    })
    .await;
    println!(
        "two replicas: {:?}",
        shares(&held().await).values().collect::<Vec<_>>()
    );

    // A third joins: it gets its part from the others.
    replicas.push(Collector::spawn(&setups[2]));
    support::wait_for(WAIT, "the third replica connected", || async {
        replicas[2].logs().contains("replica=")
    })
    .await;
    let joined = std::time::Instant::now();
    let third = token_of(&replicas[2]);
    loop {
        let rows = held().await;
        let c = shares(&rows);
        if rows.len() == N
            && c.get(&third).copied().unwrap_or(0) >= N / 4
            && c.values().all(|n| *n <= share(N, 3))
        {
            break;
        }
        assert!(
            joined.elapsed() < WAIT,
            "the third replica never got its part: {c:?}\n{}",
            replicas[2].logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = joined.elapsed();
    let split = shares(&held().await);
    println!(
        "three replicas: {:?} after {took:?}",
        split.values().collect::<Vec<_>>()
    );
    // One lease, doubled for a loaded machine (the bench measures it on a quiet one).
    assert!(
        took <= 2 * LEASE,
        "the third replica got its part after {took:?}"
    );

    // Steady state: over three lease periods, no tenant changes hands.
    let before = held().await;
    let until = std::time::Instant::now() + 3 * LEASE;
    while std::time::Instant::now() < until {
        let now = held().await;
        for (t, (h, since)) in &before {
            let after = now
                .get(t)
                .unwrap_or_else(|| panic!("{t} lapsed in steady state"));
            assert_eq!(
                (&after.0, &after.1),
                (h, since),
                "{t} changed hands in steady state"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Never two replicas at once: per tenant, each replica's listings are one unbroken run.
    for id in &ids {
        let v: Vec<o365_emulator::ApiRequest> = support::control_get(&emu, "requests", id).await;
        let mut runs: Vec<String> = Vec::new();
        let mut list: Vec<_> = v
            .into_iter()
            .filter(|r| r.operation == "ListContent")
            .collect();
        list.sort_by_key(|r| r.at);
        for r in list {
            let ua = r.user_agent.unwrap_or_default();
            let token = ua.split("replica/").nth(1).unwrap_or("").to_owned();
            if runs.last() != Some(&token) {
                assert!(
                    !runs.contains(&token),
                    "{id} listed by {runs:?} then {token} again"
                );
                runs.push(token);
            }
        }
        assert!(!runs.is_empty(), "{id} never listed");
    }
}
