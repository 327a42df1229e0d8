//! The default store: one redb file, `queue.redb`, under `last_value_storage`.
//!
//! # Layout
//!
//! | table       | key                        | value              | why                                   |
//! |-------------|----------------------------|--------------------|---------------------------------------|
//! | `meta`      | name                       | u64                | format, next seq, counters, clock     |
//! | `items`     | seq                        | JSON item          | the queued blobs, in arrival order    |
//! | `schedule_by_tenant` | (tenant, due ms, seq) | ()                | when each queued blob is claimable    |
//! | `leases`    | seq                        | lease-until ms     | the blobs a worker holds right now    |
//! | `dedup`     | contentId or record key    | first-seen ms      | the dedup set (blobs, Graph records)  |
//! | `dedup_age` | (first-seen ms, contentId) | ()                 | `prune` finds old ids without a scan  |
//! | `dead`      | seq                        | JSON dead letter   | given-up blobs with their reason      |
//! | `cursors`   | (tenant, content type)     | ns since the epoch | listing checkpoints (and `Graph.*`)   |
//! | `progress`  | seq                        | records accepted   | where a worker resumes a blob         |
//! | `records`   | record key (u128)          | (owner, first ms)  | record dedup: which blob delivers it  |
//! | `records_age` | (first-seen ms, key)     | ()                 | `prune_records` without a scan        |
//! | `subscription_starts` | (tenant, content type) | ms           | next allowed `subscriptions/start`    |
//!
//! Every queued blob has exactly one `schedule_by_tenant` entry: `(tenant, lease_until, seq)` while
//! leased, otherwise `(tenant, due, seq)` where `due` is its enqueue time or, after a `reschedule`,
//! its `not_before` (`tenant` in lower case). `claim` reads, for each tenant not skipped, that
//! tenant's part of the index from its start up to "now", and takes the oldest `(due, seq)` across
//! them; so it costs O(tenants · max · log n) however many blobs wait or are leased — also when a
//! paused tenant (its output is down) has a long backlog in front of the others'. A blob whose
//! lease expired is simply due again. Keying fresh blobs by their enqueue time (not 0) keeps
//! retries fair: a due retry is served in time order among fresh blobs instead of behind the whole
//! backlog.
//!
//! Format 1 (one `schedule` index keyed `(due, seq)`) is migrated at open: the index is rebuilt from
//! `items` (leases are released at open anyway).
//!
//! # Time
//!
//! Times are wall-clock milliseconds, except that the store's clock never goes backwards: when the
//! wall clock steps back, the store keeps counting forward (monotonically) from the last value it
//! handed out, and the last value is persisted so a restart does not go back either. So a stepped
//! clock cannot strand queued blobs or leases in the future; it only shortens a `not_before`
//! (computed by callers from the wall clock) by the size of the step.
//!
//! # Durability
//!
//! `enqueue`, `record_progress`, `complete`, `reschedule`, `dead_letter`, `advance_cursor` and
//! `prune` commit with
//! [`Durability::Immediate`] (fsync before returning). `claim`, `renew` and `release` commit with
//! [`Durability::None`]: lost in a crash, which only makes the blob claimable again — as does a
//! restart, since `open` releases every lease (a fresh process holds none). An `enqueue` whose
//! items are all duplicates changes nothing and commits nothing.
//!
//! # Progress
//!
//! `progress` holds, for a queued blob or a dead letter (same seq), how many of its records the
//! output accepted; a blob without an entry has none. `complete` removes the entry, `dead_letter`
//! leaves it (the dead letter keeps the blob's seq) and `requeue_dead` moves it to the new seq.
//! Adding the table needed no format change: an older build ignores it (and would only resend).
//!
//! # Dedup
//!
//! The dedup key is the contentId alone (Microsoft's ids are unique across tenants). `prune`
//! forgets ids by first-seen time only, also for a blob still queued: a blob is announced at most
//! 7 days, so after `store.dedup_retention` (8 days, [`super::retention`]) nobody announces it
//! again. Pruned pages are reused by later writes, so the file stops growing once a retention's
//! worth of entries is in it; `o365-collector compact` gives the space back to the filesystem.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::claim_filter::{self, ClaimFilter};
use super::ledger::{self, LedgerCounts, LedgerDelta, LedgerKey, LedgerRow};
use super::{
    Claimed, ContentRef, DeadLetter, EnqueueOutcome, Footprint, KeyHashing, Store, StoreError,
    StoreStats, owner_key,
};

/// redb's page cache. Its default (1 GiB) would let the process grow to a gigabyte once the file
/// is that large (a year's dedup sets are); the operating system's page cache serves the rest.
pub const CACHE_BYTES: usize = 128 << 20;

/// File name inside the store directory.
pub const FILE_NAME: &str = "queue.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new("items");
const SCHEDULE: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("schedule_by_tenant");
/// Format 1's index, dropped by the migration to format 2.
const SCHEDULE_V1: TableDefinition<(u64, u64), ()> = TableDefinition::new("schedule");
const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
const DEDUP_AGE: TableDefinition<(u64, &str), ()> = TableDefinition::new("dedup_age");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");
const PROGRESS: TableDefinition<u64, u64> = TableDefinition::new("progress");
/// Microsoft's 15-minute rule: (lower-case tenant, content type) → next allowed start, store ms.
const STARTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("subscription_starts");
/// Record dedup: record key → (owner blob, first-seen ms).
const RECORDS: TableDefinition<u128, (u64, u64)> = TableDefinition::new("records");
/// Record dedup by age: (first-seen ms, first key) → the keys one claim took, 16 bytes each. One
/// row a claim, not one a key: each insert into a B-tree rewrites a page, and this halves them.
const RECORDS_BY_CLAIM: TableDefinition<(u64, u128), &[u8]> =
    TableDefinition::new("records_by_claim");
/// The first layout of the age index (one row a key), converted at open.
/// The completeness ledger ([`ledger`]): (tenant, content type, hour) → [`StoredLedger`] JSON.
const LEDGER: TableDefinition<(&str, &str, i64), &[u8]> = TableDefinition::new("ledger");
/// The ledger's rows by hour, for the prune.
const LEDGER_AGE: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("ledger_age");
const RECORDS_AGE_V1: TableDefinition<(u64, u128), ()> = TableDefinition::new("records_age");

const META_NEXT_SEQ: &str = "next_seq";
const META_QUEUED: &str = "queued";
const META_DEAD: &str = "dead";
const META_CLOCK: &str = "clock_high_water_ms";
const META_FORMAT: &str = "format";
/// Bumped when the layout changes incompatibly; a file with another value is refused.
const FORMAT_VERSION: u64 = 2;

/// A queued blob as stored in `items`.
#[derive(Debug, Serialize, Deserialize)]
struct Item {
    content: ContentRef,
    attempts: u32,
    enqueued_ms: u64,
    /// Claimable from (when not leased); the first half of its `schedule` key.
    due_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Its completeness ledger hour (absent in items of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ledger_hour: Option<i64>,
}

impl Item {
    fn ledger_key(&self) -> LedgerKey {
        let hour = self.ledger_hour.unwrap_or_else(|| {
            ledger::blob_hour(
                self.content.content_created.as_deref(),
                from_ms(self.enqueued_ms),
            )
        });
        LedgerKey::new(&self.content.tenant_id, &self.content.content_type, hour)
    }
}

/// A ledger row as stored in `ledger`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredLedger {
    counts: LedgerCounts,
    updated_ms: u64,
}

/// Ledger counters added by [`Store::ledger_add`] and not yet written: like record claims they
/// go into the first durable write transaction [`CLAIMS_WRITE_EVERY`] after the oldest was added,
/// or a timer's, and the close's (`in_txn` while it runs, until it commits; written again by the
/// next one if it was aborted). So a busy store writes the workers' and sources' rows about every
/// 5 seconds instead of in every transaction. Three locks, taken in this order: `in_txn` is held
/// across a commit so that a reader sees counters either in the file or in memory, `pending` and
/// `since` only for a moment, so that adding never waits for an fsync.
#[derive(Default)]
struct PendingLedger {
    in_txn: Mutex<Option<LedgerMap>>,
    pending: Mutex<LedgerMap>,
    /// When the oldest pending counter was added (`None`: nothing pending, no timer armed).
    since: Mutex<Option<Instant>>,
}

type LedgerMap = std::collections::BTreeMap<LedgerKey, LedgerCounts>;

/// A dead letter as stored in `dead`.
#[derive(Debug, Serialize, Deserialize)]
struct DeadItem {
    content: ContentRef,
    reason: String,
    attempts: u32,
    enqueued_ms: u64,
    dead_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ledger_hour: Option<i64>,
}

/// redb-backed [`Store`]. Clones share the one open file (cheap: an `Arc`).
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

/// The last time handed out, and when (monotonic), so the clock keeps ticking through a step back.
struct Clock {
    last_ms: u64,
    last_at: Instant,
}

/// The file and its state across reopens.
struct Shared {
    dir: PathBuf,
    path: PathBuf,
    /// The open database; `None` after an I/O error or damage closed it, until a reopen succeeds.
    /// Operations hold the read lock for their whole run, so closing (the write lock) waits until
    /// no transaction is alive: redb refuses a second open of a file while the first handle lives.
    db: RwLock<Option<Inner>>,
    /// Why the database was closed, and when the next reopen may be tried (the limit holds
    /// across cycles: a handle that fails again at once is reopened a second later, not in a loop).
    closed: Mutex<Closed>,
    /// `enqueue` calls waiting for the group committer (kept across reopens).
    commits: Mutex<CommitQueue>,
}

#[derive(Default)]
struct Closed {
    reason: Option<StoreError>,
    next_reopen: Option<Instant>,
    /// The clock of the closed handle, so the reopened one never hands out an earlier time.
    clock_ms: u64,
}

struct Inner {
    db: Database,
    path: PathBuf,
    clock: Mutex<Clock>,
    /// Set when redb reported an I/O error or damage: redb fails every later operation of this
    /// handle ("Previous I/O error occurred"), so the handle is closed and the file reopened.
    failed: AtomicBool,
    /// Record claims decided but not yet written (see [`PendingClaims`]).
    pending: Mutex<PendingClaims>,
    /// Ledger counters not yet written (see [`PendingLedger`]).
    ledger: PendingLedger,
}

