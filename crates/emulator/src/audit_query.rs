//! Microsoft Purview's Audit Log Query API in Graph (`/v1.0/security/auditLog/queries`): the
//! deep-history source next to the Management Activity API. Its records are the blobs this
//! emulator publishes as Management API content, so the two sources can be compared record by
//! record.
//!
//! What Microsoft documents and this module serves (learn.microsoft.com: "auditLogQuery resource
//! type", "Create auditLogQuery", "List auditLogRecords", "auditLogRecord resource type"; read
//! 2026-12):
//! - `POST /security/auditLog/queries` with `displayName`, `filterStartDateTime`,
//!   `filterEndDateTime`, `recordTypeFilters` (camelCase `auditLogRecordType` names) and other
//!   filters answers 201 with the query, `status` `notStarted`. The search runs in the background:
//!   `GET …/queries/{id}` reads `notStarted`, then `running`, then `succeeded` (or `failed`,
//!   `cancelled`). Here a query takes `ready_after_secs` of the emulator clock (a third of it not
//!   started), so tests move the clock instead of waiting.
//! - `GET …/queries/{id}/records` pages `auditLogRecord`s (`id`, `createdDateTime`,
//!   `auditLogRecordType`, `operation`, `organizationId`, `userType`, `userId`,
//!   `userPrincipalName`, `service`, `objectId`, `clientIp`, `administrativeUnits`, `auditData`)
//!   with `@odata.nextLink`. `auditData` is the record as the Management Activity API serves it.
//!   Asked before the query succeeded: 400.
//! - A query returns at most `recordCountLimit` records; beyond it it still succeeds, with
//!   `isRecordCountLimitExceeded: true` and `approximateReturnedRecordCount` (properties added to
//!   the resource in 2025, per Graph's changelog). The limit here: 50,000 (Purview's per-search cap,
//!   [`AUDIT_RECORD_LIMIT`]), lowered through the control surface in tests.
//! - Permissions (application): `AuditLogsQuery.Read.All` for every record, or per workload
//!   `AuditLogsQuery-Exchange.Read.All`, `-SharePoint`, `-OneDrive`, `-Entra`, `-CRM`, `-Endpoint`
//!   (records of that workload only). None of them: 403 `Authorization_RequestDenied`.
//! - Global service only (not US Government L4/L5 nor 21Vianet); standard audit retention is 180
//!   days, so records created earlier are not found.
//! - Throttled callers get 429 with `Retry-After` (forced here through the Graph faults, feed
//!   `audit_search`).
//!
//! Our reading where the documentation is silent: the time filter is half-open
//! (`filterStartDateTime ≤ CreationTime < filterEndDateTime`), records come oldest first.
//!
//! Controls: `POST /_emulator/graph/audit-search` (record limit, time a query takes),
//! `GET /_emulator/graph/audit-search` (every query with its status and how often it was polled).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::auth;
use super::graph_state::{AuditQuery, AuditQueryView, AuditSearchSettings, MAX_AUDIT_QUERIES};
use super::state::Shared;
use super::{MICROSOFT_GRAPH, lock};

pub use super::graph_state::AUDIT_RECORD_LIMIT;
pub use super::graph_state::{
    AuditQueryView as AuditQueryState, AuditSearchSettings as AuditSearch,
};

const QUERIES: &str = "/v1.0/security/auditLog/queries";
/// Standard audit retention.
const RETENTION_DAYS: i64 = 180;
/// Records per page of `…/records`.
const PAGE: usize = 1000;
const ALL_RECORDS: &str = "AuditLogsQuery.Read.All";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(QUERIES, post(create))
        .route(&format!("{QUERIES}/{{id}}"), get(read))
        .route(&format!("{QUERIES}/{{id}}/records"), get(records))
        .route(
            "/_emulator/graph/audit-search",
            post(set_settings).get(list_queries),
        )
}

