//! `POST /backfill`: lists `[start, end)` of one tenant's content type (within the 7 days Microsoft
//! keeps), stores what was not seen before and wakes the workers. The cursor is not touched.
//! With `"source": "audit-search"`, collects every content type the tenant collects from
//! Purview's Audit Log Query API instead, up to 180 days back (`pipeline::audit_backfill`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::state::{AdminError, AdminState};
use super::subscriptions::canonical_content_type;
use crate::graph::audit_search::RETENTION;
use crate::pipeline::audit_backfill::{self, AuditBackfillError, AuditBackfillReport};
use crate::pipeline::puller::{self, MAX_BACK, PullError};
use crate::pipeline::tenant::TenantRuntime;
use crate::store::Store;

/// The body of `POST /backfill`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackfillRequest {
    /// May be left out when exactly one tenant is configured.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Required for the Management API; ignored by `audit-search` (every collected type).
    #[serde(default)]
    pub content_type: String,
    /// RFC 3339, or the API's forms (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]`, UTC).
    pub start: String,
    /// Same forms; left out: now.
    #[serde(default)]
    pub end: Option<String>,
    /// `management` (left out) or `audit-search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The answer of `POST /backfill`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackfillAnswer {
    pub tenant_id: String,
    pub content_type: String,
    pub requested_start: String,
    pub requested_end: String,
    /// What was actually listed (after clamping to retention and to now).
    pub start: String,
    pub end: String,
    /// Content blobs listed.
    pub listed: usize,
    /// Newly stored (the others were already known by contentId).
    pub added: usize,
    pub pages: usize,
    /// Listed blobs whose contentUri was not on the configured resource (never fetched).
    pub refused: usize,
    /// The requested start was older than Microsoft keeps content: the listing started later.
    pub truncated: bool,
    /// Human explanations of any clamping.
    pub notes: Vec<String>,
    /// What the audit search did (`source: audit-search` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_search: Option<AuditBackfillReport>,
}

/// Parses RFC 3339 (any offset) or the API's own forms, which are UTC.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let t = raw.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix('z'))
        .unwrap_or(t);
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|n| n.and_utc());
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .map(|n| n.and_utc())
}

fn time_field(name: &str, raw: &str) -> Result<DateTime<Utc>, AdminError> {
    parse_time(raw).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "{name} {raw:?} is not a time: use RFC 3339 (2026-11-25T08:00:00Z) or YYYY-MM-DD[THH:MM[:SS]] (UTC)"
        ))
    })
}

pub(super) fn secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) async fn backfill<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    body: Result<Json<BackfillRequest>, JsonRejection>,
) -> Result<Json<BackfillAnswer>, AdminError> {
    let Json(req) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let tenant = one_tenant(&state, req.tenant_id.as_deref())?;
    match req.source.as_deref().map(str::trim) {
        None | Some("") | Some("management") => {}
        Some("audit-search") => return audit_search(&state, tenant, &req).await.map(Json),
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "source {other:?} is not a source: use management (the default) or audit-search"
            )));
        }
    }
    let ct = canonical_content_type(&req.content_type)?;
    if !tenant
        .cfg
        .content_types
        .iter()
        .any(|c| c.eq_ignore_ascii_case(ct))
    {
        return Err(AdminError::BadRequest(format!(
            "tenant {} does not collect {ct} (content_type in the configuration: {})",
            tenant.cfg.tenant_id,
            tenant.cfg.content_types.join(" ")
        )));
    }
    let now = Utc::now();
    let Range { start, end, notes } = range(
        &req.start,
        req.end.as_deref(),
        now,
        MAX_BACK,
        "Microsoft keeps content for 7 days: listing",
        "older content is gone",
        "listing",
    )?;
    let oldest = now - MAX_BACK;
    // Runs on its own task so that a client that hangs up does not cut the listing in the middle.
    let store = state.store.clone();
    let t = tenant.clone();
    let report = tokio::spawn(async move {
        puller::backfill(t.as_ref(), ct, store.as_ref(), start, end, now).await
    })
    .await
    .map_err(|e| AdminError::Unavailable(format!("backfill task failed: {e}")))?
    .map_err(|e| match e {
        PullError::Api(e) => AdminError::Upstream(format!("content listing failed: {e}")),
        PullError::Store(e) => AdminError::Unavailable(format!("store: {e}")),
    })?;
    if report.added > 0 {
        state.wake.notify_waiters();
    }
    tracing::info!(tenant.id = %tenant.cfg.tenant_id, content.type = ct, listed = report.listed,
                   added = report.added, truncated = report.truncated, "backfill through the admin API");
    Ok(Json(BackfillAnswer {
        tenant_id: tenant.cfg.tenant_id.clone(),
        content_type: ct.to_string(),
        requested_start: secs(start),
        requested_end: secs(end),
        start: secs(start.max(oldest)),
        end: secs(end.min(now)),
        listed: report.listed,
        added: report.added,
        pages: report.pages,
        refused: report.refused,
        truncated: report.truncated,
        notes,
        audit_search: None,
    }))
}

