//! Both stores through the `Store` trait: the shared conformance checks on each (the PostgreSQL
//! ones on a real server, tests/store_postgres.rs has what only it has), then what only a
//! file-backed store has (restarts, locking, damaged files). Throughput and latency are measured
//! in benches/store.rs.

use std::path::Path;
use std::time::{Duration, SystemTime};

use o365_collector::store::conformance::{self, content};
use o365_collector::store::{ContentRef, EmbeddedStore, Store, StoreError};

#[path = "support/postgres.rs"]
mod postgres;
mod support;
use postgres::Postgres;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).expect("open store")
}

/// One test per conformance check, each on a fresh store: the embedded one in its own directory,
/// the PostgreSQL one in its own database of a real server shared by this binary's tests.
macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                conformance::$name(&open(dir.path())).await;
            }
        )*
        mod postgres_conformance {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    conformance::$name(&Postgres::shared().store().await).await;
                }
            )*
        }
    };
}

conformance_tests!(
    enqueue_dedups,
    carried_records_are_kept_once,
    concurrent_enqueues_get_their_own_outcomes,
    claim_is_oldest_first_and_bounded,
    expired_lease_is_claimable_again,
    renew_extends_lease,
    complete_removes_but_keeps_dedup,
    reschedule_waits_and_counts_attempts,
    release_keeps_the_place_in_line,
    claim_except_passes_over_skipped_tenants,
    dead_letter_leaves_queue,
    dead_letters_can_be_requeued,
    unknown_seq_is_not_found,
    cursor_never_moves_backwards,
    subscription_starts_wait_and_are_claimed_once,
    prune_forgets_old_ids,
    stats_count_each_state,
    progress_is_kept_until_complete,
    ledger_counts_what_became_of_each_hour,
);

#[tokio::test]
async fn progress_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    conformance::progress_survives_reopen(|| async { open(dir.path()) }).await;
}

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

/// Concurrent enqueues committed as groups are all durable: a reopened store has every one of
/// them, and the contentId they share once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrently_enqueued_blobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .enqueue(vec![content(&format!("c-{i}")), content("same")])
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut added = 0;
        for t in tasks {
            let out = t.await.unwrap();
            assert_eq!(out.added + out.duplicates, 2);
            added += out.added;
        }
        assert_eq!(added, 65);
    }
    let store = open(dir.path());
    let claimed = store.claim(100, Duration::from_secs(600)).await.unwrap();
    let mut ids: Vec<String> = claimed.into_iter().map(|c| c.content.content_id).collect();
    ids.sort();
    let mut want: Vec<String> = (0..64).map(|i| format!("c-{i}")).collect();
    want.push("same".into());
    want.sort();
    assert_eq!(ids, want);
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