/// Record claims are decided against the file and these, and written [`CLAIMS_WRITE_EVERY`]
/// later by the next write transaction (a blob's progress or completion, any change to the
/// queue) or by a timer, whichever comes first, and when the store closes. So a claim never
/// waits for another transaction's fsync, and each page of the claims index is written about
/// every 5 seconds instead of once a batch (the claims of one batch spread over the index: about
/// a page each; a large blob's over the same pages, each write rewriting most of them). A crash
/// loses at most the last 5 seconds' claims: a record Microsoft repeats in another blob may then
/// get through once.
#[derive(Default)]
struct PendingClaims {
    /// Key → (owner, first seen ms), for lookups until written.
    keys: HashMap<u128, (u64, u64), KeyHashing>,
    /// One row a claim call, in order.
    rows: VecDeque<ClaimRow>,
    /// When the oldest row was added.
    since: Option<Instant>,
    /// Rows the open write transaction holds (removed once it commits).
    in_txn: usize,
    /// A timer will write them.
    timer: bool,
    /// Keys surely not claimed lately (see [`ClaimFilter`]): made by the first claim, from the
    /// rows of its window.
    filter: Option<ClaimFilter>,
}

impl Drop for Inner {
    /// Pending record claims are written as the store closes (a reopen after a failure tries too).
    fn drop(&mut self) {
        if !lock(&self.pending).rows.is_empty() || !lock(&self.ledger.pending).is_empty() {
            let _ = self.write_claims_now();
        }
    }
}

/// The keys of a claims row (`RECORDS_BY_CLAIM`'s value: 16 bytes each, little-endian).
fn row_keys(bytes: &[u8]) -> impl Iterator<Item = u128> + '_ {
    bytes
        .chunks_exact(16)
        .map(|k| u128::from_le_bytes(k.try_into().unwrap_or_default()))
}

/// How long record claims wait before they are written (see [`PendingClaims`]).
const CLAIMS_WRITE_EVERY: Duration = Duration::from_secs(5);

struct ClaimRow {
    at: u64,
    owner: u64,
    keys: Vec<u128>,
}

/// Pending claimed keys beyond which a claim writes them itself.
const MAX_PENDING_CLAIMS: usize = 500_000;

/// Most `enqueue` calls committed in one transaction: bounds its size and the wait of the last.
const MAX_GROUP_CALLS: usize = 1024;

/// Environment variable that, set to `off`, makes every `enqueue` commit on its own (the path
/// before group commit), so benchmarks can compare the two in one build.
pub const GROUP_COMMIT_ENV: &str = "O365_STORE_GROUP_COMMIT";

fn group_commit_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(GROUP_COMMIT_ENV).map_or(true, |v| v != "off"))
}

/// One `enqueue` call waiting for its group to be durable.
struct Waiting {
    items: Vec<ContentRef>,
    reply: tokio::sync::oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
}

#[derive(Default)]
struct CommitQueue {
    waiting: Vec<Waiting>,
    /// A committer is running; it takes every waiting call before it stops.
    running: bool,
}

/// Lets the next `enqueue` start a committer again should this one end without emptying the
/// queue (a panic, or a runtime shutting down before it ran); the calls left waiting get an error.
struct CommitterGuard {
    shared: Arc<Shared>,
    done: bool,
}

impl Drop for CommitterGuard {
    fn drop(&mut self) {
        if !self.done {
            let mut q = self.shared.lock_commits();
            q.running = false;
            q.waiting.clear();
        }
    }
}

/// Sends each call of a group its own outcome, or the group's error.
fn answer(
    replies: Vec<tokio::sync::oneshot::Sender<Result<EnqueueOutcome, StoreError>>>,
    result: Result<Vec<EnqueueOutcome>, StoreError>,
) {
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(clone_error(&e)));
            }
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// At most one reopen attempt this often: a reopen checks the whole file.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// Bytes the readiness probe writes (and fsyncs) next to the file: room for a batch of notifications.
const PROBE_BYTES: usize = 64 * 1024;
/// Name of the readiness probe's file in the store directory (with the pid and a counter;
/// removed after each probe).
const PROBE_FILE: &str = ".write-probe";

impl EmbeddedStore {
    /// Writes the pending record claims and ledger counters after [`CLAIMS_WRITE_EVERY`], unless a
    /// durable write carried them first. Weak: a store closed meanwhile wrote them as it closed.
    fn write_claims_later(&self) {
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep(CLAIMS_WRITE_EVERY).await;
            if let Some(shared) = shared.upgrade() {
                let _ = tokio::task::spawn_blocking(move || {
                    shared.with(|inner| inner.write_claims_now())
                })
                .await;
            }
        });
    }

    /// Opens (creating if needed) `dir/queue.redb`, checks the whole file, and releases every
    /// lease a previous process held.
    ///
    /// Errors: [`StoreError::Unavailable`] when another process (or another handle in this one)
    /// has the file open, or on I/O errors; [`StoreError::Corrupt`] when the file is not a store of
    /// ours or is damaged (never a panic: redb checks every page's checksum at open).
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create store directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        let inner = panic::catch_unwind(|| Inner::open(&path, 0, true))
            .unwrap_or_else(|payload| Err(corrupt(&path, &panic_text(&payload))))?;
        Ok(EmbeddedStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                path,
                db: RwLock::new(Some(inner)),
                closed: Mutex::new(Closed::default()),
                commits: Mutex::default(),
            }),
        })
    }

    /// Gives the pages freed by pruning back to the filesystem: rewrites `dir/queue.redb` in place
    /// (redb's compaction) and answers its size before and after. The collector must not run:
    /// the file is opened exclusively. A crash during compaction leaves a valid file (redb commits
    /// each step).
    pub fn compact(dir: &Path) -> Result<(u64, u64), StoreError> {
        let path = dir.join(FILE_NAME);
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        if !path.exists() {
            return Err(StoreError::Unavailable(format!(
                "{} does not exist: nothing to compact",
                path.display()
            )));
        }
        let before = size(&path);
        let mut db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .open(&path)
            .map_err(|e| open_error(&path, e))?;
        while db.compact().map_err(|e| {
            StoreError::Unavailable(format!("{}: compaction failed: {e}", path.display()))
        })? {}
        drop(db);
        Ok((before, size(&path)))
    }

    /// Moves the store's clock forward by `by` (soak benches and tests: months in seconds). The
    /// clock never goes back, so it keeps counting from the later time.
    #[cfg(any(test, feature = "test-util"))]
    pub fn advance_clock(&self, by: Duration) -> Result<(), StoreError> {
        self.shared.with(|inner| {
            let mut clock = lock(&inner.clock);
            clock.last_ms = clock.last_ms.saturating_add(duration_ms(by));
            Ok(())
        })
    }

    /// The redb file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Dead letters, oldest first, with the reason each was given up.
    pub async fn dead_letters(&self) -> Result<Vec<(ContentRef, String)>, StoreError> {
        let all = self.dead_letter_details().await?;
        Ok(all.into_iter().map(|d| (d.content, d.reason)).collect())
    }

    /// Dead letters with their seq, attempts and times, oldest first.
    pub async fn dead_letter_details(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Store::dead_letters(self).await
    }

    /// Runs a blocking redb operation off the async executor.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.with(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl Shared {
    fn lock_commits(&self) -> std::sync::MutexGuard<'_, CommitQueue> {
        // A poisoned lock only means a panic between two plain assignments.
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open database, reopening it first if an earlier failure closed it. A
    /// failure that leaves the handle unusable (I/O error, damage, a panic inside redb) closes it,
    /// so the next call reopens the file instead of failing forever.
    fn with<T>(&self, f: impl FnOnce(&Inner) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.reopen_if_closed()?;
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(inner) = db.as_ref() else {
            return Err(self.closed_reason());
        };
        let result = match panic::catch_unwind(AssertUnwindSafe(|| f(inner))) {
            Ok(result) => result,
            Err(payload) => {
                inner.failed.store(true, Ordering::Release);
                Err(corrupt(&self.path, &panic_text(&payload)))
            }
        };
        let failed = inner.failed.load(Ordering::Acquire);
        drop(db);
        if failed {
            let reason = match &result {
                Err(e) => clone_error(e),
                Ok(_) => StoreError::Unavailable(format!("{}: I/O error", self.path.display())),
            };
            self.close(reason);
        }
        result
    }

    /// Drops the handle (redb then releases the file) and remembers why.
    fn close(&self, reason: StoreError) {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if db
            .as_ref()
            .is_some_and(|i| i.failed.load(Ordering::Acquire))
        {
            let clock = db.as_ref().map_or(0, |i| i.clock_ms());
            *db = None;
            drop(db);
            error!(store = %self.path.display(), error = %reason, "store closed after a failure; it is reopened once its directory takes writes again");
            let mut closed = lock(&self.closed);
            closed.reason = Some(reason);
            closed.clock_ms = clock;
        }
    }

    fn closed_reason(&self) -> StoreError {
        self.reason_of(&lock(&self.closed))
    }

    /// Reopens a closed database, at most once per [`REOPEN_EVERY`], once its directory takes a
    /// write again.
    fn reopen_if_closed(&self) -> Result<(), StoreError> {
        if self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return Ok(());
        }
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if db.is_some() {
            return Ok(());
        }
        let mut closed = lock(&self.closed);
        let now = Instant::now();
        if closed.next_reopen.is_some_and(|at| now < at) {
            return Err(self.reason_of(&closed));
        }
        closed.next_reopen = Some(now + REOPEN_EVERY);
        // Not before the directory takes a write again: a store reopened on a full disk would
        // only fail its next write, and the workers would fetch blobs they cannot complete.
        if let Err(e) = probe_dir(&self.dir) {
            let e = StoreError::Unavailable(e);
            closed.reason = Some(clone_error(&e));
            return Err(e);
        }
        let clock = closed.clock_ms;
        // Leases stay as they are: the workers of this process still hold their blobs.
        let opened = panic::catch_unwind(|| Inner::open(&self.path, clock, false))
            .unwrap_or_else(|payload| Err(corrupt(&self.path, &panic_text(&payload))));
        match opened {
            Ok(inner) => {
                *db = Some(inner);
                closed.reason = None;
                info!(store = %self.path.display(), "store reopened");
                Ok(())
            }
            Err(e) => {
                warn!(store = %self.path.display(), error = %e, "store still unavailable");
                closed.reason = Some(clone_error(&e));
                Err(e)
            }
        }
    }

    fn reason_of(&self, closed: &Closed) -> StoreError {
        closed.reason.as_ref().map_or_else(
            || StoreError::Unavailable(format!("{}: closed", self.path.display())),
            clone_error,
        )
    }

    /// Readiness: the database is open (reopened if it was closed) and the directory takes a
    /// write of [`PROBE_BYTES`] with fsync — a full or read-only filesystem fails here even while
    /// no notification arrives.
    fn probe(&self) -> Result<(), StoreError> {
        self.with(|_| Ok(()))?;
        probe_dir(&self.dir).map_err(StoreError::Unavailable)
    }
}

