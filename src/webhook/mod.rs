//! The public listener's only route: Microsoft's webhook. Validation calls are answered; notification
//! batches are judged by [`check::check`] and stored durably before the 200 that tells Microsoft it
//! may forget them. The admin API is never mounted here.

pub mod check;
pub mod forwarded;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::store::Store;
use crate::telemetry::Counters;
use check::{Rules, Verdict};

/// What the webhook handler shares.
pub struct WebhookState<S> {
    pub rules: Rules,
    pub store: Arc<S>,
    pub wake: Arc<Notify>,
    pub counters: Arc<Counters>,
}

/// The public router: `POST {path}` only. Bodies over `max_body_bytes` get 413 before they are read.
pub fn router<S: Store>(state: Arc<WebhookState<S>>, path: &str, max_body_bytes: usize) -> Router {
    Router::new()
        .route(path, post(notify::<S>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn notify<S: Store>(
    State(state): State<Arc<WebhookState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    trusted: Option<axum::Extension<forwarded::TrustedProxies>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = forwarded::caller(peer, &headers, trusted.as_ref().map_or(&[], |t| &t.0.0[..]));
    let auth = headers.get("webhook-authid").map(|v| v.as_bytes());
    let validation = headers.get("webhook-validationcode").map(|v| v.as_bytes());
    match check::check(&state.rules, auth, validation, &body) {
        Verdict::Validation => {
            Counters::add(&state.counters.validations, 1);
            info!(peer, "answered Microsoft's webhook validation call");
            StatusCode::OK.into_response()
        }
        Verdict::Rejected(r) => {
            Counters::add(&state.counters.notifications_rejected, 1);
            state
                .counters
                .metrics
                .notifications_rejected
                .get_or_create(&crate::telemetry::Metrics::one_label("reason", r.reason()))
                .inc();
            warn!(peer, reason = r.reason(), detail = %r, "webhook POST rejected");
            let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, r.to_string()).into_response()
        }
        Verdict::Accepted(items) => {
            let n = items.len();
            let seen: std::collections::BTreeSet<(String, String)> = items
                .iter()
                .map(|c| (c.tenant_id.clone(), c.content_type.clone()))
                .collect();
            match state.store.enqueue(items).await {
                Ok(outcome) => {
                    for (tenant, content_type) in &seen {
                        state.counters.activity.notified(tenant, content_type);
                    }
                    Counters::add(&state.counters.notifications_accepted, outcome.added as u64);
                    Counters::add(
                        &state.counters.notifications_duplicate,
                        outcome.duplicates as u64,
                    );
                    if outcome.added > 0 {
                        state.wake.notify_waiters();
                    }
                    debug!(
                        peer,
                        notifications = n,
                        added = outcome.added,
                        duplicates = outcome.duplicates,
                        "notifications stored"
                    );
                    StatusCode::OK.into_response()
                }
                Err(e) => {
                    // Not stored, so not acknowledged: Microsoft delivers it again.
                    warn!(peer, error = %e, "cannot store notifications; answering 503");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store unavailable, retry later",
                    )
                        .into_response()
                }
            }
        }
    }
}
