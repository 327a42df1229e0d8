//! Microsoft Graph as the collector sees it (reference graph.md §7): `auditLogs/signIns`,
//! `auditLogs/directoryAudits`, `admin/exchange/tracing/messageTraces`,
//! `admin/serviceAnnouncement/issues` and `/messages` under `/v1.0/`, with Graph's page shape
//! (`@odata.context`, opaque `@odata.nextLink` keeping the filter, none on the last page, no
//! delta), error body (`innerError` with date and request ids, matching headers), throttles
//! (identity reports 5 requests / 10 s per app per tenant, message trace 100 / 5 min per tenant,
//! both 429 + `Retry-After`), licence and permission refusals, late arrivals and in-place updates.
//!
//! Controls (`/_emulator/graph/…`): `generate` records of a feed (times spread over a range, so
//! late arrivals inside already-read windows are just a range in the past), `update` a service
//! health issue in place, `access` (licence, denied feeds, message trace service principal),
//! `faults` (forced 429s per tenant × feed, a foreign `@odata.nextLink`, a smaller page size),
//! `published` (every record identity ever published) and `requests` (what was asked, answered).
//! `$filter` takes comparisons (`eq`, `ge`, `gt`, `le`, `lt`) of the feed's time property joined
//! by `and`; other properties get 400, as an unsupported query does at Microsoft.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth;
use super::generator::{Prng, TenantFacts};
use super::graph_records as records;
use super::graph_state::{GraphState, Stored};
use super::state::Shared;
use super::{EmulatorError, lock};

pub use super::MICROSOFT_GRAPH;
pub use super::graph_state::{GraphAccess, GraphFaults, GraphRequest, GraphThrottle};
/// Microsoft's first-party app whose service principal message trace needs.
pub const TRACE_APP_ID: &str = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373";

const SIGN_INS: &str = "auditLogs/signIns";
const AUDITS: &str = "auditLogs/directoryAudits";
const TRACES: &str = "admin/exchange/tracing/messageTraces";
const ISSUES: &str = "admin/serviceAnnouncement/issues";
const MESSAGES: &str = "admin/serviceAnnouncement/messages";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(&format!("/v1.0/{SIGN_INS}"), get(sign_ins))
        .route(&format!("/v1.0/{AUDITS}"), get(audits))
        .route(&format!("/v1.0/{TRACES}"), get(traces))
        .route(&format!("/v1.0/{ISSUES}"), get(issues))
        .route(&format!("/v1.0/{MESSAGES}"), get(messages))
        .route("/_emulator/graph/generate", post(generate))
        .route("/_emulator/graph/update", post(update))
        .route("/_emulator/graph/access", post(set_access))
        .route("/_emulator/graph/faults", post(set_faults))
        .route("/_emulator/graph/published", get(published))
        .route("/_emulator/graph/requests", get(requests))
}

/// `POST /_emulator/graph/access`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphAccessRequest {
    pub tenant_id: String,
    #[serde(flatten)]
    pub access: GraphAccess,
}

/// `POST /_emulator/graph/generate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphGenerate {
    pub tenant_id: String,
    /// `sign_ins`, `directory_audits`, `message_trace` (messages: rows = messages × recipients),
    /// `service_health` (issues and message center posts, alternately).
    pub feed: String,
    pub records: usize,
    /// Time range the records are spread over; default the last 10 minutes.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// Message trace: recipients per message (rows per trace id), default 2.
    #[serde(default)]
    pub recipients: Option<usize>,
}

/// `POST /_emulator/graph/update`: an issue changes in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphUpdate {
    pub tenant_id: String,
    pub id: String,
}

/// One of Graph's four audit feeds: what its collections are filtered by and what identifies a
/// record. The emulator's own type: it serves Microsoft's API, not the collector's view of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    SignIns,
    DirectoryAudits,
    MessageTrace,
    ServiceHealth,
}

impl Feed {
    const ALL: [Feed; 4] = [
        Feed::SignIns,
        Feed::DirectoryAudits,
        Feed::MessageTrace,
        Feed::ServiceHealth,
    ];

