//! The control surface, only under `/_emulator/` (never under Microsoft's paths), JSON in and out,
//! no token: publish/generate content, report what was published, inject faults, read the webhook
//! delivery log, move the clock.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::EmulatorError;
use super::generator::ContentType;
use super::server::{Shared, lock};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_emulator", get(info))
        .route("/_emulator/", get(info))
        .route("/_emulator/generate", post(generate))
        .route("/_emulator/publish", post(publish))
        .route("/_emulator/published", get(published))
        .route("/_emulator/faults", get(get_faults).post(set_faults))
        .route("/_emulator/deliveries", get(deliveries))
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/clock", get(clock).post(advance_clock))
}

/// `POST /_emulator/generate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub tenant_id: String,
    pub content_type: String,
    /// Records in all, spread evenly over the blobs.
    pub records: usize,
    /// Number of blobs (at least 1).
    #[serde(default = "one")]
    pub blobs: usize,
    /// contentCreated of the blobs (RFC 3339); default: now on the emulator clock.
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
}

fn one() -> usize {
    1
}

/// `POST /_emulator/publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    pub tenant_id: String,
    pub content_type: String,
    pub records: Vec<Value>,
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
}

/// `GET /_emulator/published` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Published {
    pub blobs: usize,
    pub records: usize,
    /// `Id` of every record, blob by blob in publish order.
    pub record_ids: Vec<String>,
    pub content_ids: Vec<String>,
    /// Successful downloads of these blobs (`GET audit/{contentId}` answered 200), repeats counted.
    #[serde(default)]
    pub content_fetches: u64,
}

/// One webhook call (validation or notification attempt) as `GET /_emulator/deliveries` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// Emulator clock at the end of the attempt.
    pub time: DateTime<Utc>,
    /// `validation` or `notification`.
    pub kind: String,
    pub tenant_id: String,
    pub content_type: String,
    pub address: String,
    pub content_ids: Vec<String>,
    /// 1 for the first try of a batch, then 2, 3, … for its retries.
    pub attempt: u32,
    /// HTTP status answered (or injected); `None` on timeout/connection error.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub success: bool,
    pub duration_ms: u64,
}

/// Faults in force (`GET`/`POST /_emulator/faults`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Faults {
    /// Requests per minute per tenant+PublisherIdentifier before 429.
    pub throttle_per_minute: u32,
    /// Fraction (0..1) of `audit/{contentId}` fetches answered with `content_error_status`
    /// (seeded dice, reproducible for a given seed).
    pub content_error_rate: f64,
    /// The next N content fetches fail, then fetches succeed again.
    pub content_fail_next: u32,
    /// Status of injected content fetch failures, default 500. The body is what Microsoft sends
    /// with that status: 401 `InvalidAuthenticationToken` (with `WWW-Authenticate`), 429 `AF429`
    /// (with `Retry-After: 1`), anything else `AF50000`.
    pub content_error_status: u16,
    /// Added before every Management Activity API answer.
    pub latency_ms: u64,
    /// Non-zero: notification attempts are not sent and count as failures with this status.
    pub webhook_fail_status: u16,
    /// Notification attempts hang for the delivery timeout, then count as timeouts.
    pub webhook_hang: bool,
    /// Base (e.g. `https://evil.example.net`) put in announced and listed contentUri values.
    pub foreign_content_uri: Option<String>,
    /// Base (e.g. `https://other.example.net`) that content fetches and content listings are
    /// redirected to (`redirect_status`, `Location` = this base + the same path and query): what a
    /// hijacked or misconfigured front end would answer. A client that follows it leaks its token.
    #[serde(default)]
    pub redirect_to: Option<String>,
    /// Status of those redirects: 301, 302 (the default), 303, 307 or 308; others are ignored.
    #[serde(default = "found")]
    pub redirect_status: u16,
}

fn found() -> u16 {
    302
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle_per_minute: 2000,
            content_error_rate: 0.0,
            content_fail_next: 0,
            content_error_status: 500,
            latency_ms: 0,
            webhook_fail_status: 0,
            webhook_hang: false,
            foreign_content_uri: None,
            redirect_to: None,
            redirect_status: found(),
        }
    }
}

/// Changes to the faults: absent fields stay as they are; `reset: true` first restores defaults
/// (keeping the configured throttle quota). An empty `foreign_content_uri` or `redirect_to` clears
/// it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    #[serde(default)]
    pub reset: bool,
    pub throttle_per_minute: Option<u32>,
    pub content_error_rate: Option<f64>,
    pub content_fail_next: Option<u32>,
    pub content_error_status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub webhook_fail_status: Option<u16>,
    pub webhook_hang: Option<bool>,
    pub foreign_content_uri: Option<String>,
    pub redirect_to: Option<String>,
    pub redirect_status: Option<u16>,
}

