//! Behaviour every [`Store`] must show, written once so the embedded and the PostgreSQL stores are
//! held to the same contract. Each check takes a fresh, empty store from the caller's factory and
//! panics (like a test assertion) when the store misbehaves.
//!
//! Use from an integration test:
//!
//! ```text
//! #[tokio::test]
//! async fn conformance() {
//!     let dirs = std::sync::Mutex::new(Vec::new());
//!     o365_collector::store::conformance::run_all(|| async {
//!         let dir = tempfile::tempdir().unwrap();
//!         let store = EmbeddedStore::open(dir.path()).unwrap();
//!         dirs.lock().unwrap().push(dir);
//!         store
//!     })
//!     .await;
//! }
//! ```
//!
//! Checks that need a restart (dedup and cursors surviving a reopen, leases released on open) are
//! store-specific and live next to each store's own tests, except [`progress_survives_reopen`],
//! which takes a function that opens the same store again.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use super::{Claimed, ContentRef, Store, StoreError};

/// How long a check waits for a condition (an expiring lease, a due retry) before failing.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// A blob announcement with the given contentId, tenant `t1` and type `Audit.General`.
pub fn content(id: &str) -> ContentRef {
    content_for("t1", "Audit.General", id)
}

/// A blob announcement for a given tenant and content type.
pub fn content_for(tenant: &str, content_type: &str, id: &str) -> ContentRef {
    ContentRef {
        tenant_id: tenant.to_owned(),
        content_type: content_type.to_owned(),
        content_id: id.to_owned(),
        content_uri: format!(
            "https://manage.office.com/api/v1.0/{tenant}/activity/feed/audit/{id}"
        ),
        content_created: Some("2026-01-01T00:00:00.000Z".to_owned()),
        content_expiration: Some("2026-01-08T00:00:00.000Z".to_owned()),
        records: None,
    }
}

/// Runs every check, each on a store freshly made by `make`.
pub async fn run_all<S, F, Fut>(mut make: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    enqueue_dedups(&make().await).await;
    carried_records_are_kept_once(&make().await).await;
    concurrent_enqueues_get_their_own_outcomes(&make().await).await;
    claim_is_oldest_first_and_bounded(&make().await).await;
    expired_lease_is_claimable_again(&make().await).await;
    renew_extends_lease(&make().await).await;
    complete_removes_but_keeps_dedup(&make().await).await;
    reschedule_waits_and_counts_attempts(&make().await).await;
    release_keeps_the_place_in_line(&make().await).await;
    claim_except_passes_over_skipped_tenants(&make().await).await;
    dead_letter_leaves_queue(&make().await).await;
    dead_letters_can_be_requeued(&make().await).await;
    unknown_seq_is_not_found(&make().await).await;
    cursor_never_moves_backwards(&make().await).await;
    subscription_starts_wait_and_are_claimed_once(&make().await).await;
    prune_forgets_old_ids(&make().await).await;
    tenant_backlog_counts_one_tenant_up_to_the_cap(&make().await).await;
    records_are_claimed_by_one_blob(&make().await).await;
    stats_count_each_state(&make().await).await;
    progress_is_kept_until_complete(&make().await).await;
    ledger_counts_what_became_of_each_hour(&make().await).await;
}

/// Polls `claim(max, lease)` until it returns something, or fails after [`WAIT_LIMIT`].
pub async fn claim_within<S: Store>(store: &S, max: usize, lease: Duration) -> Vec<Claimed> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let got = store.claim(max, lease).await.expect("claim");
        if !got.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "nothing became claimable within {WAIT_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed
        .iter()
        .map(|c| c.content.content_id.as_str())
        .collect()
}

const LONG: Duration = Duration::from_secs(600);

/// New ids are added once; repeats across and within batches are counted as duplicates.
pub async fn enqueue_dedups<S: Store>(store: &S) {
    let out = store
        .enqueue(vec![content("a"), content("b"), content("a")])
        .await
        .expect("enqueue");
    assert_eq!(
        (out.added, out.duplicates),
        (2, 1),
        "duplicate within a batch"
    );
    let out = store
        .enqueue(vec![content("b"), content("c")])
        .await
        .expect("enqueue");
    assert_eq!(
        (out.added, out.duplicates),
        (1, 1),
        "duplicate across batches"
    );
    let out = store.enqueue(Vec::new()).await.expect("empty enqueue");
    assert_eq!((out.added, out.duplicates), (0, 0));
    let claimed = store.claim(10, LONG).await.expect("claim");
    assert_eq!(ids(&claimed), ["a", "b", "c"]);
    assert!(claimed.iter().all(|c| c.attempts == 0));
    assert_eq!(claimed[0].content, content("a"), "content round-trips");
}

