//! Three collector replicas on one PostgreSQL database behind nginx (round robin), the emulator
//! pushing notifications through it, replicas SIGKILLed at random and restarted: nothing is
//! lost; the Elasticsearch-style output has nothing twice; NDJSON over HTTP repeats at most the
//! batches in flight at each kill.

#[path = "support/nginx.rs"]
mod nginx;
mod outputs_support;
#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use o365_collector::emulator::TenantSpec;
use outputs_support::http::HttpReceiver;
use postgres::Postgres;
use support::{AUTH_ID, CLIENT, Collector, Lcg, SECRET, TENANT};

/// The second tenant, whose output is NDJSON (the first one's is Elasticsearch).
const TENANT_ND: &str = "5a1c0e77-2b44-4c6e-9d0a-7f3e8b1c2d90";
const TYPES: [&str; 2] = ["Audit.General", "Audit.Exchange"];
const REPLICAS: usize = 3;
const KILLS: usize = 21;
/// Records per tenant: 50,000 through each output.
const RECORDS: u64 = 50_000;
const WORKERS: u64 = 2;
const BATCH: u64 = 200;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_killed_at_random_lose_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201u64);
    println!("replica crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = Lcg(seed);

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

    // A wave of content before each kill, and each kill only once the receivers took in more
    // since the previous one: kills land while notifications arrive through nginx, blobs are
    // fetched and batches are sent.
    let received =
        || (es.state.docs.lock().unwrap().len() + nd.state.events.lock().unwrap().len()) as u64;
    let per_wave = RECORDS / KILLS as u64;
    let mut published = 0u64;
    for kill in 0..KILLS {
        let n = if kill == KILLS - 1 {
            RECORDS - published
        } else {
            per_wave
        };
        for tenant in [TENANT, TENANT_ND] {
            let resp = support::client(&emu)
                .post(format!("{}/_emulator/generate", emu.base_url()))
                .json(&serde_json::json!({"tenant_id": tenant,
                    "content_type": TYPES[kill % TYPES.len()], "records": n, "blobs": n.div_ceil(400)}))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
        published += n;
        let before = received();
        support::wait_for(Duration::from_secs(60), "records flowing", || async {
            received() > before
        })
        .await;
        // Random moment and replica: this delay picks when to crash, it synchronises nothing.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 400))).await;
        let victim = rng.range(0, REPLICAS as u64) as usize;
        replicas[victim].kill();
        replicas[victim] = Collector::spawn(&setups[victim]);
    }
    assert_eq!(published, RECORDS);

    let want_es = emu.published(TENANT).await.record_ids;
    let want_nd = emu.published(TENANT_ND).await.record_ids;
    assert_eq!(want_es.len() as u64 + want_nd.len() as u64, 2 * RECORDS);
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

    // Elasticsearch: each record once (documents keyed by their id).
    support::assert_exactly_once(&want_es, &counts(es.record_ids()));
    // NDJSON: nothing missing; repeats only from batches in flight at a kill (per worker, the
    // batch being sent and the one whose progress was being written).
    let nd_ids = counts(nd.record_ids());
    let repeats: u64 = nd_ids.values().map(|n| u64::from(n - 1)).sum();
    let bound = KILLS as u64 * WORKERS * 2 * BATCH;
    let relayed = proxy.access_log().lines().count();
    println!(
        "{KILLS} kills of {REPLICAS} replicas; {} records; NDJSON repeats {repeats} (bound {bound}); {relayed} webhook requests through nginx",
        2 * RECORDS
    );
    assert_eq!(
        nd_ids.len(),
        want_nd.len(),
        "NDJSON: records missing or foreign"
    );
    assert!(
        repeats <= bound,
        "NDJSON repeated {repeats} records (bound {bound})"
    );
}