/// The `audit-search` source: `[start, end)` within the 180 days Microsoft keeps, every content
/// type the tenant collects, from Purview's Audit Log Query API.
async fn audit_search<S: Store>(
    state: &Arc<AdminState<S>>,
    tenant: Arc<TenantRuntime>,
    req: &BackfillRequest,
) -> Result<BackfillAnswer, AdminError> {
    let cfg = &tenant.cfg;
    audit_search_offered(
        &tenant,
        "backfill it with --source management (7 days back)",
    )?;
    let now = Utc::now();
    let Range { start, end, notes } = range(
        &req.start,
        req.end.as_deref(),
        now,
        RETENTION,
        "Microsoft keeps audit records for 180 days: the search",
        "older records are gone",
        "the search",
    )?;
    let oldest = now - RETENTION;
    let (from, to) = (start.max(oldest), end.min(now));
    // Its own task, so that a client that hangs up does not cut the backfill in the middle.
    let store = state.store.clone();
    let t = tenant.clone();
    let report = tokio::spawn(async move {
        audit_backfill::backfill(t.as_ref(), store.as_ref(), from, to).await
    })
    .await
    .map_err(|e| AdminError::Unavailable(format!("backfill task failed: {e}")))?
    .map_err(audit_search_error)?;
    if report.added > 0 {
        state.wake.notify_waiters();
    }
    tracing::info!(tenant.id = %cfg.tenant_id, records = report.records, added = report.added,
                   queries = report.queries, splits = report.splits, "audit-search backfill through the admin API");
    Ok(BackfillAnswer {
        tenant_id: cfg.tenant_id.clone(),
        content_type: cfg.content_types.join(" "),
        requested_start: secs(start),
        requested_end: secs(end),
        start: secs(from),
        end: secs(to),
        listed: report.records,
        added: report.added,
        pages: report.queries,
        refused: 0,
        truncated: start < oldest,
        notes,
        audit_search: Some(report),
    })
}

/// The tenant an admin request names, or the only one configured.
pub(super) fn one_tenant<S: Store>(
    state: &AdminState<S>,
    tenant_id: Option<&str>,
) -> Result<Arc<TenantRuntime>, AdminError> {
    match tenant_id.map(str::trim).filter(|t| !t.is_empty()) {
        Some(id) => state
            .tenant(id)
            .cloned()
            .ok_or_else(|| AdminError::BadRequest(format!("tenant {id} is not configured"))),
        None if state.tenants.len() == 1 => state
            .tenants
            .values()
            .next()
            .cloned()
            .ok_or_else(|| AdminError::BadRequest("no tenant is configured".into())),
        None => Err(AdminError::BadRequest(
            "tenant_id is required when several tenants are configured".into(),
        )),
    }
}

/// Refuses a tenant whose cloud has no Audit Log Query API, saying what to do instead.
pub(super) fn audit_search_offered(
    tenant: &TenantRuntime,
    instead: &str,
) -> Result<(), AdminError> {
    if audit_backfill::available(tenant) && tenant.audit_search.is_some() {
        return Ok(());
    }
    let cfg = &tenant.cfg;
    Err(AdminError::BadRequest(format!(
        "tenant {}: Microsoft offers the Audit Log Query API (audit-search) in its global cloud only, and this tenant is in a national cloud (resource {}, graph_host {}): {instead}",
        cfg.tenant_id, cfg.resource, cfg.graph.host
    )))
}

/// An audit-search failure as the admin API answers it (403, 429 after the back-off: 502).
pub(super) fn audit_search_error(e: AuditBackfillError) -> AdminError {
    match e {
        AuditBackfillError::Store(e) => AdminError::Unavailable(format!("store: {e}")),
        AuditBackfillError::Search(e) => AdminError::Upstream(format!(
            "audit search failed (permission: AuditLogsQuery.Read.All): {e}"
        )),
    }
}

/// A backfill's `[start, end)` as asked, with the notes on what Microsoft's reach (`reach` back
/// from `now`) and the clock cut off; refused when it is empty or lies in the future.
pub(super) struct Range {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub notes: Vec<String>,
}

pub(super) fn range(
    start: &str,
    end: Option<&str>,
    now: DateTime<Utc>,
    reach: TimeDelta,
    kept: &str,
    gone: &str,
    what: &str,
) -> Result<Range, AdminError> {
    let start = time_field("start", start)?;
    let end = match end {
        Some(e) => time_field("end", e)?,
        None => now,
    };
    if start >= end {
        return Err(AdminError::BadRequest(format!(
            "start {} is not before end {}",
            secs(start),
            secs(end)
        )));
    }
    if start >= now {
        return Err(AdminError::BadRequest(format!(
            "start {} is in the future",
            secs(start)
        )));
    }
    let oldest = now - reach;
    let mut notes = Vec::new();
    if start < oldest {
        notes.push(format!(
            "{kept} starts at {} instead of {}; {gone}",
            secs(oldest),
            secs(start)
        ));
    }
    if end > now {
        notes.push(format!(
            "end {} is in the future: {what} ends now",
            secs(end)
        ));
    }
    Ok(Range { start, end, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn accepts_rfc3339_and_the_api_forms() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 8, 30, 0).unwrap();
        assert_eq!(parse_time("2026-11-25T08:30:00Z"), Some(at));
        assert_eq!(parse_time("2026-11-25T09:30:00+01:00"), Some(at));
        assert_eq!(parse_time("2026-11-25T08:30"), Some(at));
        assert_eq!(parse_time("2026-11-25T08:30:00"), Some(at));
        assert_eq!(parse_time("2026-11-25T08:30:00.000Z"), Some(at));
        assert_eq!(
            parse_time("2026-11-25"),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-01"), None);
    }
}
