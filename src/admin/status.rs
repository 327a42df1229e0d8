//! `GET /status`, `GET /healthz`, `GET /readyz`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::metrics::counter_values;
use super::state::{
    AdminError, AdminState, STATS_MAX_AGE, last_notifications, rfc3339, uptime_secs,
};
use crate::pipeline::gate::GateState;
use crate::store::{Store, clock};
use crate::telemetry::Metrics;

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// `push` or `pull`.
    pub mode: String,
    pub started: String,
    pub uptime_secs: u64,
    pub queue: QueueStatus,
    pub tenants: Vec<TenantStatus>,
    pub outputs: Vec<OutputStatus>,
    /// Every process counter by name (the `/metrics` names without `o365_` and `_total`).
    pub counters: BTreeMap<String, u64>,
    /// With a shared store (several replicas): this replica and who lists which tenant. The
    /// queue above is the whole deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicasStatus>,
    /// Tenants with queued blobs that this replica is not configured for (during a rolling
    /// configuration change, another replica's configuration names them): their blobs are left
    /// to the replicas that are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_tenants: Vec<UnknownTenantStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnknownTenantStatus {
    pub tenant_id: String,
    /// When this replica first and last claimed one of its blobs (RFC 3339).
    pub first_seen: String,
    pub last_seen: String,
    /// Its blobs this replica claimed and gave back untouched.
    pub blobs_left: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicasStatus {
    /// The answering replica's token.
    pub this_replica: String,
    /// One entry per tenant lease, by tenant id.
    pub tenant_leases: Vec<TenantLeaseStatus>,
    /// How far this replica's clock is ahead of the database's (negative: behind), as last
    /// measured (every 30 s); `None` before the first measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<f64>,
    /// Set while the skew is past 5 s: what is wrong and the fix (readiness fails meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_problem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantLeaseStatus {
    pub tenant_id: String,
    /// Token of the replica that lists the tenant and keeps its subscriptions.
    pub holder: String,
    /// Since when it holds it (RFC 3339).
    pub since: String,
    /// Until the lease lapses unless renewed; negative: lapsed (its holder is gone).
    pub expires_in_ms: i64,
}

/// The durable queue, from `Store::stats`; `error` (and zeros) when the store did not answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pending: u64,
    pub leased: u64,
    pub dead_letters: u64,
    pub oldest_pending_age_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantStatus {
    pub tenant_id: String,
    /// The configured `tenant_name`, if any.
    #[serde(default)]
    pub tenant_name: Option<String>,
    /// `ok`, or what is wrong, most urgent first: `auth_failed` (Azure AD refuses the
    /// credentials), `denied` (a permission is missing), `throttled` (429), `paused` (its output
    /// is down), `gap` (content lost in the last 24 h), `not_listed_here` (another replica lists
    /// it).
    #[serde(default)]
    pub state: String,
    /// The problem behind the state (with `ok`: the latest failure not yet followed by a
    /// success of the same call, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<TenantError>,
    pub output: String,
    pub content_types: Vec<ContentTypeStatus>,
    /// The tenant's Microsoft Graph feeds (none unless `graph_feeds` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph_feeds: Vec<GraphFeedStatus>,
    /// Its queue reached `pipeline.queue_high_water` (its output is slow or down): its listing
    /// and Graph feeds wait; other tenants go on.
    #[serde(default)]
    pub listing_deferred: bool,
    /// Windows whose content was lost because Microsoft no longer kept it when listing got there
    /// (the newest 20 since the start; `o365_listing_gaps_total` counts all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<GapStatus>,
}

/// A tenant's current problem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantError {
    /// e.g. `invalid_secret`, `unknown_tenant`, `permission_missing`, `throttled`,
    /// `output_paused`, `content_lost`, `network`, `server_error` (the `reason` label of
    /// `o365_tenant_errors_total`).
    pub reason: String,
    /// The content type, Graph feed (`Graph.SignIns`, …), `subscriptions`, `content fetches` or
    /// `output NAME` where it was seen.
    pub source: String,
    /// Microsoft's (or our) first line about it; never a secret or token.
    pub message: String,
    /// Since when this source has had this reason (RFC 3339).
    pub since: String,
}

/// A lost window (RFC 3339 times).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GapStatus {
    /// The content type or Graph feed.
    pub source: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub noticed_at: String,
}

