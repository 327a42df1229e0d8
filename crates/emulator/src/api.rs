//! The Management Activity API under `/api/v1.0/{tenant}/activity/feed/`: subscriptions
//! start/stop/list/content/notifications, `audit/{contentId}`, `resources/dlpSensitiveTypes`, with
//! Microsoft's error codes (`{"error":{"code":"AF…","message":"…"}}`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

use super::auth::{self, AccessClaims};
use super::error::ApiError;
use super::generator::ContentType;
use super::lock;
use super::state::{Blob, RETENTION, Shared, Subscription, WebhookStatus};
use super::webhooks::{self, WebhookRequest};

/// Shared pool key and PublisherId Microsoft reports when PublisherIdentifier is absent.
const NO_PUBLISHER: &str = "00000000-0000-0000-0000-000000000000";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let feed = "/api/v1.0/{tenant}/activity/feed";
    Router::new()
        .route(&format!("{feed}/subscriptions/start"), post(start))
        .route(&format!("{feed}/subscriptions/stop"), post(stop))
        .route(&format!("{feed}/subscriptions/list"), get(list))
        .route(&format!("{feed}/subscriptions/content"), get(content))
        .route(
            &format!("{feed}/subscriptions/notifications"),
            get(notifications),
        )
        .route(&format!("{feed}/audit/{{content_id}}"), get(audit))
        .route(
            &format!("{feed}/resources/dlpSensitiveTypes"),
            get(dlp_types),
        )
}

/// Anything outside the emulated and control paths.
pub(crate) async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource does not exist.",
    )
    .into_response()
}

/// Query parameters; names are case-insensitive as on Microsoft's side.
struct Query(HashMap<String, String>);

impl Query {
    fn from_raw(raw: Option<String>) -> Query {
        let parsed = auth::parse_form(raw.unwrap_or_default().as_bytes());
        Query(
            parsed
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

/// An authorised caller.
struct Ctx {
    tenant: String,
    claims: AccessClaims,
    publisher: Option<String>,
}

impl Ctx {
    fn require_dlp(&self, ct: ContentType) -> Result<(), ApiError> {
        if ct == ContentType::Dlp
            && !self
                .claims
                .roles
                .iter()
                .any(|r| r == "ActivityFeed.ReadDlp")
        {
            return Err(permission_error(&self.claims, "ActivityFeed.ReadDlp"));
        }
        Ok(())
    }
}

fn permission_error(claims: &AccessClaims, needed: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "AF10001",
        format!(
            "The permission set ({}) sent in the request did not include the expected permission {needed}.",
            claims.roles.join(",")
        ),
    )
}

/// Token, tenant, permission and quota checks every API call goes through, in this order.
async fn authorize(
    s: &Shared,
    headers: &HeaderMap,
    tenant: &str,
    method: &str,
    q: &Query,
) -> Result<Ctx, ApiError> {
    {
        let mut log = lock(&s.requests);
        if log.len() >= super::state::REQUEST_LOG_LIMIT {
            log.pop_front();
        }
        log.push_back(super::state::ApiRequest {
            at: chrono::Utc::now(),
            tenant_id: tenant.to_owned(),
            operation: method.to_owned(),
            content_type: q.get("contenttype").map(str::to_owned),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
    let latency = lock(&s.faults).faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    let claims = auth::check_bearer(s, headers)?;
    if uuid::Uuid::parse_str(tenant).is_err() {
        return Err(ApiError::bad(
            "AF20013",
            format!("The tenant ID passed in the URL ({tenant}) is not a valid GUID."),
        ));
    }
    let Some(canonical) = s.canonical_tenant(tenant) else {
        return Err(ApiError::bad(
            "AF20011",
            format!(
                "Specified tenant ID ({tenant}) does not exist in the system or has been deleted."
            ),
        ));
    };
    if !claims.tid.eq_ignore_ascii_case(&canonical) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AF20010",
            format!(
                "The tenant ID passed in the URL ({tenant}) does not match the tenant ID passed in the access token ({}).",
                claims.tid
            ),
        ));
    }
    if !claims.roles.iter().any(|r| r == "ActivityFeed.Read") {
        return Err(permission_error(&claims, "ActivityFeed.Read"));
    }
    let publisher = q
        .get("publisheridentifier")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    if !s.audit_log_on(&canonical) {
        return Err(ApiError::audit_log_off(
            method,
            &canonical,
            &claims.appid,
            publisher.as_deref().unwrap_or(NO_PUBLISHER),
        ));
    }
    let key = match &publisher {
        Some(p) => format!("{canonical}|{}", p.to_ascii_lowercase()),
        None => format!("*|{NO_PUBLISHER}"),
    };
    if let Err(wait) = s.throttle.check(&key) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "AF429",
            format!(
                "Too many requests. Method={method}, PublisherId={}",
                publisher.as_deref().unwrap_or(NO_PUBLISHER)
            ),
        );
        e.retry_after = Some(wait.as_secs().max(1) + u64::from(wait.subsec_nanos() > 0));
        return Err(e);
    }
    Ok(Ctx {
        tenant: canonical,
        claims,
        publisher,
    })
}