impl Store for EmbeddedStore {
    async fn enqueue(&self, items: Vec<ContentRef>) -> Result<EnqueueOutcome, StoreError> {
        if items.is_empty() {
            return Ok(EnqueueOutcome::default());
        }
        if !group_commit_enabled() {
            return self
                .run(move |inner| inner.enqueue_group(vec![items]))
                .await
                .map(|o| o.into_iter().next().unwrap_or_default());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = self.shared.lock_commits();
            q.waiting.push(Waiting { items, reply });
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let guard = CommitterGuard {
                shared: Arc::clone(&self.shared),
                done: false,
            };
            drop(tokio::task::spawn_blocking(move || {
                Inner::commit_groups(guard)
            }));
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store committer stopped".into()))?
    }

    async fn claim_except(
        &self,
        max: usize,
        lease: Duration,
        skip: &[String],
    ) -> Result<Vec<Claimed>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let skip = skip.to_vec();
        self.run(move |inner| inner.claim(max, lease, &skip)).await
    }

    async fn release(&self, seq: u64) -> Result<(), StoreError> {
        self.run(move |inner| inner.release(seq)).await
    }

    async fn renew(&self, seq: u64, lease: Duration) -> Result<(), StoreError> {
        self.run(move |inner| inner.renew(seq, lease)).await
    }

    async fn record_progress(&self, seq: u64, delivered: u64) -> Result<(), StoreError> {
        self.run(move |inner| inner.record_progress(seq, delivered))
            .await
    }

    async fn complete(&self, seq: u64) -> Result<(), StoreError> {
        self.run(move |inner| inner.complete(seq)).await
    }