/// A blob carrying records (a Graph page) keeps only the records whose key was not seen, is named
/// after its first new one, and is a duplicate when none is new.
pub async fn carried_records_are_kept_once<S: Store>(store: &S) {
    let page = |keys: &[&str]| ContentRef {
        content_id: String::new(),
        records: Some(
            keys.iter()
                .map(|k| crate::store::InlineRecord {
                    key: (*k).to_owned(),
                    json: format!("{{\"id\":\"{k}\"}}"),
                })
                .collect(),
        ),
        ..content_for("t1", "Graph.SignIns", "")
    };
    let out = store
        .enqueue(vec![page(&["a", "b"]), page(&["b", "c"])])
        .await
        .expect("enqueue");
    assert_eq!((out.added, out.duplicates), (2, 0));
    let out = store
        .enqueue(vec![page(&["c", "a"])])
        .await
        .expect("enqueue");
    assert_eq!(
        (out.added, out.duplicates),
        (0, 1),
        "nothing new: a duplicate"
    );
    let claimed = store.claim(10, LONG).await.expect("claim");
    assert_eq!(ids(&claimed), ["page:a", "page:c"]);
    let kept: Vec<Vec<&str>> = claimed
        .iter()
        .map(|c| {
            c.content
                .records
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|r| r.key.as_str())
                .collect()
        })
        .collect();
    assert_eq!(kept, [vec!["a", "b"], vec!["c"]]);
}

/// Enqueue calls made at the same time (a store may commit them together) each get the outcome of
/// their own items, and a contentId named by several of them is added once.
pub async fn concurrent_enqueues_get_their_own_outcomes<S: Store>(store: &S) {
    const CALLS: usize = 32;
    let calls = (0..CALLS).map(|i| {
        let mut batch = vec![content(&format!("own-{i}-a")), content("shared")];
        if i % 2 == 0 {
            batch.push(content(&format!("own-{i}-b")));
        }
        let len = batch.len();
        async move { (i, len, store.enqueue(batch).await.expect("enqueue")) }
    });
    let outcomes = futures_util::future::join_all(calls).await;
    let mut shared_added = 0;
    for (i, len, out) in &outcomes {
        assert_eq!(
            out.added + out.duplicates,
            *len,
            "call {i}: every item counted"
        );
        let own = if i % 2 == 0 { 2 } else { 1 };
        assert!(
            out.added == own || out.added == own + 1,
            "call {i}: its own new ids are added ({out:?})"
        );
        shared_added += out.added - own;
    }
    assert_eq!(
        shared_added, 1,
        "the shared id is added by exactly one call"
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.pending as usize, CALLS + CALLS / 2 + 1);
    let again = store
        .enqueue(vec![content("own-0-a"), content("shared")])
        .await
        .expect("enqueue");
    assert_eq!((again.added, again.duplicates), (0, 2), "all remembered");
}

/// `claim` hands out at most `max`, in arrival order, and never the same blob twice while leased.
pub async fn claim_is_oldest_first_and_bounded<S: Store>(store: &S) {
    let batch: Vec<ContentRef> = (0..10).map(|i| content(&format!("id-{i}"))).collect();
    store.enqueue(batch).await.expect("enqueue");
    let first = store.claim(4, LONG).await.expect("claim");
    assert_eq!(ids(&first), ["id-0", "id-1", "id-2", "id-3"]);
    assert!(
        first.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq follows arrival"
    );
    let second = store.claim(100, LONG).await.expect("claim");
    assert_eq!(
        ids(&second),
        ["id-4", "id-5", "id-6", "id-7", "id-8", "id-9"]
    );
    assert!(store.claim(100, LONG).await.expect("claim").is_empty());
    assert!(store.claim(0, LONG).await.expect("claim 0").is_empty());
}

/// A worker that dies leaves a lease that expires; the blob is then claimable again.
pub async fn expired_lease_is_claimable_again<S: Store>(store: &S) {
    store.enqueue(vec![content("x")]).await.expect("enqueue");
    let lease = Duration::from_millis(50);
    let first = store.claim(1, lease).await.expect("claim");
    assert_eq!(ids(&first), ["x"]);
    let again = claim_within(store, 1, LONG).await;
    assert_eq!(again[0].seq, first[0].seq);
    assert_eq!(again[0].attempts, 0, "an expired lease is not an attempt");
    assert!(store.claim(1, LONG).await.expect("claim").is_empty());
}

