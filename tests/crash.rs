//! Nothing lost, nothing doubled: the collector is SIGKILLed at random moments while 50,000 records
//! flow; after the last restart every published record is in the output exactly once. Then the
//! same while 100,000-record blobs stream (each blob goes out in many batches and a restart resumes
//! it after its last recorded batch): file and Elasticsearch exactly once, NDJSON over HTTP with
//! at most the batches in flight at each kill repeated.

mod outputs_support;
mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use outputs_support::http::HttpReceiver;
use support::*;

/// How one crash run goes: records published in waves while the collector is SIGKILLed `kills`
/// times at seeded random moments; `extra_yaml` continues the file output's settings.
struct Run {
    records: u64,
    kills: usize,
    seed: u64,
    extra_yaml: &'static str,
}

/// Runs it; returns the published ids and the setup, after the last restart delivered every record
/// (counting rotated files too) and the collector stopped cleanly.
async fn crash_run(run: Run) -> (Vec<String>, Setup, tempfile::TempDir) {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(run.seed);
    println!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = Lcg(seed);

    let emu = emulator(quick_redelivery).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}pipeline:\n  workers: 4\n  lease: 30s\n", run.extra_yaml);
    let s = setup(&emu, dir.path(), &ALL_TYPES, &extra);
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &ALL_TYPES).await;

    // Publish in waves between kills so that kills land while notifications arrive, blobs are
    // fetched and the output file is written.
    let waves = run.kills as u64 / 2;
    let per_wave = run.records / waves;
    let mut published = 0u64;
    for kill in 0..run.kills {
        if (kill as u64) < waves {
            let ct = ALL_TYPES[kill % ALL_TYPES.len()];
            let n = if kill as u64 == waves - 1 {
                run.records - published
            } else {
                per_wave
            };
            generate(&emu, ct, n, n.div_ceil(400)).await;
            published += n;
        }
        // Random moment: this delay picks when to crash, it synchronises nothing.
        tokio::time::sleep(Duration::from_millis(rng.range(20, 600))).await;
        c.kill();
        c = Collector::spawn(&s);
    }
    assert_eq!(published, run.records);

    let ids = published_ids(&emu).await;
    assert_eq!(ids.len() as u64, run.records);
    wait_for(
        Duration::from_secs(240),
        "every record after the last restart",
        || async { line_count_with_rotated(&s.events) >= ids.len() },
    )
    .await;
    let status = c.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", c.logs());
    (ids, s, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let (ids, s, _dir) = crash_run(Run {
        records: 50_000,
        kills: 24,
        seed: 20261125,
        extra_yaml: "",
    })
    .await;
    assert_exactly_once(&ids, &output_ids(&s.events));
}

/// The same with a file output that rotates every few blobs and gzips rotated files in the
/// background: kills land mid-rotation and mid-compression, and exactly-once holds across all files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_rotation_and_gzip_loses_and_doubles_nothing() {
    let (ids, s, _dir) = crash_run(Run {
        records: 30_000,
        kills: 20,
        seed: 20261126,
        extra_yaml: "    rotate_bytes: 512KiB\n    compression: gzip\n",
    })
    .await;
    let rotated = o365_collector::output::file::rotated_files(&s.events).unwrap();
    println!(
        "{} rotated files ({} gzip)",
        rotated.len(),
        rotated.iter().filter(|f| f.gzip).count()
    );
    assert!(rotated.len() >= 5, "only {} rotations", rotated.len());
    assert_exactly_once(&ids, &output_ids_with_rotated(&s.events));
}

/// Records per blob in the streaming runs.
const BLOB: u64 = 100_000;
/// Small batches, so that a kill lands in the middle of a blob with many batches behind it.
const BATCH: u64 = 200;
const STREAM_WORKERS: u64 = 2;
const STREAM_KILLS: usize = 20;
const STREAM_TYPES: [&str; 2] = ["Audit.Exchange", "Audit.SharePoint"];

