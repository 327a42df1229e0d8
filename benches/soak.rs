//! Months in minutes: the store under a year's traffic pattern with an injected clock, to show
//! that retention keeps it flat. One tenant, each simulated day: `records` audit records in
//! 1,000-record blobs (each blob enqueued, claimed, its records claimed by the record dedup,
//! completed) and `graph` Graph record identities in 1,000-record pages (enqueued, claimed,
//! completed), spread over 144 ten-minute slots; after each slot the clock moves 10 minutes and the
//! retention prune runs as the collector runs it (`store.dedup_retention` 8 days, record dedup
//! window 24 hours, claims kept 7 days + 1 hour). Printed per simulated day: the store's size on disk (the embedded store's file;
//! PostgreSQL's tables with indexes), its dedup entries and record claims, and the wall time; at
//! the end, peak RSS.
//!
//! The embedded store's clock is moved with `EmbeddedStore::advance_clock`; PostgreSQL's (the
//! `o365_now_ms()` the schema defines) is redefined in the bench's own database to add an offset.
//!
//! `cargo bench --bench soak -- [days=40] [records=2000000] [graph=1000000] [store=embedded|postgres|both] [dir=PATH]`
//!
//! `dir` holds the embedded store (default: a temporary directory). On a tmpfs (`dir=/dev/shm`)
//! its fsyncs cost nothing, so 40 days take minutes instead of hours; sizes are the same.
//! PostgreSQL's server is the tests' own (`tests/support/postgres.rs`) with `fsync`,
//! `synchronous_commit` and `full_page_writes` turned off, the same trade (`pg_sync=on` keeps
//! them on).
//!
//! Also printed per day: the process's resident memory (`/proc/self/status`: all of it, and the
//! anonymous part, i.e. the heap) and where the day's wall time went (enqueue, claim, record
//! claims, complete, prune). The bench allocates with mimalloc, as the binary does (the
//! `system-allocator` feature: glibc's malloc).

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary's allocator (`src/main.rs`), so that the memory printed is the collector's.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use o365_collector::output::time_ordered;
use o365_collector::store::retention::{RetentionConfig, prune_once};
use o365_collector::store::{
    ContentRef, EmbeddedStore, InlineRecord, PostgresStore, Store, record_claim_key,
};

const TENANT: &str = "41463f53-8812-40f4-890f-865bf6e35190";
const SLOTS_PER_DAY: u64 = 144;
const SLOT: Duration = Duration::from_secs(600);
const PER_BLOB: u64 = 1_000;

struct Args {
    days: u64,
    records: u64,
    graph: u64,
    stores: Vec<&'static str>,
    dir: Option<std::path::PathBuf>,
    pg_sync: bool,
}

fn args() -> Args {
    let mut a = Args {
        days: 40,
        records: 2_000_000,
        graph: 1_000_000,
        stores: vec!["embedded", "postgres"],
        dir: None,
        pg_sync: false,
    };
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with("--")) {
        let (k, v) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        match k {
            "days" => a.days = v.parse().expect("days=N"),
            "records" => a.records = v.parse().expect("records=N"),
            "graph" => a.graph = v.parse().expect("graph=N"),
            "dir" => a.dir = Some(v.into()),
            "pg_sync" => a.pg_sync = v == "on",
            "store" => {
                a.stores = match v {
                    "embedded" => vec!["embedded"],
                    "postgres" => vec!["postgres"],
                    _ => vec!["embedded", "postgres"],
                }
            }
            _ => panic!("unknown argument {arg}"),
        }
    }
    a
}

/// The simulated clock: real time plus what the bench advanced.
struct Clock {
    advanced: Duration,
}

impl Clock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.advanced
    }
}

/// A store under soak: the store, and how to move its clock and read its size.
trait Soaked {
    type S: Store;
    fn store(&self) -> &Self::S;
    async fn advance(&self, by: Duration);
    async fn sizes(&self) -> String;
    /// The `now` to prune with at simulated time `simulated`.
    fn prune_now(&self, simulated: SystemTime) -> SystemTime {
        simulated
    }
}

impl Soaked for EmbeddedStore {
    type S = EmbeddedStore;
    fn store(&self) -> &EmbeddedStore {
        self
    }
    async fn advance(&self, by: Duration) {
        self.advance_clock(by).expect("advance the clock");
    }
    async fn sizes(&self) -> String {
        let f = self.footprint().await.expect("footprint");
        format!("file {:.1} MiB", f.bytes as f64 / (1 << 20) as f64)
    }
}