/// `renew` keeps a blob away from other workers past its first lease.
pub async fn renew_extends_lease<S: Store>(store: &S) {
    store
        .enqueue(vec![content("r"), content("s")])
        .await
        .expect("enqueue");
    let short = Duration::from_millis(50);
    let claimed = store.claim(2, short).await.expect("claim");
    assert_eq!(ids(&claimed), ["r", "s"]);
    store.renew(claimed[0].seq, LONG).await.expect("renew");
    // `s` was not renewed: once it comes back, `r` must still be held.
    let back = claim_within(store, 10, LONG).await;
    assert_eq!(ids(&back), ["s"]);
    assert!(store.claim(10, LONG).await.expect("claim").is_empty());
    assert!(matches!(
        store.renew(u64::MAX, LONG).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A completed blob is gone for good, and its contentId is still a duplicate.
pub async fn complete_removes_but_keeps_dedup<S: Store>(store: &S) {
    store
        .enqueue(vec![content("done"), content("open")])
        .await
        .expect("enqueue");
    let claimed = store
        .claim(1, Duration::from_millis(20))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), ["done"]);
    store.complete(claimed[0].seq).await.expect("complete");
    assert!(matches!(
        store.complete(claimed[0].seq).await,
        Err(StoreError::NotFound(_))
    ));
    let out = store.enqueue(vec![content("done")]).await.expect("enqueue");
    assert_eq!((out.added, out.duplicates), (0, 1));
    let rest = store.claim(10, LONG).await.expect("claim");
    assert_eq!(ids(&rest), ["open"], "a completed blob never comes back");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.leased), (0, 1));
}

/// A rescheduled blob waits until `not_before`, then comes back with one more attempt.
/// A released blob is due again at once, ahead of later arrivals, with no attempt counted.
pub async fn release_keeps_the_place_in_line<S: Store>(store: &S) {
    store
        .enqueue(vec![content("first"), content("second"), content("third")])
        .await
        .expect("enqueue");
    let claimed = store.claim(1, LONG).await.expect("claim");
    assert_eq!(ids(&claimed), ["first"]);
    store.release(claimed[0].seq).await.expect("release");
    let again = store.claim(2, LONG).await.expect("claim");
    assert_eq!(
        ids(&again),
        ["first", "second"],
        "released blob first again"
    );
    assert_eq!(again[0].attempts, 0, "a release is not an attempt");
    assert!(matches!(
        store.release(u64::MAX).await,
        Err(StoreError::NotFound(_))
    ));
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.leased), (1, 2));
}

/// Blobs of skipped tenants are passed over and stay first in line for when they are not skipped.
pub async fn claim_except_passes_over_skipped_tenants<S: Store>(store: &S) {
    store
        .enqueue(vec![
            content_for("paused", "Audit.General", "p1"),
            content_for("t1", "Audit.General", "a1"),
            content_for("PAUSED", "Audit.General", "p2"),
            content_for("t1", "Audit.General", "a2"),
        ])
        .await
        .expect("enqueue");
    let skip = ["Paused".to_owned()];
    let got = store.claim_except(10, LONG, &skip).await.expect("claim");
    assert_eq!(ids(&got), ["a1", "a2"], "skip ignores ASCII case");
    assert!(
        store
            .claim_except(10, LONG, &skip)
            .await
            .expect("claim")
            .is_empty()
    );
    let got = store.claim(10, LONG).await.expect("claim");
    assert_eq!(ids(&got), ["p1", "p2"], "in arrival order once not skipped");
    assert!(got.iter().all(|c| c.attempts == 0));

    // A long backlog of a skipped tenant in front does not hide a later blob of another one.
    let backlog: Vec<ContentRef> = (0..5000)
        .map(|i| content_for("paused", "Audit.General", &format!("b{i}")))
        .collect();
    store.enqueue(backlog).await.expect("enqueue");
    store
        .enqueue(vec![content_for("t2", "Audit.General", "late")])
        .await
        .expect("enqueue");
    let got = store.claim_except(1, LONG, &skip).await.expect("claim");
    assert_eq!(ids(&got), ["late"]);
}

