//! The store the configuration chose, as one type the rest of the collector is generic over.

use std::time::{Duration, SystemTime};

use serde_yaml::{Mapping, Value};

use super::embedded::EmbeddedStore;
use super::postgres::PostgresConfig;
use super::postgres::PostgresStore;
use super::retention::RetentionConfig;
use super::{
    Claimed, ContentRef, DeadLetter, EnqueueOutcome, Footprint, LeaseView, LedgerDelta, LedgerRow,
    Store, StoreError, StoreStats, TenantHolder,
};
use crate::core::settings::{Problems, field_names};
use crate::core::typed::{kind_of, typed};

/// `store:` — where the queue, the dedup set and the cursors live.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One process: a file under `last_value_storage` (the default).
    Embedded,
    /// Several replicas share one PostgreSQL database.
    Postgres(PostgresConfig),
}

impl StoreConfig {
    /// `store:` — a kind alone (`store: postgres`) or a mapping with `type`, the kind's settings
    /// and the retention keys any kind takes.
    pub fn read(value: Option<Value>, p: &mut Problems) -> (StoreConfig, RetentionConfig) {
        let mut retention = RetentionConfig::default();
        let kind = StoreConfig::read_kind(value, &mut retention, p);
        (kind, retention)
    }

    fn read_kind(
        value: Option<Value>,
        retention: &mut RetentionConfig,
        p: &mut Problems,
    ) -> StoreConfig {
        let kinds = "use `embedded` (one process, the default) or `postgres` (several replicas)";
        let (mut map, kind_key) = match value {
            None => return StoreConfig::Embedded,
            Some(Value::Mapping(m)) => (m, "store.type"),
            Some(Value::String(kind)) => {
                let mut m = Mapping::new();
                m.insert("type".into(), Value::String(kind));
                (m, "store")
            }
            Some(other) => {
                p.push(
                    "store",
                    format!("is {}, expected a kind or a mapping", kind_of(&other)),
                    kinds,
                );
                return StoreConfig::Embedded;
            }
        };
        let mut kept = Mapping::new();
        for key in RetentionConfig::KEYS {
            if let Some(v) = map.remove(key) {
                kept.insert(key.into(), v);
            }
        }
        if !kept.is_empty() {
            *retention = typed(Value::Mapping(kept), "store", p);
            retention.check(&mut p.section("store"));
        }
        let kind = match map.remove("type") {
            Some(Value::String(k)) => k.trim().to_ascii_lowercase(),
            _ if p.is_invalid("store.type") => return StoreConfig::Embedded,
            // Only retention keys: the default store with them.
            None if map.is_empty() => return StoreConfig::Embedded,
            _ => {
                p.push("store", "has no type", "add `type: embedded` (one process, the default) or `type: postgres` (several replicas)");
                return StoreConfig::Embedded;
            }
        };
        match kind.as_str() {
            "embedded" => {
                for (name, _) in map {
                    let name = name.as_str().unwrap_or_default();
                    let key = format!("store.{name}");
                    if field_names::<PostgresConfig>().contains(&name) {
                        p.push(
                            &key,
                            "is a setting of store type postgres, not embedded",
                            "remove it, or set `type: postgres`",
                        );
                    } else {
                        p.push(
                            &key,
                            "is not a known key",
                            "remove it; store type embedded takes no other key",
                        );
                    }
                }
                StoreConfig::Embedded
            }
            "postgres" => {
                let mut c: PostgresConfig = typed(Value::Mapping(map), "store", p);
                c.check(&mut p.section("store"));
                StoreConfig::Postgres(c)
            }
            other => {
                p.push(kind_key, format!("is `{other}`, not a store type"), kinds);
                StoreConfig::Embedded
            }
        }
    }
}

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
    async fn claim_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        wait: Duration,
    ) -> Result<Option<SystemTime>, StoreError> {
        each!(self, s => s.claim_subscription_start(tenant_id, content_type, wait).await)
    }
    async fn set_next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        not_before: SystemTime,
    ) -> Result<(), StoreError> {
        each!(self, s => s.set_next_subscription_start(tenant_id, content_type, not_before).await)
    }
    async fn next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        each!(self, s => s.next_subscription_start(tenant_id, content_type).await)
    }
    async fn prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        each!(self, s => s.prune(older_than, max).await)
    }
    async fn claim_records(
        &self,
        owner: &str,
        keys: Vec<u128>,
        window: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        each!(self, s => s.claim_records(owner, keys, window).await)
    }
    async fn prune_records(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        each!(self, s => s.prune_records(older_than, max).await)
    }
    async fn tenant_backlog(&self, tenant_id: &str, cap: u64) -> Result<u64, StoreError> {
        each!(self, s => s.tenant_backlog(tenant_id, cap).await)
    }
    async fn ledger_add(&self, deltas: Vec<LedgerDelta>) -> Result<(), StoreError> {
        each!(self, s => s.ledger_add(deltas).await)
    }
    async fn ledger_range(
        &self,
        tenant_id: &str,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        each!(self, s => s.ledger_range(tenant_id, from_hour, to_hour).await)
    }
    async fn ledger_prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        each!(self, s => s.ledger_prune(older_than, max).await)
    }
    async fn footprint(&self) -> Result<Footprint, StoreError> {
        each!(self, s => s.footprint().await)
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        each!(self, s => s.stats().await)
    }
    async fn dead_letters_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        each!(self, s => s.dead_letters_page(after, limit).await)
    }
    async fn recent_stats(&self, max_age: Duration) -> Result<StoreStats, StoreError> {
        each!(self, s => s.recent_stats(max_age).await)
    }
    async fn now(&self) -> Result<SystemTime, StoreError> {
        each!(self, s => s.now().await)
    }
    async fn requeue_dead(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        each!(self, s => s.requeue_dead(seqs).await)
    }
    async fn ready(&self) -> Result<(), StoreError> {
        each!(self, s => s.ready().await)
    }
    async fn hold_tenants(
        &self,
        hold: &[String],
        release: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.hold_tenants(hold, release, lease).await)
    }
    async fn lease_view(&self, live_within: Duration) -> Result<Option<LeaseView>, StoreError> {
        each!(self, s => s.lease_view(live_within).await)
    }
    async fn tenant_holders(&self) -> Result<Vec<TenantHolder>, StoreError> {
        each!(self, s => s.tenant_holders().await)
    }
    fn replica(&self) -> Option<&str> {
        each!(self, s => s.replica())
    }
}
