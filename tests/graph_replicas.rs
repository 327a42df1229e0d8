//! The Microsoft Graph feeds on the PostgreSQL store: two collector replicas (the real binary) on
//! one real database read all four Graph feeds of two tenants from the emulator. A replica is
//! SIGKILLed while it delivers a Graph page; the other resumes the page after its progress. Every
//! Graph record reaches Elasticsearch exactly once, and NDJSON repeats at most the batches in
//! flight at each kill (invariants 4 and 13).

mod outputs_support;
#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use o365_collector::demo::graph_key;
use o365_collector::graph::GraphFeed;
use o365_emulator::graph::{GraphFaults, GraphGenerate, GraphUpdate};
use o365_emulator::{Emulator, TenantSpec};
use outputs_support::http::HttpReceiver;
use postgres::Postgres;
use serde_json::Value;
use sqlx::{Connection, Row};
use support::{CLIENT, Collector, SECRET, TENANT};

/// The second tenant, whose output is NDJSON (the first one's is Elasticsearch).
const TENANT_ND: &str = "5a1c0e77-2b44-4c6e-9d0a-7f3e8b1c2d90";
const WORKERS: u64 = 2;
/// Small batches: a Graph page of 1,000 records is 20 batches, so a kill lands inside one.
const BATCH: u64 = 50;
const KILLS: usize = 2;
/// Each request to the receivers is answered this late, so a page takes seconds to deliver and
/// the moment of a kill (inside a page, chosen from the store) cannot slip past its end.
const RECEIVER_DELAY_MS: u64 = 200;

/// One replica: both tenants, all four Graph feeds (pull mode), the shared store.
fn replica_yaml(emu: &Emulator, ca: &std::path::Path, db: &str, es: &str, nd: &str) -> String {
    format!(
        "client_id: {CLIENT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\nresource: {b}\nauthority: {b}\n\
         content_type: Audit.General\n\
         graph_feeds: sign_ins directory_audits message_trace service_health\ngraph_backfill: 1h\n\
         tenants:\n  - tenant_id: {TENANT}\n    output: es\n    format: o365\n\
         \x20 - tenant_id: {TENANT_ND}\n    output: nd\n    format: o365\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 500ms\n\
         outputs:\n  es:\n    type: http\n    format: elasticsearch\n    url: '{es}'\n\
         \x20 nd:\n    type: http\n    format: ndjson\n    url: '{nd}'\n\
         pipeline:\n  workers: {WORKERS}\n  lease: 8s\n  batch_records: {BATCH}\n\
         store:\n  type: postgres\n  url: {db}\n  sslmode: disable\n  pool_size: 4\n  tenant_lease: 6s\n",
        b = emu.base_url(),
        ca = ca.display(),
    )
}

/// Publishes one wave of records in every Graph feed of `tenant`, their times spread from
/// `minutes_ago.0` to `minutes_ago.1` minutes ago (waves apart in time fill pages of their own).
async fn publish_wave(emu: &Emulator, tenant: &str, minutes_ago: (i64, i64)) {
    let now = emu.now();
    for (feed, n) in [
        ("sign_ins", 1000),
        ("directory_audits", 1000),
        ("message_trace", 300),
        ("service_health", 30),
    ] {
        emu.graph_generate(GraphGenerate {
            tenant_id: tenant.into(),
            feed: feed.into(),
            records: n,
            from: Some(now - chrono::TimeDelta::minutes(minutes_ago.0)),
            to: Some(now - chrono::TimeDelta::minutes(minutes_ago.1)),
            recipients: Some(2),
        })
        .await
        .unwrap();
    }
}

/// Every Graph record published for `tenant`, keyed as the output is counted.
async fn published(emu: &Emulator, tenant: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for (feed, ids) in emu.graph_published(tenant).await {
        let ct = GraphFeed::from_config_name(&feed).unwrap().content_type();
        keys.extend(ids.iter().map(|id| graph_key(tenant, ct, id)));
    }
    keys
}

/// The Graph key of a delivered event (tenant, feed, identity).
fn key_of(event: &Value) -> String {
    let text = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or_default();
    graph_key(
        text("o365.meta.tenant_id"),
        text("o365.meta.content_type"),
        text("o365.meta.record_id"),
    )
}

/// Keys of the Elasticsearch documents, with how often each is there (documents by `_id`: more
/// than one would be one record under two ids).
fn es_keys(es: &HttpReceiver) -> HashMap<String, u32> {
    counts(
        es.state
            .docs
            .lock()
            .unwrap()
            .values()
            .map(|(_, d)| key_of(d)),
    )
}

/// Keys of the NDJSON events in arrival order.
fn nd_events(nd: &HttpReceiver) -> Vec<String> {
    nd.state.events.lock().unwrap().iter().map(key_of).collect()
}