/// The PostgreSQL store and a connection to its database for the clock and the sizes.
struct Pg {
    store: PostgresStore,
    pool: sqlx::PgPool,
}

impl Soaked for Pg {
    type S = PostgresStore;
    fn store(&self) -> &PostgresStore {
        &self.store
    }
    async fn advance(&self, by: Duration) {
        sqlx::query("UPDATE bench_clock SET offset_ms = offset_ms + $1")
            .bind(by.as_millis() as i64)
            .execute(&self.pool)
            .await
            .expect("advance the database clock");
    }
    async fn sizes(&self) -> String {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT t, pg_total_relation_size(t::regclass) FROM unnest(ARRAY['o365_queue',
               'o365_dedup', 'o365_records', 'o365_dead', 'o365_cursors']) AS t",
        )
        .fetch_all(&self.pool)
        .await
        .expect("table sizes");
        rows.iter()
            .map(|(t, b)| format!("{t} {:.1} MiB", *b as f64 / (1 << 20) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// PostgreSQL's store sends a prune's cut-off relative to this process's clock and the
    /// database adds it to its own, which is already advanced: so the real time here (the
    /// simulated one would prune at half the retention).
    fn prune_now(&self, _simulated: SystemTime) -> SystemTime {
        SystemTime::now()
    }
}

/// A key for the `n`-th record of the run (distinct, spread like hashes).
fn hash(n: u64) -> u128 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    let y = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (u128::from(x) << 64) | u128::from(y ^ (y >> 29))
}

/// The record dedup's key of the `n`-th record of the run, created at `now` (as the collector
/// makes it: [`time_ordered`] by its CreationTime).
fn key(n: u64, now: SystemTime) -> u128 {
    let minute = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60;
    record_claim_key(TENANT, time_ordered(minute as u32, hash(n)))
}

async fn soak<T: Soaked>(name: &str, soaked: &T, a: &Args) {
    let store = soaked.store();
    let mut clock = Clock {
        advanced: Duration::ZERO,
    };
    let retention = RetentionConfig::default();
    let blobs_per_slot = a.records.div_ceil(PER_BLOB).div_ceil(SLOTS_PER_DAY);
    let pages_per_slot = a.graph.div_ceil(PER_BLOB).div_ceil(SLOTS_PER_DAY);
    println!(
        "{name}: {} days, {} audit records/day ({blobs_per_slot} blobs of {PER_BLOB} per 10 minutes), {} Graph identities/day ({pages_per_slot} pages per 10 minutes)",
        a.days,
        blobs_per_slot * PER_BLOB * SLOTS_PER_DAY,
        pages_per_slot * PER_BLOB * SLOTS_PER_DAY
    );
    println!(
        "| day | store on disk | dedup entries | record claims | pruned today (ids / claims) | RSS / anon MiB | s: enqueue / claim / records / complete / prune | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let (mut blob_no, mut record_no, mut identity_no) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for day in 1..=a.days {
        let day_started = Instant::now();
        let (mut pruned_ids, mut pruned_claims) = (0, 0);
        let mut spent = Phases::default();
        for _ in 0..SLOTS_PER_DAY {
            // Audit blobs: announced, claimed, records claimed, completed.
            let blobs: Vec<ContentRef> = (0..blobs_per_slot)
                .map(|_| {
                    blob_no += 1;
                    content(&format!("soak{blob_no:012}"), None)
                })
                .collect();
            let t = Instant::now();
            store.enqueue(blobs).await.expect("enqueue");
            spent.enqueue += t.elapsed();
            // Graph pages carry their records.
            let pages: Vec<ContentRef> = (0..pages_per_slot)
                .map(|p| {
                    let records = (0..PER_BLOB)
                        .map(|_| {
                            identity_no += 1;
                            InlineRecord {
                                key: format!(
                                    "{TENANT}/Graph.SignIns/{:032x}",
                                    hash(u64::MAX - identity_no)
                                ),
                                json: "{}".into(),
                            }
                        })
                        .collect();
                    content(&format!("page{identity_no}-{p}"), Some(records))
                })
                .collect();
            let t = Instant::now();
            store.enqueue(pages).await.expect("enqueue pages");
            spent.enqueue += t.elapsed();
            let t = Instant::now();
            let claimed = store
                .claim((blobs_per_slot + pages_per_slot) as usize, SLOT)
                .await
                .expect("claim");
            spent.claim += t.elapsed();
            for c in claimed {
                if c.content.records.is_none() {
                    let keys: Vec<u128> = (0..PER_BLOB)
                        .map(|_| {
                            record_no += 1;
                            key(record_no, clock.now())
                        })
                        .collect();
                    let t = Instant::now();
                    store
                        .claim_records(&c.content.content_id, keys, retention.record_dedup_window)
                        .await
                        .expect("claim records");
                    spent.records += t.elapsed();
                }
                let t = Instant::now();
                store.complete(c.seq).await.expect("complete");
                spent.complete += t.elapsed();
            }
            clock.advanced += SLOT;
            soaked.advance(SLOT).await;
            let t = Instant::now();
            let (ids, claims) = prune_once(store, &retention, soaked.prune_now(clock.now()))
                .await
                .expect("prune");
            spent.prune += t.elapsed();
            pruned_ids += ids;
            pruned_claims += claims;
        }
        let f = store.footprint().await.expect("footprint");
        let (rss, anon) = memory_mib();
        println!(
            "| {day} | {} | {} | {} | {pruned_ids} / {pruned_claims} | {rss:.0} / {anon:.0} | {spent} | {:.0} |",
            soaked.sizes().await,
            f.dedup_entries,
            f.record_entries,
            day_started.elapsed().as_secs_f64()
        );
    }
    println!(
        "{name}: {} days in {:.0} s",
        a.days,
        started.elapsed().as_secs_f64()
    );
}

/// Where a simulated day's wall time went.
#[derive(Default)]
struct Phases {
    enqueue: Duration,
    claim: Duration,
    records: Duration,
    complete: Duration,
    prune: Duration,
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |d: Duration| d.as_secs_f64();
        write!(
            f,
            "{:.0} / {:.0} / {:.0} / {:.0} / {:.0}",
            s(self.enqueue),
            s(self.claim),
            s(self.records),
            s(self.complete),
            s(self.prune)
        )
    }
}

