//! Nothing lost, nothing doubled: the collector is SIGKILLed at random moments while 50,000 records
//! flow; after the last restart every published record is in the output exactly once.

mod support;

use std::time::Duration;

use support::*;

/// A small deterministic PRNG so a failing run can be repeated (seed printed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

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

    let emu = emulator(|c| {
        c.webhook_retry_base = Duration::from_millis(50);
    })
    .await;
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
