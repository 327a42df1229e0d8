//! The Microsoft Graph client of one tenant: the only code that attaches a Graph token, and only to
//! URLs on the configured Graph host under the feed's own collection ([`GraphUrl`]). It shares the
//! outbound HTTP client (no redirects) and the call slots with the Management API clients, and
//! has its own token (scope: the Graph host of the tenant's cloud).
//!
//! Throttling is Microsoft's per tenant: the identity reports (sign-ins and directory audits
//! together) 5 requests / 10 s, message trace 100 / 5 min. Each group has its own budget here;
//! a 429 pauses only the feed it answered (its `Retry-After`), never another feed or tenant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::GraphFeed;
use crate::config::tenant::TenantConfig;
use crate::mgmt_api::auth::{TokenSource, without_query};
use crate::mgmt_api::throttle::{self, RequestBudget};
use crate::mgmt_api::uri::UriError;
use crate::mgmt_api::{ApiError, MAX_CALLS_IN_FLIGHT, call_slot, http_error};
use crate::telemetry::Counters;

/// Requests per minute a feed without a documented limit (service health) allows itself.
const UNDOCUMENTED_PER_MINUTE: u32 = 60;

/// A URL on the Graph host under one feed's collection: the only kind that gets a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphUrl(String);

impl GraphUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a collection.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<Map<String, Value>>,
    /// `@odata.nextLink`, unchecked (see [`GraphClient::next_url`]).
    pub next: Option<String>,
}

#[derive(serde::Deserialize)]
struct WirePage {
    #[serde(default)]
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink", default)]
    next: Option<String>,
}

/// Which rate a feed draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    IdentityReports,
    MessageTrace,
    ServiceHealth,
}

fn group(feed: GraphFeed) -> Group {
    match feed {
        GraphFeed::SignIns | GraphFeed::DirectoryAudits => Group::IdentityReports,
        GraphFeed::MessageTrace => Group::MessageTrace,
        GraphFeed::ServiceHealth => Group::ServiceHealth,
    }
}

pub struct GraphClient {
    http: reqwest::Client,
    tokens: TokenSource,
    /// `https://host[:port]` of Graph.
    origin: String,
    rates: HashMap<Group, RequestBudget>,
    /// Per feed, only for the pause a 429 imposes.
    pauses: HashMap<GraphFeed, RequestBudget>,
    slots: Option<Arc<tokio::sync::Semaphore>>,
    counters: Option<Arc<Counters>>,
    tenant_id: String,
    /// The Audit Log Query API's own rate (undocumented: [`UNDOCUMENTED_PER_MINUTE`]) and 429 pause.
    audit_rate: RequestBudget,
    audit_pause: RequestBudget,
}

/// The Audit Log Query API's collection (Purview's audit search), under `/v1.0/`.
pub const AUDIT_QUERIES: &str = "security/auditLog/queries";

impl GraphClient {
    pub fn new(http: reqwest::Client, tenant: &TenantConfig) -> Result<Self, UriError> {
        let url = reqwest::Url::parse(&tenant.graph.host).map_err(|_| UriError::Malformed)?;
        if url.host_str().is_none() {
            return Err(UriError::Malformed);
        }
        let origin = url.origin().ascii_serialization();
        let tokens = TokenSource::new(
            http.clone(),
            &tenant.authority,
            &tenant.tenant_id,
            &tenant.client_id,
            tenant.credential.clone(),
            &origin,
        );
        let mut rates = HashMap::new();
        let scale = tenant.graph.limit_scale.max(1);
        for feed in GraphFeed::ALL {
            rates
                .entry(group(feed))
                .or_insert_with(|| match feed.request_limit() {
                    Some((n, period)) => within(n.saturating_mul(scale), period),
                    None => {
                        RequestBudget::per_minute(UNDOCUMENTED_PER_MINUTE.saturating_mul(scale))
                    }
                });
        }
        let pauses = GraphFeed::ALL
            .into_iter()
            .map(|f| (f, RequestBudget::per_minute(u32::MAX)))
            .collect();
        Ok(GraphClient {
            http,
            tokens,
            origin,
            rates,
            pauses,
            slots: None,
            counters: None,
            tenant_id: tenant.tenant_id.clone(),
            audit_rate: RequestBudget::per_minute(UNDOCUMENTED_PER_MINUTE.saturating_mul(scale)),
            audit_pause: RequestBudget::per_minute(u32::MAX),
        })
    }

