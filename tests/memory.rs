//! Memory and threads do not grow with a blob (ARCHITECTURE invariants 11 and 12): the real binary
//! streams 100,000-record blobs while the test reads its `/proc/PID/status`. A guard against a
//! return of unbounded buffering, not a benchmark (benches/large_blob.rs measures).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

const TYPE: &str = "Audit.Exchange";
/// Records per blob.
const BLOB: u64 = 100_000;
/// Blobs published together, one per worker, so that all of them are in flight at once.
const BLOBS: u64 = 3;
const WORKERS: u64 = BLOBS;
/// The collector's peak resident set may not exceed this: a debug build, whose figure includes
/// the store's page cache (up to 128 MiB, README "Bounds") filling with the 300,000 records'
/// claims, and a machine under load (CI runs other tests beside it: 203 MiB was seen there). Still
/// well below the 305 MiB the three blobs take whole.
const PEAK_LIMIT_MIB: u64 = 240;

/// `key:` of `/proc/PID/status` as a number (kB for the memory lines).
fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Samples the collector's thread count every 20 ms on a thread of its own (whatever the test's
/// runtime is doing), counting the samples taken while records were arriving in the output.
struct ThreadSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl ThreadSampler {
    fn start(pid: u32, events: PathBuf) -> ThreadSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut most, mut streaming) = (0, 0);
            while !flag.load(Ordering::SeqCst) {
                most = most.max(proc_status(pid, "Threads"));
                if std::fs::metadata(&events).is_ok_and(|m| m.len() > 0) {
                    streaming += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (most, streaming)
        });
        ThreadSampler { stop, handle }
    }

    /// Stops sampling: the most threads seen, and how many samples saw records arriving.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// `o365_blobs_completed_total` from the collector's `/metrics`.
async fn blobs_completed(metrics_url: &str) -> u64 {
    let Ok(resp) = reqwest::get(metrics_url).await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("o365_blobs_completed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The size of a published blob as the API serves it, counted while it streams (never held).
async fn blob_bytes(emu: &o365_emulator::Emulator, content_id: &str) -> u64 {
    let mut resp = client(emu)
        .get(format!(
            "{}/api/v1.0/{TENANT}/activity/feed/audit/{content_id}",
            emu.base_url()
        ))
        .bearer_auth(token(emu).await)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "fetch: {}", resp.status());
    let mut n = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        n += chunk.len() as u64;
    }
    n
}

/// Three 100,000-record blobs stream through three workers at once. A collector that held a
/// whole blob (its body, let alone its parsed records or mapped lines) would hold the three
/// bodies together, which the test checks exceeds the limit; a streaming one stays far below. The
/// thread count stays within what README "Bounds" allows for this configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_and_threads_stay_bounded_while_large_blobs_stream() {
    let emu = emulator(|c| {
        c.webhook_max_failures = u32::MAX;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // `raw` maps least: what is measured is the streaming, not the mapping (a debug build).
    let extra = format!("format: raw\npipeline:\n  workers: {WORKERS}\n  lease: 5m\n");
    let s = setup(&emu, dir.path(), &[TYPE], &extra);
    let mut c = Collector::spawn(&s);
    let pid = c.child.id();
    wait_webhooks_enabled(&emu, &[TYPE]).await;

    generate(&emu, TYPE, BLOB * BLOBS, BLOBS).await;
    let published = emu.published(TENANT).await;
    assert_eq!(published.blobs as u64, BLOBS);
    assert_eq!(published.records as u64, BLOB * BLOBS);
    // The limit means something: the blobs' bodies alone, held whole at once, exceed it.
    let one = blob_bytes(&emu, &published.content_ids[0]).await;
    let bodies_mib = one * BLOBS / (1024 * 1024);
    println!(
        "one blob of {BLOB} records is {:.1} MiB of JSON; {BLOBS} held whole: {bodies_mib} MiB",
        one as f64 / (1024.0 * 1024.0)
    );
    assert!(
        bodies_mib > PEAK_LIMIT_MIB,
        "{BLOBS} blobs of {BLOB} records are only {bodies_mib} MiB: a collector holding them \
         whole would pass; publish more or larger blobs"
    );

    // Threads: the runtime's (one per core), 16 blocking, one mapping thread per worker, cores − 1
    // mapping helpers, the file output's compression thread and the main thread (README "Bounds");
    // doubled, so only growth with the input can fail it.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let thread_limit = 2 * (cores + 16 + WORKERS + (cores - 1) + 1 + 1);
    let sampler = ThreadSampler::start(pid, s.events.clone());
    let metrics = admin_url(&c.logs(), "/metrics");
    wait_for(Duration::from_secs(600), "every blob completed", || {
        let alive = c.child.try_wait().unwrap().is_none();
        assert!(alive, "the collector exited\n{}", c.logs());
        let metrics = &metrics;
        async move { blobs_completed(metrics).await >= BLOBS }
    })
    .await;
    let (most_threads, streamed_samples) = sampler.stop();
    let peak_mib = proc_status(pid, "VmHWM") / 1024;
    println!(
        "collector VmHWM {peak_mib} MiB (limit {PEAK_LIMIT_MIB}); at most {most_threads} threads \
         (limit {thread_limit}) in {streamed_samples} samples while streaming"
    );
    assert!(
        streamed_samples > 0,
        "never sampled while the blobs streamed"
    );
    assert!(
        peak_mib <= PEAK_LIMIT_MIB,
        "peak RSS {peak_mib} MiB while {BLOBS} blobs of {BLOB} records streamed (limit \
         {PEAK_LIMIT_MIB} MiB): something holds a blob whole"
    );
    assert!(
        most_threads <= thread_limit,
        "{most_threads} threads while streaming (limit {thread_limit})"
    );
    assert_eq!(
        line_count(&s.events) as u64,
        BLOB * BLOBS,
        "records lost or repeated"
    );
    assert!(
        c.terminate(Duration::from_secs(30)).success(),
        "{}",
        c.logs()
    );
}
