//! `POST /verify`: one tenant's `[start, end)` compared hour by hour and record type by record
//! type with Purview's Audit Log Query API (`pipeline::verify`), the verdict written to the
//! completeness ledger; with `repair`, the missing records enqueued and the workers woken.
//! Refusals are the audit-search backfill's: a national cloud 400, a 403 or a 429 that outlasted
//! the back-off 502 (and the tenant's `last_error` in `/status`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::backfill::{Range, audit_search_error, audit_search_offered, one_tenant, range, secs};
use super::state::{AdminError, AdminState};
use crate::graph::audit_search::RETENTION;
use crate::pipeline::verify::{self, VerifyReport};
use crate::store::Store;

/// The body of `POST /verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// May be left out when exactly one tenant is configured.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD[THH:MM[:SS]]` (UTC); widened to whole hours.
    pub start: String,
    /// Same forms; left out: now.
    #[serde(default)]
    pub end: Option<String>,
    /// Also deliver the records found missing.
    #[serde(default)]
    pub repair: bool,
}

/// The answer of `POST /verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyAnswer {
    /// Clamping to the 180 days Microsoft keeps and to now.
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub report: VerifyReport,
}

pub(super) async fn verify<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    body: Result<Json<VerifyRequest>, JsonRejection>,
) -> Result<Json<VerifyAnswer>, AdminError> {
    let Json(req) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let tenant = one_tenant(&state, req.tenant_id.as_deref())?;
    audit_search_offered(
        &tenant,
        "verify needs it; the completeness ledger (GET /completeness) still judges each hour",
    )?;
    let now = Utc::now();
    let Range { start, end, notes } = range(
        &req.start,
        req.end.as_deref(),
        now,
        RETENTION,
        "Microsoft keeps audit records for 180 days: verify",
        "older records cannot be compared",
        "verify",
    )?;
    let (from, to) = (start.max(now - RETENTION), end.min(now));
    // Its own task, so that a client that hangs up does not cut it in the middle.
    let store = state.store.clone();
    let t = tenant.clone();
    let repair = req.repair;
    let report =
        tokio::spawn(
            async move { verify::verify(t.as_ref(), store.as_ref(), from, to, repair).await },
        )
        .await
        .map_err(|e| AdminError::Unavailable(format!("verify task failed: {e}")))?
        .map_err(audit_search_error)?;
    if report.repair.as_ref().is_some_and(|r| r.added > 0) {
        state.wake.notify_waiters();
    }
    tracing::debug!(from = %secs(from), to = %secs(to), "verify through the admin API");
    Ok(Json(VerifyAnswer { notes, report }))
}