pub async fn reschedule_waits_and_counts_attempts<S: Store>(store: &S) {
    store
        .enqueue(vec![content("retry"), content("later")])
        .await
        .expect("enqueue");
    let claimed = store.claim(2, LONG).await.expect("claim");
    // Far future: not claimable in this test.
    let far = SystemTime::now() + Duration::from_secs(3600);
    store
        .reschedule(claimed[1].seq, far, "HTTP 503")
        .await
        .expect("reschedule");
    // Near future: claimable once it passes.
    let near = SystemTime::now() + Duration::from_millis(100);
    store
        .reschedule(claimed[0].seq, near, "HTTP 429")
        .await
        .expect("reschedule");
    // Every claim that returns the blob must have ended after `not_before` (the far one shows the
    // strict case; this one only that the wait ends).
    let deadline = Instant::now() + WAIT_LIMIT;
    let back = loop {
        let got = store.claim(10, LONG).await.expect("claim");
        let after = SystemTime::now();
        if !got.is_empty() {
            assert!(after >= near, "claimable before not_before");
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "rescheduled blob never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(ids(&back), ["retry"]);
    assert_eq!(back[0].attempts, 1);
    assert_eq!(back[0].seq, claimed[0].seq);
    store
        .reschedule(back[0].seq, SystemTime::UNIX_EPOCH, "again")
        .await
        .expect("reschedule");
    let third = store.claim(10, LONG).await.expect("claim");
    assert_eq!(ids(&third), ["retry"], "a past not_before is due at once");
    assert_eq!(third[0].attempts, 2);
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (stats.pending, stats.leased),
        (1, 1),
        "waiting counts as pending"
    );
    assert!(matches!(
        store.reschedule(u64::MAX, far, "x").await,
        Err(StoreError::NotFound(_))
    ));
}

/// A dead-lettered blob leaves the queue, is counted, and stays a duplicate.
pub async fn dead_letter_leaves_queue<S: Store>(store: &S) {
    store.enqueue(vec![content("bad")]).await.expect("enqueue");
    let claimed = store.claim(1, LONG).await.expect("claim");
    store
        .dead_letter(claimed[0].seq, "blob expired")
        .await
        .expect("dead_letter");
    assert!(store.claim(10, LONG).await.expect("claim").is_empty());
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.leased, stats.dead_letters), (0, 0, 1));
    let out = store.enqueue(vec![content("bad")]).await.expect("enqueue");
    assert_eq!(out.duplicates, 1);
    assert!(matches!(
        store.dead_letter(claimed[0].seq, "again").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Dead letters are listed with their reason, and the chosen ones go back in the queue as new
/// arrivals with no attempts; unknown seqs are ignored.
pub async fn dead_letters_can_be_requeued<S: Store>(store: &S) {
    store
        .enqueue(vec![content("d1"), content("d2"), content("ok")])
        .await
        .expect("enqueue");
    let claimed = store.claim(2, LONG).await.expect("claim");
    store
        .reschedule(claimed[0].seq, SystemTime::UNIX_EPOCH, "HTTP 500")
        .await
        .expect("reschedule");
    let again = store.claim(3, LONG).await.expect("claim");
    assert_eq!(ids(&again), ["d1", "ok"]);
    store
        .record_progress(again[0].seq, 300)
        .await
        .expect("progress");
    store
        .dead_letter(again[0].seq, "unreadable")
        .await
        .expect("dead");
    store
        .dead_letter(claimed[1].seq, "gone")
        .await
        .expect("dead");
    let dead = store.dead_letters().await.expect("dead_letters");
    let listed: Vec<(&str, &str, u32, u64)> = dead
        .iter()
        .map(|d| {
            let id = d.content.content_id.as_str();
            (id, d.reason.as_str(), d.attempts, d.delivered)
        })
        .collect();
    assert_eq!(
        listed,
        [("d1", "unreadable", 1, 300), ("d2", "gone", 0, 0)],
        "a dead letter keeps its progress"
    );
    assert!(dead.iter().all(|d| d.dead_at >= d.enqueued_at));

    let n = store
        .requeue_dead(&[dead[0].seq, 424_242])
        .await
        .expect("requeue");
    assert_eq!(n, 1, "unknown seqs are ignored");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.leased, stats.dead_letters), (1, 1, 1));
    let back = store.claim(10, LONG).await.expect("claim");
    assert_eq!(ids(&back), ["d1"]);
    assert_eq!(back[0].attempts, 0, "a requeued blob starts afresh");
    assert_eq!(
        back[0].delivered, 300,
        "and resumes after what was delivered"
    );
    let left = store.dead_letters().await.expect("dead_letters");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].content.content_id, "d2");
    assert_eq!(
        store.requeue_dead(&[dead[0].seq]).await.expect("requeue"),
        0
    );
}