/// Where the streaming run delivers.
enum Sink {
    File(LineCounter),
    /// The http output in `format` (`elasticsearch` or `ndjson`) into a real receiver.
    Http(Box<HttpReceiver>, &'static str),
}

impl Sink {
    /// The output entries and settings appended to the test config.
    fn yaml(&self) -> String {
        let output = match self {
            Sink::File(_) => String::new(),
            Sink::Http(r, format) => format!(
                "  siem:\n    type: http\n    format: {format}\n    url: '{}'\n",
                r.url("")
            ),
        };
        // `raw` maps least (the mapping is not what is tested here, and unoptimised test builds
        // map slowly); Elasticsearch keeps `o365`, whose `@timestamp` names the index.
        let format = match self {
            Sink::Http(_, "elasticsearch") => "o365",
            _ => "raw",
        };
        format!(
            "{output}format: {format}\npipeline:\n  workers: {STREAM_WORKERS}\n  lease: 30s\n  batch_records: {BATCH}\n"
        )
    }

    /// Records at the destination so far, repeats included (cheap enough to poll).
    fn count(&mut self, s: &Setup) -> u64 {
        match self {
            Sink::File(lines) => lines.count(&s.events),
            Sink::Http(r, _) => {
                let docs = r.state.docs.lock().unwrap().len();
                (docs + r.state.events.lock().unwrap().len()) as u64
            }
        }
    }

    /// Whether `want` different records arrived (the file: lines, as it holds each once).
    fn has_all(&mut self, s: &Setup, want: u64) -> bool {
        match self {
            Sink::File(_) => self.count(s) >= want,
            Sink::Http(..) => self.ids(s).len() as u64 >= want,
        }
    }

    /// Record ids at the destination with how often each arrived.
    fn ids(&self, s: &Setup) -> HashMap<String, u32> {
        match self {
            Sink::File(_) => output_ids(&s.events),
            Sink::Http(r, _) => {
                let mut out = HashMap::new();
                for id in r.record_ids() {
                    *out.entry(id).or_insert(0) += 1;
                }
                out
            }
        }
    }
}

/// Counts the lines of a growing file, reading only what was added since the last call.
#[derive(Default)]
struct LineCounter {
    offset: u64,
    lines: u64,
}

impl LineCounter {
    fn count(&mut self, path: &std::path::Path) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else {
            return self.lines;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            self.offset += buf.len() as u64;
            self.lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        }
        self.lines
    }
}

/// What a streaming run leaves to check.
struct Streamed {
    published: Vec<String>,
    out: HashMap<String, u32>,
    kills: usize,
}

/// Notifications are redelivered within a second of the restarted collector listening. Microsoft
/// disables a webhook only after far longer than a restart; with retries this quick the emulator's
/// default of 8 consecutive failures (~6 s) could disable it during one slow restart on a loaded
/// machine, and then only the keeper's periodic check (minutes) would find the next blob: these
/// tests are about kills, not that path (tests/lifecycle.rs covers it).
fn quick_redelivery(c: &mut o365_collector::emulator::EmulatorConfig) {
    c.webhook_retry_base = Duration::from_millis(50);
    c.webhook_max_backoff = Duration::from_secs(1);
    c.webhook_max_failures = u32::MAX;
}