/// An error answer in Graph's shape.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({"error": {"code": self.code, "message": self.message,
            "innerError": {"date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                           "request-id": id, "client-request-id": id}}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

fn error(
    status: StatusCode,
    code: &'static str,
    message: &str,
    retry_after: Option<u64>,
) -> Refusal {
    Refusal {
        status,
        code,
        message: message.to_owned(),
        retry_after,
    }
}

fn bad(message: &str) -> Refusal {
    error(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// Who calls: token, audience, throttling, then which workloads the roles open (`None`: all).
fn caller(s: &Shared, headers: &HeaderMap) -> Result<(String, Option<Vec<&'static str>>), Refusal> {
    let unauthorized = |why: &str| {
        error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            &format!("Access token validation failure. {why}"),
            None,
        )
    };
    let claims = auth::check_bearer(s, headers).map_err(|_| unauthorized("Invalid token."))?;
    let aud = claims.aud.trim_end_matches('/');
    if !aud.eq_ignore_ascii_case(&s.base_url) && !aud.eq_ignore_ascii_case(MICROSOFT_GRAPH) {
        return Err(unauthorized("Invalid audience."));
    }
    let tenant = claims.tid.to_ascii_lowercase();
    {
        let mut g = lock(&s.graph);
        if let Some(t) = g.faults.throttle.iter_mut().find(|t| {
            t.tenant_id.eq_ignore_ascii_case(&tenant) && t.feed == "audit_search" && t.next > 0
        }) {
            t.next -= 1;
            return Err(error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests. Please try again later.",
                Some(t.retry_after_secs),
            ));
        }
    }
    if claims.roles.iter().any(|r| r == ALL_RECORDS) {
        return Ok((tenant, None));
    }
    let workloads: Vec<&'static str> = claims
        .roles
        .iter()
        .filter_map(|r| match r.as_str() {
            "AuditLogsQuery-Exchange.Read.All" => Some("Exchange"),
            "AuditLogsQuery-SharePoint.Read.All" => Some("SharePoint"),
            "AuditLogsQuery-OneDrive.Read.All" => Some("OneDrive"),
            "AuditLogsQuery-Entra.Read.All" => Some("AzureActiveDirectory"),
            "AuditLogsQuery-CRM.Read.All" => Some("CRM"),
            "AuditLogsQuery-Endpoint.Read.All" => Some("Endpoint"),
            _ => None,
        })
        .collect();
    if workloads.is_empty() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            None,
        ));
    }
    Ok((tenant, Some(workloads)))
}

fn time_of(body: &Value, key: &str) -> Result<DateTime<Utc>, Refusal> {
    let raw = body
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{key} is required.")))?;
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad(&format!("Invalid {key} '{raw}'.")))
}

async fn create(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let (tenant, _) = match caller(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return bad("The request body is not JSON.").into_response();
    };
    let (start, end) = match (
        time_of(&body, "filterStartDateTime"),
        time_of(&body, "filterEndDateTime"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    if start >= end {
        return bad("filterStartDateTime must be before filterEndDateTime.").into_response();
    }
    let record_types = body
        .get("recordTypeFilters")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let now = s.now();
    let mut g = lock(&s.graph);
    let AuditSearchSettings {
        record_limit,
        ready_after_secs,
    } = g.audit.clone();
    let q = AuditQuery {
        id: uuid::Uuid::new_v4().to_string(),
        tenant,
        display_name: body
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        start,
        end,
        record_types,
        created: now,
        takes: TimeDelta::seconds(i64::try_from(ready_after_secs).unwrap_or(i64::MAX / 2)),
        record_limit: record_limit.max(1),
        records: None,
        exceeded: false,
        polls: 0,
    };
    let mut answer = resource(&q, now);
    // A query is never done when it is created: the search runs in the background.
    answer["status"] = json!("notStarted");
    if g.audit_queries.len() >= MAX_AUDIT_QUERIES {
        g.audit_queries.pop_front();
    }
    g.audit_queries.push_back(q);
    (StatusCode::CREATED, Json(answer)).into_response()
}

fn status(q: &AuditQuery, now: DateTime<Utc>) -> &'static str {
    if now >= q.created + q.takes {
        "succeeded"
    } else if now >= q.created + q.takes / 3 {
        "running"
    } else {
        "notStarted"
    }
}

fn resource(q: &AuditQuery, now: DateTime<Utc>) -> Value {
    let t = |d: DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut v = json!({
        "@odata.context": format!("{MICROSOFT_GRAPH}/v1.0/$metadata#security/auditLog/queries/$entity"),
        "id": q.id,
        "displayName": q.display_name,
        "filterStartDateTime": t(q.start),
        "filterEndDateTime": t(q.end),
        "recordTypeFilters": q.record_types,
        "keywordFilter": null,
        "serviceFilters": [],
        "operationFilters": [],
        "userPrincipalNameFilters": [],
        "ipAddressFilters": [],
        "objectIdFilters": [],
        "administrativeUnitIdFilters": [],
        "status": status(q, now),
        "recordCountLimit": q.record_limit,
    });
    if let Some(r) = &q.records {
        v["approximateReturnedRecordCount"] = json!(r.len());
        v["isRecordCountLimitExceeded"] = json!(q.exceeded);
    }
    v
}

/// Finds the caller's query, evaluating it once it has succeeded.
fn with_query<T>(
    s: &Shared,
    tenant: &str,
    id: &str,
    workloads: Option<&[&str]>,
    f: impl FnOnce(&mut AuditQuery, DateTime<Utc>) -> T,
) -> Result<T, Refusal> {
    let now = s.now();
    let pending = {
        let g = lock(&s.graph);
        let q = g
            .audit_queries
            .iter()
            .find(|q| q.id == id && q.tenant == tenant)
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "The audit log query was not found.",
                    None,
                )
            })?;
        (q.records.is_none() && status(q, now) == "succeeded").then(|| q.clone())
    };
    // Evaluated outside the Graph lock (it reads every blob of the tenant).
    let evaluated = pending.map(|q| evaluate(s, &q, workloads, now));
    let mut g = lock(&s.graph);
    let q = g
        .audit_queries
        .iter_mut()
        .find(|q| q.id == id && q.tenant == tenant)
        .ok_or_else(|| bad("The audit log query is gone."))?;
    if let Some((records, exceeded)) = evaluated
        && q.records.is_none()
    {
        q.records = Some(Arc::new(records));
        q.exceeded = exceeded;
    }
    Ok(f(q, now))
}

