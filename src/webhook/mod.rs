//! The public listener's only route: Microsoft's webhook. Validation calls are answered; notification
//! batches are judged by [`check::check`] and stored durably before the 200 that tells Microsoft it
//! may forget them. The admin API is never mounted here.

pub mod check;
pub mod config;
pub mod forwarded;
pub mod intake;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::log_limit::LogLimiter;
use crate::store::Store;
use crate::telemetry::Counters;
use check::{Rules, Verdict};
use intake::Intake;

/// What the webhook handler shares.
pub struct WebhookState<S> {
    pub rules: Rules,
    pub store: Arc<S>,
    pub wake: Arc<Notify>,
    pub counters: Arc<Counters>,
    pub intake: Intake,
    /// Rejections are logged at most once per caller and reason per interval.
    pub log: LogLimiter,
}

/// The public router: `POST {path}` only. The headers are judged before any body byte is read.
pub fn router<S: Store>(state: Arc<WebhookState<S>>, path: &str) -> Router {
    Router::new()
        .route(path, post(notify::<S>))
        .with_state(state)
}

/// A refusal: counted exactly in the metrics, logged at most once per caller and reason per
/// interval (with how many lines were held back). Nothing of the request is stored.
fn refuse<S>(
    state: &WebhookState<S>,
    caller: &Caller<'_>,
    reason: &'static str,
    status: u16,
    detail: &dyn std::fmt::Display,
) -> Response {
    let Caller {
        peer,
        headers,
        trusted,
    } = *caller;
    Counters::add(&state.counters.notifications_rejected, 1);
    state
        .counters
        .metrics
        .notifications_rejected
        .get_or_create(&crate::telemetry::Metrics::one_label("reason", reason))
        .inc();
    let ip = forwarded::caller_ip(peer, headers, trusted);
    if let Some(held_back) = state.log.admit(&format!("{ip} {reason}")) {
        let peer = forwarded::caller(peer, headers, trusted);
        warn!(peer, reason, detail = %detail, held_back, "webhook POST rejected");
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, detail.to_string()).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// Who sent a request, as the logs name it (see [`forwarded`]).
#[derive(Clone, Copy)]
struct Caller<'a> {
    peer: SocketAddr,
    headers: &'a HeaderMap,
    trusted: &'a [crate::core::IpNet],
}

async fn notify<S: Store>(
    State(state): State<Arc<WebhookState<S>>>,
    ConnectInfo(tcp_peer): ConnectInfo<SocketAddr>,
    version: Version,
    trusted: Option<axum::Extension<forwarded::TrustedProxies>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = std::time::Instant::now();
    let trusted = trusted.as_ref().map_or(&[][..], |t| &t.0.0[..]);
    let caller = Caller {
        peer: tcp_peer,
        headers: &headers,
        trusted,
    };
    let auth = headers.get("webhook-authid").map(|v| v.as_bytes());
    let validation = headers.get("webhook-validationcode").map(|v| v.as_bytes());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Headers first: an unauthenticated or oversized POST is refused before any body byte is
    // read, and so never gets `100 Continue`. Over HTTP/2 a small body is let finish (and
    // dropped) before the answer, so the stream ends cleanly ([`intake`]).
    let early = if !check::authenticated(&state.rules, auth) {
        let r = check::Rejection::BadAuthId;
        Some(refuse(&state, &caller, r.reason(), r.status(), &r))
    } else if let Err(e) = state.intake.precheck(declared) {
        Some(refuse(&state, &caller, e.reason(), e.status(), &e))
    } else {
        None
    };
    if let Some(response) = early {
        // A client waiting for `100 Continue` sends no body: nothing to let finish.
        let waits = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if version == Version::HTTP_2 && !waits {
            state.intake.discard(declared, body).await;
        }
        return response;
    }
    let received = match state.intake.read(declared, body).await {
        Ok(r) => r,
        Err(e) => {
            return refuse(&state, &caller, e.reason(), e.status(), &e);
        }
    };
    let verdict = check::check(&state.rules, auth, validation, &received.bytes);
    drop(received);
    let peer = forwarded::caller(tcp_peer, &headers, trusted);
    match verdict {
        Verdict::Validation => {
            Counters::add(&state.counters.validations, 1);
            info!(peer, "answered Microsoft's webhook validation call");
            StatusCode::OK.into_response()
        }
        Verdict::Rejected(r) => refuse(&state, &caller, r.reason(), r.status(), &r),
        Verdict::Accepted(items) => {
            let n = items.len();
            let seen: std::collections::BTreeSet<(String, String)> = items
                .iter()
                .map(|c| (c.tenant_id.clone(), c.content_type.clone()))
                .collect();
            let mut posted = std::collections::BTreeMap::<(String, String), usize>::new();
            for c in &items {
                *posted
                    .entry((c.tenant_id.clone(), c.content_type.clone()))
                    .or_default() += 1;
            }
            let ledger = if crate::store::ledger::enabled() {
                announced_in_ledger(&items)
            } else {
                Vec::new()
            };
            match state.store.enqueue(items).await {
                Ok(outcome) => {
                    // Counts for the completeness ledger (no write of its own: see ledger_add).
                    if let Err(e) = state.store.ledger_add(ledger).await {
                        debug!(error = %e, "cannot count notifications in the completeness ledger");
                    }
                    for (tenant, content_type) in &seen {
                        state.counters.activity.notified(tenant, content_type);
                    }
                    Counters::add(&state.counters.notifications_accepted, outcome.added as u64);
                    announced(&state.counters, &posted, &outcome);
                    Counters::add(
                        &state.counters.notifications_duplicate,
                        outcome.duplicates as u64,
                    );
                    if outcome.added > 0 {
                        state.wake.notify_waiters();
                    }
                    state
                        .counters
                        .metrics
                        .webhook_ack_seconds
                        .observe(arrived.elapsed().as_secs_f64());
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

/// Counts the newly stored blobs per tenant and content type (`o365_content_announced_by_tenant`):
/// all of them when none was a duplicate, else when the POST was of one tenant and content type
/// (as Microsoft sends them); a mixed POST with duplicates cannot be split and is not counted.
fn announced(
    counters: &Counters,
    posted: &std::collections::BTreeMap<(String, String), usize>,
    outcome: &crate::store::EnqueueOutcome,
) {
    let all_new = outcome.duplicates == 0;
    if !all_new && posted.len() != 1 {
        return;
    }
    for ((tenant, content_type), n) in posted {
        let n = if all_new { *n } else { outcome.added };
        if n > 0 {
            let labels = crate::telemetry::Metrics::tenant_labels(tenant, content_type);
            counters
                .metrics
                .content_announced
                .get_or_create(&labels)
                .inc_by(n as u64);
        }
    }
}

/// The completeness ledger's `announced` counters of a POST: one per notification, by tenant,
/// content type and the hour of its `contentCreated`.
fn announced_in_ledger(items: &[crate::store::ContentRef]) -> Vec<crate::store::LedgerDelta> {
    use crate::store::ledger::{LedgerCounts, LedgerDelta, LedgerKey, blob_hour};
    let now = std::time::SystemTime::now();
    let mut by_key = std::collections::BTreeMap::<LedgerKey, u64>::new();
    for c in items {
        let hour = blob_hour(c.content_created.as_deref(), now);
        *by_key
            .entry(LedgerKey::new(&c.tenant_id, &c.content_type, hour))
            .or_default() += 1;
    }
    by_key
        .into_iter()
        .map(|(key, n)| LedgerDelta {
            key,
            counts: LedgerCounts {
                announced: n,
                ..Default::default()
            },
        })
        .collect()
}
