//! Durable queue of announced content blobs, the contentId dedup set, and the pull cursors.
//!
//! The trait and types below are the contract between the webhook, the puller, the workers and a
//! store implementation: [`EmbeddedStore`] (redb, the default) and, for several replicas,
//! [`PostgresStore`]. `conformance` holds the behaviour checks every implementation must pass
//! (feature `test-util`: tests only); [`AnyStore`] is the one the configuration chose.

pub mod any;
pub mod claim_filter;
pub mod clock;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod embedded;
pub mod lease_clock;
pub mod ledger;
pub mod postgres;
pub mod retention;

use std::future::Future;
use std::time::{Duration, SystemTime};

pub use any::{AnyStore, StoreConfig};
pub use embedded::EmbeddedStore;
pub use ledger::{LedgerCounts, LedgerDelta, LedgerKey, LedgerRow};
pub use postgres::{PostgresConfig, PostgresStore};
pub use retention::RetentionConfig;

/// An announced content blob, as the notification or the content listing gave it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContentRef {
    pub tenant_id: String,
    pub content_type: String,
    pub content_id: String,
    pub content_uri: String,
    pub content_created: Option<String>,
    pub content_expiration: Option<String>,
    /// Records carried in the queue itself (a listed Microsoft Graph page), each with its
    /// identity; `None` for a Management API blob, fetched from `content_uri`. On enqueue the
    /// store keeps only the records whose identity it has not seen (the same dedup set and
    /// retention as contentIds), so a re-read overlap adds nothing twice; such a blob's
    /// `content_id` becomes `page:` + the key of its first new record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<InlineRecord>>,
}

/// One record carried in the queue: its dedup identity (unique across tenants and feeds) and
/// its JSON text as Microsoft sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InlineRecord {
    pub key: String,
    pub json: String,
}

/// A blob handed to one worker until `lease_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Queue key; arrival order.
    pub seq: u64,
    pub content: ContentRef,
    /// Earlier attempts that ended in `reschedule`.
    pub attempts: u32,
    pub enqueued_at: SystemTime,
    /// How many of the blob's records (counted from its first, in array order) the output has
    /// already accepted ([`Store::record_progress`]): a worker skips them and resumes after them.
    pub delivered: u64,
}

/// A blob given up, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its key among the dead letters (the seq it had in the queue).
    pub seq: u64,
    pub content: ContentRef,
    pub reason: String,
    /// Attempts that ended in `reschedule` before it was given up.
    pub attempts: u32,
    pub enqueued_at: SystemTime,
    pub dead_at: SystemTime,
    /// Records of the blob the output had accepted; kept for when it is requeued.
    pub delivered: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueOutcome {
    pub added: usize,
    /// Already seen (queued, done or dead) within the dedup retention.
    pub duplicates: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Queued and not under an unexpired lease: ready now or waiting for `not_before`.
    pub pending: u64,
    /// Held by a worker (lease not yet expired).
    pub leased: u64,
    pub dead_letters: u64,
    /// Age of the oldest pending blob since it was enqueued; `None` when nothing is pending.
    pub oldest_pending_age_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be used right now (disk full, I/O error, locked by another process).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The file is not a store of ours or is damaged.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    #[error("no queued blob with seq {0}")]
    NotFound(u64),
    /// The blob's lease lapsed and another replica holds it now: this one must leave it alone.
    #[error("the lease on blob {0} was taken over by another replica")]
    LeaseLost(u64),
}

/// Which replica lists a tenant (a shared store's tenant lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantHolder {
    /// Lower-case tenant id.
    pub tenant_id: String,
    /// The holding replica's token.
    pub holder: String,
    pub since: SystemTime,
    /// Until the lease lapses unless renewed (negative: lapsed).
    pub expires_in_ms: i64,
    /// Held by the replica that answers.
    pub this_replica: bool,
}

/// What a tenant-lease round sees in a shared store ([`Store::lease_view`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// The live replicas' tokens (heartbeat recent enough), this one included, sorted.
    pub replicas: Vec<String>,
    /// Every tenant's lease row: (lower-case tenant id, holder, ms until it lapses, negative
    /// when lapsed), on the database's clock.
    pub leases: Vec<(String, String, i64)>,
}