/// `complete`, `reschedule`, `dead_letter` and `renew` on a seq that is not queued fail with NotFound.
pub async fn unknown_seq_is_not_found<S: Store>(store: &S) {
    let seq = 424_242;
    assert!(matches!(store.complete(seq).await, Err(StoreError::NotFound(s)) if s == seq));
    assert!(matches!(
        store.reschedule(seq, SystemTime::now(), "x").await,
        Err(StoreError::NotFound(s)) if s == seq
    ));
    assert!(matches!(store.dead_letter(seq, "x").await, Err(StoreError::NotFound(s)) if s == seq));
    assert!(matches!(store.renew(seq, LONG).await, Err(StoreError::NotFound(s)) if s == seq));
    assert!(
        matches!(store.record_progress(seq, 1).await, Err(StoreError::NotFound(s)) if s == seq)
    );
}

/// Cursors are per (tenant, content type) and only move forward.
pub async fn cursor_never_moves_backwards<S: Store>(store: &S) {
    assert_eq!(
        store.cursor("t1", "Audit.General").await.expect("cursor"),
        None
    );
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let t1 = t0 + Duration::from_secs(60);
    store
        .advance_cursor("t1", "Audit.General", t1)
        .await
        .expect("advance");
    assert_eq!(
        store.cursor("t1", "Audit.General").await.expect("cursor"),
        Some(t1)
    );
    store
        .advance_cursor("t1", "Audit.General", t0)
        .await
        .expect("advance backwards is not an error");
    assert_eq!(
        store.cursor("t1", "Audit.General").await.expect("cursor"),
        Some(t1),
        "never backwards"
    );
    assert_eq!(
        store.cursor("t1", "Audit.Exchange").await.expect("cursor"),
        None
    );
    assert_eq!(
        store.cursor("t2", "Audit.General").await.expect("cursor"),
        None
    );
    store
        .advance_cursor("t2", "Audit.General", t0)
        .await
        .expect("advance");
    assert_eq!(
        store.cursor("t2", "Audit.General").await.expect("cursor"),
        Some(t0)
    );
    let t2 = t1 + Duration::from_millis(1);
    store
        .advance_cursor("t1", "Audit.General", t2)
        .await
        .expect("advance");
    assert_eq!(
        store.cursor("t1", "Audit.General").await.expect("cursor"),
        Some(t2)
    );
}