    /// The name the control surface takes (`"feed": "sign_ins"`).
    fn name(self) -> &'static str {
        match self {
            Feed::SignIns => "sign_ins",
            Feed::DirectoryAudits => "directory_audits",
            Feed::MessageTrace => "message_trace",
            Feed::ServiceHealth => "service_health",
        }
    }

    fn from_name(name: &str) -> Option<Feed> {
        Feed::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The date-time property `$filter` compares and the collection is ordered by.
    fn time_property(self) -> &'static str {
        match self {
            Feed::SignIns => "createdDateTime",
            Feed::DirectoryAudits => "activityDateTime",
            Feed::MessageTrace => "receivedDateTime",
            Feed::ServiceHealth => "lastModifiedDateTime",
        }
    }

    /// The identity `published` lists for a record: its id; message trace: id `|` recipient (one
    /// row per recipient); service health: id `@` last change (an update is a new event).
    fn identity(self, record: &Map<String, Value>) -> Option<String> {
        let text = |k: &str| record.get(k).and_then(Value::as_str);
        let id = text("id").filter(|s| !s.is_empty())?;
        Some(match self {
            Feed::SignIns | Feed::DirectoryAudits => id.to_owned(),
            Feed::MessageTrace => format!(
                "{id}|{}",
                text("recipientAddress").unwrap_or("").to_ascii_lowercase()
            ),
            Feed::ServiceHealth => format!("{id}@{}", text("lastModifiedDateTime").unwrap_or("")),
        })
    }
}

fn feed_of(path: &str) -> Feed {
    match path {
        SIGN_INS => Feed::SignIns,
        AUDITS => Feed::DirectoryAudits,
        TRACES => Feed::MessageTrace,
        _ => Feed::ServiceHealth,
    }
}

fn role_of(path: &str) -> &'static str {
    match path {
        SIGN_INS | AUDITS => "AuditLog.Read.All",
        TRACES => "ExchangeMessageTrace.Read.All",
        ISSUES => "ServiceHealth.Read.All",
        _ => "ServiceMessage.Read.All",
    }
}

/// A Graph error answer.
#[derive(Debug)]
struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl GraphError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    fn respond(self, now: DateTime<Utc>, request_id: &str) -> Response {
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "innerError": {
                "date": now.format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

async fn sign_ins(s: State<Arc<Shared>>, h: HeaderMap, q: RawQuery) -> Response {
    serve(&s, SIGN_INS, &h, q.0.as_deref())
}
async fn audits(s: State<Arc<Shared>>, h: HeaderMap, q: RawQuery) -> Response {
    serve(&s, AUDITS, &h, q.0.as_deref())
}
async fn traces(s: State<Arc<Shared>>, h: HeaderMap, q: RawQuery) -> Response {
    serve(&s, TRACES, &h, q.0.as_deref())
}
async fn issues(s: State<Arc<Shared>>, h: HeaderMap, q: RawQuery) -> Response {
    serve(&s, ISSUES, &h, q.0.as_deref())
}
async fn messages(s: State<Arc<Shared>>, h: HeaderMap, q: RawQuery) -> Response {
    serve(&s, MESSAGES, &h, q.0.as_deref())
}

/// Answers one collection request and logs it.
fn serve(s: &Shared, path: &'static str, headers: &HeaderMap, query: Option<&str>) -> Response {
    let now = s.now();
    let request_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut log = GraphRequest {
        tenant_id: String::new(),
        path: path.to_owned(),
        status: 200,
        from: None,
        to: None,
        at: now,
        authorized: headers.contains_key("authorization"),
    };
    let result = answer(s, path, headers, query, now, &mut log);
    let mut resp = match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.respond(now, &request_id),
    };
    log.status = resp.status().as_u16();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v.clone());
        resp.headers_mut().insert("client-request-id", v);
    }
    let mut g = lock(&s.graph);
    if g.requests.len() >= 100_000 {
        g.requests.drain(..50_000);
    }
    g.requests.push(log);
    resp
}

