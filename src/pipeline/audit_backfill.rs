//! `backfill --source audit-search`: a tenant's audit log from Purview's Audit Log Query API
//! (`graph::audit_search`), up to 180 days back, delivered like its Management API content.
//!
//! Window by window (one query each, split when over the record limit), the records are grouped
//! by the content type their `RecordType` belongs to and enqueued as items that carry them
//! ([`ContentRef::records`], [`ITEM_RECORDS`] a piece), keyed `{tenant}/AuditSearch/{Id}`, so a
//! second backfill of the same range adds nothing. The workers map them as Management API records
//! of that content type (same `o365.audit.*` / ECS documents) and deliver them through the
//! tenant's output.
//!
//! Records the Management API delivered already are dropped by the record dedup
//! (`Store::claim_records`): the worker claims an audit-search item's records with
//! [`crate::store::retention::AUDIT_SEARCH_CLAIM_WINDOW`] (the Management API's reach plus a
//! margin) instead of `store.record_dedup_window`, and the store keeps every claim that long
//! (`retention::record_claims_kept`), so a record delivered from a blob up to 7 days ago is not
//! delivered again by a backfill today.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tracing::info;

use super::tenant::TenantRuntime;
use crate::graph::audit_search::{self, AuditRecord, AuditSearchError, Leaves};
use crate::store::{ContentRef, InlineRecord, Store, StoreError};

/// Records per queued item.
pub const ITEM_RECORDS: usize = 500;
/// The source name in `/status` problems.
pub const SOURCE: &str = "AuditSearch";

/// Why a backfill stopped (what was enqueued before stays enqueued).
#[derive(Debug, thiserror::Error)]
pub enum AuditBackfillError {
    #[error("audit search: {0}")]
    Search(#[from] AuditSearchError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What a backfill did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AuditBackfillReport {
    /// Queries made (one per window, the split ones included).
    pub queries: usize,
    /// Windows that went over the record limit and were split in two.
    pub splits: usize,
    /// Records the queries returned.
    pub records: usize,
    /// Records in the items enqueued (an item partly queued before keeps only its new records, so
    /// this may count a few of those); records of items queued whole before are not counted.
    pub added: usize,
    /// Records of content types the tenant does not collect (not delivered).
    pub skipped: usize,
    /// Records without `auditData`.
    pub unreadable: usize,
    /// Records left out because they were not asked for (`verify --repair` asks only for the
    /// hours and record types with records missing).
    #[serde(default)]
    pub not_asked: usize,
    /// Records per content type and UTC hour of creation (`2026-11-01T10`), as enqueued.
    pub hours: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Collects `[start, end)` (clamped to the 180 days Microsoft keeps) of `tenant` through the
/// Audit Log Query API and enqueues what was not queued before (the caller clamps the range to
/// the 180 days and to now).
pub async fn backfill<S: Store>(
    tenant: &TenantRuntime,
    store: &S,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<AuditBackfillReport, AuditBackfillError> {
    backfill_where(tenant, store, start, end, |_| true).await
}

/// [`backfill`] of the records `wanted` keeps only (`verify --repair`: those of the hours and
/// record types verify found short).
pub async fn backfill_where<S: Store>(
    tenant: &TenantRuntime,
    store: &S,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    wanted: impl Fn(&AuditRecord) -> bool,
) -> Result<AuditBackfillReport, AuditBackfillError> {
    let Some(client) = tenant.audit_search.as_ref() else {
        return Err(AuditSearchError::Shape(
            "the tenant's cloud has no Audit Log Query API".into(),
        )
        .into());
    };
    let cfg = &tenant.cfg;
    let mut report = AuditBackfillReport::default();
    let mut leaves = Leaves::new(start, end);
    let result = loop {
        let Some(leaf) = leaves.next(client).await else {
            break Ok(());
        };
        let (from, to, answer) = match leaf {
            Ok(l) => l,
            Err(e) => break Err(e.into()),
        };
        report.records += answer.records.len();
        report.unreadable += answer.unreadable;
        let mut by_type: BTreeMap<&'static str, Vec<AuditRecord>> = BTreeMap::new();
        for r in answer.records {
            if !wanted(&r) {
                report.not_asked += 1;
            } else if cfg
                .content_types
                .iter()
                .any(|c| c.eq_ignore_ascii_case(r.content_type))
            {
                by_type.entry(r.content_type).or_default().push(r);
            } else {
                report.skipped += 1;
            }
        }
        let mut counts: BTreeMap<(&'static str, DateTime<Utc>), u64> = BTreeMap::new();
        for (ct, records) in by_type {
            for piece in records.chunks(ITEM_RECORDS) {
                let item = item(&cfg.tenant_id, ct, piece);
                let outcome = match store.enqueue(vec![item]).await {
                    Ok(o) => o,
                    Err(e) => {
                        return Err(e.into());
                    }
                };
                if outcome.added > 0 {
                    report.added += piece.len();
                    for r in piece {
                        *counts.entry((ct, hour_of(r.created))).or_default() += 1;
                    }
                }
            }
        }
        for ((ct, hour), n) in &counts {
            *report
                .hours
                .entry((*ct).to_owned())
                .or_default()
                .entry(hour.format("%Y-%m-%dT%H").to_string())
                .or_default() += n;
        }
        info!(tenant.id = %cfg.tenant_id, from = %from, to = %to, queries = leaves.queries,
              "audit search window enqueued");
    };
    report.queries = leaves.queries;
    report.splits = leaves.splits;
    match &result {
        Ok(()) => tenant.health.succeeded(cfg, SOURCE),
        Err(AuditBackfillError::Search(e)) => {
            if let Some(api) = e.api() {
                tenant.health.failed_aside(cfg, SOURCE, api);
            }
        }
        Err(_) => {}
    }
    result.map(|()| report)
}

/// The hour a record was created in (UTC).
fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// One queued item carrying `records` of content type `ct`.
fn item(tenant_id: &str, ct: &str, records: &[AuditRecord]) -> ContentRef {
    let tenant = tenant_id.to_ascii_lowercase();
    ContentRef {
        tenant_id: tenant_id.to_owned(),
        content_type: ct.to_owned(),
        // The store names the item after its first new record.
        content_id: String::new(),
        content_uri: String::new(),
        content_created: records
            .first()
            .map(|r| r.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        content_expiration: None,
        records: Some(
            records
                .iter()
                .map(|r| InlineRecord {
                    key: format!("{tenant}/{SOURCE}/{}", r.id),
                    json: r.json.clone(),
                })
                .collect(),
        ),
    }
}

/// Whether the tenant's cloud offers the Audit Log Query API.
pub fn available(tenant: &TenantRuntime) -> bool {
    audit_search::available(&tenant.cfg.graph.host)
}