/// A blob's owner key in the record dedup: FNV-1a of its contentId (stable across builds, unlike
/// the standard library's hasher).
pub fn owner_key(content_id: &str) -> u64 {
    content_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The record dedup's key: the record's key ([`crate::output::record_key`]) within its tenant.
/// The tenant is mixed into the hash bits only: the top 32 bits (the record's creation minute)
/// stay, so that claims keep the time order their index relies on.
pub fn record_claim_key(tenant_id: &str, record_key: u128) -> u128 {
    record_key ^ tenant_claim_mix(tenant_id)
}

/// What [`record_claim_key`] mixes into a record key for `tenant_id` (once per batch, not per
/// record).
pub fn tenant_claim_mix(tenant_id: &str) -> u128 {
    let t = owner_key(&tenant_id.to_ascii_lowercase());
    ((u128::from(t) << 64) | u128::from(t.rotate_left(29))) >> 32
}

/// Hash sets and maps of record keys: the keys are hashes already, so hashing them again
/// (SipHash, the standard default) only costs time.
pub type KeyHashing = std::hash::BuildHasherDefault<KeyHasher>;

/// See [`KeyHashing`]: folds a `u128` key into 64 bits.
#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not a record key: FNV-1a, so any other use still hashes properly.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, key: u128) {
        // The low bits are the key's hash (the top 32 are its creation minute).
        self.0 ^= key as u64 ^ (key >> 64) as u64;
    }
}

/// What the store holds on disk for dedup, for `/metrics` (cheap: no scan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// Entries in the dedup set (contentIds and Graph record identities); PostgreSQL's is the
    /// planner's estimate (`pg_class.reltuples`, kept current by autovacuum), not a count.
    pub dedup_entries: u64,
    /// Entries of the record dedup ([`Store::claim_records`]), counted the same way.
    pub record_entries: u64,
    /// Bytes the store takes: the embedded store's file, or PostgreSQL's tables with their
    /// indexes and TOAST.
    pub bytes: u64,
}