fn answer(
    s: &Shared,
    path: &'static str,
    headers: &HeaderMap,
    query: Option<&str>,
    now: DateTime<Utc>,
    log: &mut GraphRequest,
) -> Result<Value, GraphError> {
    let unauthorized = |why: &str| {
        GraphError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!("Access token validation failure. {why}"),
        )
    };
    let claims = auth::check_bearer(s, headers).map_err(|_| unauthorized("Invalid token."))?;
    let aud = claims.aud.trim_end_matches('/');
    if !aud.eq_ignore_ascii_case(&s.base_url) && !aud.eq_ignore_ascii_case(MICROSOFT_GRAPH) {
        return Err(unauthorized("Invalid audience."));
    }
    let tenant = claims.tid.to_ascii_lowercase();
    log.tenant_id = tenant.clone();
    let feed = feed_of(path);
    let params = parse_query(query)?;
    let filter = params
        .get("$filter")
        .map(|f| parse_filter(f, feed.time_property()))
        .transpose()?
        .unwrap_or_default();
    log.from = filter.from();
    log.to = filter.to();

    let mut g = lock(&s.graph);
    // Throttling first, as Graph's gateway does.
    if let Some(t) =
        g.faults.throttle.iter_mut().find(|t| {
            t.tenant_id.eq_ignore_ascii_case(&tenant) && t.feed == feed.name() && t.next > 0
        })
    {
        t.next -= 1;
        let mut e = GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests. Please try again later.",
        );
        e.retry_after = Some(t.retry_after_secs);
        return Err(e);
    }
    let quota = match feed {
        Feed::SignIns | Feed::DirectoryAudits => Some((
            "identity",
            g.faults.identity_per_10s.unwrap_or(5),
            TimeDelta::seconds(10),
        )),
        Feed::MessageTrace => Some((
            "trace",
            g.faults.trace_per_5min.unwrap_or(100),
            TimeDelta::minutes(5),
        )),
        Feed::ServiceHealth => None,
    };
    if let Some((group, limit, period)) = quota {
        let times = g.quotas.entry((tenant.clone(), group)).or_default();
        while times.front().is_some_and(|t| *t <= now - period) {
            times.pop_front();
        }
        if times.len() >= limit {
            let wait = times
                .front()
                .map_or(1, |t| (*t + period - now).num_seconds().max(1));
            let mut e = GraphError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests. Please try again later.",
            );
            e.retry_after = Some(wait as u64);
            return Err(e);
        }
        times.push_back(now);
    }
    let access = g.access.get(&tenant).cloned().unwrap_or_default();
    if feed == Feed::MessageTrace && access.trace_principal_missing {
        return Err(GraphError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!(
                "The tenant has no service principal for the message trace application {TRACE_APP_ID}."
            ),
        ));
    }
    if !claims.roles.iter().any(|r| r == role_of(path))
        || access.denied.iter().any(|d| d == feed.name())
    {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ));
    }
    if feed == Feed::SignIns && access.unlicensed {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        ));
    }

    // Page size: $top (1..=max) or Prefer: odata.maxpagesize for service health.
    let (max_top, default_top) = match feed {
        Feed::MessageTrace => (5000, 1000),
        Feed::ServiceHealth => (1000, 100),
        _ => (1000, 1000),
    };
    let mut top = match params.get("$top") {
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=max_top).contains(&n) => n,
            _ => {
                return Err(GraphError::bad(format!(
                    "Invalid $top: {t} (1..{max_top})."
                )));
            }
        },
        None if feed == Feed::ServiceHealth => headers
            .get("prefer")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .find_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
            })
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(default_top, |n| n.clamp(1, max_top)),
        None => default_top,
    };
    if let Some(cap) = g.faults.page_size {
        top = top.min(cap.max(1));
    }

    // Time rules.
    let (lower, upper) = match feed {
        Feed::MessageTrace => {
            let (from, to) = match (filter.from(), filter.to()) {
                (Some(f), Some(t)) => (f, t),
                // No time filter at all: the last 48 hours.
                _ if filter.clauses.is_empty() => (now - TimeDelta::hours(48), now),
                _ => {
                    return Err(GraphError::bad(
                        "Both a start and an end receivedDateTime are required.",
                    ));
                }
            };
            if to - from > TimeDelta::days(10) {
                return Err(GraphError::bad("The time range may not exceed 10 days."));
            }
            if from < now - TimeDelta::days(90) {
                return Err(GraphError::bad(
                    "The start date may not be more than 90 days in the past.",
                ));
            }
            if to > now {
                return Err(GraphError::bad("The end date may not be in the future."));
            }
            (from, to)
        }
        Feed::SignIns | Feed::DirectoryAudits => {
            (now - TimeDelta::days(30), DateTime::<Utc>::MAX_UTC)
        }
        Feed::ServiceHealth => (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC),
    };
    let ascending = feed == Feed::DirectoryAudits
        && params
            .get("$orderby")
            .is_some_and(|o| o.trim().eq_ignore_ascii_case("activityDateTime asc"));

    let key = (tenant.clone(), path);
    let empty = Vec::new();
    let all = g.collections.get(&key).unwrap_or(&empty);
    let mut selected: Vec<&Stored> = all
        .iter()
        .filter(|r| r.time >= lower && r.time <= upper && filter.matches(r.time))
        .collect();
    selected.sort_by_key(|r| (r.time, r.seq));
    if !ascending {
        selected.reverse();
    }
    // Continue after the position the token names: keyset (auditLogs, traces) or $skip (service
    // health), as Microsoft's links carry them.
    let start = if feed == Feed::ServiceHealth {
        params
            .get("$skip")
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| GraphError::bad("Invalid $skip."))
            })
            .transpose()?
            .unwrap_or(0)
    } else if let Some(token) = params.get("$skiptoken") {
        let (t, seq) = decode_token(token).ok_or_else(|| GraphError::bad("Invalid $skiptoken."))?;
        selected
            .iter()
            .position(|r| {
                if ascending {
                    (r.time, r.seq) > (t, seq)
                } else {
                    (r.time, r.seq) < (t, seq)
                }
            })
            .unwrap_or(selected.len())
    } else {
        0
    };
    let page: Vec<&Stored> = selected.iter().skip(start).take(top).copied().collect();
    let more = start + page.len() < selected.len();
    let origin = g
        .faults
        .foreign_next_link
        .clone()
        .unwrap_or_else(|| s.base_url.clone());
    let mut body = json!({
        "@odata.context": format!("{MICROSOFT_GRAPH}/v1.0/$metadata#{path}"),
        "value": page.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
    });
    if more {
        let mut kept: Vec<String> = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let name = p.split('=').next().unwrap_or("").to_ascii_lowercase();
                name != "%24skiptoken"
                    && name != "$skiptoken"
                    && name != "$skip"
                    && name != "%24skip"
            })
            .map(str::to_owned)
            .collect();
        if feed == Feed::ServiceHealth {
            kept.push(format!("$skip={}", start + page.len()));
        } else if let Some(last) = page.last() {
            kept.push(format!("$skiptoken={}", encode_token(last.time, last.seq)));
        }
        body["@odata.nextLink"] = json!(format!("{origin}/v1.0/{path}?{}", kept.join("&")));
    }
    Ok(body)
}

