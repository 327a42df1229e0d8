//! `GET /completeness?tenant=&from=&to=`: the completeness ledger judged hour by hour (sealed,
//! open, incomplete with its reason) per content type, from the ledger rows, the listing cursor
//! (how far listing reached) and `completeness.horizon` ([`crate::store::ledger::assess`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::backfill::parse_time;
use super::state::{AdminError, AdminState, TypeCounts, rfc3339};
use crate::pipeline::TenantRuntime;
use crate::store::Store;
use crate::store::ledger::{self, HOUR, HourState, LedgerCounts};

/// The longest range one answer covers (bounded answer: hours × content types).
pub const MAX_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);
/// The range when `from` is left out: three days before `to`.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(3 * 24 * 3600);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletenessQuery {
    /// May be left out when exactly one tenant is configured.
    #[serde(alias = "tenant_id")]
    pub tenant: Option<String>,
    /// Start (its hour included); default: 3 days before `to`.
    pub from: Option<String>,
    /// End (the hour it falls in included); default: now.
    pub to: Option<String>,
}

/// The answer of `GET /completeness`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletenessAnswer {
    pub tenant_id: String,
    /// First hour judged.
    pub from: String,
    /// End of the last hour judged.
    pub to: String,
    pub horizon_seconds: u64,
    pub content_types: Vec<TypeCompleteness>,
    /// Hours of every content type together.
    pub sealed: u64,
    pub open: u64,
    pub incomplete: u64,
}

/// One content type (or Graph feed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TypeCompleteness {
    pub content_type: String,
    /// How far listing reached (its cursor); `None` before the first listing.
    pub listed_until: Option<String>,
    pub hours: Vec<HourView>,
}

/// One hour's verdict with its counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HourView {
    /// Start of the UTC hour.
    pub hour: String,
    /// `sealed`, `open` or `incomplete`.
    pub state: String,
    /// Why it is open or incomplete; empty when sealed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub counts: LedgerCounts,
    /// The last change of its row; `None`: nothing recorded for it.
    pub updated_at: Option<String>,
}

fn state_name(s: HourState) -> &'static str {
    match s {
        HourState::Sealed => "sealed",
        HourState::Open => "open",
        HourState::Incomplete => "incomplete",
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn time_of(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)
}

/// Judges every hour of `[from_hour, to_hour)` of the tenant's content types and Graph feeds
/// (and of any other type the ledger has rows for).
pub async fn judge<S: Store>(
    store: &S,
    tenant: &TenantRuntime,
    from_hour: i64,
    to_hour: i64,
    horizon: Duration,
) -> Result<CompletenessAnswer, AdminError> {
    let unavailable = |e: crate::store::StoreError| AdminError::Unavailable(e.to_string());
    let id = &tenant.cfg.tenant_id;
    let rows = store
        .ledger_range(id, from_hour, to_hour)
        .await
        .map_err(unavailable)?;
    let mut by_type: BTreeMap<String, BTreeMap<i64, (LedgerCounts, u64)>> = BTreeMap::new();
    for ct in tenant.cfg.content_types.iter().cloned().chain(
        tenant
            .cfg
            .graph
            .feeds
            .iter()
            .map(|f| f.content_type().to_owned()),
    ) {
        by_type.entry(ct).or_default();
    }
    for r in rows {
        by_type
            .entry(r.key.content_type)
            .or_default()
            .insert(r.key.hour, (r.counts, r.updated_ms));
    }
    let mut answer = CompletenessAnswer {
        tenant_id: id.clone(),
        from: rfc3339(time_of(from_hour)),
        to: rfc3339(time_of(to_hour)),
        horizon_seconds: horizon.as_secs(),
        content_types: Vec::new(),
        sealed: 0,
        open: 0,
        incomplete: 0,
    };
    for (ct, mut rows) in by_type {
        let reach = store.cursor(id, &ct).await.map_err(unavailable)?;
        let mut hours = Vec::new();
        let mut h = from_hour;
        while h < to_hour {
            let row = rows.remove(&h);
            let (state, reason) = ledger::assess(h, row.as_ref().map(|r| &r.0), reach, horizon);
            match state {
                HourState::Sealed => answer.sealed += 1,
                HourState::Open => answer.open += 1,
                HourState::Incomplete => answer.incomplete += 1,
            }
            let (counts, updated) = row.unzip();
            hours.push(HourView {
                hour: rfc3339(time_of(h)),
                state: state_name(state).to_owned(),
                reason,
                counts: counts.unwrap_or_default(),
                updated_at: updated.map(|ms| rfc3339(UNIX_EPOCH + Duration::from_millis(ms))),
            });
            h += HOUR;
        }
        answer.content_types.push(TypeCompleteness {
            content_type: ct,
            listed_until: reach.map(rfc3339),
            hours,
        });
    }
    Ok(answer)
}

