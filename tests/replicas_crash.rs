//! Three collector replicas on one PostgreSQL database behind nginx (round robin), the emulator
//! pushing notifications through it, replicas SIGKILLed at random and restarted, each while it
//! holds a blob: nothing is lost; the Elasticsearch-style output has nothing twice; and what the
//! receivers got again (NDJSON repeats, Elasticsearch 409s) is at most the batches in flight at
//! each kill, each whole. Blobs are 25 batches long, so a resume from the blob's first record
//! instead of after its progress would re-send far more. `CRASH_SEED` varies the kills.

#[path = "support/nginx.rs"]
mod nginx;
mod outputs_support;
#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use o365_emulator::TenantSpec;
use outputs_support::http::{HttpReceiver, Resent};
use postgres::Postgres;
use support::{AUTH_ID, CLIENT, Collector, Lcg, SECRET, TENANT};

/// The second tenant, whose output is NDJSON (the first one's is Elasticsearch).
const TENANT_ND: &str = "5a1c0e77-2b44-4c6e-9d0a-7f3e8b1c2d90";
const TYPES: [&str; 2] = ["Audit.General", "Audit.Exchange"];
const REPLICAS: usize = 3;
const KILLS: usize = 21;
const WORKERS: u64 = 2;
const BATCH: u64 = 32;
/// Records per blob: 25 batches.
const BLOB: u64 = 800;
/// Blobs per tenant published before each kill: 50,400 records through each output in all.
const WAVE_BLOBS: u64 = 3;

/// One replica's configuration: both tenants, push through nginx, the shared store.
fn replica_yaml(
    base: &str,
    dir: &std::path::Path,
    port: u16,
    public: &str,
    db: &str,
    es: &HttpReceiver,
    nd: &HttpReceiver,
) -> String {
    format!(
        "client_id: {CLIENT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\nresource: {base}\nauthority: {base}\n\
         content_type: {types}\n\
         tenants:\n  - tenant_id: {TENANT}\n    output: es\n    format: o365\n\
         \x20 - tenant_id: {TENANT_ND}\n    output: nd\n    format: raw\n\
         webhook:\n  address: {public}\n  auth_id: {AUTH_ID}\n\
         listen:\n  public: 127.0.0.1:{port}\n  admin: 127.0.0.1:0\n  trusted_proxies: [127.0.0.1]\n\
         outbound:\n  ca_file: {d}/ca.pem\n\
         outputs:\n  es:\n    type: http\n    format: elasticsearch\n    url: '{es}'\n\
         \x20 nd:\n    type: http\n    format: ndjson\n    url: '{nd}'\n\
         pipeline:\n  workers: {WORKERS}\n  lease: 6s\n  batch_records: {BATCH}\n\
         store:\n  type: postgres\n  url: {db}\n  sslmode: disable\n  pool_size: 4\n  tenant_lease: 6s\n",
        types = TYPES.join(" "),
        d = dir.display(),
        es = es.url(""),
        nd = nd.url(""),
    )
}

fn counts(ids: Vec<String>) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for id in ids {
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

/// Publishes `blobs` blobs of [`BLOB`] records for both tenants.
async fn publish(emu: &o365_emulator::Emulator, content_type: &str, blobs: u64) {
    for tenant in [TENANT, TENANT_ND] {
        let resp = support::client(emu)
            .post(format!("{}/_emulator/generate", emu.base_url()))
            .json(
                &serde_json::json!({"tenant_id": tenant, "content_type": content_type,
                "records": blobs * BLOB, "blobs": blobs}),
            )
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
}

/// The replica's lease owner token, from its "connected to the shared PostgreSQL store" line.
fn owner_token(replica: &Collector) -> Option<String> {
    let logs = replica.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("connected to the shared PostgreSQL store"))?;
    let token = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("replica="))?;
    Some(token.trim_matches('"').to_owned())
}