fn encode_token(t: DateTime<Utc>, seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{seq}", t.timestamp_micros()))
}

fn decode_token(token: &str) -> Option<(DateTime<Utc>, u64)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (t, seq) = raw.split_once('|')?;
    Some((
        DateTime::<Utc>::from_timestamp_micros(t.parse().ok()?)?,
        seq.parse().ok()?,
    ))
}

/// Query parameters, percent-decoded (`$` may come as `%24`, spaces as `%20` or `+`).
fn parse_query(query: Option<&str>) -> Result<HashMap<String, String>, GraphError> {
    let url = reqwest::Url::parse(&format!("http://q/?{}", query.unwrap_or("")))
        .map_err(|_| GraphError::bad("Unreadable query string."))?;
    Ok(url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect())
}

#[derive(Debug, Default)]
struct Filter {
    clauses: Vec<(String, DateTime<Utc>)>,
}

impl Filter {
    fn from(&self) -> Option<DateTime<Utc>> {
        self.clauses
            .iter()
            .filter(|(op, _)| op == "ge" || op == "gt" || op == "eq")
            .map(|(_, t)| *t)
            .max()
    }
    fn to(&self) -> Option<DateTime<Utc>> {
        self.clauses
            .iter()
            .filter(|(op, _)| op == "le" || op == "lt" || op == "eq")
            .map(|(_, t)| *t)
            .min()
    }
    fn matches(&self, t: DateTime<Utc>) -> bool {
        self.clauses.iter().all(|(op, v)| match op.as_str() {
            "eq" => t == *v,
            "ge" => t >= *v,
            "gt" => t > *v,
            "le" => t <= *v,
            _ => t < *v,
        })
    }
}