fn content_type_param(q: &Query) -> Result<ContentType, ApiError> {
    let raw = q
        .get("contenttype")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::missing("contentType"))?;
    ContentType::parse(raw)
        .ok_or_else(|| ApiError::bad("AF20020", "The specified content type is not valid."))
}

fn json_ok(v: Value) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(v)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn webhook_json(s: &Shared, sub: &Subscription) -> Value {
    match &sub.webhook {
        None => Value::Null,
        Some(w) => {
            let status = match w.status {
                WebhookStatus::Disabled => "disabled",
                WebhookStatus::Enabled if w.expiration.is_some_and(|e| e <= s.now()) => "expired",
                WebhookStatus::Enabled => "enabled",
            };
            json!({
                "status": status,
                "address": w.address,
                "authId": w.auth_id,
                "expiration": w.expiration.map(|e| e.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
            })
        }
    }
}

fn subscription_json(s: &Shared, ct: ContentType, sub: &Subscription) -> Value {
    json!({
        "contentType": ct.as_str(),
        "status": if sub.enabled { "enabled" } else { "disabled" },
        "webhook": webhook_json(s, sub),
    })
}

fn parse_webhook(s: &Shared, body: &[u8]) -> Result<Option<WebhookRequest>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::bad_type("webhook", "json"))?;
    let Some(hook) = v.get("webhook").filter(|h| !h.is_null()) else {
        return Ok(None);
    };
    let address = hook
        .get("address")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::missing("address"))?
        .to_string();
    let auth_id = hook
        .get("authId")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    let expiration = match hook.get("expiration") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) if e.is_empty() => None,
        Some(Value::String(e)) => {
            let t =
                parse_datetime(e).ok_or_else(|| ApiError::bad_type("expiration", "datetime"))?;
            if t <= s.now() {
                return Err(ApiError::bad(
                    "AF20003",
                    format!("Expiration {e} provided is set to past date and time."),
                ));
            }
            Some(t)
        }
        Some(_) => return Err(ApiError::bad_type("expiration", "datetime")),
    };
    if !address.to_ascii_lowercase().starts_with("https://") {
        return Err(ApiError::webhook_not_validated(
            &address,
            "The address must begin with HTTPS.",
        ));
    }
    Ok(Some(WebhookRequest {
        address,
        auth_id,
        expiration,
    }))
}