    async fn reschedule(
        &self,
        seq: u64,
        not_before: SystemTime,
        reason: &str,
    ) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.run(move |inner| inner.reschedule(seq, not_before, reason))
            .await
    }

    async fn dead_letter(&self, seq: u64, reason: &str) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.run(move |inner| inner.dead_letter(seq, reason)).await
    }

    async fn cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        let (t, c) = (tenant_id.to_owned(), content_type.to_owned());
        self.run(move |inner| inner.cursor(&t, &c)).await
    }

    async fn advance_cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
        to: SystemTime,
    ) -> Result<(), StoreError> {
        let (t, c) = (tenant_id.to_owned(), content_type.to_owned());
        self.run(move |inner| inner.advance_cursor(&t, &c, to))
            .await
    }

    async fn claim_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        wait: Duration,
    ) -> Result<Option<SystemTime>, StoreError> {
        let (t, c) = (tenant_id.to_ascii_lowercase(), content_type.to_owned());
        self.run(move |inner| inner.claim_start(&t, &c, wait)).await
    }

    async fn set_next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        not_before: SystemTime,
    ) -> Result<(), StoreError> {
        let (t, c) = (tenant_id.to_ascii_lowercase(), content_type.to_owned());
        self.run(move |inner| inner.set_start(&t, &c, not_before))
            .await
    }

    async fn next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        let (t, c) = (tenant_id.to_ascii_lowercase(), content_type.to_owned());
        self.run(move |inner| inner.next_start(&t, &c)).await
    }

    async fn prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        self.run(move |inner| inner.prune(older_than, max)).await
    }

    async fn claim_records(
        &self,
        owner: &str,
        keys: Vec<u128>,
        window: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let owner = owner_key(owner);
        let (keep, arm_timer) = self
            .run(move |inner| inner.claim_records(owner, &keys, window))
            .await?;
        if arm_timer {
            self.write_claims_later();
        }
        Ok(keep)
    }

    async fn prune_records(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        self.run(move |inner| inner.prune_records(older_than, max))
            .await
    }

    async fn tenant_backlog(&self, tenant_id: &str, cap: u64) -> Result<u64, StoreError> {
        let t = tenant_id.to_ascii_lowercase();
        self.run(move |inner| inner.tenant_backlog(&t, cap)).await
    }

    async fn ledger_add(&self, deltas: Vec<LedgerDelta>) -> Result<(), StoreError> {
        // No transaction of its own: the next durable write carries them (see `PendingLedger`).
        if !ledger::enabled() {
            return Ok(());
        }
        // A gap is part of the verdict: it goes with the next durable write (before the cursor
        // moves past the loss), not a second later.
        let urgent = deltas.iter().any(|d| d.counts.gaps > 0);
        let arm_timer = self.shared.with(|inner| {
            ledger::merge_into(&mut lock(&inner.ledger.pending), deltas);
            let mut since = lock(&inner.ledger.since);
            let t = since.unwrap_or_else(Instant::now);
            let due = if urgent {
                t.checked_sub(CLAIMS_WRITE_EVERY).unwrap_or(t)
            } else {
                t
            };
            Ok(since.replace(due).is_none())
        })?;
        if arm_timer {
            self.write_claims_later();
        }
        Ok(())
    }

    async fn ledger_range(
        &self,
        tenant_id: &str,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let t = tenant_id.to_owned();
        self.run(move |inner| inner.ledger_range(&t, from_hour, to_hour))
            .await
    }

    async fn ledger_prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        self.run(move |inner| inner.ledger_prune(older_than, max))
            .await
    }

    async fn footprint(&self) -> Result<Footprint, StoreError> {
        let path = self.shared.path.clone();
        self.run(move |inner| {
            let (dedup_entries, record_entries) = inner.dedup_entries()?;
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            Ok(Footprint {
                dedup_entries,
                record_entries,
                bytes,
            })
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.run(|inner| inner.stats()).await
    }

    async fn dead_letters_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.run(move |inner| inner.dead_letters(after, limit))
            .await
    }

    async fn requeue_dead(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        let seqs = seqs.to_vec();
        self.run(move |inner| inner.requeue_dead(&seqs)).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.probe())
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl Inner {
    /// Opens the file with redb's integrity check (every page's checksum: a damaged file is an
    /// error, not a panic later) and prepares it; `clock_ms`: a time already handed out.
    fn open(path: &Path, clock_ms: u64, release_leases: bool) -> Result<Inner, StoreError> {
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        let inner = Inner {
            db,
            path: path.to_path_buf(),
            clock: Mutex::new(Clock {
                last_ms: clock_ms,
                last_at: Instant::now(),
            }),
            failed: AtomicBool::new(false),
            pending: Mutex::new(PendingClaims::default()),
            ledger: PendingLedger::default(),
        };
        inner.init(release_leases)?;
        Ok(inner)
    }

    /// The last time this handle handed out.
    fn clock_ms(&self) -> u64 {
        lock(&self.clock).last_ms
    }

    /// Creates the tables, checks the format, loads the clock and (at start-up) releases all leases.
    fn init(&self, release_leases: bool) -> Result<(), StoreError> {
        let txn = self.write(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut migrate = false;
            match get_u64(&meta, META_FORMAT).map_err(|e| self.err(e))? {
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION)
                        .map_err(|e| self.err(e))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(1) => {
                    migrate = true;
                    meta.insert(META_FORMAT, FORMAT_VERSION)
                        .map_err(|e| self.err(e))?;
                }
                Some(other) => {
                    return Err(StoreError::Corrupt(format!(
                        "{}: store format {other}, this build reads format {FORMAT_VERSION}",
                        self.path.display()
                    )));
                }
            }
            let clock = get_u64(&meta, META_CLOCK).map_err(|e| self.err(e))?;
            {
                let mut c = lock(&self.clock);
                c.last_ms = c.last_ms.max(clock.unwrap_or(0));
                c.last_at = Instant::now();
            }

            if migrate {
                txn.delete_table(SCHEDULE_V1).map_err(|e| self.err(e))?;
            }
            let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
            let mut leases = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            if migrate {
                // Every queued blob gets its entry, due when it was due (leases are void anyway).
                leases.retain(|_, _| false).map_err(|e| self.err(e))?;
                for entry in items.iter().map_err(|e| self.err(e))? {
                    let (seq, _) = entry.map_err(|e| self.err(e))?;
                    let seq = seq.value();
                    if let Some(item) = self.read_item(&items, seq)? {
                        let t = tenant_key(&item);
                        schedule
                            .insert((t.as_str(), item.due_ms, seq), ())
                            .map_err(|e| self.err(e))?;
                    }
                }
            }
            // A fresh process holds no lease: every leased blob becomes due again.
            // A reopen after a failure keeps them: this process's workers still hold their blobs.
            while let Some((seq, until)) = {
                let first = if release_leases {
                    leases.pop_first().map_err(|e| self.err(e))?
                } else {
                    None
                };
                first.map(|(k, v)| (k.value(), v.value()))
            } {
                if let Some(item) = self.read_item(&items, seq)? {
                    let t = tenant_key(&item);
                    schedule
                        .remove((t.as_str(), until, seq))
                        .map_err(|e| self.err(e))?;
                    schedule
                        .insert((t.as_str(), item.due_ms, seq), ())
                        .map_err(|e| self.err(e))?;
                }
            }
            // Make sure every table exists so read transactions can open them.
            txn.open_table(DEDUP).map_err(|e| self.err(e))?;
            txn.open_table(DEDUP_AGE).map_err(|e| self.err(e))?;
            txn.open_table(DEAD).map_err(|e| self.err(e))?;
            txn.open_table(CURSORS).map_err(|e| self.err(e))?;
            txn.open_table(STARTS).map_err(|e| self.err(e))?;
            txn.open_table(PROGRESS).map_err(|e| self.err(e))?;
            txn.open_table(RECORDS).map_err(|e| self.err(e))?;
            txn.open_table(LEDGER).map_err(|e| self.err(e))?;
            txn.open_table(LEDGER_AGE).map_err(|e| self.err(e))?;
            self.convert_records_age(&txn)?;
        }
        self.commit(txn)
    }

    /// Rewrites the one-row-a-key age index of earlier versions as rows per first-seen time.
    fn convert_records_age(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut by_claim = txn.open_table(RECORDS_BY_CLAIM).map_err(|e| self.err(e))?;
        let exists = txn
            .list_tables()
            .map_err(|e| self.err(e))?
            .any(|t| redb::TableHandle::name(&t) == redb::TableHandle::name(&RECORDS_AGE_V1));
        if !exists {
            return Ok(());
        }
        {
            let old = txn.open_table(RECORDS_AGE_V1).map_err(|e| self.err(e))?;
            let mut row: Option<(u64, u128, Vec<u8>)> = None;
            for entry in old.iter().map_err(|e| self.err(e))? {
                let (ms, key) = entry.map_err(|e| self.err(e))?.0.value();
                match &mut row {
                    Some((at, _, keys)) if *at == ms => keys.extend_from_slice(&key.to_le_bytes()),
                    _ => {
                        if let Some((at, first, keys)) = row.take() {
                            by_claim
                                .insert((at, first), keys.as_slice())
                                .map_err(|e| self.err(e))?;
                        }
                        row = Some((ms, key, key.to_le_bytes().to_vec()));
                    }
                }
            }
            if let Some((at, first, keys)) = row {
                by_claim
                    .insert((at, first), keys.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.delete_table(RECORDS_AGE_V1).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Adds the blobs of several `enqueue` calls in one write transaction (one fsync), in call
    /// order; one outcome per call. An id repeated within the group counts as a duplicate of the
    /// call that named it first, as if the calls had committed one after another.
    fn enqueue_group(
        &self,
        batches: Vec<Vec<ContentRef>>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let now = self.now_ms();
        let txn = self.write(Durability::Immediate)?;
        let mut outcomes = vec![EnqueueOutcome::default(); batches.len()];
        let mut added = 0usize;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
            let mut dedup = txn.open_table(DEDUP).map_err(|e| self.err(e))?;
            let mut dedup_age = txn.open_table(DEDUP_AGE).map_err(|e| self.err(e))?;
            let mut next_seq = get_u64(&meta, META_NEXT_SEQ)
                .map_err(|e| self.err(e))?
                .unwrap_or(1);
            let mut in_group: HashSet<String> = HashSet::new();
            let mut queued_by_hour: std::collections::BTreeMap<LedgerKey, LedgerCounts> =
                Default::default();
            for (batch, outcome) in batches.into_iter().zip(outcomes.iter_mut()) {
                for mut content in batch {
                    if let Some(records) = content.records.take() {
                        // Carried records: each identity is remembered like a contentId.
                        let mut fresh = Vec::with_capacity(records.len());
                        for r in records {
                            let seen = in_group.contains(&r.key)
                                || dedup
                                    .get(r.key.as_str())
                                    .map_err(|e| self.err(e))?
                                    .is_some();
                            if seen {
                                continue;
                            }
                            dedup.insert(r.key.as_str(), now).map_err(|e| self.err(e))?;
                            dedup_age
                                .insert((now, r.key.as_str()), ())
                                .map_err(|e| self.err(e))?;
                            in_group.insert(r.key.clone());
                            fresh.push(r);
                        }
                        if fresh.is_empty() {
                            outcome.duplicates += 1;
                            continue;
                        }
                        // Named after its first new record, so it is new itself.
                        content.content_id = format!("page:{}", fresh[0].key);
                        content.records = Some(fresh);
                    }
                    let seen = in_group.contains(&content.content_id)
                        || dedup
                            .get(content.content_id.as_str())
                            .map_err(|e| self.err(e))?
                            .is_some();
                    if seen {
                        outcome.duplicates += 1;
                        continue;
                    }
                    dedup
                        .insert(content.content_id.as_str(), now)
                        .map_err(|e| self.err(e))?;
                    dedup_age
                        .insert((now, content.content_id.as_str()), ())
                        .map_err(|e| self.err(e))?;
                    in_group.insert(content.content_id.clone());
                    let seq = next_seq;
                    next_seq += 1;
                    let hour = ledger::blob_hour(content.content_created.as_deref(), from_ms(now));
                    let key = LedgerKey::new(&content.tenant_id, &content.content_type, hour);
                    queued_by_hour.entry(key).or_default().queued += 1;
                    self.queue_new(&mut items, &mut schedule, seq, (content, hour), now, None)?;
                    outcome.added += 1;
                }
                added += outcome.added;
            }
            if added > 0 {
                meta.insert(META_NEXT_SEQ, next_seq)
                    .map_err(|e| self.err(e))?;
                add_u64(&mut meta, META_QUEUED, added as i64).map_err(|e| self.err(e))?;
                meta.insert(META_CLOCK, now).map_err(|e| self.err(e))?;
            }
            for (key, counts) in queued_by_hour {
                self.ledger_update(&txn, &key, now, |c| c.add(&counts))?;
            }
        }
        if added == 0 && !self.ledger_in_txn() {
            // All duplicates: what made them duplicates is already durable.
            txn.abort().map_err(|e| self.err(e))?;
        } else {
            self.commit(txn)?;
        }
        Ok(outcomes)
    }

    /// The group committer's loop, on a blocking thread: takes every waiting `enqueue` call,
    /// commits them together, answers each, and repeats until none is waiting. Calls that arrive
    /// during a commit (its fsync) form the next group. The last group is answered only after the
    /// committer let go of the store, so a caller that drops it next can reopen the file at once.
    fn commit_groups(mut guard: CommitterGuard) {
        loop {
            let group: Vec<Waiting> = {
                let mut q = guard.shared.lock_commits();
                let n = q.waiting.len().min(MAX_GROUP_CALLS);
                q.waiting.drain(..n).collect()
            };
            let (batches, replies): (Vec<_>, Vec<_>) =
                group.into_iter().map(|w| (w.items, w.reply)).unzip();
            let result = if batches.is_empty() {
                Ok(Vec::new())
            } else {
                guard.shared.with(|inner| inner.enqueue_group(batches))
            };
            let last = {
                let mut q = guard.shared.lock_commits();
                if q.waiting.is_empty() {
                    q.running = false;
                    true
                } else {
                    false
                }
            };
            if last {
                guard.done = true;
                drop(guard);
                answer(replies, result);
                return;
            }
            answer(replies, result);
        }
    }

    fn claim(
        &self,
        max: usize,
        lease: Duration,
        skip: &[String],
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = self.now_ms();
        let until = now.saturating_add(duration_ms(lease));
        let txn = self.write(Durability::None)?;
        let mut claimed = Vec::new();
        {
            let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let progress = txn.open_table(PROGRESS).map_err(|e| self.err(e))?;
            let mut schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
            let mut leases = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            // The oldest due entries of each tenant not skipped, then the oldest of all.
            let mut due: Vec<(u64, u64, String)> = Vec::new();
            let mut tenant: Option<String> = None;
            loop {
                let next = match &tenant {
                    None => schedule.first().map_err(|e| self.err(e))?,
                    Some(t) => {
                        let after = (t.as_str(), u64::MAX, u64::MAX);
                        let mut r = schedule
                            .range::<(&str, u64, u64)>((Bound::Excluded(after), Bound::Unbounded))
                            .map_err(|e| self.err(e))?;
                        r.next().transpose().map_err(|e| self.err(e))?
                    }
                };
                let Some((key, _)) = next else { break };
                let t = key.value().0.to_owned();
                if !skip.iter().any(|s| s.eq_ignore_ascii_case(&t)) {
                    for entry in schedule
                        .range((t.as_str(), 0, 0)..=(t.as_str(), now, u64::MAX))
                        .map_err(|e| self.err(e))?
                        .take(max)
                    {
                        let (key, _) = entry.map_err(|e| self.err(e))?;
                        let (_, due_ms, seq) = key.value();
                        due.push((due_ms, seq, t.clone()));
                    }
                }
                tenant = Some(t);
            }
            due.sort_unstable();
            due.truncate(max);
            for (due_ms, seq, t) in due {
                schedule
                    .remove((t.as_str(), due_ms, seq))
                    .map_err(|e| self.err(e))?;
                let Some(item) = self.read_item(&items, seq)? else {
                    // A schedule entry without its item cannot happen; drop it rather than stall.
                    leases.remove(seq).map_err(|e| self.err(e))?;
                    continue;
                };
                schedule
                    .insert((t.as_str(), until, seq), ())
                    .map_err(|e| self.err(e))?;
                leases.insert(seq, until).map_err(|e| self.err(e))?;
                let delivered = progress
                    .get(seq)
                    .map_err(|e| self.err(e))?
                    .map_or(0, |v| v.value());
                claimed.push(Claimed {
                    seq,
                    content: item.content,
                    attempts: item.attempts,
                    enqueued_at: from_ms(item.enqueued_ms),
                    delivered,
                });
            }
        }
        if claimed.is_empty() {
            txn.abort().map_err(|e| self.err(e))?;
        } else {
            self.commit(txn)?;
        }
        Ok(claimed)
    }

    fn renew(&self, seq: u64, lease: Duration) -> Result<(), StoreError> {
        let until = self.now_ms().saturating_add(duration_ms(lease));
        // Without owner tokens a renew on an unleased blob (e.g. after a restart) takes the lease:
        // the caller says it is still working on it.
        self.set_lease(seq, Some(until))
    }

    fn release(&self, seq: u64) -> Result<(), StoreError> {
        self.set_lease(seq, None)
    }

    /// Leases the blob until `until`, or with `None` gives it back due at its own `due_ms`.
    fn set_lease(&self, seq: u64, until: Option<u64>) -> Result<(), StoreError> {
        let txn = self.write(Durability::None)?;
        {
            let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
            let mut leases = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            let item = self
                .read_item(&items, seq)?
                .ok_or(StoreError::NotFound(seq))?;
            let (t, at, _) = schedule_key(&leases, &item, seq).map_err(|e| self.err(e))?;
            schedule
                .remove((t.as_str(), at, seq))
                .map_err(|e| self.err(e))?;
            match until {
                Some(until) => {
                    leases.insert(seq, until).map_err(|e| self.err(e))?;
                }
                None => {
                    leases.remove(seq).map_err(|e| self.err(e))?;
                }
            }
            schedule
                .insert((t.as_str(), until.unwrap_or(item.due_ms), seq), ())
                .map_err(|e| self.err(e))?;
        }
        self.commit(txn)
    }

    fn record_progress(&self, seq: u64, delivered: u64) -> Result<(), StoreError> {
        let txn = self.write(Durability::Immediate)?;
        let moved = {
            let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut progress = txn.open_table(PROGRESS).map_err(|e| self.err(e))?;
            if items.get(seq).map_err(|e| self.err(e))?.is_none() {
                return Err(StoreError::NotFound(seq));
            }
            let current = progress
                .get(seq)
                .map_err(|e| self.err(e))?
                .map_or(0, |v| v.value());
            if delivered > current {
                progress.insert(seq, delivered).map_err(|e| self.err(e))?;
            }
            delivered > current
        };
        if moved || lock(&self.pending).in_txn > 0 || self.ledger_in_txn() {
            self.commit(txn)
        } else {
            txn.abort().map_err(|e| self.err(e))
        }
    }

    fn complete(&self, seq: u64) -> Result<(), StoreError> {
        let now = self.now_ms();
        let txn = self.write(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let item = self.unqueue(&txn, seq)?;
            self.ledger_update(&txn, &item.ledger_key(), now, |c| c.done += 1)?;
            let mut progress = txn.open_table(PROGRESS).map_err(|e| self.err(e))?;
            progress.remove(seq).map_err(|e| self.err(e))?;
            add_u64(&mut meta, META_QUEUED, -1).map_err(|e| self.err(e))?;
            meta.insert(META_CLOCK, now).map_err(|e| self.err(e))?;
        }
        self.commit(txn)
    }

    fn reschedule(
        &self,
        seq: u64,
        not_before: SystemTime,
        reason: String,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let txn = self.write(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
            let mut leases = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            let mut item = self
                .read_item(&items, seq)?
                .ok_or(StoreError::NotFound(seq))?;
            let (t, at, _) = schedule_key(&leases, &item, seq).map_err(|e| self.err(e))?;
            schedule
                .remove((t.as_str(), at, seq))
                .map_err(|e| self.err(e))?;
            leases.remove(seq).map_err(|e| self.err(e))?;
            item.attempts = item.attempts.saturating_add(1);
            // Rounded up: a blob is never claimable before its `not_before`, not even within its millisecond.
            item.due_ms = to_ms_ceil(not_before);
            item.last_error = Some(reason);
            items
                .insert(seq, encode(&item)?.as_slice())
                .map_err(|e| self.err(e))?;
            schedule
                .insert((t.as_str(), item.due_ms, seq), ())
                .map_err(|e| self.err(e))?;
            meta.insert(META_CLOCK, now).map_err(|e| self.err(e))?;
        }
        self.commit(txn)
    }

    fn dead_letter(&self, seq: u64, reason: String) -> Result<(), StoreError> {
        let now = self.now_ms();
        let txn = self.write(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut dead = txn.open_table(DEAD).map_err(|e| self.err(e))?;
            let item = self.unqueue(&txn, seq)?;
            let key = item.ledger_key();
            self.ledger_update(&txn, &key, now, |c| {
                c.add(&LedgerCounts {
                    dead: 1,
                    dead_ids: vec![item.content.content_id.clone()],
                    ..Default::default()
                })
            })?;
            let record = DeadItem {
                content: item.content,
                reason,
                attempts: item.attempts,
                enqueued_ms: item.enqueued_ms,
                dead_ms: now,
                ledger_hour: Some(key.hour),
            };
            dead.insert(seq, encode(&record)?.as_slice())
                .map_err(|e| self.err(e))?;
            add_u64(&mut meta, META_QUEUED, -1).map_err(|e| self.err(e))?;
            add_u64(&mut meta, META_DEAD, 1).map_err(|e| self.err(e))?;
            meta.insert(META_CLOCK, now).map_err(|e| self.err(e))?;
        }
        self.commit(txn)
    }

    /// Removes `seq` from `items`, `schedule` and `leases`; its dedup entry stays.
    fn unqueue(&self, txn: &WriteTransaction, seq: u64) -> Result<Item, StoreError> {
        let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
        let mut schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
        let mut leases = txn.open_table(LEASES).map_err(|e| self.err(e))?;
        let item = self
            .read_item(&items, seq)?
            .ok_or(StoreError::NotFound(seq))?;
        let (t, at, _) = schedule_key(&leases, &item, seq).map_err(|e| self.err(e))?;
        schedule
            .remove((t.as_str(), at, seq))
            .map_err(|e| self.err(e))?;
        leases.remove(seq).map_err(|e| self.err(e))?;
        items.remove(seq).map_err(|e| self.err(e))?;
        Ok(item)
    }

    fn cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let cursors = txn.open_table(CURSORS).map_err(|e| self.err(e))?;
        let value = cursors
            .get((tenant_id, content_type))
            .map_err(|e| self.err(e))?
            .map(|v| v.value());
        Ok(value.map(|ns| UNIX_EPOCH + Duration::from_nanos(ns)))
    }

    /// See [`Store::claim_subscription_start`]: one write transaction (redb runs them one at a
    /// time), so two callers never both get the right. Times are the store's clock, handed to the
    /// caller as a duration from its own now.
    fn claim_start(
        &self,
        tenant: &str,
        content_type: &str,
        wait: Duration,
    ) -> Result<Option<SystemTime>, StoreError> {
        let now = self.now_ms();
        let txn = self.write(Durability::Immediate)?;
        let left = {
            let mut starts = txn.open_table(STARTS).map_err(|e| self.err(e))?;
            let next = starts
                .get((tenant, content_type))
                .map_err(|e| self.err(e))?
                .map(|v| v.value());
            match next {
                Some(next) if next > now => Some(next - now),
                _ => {
                    starts
                        .insert(
                            (tenant, content_type),
                            now.saturating_add(duration_ms(wait)),
                        )
                        .map_err(|e| self.err(e))?;
                    None
                }
            }
        };
        match left {
            None => self.commit(txn).map(|()| None),
            Some(ms) => {
                txn.abort().map_err(|e| self.err(e))?;
                Ok(Some(SystemTime::now() + Duration::from_millis(ms)))
            }
        }
    }

    fn set_start(
        &self,
        tenant: &str,
        content_type: &str,
        not_before: SystemTime,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let ahead = not_before
            .duration_since(SystemTime::now())
            .map(duration_ms)
            .unwrap_or(0);
        let txn = self.write(Durability::Immediate)?;
        {
            let mut starts = txn.open_table(STARTS).map_err(|e| self.err(e))?;
            starts
                .insert((tenant, content_type), now.saturating_add(ahead))
                .map_err(|e| self.err(e))?;
        }
        self.commit(txn)
    }

    fn next_start(
        &self,
        tenant: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        let now = self.now_ms();
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let starts = txn.open_table(STARTS).map_err(|e| self.err(e))?;
        let next = starts
            .get((tenant, content_type))
            .map_err(|e| self.err(e))?
            .map(|v| v.value());
        Ok(next
            .filter(|n| *n > now)
            .map(|n| SystemTime::now() + Duration::from_millis(n - now)))
    }

    fn advance_cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
        to: SystemTime,
    ) -> Result<(), StoreError> {
        let to_ns = to
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let txn = self.write(Durability::Immediate)?;
        let moved = {
            let mut cursors = txn.open_table(CURSORS).map_err(|e| self.err(e))?;
            let current = cursors
                .get((tenant_id, content_type))
                .map_err(|e| self.err(e))?
                .map(|v| v.value());
            if current.is_some_and(|c| c >= to_ns) {
                false
            } else {
                cursors
                    .insert((tenant_id, content_type), to_ns)
                    .map_err(|e| self.err(e))?;
                true
            }
        };
        if moved {
            self.commit(txn)
        } else {
            txn.abort().map_err(|e| self.err(e))
        }
    }

    fn prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        let limit = to_ms(older_than);
        let txn = self.write(Durability::Immediate)?;
        let mut removed = 0u64;
        {
            let mut dedup = txn.open_table(DEDUP).map_err(|e| self.err(e))?;
            let mut dedup_age = txn.open_table(DEDUP_AGE).map_err(|e| self.err(e))?;
            let mut old: Vec<(u64, String)> = Vec::new();
            for entry in dedup_age
                .range::<(u64, &str)>(..(limit, ""))
                .map_err(|e| self.err(e))?
                .take(max)
            {
                let (key, _) = entry.map_err(|e| self.err(e))?;
                let (ms, id) = key.value();
                old.push((ms, id.to_owned()));
            }
            for (ms, id) in &old {
                dedup_age
                    .remove((*ms, id.as_str()))
                    .map_err(|e| self.err(e))?;
                dedup.remove(id.as_str()).map_err(|e| self.err(e))?;
                removed += 1;
            }
        }
        if removed == 0 {
            txn.abort().map_err(|e| self.err(e))?;
        } else {
            self.commit(txn)?;
        }
        Ok(removed)
    }

    /// See [`Store::claim_records`]. Committed without an fsync: the blob's next progress write
    /// (fsync'd) makes it durable, and a claim lost in a crash can only let a duplicate through.
    fn claim_records(
        &self,
        owner: u64,
        keys: &[u128],
        window: Duration,
    ) -> Result<(Vec<bool>, bool), StoreError> {
        let now = self.now_ms();
        let expired_before = now.saturating_sub(duration_ms(window));
        let mut keep = vec![false; keys.len()];
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by_key(|&i| keys[i]);
        let flush = {
            // Held from before the snapshot is taken: a row written and dropped from `pending`
            // meanwhile is then in the snapshot.
            let mut pending = lock(&self.pending);
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            let records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
            let mut filter = match pending.filter.take() {
                Some(f) => f,
                None => self.claim_filter(&txn, &pending, now, duration_ms(window))?,
            };
            let mut taken = Vec::new();
            for i in order {
                let key = keys[i];
                let seen = match pending.keys.get(&key) {
                    Some(&claim) => Some(claim),
                    None if !filter.may_hold(key, expired_before) => None,
                    None => records
                        .get(key)
                        .map_err(|e| self.err(e))?
                        .map(|v| v.value()),
                };
                match seen {
                    // The claim holds as it is: the blob's own, or another blob's.
                    Some((o, first)) if o == owner || first >= expired_before => {
                        keep[i] = o == owner;
                    }
                    // New, or expired and taken over.
                    _ => {
                        keep[i] = true;
                        pending.keys.insert(key, (owner, now));
                        filter.insert(key, now);
                        taken.push(key);
                    }
                }
            }
            pending.filter = Some(filter);
            if !taken.is_empty() {
                pending.since.get_or_insert_with(Instant::now);
                pending.rows.push_back(ClaimRow {
                    at: now,
                    owner,
                    keys: taken,
                });
            }
            let arm_timer =
                !pending.rows.is_empty() && !std::mem::replace(&mut pending.timer, true);
            (pending.keys.len() > MAX_PENDING_CLAIMS, arm_timer)
        };
        if flush.0 {
            self.write_claims_now()?;
        }
        Ok((keep, flush.1))
    }

    /// The claim filter for a window of `window_ms`, filled with the claims of the last window:
    /// the rows in the file and those pending. Bounded: past what [`ClaimFilter`] holds
    /// usefully, it starts empty and covers claims from now on.
    fn claim_filter(
        &self,
        txn: &redb::ReadTransaction,
        pending: &PendingClaims,
        now: u64,
        window_ms: u64,
    ) -> Result<ClaimFilter, StoreError> {
        let since = now.saturating_sub(window_ms);
        let mut filter = ClaimFilter::new(since, window_ms);
        let most = claim_filter::MAX_BYTES * 8 / 10;
        let mut n = 0usize;
        let by_claim = txn.open_table(RECORDS_BY_CLAIM).map_err(|e| self.err(e))?;
        for row in by_claim
            .range::<(u64, u128)>((since, 0)..)
            .map_err(|e| self.err(e))?
        {
            let (at, keys) = row.map_err(|e| self.err(e))?;
            let at = at.value().0;
            for key in row_keys(keys.value()) {
                filter.insert(key, at);
                n += 1;
            }
            if n > most {
                return Ok(ClaimFilter::new(now, window_ms));
            }
        }
        for row in &pending.rows {
            for &key in &row.keys {
                filter.insert(key, row.at);
            }
        }
        Ok(filter)
    }

    /// Writes the pending claims now, durably.
    fn write_claims_now(&self) -> Result<(), StoreError> {
        lock(&self.pending).timer = false;
        let txn = self.write_claims(Durability::Immediate, true)?;
        if lock(&self.pending).in_txn > 0 || self.ledger_in_txn() {
            self.commit(txn)
        } else {
            txn.abort().map_err(|e| self.err(e))
        }
    }

    /// Writes the pending claims into `txn` as it begins (see [`PendingClaims`]); a progress
    /// write (`all` false) takes them only once they waited [`CLAIMS_WRITE_EVERY`].
    fn write_pending_claims(&self, txn: &WriteTransaction, all: bool) -> Result<(), StoreError> {
        let mut pending = lock(&self.pending);
        pending.in_txn = 0;
        let due = pending
            .since
            .is_some_and(|t| t.elapsed() >= CLAIMS_WRITE_EVERY);
        if pending.rows.is_empty() || !(all || due) {
            return Ok(());
        }
        let mut records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        let mut by_claim = txn.open_table(RECORDS_BY_CLAIM).map_err(|e| self.err(e))?;
        let mut bytes = Vec::new();
        for row in &pending.rows {
            bytes.clear();
            for &key in &row.keys {
                bytes.extend_from_slice(&key.to_le_bytes());
            }
            by_claim
                .insert((row.at, row.keys[0]), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        // In key order: consecutive keys share their path down the index, and each leaf is
        // visited once instead of once a row. A key claimed twice meanwhile: the later claim.
        let mut all: Vec<(u128, u64, u64)> = pending
            .rows
            .iter()
            .flat_map(|row| row.keys.iter().map(|&k| (k, row.owner, row.at)))
            .collect();
        all.sort_by_key(|&(k, _, _)| k);
        for (key, owner, at) in all {
            records.insert(key, (owner, at)).map_err(|e| self.err(e))?;
        }
        pending.in_txn = pending.rows.len();
        Ok(())
    }

    /// The transaction that wrote the pending claims committed: they are in the file now.
    fn pending_claims_written(&self) {
        let mut pending = lock(&self.pending);
        let n = std::mem::take(&mut pending.in_txn);
        if n == 0 {
            return;
        }
        if n == pending.rows.len() {
            pending.since = None;
        }
        for row in pending.rows.drain(..n).collect::<Vec<_>>() {
            for key in row.keys {
                if pending.keys.get(&key) == Some(&(row.owner, row.at)) {
                    pending.keys.remove(&key);
                }
            }
        }
    }

    fn prune_records(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        let limit = to_ms(older_than);
        // Pending claims first, so that what is pruned is what is there.
        let txn = self.write_claims(Durability::Immediate, true)?;
        let mut removed = 0u64;
        {
            let mut records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
            let mut by_claim = txn.open_table(RECORDS_BY_CLAIM).map_err(|e| self.err(e))?;
            let mut rows = Vec::new();
            let mut listed = 0;
            for row in by_claim
                .range::<(u64, u128)>(..(limit, 0))
                .map_err(|e| self.err(e))?
            {
                if listed >= max {
                    break;
                }
                let (at, keys) = row.map_err(|e| self.err(e))?;
                let keys: Vec<u128> = row_keys(keys.value()).collect();
                listed += keys.len();
                rows.push((at.value(), keys));
            }
            for ((ms, first), keys) in rows {
                by_claim.remove((ms, first)).map_err(|e| self.err(e))?;
                for key in keys {
                    // A key another claim took over since is that claim's to prune.
                    let current = records
                        .get(key)
                        .map_err(|e| self.err(e))?
                        .map(|v| v.value().1);
                    if current == Some(ms) {
                        records.remove(key).map_err(|e| self.err(e))?;
                        removed += 1;
                    }
                }
            }
        }
        if removed == 0 && lock(&self.pending).in_txn == 0 {
            txn.abort().map_err(|e| self.err(e))?;
        } else {
            self.commit(txn)?;
        }
        Ok(removed)
    }

    /// Every queued blob has one schedule entry under its tenant: count them, up to `cap`.
    fn tenant_backlog(&self, tenant: &str, cap: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
        let mut n = 0;
        for entry in schedule
            .range((tenant, 0, 0)..=(tenant, u64::MAX, u64::MAX))
            .map_err(|e| self.err(e))?
        {
            entry.map_err(|e| self.err(e))?;
            n += 1;
            if n >= cap {
                break;
            }
        }
        Ok(n)
    }

    /// Entries of the dedup set and of the record dedup.
    fn dedup_entries(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let dedup = txn.open_table(DEDUP).map_err(|e| self.err(e))?;
        let records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        Ok((
            dedup.len().map_err(|e| self.err(e))?,
            records.len().map_err(|e| self.err(e))?,
        ))
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now_ms();
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
        let leases = txn.open_table(LEASES).map_err(|e| self.err(e))?;
        let queued = get_u64(&meta, META_QUEUED)
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        let dead_letters = get_u64(&meta, META_DEAD)
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        let mut held: HashSet<u64> = HashSet::new();
        for entry in leases.iter().map_err(|e| self.err(e))? {
            let (seq, until) = entry.map_err(|e| self.err(e))?;
            if until.value() > now {
                held.insert(seq.value());
            }
        }
        let leased = held.len() as u64;
        // Seqs are in arrival order, so the first unleased item is the oldest pending one; only
        // leased items (few: one per busy worker) are skipped.
        let mut oldest_pending_age_secs = None;
        for entry in items.iter().map_err(|e| self.err(e))? {
            let (seq, bytes) = entry.map_err(|e| self.err(e))?;
            if held.contains(&seq.value()) {
                continue;
            }
            let item: Item = decode(bytes.value(), &self.path)?;
            oldest_pending_age_secs = Some(now.saturating_sub(item.enqueued_ms) / 1000);
            break;
        }
        Ok(StoreStats {
            pending: queued.saturating_sub(leased),
            leased,
            dead_letters,
            oldest_pending_age_secs,
        })
    }

    fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let dead = txn.open_table(DEAD).map_err(|e| self.err(e))?;
        let progress = txn.open_table(PROGRESS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let Some(from) = after.checked_add(1) else {
            return Ok(out);
        };
        for entry in dead.range(from..).map_err(|e| self.err(e))?.take(limit) {
            let (seq, bytes) = entry.map_err(|e| self.err(e))?;
            let record: DeadItem = decode(bytes.value(), &self.path)?;
            let delivered = progress
                .get(seq.value())
                .map_err(|e| self.err(e))?
                .map_or(0, |v| v.value());
            out.push(DeadLetter {
                delivered,
                seq: seq.value(),
                content: record.content,
                reason: record.reason,
                attempts: record.attempts,
                enqueued_at: from_ms(record.enqueued_ms),
                dead_at: from_ms(record.dead_ms),
            });
        }
        Ok(out)
    }

    fn requeue_dead(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        let now = self.now_ms();
        let txn = self.write(Durability::Immediate)?;
        let mut moved = 0u64;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut dead = txn.open_table(DEAD).map_err(|e| self.err(e))?;
            let mut items = txn.open_table(ITEMS).map_err(|e| self.err(e))?;
            let mut schedule = txn.open_table(SCHEDULE).map_err(|e| self.err(e))?;
            let mut progress = txn.open_table(PROGRESS).map_err(|e| self.err(e))?;
            let mut next_seq = get_u64(&meta, META_NEXT_SEQ)
                .map_err(|e| self.err(e))?
                .unwrap_or(1);
            for &old in seqs {
                let Some(bytes) = dead.remove(old).map_err(|e| self.err(e))? else {
                    continue;
                };
                let record: DeadItem = decode(bytes.value(), &self.path)?;
                drop(bytes);
                let seq = next_seq;
                next_seq += 1;
                // What the output accepted before stays accepted: the new seq resumes after it.
                let delivered = progress
                    .remove(old)
                    .map_err(|e| self.err(e))?
                    .map(|v| v.value());
                if let Some(n) = delivered {
                    progress.insert(seq, n).map_err(|e| self.err(e))?;
                }
                let note = format!("requeued after: {}", record.reason);
                let hour = record.ledger_hour.unwrap_or_else(|| {
                    ledger::blob_hour(
                        record.content.content_created.as_deref(),
                        from_ms(record.enqueued_ms),
                    )
                });
                let key = LedgerKey::new(
                    &record.content.tenant_id,
                    &record.content.content_type,
                    hour,
                );
                self.ledger_update(&txn, &key, now, |c| c.undead(&record.content.content_id))?;
                self.queue_new(
                    &mut items,
                    &mut schedule,
                    seq,
                    (record.content, hour),
                    now,
                    Some(note),
                )?;
                moved += 1;
            }
            if moved > 0 {
                meta.insert(META_NEXT_SEQ, next_seq)
                    .map_err(|e| self.err(e))?;
                add_u64(&mut meta, META_QUEUED, moved as i64).map_err(|e| self.err(e))?;
                add_u64(&mut meta, META_DEAD, -(moved as i64)).map_err(|e| self.err(e))?;
                meta.insert(META_CLOCK, now).map_err(|e| self.err(e))?;
            }
        }
        if moved == 0 {
            txn.abort().map_err(|e| self.err(e))?;
        } else {
            self.commit(txn)?;
        }
        Ok(moved)
    }

    /// Adds a blob arriving now as `seq`: its item and its schedule entry (due at once).
    fn queue_new(
        &self,
        items: &mut redb::Table<u64, &'static [u8]>,
        schedule: &mut redb::Table<(&'static str, u64, u64), ()>,
        seq: u64,
        (content, ledger_hour): (ContentRef, i64),
        now: u64,
        last_error: Option<String>,
    ) -> Result<(), StoreError> {
        let item = Item {
            content,
            attempts: 0,
            enqueued_ms: now,
            due_ms: now,
            last_error,
            ledger_hour: Some(ledger_hour),
        };
        items
            .insert(seq, encode(&item)?.as_slice())
            .map_err(|e| self.err(e))?;
        let t = tenant_key(&item);
        schedule
            .insert((t.as_str(), now, seq), ())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn read_item(
        &self,
        items: &impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
    ) -> Result<Option<Item>, StoreError> {
        match items.get(seq).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(bytes) => decode(bytes.value(), &self.path).map(Some),
        }
    }

    /// The store's clock in ms; see the module doc on time.
    fn now_ms(&self) -> u64 {
        let real = to_ms(SystemTime::now());
        let mut clock = lock(&self.clock);
        let ticked = clock
            .last_ms
            .saturating_add(duration_ms(clock.last_at.elapsed()));
        let now = real.max(ticked);
        clock.last_ms = now;
        clock.last_at = Instant::now();
        now
    }

    /// A write transaction, with the pending record claims in it once they are due.
    fn write(&self, durability: Durability) -> Result<WriteTransaction, StoreError> {
        self.write_claims(durability, false)
    }

    fn write_claims(
        &self,
        durability: Durability,
        all_claims: bool,
    ) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        // Only a durable transaction takes them: once written they are no longer pending.
        let durable = !matches!(durability, Durability::None);
        txn.set_durability(durability).map_err(|e| self.err(e))?;
        if durable {
            self.write_pending_claims(&txn, all_claims)?;
            self.write_pending_ledger(&txn, all_claims)?;
        } else {
            lock(&self.pending).in_txn = 0;
            // Left by an aborted transaction: pending again (this one does not write them).
            let mut in_txn = lock(&self.ledger.in_txn);
            let mut pending = lock(&self.ledger.pending);
            if let Some(left) = in_txn.take() {
                for (k, c) in left {
                    pending.entry(k).or_default().add(&c);
                }
                // Due at once: the next durable write takes them.
                let mut since = lock(&self.ledger.since);
                let t = since.unwrap_or_else(Instant::now);
                *since = Some(t.checked_sub(CLAIMS_WRITE_EVERY).unwrap_or(t));
            }
        }
        Ok(txn)
    }

    fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        // The ledger's lock spans the commit, so a reader sees its pending counters either in
        // the file or in memory, never in both nor in neither.
        let mut in_txn = lock(&self.ledger.in_txn);
        txn.commit().map_err(|e| self.err(e))?;
        *in_txn = None;
        drop(in_txn);
        self.pending_claims_written();
        Ok(())
    }

    /// Whether the open write transaction carries pending ledger counters (then it must commit).
    fn ledger_in_txn(&self) -> bool {
        lock(&self.ledger.in_txn).is_some()
    }

    /// Writes the pending ledger counters into `txn` as it begins, once they waited
    /// [`CLAIMS_WRITE_EVERY`] or `now` (see [`PendingLedger`]); those of a transaction that was
    /// aborted are written again.
    fn write_pending_ledger(&self, txn: &WriteTransaction, now: bool) -> Result<(), StoreError> {
        let taken = {
            let mut in_txn = lock(&self.ledger.in_txn);
            let mut all = in_txn.take().unwrap_or_default();
            let mut since = lock(&self.ledger.since);
            if now || since.is_some_and(|t| t.elapsed() >= CLAIMS_WRITE_EVERY) {
                for (k, c) in std::mem::take(&mut *lock(&self.ledger.pending)) {
                    all.entry(k).or_default().add(&c);
                }
                *since = None;
            }
            drop(since);
            if all.is_empty() {
                return Ok(());
            }
            // Kept in memory until this transaction commits.
            *in_txn = Some(all.clone());
            all
        };
        let now = self.now_ms();
        taken
            .iter()
            .try_for_each(|(k, c)| self.ledger_update(txn, k, now, |row| row.add(c)))
    }

    /// Changes one ledger row in `txn`.
    fn ledger_update(
        &self,
        txn: &WriteTransaction,
        key: &LedgerKey,
        now: u64,
        change: impl FnOnce(&mut LedgerCounts),
    ) -> Result<(), StoreError> {
        if !ledger::enabled() {
            return Ok(());
        }
        let mut table = txn.open_table(LEDGER).map_err(|e| self.err(e))?;
        let k = (key.tenant_id.as_str(), key.content_type.as_str(), key.hour);
        let mut row: StoredLedger = match table.get(k).map_err(|e| self.err(e))? {
            Some(bytes) => decode(bytes.value(), &self.path)?,
            None => {
                let mut age = txn.open_table(LEDGER_AGE).map_err(|e| self.err(e))?;
                age.insert((key.hour, k.0, k.1), ())
                    .map_err(|e| self.err(e))?;
                StoredLedger::default()
            }
        };
        change(&mut row.counts);
        row.updated_ms = now;
        table
            .insert(k, encode(&row)?.as_slice())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn ledger_range(&self, tenant: &str, from: i64, to: i64) -> Result<Vec<LedgerRow>, StoreError> {
        let tenant = tenant.to_ascii_lowercase();
        // Held from the read to the merge: see `commit`.
        let in_txn = lock(&self.ledger.in_txn);
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(LEDGER).map_err(|e| self.err(e))?;
        let mut rows: std::collections::BTreeMap<LedgerKey, (LedgerCounts, u64)> =
            Default::default();
        for entry in table
            .range::<(&str, &str, i64)>((tenant.as_str(), "", i64::MIN)..)
            .map_err(|e| self.err(e))?
        {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (t, ct, hour) = k.value();
            if t != tenant {
                break;
            }
            if hour < from || hour >= to {
                continue;
            }
            let row: StoredLedger = decode(v.value(), &self.path)?;
            rows.insert(LedgerKey::new(t, ct, hour), (row.counts, row.updated_ms));
        }
        // Counters added but not written yet are part of the answer.
        let now = to_ms(SystemTime::now());
        let pending = lock(&self.ledger.pending);
        for (k, c) in in_txn.iter().flatten().chain(pending.iter()) {
            if k.tenant_id == tenant && k.hour >= from && k.hour < to {
                let row = rows.entry(k.clone()).or_default();
                row.0.add(c);
                row.1 = row.1.max(now);
            }
        }
        Ok(rows
            .into_iter()
            .map(|(key, (counts, updated_ms))| LedgerRow {
                key,
                counts,
                updated_ms,
            })
            .collect())
    }

    fn ledger_prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        let limit = ledger::hour_of(older_than);
        // Pending counters go in first, so a pruned hour's are pruned with it.
        let txn = self.write_claims(Durability::Immediate, true)?;
        let mut removed = 0u64;
        {
            let mut table = txn.open_table(LEDGER).map_err(|e| self.err(e))?;
            let mut age = txn.open_table(LEDGER_AGE).map_err(|e| self.err(e))?;
            let mut old: Vec<(i64, String, String)> = Vec::new();
            for entry in age
                .range::<(i64, &str, &str)>(..(limit, "", ""))
                .map_err(|e| self.err(e))?
                .take(max)
            {
                let (k, _) = entry.map_err(|e| self.err(e))?;
                let (h, t, ct) = k.value();
                old.push((h, t.to_owned(), ct.to_owned()));
            }
            for (h, t, ct) in &old {
                age.remove((*h, t.as_str(), ct.as_str()))
                    .map_err(|e| self.err(e))?;
                table
                    .remove((t.as_str(), ct.as_str(), *h))
                    .map_err(|e| self.err(e))?;
                removed += 1;
            }
        }
        if removed == 0 && !self.ledger_in_txn() && lock(&self.pending).in_txn == 0 {
            txn.abort().map_err(|e| self.err(e))?;
        } else {
            self.commit(txn)?;
        }
        Ok(removed)
    }

    /// Maps any redb error: damage → Corrupt (with the path), everything else → Unavailable. An
    /// I/O error or damage marks the handle failed, so it is closed and the file reopened.
    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if matches!(
            e,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Corrupted(_)
        ) {
            self.failed.store(true, Ordering::Release);
        }
        map_error(&self.path, e)
    }
}