/// `<prop> <op> <literal> [and …]` on the feed's time property.
fn parse_filter(text: &str, property: &str) -> Result<Filter, GraphError> {
    let mut filter = Filter::default();
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    while i < words.len() {
        let [prop, op, lit] =
            [words.get(i), words.get(i + 1), words.get(i + 2)].map(|w| w.copied().unwrap_or(""));
        if !prop.eq_ignore_ascii_case(property) {
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                format!(
                    "Unsupported or invalid query filter clause specified for property '{prop}'."
                ),
            ));
        }
        let op = op.to_ascii_lowercase();
        if !["eq", "ge", "gt", "le", "lt"].contains(&op.as_str()) {
            return Err(GraphError::bad(format!("Unsupported operator '{op}'.")));
        }
        let t = DateTime::parse_from_rfc3339(lit)
            .map_err(|_| GraphError::bad(format!("Invalid date-time literal '{lit}'.")))?
            .with_timezone(&Utc);
        filter.clauses.push((op, t));
        i += 3;
        match words.get(i) {
            None => {}
            Some(w) if w.eq_ignore_ascii_case("and") => i += 1,
            Some(w) => return Err(GraphError::bad(format!("Unexpected '{w}' in $filter."))),
        }
    }
    Ok(filter)
}

impl Shared {
    fn graph_rng(g: &mut GraphState, seed: u64) -> &mut Prng {
        g.rng.get_or_insert_with(|| Prng::new(seed ^ 0x6a09_e667))
    }

    /// Publishes generated records; returns their identities.
    pub(crate) fn graph_generate(&self, req: &GraphGenerate) -> Result<Vec<String>, EmulatorError> {
        let feed = Feed::from_name(&req.feed)
            .ok_or_else(|| EmulatorError::Request(format!("unknown Graph feed {}", req.feed)))?;
        let tenant = self
            .canonical_tenant(&req.tenant_id)
            .ok_or_else(|| EmulatorError::Request(format!("unknown tenant {}", req.tenant_id)))?;
        let to = req.to.unwrap_or_else(|| self.now());
        let from = req.from.unwrap_or(to - TimeDelta::minutes(10));
        if from > to {
            return Err(EmulatorError::Request("from is after to".into()));
        }
        let facts = TenantFacts::new(&tenant);
        let n = req.records;
        let mut g = lock(&self.graph);
        let seed = self.cfg.seed;
        let mut made: Vec<(&'static str, Value)> = Vec::new();
        for i in 0..n {
            let at = if n <= 1 {
                to
            } else {
                from + (to - from) * i32::try_from(i).unwrap_or(i32::MAX)
                    / i32::try_from(n - 1).unwrap_or(1)
            };
            // Service health ids are unique: a repeated one would be an in-place update.
            g.serial += 1;
            let serial = g.serial;
            let rng = Self::graph_rng(&mut g, seed);
            match feed {
                Feed::SignIns => made.push((SIGN_INS, records::sign_in(rng, &facts, at))),
                Feed::DirectoryAudits => {
                    made.push((AUDITS, records::directory_audit(rng, &facts, at)))
                }
                Feed::MessageTrace => {
                    let rows = records::message_trace(rng, &facts, at, req.recipients.unwrap_or(2));
                    made.extend(rows.into_iter().map(|r| (TRACES, r)));
                }
                Feed::ServiceHealth if i % 2 == 0 => {
                    made.push((ISSUES, records::issue(rng, at, serial)))
                }
                Feed::ServiceHealth => made.push((MESSAGES, records::message(at, serial))),
            }
        }
        let mut ids = Vec::with_capacity(made.len());
        for (path, value) in made {
            ids.push(Self::store_graph(&mut g, &tenant, path, value));
        }
        Ok(ids)
    }

    /// Stores (or replaces, same id) one record; returns its identity.
    fn store_graph(g: &mut GraphState, tenant: &str, path: &'static str, value: Value) -> String {
        let feed = feed_of(path);
        let time = value
            .get(feed.time_property())
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(DateTime::<Utc>::MIN_UTC, |t| t.with_timezone(&Utc));
        let identity = value
            .as_object()
            .and_then(|o| feed.identity(o))
            .unwrap_or_default();
        g.seq += 1;
        let seq = g.seq;
        let list = g.collections.entry((tenant.to_owned(), path)).or_default();
        let id = value.get("id").cloned();
        if feed == Feed::ServiceHealth
            && let Some(old) = list.iter_mut().find(|r| r.value.get("id") == id.as_ref())
        {
            *old = Stored { time, seq, value };
        } else {
            list.push(Stored { time, seq, value });
        }
        g.published
            .entry((tenant.to_owned(), feed.name().to_owned()))
            .or_default()
            .push(identity.clone());
        identity
    }

    /// Updates a service health issue in place; returns its new identity.
    pub(crate) fn graph_update(&self, req: &GraphUpdate) -> Result<String, EmulatorError> {
        let tenant = self
            .canonical_tenant(&req.tenant_id)
            .ok_or_else(|| EmulatorError::Request(format!("unknown tenant {}", req.tenant_id)))?;
        let now = self.now();
        let mut g = lock(&self.graph);
        let mut value = g
            .collections
            .get(&(tenant.clone(), ISSUES))
            .and_then(|l| l.iter().find(|r| r.value["id"] == req.id.as_str()))
            .map(|r| r.value.clone())
            .ok_or_else(|| EmulatorError::Request(format!("no issue {}", req.id)))?;
        records::update_issue(&mut value, now);
        Ok(Self::store_graph(&mut g, &tenant, ISSUES, value))
    }

    pub(crate) fn graph_access(&self, req: GraphAccessRequest) {
        lock(&self.graph)
            .access
            .insert(req.tenant_id.to_ascii_lowercase(), req.access);
    }

    pub(crate) fn graph_faults(&self, faults: GraphFaults) {
        lock(&self.graph).faults = faults;
    }

    /// Identities ever published for `tenant`, by feed config name.
    pub(crate) fn graph_published(&self, tenant: &str) -> HashMap<String, Vec<String>> {
        let tenant = tenant.to_ascii_lowercase();
        lock(&self.graph)
            .published
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|((_, f), ids)| (f.clone(), ids.clone()))
            .collect()
    }