async fn start(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = Query::from_raw(raw);
    let ctx = authorize(&s, &headers, &tenant, "StartSubscription", &q).await?;
    let ct = content_type_param(&q)?;
    ctx.require_dlp(ct)?;
    let hook = parse_webhook(&s, &body)?;
    let key = (ctx.tenant.clone(), ct);
    {
        let st = lock(&s.state);
        too_early(&s, &ctx, st.last_start.get(&key).copied())?;
        if let Some(sub) = st.subs.get(&key)
            && sub.enabled
            && sub.webhook.is_none()
            && hook.is_none()
        {
            return Err(ApiError::bad(
                "AF20024",
                "The subscription is already enabled. No property change.",
            ));
        }
    }
    if let Some(h) = &hook {
        webhooks::validate(&s, &ctx.tenant, ct, h).await?;
    }
    let mut st = lock(&s.state);
    // Two starts racing through validation: only the first one counts, as if serialised.
    too_early(&s, &ctx, st.last_start.get(&key).copied())?;
    st.last_start.insert(key.clone(), s.now());
    let sub = st.subs.entry(key).or_insert(Subscription {
        enabled: true,
        webhook: None,
    });
    sub.enabled = true;
    if let Some(old) = sub.webhook.take() {
        old.cancel.cancel();
    }
    if let Some(h) = hook {
        sub.webhook = Some(webhooks::register(
            &s,
            &ctx.tenant,
            &ctx.claims.appid,
            ct,
            h,
        ));
    }
    let out = subscription_json(&s, ct, sub);
    Ok(json_ok(out))
}

/// Microsoft's 15-minute rule: "once you submit a subscription request, a waiting period of 15
/// minutes is required before another request can be made" (stop is not limited). The
/// documentation does not say what a too-early start gets. It calls the rule a throttling policy,
/// so the emulator answers what Microsoft documents for throttling: HTTP 429 with `AF429` and its
/// documented message (`Method=StartSubscription`), plus `Retry-After` in whole seconds until the
/// start is allowed, so that a client knows when to come back. Only an accepted start opens a
/// waiting period: a refused one changes nothing (else a client retrying on time would never get
/// through). Counted on the emulator clock, so tests move it with `/_emulator/clock`.
fn too_early(s: &Shared, ctx: &Ctx, last: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    let wait = lock(&s.faults).faults.subscription_start_wait_secs;
    let Some(last) = last else { return Ok(()) };
    let allowed = last + chrono::Duration::seconds(i64::try_from(wait).unwrap_or(i64::MAX / 2_000));
    let now = s.now();
    if now >= allowed {
        return Ok(());
    }
    let left = (allowed - now).num_milliseconds().max(1);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "AF429",
        format!(
            "Too many requests. Method=StartSubscription, PublisherId={}",
            ctx.publisher.as_deref().unwrap_or(NO_PUBLISHER)
        ),
    );
    e.retry_after = Some(u64::try_from((left + 999) / 1000).unwrap_or(1));
    Err(e)
}

async fn stop(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = Query::from_raw(raw);
    let ctx = authorize(&s, &headers, &tenant, "StopSubscription", &q).await?;
    let ct = content_type_param(&q)?;
    let mut st = lock(&s.state);
    match st.subs.get_mut(&(ctx.tenant, ct)) {
        Some(sub) if sub.enabled => {
            sub.enabled = false;
            if let Some(w) = sub.webhook.take() {
                w.cancel.cancel();
            }
            Ok(StatusCode::OK.into_response())
        }
        _ => Err(ApiError::no_subscription()),
    }
}

async fn list(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = Query::from_raw(raw);
    let ctx = authorize(&s, &headers, &tenant, "ListSubscriptions", &q).await?;
    let st = lock(&s.state);
    let out: Vec<Value> = ContentType::ALL
        .into_iter()
        .filter_map(|ct| {
            st.subs
                .get(&(ctx.tenant.clone(), ct))
                .map(|sub| subscription_json(&s, ct, sub))
        })
        .collect();
    Ok(json_ok(Value::Array(out)))
}

/// Parses Microsoft's accepted forms: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS`
/// (UTC), also with fractional seconds and a trailing `Z` (as found in NextPageUri values).
pub(crate) fn parse_datetime(raw: &str) -> Option<DateTime<Utc>> {
    let t = raw.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix('z'))
        .unwrap_or(t);
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|n| n.and_utc());
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .into_iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .map(|n| n.and_utc())
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The `[start, end)` window of content/notifications with Microsoft's rules.
fn window(s: &Shared, q: &Query) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    listing_window(q.get("starttime"), q.get("endtime"), s.now())
}

