//! The embedded store through the `Store` trait, in this process: enqueue (batches of 1 and 100,
//! duplicates), claim + complete (alone and from 8 tasks), batch claims, `stats`, reopen and prune,
//! on a queue filled to `queued` items first. Prints per operation the median throughput of the
//! runs and the per-call latency percentiles over all runs, then the peak RSS and the file size.
//! The behaviour the calls must show is tested in tests/store.rs; this program only times them.
//!
//! `cargo bench --bench store -- [queued=100000] [runs=3]`; with `claims=N` only the record dedup:
//! N batches of 1,000 new record keys claimed (`Store::claim_records`), records/s and file bytes
//! per record; the keys are created 1,400 a minute, each up to `spread=M` minutes earlier
//! (default 1; the emulator's blobs hold records of the last 30 minutes).

mod support;

use std::time::{Duration, Instant, SystemTime};

use o365_collector::output::time_ordered;
use o365_collector::store::conformance::content;
use o365_collector::store::{ContentRef, EmbeddedStore, Store};

/// 2026-12-01T00:00 in minutes since 1970: when the claimed records were created.
const START_MINUTE: u32 = 29_934_720;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LEASE: Duration = Duration::from_secs(300);

fn main() {
    let args = support::Args::from_env();
    let queued: usize = args.value("queued", 100_000);
    let runs: usize = args.value("runs", 3);
    let claims: usize = args.value("claims", 0);
    if claims > 0 {
        let spread: u32 = args.value("spread", 1);
        support::runtime().block_on(measure_claims(claims, spread));
        return;
    }
    support::runtime().block_on(measure(queued.max(1000), runs.max(1)));
}

/// `claims` batches of 1,000 new record keys, one blob each.
async fn measure_claims(batches: usize, spread: u32) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    let size = || {
        std::fs::metadata(store.path())
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let before = size();
    let mut n = 0u64;
    let mut lat = Vec::with_capacity(batches);
    let t = Instant::now();
    for b in 0..batches {
        // As the collector makes them (`time_ordered` by CreationTime): 2 million records a
        // day is about 1,400 a minute.
        let keys: Vec<u128> = (0..1000)
            .map(|_| {
                n += 1;
                let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let hash = (u128::from(x) << 64) | u128::from(x.rotate_left(17) ^ n);
                let spread_by = (x >> 40) as u32 % spread.max(1);
                time_ordered(START_MINUTE + (n / 1400) as u32 - spread_by, hash)
            })
            .collect();
        let call = Instant::now();
        store
            .claim_records(&format!("blob-{b}"), keys, Duration::from_secs(86400))
            .await
            .expect("claim");
        lat.push(call.elapsed());
    }
    let took = t.elapsed();
    lat.sort();
    println!(
        "claim_records: {} records in {:.2} s = {:.0} records/s; per batch of 1,000 p50 {:.2} ms p99 {:.2} ms; file +{:.0} bytes/record",
        n,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        lat[lat.len() / 2].as_secs_f64() * 1000.0,
        lat[lat.len() * 99 / 100].as_secs_f64() * 1000.0,
        (size() - before) as f64 / n as f64
    );
}

