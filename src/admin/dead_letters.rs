//! `GET /dead-letters` and `POST /dead-letters/requeue`: the blobs given up, with why, and putting
//! them back in the queue once the cause is fixed (a receiver that refused them, a blob Microsoft
//! answered with an error for too long). A blob past Microsoft's 7 days is gone for good: requeued,
//! it is dead-lettered again as expired.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
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

pub(super) async fn list<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
) -> Result<Json<Vec<DeadLetterView>>, AdminError> {
    let dead = state
        .store
        .dead_letters()
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    Ok(Json(dead.into_iter().map(DeadLetterView::from).collect()))
}

pub(super) async fn requeue<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    body: Result<Json<RequeueRequest>, JsonRejection>,
) -> Result<Json<RequeueAnswer>, AdminError> {
    let Json(req) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let unavailable = |e: crate::store::StoreError| AdminError::Unavailable(e.to_string());
    let seqs = match (req.all, req.seqs.is_empty()) {
        (true, true) => {
            let dead = state.store.dead_letters().await.map_err(unavailable)?;
            dead.into_iter().map(|d| d.seq).collect()
        }
        (false, false) => req.seqs,
        _ => {
            return Err(AdminError::BadRequest(
                "give either `seqs` (from GET /dead-letters) or `all: true`".into(),
            ));
        }
    };
    let requeued = state.store.requeue_dead(&seqs).await.map_err(unavailable)?;
    if requeued > 0 {
        tracing::info!(requeued, "dead letters queued again by the admin API");
        state.wake.notify_waiters();
    }
    Ok(Json(RequeueAnswer { requeued }))
}
