//! `GET /dead-letters` and `POST /dead-letters/requeue`: the blobs given up, with why, and putting
//! them back in the queue once the cause is fixed (a receiver that refused them, a blob Microsoft
//! answered with an error for too long). A blob past Microsoft's 7 days is gone for good: requeued,
//! it is dead-lettered again as expired.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::state::{AdminError, AdminState, rfc3339};
use crate::store::{DeadLetter, Store};

/// One dead letter as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterView {
    pub seq: u64,
    pub tenant_id: String,
    pub content_type: String,
    pub content_id: String,
    pub reason: String,
    /// Attempts made, the one that gave the blob up included (as the reason counts them; the
    /// store counts the failed attempts before it).
    pub attempts: u32,
    /// Records of the blob the output had accepted before it was given up (a requeue resumes after them).
    #[serde(default)]
    pub delivered: u64,
    pub enqueued_at: String,
    pub dead_at: String,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        DeadLetterView {
            seq: d.seq,
            tenant_id: d.content.tenant_id,
            content_type: d.content.content_type,
            content_id: d.content.content_id,
            reason: d.reason,
            attempts: d.attempts + 1,
            delivered: d.delivered,
            enqueued_at: rfc3339(d.enqueued_at),
            dead_at: rfc3339(d.dead_at),
        }
    }
}

/// The body of `POST /dead-letters/requeue`: either `seqs` or `all: true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequeueRequest {
    #[serde(default)]
    pub seqs: Vec<u64>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequeueAnswer {
    pub requeued: u64,
}

/// Dead letters a page holds unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// The most a page holds.
pub const MAX_LIMIT: usize = 1000;

/// `GET /dead-letters?after=SEQ&limit=N`: one page, oldest first.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Only dead letters with a seq above this (the last seq of the previous page).
    #[serde(default)]
    pub after: u64,
    pub limit: Option<usize>,
}

/// The answer is a JSON array; when more follow, a `Link: <…?after=SEQ&limit=N>; rel="next"`
/// header names the next page.
pub(super) async fn list<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query.map_err(|e| {
        AdminError::BadRequest(format!(
            "{}: use ?after=SEQ&limit=N (N from 1 to {MAX_LIMIT})",
            e.body_text()
        ))
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AdminError::BadRequest(format!(
            "limit is {limit}: use 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"
        )));
    }
    // One more than asked tells whether a next page exists.
    let mut dead = state
        .store
        .dead_letters_page(q.after, limit + 1)
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    let more = dead.len() > limit;
    dead.truncate(limit);
    let next = dead.last().map(|d| d.seq).filter(|_| more);
    let views: Vec<DeadLetterView> = dead.into_iter().map(DeadLetterView::from).collect();
    let mut resp = Json(views).into_response();
    if let Some(after) = next {
        let link = format!("</dead-letters?after={after}&limit={limit}>; rel=\"next\"");
        if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
            resp.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(resp)
}

pub(super) async fn requeue<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    body: Result<Json<RequeueRequest>, JsonRejection>,
) -> Result<Json<RequeueAnswer>, AdminError> {
    let Json(req) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let unavailable = |e: crate::store::StoreError| AdminError::Unavailable(e.to_string());
    let seqs = match (req.all, req.seqs.is_empty()) {
        (true, true) => {
            // Page by page, each page requeued before the next is read: a long list is never
            // held whole, and requeued seqs leave the dead letters, so `after` only moves on.
            let mut requeued = 0;
            let mut after = 0;
            loop {
                let page = state
                    .store
                    .dead_letters_page(after, MAX_LIMIT)
                    .await
                    .map_err(unavailable)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                let seqs: Vec<u64> = page.iter().map(|d| d.seq).collect();
                requeued += state.store.requeue_dead(&seqs).await.map_err(unavailable)?;
                if page.len() < MAX_LIMIT {
                    break;
                }
            }
            return Ok(Json(requeued_answer(&state, requeued)));
        }
        (false, false) => req.seqs,
        _ => {
            return Err(AdminError::BadRequest(
                "give either `seqs` (from GET /dead-letters) or `all: true`".into(),
            ));
        }
    };
    let requeued = state.store.requeue_dead(&seqs).await.map_err(unavailable)?;
    Ok(Json(requeued_answer(&state, requeued)))
}

fn requeued_answer<S>(state: &AdminState<S>, requeued: u64) -> RequeueAnswer {
    if requeued > 0 {
        tracing::info!(requeued, "dead letters queued again by the admin API");
        state.wake.notify_waiters();
    }
    RequeueAnswer { requeued }
}