/// The `schedule` key `seq` sits under right now.
/// Where a blob's entry is in `schedule_by_tenant`: `(tenant, lease_until or due, seq)`.
fn schedule_key(
    leases: &impl ReadableTable<u64, u64>,
    item: &Item,
    seq: u64,
) -> Result<(String, u64, u64), redb::StorageError> {
    let at = match leases.get(seq)? {
        Some(until) => until.value(),
        None => item.due_ms,
    };
    Ok((tenant_key(item), at, seq))
}

/// The tenant part of a blob's schedule key (lower case, as skip lists are compared).
fn tenant_key(item: &Item) -> String {
    item.content.tenant_id.to_ascii_lowercase()
}

fn get_u64(
    meta: &impl ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<Option<u64>, redb::StorageError> {
    Ok(meta.get(key)?.map(|v| v.value()))
}

fn add_u64(
    meta: &mut redb::Table<&'static str, u64>,
    key: &str,
    delta: i64,
) -> Result<(), redb::StorageError> {
    let current = get_u64(meta, key)?.unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    meta.insert(key, next)?;
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Unavailable(format!("cannot serialise a queue record: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], path: &Path) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, &format!("undecodable queue record: {e}")))
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn to_ms_ceil(t: SystemTime) -> u64 {
    let ms = to_ms(t);
    let exact = t
        .duration_since(UNIX_EPOCH)
        .is_ok_and(|d| d.subsec_nanos() % 1_000_000 == 0);
    if exact { ms } else { ms.saturating_add(1) }
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A poisoned lock only means another thread panicked between two plain assignments.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A damaged file: what failed, and how to recover.
fn corrupt(path: &Path, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{p}: {what}; move {p} aside and start again: the first listing fetches the last 24 h \
         again, and `o365-collector backfill` any older days up to 7 back (Microsoft keeps content \
         for 7 days)",
        p = path.display()
    ))
}

/// What a panic inside redb said (it panics on some damaged pages instead of returning an error).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("the store library failed reading it ({text})")
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
        StoreError::NotFound(seq) => StoreError::NotFound(*seq),
        StoreError::LeaseLost(seq) => StoreError::LeaseLost(*seq),
    }
}

/// Writes [`PROBE_BYTES`] to a file in `dir` with fsync and removes it (see
/// [`crate::core::disk::probe_dir`]).
pub fn probe_dir(dir: &Path) -> Result<(), String> {
    crate::core::disk::probe_dir(dir, PROBE_FILE, PROBE_BYTES)
}

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Unavailable(format!(
                "{} is already in use by another o365-collector process?",
                path.display()
            ))
        }
        DatabaseError::UpgradeRequired(v) => corrupt(
            path,
            &format!("redb file format {v} is too old for this build"),
        ),
        other => map_error(path, other.into()),
    }
}

