//! The embedded store through the `Store` trait: the shared conformance checks, then what only a
//! file-backed store has (restarts, locking, damaged files), then a throughput measurement
//! (`cargo test --release --test store -- --ignored --nocapture store_throughput`).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use o365_collector::store::conformance::{self, content};
use o365_collector::store::{ContentRef, EmbeddedStore, Store, StoreError};

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).expect("open store")
}

/// One test per conformance check, each on a fresh store in its own directory.
macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            conformance::$name(&open(dir.path())).await;
        }
    )*};
}

conformance_tests!(
    enqueue_dedups,
    claim_is_oldest_first_and_bounded,
    expired_lease_is_claimable_again,
    renew_extends_lease,
    complete_removes_but_keeps_dedup,
    reschedule_waits_and_counts_attempts,
    dead_letter_leaves_queue,
    unknown_seq_is_not_found,
    cursor_never_moves_backwards,
    prune_forgets_old_ids,
    stats_count_each_state,
);

#[tokio::test]
async fn run_all_passes() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        dirs.lock().unwrap().push(dir);
        store
    })
    .await;
}

#[tokio::test]
async fn open_creates_the_directory_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("var/last_value_storage");
    let store = open(&nested);
    assert_eq!(store.path(), nested.join("queue.redb"));
    assert!(nested.join("queue.redb").is_file());
}

#[tokio::test]
async fn queue_and_dedup_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let out = store
            .enqueue(vec![content("a"), content("b"), content("c")])
            .await
            .unwrap();
        assert_eq!(out.added, 3);
        let claimed = store.claim(1, Duration::from_secs(600)).await.unwrap();
        store.complete(claimed[0].seq).await.unwrap();
    }
    let store = open(dir.path());
    let out = store
        .enqueue(vec![content("a"), content("b"), content("d")])
        .await
        .unwrap();
    assert_eq!(
        (out.added, out.duplicates),
        (1, 2),
        "done and queued ids stay known"
    );
    let claimed = store.claim(10, Duration::from_secs(600)).await.unwrap();
    let ids: Vec<&str> = claimed
        .iter()
        .map(|c| c.content.content_id.as_str())
        .collect();
    assert_eq!(ids, ["b", "c", "d"], "completed blob gone, order kept");
    assert!(
        claimed.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq keeps growing across restarts"
    );
}

#[tokio::test]
async fn cursor_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::new(1_780_000_000, 123_456_789);
    {
        let store = open(dir.path());
        store
            .advance_cursor("t1", "Audit.Exchange", t)
            .await
            .unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store.cursor("t1", "Audit.Exchange").await.unwrap(),
        Some(t),
        "exact to the nanosecond"
    );
    store
        .advance_cursor("t1", "Audit.Exchange", t - Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(store.cursor("t1", "Audit.Exchange").await.unwrap(), Some(t));
}

#[tokio::test]
async fn restart_releases_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (leased, rescheduled) = {
        let store = open(dir.path());
        store
            .enqueue(vec![content("held"), content("waiting"), content("free")])
            .await
            .unwrap();
        let claimed = store.claim(2, Duration::from_secs(3600)).await.unwrap();
        let far = SystemTime::now() + Duration::from_secs(3600);
        store
            .reschedule(claimed[1].seq, far, "HTTP 503")
            .await
            .unwrap();
        // A durable write after the claim, so the lease itself is on disk too.
        store
            .advance_cursor("t", "c", SystemTime::now())
            .await
            .unwrap();
        (claimed[0].seq, claimed[1].seq)
    };
    let store = open(dir.path());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased), (3, 0));
    let claimed = store.claim(10, Duration::from_secs(60)).await.unwrap();
    let seqs: Vec<u64> = claimed.iter().map(|c| c.seq).collect();
    assert!(seqs.contains(&leased), "the old lease is gone");
    assert!(
        !seqs.contains(&rescheduled),
        "not_before survives a restart"
    );
    assert_eq!(claimed.len(), 2);
}