async fn read(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (tenant, workloads) = match caller(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match with_query(&s, &tenant, &id, workloads.as_deref(), |q, now| {
        q.polls += 1;
        resource(q, now)
    }) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn records(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (tenant, workloads) = match caller(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let skip = match reqwest::Url::parse(&format!("http://q/?{}", query.unwrap_or_default()))
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k.eq_ignore_ascii_case("$skiptoken"))
                .map(|(_, v)| v.into_owned())
        }) {
        None => 0,
        Some(t) => match t.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return bad("Invalid $skiptoken.").into_response(),
        },
    };
    let page_size = lock(&s.graph)
        .faults
        .page_size
        .map_or(PAGE, |p| p.clamp(1, PAGE));
    let found = with_query(&s, &tenant, &id, workloads.as_deref(), |q, _| {
        q.records.clone()
    });
    let all = match found {
        Ok(Some(all)) => all,
        Ok(None) => return bad("The audit log query has not succeeded yet.").into_response(),
        Err(r) => return r.into_response(),
    };
    let page: Vec<Value> = all.iter().skip(skip).take(page_size).cloned().collect();
    let mut body = json!({
        "@odata.context": format!("{MICROSOFT_GRAPH}/v1.0/$metadata#security/auditLog/queries('{id}')/records"),
        "value": page,
    });
    let next = skip + page_size;
    if next < all.len() {
        body["@odata.nextLink"] = json!(format!(
            "{}{QUERIES}/{id}/records?$skiptoken={next}",
            s.base_url
        ));
    }
    Json(body).into_response()
}

/// The records the query finds: every record published for its tenant (any content type) whose
/// `CreationTime` is within its range and the 180 days kept, of its record types and the caller's
/// workloads; oldest first, at most the limit. Returns them and whether more matched.
fn evaluate(
    s: &Shared,
    q: &AuditQuery,
    workloads: Option<&[&str]>,
    now: DateTime<Utc>,
) -> (Vec<Value>, bool) {
    let blobs: Vec<_> = lock(&s.state)
        .blobs
        .values()
        .filter(|b| b.tenant == q.tenant)
        .cloned()
        .collect();
    let oldest = now - TimeDelta::days(RETENTION_DAYS);
    let mut found: Vec<(DateTime<Utc>, String, Value)> = Vec::new();
    for blob in blobs {
        let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&blob.body) else {
            continue;
        };
        for r in list {
            let Some(t) = r
                .get("CreationTime")
                .and_then(Value::as_str)
                .and_then(creation_time)
            else {
                continue;
            };
            if t < q.start || t >= q.end || t < oldest {
                continue;
            }
            let kind = record_type_name(r.get("RecordType"));
            if !q.record_types.is_empty() && !q.record_types.iter().any(|f| f == kind) {
                continue;
            }
            let workload = r.get("Workload").and_then(Value::as_str).unwrap_or("");
            if workloads.is_some_and(|w| !w.contains(&workload)) {
                continue;
            }
            let id = r.get("Id").and_then(Value::as_str).unwrap_or("").to_owned();
            found.push((t, id, r));
        }
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    // The same record in two blobs (Microsoft's duplicates) is one record of the audit log.
    found.dedup_by(|a, b| a.1 == b.1 && !a.1.is_empty());
    let exceeded = found.len() > q.record_limit;
    found.truncate(q.record_limit);
    let records = found.into_iter().map(|(t, id, r)| wrap(t, id, r)).collect();
    (records, exceeded)
}