/// The process's resident memory now and its anonymous part (heap, stacks), in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("RssAnon:") / 1024.0)
}

fn content(id: &str, records: Option<Vec<InlineRecord>>) -> ContentRef {
    ContentRef {
        tenant_id: TENANT.into(),
        content_type: if records.is_some() {
            "Graph.SignIns".into()
        } else {
            "Audit.General".into()
        },
        content_id: id.into(),
        content_uri: format!(
            "https://manage.office.com/api/v1.0/{TENANT}/activity/feed/audit/{id}"
        ),
        content_created: None,
        content_expiration: None,
        records,
    }
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if a.stores.contains(&"embedded") {
            let dir = match &a.dir {
                Some(d) => tempfile::tempdir_in(d).unwrap(),
                None => tempfile::tempdir().unwrap(),
            };
            let store = EmbeddedStore::open(dir.path()).expect("open");
            soak("embedded", &store, &a).await;
        }
        if a.stores.contains(&"postgres") {
            let pg = postgres::Postgres::start();
            let url = pg.create_database().await;
            let store = PostgresStore::connect(&postgres::Postgres::config(&url))
                .await
                .expect("connect");
            let pool = sqlx::PgPool::connect(&url).await.expect("bench connection");
            if !a.pg_sync {
                // Like the embedded store on a tmpfs: what is measured is the store's work, not
                // the disk's flushes. Each is a reload-time setting; ALTER SYSTEM runs alone.
                for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
                    sqlx::raw_sql(&format!("ALTER SYSTEM SET {setting} = off"))
                        .execute(&pool)
                        .await
                        .expect("server setting");
                }
                sqlx::raw_sql("SELECT pg_reload_conf()")
                    .execute(&pool)
                    .await
                    .expect("reload the settings");
            }
            sqlx::raw_sql(
                "CREATE TABLE bench_clock (offset_ms bigint NOT NULL);
                 INSERT INTO bench_clock VALUES (0);
                 CREATE OR REPLACE FUNCTION o365_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
                   AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                             + (SELECT offset_ms FROM bench_clock) $$;",
            )
            .execute(&pool)
            .await
            .expect("inject the clock");
            soak("postgres", &Pg { store, pool }, &a).await;
        }
    });
    match o365_collector::telemetry::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: not available"),
    }
}
