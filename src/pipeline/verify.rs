//! `verify`: did the Management Activity API give us everything? Per tenant × UTC hour ×
//! `RecordType`, the records Purview's Audit Log Query API returns (`graph::audit_search`) against
//! those the output accepted (the completeness ledger's `record_types`, counted by the workers).
//!
//! The search is walked window by window ([`Leaves`]) and only counted, so memory holds one
//! query's records and a count per hour and record type, never the range's records. Each row of
//! the range gets the verdict (`verified_ms`, `verified_missing`): an hour with records missing is
//! incomplete until a later verify finds none. `repair` delivers the missing records through the
//! audit-search backfill ([`audit_backfill::backfill_where`]), asking only for the hours and record
//! types found short; the record dedup drops those that were delivered (exactly once).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::audit_backfill::{self, AuditBackfillError, AuditBackfillReport, SOURCE};
use super::tenant::TenantRuntime;
use crate::graph::audit_search::{AuditSearchError, Leaves, content_type_of};
use crate::store::Store;
use crate::store::ledger::{HOUR, LedgerCounts, LedgerDelta, LedgerKey, LedgerRow};

/// One hour × record type where the two sources differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Start of the UTC hour (RFC 3339).
    pub hour: String,
    /// The content type the record type is published under.
    pub content_type: String,
    pub record_type: i64,
    /// Records the output accepted (ledger).
    pub delivered: u64,
    /// Records Audit Search returned.
    pub audit_search: u64,
    /// `audit_search − delivered` when positive: records Microsoft has that we did not deliver.
    pub missing: u64,
}

/// What one verify found (and repaired).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub tenant_id: String,
    /// The hours compared: `[start, end)`.
    pub start: String,
    pub end: String,
    /// Audit Search queries made (split windows included) and windows split.
    pub queries: usize,
    pub splits: usize,
    /// Records Audit Search returned of the content types the tenant collects.
    pub records: u64,
    /// Records of content types the tenant does not collect (not compared).
    pub not_collected: u64,
    /// Records without `auditData` (not compared).
    pub unreadable: u64,
    /// Records delivered in the range, by the ledger.
    pub delivered: u64,
    /// Hours × record types compared.
    pub compared: usize,
    /// Those that differ, oldest first.
    pub differences: Vec<Difference>,
    /// Records missing in all.
    pub missing: u64,
    /// What `repair` enqueued (absent without repair or with nothing missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<AuditBackfillReport>,
}

/// Per (hour, record type): records Audit Search returned.
pub type Counts = BTreeMap<(i64, i64), u64>;

/// The hours the two sides differ in, from Audit Search's counts and the ledger's rows of the
/// same range (Management API content types only; a record type's count summed over the rows of
/// its hour, whatever content type delivered it). Pure.
pub fn compare(audit: &Counts, rows: &[LedgerRow]) -> (Counts, Vec<Difference>) {
    let mut delivered: Counts = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| !r.key.content_type.starts_with("Graph."))
    {
        for (rt, n) in &row.counts.record_types {
            if let Ok(rt) = rt.parse::<i64>() {
                *delivered.entry((row.key.hour, rt)).or_default() += n;
            }
        }
    }
    let keys: BTreeSet<(i64, i64)> = audit.keys().chain(delivered.keys()).copied().collect();
    let mut differences = Vec::new();
    for (hour, rt) in keys {
        let a = audit.get(&(hour, rt)).copied().unwrap_or(0);
        let d = delivered.get(&(hour, rt)).copied().unwrap_or(0);
        if a != d {
            differences.push(Difference {
                hour: hour_text(hour),
                content_type: content_type_of(rt).to_owned(),
                record_type: rt,
                delivered: d,
                audit_search: a,
                missing: a.saturating_sub(d),
            });
        }
    }
    (delivered, differences)
}

/// The verdict for every Management API row of the range: the records missing in it (0 for a
/// row compared and found whole), stamped `now_ms`. `content_types`: the tenant's, as configured.
pub fn verdicts(
    tenant_id: &str,
    content_types: &[String],
    audit: &Counts,
    rows: &[LedgerRow],
    differences: &[Difference],
    now_ms: u64,
) -> Vec<LedgerDelta> {
    let configured = |ct: &str| {
        content_types
            .iter()
            .find(|c| c.eq_ignore_ascii_case(ct))
            .cloned()
    };
    let mut missing: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| !r.key.content_type.starts_with("Graph."))
    {
        missing.insert((row.key.content_type.clone(), row.key.hour), 0);
    }
    for (hour, rt) in audit.keys() {
        if let Some(ct) = configured(content_type_of(*rt)) {
            missing.entry((ct, *hour)).or_default();
        }
    }
    for d in differences.iter().filter(|d| d.missing > 0) {
        if let (Some(ct), Some(hour)) = (
            configured(&d.content_type),
            crate::store::ledger::hour_of_text(&d.hour),
        ) {
            *missing.entry((ct, hour)).or_default() += d.missing;
        }
    }
    missing
        .into_iter()
        .map(|((ct, hour), n)| LedgerDelta {
            key: LedgerKey::new(tenant_id, &ct, hour),
            counts: LedgerCounts {
                verified_ms: now_ms,
                verified_missing: n,
                ..LedgerCounts::default()
            },
        })
        .collect()
}

