//! Nothing lost, nothing doubled: the collector is SIGKILLed at random moments while 50,000 records
//! flow; after the last restart every published record is in the output exactly once. Then the
//! same while 100,000-record blobs stream (each blob goes out in many batches and a restart resumes
//! it after its last recorded batch): file and Elasticsearch exactly once, NDJSON over HTTP with
//! at most the batches in flight at each kill repeated (and Elasticsearch, which keeps one
//! document per `_id`, sent at most those batches again). Every kill lands while the collector
//! holds a blob. `CRASH_SEED` replays or varies the kill moments.

mod outputs_support;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use o365_emulator::Emulator;
use outputs_support::http::{HttpReceiver, Resent};
use support::*;

/// The collector's queue as its `/status` reports it: `(pending, leased)`; `None` until its
/// admin listener is up (or while it does not answer).
async fn queue_now(c: &Collector, http: &reqwest::Client) -> Option<(u64, u64)> {
    let logs = c.logs();
    if !logs.contains("admin listener ready") {
        return None;
    }
    let status: serde_json::Value = http
        .get(admin_url(&logs, "/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let queue = &status["queue"];
    Some((queue["pending"].as_u64()?, queue["leased"].as_u64()?))
}

/// Waits until the running collector holds a blob (its `/status` counts a leased one), so that
/// the kill that follows lands while a blob is in flight. Should its queue stay empty for half a
/// second (the blobs published so far are out), publishes one blob of `top_up` records to have
/// work to land in. Returns the records it published.
async fn wait_blob_in_flight(
    c: &Collector,
    emu: &Emulator,
    kill: usize,
    top_up: (&str, u64),
) -> u64 {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut published, mut idle_since) = (0, None);
    loop {
        match queue_now(c, &http).await {
            Some((_, leased)) if leased > 0 => return published,
            Some((0, 0)) => {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    generate(emu, top_up.0, top_up.1, 1).await;
                    published += top_up.1;
                    idle_since = None;
                }
            }
            _ => idle_since = None,
        }
        if Instant::now() > deadline {
            panic!(
                "kill {kill}: no blob in flight within 120 s\ncollector log tail:\n{}",
                log_tail(c)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The last 60 lines of the collector's log.
fn log_tail(c: &Collector) -> String {
    let logs = c.logs();
    let tail: Vec<&str> = logs.lines().rev().take(60).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// How one crash run goes: records published in waves while the collector is SIGKILLed `kills`
/// times at seeded random moments, each while it holds a blob; `extra_yaml` continues the file
/// output's settings.
struct Run {
    name: &'static str,
    records: u64,
    kills: usize,
    seed: u64,
    extra_yaml: &'static str,
}

/// Runs it; returns the published ids and the setup, after the last restart delivered every record
/// (counting rotated files too) and the collector stopped cleanly.
async fn crash_run(run: Run) -> (Vec<String>, Setup, tempfile::TempDir) {
    let mut rng = Lcg(crash_seed(run.name, run.seed));

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
        // Random moment: this delay picks when to crash, it synchronises nothing. The kill waits
        // for the next moment a blob is in flight.
        tokio::time::sleep(Duration::from_millis(rng.range(20, 600))).await;
        let ct = ALL_TYPES[kill % ALL_TYPES.len()];
        published += wait_blob_in_flight(&c, &emu, kill, (ct, 400)).await;
        c.kill();
        c = Collector::spawn(&s);
    }
    assert!(published >= run.records);

    let ids = published_ids(&emu).await;
    assert_eq!(ids.len() as u64, published);
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
        name: "kill_9_at_random_moments_loses_and_doubles_nothing",
        records: 50_000,
        kills: 24,
        seed: 20261125,
        extra_yaml: "",
    })
    .await;
    assert_exactly_once(&ids, &output_ids_with_rotated(&s.events));
}

/// The same with a file output that rotates every few blobs and gzips rotated files in the
/// background: kills land mid-rotation and mid-compression, and exactly-once holds across all files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_rotation_and_gzip_loses_and_doubles_nothing() {
    let (ids, s, _dir) = crash_run(Run {
        name: "kill_9_with_rotation_and_gzip_loses_and_doubles_nothing",
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
            Sink::File(_) => output_ids_with_rotated(&s.events),
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
fn quick_redelivery(c: &mut o365_emulator::EmulatorConfig) {
    c.webhook_retry_base = Duration::from_millis(50);
    c.webhook_max_backoff = Duration::from_secs(1);
    c.webhook_max_failures = u32::MAX;
}

/// Publishes 100,000-record blobs (another whenever less than half a blob is left to deliver) and
/// SIGKILLs the collector `STREAM_KILLS` times, each at a random moment after the restarted
/// process has delivered something, while it holds a blob. Then waits for every record.
async fn kill_while_streaming(sink: &mut Sink, test: &str, seed: u64) -> Streamed {
    let mut rng = Lcg(crash_seed(test, seed));
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
                panic!(
                    "kill {kill}: no blob streaming 120 s after the restart (output {} at restart \
                     {at_restart}, published {published}, fetches {} then {fetched})\ncollector \
                     log tail:\n{}",
                    sink.count(&s),
                    emu.content_fetches().await,
                    log_tail(&c)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Random moment: this delay picks when to crash, it synchronises nothing.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        published += wait_blob_in_flight(&c, &emu, kill, (STREAM_TYPES[kill % 2], BLOB)).await;
        if let (0, Sink::Http(r, _)) = (kill, &*sink) {
            // Before any kill nothing is sent twice.
            assert_eq!(r.resent(), Resent::default(), "sent again before any kill");
        }
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
    let run = kill_while_streaming(
        &mut sink,
        "kill_9_while_large_blobs_stream_to_a_file_loses_and_doubles_nothing",
        20261130,
    )
    .await;
    assert_exactly_once(&run.published, &run.out);
}

/// Invariant 4: a blob claimed again resumes after the batches its progress counts, so what a
/// receiver gets again is, per kill and busy worker, at most the batch being sent and the one whose
/// progress was being written, each whole (each request is one batch: `max_events` 500 >
/// `batch_records`). A resume from the blob's first record would re-send hundreds of batches.
fn assert_resends_bounded(what: &str, resent: Resent, kills: usize) {
    let bound = kills as u64 * STREAM_WORKERS * 2;
    println!(
        "{what}: {} records sent again in {} batches after {kills} kills (bound: {bound} batches)",
        resent.records, resent.requests
    );
    assert!(
        resent.requests <= bound,
        "{what}: {} batches sent again, more than 2 x {STREAM_WORKERS} workers x {kills} kills",
        resent.requests
    );
    assert_eq!(
        resent.mixed, 0,
        "{what}: batches that were partly sent before (a resume inside a batch)"
    );
}

/// Elasticsearch keeps each record once (`create` with `_id` = the record key; a second one
/// answers 409), and the 409s show what was sent again: no more than the batches in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_large_blobs_stream_to_elasticsearch_loses_and_doubles_nothing() {
    let mut sink = Sink::Http(Box::new(HttpReceiver::start()), "elasticsearch");
    let run = kill_while_streaming(
        &mut sink,
        "kill_9_while_large_blobs_stream_to_elasticsearch_loses_and_doubles_nothing",
        20261131,
    )
    .await;
    assert_exactly_once(&run.published, &run.out);
    let Sink::Http(r, _) = &sink else {
        unreachable!()
    };
    assert!(r.violations().is_empty(), "{:?}", r.violations());
    assert_resends_bounded("Elasticsearch", r.resent(), run.kills);
}

/// NDJSON has no ids the receiver could deduplicate on: a batch accepted but not yet recorded as
/// progress when the process died is sent again. In flight at a kill, per worker: the batch being
/// sent and the one whose progress is being written, so at most two batches per worker per kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_large_blobs_stream_to_ndjson_repeats_at_most_the_batches_in_flight() {
    let mut sink = Sink::Http(Box::new(HttpReceiver::start()), "ndjson");
    let run = kill_while_streaming(
        &mut sink,
        "kill_9_while_large_blobs_stream_to_ndjson_repeats_at_most_the_batches_in_flight",
        20261132,
    )
    .await;
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
    assert_resends_bounded("NDJSON", r.resent(), run.kills);
}

/// The Graph feeds beside the audit feeds: all four Graph feeds and two content types flow in
/// waves while the collector is SIGKILLed 20 times; every audit record and every Graph record
/// (by tenant, feed and identity; a service health update is a record of its own) is in the file
/// exactly once afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_mixed_run_of_all_graph_feeds_loses_and_doubles_nothing() {
    use o365_emulator::graph::{GraphGenerate, GraphUpdate};
    let mut rng = Lcg(crash_seed(
        "kill_9_during_a_mixed_run_of_all_graph_feeds_loses_and_doubles_nothing",
        20261201,
    ));
    let emu = emulator(|_| {}).await;
    // Every restart starts with a fresh request budget and reads at once: twenty in a few seconds
    // would spend Microsoft's quotas and wait out their Retry-After (tests/graph.rs covers that).
    emu.graph_faults(o365_emulator::graph::GraphFaults {
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
        // Random moment: this delay picks when to crash, it synchronises nothing. The kill waits
        // for the next moment a blob or a Graph page is in flight.
        tokio::time::sleep(Duration::from_millis(rng.range(50, 900))).await;
        wait_blob_in_flight(&c, &emu, kill, (types[kill % 2], 250)).await;
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
    assert_exactly_once(&want, &output_ids_with_rotated(&s.events));
}
