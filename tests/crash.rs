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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    const RECORDS: u64 = 50_000;
    const KILLS: usize = 24;
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125);
    println!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = Lcg(seed);

    let emu = emulator(|c| {
        c.webhook_retry_base = Duration::from_millis(50);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        &emu,
        dir.path(),
        &ALL_TYPES,
        "pipeline:\n  workers: 4\n  lease: 30s\n",
    );
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &ALL_TYPES).await;

    // Publish in waves between kills so that kills land while notifications arrive, blobs are
    // fetched and the output file is written.
    let waves = KILLS as u64 / 2;
    let per_wave = RECORDS / waves;
    let mut published = 0u64;
    for kill in 0..KILLS {
        if (kill as u64) < waves {
            let ct = ALL_TYPES[kill % ALL_TYPES.len()];
            let n = if kill as u64 == waves - 1 {
                RECORDS - published
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
    assert_eq!(published, RECORDS);

    let ids = published_ids(&emu).await;
    assert_eq!(ids.len() as u64, RECORDS);
    wait_for(
        Duration::from_secs(240),
        "every record after the last restart",
        || async { line_count(&s.events) >= ids.len() },
    )
    .await;
    assert_exactly_once(&ids, &output_ids(&s.events));
    let status = c.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", c.logs());
}

/// The same with a file output that rotates every few blobs and gzips rotated files in the
/// background: kills land mid-rotation and mid-compression, and exactly-once holds across all files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_rotation_and_gzip_loses_and_doubles_nothing() {
    const RECORDS: u64 = 30_000;
    const KILLS: usize = 20;
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261126);
    println!("crash test (rotation) seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = Lcg(seed);

    let emu = emulator(|c| {
        c.webhook_retry_base = Duration::from_millis(50);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The extra lines continue the file output's settings, then add the pipeline's.
    let s = setup(
        &emu,
        dir.path(),
        &ALL_TYPES,
        "    rotate_bytes: 512KiB\n    compression: gzip\npipeline:\n  workers: 4\n  lease: 30s\n",
    );
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &ALL_TYPES).await;

    let waves = KILLS as u64 / 2;
    let per_wave = RECORDS / waves;
    let mut published = 0u64;
    for kill in 0..KILLS {
        if (kill as u64) < waves {
            let ct = ALL_TYPES[kill % ALL_TYPES.len()];
            let n = if kill as u64 == waves - 1 {
                RECORDS - published
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
    assert_eq!(published, RECORDS);

    let ids = published_ids(&emu).await;
    assert_eq!(ids.len() as u64, RECORDS);
    wait_for(
        Duration::from_secs(240),
        "every record after the last restart",
        || async { line_count_with_rotated(&s.events) >= ids.len() },
    )
    .await;
    let status = c.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", c.logs());
    let rotated = o365_collector::output::file::rotated_files(&s.events).unwrap();
    println!(
        "{} rotated files ({} gzip)",
        rotated.len(),
        rotated.iter().filter(|f| f.gzip).count()
    );
    assert!(rotated.len() >= 5, "only {} rotations", rotated.len());
    assert_exactly_once(&ids, &output_ids_with_rotated(&s.events));
}