fn map_error(path: &Path, e: redb::Error) -> StoreError {
    match e {
        redb::Error::Corrupted(msg) => corrupt(path, &msg),
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Unavailable(format!(
                "{} is already in use by another o365-collector process?",
                path.display()
            ))
        }
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            corrupt(path, &io.to_string())
        }
        redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => StoreError::Corrupt(format!(
            "{}: not an o365-collector store ({e})",
            path.display()
        )),
        other => StoreError::Unavailable(format!("{}: {other}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::content_for;

    /// The age index of the first layout (a row a key) becomes rows per first-seen time, and
    /// pruning goes on from it.
    #[tokio::test]
    async fn record_claims_of_the_first_layout_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut records = txn.open_table(RECORDS).unwrap();
                let mut age = txn.open_table(RECORDS_AGE_V1).unwrap();
                for (key, ms) in [(1u128, 1_000u64), (2, 1_000), (3, 2_000)] {
                    records.insert(key, (7, ms)).unwrap();
                    age.insert((ms, key), ()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.footprint().await.unwrap().record_entries, 3);
        let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(store.prune_records(at(1_500), 10).await.unwrap(), 2);
        assert_eq!(store.prune_records(at(3_000), 10).await.unwrap(), 1);
        assert_eq!(store.footprint().await.unwrap().record_entries, 0);
    }

    /// Record claims are written a second after they are made (by a timer when nothing else
    /// writes), and when the store closes.
    #[tokio::test]
    async fn record_claims_reach_the_file_by_a_timer_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let day = Duration::from_secs(86_400);
        let on_disk = |s: &EmbeddedStore| {
            let s = s.clone();
            async move { s.footprint().await.unwrap().record_entries }
        };
        store.claim_records("a", vec![1, 2], day).await.unwrap();
        assert_eq!(on_disk(&store).await, 0, "pending at first");
        let deadline = Instant::now() + Duration::from_secs(30);
        while on_disk(&store).await < 2 {
            assert!(Instant::now() < deadline, "claims not written by the timer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.claim_records("b", vec![2, 3], day).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(on_disk(&store).await, 3, "written as the store closed");
        assert_eq!(
            store.claim_records("c", vec![1, 3, 4], day).await.unwrap(),
            [false, false, true]
        );
    }

    /// The claim filter never hides a claim: refilled after a restart, asked with a longer window
    /// than it was made for, and after the window passed (when a claim is taken over).
    #[tokio::test]
    async fn the_claim_filter_never_hides_a_claim() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let keys: Vec<u128> = (0..20_000u128)
            .map(|i| (29_000_000 << 96) | i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c))
            .collect();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(
            store
                .claim_records("a", keys.clone(), day)
                .await
                .unwrap()
                .iter()
                .all(|&k| k)
        );
        // Claimed within this process: none goes to another blob.
        let b = store.claim_records("b", keys.clone(), day).await.unwrap();
        assert!(b.iter().all(|&k| !k));
        drop(store);

        let store = EmbeddedStore::open(dir.path()).unwrap();
        // The first claim after the start refills the filter from the rows in the file.
        let mut probe = vec![7u128];
        probe.extend_from_slice(&keys[..10_000]);
        let c = store.claim_records("c", probe, day).await.unwrap();
        assert!(c[0] && c[1..].iter().all(|&k| !k), "refilled from the file");
        // A window longer than the filter's: asked of the file.
        let week = Duration::from_secs(7 * 86_400);
        let d = store
            .claim_records("d", keys[10_000..].to_vec(), week)
            .await
            .unwrap();
        assert!(d.iter().all(|&k| !k));
        // A day later the claims are past the window: the next blob takes them over.
        store.advance_clock(day + Duration::from_secs(60)).unwrap();
        let e = store.claim_records("e", keys.clone(), day).await.unwrap();
        assert!(e.iter().all(|&k| k));
        let f = store.claim_records("f", keys, day).await.unwrap();
        assert!(f.iter().all(|&k| !k), "now e's");
    }

    /// After an I/O error redb fails every later call on the handle; the store closes it and the
    /// next call reopens the file, with everything committed still there.
    #[tokio::test]
    async fn a_failed_handle_is_closed_and_the_file_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let c1 = content_for("t-a", "Audit.General", "c1");
        assert_eq!(store.enqueue(vec![c1.clone()]).await.unwrap().added, 1);

        let failed: Result<(), StoreError> = store
            .shared
            .with(|inner| Err(inner.err(redb::StorageError::PreviousIo)));
        assert!(matches!(failed, Err(StoreError::Unavailable(_))));
        assert!(store.shared.db.read().unwrap().is_none(), "closed");

        let c2 = content_for("t-a", "Audit.General", "c2");
        let out = store.enqueue(vec![c1, c2]).await.unwrap();
        assert_eq!(
            (out.added, out.duplicates),
            (1, 1),
            "reopened, c1 still known"
        );
        assert!(store.shared.db.read().unwrap().is_some());
        store.ready().await.unwrap();
        let got = store.claim(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(got.len(), 2);
    }

    /// A store written by format 1 (one `schedule` index keyed `(due, seq)`, one blob leased) opens
    /// as format 2 with every blob claimable in its old order.
    #[tokio::test]
    async fn format_1_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(META_FORMAT, 1).unwrap();
                meta.insert(META_NEXT_SEQ, 4).unwrap();
                meta.insert(META_QUEUED, 3).unwrap();
                let mut items = txn.open_table(ITEMS).unwrap();
                let mut schedule = txn.open_table(SCHEDULE_V1).unwrap();
                let mut leases = txn.open_table(LEASES).unwrap();
                for (seq, tenant, due) in [(1u64, "T-A", 100u64), (2, "t-b", 200), (3, "t-a", 50)] {
                    let item = Item {
                        content: content_for(tenant, "Audit.General", &format!("c{seq}")),
                        attempts: 0,
                        enqueued_ms: due,
                        due_ms: due,
                        last_error: None,
                        // Written by the first format, which had no ledger.
                        ledger_hour: None,
                    };
                    items
                        .insert(seq, encode(&item).unwrap().as_slice())
                        .unwrap();
                    if seq == 2 {
                        leases.insert(seq, 9_999_999_999_999).unwrap();
                        schedule.insert((9_999_999_999_999, seq), ()).unwrap();
                    } else {
                        schedule.insert((due, seq), ()).unwrap();
                    }
                }
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ids = |c: &[Claimed]| -> Vec<String> {
            c.iter().map(|c| c.content.content_id.clone()).collect()
        };
        let skip = ["t-a".to_owned()];
        let got = store
            .claim_except(10, Duration::from_secs(60), &skip)
            .await
            .unwrap();
        assert_eq!(
            ids(&got),
            ["c2"],
            "the lease was released; tenants compared in lower case"
        );
        let got = store.claim(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(ids(&got), ["c3", "c1"], "by due time across the migration");
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.pending, stats.leased), (0, 3));
        drop(store);
        // The old index is gone and the format is 2.
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(SCHEDULE_V1).is_err());
        let meta = txn.open_table(META).unwrap();
        assert_eq!(
            meta.get(META_FORMAT).unwrap().unwrap().value(),
            FORMAT_VERSION
        );
    }
}