/// `CreationTime` as the Management API writes it: no zone, UTC.
fn creation_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(raw.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// One `auditLogRecord` around a Management API record.
fn wrap(t: DateTime<Utc>, id: String, r: Value) -> Value {
    let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let user_type = match r.get("UserType").and_then(Value::as_i64) {
        Some(0) => "regular",
        Some(1) => "reserved",
        Some(2) => "admin",
        Some(3) => "dcAdmin",
        Some(4) => "system",
        Some(5) => "application",
        Some(6) => "servicePrincipal",
        Some(7) => "customPolicy",
        Some(8) => "systemPolicy",
        _ => "unknownFutureValue",
    };
    json!({
        "@odata.type": "#microsoft.graph.security.auditLogRecord",
        "id": id,
        "createdDateTime": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "auditLogRecordType": record_type_name(r.get("RecordType")),
        "operation": text("Operation"),
        "organizationId": text("OrganizationId"),
        "userType": user_type,
        "userId": text("UserId"),
        "userPrincipalName": text("UserId"),
        "service": text("Workload"),
        "objectId": text("ObjectId"),
        "clientIp": text("ClientIP"),
        "administrativeUnits": [],
        "auditData": r,
    })
}

/// `auditLogRecordType` (camelCase) of a Management API `RecordType`, for the types the
/// generator publishes and their neighbours; others read `unknownFutureValue`.
fn record_type_name(v: Option<&Value>) -> &'static str {
    let n = match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    match n.unwrap_or(-1) {
        1 => "exchangeAdmin",
        2 => "exchangeItem",
        3 => "exchangeItemGroup",
        4 => "sharePoint",
        6 => "sharePointFileOperation",
        7 => "oneDrive",
        8 => "azureActiveDirectory",
        9 => "azureActiveDirectoryAccountLogon",
        11 => "complianceDLPSharePoint",
        13 => "complianceDLPExchange",
        14 => "sharePointSharingOperation",
        15 => "azureActiveDirectoryStsLogon",
        20 => "powerBIAudit",
        25 => "microsoftTeams",
        33 => "complianceDLPSharePointClassification",
        36 => "sharePointListOperation",
        50 => "exchangeItemAggregated",
        _ => "unknownFutureValue",
    }
}

async fn set_settings(
    State(s): State<Arc<Shared>>,
    Json(settings): Json<AuditSearchSettings>,
) -> Response {
    lock(&s.graph).audit = settings;
    StatusCode::NO_CONTENT.into_response()
}

async fn list_queries(State(s): State<Arc<Shared>>) -> Response {
    Json(s.audit_queries()).into_response()
}

impl Shared {
    /// Every audit log query kept, with its status on the emulator clock now.
    pub(crate) fn audit_queries(&self) -> Vec<AuditQueryView> {
        let now = self.now();
        lock(&self.graph)
            .audit_queries
            .iter()
            .map(|q| AuditQueryView {
                id: q.id.clone(),
                tenant_id: q.tenant.clone(),
                start: q.start,
                end: q.end,
                status: status(q, now).to_owned(),
                polls: q.polls,
                exceeded: q.exceeded,
            })
            .collect()
    }

    pub(crate) fn set_audit_search(&self, settings: AuditSearchSettings) {
        lock(&self.graph).audit = settings;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_read_with_and_without_a_zone() {
        let a = creation_time("2026-11-30T09:00:00").unwrap();
        assert_eq!(creation_time("2026-11-30T09:00:00Z"), Some(a));
        assert_eq!(creation_time("2026-11-30T09:00:00.000"), Some(a));
        assert_eq!(creation_time("never"), None);
    }

    #[test]
    fn record_types_have_graph_names() {
        assert_eq!(record_type_name(Some(&json!(2))), "exchangeItem");
        assert_eq!(
            record_type_name(Some(&json!("15"))),
            "azureActiveDirectoryStsLogon"
        );
        assert_eq!(record_type_name(None), "unknownFutureValue");
    }
}