/// Microsoft's rules for a listing window given as the `startTime`/`endTime` query values (empty
/// counts as absent) at `now`: both or neither (neither: the last 24 hours), `start < end`, at most
/// 24 hours apart, start no more than 7 days back (AF20055); an unreadable time is AF20002.
pub(crate) fn listing_window(
    start: Option<&str>,
    end: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    match (
        start.filter(|v| !v.is_empty()),
        end.filter(|v| !v.is_empty()),
    ) {
        (None, None) => {
            // The last 24 hours, including content created in this very millisecond.
            let end = now + chrono::Duration::milliseconds(1);
            Ok((end - chrono::Duration::hours(24), end))
        }
        (Some(a), Some(b)) => {
            let start =
                parse_datetime(a).ok_or_else(|| ApiError::bad_type("startTime", "datetime"))?;
            let end = parse_datetime(b).ok_or_else(|| ApiError::bad_type("endTime", "datetime"))?;
            if start >= end || end - start > chrono::Duration::hours(24) {
                return Err(ApiError::window());
            }
            if start < now - RETENTION {
                return Err(ApiError::window());
            }
            Ok((start, end))
        }
        _ => Err(ApiError::window()),
    }
}

/// Position in a listing: (contentCreated in ms, sequence).
fn parse_page_token(raw: &str) -> Option<(i64, u64)> {
    let (ms, seq) = raw.split_once('R')?;
    if ms.is_empty()
        || seq.is_empty()
        || !ms.bytes().all(|b| b.is_ascii_digit())
        || !seq.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn next_page_uri(
    s: &Shared,
    ctx: &Ctx,
    op: &str,
    ct: ContentType,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    token: &str,
) -> String {
    let mut uri = format!(
        "{}/api/v1.0/{}/activity/feed/subscriptions/{op}?contentType={}&startTime={}&endTime={}&nextPage={token}",
        s.base_url,
        ctx.tenant,
        ct.as_str(),
        fmt_time(start),
        fmt_time(end)
    );
    if let Some(p) = &ctx.publisher {
        uri.push_str("&PublisherIdentifier=");
        uri.push_str(&p.replace(['&', '#', ' ', '+'], ""));
    }
    uri
}

fn require_enabled(s: &Shared, tenant: &str, ct: ContentType) -> Result<(), ApiError> {
    match lock(&s.state).subs.get(&(tenant.to_string(), ct)) {
        Some(sub) if sub.enabled => Ok(()),
        _ => Err(ApiError::no_subscription()),
    }
}

fn with_next_page(mut resp: Response, next: Option<String>) -> Response {
    if let Some(n) = next
        && let Ok(v) = HeaderValue::from_str(&n)
    {
        resp.headers_mut().insert("NextPageUri", v);
    }
    resp
}

async fn content(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = Query::from_raw(raw);
    let ctx = authorize(&s, &headers, &tenant, "ListContent", &q).await?;
    if let Some(r) = redirect(&s, &uri) {
        return Ok(r);
    }
    let ct = content_type_param(&q)?;
    ctx.require_dlp(ct)?;
    let win = window(&s, &q)?;
    let after =
        match q.get("nextpage") {
            None => None,
            Some(raw) => Some(parse_page_token(raw).ok_or_else(|| {
                ApiError::bad("AF20031", format!("Invalid nextPage Input: {raw}."))
            })?),
        };
    require_enabled(&s, &ctx.tenant, ct)?;
    let now = s.now();
    let delay = chrono::Duration::from_std(s.cfg.content_delay).unwrap_or(chrono::Duration::zero());
    let page_size = s.cfg.page_size;
    let (page, next): (Vec<Arc<Blob>>, Option<String>) = {
        let st = lock(&s.state);
        let feed = st
            .feeds
            .get(&(ctx.tenant.clone(), ct))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut it = feed
            .iter()
            .filter(|b| b.created >= win.0 && b.created < win.1)
            .filter(|b| b.created + delay <= now && b.expiration() > now)
            .filter(|b| after.is_none_or(|a| (b.created.timestamp_millis(), b.seq) >= a));
        let page: Vec<Arc<Blob>> = it.by_ref().take(page_size).cloned().collect();
        let next = it
            .next()
            .map(|b| format!("{}R{}", b.created.timestamp_millis(), b.seq));
        (page, next)
    };
    let out: Vec<Value> = page
        .iter()
        .map(|b| {
            json!({
                "contentType": ct.as_str(),
                "contentId": b.content_id,
                "contentUri": s.content_uri(&b.tenant, &b.content_id),
                "contentCreated": fmt_time(b.created),
                "contentExpiration": fmt_time(b.expiration()),
            })
        })
        .collect();
    let next = next.map(|t| next_page_uri(&s, &ctx, "content", ct, win, &t));
    Ok(with_next_page(json_ok(Value::Array(out)), next))
}

async fn notifications(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = Query::from_raw(raw);
    let ctx = authorize(&s, &headers, &tenant, "ListNotifications", &q).await?;
    let ct = content_type_param(&q)?;
    ctx.require_dlp(ct)?;
    let win = window(&s, &q)?;
    let after = match q.get("nextpage") {
        None => None,
        Some(raw) => Some(
            raw.strip_prefix('L')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad("AF20031", format!("Invalid nextPage Input: {raw}."))
                })?,
        ),
    };
    require_enabled(&s, &ctx.tenant, ct)?;
    let st = lock(&s.state);
    let mut it = st
        .notifications
        .iter()
        .enumerate()
        .skip(after.unwrap_or(0))
        .filter(|(_, n)| n.tenant == ctx.tenant && n.blob.content_type == ct)
        .filter(|(_, n)| n.blob.created >= win.0 && n.blob.created < win.1);
    let page: Vec<Value> = it
        .by_ref()
        .take(s.cfg.page_size)
        .map(|(_, n)| {
            json!({
                "contentType": ct.as_str(),
                "contentId": n.blob.content_id,
                "contentUri": s.content_uri(&n.blob.tenant, &n.blob.content_id),
                "contentCreated": fmt_time(n.blob.created),
                "contentExpiration": fmt_time(n.blob.expiration()),
                "notificationSent": fmt_time(n.sent),
                "notificationStatus": if n.success { "success" } else { "failed" },
            })
        })
        .collect();
    let next = it
        .next()
        .map(|(i, _)| next_page_uri(&s, &ctx, "notifications", ct, win, &format!("L{i}")));
    drop(st);
    Ok(with_next_page(json_ok(Value::Array(page)), next))
}

