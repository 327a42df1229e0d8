//! What the admin handlers share: the state they read, the error they answer with, and how they
//! write times.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

use crate::core::Secret;
use crate::pipeline::{TenantRuntime, Tenants};
use crate::telemetry::Counters;
use crate::webhook::config::WebhookConfig;

/// How old the queue's counts in `/status` and `/metrics` may be: with a shared store, scrapes
/// and status calls within this share one count of the queue ([`crate::store::Store::recent_stats`]).
pub(super) const STATS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the admin handlers share.
pub struct AdminState<S> {
    pub store: Arc<S>,
    pub tenants: Arc<Tenants>,
    pub counters: Arc<Counters>,
    /// `None` in pull mode.
    pub webhook: Option<WebhookConfig>,
    /// Bearer token required on every call except `/healthz` and `/readyz`; `None` only on loopback.
    pub token: Option<Secret>,
    /// Wakes the workers after a backfill stored something.
    pub wake: Arc<Notify>,
    /// Asks the puller to list content now (after a subscription was started again).
    pub reconcile_now: Arc<Notify>,
    pub started: SystemTime,
    /// When a ledger hour is sealed (`completeness:`).
    pub completeness: crate::store::ledger::CompletenessConfig,
    /// The completeness metrics as last judged, per tenant (a scrape judges a bounded few).
    pub completeness_metrics: MetricsCache,
}

/// Per content type: (open hours past the horizon, incomplete hours).
pub(super) type TypeCounts = Vec<(String, (u64, u64))>;

/// The completeness metrics of each tenant as last judged, kept between scrapes: a tenant is
/// judged again once its verdicts are older than `completeness.metrics_refresh`, a bounded few
/// per scrape, the longest unjudged first (`completeness::metric_counts`).
#[derive(Default)]
pub struct MetricsCache(pub(super) tokio::sync::Mutex<HashMap<String, (Instant, TypeCounts)>>);

impl<S> AdminState<S> {
    /// `"push"` with a webhook, `"pull"` without.
    pub fn mode(&self) -> &'static str {
        if self.webhook.is_some() {
            "push"
        } else {
            "pull"
        }
    }

    /// Tenants sorted by id, so answers are stable.
    pub(super) fn sorted_tenants(&self) -> Vec<&Arc<TenantRuntime>> {
        let mut v: Vec<_> = self.tenants.values().collect();
        v.sort_by(|a, b| a.cfg.tenant_id.cmp(&b.cfg.tenant_id));
        v
    }

    /// The tenant with this id (any case).
    pub(super) fn tenant(&self, id: &str) -> Option<&Arc<TenantRuntime>> {
        self.tenants.get(&id.trim().to_ascii_lowercase())
    }
}

/// An admin API failure, answered as `{"error": "..."}` with the matching status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong (body, parameters, unknown tenant or content type).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The Management Activity API refused or failed.
    #[error("{0}")]
    Upstream(String),
    /// The store cannot answer right now.
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Upstream(_) => StatusCode::BAD_GATEWAY,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        if matches!(self, AdminError::Unauthorized) {
            (
                status,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Bearer realm=\"o365-collector admin\"",
                )],
                body,
            )
                .into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// RFC 3339 UTC with seconds, the form every time in an answer takes.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Last notification time per (lower tenant id, lower content type).
pub(super) fn last_notifications(
    activity: &crate::telemetry::Activity,
) -> BTreeMap<(String, String), SystemTime> {
    activity
        .notifications()
        .into_iter()
        .map(|((t, ct), at)| ((t.to_ascii_lowercase(), ct.to_ascii_lowercase()), at))
        .collect()
}

pub(super) fn uptime_secs(started: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(started)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