impl Faults {
    pub(crate) fn apply(&mut self, p: FaultsPatch) {
        if p.reset {
            *self = Faults {
                throttle_per_minute: self.throttle_per_minute,
                ..Faults::default()
            };
        }
        if let Some(v) = p.throttle_per_minute {
            self.throttle_per_minute = v;
        }
        if let Some(v) = p.content_error_rate {
            self.content_error_rate = v.clamp(0.0, 1.0);
        }
        if let Some(v) = p.content_fail_next {
            self.content_fail_next = v;
        }
        if let Some(v) = p.content_error_status {
            self.content_error_status = v;
        }
        if let Some(v) = p.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = p.webhook_fail_status {
            self.webhook_fail_status = v;
        }
        if let Some(v) = p.webhook_hang {
            self.webhook_hang = v;
        }
        if let Some(v) = p.foreign_content_uri {
            self.foreign_content_uri = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = p.redirect_to {
            self.redirect_to = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = p
            .redirect_status
            .filter(|v| matches!(v, 301..=303 | 307 | 308))
        {
            self.redirect_status = v;
        }
    }

    /// The redirect in force for a request to `path_and_query`: its status and `Location`.
    pub(crate) fn redirect(&self, path_and_query: &str) -> Option<(u16, String)> {
        let base = self.redirect_to.as_deref()?;
        Some((
            self.redirect_status,
            format!("{}{path_and_query}", base.trim_end_matches('/')),
        ))
    }
}

fn control_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn from_emulator_error(e: EmulatorError) -> Response {
    let status = match &e {
        EmulatorError::Request(m) if m.starts_with("unknown tenant") => StatusCode::NOT_FOUND,
        EmulatorError::Request(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    control_error(status, e.to_string())
}

/// Parses a JSON body, answering 400 with the reason instead of axum's plain-text rejection.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn info(State(s): State<Arc<Shared>>) -> Response {
    let tenants: Vec<Value> = s
        .cfg
        .tenants
        .iter()
        .map(|t| json!({"tenant_id": t.tenant_id, "client_id": t.client_id, "certificates": t.certificates_pem.len()}))
        .collect();
    Json(json!({
        "base_url": s.base_url,
        "now": s.now(),
        "tenants": tenants,
        "content_types": ContentType::ALL.map(ContentType::as_str),
        "page_size": s.cfg.page_size,
        "content_delay_secs": s.cfg.content_delay.as_secs_f64(),
        "token_lifetime_secs": s.cfg.token_lifetime.as_secs(),
    }))
    .into_response()
}

async fn generate(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: GenerateRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    if req.records > 10_000_000 {
        return control_error(
            StatusCode::BAD_REQUEST,
            "at most 10,000,000 records per request",
        );
    }
    let s2 = s.clone();
    match tokio::task::spawn_blocking(move || s2.generate(&req)).await {
        Ok(Ok(ids)) => Json(json!({ "content_ids": ids })).into_response(),
        Ok(Err(e)) => from_emulator_error(e),
        Err(e) => control_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn publish(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: PublishRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let Some(ct) = ContentType::parse(&req.content_type) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            format!("invalid content type {}", req.content_type),
        );
    };
    match s.publish(&req.tenant_id, ct, req.records, req.created) {
        Ok(id) => Json(json!({ "content_id": id, "content_ids": [id] })).into_response(),
        Err(e) => from_emulator_error(e),
    }
}

#[derive(Deserialize)]
struct PublishedQuery {
    tenant_id: String,
    content_type: Option<String>,
}

async fn published(
    State(s): State<Arc<Shared>>,
    q: Result<Query<PublishedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "tenant_id query parameter is required",
        );
    };
    if !s.tenant_known(&q.tenant_id) {
        return control_error(
            StatusCode::NOT_FOUND,
            format!("unknown tenant {}", q.tenant_id),
        );
    }
    let ct = match q.content_type.as_deref() {
        None => None,
        Some(c) => match ContentType::parse(c) {
            Some(ct) => Some(ct),
            None => {
                return control_error(StatusCode::BAD_REQUEST, format!("invalid content type {c}"));
            }
        },
    };
    Json(s.published(&q.tenant_id, ct)).into_response()
}

async fn get_faults(State(s): State<Arc<Shared>>) -> Response {
    Json(lock(&s.faults).faults.clone()).into_response()
}

async fn set_faults(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let patch: FaultsPatch = match parse(&body) {
        Ok(p) => p,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    Json(s.set_faults(patch)).into_response()
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    tenant_id: Option<String>,
}

async fn deliveries(State(s): State<Arc<Shared>>, Query(q): Query<DeliveriesQuery>) -> Response {
    let st = lock(&s.state);
    let list: Vec<&Delivery> = st
        .deliveries
        .iter()
        .filter(|d| {
            q.tenant_id
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(&d.tenant_id))
        })
        .collect();
    Json(json!(list)).into_response()
}

/// `GET /_emulator/requests[?tenant_id=…]`: the latest API calls, oldest first.
async fn requests(State(s): State<Arc<Shared>>, Query(q): Query<DeliveriesQuery>) -> Response {
    let log = lock(&s.requests);
    let list: Vec<&super::server::ApiRequest> = log
        .iter()
        .filter(|r| {
            q.tenant_id
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(&r.tenant_id))
        })
        .collect();
    Json(json!(list)).into_response()
}

async fn clock(State(s): State<Arc<Shared>>) -> Response {
    Json(json!({"now": s.now(), "offset_secs": s.clock_offset_secs()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_secs: u64,
}

async fn advance_clock(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: ClockRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let now = s.advance_clock(std::time::Duration::from_secs(req.advance_secs));
    Json(json!({"now": now, "offset_secs": s.clock_offset_secs()})).into_response()
}
