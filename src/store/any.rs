//! The store the configuration chose, as one type the rest of the collector is generic over.

use std::time::{Duration, SystemTime};

use super::embedded::EmbeddedStore;
use super::postgres::PostgresStore;
use super::{
    Claimed, ContentRef, DeadLetter, EnqueueOutcome, Store, StoreError, StoreStats, TenantHolder,
};

/// The store the configuration chose (`store:`).
#[derive(Debug, Clone)]
pub enum AnyStore {
    Embedded(EmbeddedStore),
    Postgres(PostgresStore),
}

/// Calls the same method on whichever store it is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Embedded($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn enqueue(&self, items: Vec<ContentRef>) -> Result<EnqueueOutcome, StoreError> {
        each!(self, s => s.enqueue(items).await)
    }
    async fn claim_except(
        &self,
        max: usize,
        lease: Duration,
        skip: &[String],
    ) -> Result<Vec<Claimed>, StoreError> {
        each!(self, s => s.claim_except(max, lease, skip).await)
    }
    async fn release(&self, seq: u64) -> Result<(), StoreError> {
        each!(self, s => s.release(seq).await)
    }
    async fn renew(&self, seq: u64, lease: Duration) -> Result<(), StoreError> {
        each!(self, s => s.renew(seq, lease).await)
    }
    async fn record_progress(&self, seq: u64, delivered: u64) -> Result<(), StoreError> {
        each!(self, s => s.record_progress(seq, delivered).await)
    }
    async fn complete(&self, seq: u64) -> Result<(), StoreError> {
        each!(self, s => s.complete(seq).await)
    }
    async fn reschedule(
        &self,
        seq: u64,
        not_before: SystemTime,
        reason: &str,
    ) -> Result<(), StoreError> {
        each!(self, s => s.reschedule(seq, not_before, reason).await)
    }
    async fn dead_letter(&self, seq: u64, reason: &str) -> Result<(), StoreError> {
        each!(self, s => s.dead_letter(seq, reason).await)
    }
    async fn cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        each!(self, s => s.cursor(tenant_id, content_type).await)
    }
    async fn advance_cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
        to: SystemTime,
    ) -> Result<(), StoreError> {
        each!(self, s => s.advance_cursor(tenant_id, content_type, to).await)
    }
    async fn prune(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        each!(self, s => s.prune(older_than).await)
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        each!(self, s => s.stats().await)
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        each!(self, s => Store::dead_letters(s).await)
    }
    async fn requeue_dead(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        each!(self, s => s.requeue_dead(seqs).await)
    }
    async fn ready(&self) -> Result<(), StoreError> {
        each!(self, s => s.ready().await)
    }
    async fn hold_tenant(&self, tenant_id: &str, lease: Duration) -> Result<bool, StoreError> {
        each!(self, s => s.hold_tenant(tenant_id, lease).await)
    }
    async fn let_go_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        each!(self, s => s.let_go_tenant(tenant_id).await)
    }
    async fn tenant_holders(&self) -> Result<Vec<TenantHolder>, StoreError> {
        each!(self, s => s.tenant_holders().await)
    }
    fn replica(&self) -> Option<&str> {
        each!(self, s => s.replica())
    }
}