    /// Shares the call slots of the Management API clients ([`MAX_CALLS_IN_FLIGHT`]).
    pub fn with_call_slots(mut self, slots: Arc<tokio::sync::Semaphore>) -> Self {
        debug_assert!(slots.available_permits() <= MAX_CALLS_IN_FLIGHT);
        self.slots = Some(slots);
        self
    }

    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.tokens = self.tokens.with_counters(counters.clone());
        self.counters = Some(counters);
        self
    }

    /// How much longer a 429 holds this feed, if at all.
    pub fn throttled_for(&self, feed: GraphFeed) -> Option<Duration> {
        self.pauses.get(&feed).and_then(RequestBudget::paused_for)
    }

    /// The first page's URL: `{graph}/v1.0/{path}?$filter=…[&$top=…]`.
    pub fn first_url(&self, feed: GraphFeed, path: &str, filter: &str) -> GraphUrl {
        let mut url = format!(
            "{}/v1.0/{path}?$filter={}",
            self.origin,
            urlencoding(filter)
        );
        if let Some(top) = feed.top() {
            url.push_str(&format!("&$top={top}"));
        }
        GraphUrl(url)
    }

    /// Accepts an `@odata.nextLink` only on the Graph host (same scheme, host and port) and under
    /// the same collection `path`, without credentials or a fragment: the token never leaves.
    pub fn next_url(&self, path: &str, next: &str) -> Result<GraphUrl, UriError> {
        let url = reqwest::Url::parse(next).map_err(|_| UriError::Malformed)?;
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(UriError::Suspicious);
        }
        if url.origin().ascii_serialization() != self.origin {
            return Err(UriError::ForeignHost);
        }
        let lower = url.path().to_ascii_lowercase();
        if lower.contains("%2e") || lower.contains("%2f") || lower.contains("..") {
            return Err(UriError::Suspicious);
        }
        let want = format!("/v1.0/{path}");
        if !url.path().eq_ignore_ascii_case(&want) {
            return Err(UriError::ForeignPath);
        }
        Ok(GraphUrl(url.to_string()))
    }

    /// `{graph}/v1.0/security/auditLog/queries[/{query}[/records]]`: `query` must be an id Graph
    /// gave (letters, digits, `-`), so it cannot leave the collection.
    pub fn audit_url(&self, query: Option<&str>, records: bool) -> Result<GraphUrl, UriError> {
        let mut url = format!("{}/v1.0/{AUDIT_QUERIES}", self.origin);
        if let Some(id) = query {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(UriError::Suspicious);
            }
            url.push('/');
            url.push_str(id);
            if records {
                url.push_str("/records");
            }
        }
        Ok(GraphUrl(url))
    }

    /// How much longer a 429 holds the audit search of this tenant, if at all.
    pub fn audit_throttled_for(&self) -> Option<Duration> {
        self.audit_pause.paused_for()
    }

    /// One call of the Audit Log Query API: POST `body` (create a query) or GET. Waits for the
    /// audit search's budget and any 429 pause first (see [`GraphClient::send`]).
    pub async fn audit_call(
        &self,
        url: &GraphUrl,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let bytes = self
            .send(&self.audit_pause, Some(&self.audit_rate), |token| {
                match body {
                    Some(b) => self.http.post(url.as_str()).json(b),
                    None => self.http.get(url.as_str()),
                }
                .bearer_auth(token)
            })
            .await
            .inspect_err(|e| {
                if let Some(pause) = throttled(e) {
                    tracing::warn!(tenant.id = %self.tenant_id, pause_secs = pause.as_secs(),
                        "audit search throttled by Microsoft Graph (429); waiting for its Retry-After");
                }
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// GETs one page of a feed. Waits for the feed's budget and any 429 pause first (see
    /// [`GraphClient::send`]).
    pub async fn page(&self, feed: GraphFeed, url: &GraphUrl) -> Result<Page, ApiError> {
        let Some(pause) = self.pauses.get(&feed) else {
            return Err(ApiError::Decode(format!("feed {feed} is not collected")));
        };
        let bytes = self
            .send(pause, self.rates.get(&group(feed)), |token| {
                let req = self.http.get(url.as_str()).bearer_auth(token);
                match feed.top() {
                    Some(_) => req,
                    None => req.header("Prefer", "odata.maxpagesize=1000"),
                }
            })
            .await
            .inspect_err(|e| {
                if let Some(pause) = throttled(e) {
                    tracing::warn!(tenant.id = %self.tenant_id, graph.feed = %feed, pause_secs = pause.as_secs(),
                        "throttled by Microsoft Graph (429); holding this feed of this tenant");
                }
            })?;
        let page: WirePage =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(e.to_string()))?;
        let records = page
            .value
            .into_iter()
            .filter_map(|v| match v {
                Value::Object(o) => Some(o),
                _ => None,
            })
            .collect();
        Ok(Page {
            records,
            next: page.next.filter(|n| !n.is_empty()),
        })
    }

    /// One request with the tenant's Graph token, the body of a 2xx answer returned. Waits for
    /// `pause` (a 429's hold) and `rate` (the budget) first; a 401 refreshes the token once; a 401
    /// or 403 drops the cached token (a newly granted permission comes with the next one); a 429
    /// holds `pause` for its `Retry-After` and is returned.
    async fn send(
        &self,
        pause: &RequestBudget,
        rate: Option<&RequestBudget>,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, ApiError> {
        let mut refreshed = false;
        loop {
            pause.acquire().await;
            if let Some(r) = rate {
                r.acquire().await;
            }
            let _slot = call_slot(self.slots.as_ref()).await?;
            let token = self.tokens.token().await?;
            let resp = request(token.expose())
                .send()
                .await
                .map_err(|e| ApiError::Transport(without_query(&e)))?;
            let status = resp.status().as_u16();
            if status == 401 && !refreshed {
                self.tokens.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| ApiError::Transport(without_query(&e)))?;
            if (200..300).contains(&status) {
                return Ok(body);
            }
            if status == 403 || status == 401 {
                self.tokens.invalidate(&token).await;
            }
            let error = http_error(status, &headers, &body);
            if status == 429 {
                pause.pause(
                    error
                        .retry_after()
                        .unwrap_or(throttle::DEFAULT_THROTTLE_PAUSE),
                );
                if let Some(c) = &self.counters {
                    Counters::add(&c.throttled, 1);
                }
            }
            return Err(error);
        }
    }
}

/// The hold a 429 put on further calls (its `Retry-After`, else the default), for the log line.
fn throttled(e: &ApiError) -> Option<Duration> {
    match e {
        ApiError::Http { status: 429, .. } => {
            Some(e.retry_after().unwrap_or(throttle::DEFAULT_THROTTLE_PAUSE))
        }
        _ => None,
    }
}

/// A budget that never sends more than `n` requests in any `period` (Microsoft counts in a sliding
/// window): a limiter with burst `b` and interval `T` allows at most `b + period / T` in one, so
/// half the quota goes out at once and the other half spread over the period.
fn within(n: u32, period: Duration) -> RequestBudget {
    let burst = (n / 2).max(1);
    RequestBudget::new(n.saturating_sub(burst).max(1), period, burst)
}

/// Percent-encodes a query value (OData `$filter` text: spaces, colons, quotes).
fn urlencoding(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tenant::Credential;
    use crate::core::Secret;
    use crate::graph::feed::GraphConfig;

    fn client() -> GraphClient {
        let tenant = TenantConfig {
            tenant_id: "t".into(),
            tenant_name: None,
            client_id: "c".into(),
            credential: Credential::Secret(Secret::new("s".to_string())),
            resource: "https://127.0.0.1:9".into(),
            authority: "https://127.0.0.1:9".into(),
            publisher_id: "t".into(),
            content_types: vec![],
            output: "o".into(),
            encoding: encoding_rs::UTF_8,
            format: crate::mapping::Format::O365,
            request_budget: Default::default(),
            graph: GraphConfig {
                feeds: vec![GraphFeed::SignIns],
                host: "https://graph.example:8443".into(),
                backfill: Duration::from_secs(60),
                limit_scale: 1,
            },
        };
        GraphClient::new(reqwest::Client::new(), &tenant).unwrap()
    }

    #[test]
    fn first_url_encodes_the_filter() {
        let c = client();
        let u = c.first_url(
            GraphFeed::SignIns,
            "auditLogs/signIns",
            "createdDateTime ge 2026-11-30T09:00:00Z",
        );
        assert_eq!(
            u.as_str(),
            "https://graph.example:8443/v1.0/auditLogs/signIns?$filter=createdDateTime%20ge%202026-11-30T09%3A00%3A00Z&$top=1000"
        );
    }

    #[test]
    fn next_links_stay_on_the_host_and_collection() {
        let c = client();
        let p = "auditLogs/signIns";
        assert!(
            c.next_url(
                p,
                "https://graph.example:8443/v1.0/auditLogs/signIns?$skiptoken=x"
            )
            .is_ok()
        );
        for (bad, why) in [
            (
                "https://evil.example/v1.0/auditLogs/signIns?$skiptoken=x",
                UriError::ForeignHost,
            ),
            (
                "https://graph.example:8444/v1.0/auditLogs/signIns",
                UriError::ForeignHost,
            ),
            (
                "http://graph.example:8443/v1.0/auditLogs/signIns",
                UriError::ForeignHost,
            ),
            (
                "https://graph.example:8443/v1.0/users",
                UriError::ForeignPath,
            ),
            (
                "https://u:p@graph.example:8443/v1.0/auditLogs/signIns",
                UriError::Suspicious,
            ),
            ("not a url", UriError::Malformed),
        ] {
            assert_eq!(c.next_url(p, bad), Err(why), "{bad}");
        }
    }
}
