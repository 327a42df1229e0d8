//! Webhooks: the validation POST on `start`, notification delivery in one background task per
//! registered webhook, retries with exponential back-off, and disabling after the failure pattern:
//! `webhook_max_failures` consecutive failed attempts, or failing continuously for longer than
//! `webhook_disable_after`, whichever comes first. Content published meanwhile stays listable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::generator::ContentType;
use super::lock;
use super::state::{Blob, Delivery, Notice, NotificationLog, Shared, Webhook, WebhookStatus};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A webhook request from the start body.
pub(crate) struct WebhookRequest {
    pub address: String,
    pub auth_id: Option<String>,
    pub expiration: Option<DateTime<Utc>>,
}

/// Outcome of one POST.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    duration: Duration,
}

impl Attempt {
    fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

async fn post(s: &Shared, address: &str, headers: &[(&str, String)], body: Vec<u8>) -> Attempt {
    let started = Instant::now();
    let mut req = s
        .webhook_client
        .post(address)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let result = req.send().await;
    let duration = started.elapsed();
    match result {
        Ok(resp) => Attempt {
            status: Some(resp.status().as_u16()),
            error: None,
            duration,
        },
        Err(e) => {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            Attempt {
                status: None,
                error: Some(format!("{kind}: {e}")),
                duration,
            }
        }
    }
}

/// The validation call; the subscription (or webhook change) is made only when it answers 200.
pub(crate) async fn validate(
    s: &Shared,
    tenant: &str,
    ct: ContentType,
    hook: &WebhookRequest,
) -> Result<(), ApiError> {
    let mut code = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut code);
    let code: String = code.iter().map(|b| format!("{b:02x}")).collect();
    let mut headers = vec![("Webhook-ValidationCode", code.clone())];
    if let Some(a) = &hook.auth_id {
        headers.push(("Webhook-AuthID", a.clone()));
    }
    let body = serde_json::to_vec(&json!({ "validationCode": code })).unwrap_or_default();
    let attempt = post(s, &hook.address, &headers, body).await;
    s.log_delivery(Delivery {
        time: s.now(),
        kind: "validation".into(),
        tenant_id: tenant.to_string(),
        content_type: ct.as_str().to_string(),
        address: hook.address.clone(),
        content_ids: Vec::new(),
        attempt: 1,
        status: attempt.status,
        error: attempt.error.clone(),
        success: attempt.ok(),
        duration_ms: u64::try_from(attempt.duration.as_millis()).unwrap_or(u64::MAX),
    });
    if attempt.ok() {
        Ok(())
    } else {
        Err(ApiError::webhook_not_validated(
            &hook.address,
            "The endpoint did not return HTTP 200.",
        ))
    }
}

struct Worker {
    tenant: String,
    client_id: String,
    ct: ContentType,
    address: String,
    auth_id: Option<String>,
    generation: u64,
    cancel: CancellationToken,
}

/// Registers a validated webhook and starts its delivery task.
pub(crate) fn register(
    s: &Arc<Shared>,
    tenant: &str,
    client_id: &str,
    ct: ContentType,
    hook: WebhookRequest,
) -> Webhook {
    let (tx, rx) = mpsc::unbounded_channel();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    let cancel = s.cancel.child_token();
    let worker = Worker {
        tenant: tenant.to_string(),
        client_id: client_id.to_string(),
        ct,
        address: hook.address.clone(),
        auth_id: hook.auth_id.clone(),
        generation,
        cancel: cancel.clone(),
    };
    s.tasks.spawn(run(s.clone(), worker, rx));
    Webhook {
        address: hook.address,
        auth_id: hook.auth_id,
        expiration: hook.expiration,
        status: WebhookStatus::Enabled,
        generation,
        tx,
        cancel,
    }
}

/// Queues a blob that just became available for the webhook of its subscription, if any.
pub(crate) fn announce(s: &Shared, blob: Arc<Blob>) {
    let st = lock(&s.state);
    let Some(sub) = st.subs.get(&(blob.tenant.clone(), blob.content_type)) else {
        return;
    };
    if !sub.enabled {
        return;
    }
    if let Some(w) = &sub.webhook
        && w.status == WebhookStatus::Enabled
        && w.expiration.is_none_or(|e| e > s.now())
    {
        let _ = w.tx.send(Notice { blob });
    }
}

fn backoff(s: &Shared, consecutive: u32) -> Duration {
    let factor = 2u32.saturating_pow(consecutive.saturating_sub(1).min(20));
    s.cfg
        .webhook_retry_base
        .saturating_mul(factor)
        .min(s.cfg.webhook_max_backoff)
}