async fn measure(queued: usize, runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || EmbeddedStore::open(dir.path()).expect("open store");
    let store = open();
    let mut next_id = 0u64;
    let mut fresh = |n: usize| -> Vec<ContentRef> {
        (0..n)
            .map(|_| {
                next_id += 1;
                content(&format!("bench-{next_id:012}"))
            })
            .collect()
    };

    let t = Instant::now();
    for _ in 0..queued / 1000 {
        store.enqueue(fresh(1000)).await.expect("enqueue");
    }
    report("enqueue, batch 1000 (fill)", queued, t.elapsed());

    let mut single = Bench::new("enqueue, batch of 1", "ids");
    let mut hundred = Bench::new("enqueue, batch of 100", "ids");
    let mut dup = Bench::new("enqueue, 100 duplicates", "ids");
    let mut claim_complete = Bench::new("claim(1) + complete", "blobs");
    let mut claim_batch = Bench::new("claim(32), no complete", "blobs");
    let mut parallel = Bench::new("8 tasks claim(1)+complete", "blobs");
    for _ in 0..runs {
        let run = single.start();
        for _ in 0..200 {
            let t = Instant::now();
            store.enqueue(fresh(1)).await.expect("enqueue");
            single.op(t, 1);
        }
        single.finish(run);

        let run = hundred.start();
        let mut last = Vec::new();
        for _ in 0..50 {
            let batch = fresh(100);
            last.clone_from(&batch);
            let t = Instant::now();
            store.enqueue(batch).await.expect("enqueue");
            hundred.op(t, 100);
        }
        hundred.finish(run);

        // What is timed must be what it says: all duplicates, full claims.
        let run = dup.start();
        for _ in 0..50 {
            let t = Instant::now();
            let out = store.enqueue(last.clone()).await.expect("enqueue");
            dup.op(t, 100);
            assert_eq!(out.duplicates, 100);
        }
        dup.finish(run);

        let run = claim_complete.start();
        for _ in 0..200 {
            let t = Instant::now();
            let c = store.claim(1, LEASE).await.expect("claim");
            store.complete(c[0].seq).await.expect("complete");
            claim_complete.op(t, 1);
        }
        claim_complete.finish(run);

        let run = claim_batch.start();
        for _ in 0..100 {
            let t = Instant::now();
            let c = store.claim(32, LEASE).await.expect("claim");
            claim_batch.op(t, 32);
            assert_eq!(c.len(), 32);
        }
        claim_batch.finish(run);

        let run = parallel.start();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for _ in 0..50 {
                    let t = Instant::now();
                    let c = store.claim(1, LEASE).await.expect("claim");
                    store.complete(c[0].seq).await.expect("complete");
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        for task in tasks {
            for l in task.await.expect("task") {
                parallel.latencies.push(l);
                parallel.ops += 1;
            }
        }
        parallel.finish(run);
    }
    let stats = store.stats().await.expect("stats");
    println!(
        "queue during runs: ~{} items ({} leased)",
        stats.pending + stats.leased,
        stats.leased
    );
    for b in [
        &mut single,
        &mut hundred,
        &mut dup,
        &mut claim_complete,
        &mut claim_batch,
        &mut parallel,
    ] {
        b.print();
    }
    let t = Instant::now();
    let stats = store.stats().await.expect("stats");
    println!(
        "stats() with {} leased: {:.2} ms",
        stats.leased,
        t.elapsed().as_secs_f64() * 1000.0
    );

    let t = Instant::now();
    drop(store);
    let store = open();
    println!(
        "reopen (releases {} leases): {:.1} ms",
        stats.leased,
        t.elapsed().as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    let pruned = store
        .prune(SystemTime::now() + Duration::from_secs(60), usize::MAX)
        .await
        .expect("prune");
    report("prune dedup entries", pruned as usize, t.elapsed());
    match o365_collector::telemetry::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: not available"),
    }
    let size = std::fs::metadata(store.path()).expect("store file").len();
    println!("file size: {:.1} MiB", size as f64 / 1_048_576.0);
}

/// Throughput per run (median reported) and per-call latencies over all runs.
struct Bench {
    name: &'static str,
    unit: &'static str,
    rates: Vec<f64>,
    latencies: Vec<Duration>,
    ops: usize,
}

impl Bench {
    fn new(name: &'static str, unit: &'static str) -> Self {
        Bench {
            name,
            unit,
            rates: Vec::new(),
            latencies: Vec::new(),
            ops: 0,
        }
    }

    fn start(&mut self) -> Instant {
        self.ops = 0;
        Instant::now()
    }

    fn op(&mut self, started: Instant, items: usize) {
        self.latencies.push(started.elapsed());
        self.ops += items;
    }

    fn finish(&mut self, run: Instant) {
        self.rates
            .push(self.ops as f64 / run.elapsed().as_secs_f64());
    }

    fn print(&mut self) {
        let mut ms: Vec<f64> = self
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| support::percentile(&ms, p);
        println!(
            "{:<28} {:>9.0} {}/s (median of {})  per call p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
            self.name,
            support::median(&mut self.rates),
            self.unit,
            self.rates.len(),
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
    }
}

fn report(what: &str, n: usize, took: Duration) {
    println!(
        "{what}: {n} in {:.2} s = {:.0}/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