/// Waits until some replica holds a blob with at least half of it still to deliver (its lease is
/// live and its progress counts at most half the records), and returns one of them, picked with
/// `rng`: killed at once, it dies in the middle of that blob. Should the queue stay empty for half
/// a second (everything published is out), publishes another blob per tenant to have work to land
/// in; returns the records per tenant it published too.
async fn busy_replica(
    db: &sqlx::PgPool,
    replicas: &[Collector],
    emu: &o365_emulator::Emulator,
    rng: &mut Lcg,
    kill: usize,
) -> (usize, String, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut published, mut idle_since) = (0, None);
    loop {
        let holders: Vec<String> = sqlx::query_scalar(
            "SELECT lease_owner FROM o365_queue WHERE lease_owner IS NOT NULL \
             AND lease_until_ms > o365_now_ms() AND delivered <= $1",
        )
        .bind((BLOB / 2) as i64)
        .fetch_all(db)
        .await
        .unwrap();
        let busy: Vec<(usize, String)> = replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| owner_token(r).map(|t| (i, t)))
            .filter(|(_, t)| holders.contains(t))
            .collect();
        if !busy.is_empty() {
            let (i, token) = busy[rng.range(0, busy.len() as u64) as usize].clone();
            return (i, token, published);
        }
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM o365_queue")
            .fetch_one(db)
            .await
            .unwrap();
        if queued > 0 {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(500)
        {
            publish(emu, TYPES[kill % TYPES.len()], 1).await;
            published += BLOB;
            idle_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "kill {kill}: no replica held a blob within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_killed_at_random_lose_nothing() {
    let mut rng = Lcg(support::crash_seed(
        "three_replicas_killed_at_random_lose_nothing",
        20261201,
    ));

    let pg = Postgres::start();
    let db = pg.create_database().await;
    let emu = support::emulator(|c| {
        c.tenants.push(TenantSpec {
            tenant_id: TENANT_ND.into(),
            client_id: CLIENT.into(),
            client_secret: Some(SECRET.into()),
            certificates_pem: Vec::new(),
        });
        c.webhook_retry_base = Duration::from_millis(50);
        c.webhook_max_backoff = Duration::from_secs(1);
        c.webhook_max_failures = 100_000;
    })
    .await;
    let es = HttpReceiver::start();
    let nd = HttpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    support::write_certs(&emu, dir.path());
    let proxy_port = support::free_port();
    let public = format!("https://127.0.0.1:{proxy_port}/o365/webhook");
    let ports: Vec<u16> = (0..REPLICAS).map(|_| support::free_port()).collect();
    let setups: Vec<support::Setup> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let d = dir.path().join(format!("r{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let yaml = replica_yaml(emu.base_url(), dir.path(), *port, &public, &db, &es, &nd);
            support::custom_setup(&d, &yaml, &d.join("unused"))
        })
        .collect();
    let proxy = nginx::Nginx::start(
        &dir.path().join("nginx"),
        proxy_port,
        &ports,
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    let mut replicas: Vec<Collector> = setups.iter().map(Collector::spawn).collect();
    support::wait_webhooks_enabled(&emu, &TYPES).await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();

    // A wave of content before each kill, and each kill only once the receivers took in more
    // since the previous one: kills land while notifications arrive through nginx, blobs are
    // fetched and batches are sent.
    let received =
        || (es.state.docs.lock().unwrap().len() + nd.state.events.lock().unwrap().len()) as u64;
    let mut published = 0u64;
    for kill in 0..KILLS {
        publish(&emu, TYPES[kill % TYPES.len()], WAVE_BLOBS).await;
        published += WAVE_BLOBS * BLOB;
        let before = received();
        support::wait_for(Duration::from_secs(60), "records flowing", || async {
            received() > before
        })
        .await;
        // Random moment: this delay picks when to crash, it synchronises nothing. The victim is
        // a replica in the middle of a blob at the next moment one is.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 400))).await;
        let (victim, token, topped_up) = busy_replica(&pool, &replicas, &emu, &mut rng, kill).await;
        published += topped_up;
        if kill == 0 {
            // Before any kill nothing is sent twice.
            assert_eq!(
                es.resent(),
                Resent::default(),
                "Elasticsearch before any kill"
            );
            assert_eq!(nd.resent(), Resent::default(), "NDJSON before any kill");
        }
        replicas[victim].kill();
        // Its leases outlive it (until they lapse): it died holding a blob it had not finished.
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM o365_queue WHERE lease_owner = $1")
                .bind(&token)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            held > 0,
            "kill {kill}: replica {victim} held no blob when it was killed"
        );
        replicas[victim] = Collector::spawn(&setups[victim]);
    }

    let want_es = emu.published(TENANT).await.record_ids;
    let want_nd = emu.published(TENANT_ND).await.record_ids;
    assert_eq!(want_es.len() as u64, published);
    assert_eq!(want_nd.len() as u64, published);
    support::wait_for(
        Duration::from_secs(240),
        "every record after the last restart",
        || async {
            let es_ids = counts(es.record_ids());
            let nd_ids = counts(nd.record_ids());
            want_es.iter().all(|id| es_ids.contains_key(id))
                && want_nd.iter().all(|id| nd_ids.contains_key(id))
        },
    )
    .await;
    for r in &mut replicas {
        let status = r.terminate(Duration::from_secs(20));
        assert!(status.success(), "{}", r.logs());
    }
    assert!(es.violations().is_empty(), "{:?}", es.violations());
    assert!(nd.violations().is_empty(), "{:?}", nd.violations());

    // Elasticsearch: each record once (documents keyed by their id: an unstable `_id` would
    // show as a second document); NDJSON: nothing missing, nothing foreign.
    support::assert_exactly_once(&want_es, &counts(es.record_ids()));
    let nd_ids = counts(nd.record_ids());
    assert_eq!(
        nd_ids.len(),
        want_nd.len(),
        "NDJSON: records missing or foreign"
    );
    // Sent again: only batches in flight at a kill. Per kill, each of the victim's workers
    // re-sends at most the batch it was sending and the one whose progress it was writing, whole
    // (each request is one batch: max_events 500 > batch_records).
    let (es_again, nd_again) = (es.resent(), nd.resent());
    let batches = es_again.requests + nd_again.requests;
    let bound = KILLS as u64 * WORKERS * 2;
    let relayed = proxy.access_log().lines().count();
    println!(
        "{KILLS} kills of {REPLICAS} replicas; {} records; sent again: {batches} batches \
         (bound {bound}; Elasticsearch {es_again:?}, NDJSON {nd_again:?}); {relayed} webhook \
         requests through nginx",
        2 * published
    );
    assert!(
        batches <= bound,
        "{batches} batches sent again (Elasticsearch {es_again:?}, NDJSON {nd_again:?}), more \
         than 2 x {WORKERS} workers x {KILLS} kills"
    );
    assert_eq!(
        es_again.mixed + nd_again.mixed,
        0,
        "batches partly sent before (a resume inside a batch): Elasticsearch {es_again:?}, \
         NDJSON {nd_again:?}"
    );
}