/// One Graph feed of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphFeedStatus {
    /// `sign_ins`, `directory_audits`, `message_trace`, `service_health`.
    pub feed: String,
    /// `ok`, `denied` (401/403: a permission, licence or service principal is missing),
    /// `throttled` (a 429's Retry-After holds it), `failing`, or `starting`.
    pub state: String,
    /// Where the next read starts, before the overlap (RFC 3339).
    pub cursor: Option<String>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_reason: Option<String>,
    /// Records listed since the start (before dedup) and pages read.
    pub records: u64,
    pub pages: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentTypeStatus {
    pub content_type: String,
    /// Where listing resumes (RFC 3339), `None` before the first pull.
    pub checkpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_error: Option<String>,
    /// Last accepted webhook notification for this tenant and content type.
    pub last_notification: Option<String>,
    /// Records dropped since the start because another blob delivered them (Microsoft's own
    /// duplicates, `store.record_dedup_window`).
    #[serde(default)]
    pub duplicates_dropped: u64,
    /// Microsoft allows one `subscriptions/start` of a subscription every 15 minutes: the
    /// earliest time the next one may be sent (RFC 3339), while that is ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_allowed_start: Option<String>,
    /// Its subscription needs a start that has to wait for `next_allowed_start`: it is listed by
    /// pull every `pull.interval` until then (in push mode too).
    #[serde(default)]
    pub start_waiting: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputStatus {
    pub name: String,
    /// No failure since the last success.
    pub healthy: bool,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_reason: Option<String>,
    pub consecutive_errors: u64,
    /// `open` (deliveries flow), `paused` (down; its blobs wait in the queue) or `probing`.
    #[serde(default)]
    pub deliveries: String,
    /// When a paused output is tried again (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
}

pub(super) async fn status<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
) -> Json<StatusAnswer> {
    let queue = match state.store.recent_stats(STATS_MAX_AGE).await {
        Ok(s) => QueueStatus {
            error: None,
            pending: s.pending,
            leased: s.leased,
            dead_letters: s.dead_letters,
            oldest_pending_age_secs: s.oldest_pending_age_secs,
        },
        Err(e) => QueueStatus {
            error: Some(e.to_string()),
            ..QueueStatus::default()
        },
    };
    let notified = last_notifications(&state.counters.activity);
    let mut tenants = Vec::new();
    for t in state.sorted_tenants() {
        let tid = &t.cfg.tenant_id;
        let mut content_types = Vec::new();
        for ct in &t.cfg.content_types {
            let (checkpoint, checkpoint_error) = match state.store.cursor(tid, ct).await {
                Ok(c) => (c.map(rfc3339), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let last_notification = notified
                .get(&(tid.to_ascii_lowercase(), ct.to_ascii_lowercase()))
                .copied()
                .map(rfc3339);
            let duplicates_dropped = state
                .counters
                .metrics
                .duplicate_records_dropped
                .get_or_create(&Metrics::tenant_labels(tid, ct))
                .get();
            let next_allowed_start =
                crate::pipeline::lifecycle::next_allowed_start(state.store.as_ref(), tid, ct)
                    .await
                    .ok()
                    .flatten()
                    .map(rfc3339);
            let start_waiting = t.start_waits().iter().any(|(c, _)| c == ct);
            content_types.push(ContentTypeStatus {
                content_type: ct.clone(),
                checkpoint,
                checkpoint_error,
                last_notification,
                duplicates_dropped,
                next_allowed_start,
                start_waiting,
            });
        }
        let mut graph_feeds = Vec::new();
        if let Some(graph) = &t.graph {
            for feed in &t.cfg.graph.feeds {
                let st = graph.status_of(*feed);
                let cursor = match st.cursor {
                    Some(c) => Some(c),
                    None => state
                        .store
                        .cursor(tid, feed.content_type())
                        .await
                        .ok()
                        .flatten(),
                };
                let failing = match (st.last_error_at, st.last_success) {
                    (Some(e), Some(s)) => e > s,
                    (Some(_), None) => true,
                    _ => false,
                };
                let state = if graph.client.throttled_for(*feed).is_some() {
                    "throttled"
                } else if failing && st.denied {
                    "denied"
                } else if failing {
                    "failing"
                } else if st.last_success.is_some() {
                    "ok"
                } else {
                    "starting"
                };
                graph_feeds.push(GraphFeedStatus {
                    feed: feed.config_name().to_string(),
                    state: state.to_string(),
                    cursor: cursor.map(rfc3339),
                    last_success: st.last_success.map(rfc3339),
                    last_error: st.last_error_at.map(rfc3339),
                    last_error_reason: st.last_error,
                    records: st.records,
                    pages: st.pages,
                });
            }
        }
        let time = |t: chrono::DateTime<chrono::Utc>| rfc3339(SystemTime::from(t));
        let gaps = t
            .health
            .gaps()
            .into_iter()
            .map(|g| GapStatus {
                source: g.source,
                from: time(g.from),
                to: time(g.to),
                reason: g.reason,
                noticed_at: time(g.noticed_at),
            })
            .collect();
        let health = t.assess();
        tenants.push(TenantStatus {
            tenant_id: tid.clone(),
            tenant_name: t.cfg.tenant_name.clone(),
            state: health.state.as_str().to_string(),
            last_error: health.problem.map(|p| TenantError {
                reason: p.reason.to_string(),
                source: p.source,
                message: p.message,
                since: time(p.since),
            }),
            output: t.output_name.clone(),
            content_types,
            graph_feeds,
            listing_deferred: t.health.deferring(),
            gaps,
        });
    }
    // Every configured output, with what the workers saw of it (nothing yet: healthy, no times).
    let seen: BTreeMap<String, _> = state.counters.activity.outputs().into_iter().collect();
    let names: BTreeSet<String> = state
        .tenants
        .values()
        .map(|t| t.output_name.clone())
        .chain(seen.keys().cloned())
        .collect();
    let gates: BTreeMap<&str, GateState> = state
        .tenants
        .values()
        .map(|t| (t.output_name.as_str(), t.gate.state()))
        .collect();
    let outputs = names
        .into_iter()
        .map(|name| {
            let h = seen.get(&name).cloned().unwrap_or_default();
            let gate = gates.get(name.as_str()).copied().unwrap_or(GateState::Open);
            let (deliveries, retry_at) = match gate {
                GateState::Open => ("open", None),
                GateState::Probing { .. } => ("probing", None),
                GateState::Closed { until, .. } => {
                    let wait = until.saturating_duration_since(std::time::Instant::now());
                    ("paused", Some(rfc3339(SystemTime::now() + wait)))
                }
            };
            OutputStatus {
                deliveries: deliveries.to_string(),
                retry_at,
                healthy: h.consecutive_errors == 0,
                last_success: h.last_success.map(rfc3339),
                last_error: h.last_error.map(rfc3339),
                last_error_reason: h.last_error_reason,
                consecutive_errors: h.consecutive_errors,
                name,
            }
        })
        .collect();
    let counters = counter_values(&state.counters)
        .into_iter()
        .map(|(c, v)| (c.name.to_string(), v))
        .collect();
    let skew = state.counters.activity.clock_skew();
    let clock_skew_secs = skew.map(|s| s.skew_ms as f64 / 1000.0);
    let clock_problem = skew.filter(clock::too_far).map(|s| clock::describe(&s));
    let replicas = match state.store.replica() {
        None => None,
        Some(me) => Some(match state.store.tenant_holders().await {
            Ok(holders) => ReplicasStatus {
                this_replica: me.to_owned(),
                tenant_leases: holders
                    .into_iter()
                    .map(|h| TenantLeaseStatus {
                        tenant_id: h.tenant_id,
                        holder: h.holder,
                        since: rfc3339(h.since),
                        expires_in_ms: h.expires_in_ms,
                    })
                    .collect(),
                clock_skew_secs,
                clock_problem,
                error: None,
            },
            Err(e) => ReplicasStatus {
                this_replica: me.to_owned(),
                clock_skew_secs,
                clock_problem,
                error: Some(e.to_string()),
                ..ReplicasStatus::default()
            },
        }),
    };
    let unknown_tenants = state
        .counters
        .activity
        .unknown_tenants()
        .into_iter()
        .map(|(tenant_id, u)| UnknownTenantStatus {
            tenant_id,
            first_seen: rfc3339(u.first_seen),
            last_seen: rfc3339(u.last_seen),
            blobs_left: u.blobs_left,
        })
        .collect();
    Json(StatusAnswer {
        replicas,
        unknown_tenants,
        mode: state.mode().to_string(),
        started: rfc3339(state.started),
        uptime_secs: uptime_secs(state.started),
        queue,
        tenants,
        outputs,
        counters,
    })
}

/// 200 as long as the process serves requests.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// 200 when the store takes writes (a write probe; see `Store::ready`) and, with replicas, this
/// replica's clock agrees with the database's; 503 with the reason otherwise.
pub(super) async fn readyz<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
) -> Result<Json<serde_json::Value>, AdminError> {
    if let Err(e) = state.store.ready().await {
        return Err(AdminError::Unavailable(format!("store: {e}")));
    }
    if let Some(skew) = state.counters.activity.clock_skew().filter(clock::too_far) {
        return Err(AdminError::Unavailable(format!(
            "clock: {}",
            clock::describe(&skew)
        )));
    }
    Ok(Json(serde_json::json!({ "status": "ready" })))
}
