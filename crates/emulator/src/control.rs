//! The control surface, only under `/_emulator/` (never under Microsoft's paths), JSON in and out,
//! no token: publish/generate content, report what was published, inject faults, read the webhook
//! delivery log, move the clock, change what a tenant's admin controls (audit log, app roles).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::FaultsPatch;
use super::generator::ContentType;
use super::logs_ingestion::MAX_CALL_BYTES;
use super::publish::{GenerateRequest, PublishRequest};
use super::state::{ApiRequest, Delivery, Shared};
use super::{EmulatorError, lock};

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
        .route("/_emulator/tenant", post(set_tenant))
        .route("/_emulator/app-roles", post(set_app_roles))
        .route("/_emulator/logs-ingestion/uploads", get(ingested_uploads))
        .route(
            "/_emulator/logs-ingestion/requests",
            get(ingestion_requests),
        )
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
    match s.publish_blob(&req.tenant_id, ct, req.records, req.created, req.broken) {
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
    let list: Vec<&ApiRequest> = log
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

/// `POST /_emulator/tenant`: what the tenant's admin turned on or off.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    pub tenant_id: String,
    /// The unified audit log (Microsoft Purview's "Start recording user and admin activity").
    pub audit_log_enabled: bool,
}

async fn set_tenant(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: TenantRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match s.set_audit_log(&req.tenant_id, req.audit_log_enabled) {
        Ok(()) => {
            Json(json!({"tenant_id": req.tenant_id, "audit_log_enabled": req.audit_log_enabled}))
                .into_response()
        }
        Err(e) => from_emulator_error(e),
    }
}

/// `POST /_emulator/app-roles`: the application permissions granted (with admin consent) to an
/// application; tokens issued afterwards carry them.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppRolesRequest {
    pub client_id: String,
    pub roles: Vec<String>,
}

async fn set_app_roles(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: AppRolesRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    lock(&s.admin)
        .app_roles
        .insert(req.client_id.clone(), req.roles.clone());
    Json(json!({"client_id": req.client_id, "roles": req.roles})).into_response()
}

/// `GET /_emulator/logs-ingestion/uploads`: what the Logs Ingestion API accepted (each body as
/// sent, gzip undone), plus how many accepted uploads were not kept (memory bound).
async fn ingested_uploads(State(s): State<Arc<Shared>>) -> Response {
    let st = lock(&s.ingestion);
    Json(json!({"uploads": st.uploads, "not_kept": st.dropped, "max_call_bytes": MAX_CALL_BYTES}))
        .into_response()
}

/// `GET /_emulator/logs-ingestion/requests`: every upload judged, oldest first.
async fn ingestion_requests(State(s): State<Arc<Shared>>) -> Response {
    Json(json!(lock(&s.ingestion).requests)).into_response()
}