/// The `redirect_to` fault: a redirect of this request to the same path and query elsewhere.
fn redirect(s: &Shared, uri: &Uri) -> Option<Response> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let (status, location) = lock(&s.faults).faults.redirect(path)?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    let location = HeaderValue::from_str(&location).ok()?;
    Some((status, [(header::LOCATION, location)]).into_response())
}

/// Content ids look like `{digits}${digits}${type}${Type}${region}`.
fn content_id_well_formed(id: &str) -> bool {
    let parts: Vec<&str> = id.split('$').collect();
    parts.len() >= 4
        && parts.len() <= 6
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

async fn audit(
    State(s): State<Arc<Shared>>,
    Path((tenant, content_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = Query::from_raw(raw);
    let ctx = authorize(&s, &headers, &tenant, "GetBlob", &q).await?;
    if let Some(r) = redirect(&s, &uri) {
        return Ok(r);
    }
    {
        let mut f = lock(&s.faults);
        let fail = if f.faults.content_fail_next > 0 {
            f.faults.content_fail_next -= 1;
            true
        } else {
            let rate = f.faults.content_error_rate;
            rate > 0.0 && f.rng.unit() < rate
        };
        if fail {
            let status = StatusCode::from_u16(f.faults.content_error_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(match status {
                StatusCode::UNAUTHORIZED => {
                    ApiError::unauthorized(&s.base_url, "The access token has expired.")
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let mut e = ApiError::new(
                        status,
                        "AF429",
                        format!(
                            "Too many requests. Method=GetBlob, PublisherId={}",
                            ctx.publisher.as_deref().unwrap_or(NO_PUBLISHER)
                        ),
                    );
                    e.retry_after = Some(1);
                    e
                }
                _ => ApiError::new(
                    status,
                    "AF50000",
                    "An internal error occurred. Retry the request.",
                ),
            });
        }
    }
    if !content_id_well_formed(&content_id) {
        return Err(ApiError::bad(
            "AF20052",
            format!("Content ID {content_id} in the URL is invalid."),
        ));
    }
    let blob = lock(&s.state).blobs.get(&content_id).cloned();
    let now = s.now();
    let delay = chrono::Duration::from_std(s.cfg.content_delay).unwrap_or(chrono::Duration::zero());
    let blob = match blob {
        Some(b) if b.tenant == ctx.tenant && b.created + delay <= now => b,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "AF20050",
                format!("The specified content ({content_id}) does not exist."),
            ));
        }
    };
    if blob.expiration() <= now {
        return Err(ApiError::bad(
            "AF20051",
            format!(
                "Content requested with the key {content_id} has already expired. Content older than 7 days cannot be retrieved."
            ),
        ));
    }
    ctx.require_dlp(blob.content_type)?;
    require_enabled(&s, &ctx.tenant, blob.content_type)?;
    *lock(&s.state)
        .fetches
        .entry(blob.content_id.clone())
        .or_default() += 1;
    // A damaged blob: the answer ends in the middle of the array, on every fetch.
    let body = if blob.broken {
        blob.body.slice(..blob.body.len() / 2)
    } else {
        blob.body.clone()
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn dlp_types(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = Query::from_raw(raw);
    let _ctx = authorize(&s, &headers, &tenant, "GetDlpSensitiveTypes", &q).await?;
    if let Some(lang) = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    {
        if lang.contains(',') {
            return Err(ApiError::bad(
                "AF20053",
                "Only one language may be present in the Accept-Language header.",
            ));
        }
        if !lang
            .trim()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || lang.trim().is_empty()
        {
            return Err(ApiError::bad(
                "AF20054",
                "Invalid syntax in Accept-Language header.",
            ));
        }
    }
    Ok(json_ok(json!([
        {"id": "50842eb7-edc8-4019-85dd-5a5c1f2bb085", "name": "Credit Card Number"},
        {"id": "a44669fe-0d48-453d-a9b1-2cc83f2cba77", "name": "U.S. Social Security Number (SSN)"},
        {"id": "cb353f78-2b72-4c3c-8827-92ebe4f69fdf", "name": "ABA Routing Number"},
        {"id": "419f449f-6d9d-4be1-a154-b531f7a91b41", "name": "EU Debit Card Number"}
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_forms() {
        assert!(parse_datetime("2026-11-25").is_some());
        assert!(parse_datetime("2026-11-25T13:00").is_some());
        assert!(parse_datetime("2026-11-25T13:00:01").is_some());
        assert!(parse_datetime("2026-11-25T13:00:01.123Z").is_some());
        assert!(parse_datetime("25/11/2026").is_none());
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn page_tokens() {
        assert_eq!(
            parse_page_token("1764075600000R12"),
            Some((1764075600000, 12))
        );
        assert_eq!(parse_page_token("garbage"), None);
        assert_eq!(parse_page_token("12R"), None);
    }

    #[test]
    fn content_ids() {
        assert!(content_id_well_formed(
            "20261125130001123000001$20261125130001123000001$audit_sharepoint$Audit_SharePoint$emu0000"
        ));
        assert!(!content_id_well_formed("not-a-content-id"));
        assert!(!content_id_well_formed("a$b$c$d%20"));
    }
}