fn hour_text(hour: i64) -> String {
    DateTime::<Utc>::from_timestamp(hour, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Compares `[start, end)` (widened to whole hours) of `tenant`, records the verdicts in the
/// ledger and, with `repair`, enqueues the missing records. The caller clamps the range to the
/// 180 days Microsoft keeps and to now, and checks the tenant's cloud.
pub async fn verify<S: Store>(
    tenant: &TenantRuntime,
    store: &S,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    repair: bool,
) -> Result<VerifyReport, AuditBackfillError> {
    let cfg = &tenant.cfg;
    let Some(client) = tenant.audit_search.as_ref() else {
        return Err(AuditSearchError::Shape(
            "the tenant's cloud has no Audit Log Query API".into(),
        )
        .into());
    };
    let start = hour_start(start);
    let end = match hour_start(end) {
        e if e < end => e + TimeDelta::hours(1),
        e => e,
    };
    let mut report = VerifyReport {
        tenant_id: cfg.tenant_id.clone(),
        start: hour_text(start.timestamp()),
        end: hour_text(end.timestamp()),
        ..VerifyReport::default()
    };
    let mut audit: Counts = BTreeMap::new();
    let mut leaves = Leaves::new(start, end);
    let walked = loop {
        let Some(leaf) = leaves.next(client).await else {
            break Ok(());
        };
        let answer = match leaf {
            Ok((_, _, a)) => a,
            Err(e) => break Err(e),
        };
        report.unreadable += answer.unreadable as u64;
        for r in &answer.records {
            if cfg
                .content_types
                .iter()
                .any(|c| c.eq_ignore_ascii_case(r.content_type))
            {
                report.records += 1;
                *audit
                    .entry((hour_start(r.created).timestamp(), r.record_type))
                    .or_default() += 1;
            } else {
                report.not_collected += 1;
            }
        }
    };
    report.queries = leaves.queries;
    report.splits = leaves.splits;
    match &walked {
        Ok(()) => tenant.health.succeeded(cfg, SOURCE),
        Err(e) => {
            if let Some(api) = e.api() {
                tenant.health.failed_aside(cfg, SOURCE, api);
            }
        }
    }
    walked?;
    let rows = store
        .ledger_range(&cfg.tenant_id, start.timestamp(), end.timestamp())
        .await?;
    let (delivered, differences) = compare(&audit, &rows);
    report.delivered = delivered.values().sum();
    report.compared = audit
        .keys()
        .chain(delivered.keys())
        .collect::<BTreeSet<_>>()
        .len();
    report.missing = differences.iter().map(|d| d.missing).sum();
    let now_ms = (crate::telemetry::unix_now() * 1000.0) as u64;
    store
        .ledger_add(verdicts(
            &cfg.tenant_id,
            &cfg.content_types,
            &audit,
            &rows,
            &differences,
            now_ms,
        ))
        .await?;
    if repair && report.missing > 0 {
        let short: BTreeSet<(i64, i64)> = differences
            .iter()
            .filter(|d| d.missing > 0)
            .filter_map(|d| Some((crate::store::ledger::hour_of_text(&d.hour)?, d.record_type)))
            .collect();
        let first = short.iter().map(|s| s.0).min().unwrap_or(start.timestamp());
        let last = short.iter().map(|s| s.0).max().unwrap_or(start.timestamp()) + HOUR;
        let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or(start);
        let repaired = audit_backfill::backfill_where(tenant, store, at(first), at(last), |r| {
            short.contains(&(hour_start(r.created).timestamp(), r.record_type))
        })
        .await?;
        report.repair = Some(repaired);
    }
    report.differences = differences;
    info!(tenant.id = %cfg.tenant_id, start = %report.start, end = %report.end,
          records = report.records, delivered = report.delivered, missing = report.missing,
          repair, "verify against Audit Search");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ct: &str, hour: i64, types: &[(&str, u64)]) -> LedgerRow {
        LedgerRow {
            key: LedgerKey::new("t", ct, hour),
            counts: LedgerCounts {
                record_types: types.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
                ..LedgerCounts::default()
            },
            updated_ms: 0,
        }
    }

    #[test]
    fn differences_are_the_hours_and_record_types_that_disagree() {
        let h = 1_767_261_600;
        let audit: Counts = [((h, 2), 10), ((h, 15), 4), ((h + HOUR, 2), 3)].into();
        let rows = vec![
            row("Audit.Exchange", h, &[("2", 7)]),
            // A record type delivered under another content type still counts for its hour.
            row("Audit.General", h, &[("2", 3), ("15", 1)]),
            row("Audit.Exchange", h + HOUR, &[("2", 4)]),
            row("Graph.SignIns", h, &[("15", 99)]),
        ];
        let (delivered, diff) = compare(&audit, &rows);
        assert_eq!(delivered[&(h, 2)], 10);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert_eq!(
            (diff[0].record_type, diff[0].delivered, diff[0].audit_search),
            (15, 1, 4)
        );
        assert_eq!(diff[0].missing, 3);
        assert_eq!(diff[0].content_type, "Audit.AzureActiveDirectory");
        // More delivered than Audit Search has (a batch sent twice after a crash): not missing.
        assert_eq!((diff[1].delivered, diff[1].missing), (4, 0));

        let types = vec![
            "Audit.Exchange".to_string(),
            "Audit.AzureActiveDirectory".into(),
        ];
        let v = verdicts("T", &types, &audit, &rows, &diff, 5);
        let of = |ct: &str, hour| {
            v.iter()
                .find(|d| d.key.content_type == ct && d.key.hour == hour)
                .map(|d| (d.counts.verified_ms, d.counts.verified_missing))
        };
        assert_eq!(of("Audit.AzureActiveDirectory", h), Some((5, 3)));
        assert_eq!(of("Audit.Exchange", h), Some((5, 0)));
        assert_eq!(of("Audit.Exchange", h + HOUR), Some((5, 0)));
        assert_eq!(of("Graph.SignIns", h), None);
    }
}