/// Durable queue. Every method that changes state is durable (fsync'd) when it returns, except
/// `claim`, `renew` and `release` (a lease lost in a crash only lets the blob be claimed again).
///
/// # Progress within a blob
///
/// A blob is delivered in batches. After the output accepted a batch the worker calls
/// [`Store::record_progress`] with the number of the blob's records accepted so far, and a worker
/// that claims the blob later (after a crash, a release, a retry) gets that number in
/// [`Claimed::delivered`] and resumes after it. So a crash in the middle of a large blob repeats at
/// most the batch that was in flight, never the whole blob. The count belongs to the queued blob:
/// `release`, `reschedule` and an expired lease keep it; `complete` forgets it; `dead_letter` keeps
/// it with the dead letter and `requeue_dead` carries it over, because what the output accepted
/// stays accepted (a blob's content never changes) and repeating it would only make duplicates.
pub trait Store: Send + Sync + 'static {
    /// Adds the blobs not seen before (by contentId), in order. A blob carrying `records` keeps
    /// only those whose key was not seen before, and is a duplicate when none is left. Durable on
    /// return.
    fn enqueue(
        &self,
        items: Vec<ContentRef>,
    ) -> impl Future<Output = Result<EnqueueOutcome, StoreError>> + Send;
    /// Leases up to `max` ready blobs (not leased or lease expired, `not_before` passed), oldest
    /// first: ordered by when each became claimable (arrival, or `not_before` after a reschedule).
    fn claim(
        &self,
        max: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send {
        self.claim_except(max, lease, &[])
    }
    /// `claim`, passing over the blobs of the tenants in `skip` (compared ignoring ASCII case):
    /// their output is paused, and they keep their place in line untouched. However long their
    /// backlog, it does not slow the claim of the other tenants' blobs.
    fn claim_except(
        &self,
        max: usize,
        lease: Duration,
        skip: &[String],
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;
    /// Gives a claimed blob back untouched: no attempt counted, due again at the time it was due
    /// before the claim, so it keeps its place in line (the output was paused, nothing was tried).
    /// `NotFound` if the seq is not queued.
    fn release(&self, seq: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Extends a lease held by a worker still busy with the blob. Renewing a blob whose lease
    /// lapsed takes the lease again, unless another replica of a shared store claimed it in the
    /// meantime (`LeaseLost`; `release`, `complete`, `reschedule` and `dead_letter` answer the same
    /// then). `NotFound` if the seq is not queued.
    fn renew(
        &self,
        seq: u64,
        lease: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Durably notes that the output accepted the blob's first `delivered` records (see "Progress
    /// within a blob"). Never moves backwards: a smaller count than the one stored is ignored.
    /// `NotFound` if the seq is not queued.
    fn record_progress(
        &self,
        seq: u64,
        delivered: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes a blob whose records the output accepted. Its contentId stays in the dedup set.
    /// `NotFound` if the seq is not queued (already completed or dead-lettered).
    fn complete(&self, seq: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Releases the lease, counts an attempt and keeps the blob until `not_before` (a past
    /// `not_before` makes it claimable at once). `NotFound` if the seq is not queued.
    fn reschedule(
        &self,
        seq: u64,
        not_before: SystemTime,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Moves a blob that cannot succeed out of the queue, with its reason; its contentId stays in
    /// the dedup set. `NotFound` if the seq is not queued.
    fn dead_letter(
        &self,
        seq: u64,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Takes the right to send `subscriptions/start` for (tenant, content type) now. When the next
    /// allowed start has passed (or none is recorded), records `now + wait` as the next allowed
    /// one and answers `None`: the caller may send its start. Otherwise changes nothing and answers
    /// `Some(when)`, the next allowed start on the caller's clock. Atomic across the replicas of a
    /// shared store, so two replicas never both get the right within `wait`. The tenant id is
    /// compared ignoring ASCII case.
    fn claim_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<SystemTime>, StoreError>> + Send;
    /// Sets the next allowed start of (tenant, content type) to `not_before` (the caller's
    /// clock): Microsoft refused a start and said when to come back. It replaces what the claim
    /// of the refused start recorded (Microsoft's word is the rule), earlier or later.
    fn set_next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        not_before: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The next allowed start of (tenant, content type) on the caller's clock while it is ahead;
    /// `None` when a start may be sent now. What `/status` and `check-config` show.
    fn next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> impl Future<Output = Result<Option<SystemTime>, StoreError>> + Send;
    /// Where listing resumes for (tenant, content type); `None` before the first advance.
    fn cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> impl Future<Output = Result<Option<SystemTime>, StoreError>> + Send;
    /// Moves the cursor forward; an earlier `to` is ignored (never backwards).
    fn advance_cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
        to: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forgets at most `max` dedup entries (contentIds, Graph record identities) first seen
    /// before `older_than`, oldest first; returns how many. Bounded so that one call is one short
    /// transaction: [`retention`] calls it until less than `max` is left. With a shared store,
    /// a call while another replica prunes does nothing and returns 0.
    fn prune(
        &self,
        older_than: SystemTime,
        max: usize,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Drops Microsoft's own duplicate records (the same record in two blobs, which Microsoft
    /// documents as expected): claims each of `keys` (record keys, unique across tenants) for the
    /// blob `owner` (its contentId) and answers, key by key, whether this blob delivers it. Yes
    /// when no other blob claimed the key within `window` of its first claim, or when `owner`
    /// did (its own batch sent again after a crash or a retry); no when another blob holds it.
    /// Called before a batch goes to the output, so two replicas never both deliver one record.
    /// A claim may be lost in a crash (it is made durable with the blob's next progress write):
    /// that can only let a duplicate through, never drop a record.
    fn claim_records(
        &self,
        owner: &str,
        keys: Vec<u128>,
        window: Duration,
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;
    /// Forgets at most `max` record claims made before `older_than`, oldest first.
    fn prune_records(
        &self,
        older_than: SystemTime,
        max: usize,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// How many blobs of `tenant_id` are queued (pending or leased), counted up to `cap`: the
    /// per-tenant high-water mark asks only whether the backlog reached it, so the count costs at
    /// most `cap` index entries however long the backlog is.
    fn tenant_backlog(
        &self,
        tenant_id: &str,
        cap: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Adds counters to the completeness ledger ([`ledger`]): one delta per row (tenant × content
    /// type × hour), each counter added to the stored one. The embedded store writes them with
    /// its first durable transaction a second after they were added, or a timer's (a crash may
    /// lose the last second's: they may only make an hour look less complete), a gap with its
    /// next durable transaction; PostgreSQL at once. Blob counters (`queued`, `done`, `dead`) are
    /// kept by the store itself with the queue changes; a source adds what it saw (`announced`,
    /// `listed`, record counters). Readers see added counters at once.
    fn ledger_add(
        &self,
        deltas: Vec<LedgerDelta>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The ledger rows of `tenant_id` (any case) with an hour in `[from_hour, to_hour)` (Unix
    /// seconds), every content type, ordered by content type then hour.
    fn ledger_range(
        &self,
        tenant_id: &str,
        from_hour: i64,
        to_hour: i64,
    ) -> impl Future<Output = Result<Vec<LedgerRow>, StoreError>> + Send;
    /// Forgets at most `max` ledger rows of hours before `older_than`, oldest first; returns how
    /// many (see [`retention`]).
    fn ledger_prune(
        &self,
        older_than: SystemTime,
        max: usize,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Dedup entries and bytes on disk.
    fn footprint(&self) -> impl Future<Output = Result<Footprint, StoreError>> + Send;
    fn stats(&self) -> impl Future<Output = Result<StoreStats, StoreError>> + Send;
    /// `stats`, possibly taken up to `max_age` ago (what `/metrics` and `/status` show): a shared
    /// store keeps the last answer per replica, so that every scrape does not count the queue.
    /// A store of one process answers `stats`.
    fn recent_stats(
        &self,
        _max_age: Duration,
    ) -> impl Future<Output = Result<StoreStats, StoreError>> + Send {
        self.stats()
    }
    /// At most `limit` dead letters with a seq above `after`, oldest first: one page, so that a
    /// long list (each with its payload) is never read whole.
    fn dead_letters_page(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;
    /// Every dead letter, oldest first, read page by page (tests, small stores).
    fn dead_letters(&self) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send {
        async {
            let mut all: Vec<DeadLetter> = Vec::new();
            loop {
                let after = all.last().map_or(0, |d| d.seq);
                let page = self.dead_letters_page(after, DEAD_LETTER_PAGE).await?;
                let done = page.len() < DEAD_LETTER_PAGE;
                all.extend(page);
                if done {
                    return Ok(all);
                }
            }
        }
    }
    /// Puts the dead letters with these seqs back in the queue as new arrivals (no attempts,
    /// claimable now, their progress kept), e.g. after the operator fixed what made them fail. Unknown seqs are ignored;
    /// returns how many were queued again. Durable on return.
    fn requeue_dead(&self, seqs: &[u64]) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Whether the store can take writes now (readiness, `o365_store_up`). The default asks for
    /// the stats; an implementation that can probe a write does so, since a store that still
    /// reads may no longer write (a full disk).
    fn ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { self.stats().await.map(|_| ()) }
    }
    /// Takes or renews this replica's lease on listing a tenant (its subscription keeper and
    /// content listing) for `lease`; `true` while this replica holds it. A lease not renewed
    /// lapses and another replica takes it. A store of one process always holds every tenant.
    fn hold_tenant(
        &self,
        tenant_id: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            let held = self
                .hold_tenants(&[tenant_id.to_ascii_lowercase()], &[], lease)
                .await?;
            Ok(!held.is_empty())
        }
    }
    /// One round of tenant leases in one statement: lets `release` go (this replica's rows only),
    /// then takes or renews `hold` (lower-case ids) for `lease` where the row is this replica's,
    /// lapsed or absent. Returns the tenants of `hold` this replica holds now. A store of one
    /// process holds every tenant.
    fn hold_tenants(
        &self,
        hold: &[String],
        _release: &[String],
        _lease: Duration,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let all = hold.to_vec();
        async move { Ok(all) }
    }
    /// Writes this replica's heartbeat and reads what a lease round decides on: the replicas
    /// seen within `live_within` and every tenant's lease row. `None` for a store of one process.
    fn lease_view(
        &self,
        _live_within: Duration,
    ) -> impl Future<Output = Result<Option<LeaseView>, StoreError>> + Send {
        async { Ok(None) }
    }
    /// Gives a tenant's lease up (at shutdown), so another replica takes it at once.
    fn let_go_tenant(
        &self,
        tenant_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            self.hold_tenants(&[], &[tenant_id.to_ascii_lowercase()], Duration::ZERO)
                .await
                .map(|_| ())
        }
    }
    /// Who holds which tenant; empty for a store of one process.
    fn tenant_holders(&self) -> impl Future<Output = Result<Vec<TenantHolder>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }
    /// This replica's token in a shared store; `None` for a store of one process.
    fn replica(&self) -> Option<&str> {
        None
    }
    /// The store's clock: a shared store's (the database's), which every replica's listing ends
    /// and cursors go by, so that a replica whose own clock runs ahead cannot move a shared
    /// cursor past content nobody listed yet. A store of one process answers the local clock.
    fn now(&self) -> impl Future<Output = Result<SystemTime, StoreError>> + Send {
        async { Ok(SystemTime::now()) }
    }
}

/// Microsoft's waiting period between two `subscriptions/start` requests of one subscription
/// (tenant × content type): "a waiting period of 15 minutes is required before another request".
pub const SUBSCRIPTION_START_WAIT: Duration = Duration::from_secs(15 * 60);

/// How many dead letters [`Store::dead_letters`] reads at a time.
pub const DEAD_LETTER_PAGE: usize = 500;