    pub(crate) fn graph_requests(&self) -> Vec<GraphRequest> {
        lock(&self.graph).requests.clone()
    }
}

async fn generate(State(s): State<Arc<Shared>>, Json(req): Json<GraphGenerate>) -> Response {
    match s.graph_generate(&req) {
        Ok(ids) => Json(json!({ "identities": ids })).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn update(State(s): State<Arc<Shared>>, Json(req): Json<GraphUpdate>) -> Response {
    match s.graph_update(&req) {
        Ok(id) => Json(json!({ "identity": id })).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn set_access(State(s): State<Arc<Shared>>, Json(req): Json<GraphAccessRequest>) -> Response {
    s.graph_access(req);
    StatusCode::NO_CONTENT.into_response()
}

async fn set_faults(State(s): State<Arc<Shared>>, Json(f): Json<GraphFaults>) -> Response {
    s.graph_faults(f);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct TenantQuery {
    tenant_id: String,
}

async fn published(State(s): State<Arc<Shared>>, Query(q): Query<TenantQuery>) -> Response {
    Json(s.graph_published(&q.tenant_id)).into_response()
}

async fn requests(State(s): State<Arc<Shared>>) -> Response {
    Json(s.graph_requests()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        let f = parse_filter(
            "createdDateTime ge 2026-11-30T09:00:00Z and createdDateTime le 2026-11-30T10:00:00Z",
            "createdDateTime",
        )
        .unwrap();
        assert_eq!(f.from().unwrap().to_rfc3339(), "2026-11-30T09:00:00+00:00");
        assert_eq!(f.to().unwrap().to_rfc3339(), "2026-11-30T10:00:00+00:00");
        assert!(parse_filter("userId eq 'x'", "createdDateTime").is_err());
        assert!(parse_filter("createdDateTime ge yesterday", "createdDateTime").is_err());
    }

    #[test]
    fn tokens_round_trip() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T09:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(decode_token(&encode_token(t, 7)), Some((t, 7)));
        assert_eq!(decode_token("!!"), None);
    }
}