/// Microsoft's 15-minute rule in the store: of several claims at once exactly one gets the right
/// to start; the others (and later ones within the wait) learn the next allowed start; Microsoft's
/// Retry-After replaces it; each (tenant, content type) is its own subscription; tenant ids ignore case.
pub async fn subscription_starts_wait_and_are_claimed_once<S: Store>(store: &S) {
    let wait = Duration::from_secs(900);
    assert_eq!(
        store
            .next_subscription_start("T1", "Audit.General")
            .await
            .expect("next"),
        None
    );
    let before = SystemTime::now();
    let claims = futures_util::future::join_all(
        (0..8).map(|_| store.claim_subscription_start("t1", "Audit.General", wait)),
    )
    .await;
    let granted = claims.iter().filter(|c| matches!(c, Ok(None))).count();
    assert_eq!(granted, 1, "exactly one claim gets the right: {claims:?}");
    let near = |t: SystemTime, want: SystemTime| {
        let d = t.duration_since(want).unwrap_or_else(|e| e.duration());
        d < Duration::from_secs(5)
    };
    for c in claims
        .iter()
        .filter_map(|c| c.as_ref().ok().copied().flatten())
    {
        assert!(
            near(c, before + wait),
            "refused with the next allowed start"
        );
    }
    let again = store
        .claim_subscription_start("T1", "Audit.General", wait)
        .await
        .expect("claim");
    assert!(again.is_some_and(|t| near(t, before + wait)), "{again:?}");
    let next = store
        .next_subscription_start("t1", "Audit.General")
        .await
        .expect("next");
    assert!(next.is_some_and(|t| near(t, before + wait)), "{next:?}");
    // Other subscriptions are not held.
    assert_eq!(
        store
            .claim_subscription_start("t1", "Audit.Exchange", wait)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store
            .claim_subscription_start("t2", "Audit.General", wait)
            .await
            .expect("claim"),
        None
    );
    // Microsoft's Retry-After replaces the recorded time, later or earlier.
    let later = SystemTime::now() + Duration::from_secs(3600);
    store
        .set_next_subscription_start("t1", "Audit.General", later)
        .await
        .expect("set");
    let next = store
        .next_subscription_start("t1", "Audit.General")
        .await
        .expect("next");
    assert!(next.is_some_and(|t| near(t, later)), "{next:?}");
    let sooner = SystemTime::now() + Duration::from_secs(30);
    store
        .set_next_subscription_start("T1", "Audit.General", sooner)
        .await
        .expect("set");
    let next = store
        .next_subscription_start("t1", "Audit.General")
        .await
        .expect("next");
    assert!(next.is_some_and(|t| near(t, sooner)), "{next:?}");
    // A time set for a subscription never started holds it too; one in the past holds nothing.
    store
        .set_next_subscription_start("t3", "DLP.All", SystemTime::now() + Duration::from_secs(60))
        .await
        .expect("set");
    assert!(
        store
            .claim_subscription_start("t3", "DLP.All", wait)
            .await
            .expect("claim")
            .is_some()
    );
    store
        .set_next_subscription_start("t4", "DLP.All", SystemTime::now() - Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(
        store
            .next_subscription_start("t4", "DLP.All")
            .await
            .expect("next"),
        None
    );
    // Once the wait is over the right can be taken again.
    let short = Duration::from_millis(300);
    assert_eq!(
        store
            .claim_subscription_start("t5", "Audit.General", short)
            .await
            .expect("claim"),
        None
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = store
            .claim_subscription_start("t5", "Audit.General", short)
            .await
            .expect("claim");
        if c.is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the wait never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `prune` forgets contentIds first seen before the limit and only those, at most `max` a call,
/// oldest first; `footprint` counts what is left.
pub async fn prune_forgets_old_ids<S: Store>(store: &S) {
    store
        .enqueue(vec![content("p1"), content("p2"), content("p3")])
        .await
        .expect("enqueue");
    let claimed = store.claim(3, LONG).await.expect("claim");
    for c in &claimed {
        store.complete(c.seq).await.expect("complete");
    }
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(store.prune(long_ago, 100).await.expect("prune"), 0);
    assert_eq!(
        store
            .enqueue(vec![content("p1")])
            .await
            .expect("enqueue")
            .duplicates,
        1,
        "recent ids survive a prune"
    );
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        store.prune(later, 2).await.expect("prune"),
        2,
        "at most max a call"
    );
    assert_eq!(store.prune(later, 2).await.expect("prune the rest"), 1);
    assert_eq!(store.prune(later, 2).await.expect("prune again"), 0);
    assert!(store.footprint().await.expect("footprint").bytes > 0);
    let out = store
        .enqueue(vec![content("p1"), content("p2"), content("p3")])
        .await
        .expect("enqueue");
    assert_eq!(
        (out.added, out.duplicates),
        (3, 0),
        "pruned ids are new again"
    );
}

/// `claim_records` gives each record to the first blob that claims it (and to that blob again),
/// never to another within the window; `prune_records` forgets claims oldest first.
pub async fn records_are_claimed_by_one_blob<S: Store>(store: &S) {
    let hour = Duration::from_secs(3600);
    let claim = |owner: &'static str, keys: Vec<u128>| store.claim_records(owner, keys, hour);
    assert_eq!(claim("blob-a", vec![1, 2, 3]).await.expect("a"), [true; 3]);
    assert_eq!(
        claim("blob-b", vec![2, 3, 4]).await.expect("b"),
        [false, false, true],
        "another blob's records are duplicates"
    );
    assert_eq!(
        claim("blob-a", vec![1, 2]).await.expect("a again"),
        [true, true],
        "a blob sending its batch again keeps its records"
    );
    let long_ago = SystemTime::now() - hour;
    assert_eq!(store.prune_records(long_ago, 10).await.expect("prune"), 0);
    // After a prune: the embedded store writes claims a second after they are made, or then.
    assert!(
        store.footprint().await.expect("footprint").record_entries >= 4
            || store.replica().is_some(),
        "the embedded store counts claims exactly (PostgreSQL estimates)"
    );
    let later = SystemTime::now() + hour;
    assert_eq!(store.prune_records(later, 3).await.expect("prune"), 3);
    assert_eq!(store.prune_records(later, 3).await.expect("rest"), 1);
    assert_eq!(
        claim("blob-c", vec![2, 4]).await.expect("c"),
        [true, true],
        "pruned claims are free again"
    );
    // An expired claim (older than the window) is taken over without a prune.
    let short = Duration::from_millis(1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store
            .claim_records("blob-d", vec![2], short)
            .await
            .expect("d"),
        [true],
        "a claim older than the window does not hold"
    );
}

/// `tenant_backlog` counts a tenant's queued blobs, leased or not, whatever the case of its id,
/// up to the cap; completed and dead-lettered blobs leave it.
pub async fn tenant_backlog_counts_one_tenant_up_to_the_cap<S: Store>(store: &S) {
    let mut items: Vec<ContentRef> = (0..5)
        .map(|i| content_for("Tenant-A", "Audit.General", &format!("a{i}")))
        .collect();
    items.push(content_for("tenant-b", "Audit.General", "b0"));
    store.enqueue(items).await.expect("enqueue");
    assert_eq!(
        store
            .tenant_backlog("tenant-a", 100)
            .await
            .expect("backlog"),
        5
    );
    assert_eq!(
        store.tenant_backlog("TENANT-A", 3).await.expect("capped"),
        3
    );
    assert_eq!(store.tenant_backlog("tenant-b", 100).await.expect("b"), 1);
    assert_eq!(
        store.tenant_backlog("tenant-c", 100).await.expect("none"),
        0
    );
    let claimed = store.claim(6, LONG).await.expect("claim");
    assert_eq!(
        store.tenant_backlog("tenant-a", 100).await.expect("leased"),
        5,
        "leased blobs are still queued"
    );
    let a: Vec<&Claimed> = claimed
        .iter()
        .filter(|c| c.content.tenant_id == "Tenant-A")
        .collect();
    store.complete(a[0].seq).await.expect("complete");
    store.dead_letter(a[1].seq, "test").await.expect("dead");
    assert_eq!(
        store.tenant_backlog("tenant-a", 100).await.expect("after"),
        3
    );
}

/// `stats` counts pending (ready or waiting), leased, dead letters, and the oldest pending age.
pub async fn stats_count_each_state<S: Store>(store: &S) {
    let empty = store.stats().await.expect("stats");
    assert_eq!(
        (
            empty.pending,
            empty.leased,
            empty.dead_letters,
            empty.oldest_pending_age_secs
        ),
        (0, 0, 0, None)
    );
    let batch: Vec<ContentRef> = (0..5).map(|i| content(&format!("s-{i}"))).collect();
    store.enqueue(batch).await.expect("enqueue");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.leased), (5, 0));
    assert!(stats.oldest_pending_age_secs.is_some_and(|a| a < 60));
    let claimed = store.claim(3, LONG).await.expect("claim");
    store.complete(claimed[0].seq).await.expect("complete");
    store
        .dead_letter(claimed[1].seq, "gone")
        .await
        .expect("dead");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.leased, stats.dead_letters), (2, 1, 1));
    let rest = store.claim(10, LONG).await.expect("claim");
    assert_eq!(rest.len(), 2);
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.leased), (0, 3));
    assert_eq!(
        stats.oldest_pending_age_secs, None,
        "leased blobs are not pending"
    );
}