async fn run(s: Arc<Shared>, w: Worker, mut rx: mpsc::UnboundedReceiver<Notice>) {
    let mut consecutive = 0u32;
    let mut failing_since: Option<Instant> = None;
    loop {
        let first = tokio::select! {
            _ = w.cancel.cancelled() => return,
            n = rx.recv() => match n { Some(n) => n, None => return },
        };
        let mut batch = vec![first.blob];
        while batch.len() < s.cfg.notification_batch {
            match rx.try_recv() {
                Ok(n) => batch.push(n.blob),
                Err(_) => break,
            }
        }
        let mut attempt_no = 0u32;
        loop {
            if w.cancel.is_cancelled() {
                return;
            }
            if webhook_expired(&s, &w) {
                break;
            }
            attempt_no += 1;
            let attempt = deliver(&s, &w, &batch).await;
            let ok = attempt.ok();
            record(&s, &w, &batch, attempt_no, &attempt);
            if ok {
                consecutive = 0;
                failing_since = None;
                break;
            }
            consecutive += 1;
            let since = *failing_since.get_or_insert_with(Instant::now);
            if consecutive >= s.cfg.webhook_max_failures.max(1)
                || since.elapsed() >= s.cfg.webhook_disable_after
            {
                disable(&s, &w);
                return;
            }
            tokio::select! {
                _ = w.cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff(&s, consecutive)) => {}
            }
        }
    }
}

fn webhook_expired(s: &Shared, w: &Worker) -> bool {
    let st = lock(&s.state);
    st.subs
        .get(&(w.tenant.clone(), w.ct))
        .and_then(|sub| sub.webhook.as_ref())
        .filter(|h| h.generation == w.generation)
        .is_none_or(|h| h.expiration.is_some_and(|e| e <= s.now()))
}

async fn deliver(s: &Shared, w: &Worker, batch: &[Arc<Blob>]) -> Attempt {
    let (fail_status, hang) = {
        let f = lock(&s.faults);
        (f.faults.webhook_fail_status, f.faults.webhook_hang)
    };
    if fail_status != 0 {
        return Attempt {
            status: Some(fail_status),
            error: Some("failed by fault injection".into()),
            duration: Duration::ZERO,
        };
    }
    if hang {
        let started = Instant::now();
        tokio::select! {
            _ = w.cancel.cancelled() => {}
            _ = tokio::time::sleep(s.cfg.webhook_timeout) => {}
        }
        return Attempt {
            status: None,
            error: Some("timed out: delivery hung by fault injection".into()),
            duration: started.elapsed(),
        };
    }
    let items: Vec<Value> = batch
        .iter()
        .map(|b| {
            json!({
                "tenantId": b.tenant,
                "clientId": w.client_id,
                "contentType": b.content_type.as_str(),
                "contentId": b.content_id,
                "contentUri": s.content_uri(&b.tenant, &b.content_id),
                "contentCreated": b.created.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "contentExpiration": b.expiration().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            })
        })
        .collect();
    let body = serde_json::to_vec(&items).unwrap_or_default();
    let mut headers = Vec::new();
    if let Some(a) = &w.auth_id {
        headers.push(("Webhook-AuthID", a.clone()));
    }
    post(s, &w.address, &headers, body).await
}

fn record(s: &Shared, w: &Worker, batch: &[Arc<Blob>], attempt_no: u32, a: &Attempt) {
    let now = s.now();
    let mut st = lock(&s.state);
    st.deliveries.push(Delivery {
        time: now,
        kind: "notification".into(),
        tenant_id: w.tenant.clone(),
        content_type: w.ct.as_str().to_string(),
        address: w.address.clone(),
        content_ids: batch.iter().map(|b| b.content_id.clone()).collect(),
        attempt: attempt_no,
        status: a.status,
        error: a.error.clone(),
        success: a.ok(),
        duration_ms: u64::try_from(a.duration.as_millis()).unwrap_or(u64::MAX),
    });
    for b in batch {
        st.notifications.push(NotificationLog {
            tenant: w.tenant.clone(),
            blob: b.clone(),
            sent: now,
            success: a.ok(),
        });
    }
}

fn disable(s: &Shared, w: &Worker) {
    let mut st = lock(&s.state);
    if let Some(h) = st
        .subs
        .get_mut(&(w.tenant.clone(), w.ct))
        .and_then(|sub| sub.webhook.as_mut())
        .filter(|h| h.generation == w.generation)
    {
        h.status = WebhookStatus::Disabled;
        tracing::warn!(tenant = %w.tenant, content_type = %w.ct, address = %w.address, "webhook disabled after repeated delivery failures");
    }
}