/// Publishes 100,000-record blobs (another whenever less than half a blob is left to deliver) and
/// SIGKILLs the collector `STREAM_KILLS` times, each at a random moment after the restarted
/// process has delivered something, i.e. while blobs stream. Then waits for every record.
async fn kill_while_streaming(sink: &mut Sink, seed: u64) -> Streamed {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    println!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = Lcg(seed);
    let emu = emulator(quick_redelivery).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &STREAM_TYPES, &sink.yaml());
    if matches!(sink, Sink::Http(..)) {
        select_output(&s, "siem");
    }
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &STREAM_TYPES).await;
    let mut published = 0u64;
    // Fetches before the running process started: it may fetch (and even finish) its blobs before
    // the loop below looks, so the count is taken before each spawn, not after.
    let mut fetched = emu.content_fetches().await;
    for kill in 0..STREAM_KILLS {
        let at_restart = sink.count(&s);
        if at_restart + BLOB / 2 > published {
            generate(&emu, STREAM_TYPES[kill % 2], BLOB, 1).await;
            published += BLOB;
        }
        // Streaming under this process: it fetched a blob and the output grew (a receiver may
        // still take in a request of the killed process, so growth alone does not tell).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let grew = sink.count(&s) > at_restart;
            if grew && emu.content_fetches().await > fetched {
                break;
            }
            if std::time::Instant::now() > deadline {
                let logs = c.logs();
                let tail: Vec<&str> = logs.lines().rev().take(60).collect();
                panic!(
                    "kill {kill}: no blob streaming 120 s after the restart (output {} at restart \
                     {at_restart}, published {published}, fetches {} then {fetched})\ncollector \
                     log tail:\n{}",
                    sink.count(&s),
                    emu.content_fetches().await,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Random moment: this delay picks when to crash, it synchronises nothing.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        c.kill();
        fetched = emu.content_fetches().await;
        c = Collector::spawn(&s);
    }
    let ids = published_ids(&emu).await;
    assert_eq!(ids.len() as u64, published);
    let want = ids.len() as u64;
    wait_for(
        Duration::from_secs(240),
        "every record after the last restart",
        || {
            let done = sink.has_all(&s, want);
            async move { done }
        },
    )
    .await;
    let status = c.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", c.logs());
    let p = emu.published(TENANT).await;
    println!(
        "{} blobs of {BLOB} records, {STREAM_KILLS} kills, {} fetches",
        p.blobs, p.content_fetches
    );
    Streamed {
        published: ids,
        out: sink.ids(&s),
        kills: STREAM_KILLS,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_large_blobs_stream_to_a_file_loses_and_doubles_nothing() {
    let mut sink = Sink::File(LineCounter::default());
    let run = kill_while_streaming(&mut sink, 20261130).await;
    assert_exactly_once(&run.published, &run.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_large_blobs_stream_to_elasticsearch_loses_and_doubles_nothing() {
    let mut sink = Sink::Http(Box::new(HttpReceiver::start()), "elasticsearch");
    let run = kill_while_streaming(&mut sink, 20261131).await;
    assert_exactly_once(&run.published, &run.out);
    let Sink::Http(r, _) = &sink else {
        unreachable!()
    };
    assert!(r.violations().is_empty(), "{:?}", r.violations());
}

/// NDJSON has no ids the receiver could deduplicate on: a batch accepted but not yet recorded as
/// progress when the process died is sent again. In flight at a kill, per worker: the batch being
/// sent and the one whose progress is being written, so at most two batches per worker per kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_large_blobs_stream_to_ndjson_repeats_at_most_the_batches_in_flight() {
    let mut sink = Sink::Http(Box::new(HttpReceiver::start()), "ndjson");
    let run = kill_while_streaming(&mut sink, 20261132).await;
    let Sink::Http(r, _) = &sink else {
        unreachable!()
    };
    assert!(r.violations().is_empty(), "{:?}", r.violations());
    let missing = run
        .published
        .iter()
        .filter(|id| !run.out.contains_key(*id))
        .count();
    assert_eq!(missing, 0, "records lost");
    assert_eq!(run.out.len(), run.published.len(), "unknown records");
    // Each request is one batch (max_events 500 > batch_records): count the requests that
    // brought records already delivered before.
    let ids = r.record_ids();
    let sizes = r.state.request_sizes.lock().unwrap().clone();
    let (mut seen, mut at) = (HashSet::new(), 0);
    let (mut repeated_batches, mut repeated_records) = (0u64, 0u64);
    for n in sizes {
        let again = ids[at..at + n]
            .iter()
            .filter(|id| !seen.insert(*id))
            .count() as u64;
        at += n;
        repeated_records += again;
        repeated_batches += u64::from(again > 0);
    }
    let bound = run.kills as u64 * STREAM_WORKERS * 2;
    println!(
        "{repeated_records} records repeated in {repeated_batches} batches after {} kills (bound: {bound} batches)",
        run.kills
    );
    assert!(
        repeated_batches <= bound,
        "{repeated_batches} batches repeated, more than 2 x {STREAM_WORKERS} workers x {} kills",
        run.kills
    );
    assert!(repeated_records <= repeated_batches * BATCH);
}

/// The Graph feeds beside the audit feeds: all four Graph feeds and two content types flow in
/// waves while the collector is SIGKILLed 20 times; every audit record and every Graph record
/// (by tenant, feed and identity; a service health update is a record of its own) is in the file
/// exactly once afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_mixed_run_of_all_graph_feeds_loses_and_doubles_nothing() {
    use o365_collector::emulator::graph::{GraphGenerate, GraphUpdate};
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201u64);
    println!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = Lcg(seed);
    let emu = emulator(|_| {}).await;
    // Every restart starts with a fresh request budget and reads at once: twenty in a few seconds
    // would spend Microsoft's quotas and wait out their Retry-After (tests/graph.rs covers that).
    emu.graph_faults(o365_collector::emulator::graph::GraphFaults {
        identity_per_10s: Some(1000),
        trace_per_5min: Some(10_000),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let types = ["Audit.Exchange", "Audit.General"];
    let extra = "graph_feeds: sign_ins directory_audits message_trace service_health\n\
                 pull:\n  interval: 200ms\npipeline:\n  workers: 2\n  lease: 30s\n  batch_records: 100\n";
    let s = setup(&emu, dir.path(), &types, extra);
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &types).await;
    let feeds = [
        ("sign_ins", 600),
        ("directory_audits", 600),
        ("message_trace", 150),
        ("service_health", 20),
    ];
    for kill in 0..20 {
        if kill < 10 {
            generate(&emu, types[kill % 2], 500, 2).await;
            let (feed, n) = feeds[kill % feeds.len()];
            emu.graph_generate(GraphGenerate {
                tenant_id: TENANT.into(),
                feed: feed.into(),
                records: n,
                from: None,
                to: None,
                recipients: Some(2),
            })
            .await
            .unwrap();
        }
        if kill == 12 {
            // An issue updated in place while the collector restarts, once its first version
            // is out (Microsoft keeps only the latest: a version never read is not missing).
            let id = emu.graph_published(TENANT).await["service_health"][0].clone();
            let key = o365_collector::demo::graph_key(TENANT, "Graph.ServiceHealth", &id);
            wait_for(Duration::from_secs(60), "the issue's first version", || {
                let found = output_ids(&s.events).contains_key(&key);
                async move { found }
            })
            .await;
            emu.graph_update(GraphUpdate {
                tenant_id: TENANT.into(),
                id: id.split('@').next().unwrap().to_owned(),
            })
            .await
            .unwrap();
        }
        // Random moment: this delay picks when to crash, it synchronises nothing.
        tokio::time::sleep(Duration::from_millis(rng.range(50, 900))).await;
        c.kill();
        c = Collector::spawn(&s);
    }
    let mut want = published_ids(&emu).await;
    for (feed, ids) in emu.graph_published(TENANT).await {
        let ct = o365_collector::graph::GraphFeed::from_config_name(&feed)
            .unwrap()
            .content_type();
        want.extend(
            ids.iter()
                .map(|id| o365_collector::demo::graph_key(TENANT, ct, id)),
        );
    }
    println!("{} records published", want.len());
    wait_for(
        Duration::from_secs(240),
        "every record after the last restart",
        || async { line_count(&s.events) >= want.len() },
    )
    .await;
    assert!(
        c.terminate(Duration::from_secs(10)).success(),
        "{}",
        c.logs()
    );
    assert_exactly_once(&want, &output_ids(&s.events));
}
