//! The default store: one redb file under `last_value_storage`.
//! STUB: the store work replaces this file.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{Claimed, ContentRef, EnqueueOutcome, Store, StoreError, StoreStats};

/// redb-backed [`Store`].
pub struct EmbeddedStore {}

impl EmbeddedStore {
    /// Opens (creating if needed) `dir/queue.redb`.
    pub fn open(_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
}

impl Store for EmbeddedStore {
    async fn enqueue(&self, _items: Vec<ContentRef>) -> Result<EnqueueOutcome, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn claim(&self, _max: usize, _lease: Duration) -> Result<Vec<Claimed>, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn renew(&self, _seq: u64, _lease: Duration) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn complete(&self, _seq: u64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn reschedule(
        &self,
        _seq: u64,
        _nb: SystemTime,
        _reason: &str,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn dead_letter(&self, _seq: u64, _reason: &str) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn cursor(&self, _t: &str, _c: &str) -> Result<Option<SystemTime>, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn advance_cursor(&self, _t: &str, _c: &str, _to: SystemTime) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn prune(&self, _older_than: SystemTime) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }
}