#[tokio::test]
async fn second_open_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("already in use"), "{msg}");
            assert!(msg.contains("queue.redb"), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    drop(first);
    let again = open(dir.path());
    assert_eq!(again.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn foreign_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.redb");
    std::fs::write(
        &path,
        b"this is not a redb file, just some text\n".repeat(200),
    )
    .unwrap();
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("queue.redb"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn directory_that_cannot_be_created_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        EmbeddedStore::open(&file.join("sub")),
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn dead_letters_keep_content_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .enqueue(vec![content("d1"), content("d2"), content("ok")])
            .await
            .unwrap();
        let claimed = store.claim(2, Duration::from_secs(60)).await.unwrap();
        store
            .reschedule(claimed[0].seq, SystemTime::UNIX_EPOCH, "HTTP 500")
            .await
            .unwrap();
        let retried = store.claim(1, Duration::from_secs(60)).await.unwrap();
        store
            .dead_letter(retried[0].seq, "content expired")
            .await
            .unwrap();
        store
            .dead_letter(claimed[1].seq, "AF20055: not found")
            .await
            .unwrap();
    }
    let store = open(dir.path());
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(
        dead,
        vec![
            (content("d1"), "content expired".to_owned()),
            (content("d2"), "AF20055: not found".to_owned()),
        ]
    );
    let details = store.dead_letter_details().await.unwrap();
    assert_eq!(details[0].attempts, 1);
    assert!(details[0].dead_at >= details[0].enqueued_at);
    assert_eq!(store.stats().await.unwrap().dead_letters, 2);
}

#[tokio::test]
async fn oldest_pending_age_skips_leased_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .enqueue(vec![content("o1"), content("o2")])
        .await
        .unwrap();
    store.claim(1, Duration::from_secs(60)).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased), (1, 1));
    assert_eq!(stats.oldest_pending_age_secs, Some(0));
}

#[tokio::test]
async fn concurrent_enqueues_of_the_same_ids_add_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<ContentRef> = (0..20).map(|i| content(&format!("c-{i}"))).collect();
            store.enqueue(batch).await.unwrap()
        }));
    }
    let mut added = 0;
    let mut duplicates = 0;
    for t in tasks {
        let out = t.await.unwrap();
        added += out.added;
        duplicates += out.duplicates;
    }
    assert_eq!((added, duplicates), (20, 140));
    assert_eq!(store.stats().await.unwrap().pending, 20);
}

/// Prints ops/s; asserts nothing about speed. Run with `--release --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints throughput"]
async fn store_throughput() {
    const QUEUED: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut next_id = 0u64;
    let mut fresh = |n: usize| -> Vec<ContentRef> {
        (0..n)
            .map(|_| {
                next_id += 1;
                content(&format!("bench-{next_id:012}"))
            })
            .collect()
    };

    // Fill to 100k queued items in batches of 1000.
    let t = Instant::now();
    for _ in 0..QUEUED / 1000 {
        store.enqueue(fresh(1000)).await.unwrap();
    }
    report("enqueue, batch 1000 (fill)", QUEUED, t.elapsed());

    let runs = 3;
    let mut single = Vec::new();
    let mut hundred = Vec::new();
    let mut claim_complete = Vec::new();
    let mut claim_batch = Vec::new();
    for _ in 0..runs {
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            store.enqueue(fresh(1)).await.unwrap();
        }
        single.push(n as f64 / t.elapsed().as_secs_f64());

        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            store.enqueue(fresh(100)).await.unwrap();
        }
        hundred.push((n * 100) as f64 / t.elapsed().as_secs_f64());

        // One blob at a time: claim 1 then complete it (two commits, one fsync).
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            let c = store.claim(1, Duration::from_secs(300)).await.unwrap();
            store.complete(c[0].seq).await.unwrap();
        }
        claim_complete.push(n as f64 / t.elapsed().as_secs_f64());

        // Claims of 32 (a worker pool's refill) without completing.
        let n = 100;
        let t = Instant::now();
        for _ in 0..n {
            let c = store.claim(32, Duration::from_secs(300)).await.unwrap();
            assert_eq!(c.len(), 32);
        }
        claim_batch.push((n * 32) as f64 / t.elapsed().as_secs_f64());
    }
    let stats_t = Instant::now();
    let stats = store.stats().await.unwrap();
    let stats_ms = stats_t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "queued items during runs: ~{}",
        stats.pending + stats.leased
    );
    println!(
        "enqueue batch of 1:        {:>10.0} ids/s (median of {runs})",
        median(&mut single)
    );
    println!(
        "enqueue batch of 100:      {:>10.0} ids/s (median of {runs})",
        median(&mut hundred)
    );
    println!(
        "claim(1)+complete:         {:>10.0} blobs/s (median of {runs})",
        median(&mut claim_complete)
    );
    println!(
        "claim(32), no complete:    {:>10.0} blobs/s (median of {runs})",
        median(&mut claim_batch)
    );
    println!(
        "stats() with {} leased:    {stats_ms:>10.2} ms",
        stats.leased
    );

    let t = Instant::now();
    drop(store);
    let store = open(dir.path());
    println!(
        "reopen (releases {} leases): {:>8.1} ms",
        stats.leased,
        t.elapsed().as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    let pruned = store
        .prune(SystemTime::now() + Duration::from_secs(60))
        .await
        .unwrap();
    report("prune dedup entries", pruned as usize, t.elapsed());
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!("peak RSS: {}", line.trim_start_matches("VmHWM:").trim());
    }
    let size = std::fs::metadata(store.path()).unwrap().len();
    println!("file size: {:.1} MiB", size as f64 / 1_048_576.0);
}

fn report(what: &str, n: usize, took: Duration) {
    println!(
        "{what}: {n} in {:.2} s = {:.0}/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