pub(super) async fn completeness<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    query: Result<Query<CompletenessQuery>, QueryRejection>,
) -> Result<Json<CompletenessAnswer>, AdminError> {
    let Query(q) = query.map_err(|e| {
        AdminError::BadRequest(format!(
            "{}: use ?tenant=ID&from=TIME&to=TIME",
            e.body_text()
        ))
    })?;
    let tenant = match q.tenant.as_deref() {
        Some(id) => state
            .tenant(id)
            .ok_or_else(|| AdminError::BadRequest(format!("tenant {id:?} is not configured")))?,
        None if state.tenants.len() == 1 => state.sorted_tenants()[0],
        None => {
            return Err(AdminError::BadRequest(
                "several tenants are configured: give ?tenant=ID".into(),
            ));
        }
    };
    let time = |key: &str, raw: Option<&String>| -> Result<Option<SystemTime>, AdminError> {
        raw.map(|v| {
            parse_time(v).map(SystemTime::from).ok_or_else(|| {
                AdminError::BadRequest(format!(
                    "{key} {v:?} is not a time: use RFC 3339 (2026-11-25T08:00:00Z) or YYYY-MM-DD[THH:MM[:SS]] (UTC)"
                ))
            })
        })
        .transpose()
    };
    let to = time("to", q.to.as_ref())?.unwrap_or_else(SystemTime::now);
    let from = time("from", q.from.as_ref())?.unwrap_or(to - DEFAULT_RANGE);
    let (from_hour, to_hour) = (ledger::hour_of(from), ledger::hour_of(to) + HOUR);
    if from_hour >= to_hour {
        return Err(AdminError::BadRequest(
            "from is after to: give from before to".into(),
        ));
    }
    if (to_hour - from_hour) as u64 > MAX_RANGE.as_secs() {
        return Err(AdminError::BadRequest(format!(
            "from..to spans more than {} days: ask for a shorter range",
            MAX_RANGE.as_secs() / 86400
        )));
    }
    let answer = judge(
        state.store.as_ref(),
        tenant,
        from_hour,
        to_hour,
        state.completeness.horizon,
    )
    .await?;
    Ok(Json(answer))
}

/// What `/metrics` shows per tenant and content type over the last [`METRICS_WINDOW`]: open
/// hours older than the horizon (late content or a stuck blob) and incomplete hours.
pub const METRICS_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most tenants one scrape judges afresh (each judgement reads the tenant's rows of
/// [`METRICS_WINDOW`]: up to 168 × its content types); the others are answered from
/// [`super::state::MetricsCache`]. With many tenants a scrape so costs O(series) plus a bounded read.
pub const METRICS_TENANTS_PER_SCRAPE: usize = 100;

/// `(tenant, content type) → (open hours past the horizon, incomplete hours)`.
pub(super) async fn metric_counts<S: Store>(
    state: &AdminState<S>,
) -> BTreeMap<(String, String), (u64, u64)> {
    let mut cache = state.completeness_metrics.0.lock().await;
    let tenants = state.sorted_tenants();
    cache.retain(|id, _| state.tenants.contains_key(id));
    let refresh = state.completeness.metrics_refresh;
    let mut stale: Vec<(Option<Instant>, &Arc<TenantRuntime>)> = tenants
        .iter()
        .filter_map(|t| match cache.get(&t.cfg.tenant_id) {
            Some((at, _)) if at.elapsed() < refresh => None,
            judged => Some((judged.map(|(at, _)| *at), *t)),
        })
        .collect();
    // Never judged (None) first, then the oldest.
    stale.sort_by_key(|(at, _)| *at);
    for (_, t) in stale.into_iter().take(METRICS_TENANTS_PER_SCRAPE) {
        // A tenant the store cannot answer for keeps its last verdicts (the store's state has
        // metrics of its own).
        if let Ok(counts) = tenant_metric_counts(state, t).await {
            cache.insert(t.cfg.tenant_id.clone(), (Instant::now(), counts));
        }
    }
    let mut out = BTreeMap::new();
    for t in tenants {
        for (ct, counts) in cache.get(&t.cfg.tenant_id).map_or(&[][..], |(_, c)| c) {
            out.insert((t.cfg.tenant_id.clone(), ct.clone()), *counts);
        }
    }
    out
}

/// One tenant's metrics, judged from its ledger rows of the last [`METRICS_WINDOW`].
async fn tenant_metric_counts<S: Store>(
    state: &AdminState<S>,
    tenant: &TenantRuntime,
) -> Result<TypeCounts, AdminError> {
    let now = SystemTime::now();
    let to_hour = ledger::hour_of(now) + HOUR;
    let from_hour = to_hour - METRICS_WINDOW.as_secs() as i64;
    let horizon = state.completeness.horizon;
    // An hour is overdue once listing should have sealed it: its end plus the horizon is past.
    let overdue_before = secs(now) - horizon.as_secs() as i64 - HOUR;
    let answer = judge(state.store.as_ref(), tenant, from_hour, to_hour, horizon).await?;
    Ok(answer
        .content_types
        .into_iter()
        .map(|ct| {
            let mut open = 0;
            let mut incomplete = 0;
            for (i, h) in ct.hours.iter().enumerate() {
                let start = from_hour + i as i64 * HOUR;
                match h.state.as_str() {
                    "incomplete" => incomplete += 1,
                    "open" if start <= overdue_before => open += 1,
                    _ => {}
                }
            }
            (ct.content_type, (open, incomplete))
        })
        .collect())
}