fn counts(keys: impl IntoIterator<Item = String>) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for k in keys {
        *out.entry(k).or_insert(0) += 1;
    }
    out
}

/// A Graph page being delivered: its queue seq, the replica holding its lease, records accepted
/// so far and records in all.
#[derive(Debug, Clone)]
struct InFlight {
    seq: i64,
    tenant: String,
    owner: String,
    delivered: i64,
    total: i64,
}

/// The carried (Graph) pages under a live lease, read from the shared database.
async fn in_flight(db: &str) -> Vec<InFlight> {
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let rows = sqlx::query(
        "SELECT seq, lower(tenant_id) AS tenant, lease_owner, delivered,
                json_array_length(records::json)::bigint AS total
         FROM o365_queue
         WHERE records IS NOT NULL AND lease_owner IS NOT NULL AND lease_until_ms > o365_now_ms()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    rows.iter()
        .map(|r| InFlight {
            seq: r.get("seq"),
            tenant: r.get("tenant"),
            owner: r.get("lease_owner"),
            delivered: r.get("delivered"),
            total: r.get("total"),
        })
        .collect()
}

/// Whether the queue item `seq` is still queued, and whether it was dead-lettered.
async fn queued_or_dead(db: &str, seq: i64) -> (bool, bool) {
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let mut found = [false; 2];
    for (i, table) in ["o365_queue", "o365_dead"].iter().enumerate() {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE seq = $1"))
            .bind(seq)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        found[i] = n > 0;
    }
    let _ = conn.close().await;
    (found[0], found[1])
}

/// Waits for an NDJSON tenant's page on a live replica with more records accepted than all the
/// kills together may repeat (so a resume from its first record would break the bound on its own)
/// and at least three batches still to send; returns it.
async fn page_to_kill_in(db: &str, live: &[String]) -> InFlight {
    let found = std::sync::Mutex::new(None);
    let nd = TENANT_ND.to_ascii_lowercase();
    support::wait_for(
        Duration::from_secs(120),
        "an NDJSON page half delivered by a live replica",
        || async {
            let page = in_flight(db).await.into_iter().find(|p| {
                p.tenant == nd
                    && live.contains(&p.owner)
                    && p.delivered > (KILLS as u64 * 2 * WORKERS * BATCH) as i64
                    && p.total - p.delivered >= 3 * BATCH as i64
            });
            let hit = page.is_some();
            *found.lock().unwrap() = page;
            hit
        },
    )
    .await;
    found.into_inner().unwrap().unwrap()
}

/// Updates the first service health issue of `tenant` in place once its first version is out
/// (Microsoft keeps only the latest version: one never read is not missing).
async fn update_first_issue(emu: &Emulator, tenant: &str, delivered: impl Fn(&str) -> bool) {
    let id = emu.graph_published(tenant).await["service_health"][0].clone();
    let key = graph_key(tenant, "Graph.ServiceHealth", &id);
    support::wait_for(
        Duration::from_secs(120),
        "the issue's first version",
        || {
            let found = delivered(&key);
            async move { found }
        },
    )
    .await;
    emu.graph_update(GraphUpdate {
        tenant_id: tenant.into(),
        id: id.split('@').next().unwrap().to_owned(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_every_graph_record_once_across_a_kill_mid_page() {
    let pg = Postgres::start();
    let db = pg.create_database().await;
    let emu = support::emulator(|c| {
        c.tenants
            .push(TenantSpec::with_secret(TENANT_ND, CLIENT, SECRET));
    })
    .await;
    // A replica taking a tenant over starts with a fresh request budget; Microsoft's quotas are
    // not what is tested here (tests/graph.rs covers them).
    emu.graph_faults(GraphFaults {
        identity_per_10s: Some(1000),
        trace_per_5min: Some(10_000),
        ..GraphFaults::default()
    })
    .await;
    let es = HttpReceiver::start();
    let nd = HttpReceiver::start();
    for r in [&es, &nd] {
        r.state
            .delay_ms
            .store(RECEIVER_DELAY_MS, std::sync::atomic::Ordering::SeqCst);
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = support::write_certs(&emu, dir.path());
    let setups: Vec<support::Setup> = (0..2)
        .map(|i| {
            let d = dir.path().join(format!("r{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let yaml = replica_yaml(&emu, &ca, &db, &es.url(""), &nd.url(""));
            support::custom_setup(&d, &yaml, &d.join("unused"))
        })
        .collect();
    for t in [TENANT, TENANT_ND] {
        publish_wave(&emu, t, (40, 30)).await;
    }
    let mut replicas: Vec<Collector> = setups.iter().map(Collector::spawn).collect();
    let mut tokens = vec![String::new(); replicas.len()];
    support::wait_for(
        Duration::from_secs(60),
        "both replicas connected",
        || async {
            replicas
                .iter()
                .all(|c| postgres::replica_token(&c.logs()).is_some())
        },
    )
    .await;
    for (t, c) in tokens.iter_mut().zip(&replicas) {
        *t = postgres::replica_token(&c.logs()).unwrap();
    }

    for kill in 0..KILLS {
        if kill == 1 {
            // An issue updated in place (a new record of its own) and a second wave, late
            // (before the cursors): listed in the overlap by whoever holds each tenant now.
            update_first_issue(&emu, TENANT, |k| es_keys(&es).contains_key(k)).await;
            update_first_issue(&emu, TENANT_ND, |k| nd_events(&nd).iter().any(|e| e == k)).await;
            for t in [TENANT, TENANT_ND] {
                publish_wave(&emu, t, (20, 10)).await;
            }
        }
        let page = page_to_kill_in(&db, &tokens).await;
        let victim = tokens.iter().position(|t| *t == page.owner).unwrap();
        replicas[victim].kill();
        // The kill landed inside the page: it is still the dead replica's, part delivered.
        let after = in_flight(&db).await;
        let held = after.iter().find(|p| p.seq == page.seq);
        assert!(
            held.is_some_and(|p| p.owner == page.owner && p.delivered < p.total),
            "kill {kill} did not land inside page {page:?}: {held:?}"
        );
        println!(
            "kill {kill}: replica {victim} killed in page {} at {}/{} records",
            page.seq,
            held.unwrap().delivered,
            page.total
        );
        // Only the other replica is alive: it takes the page once the dead one's lease lapsed
        // and finishes it.
        support::wait_for(
            Duration::from_secs(120),
            "the other replica finishing the page",
            || async { !queued_or_dead(&db, page.seq).await.0 },
        )
        .await;
        assert!(
            !queued_or_dead(&db, page.seq).await.1,
            "page {} dead-lettered",
            page.seq
        );
        replicas[victim] = Collector::spawn(&setups[victim]);
        let restarted = &replicas[victim];
        support::wait_for(Duration::from_secs(60), "the replica restarted", || async {
            postgres::replica_token(&restarted.logs()).is_some()
        })
        .await;
        tokens[victim] = postgres::replica_token(&replicas[victim].logs()).unwrap();
    }

    let want_es = published(&emu, TENANT).await;
    let want_nd = published(&emu, TENANT_ND).await;
    support::wait_for(
        Duration::from_secs(300),
        "every Graph record in both outputs",
        || async {
            let (got_es, got_nd) = (es_keys(&es), counts(nd_events(&nd)));
            want_es.iter().all(|k| got_es.contains_key(k))
                && want_nd.iter().all(|k| got_nd.contains_key(k))
        },
    )
    .await;
    for r in &mut replicas {
        let status = r.terminate(Duration::from_secs(30));
        assert!(status.success(), "{}", r.logs());
    }
    assert!(es.violations().is_empty(), "{:?}", es.violations());
    assert!(nd.violations().is_empty(), "{:?}", nd.violations());

    // Elasticsearch: each Graph record once, under one `_id`.
    support::assert_exactly_once(&want_es, &es_keys(&es));
    // …and sent again (answered 409) only as whole batches in flight at a kill.
    let es_resent = es.resent();
    assert!(
        es_resent.requests <= (KILLS * WORKERS as usize * 2) as u64 && es_resent.mixed == 0,
        "Elasticsearch: {es_resent:?} after {KILLS} kills"
    );
    // NDJSON: nothing missing or foreign; a repeat only from a batch in flight at a kill (per
    // worker of the killed replica: the batch being sent and the one whose progress was being
    // written). Each request is one batch.
    let events = nd_events(&nd);
    let nd_counts = counts(events.iter().cloned());
    assert!(
        want_nd.iter().all(|k| nd_counts.contains_key(k)),
        "NDJSON: records missing"
    );
    assert_eq!(nd_counts.len(), want_nd.len(), "NDJSON: foreign records");
    let sizes = nd.state.request_sizes.lock().unwrap().clone();
    let (mut seen, mut at, mut repeated_batches, mut repeated_records) = (HashSet::new(), 0, 0, 0);
    for n in sizes {
        let again = events[at..at + n]
            .iter()
            .filter(|k| !seen.insert(k.as_str()))
            .count();
        at += n;
        repeated_records += again;
        repeated_batches += usize::from(again > 0);
    }
    let bound = KILLS * WORKERS as usize * 2;
    println!(
        "{} + {} Graph records; NDJSON repeated {repeated_records} records in {repeated_batches} \
         batches after {KILLS} kills (bound {bound} batches)",
        want_es.len(),
        want_nd.len()
    );
    assert!(
        repeated_batches <= bound,
        "NDJSON: {repeated_batches} batches repeated after {KILLS} kills (bound {bound})"
    );
}