/// A blob's progress comes back with every later claim — after a release, a reschedule and an
/// expired lease — never moves backwards, is per blob, and is gone with `complete`.
pub async fn progress_is_kept_until_complete<S: Store>(store: &S) {
    store
        .enqueue(vec![content("big"), content("other")])
        .await
        .expect("enqueue");
    let claimed = store.claim(2, LONG).await.expect("claim");
    assert_eq!(ids(&claimed), ["big", "other"]);
    assert!(
        claimed.iter().all(|c| c.delivered == 0),
        "nothing delivered yet"
    );
    let seq = claimed[0].seq;
    store.record_progress(seq, 500).await.expect("progress");
    store
        .record_progress(seq, 200)
        .await
        .expect("smaller count");
    store.release(seq).await.expect("release");
    let back = store.claim(1, LONG).await.expect("claim");
    assert_eq!(
        (ids(&back)[0], back[0].delivered),
        ("big", 500),
        "never backwards"
    );

    store.record_progress(seq, 700).await.expect("progress");
    store
        .reschedule(seq, SystemTime::UNIX_EPOCH, "HTTP 503")
        .await
        .expect("reschedule");
    let back = store
        .claim(1, Duration::from_millis(50))
        .await
        .expect("claim");
    assert_eq!((back[0].delivered, back[0].attempts), (700, 1));
    let again = claim_within(store, 1, LONG).await;
    assert_eq!(
        (again[0].seq, again[0].delivered),
        (seq, 700),
        "an expired lease keeps it"
    );

    store.release(claimed[1].seq).await.expect("release");
    let other = store.claim(1, LONG).await.expect("claim");
    assert_eq!(
        (ids(&other)[0], other[0].delivered),
        ("other", 0),
        "per blob"
    );

    store.complete(seq).await.expect("complete");
    assert!(matches!(
        store.record_progress(seq, 800).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store
            .enqueue(vec![content("big")])
            .await
            .expect("enqueue")
            .duplicates,
        1
    );
}

/// Progress is durable: after the store is closed and opened again (`open` opens the same store;
/// the previous handle is dropped first), a claim of the blob resumes where it was.
pub async fn progress_survives_reopen<S, F, Fut>(mut open: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let store = open().await;
    store
        .enqueue(vec![content("durable")])
        .await
        .expect("enqueue");
    let claimed = store
        .claim(1, Duration::from_millis(50))
        .await
        .expect("claim");
    store
        .record_progress(claimed[0].seq, 4_000)
        .await
        .expect("progress");
    drop(store);
    let store = open().await;
    let back = claim_within(&store, 1, LONG).await;
    assert_eq!((back[0].seq, back[0].delivered), (claimed[0].seq, 4_000));
}

/// The completeness ledger: blob counters kept by the queue's own changes (queued once per new
/// contentId, done, dead with the id, dead no longer once requeued), counters added by
/// `ledger_add` merged per row, ranges per tenant and hour, prune by hour.
pub async fn ledger_counts_what_became_of_each_hour<S: Store>(store: &S) {
    use super::ledger::{LedgerCounts, LedgerDelta, LedgerKey};
    // `content` is created 2026-01-01T00:00:00Z.
    let h: i64 = 1_767_225_600;
    store
        .enqueue(vec![content("la"), content("lb"), content("lc")])
        .await
        .expect("enqueue");
    store.enqueue(vec![content("la")]).await.expect("enqueue");
    let claimed = claim_within(store, 3, LONG).await;
    let seq_of = |id: &str| {
        claimed
            .iter()
            .find(|c| c.content.content_id == id)
            .unwrap()
            .seq
    };
    store.complete(seq_of("la")).await.expect("complete");
    store.dead_letter(seq_of("lb"), "gone").await.expect("dead");
    let delta = |hour: i64| LedgerDelta {
        key: LedgerKey::new("T1", "Audit.General", hour),
        counts: LedgerCounts {
            announced: 2,
            parsed: 10,
            accepted: [("file".to_owned(), 9)].into(),
            ..Default::default()
        },
    };
    store
        .ledger_add(vec![delta(h), delta(h)])
        .await
        .expect("add");
    store.ledger_add(vec![delta(h + 3600)]).await.expect("add");
    let rows = store.ledger_range("T1", h, h + 3600).await.expect("range");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let c = &rows[0].counts;
    assert_eq!(rows[0].key, LedgerKey::new("t1", "Audit.General", h));
    assert_eq!((c.queued, c.done, c.dead), (3, 1, 1), "{c:?}");
    assert_eq!(c.dead_ids, ["lb"]);
    assert_eq!((c.announced, c.parsed), (4, 20));
    assert_eq!(c.accepted.get("file"), Some(&18));
    assert!(rows[0].updated_ms > 0);
    assert_eq!(
        store
            .ledger_range("t1", h, h + 7200)
            .await
            .expect("range")
            .len(),
        2
    );
    assert!(
        store
            .ledger_range("t2", h, h + 7200)
            .await
            .expect("range")
            .is_empty()
    );

    // Requeued, the blob is owed again; delivered, the hour is whole.
    let dead = store.dead_letters().await.expect("dead letters");
    store.requeue_dead(&[dead[0].seq]).await.expect("requeue");
    let back = claim_within(store, 1, LONG).await;
    store.complete(back[0].seq).await.expect("complete");
    store.complete(seq_of("lc")).await.expect("complete");
    let rows = store.ledger_range("t1", h, h + 3600).await.expect("range");
    let c = &rows[0].counts;
    assert_eq!((c.queued, c.done, c.dead), (3, 3, 0), "{c:?}");
    assert!(c.dead_ids.is_empty());

    let past = SystemTime::UNIX_EPOCH + Duration::from_secs((h + 3600 + 1) as u64);
    assert_eq!(store.ledger_prune(past, 100).await.expect("prune"), 1);
    let rows = store.ledger_range("t1", h, h + 7200).await.expect("range");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key.hour, h + 3600);
}
