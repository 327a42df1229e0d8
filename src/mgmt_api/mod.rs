//! The Management Activity API client: the ONLY code that attaches a bearer token, and only to URLs
//! built from or checked against the configured resource ([`uri::ResourceBase`]).

pub mod assertion;
pub mod auth;
pub mod cloud;
pub mod credential;
pub mod throttle;
pub mod uri;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::tenant::TenantConfig;
use crate::core::Secret;
use crate::core::settings::{Section, de};
use crate::telemetry::Counters;
use auth::{AuthError, TokenSource, without_query};
use throttle::RequestBudget;
use uri::{ApiUri, ResourceBase, UriError};
use wire::{ApiErrorBody, ContentNotice, StartBody, Subscription, WebhookSpec};

/// Calls to Microsoft in flight at once across all tenants (see [`ManagementClient::with_call_slots`]).
pub const MAX_CALLS_IN_FLIGHT: usize = 32;

/// How long a content download may take in all. A blob is read as fast as the output accepts
/// its records, so this is far longer than the client's timeout for other calls; a download cut
/// by it resumes after the records already delivered.
pub const CONTENT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the next piece of a content answer may keep us waiting once we asked for it.
pub const CONTENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The API answered with an error status (body `{"error":{"code","message"}}` when Microsoft sent one).
    #[error("HTTP {status} {code}: {message}")]
    Http {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("refused URL: {0}")]
    Uri(#[from] UriError),
    #[error("unreadable answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// Worth trying again later (network, 5xx, 429, token endpoint down).
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Auth(a) => a.is_retryable(),
            ApiError::Http { status, code, .. } => {
                *status == 429 || *status >= 500 || *status == 401 || code == "AF50000"
            }
            ApiError::Transport(_) => true,
            ApiError::Uri(_) | ApiError::Decode(_) => false,
        }
    }

    /// What Microsoft asked us to wait (429 Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Microsoft's AF code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Http { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    /// What to check, for an error whose message does not say it: AF20021 at subscription start
    /// means Microsoft's validation POST to our webhook got no 200, most often because it could
    /// not reach the address or did not trust its certificate.
    pub fn hint(&self) -> Option<&'static str> {
        match self.code() {
            Some("AF20021") => Some(WEBHOOK_VALIDATION_HINT),
            _ => None,
        }
    }
}

/// The hint for AF20021 (the webhook could not be validated).
pub const WEBHOOK_VALIDATION_HINT: &str = "Microsoft could not validate the webhook: check that \
     webhook.address is reachable from outside (DNS, firewall, Ingress or proxy routing to \
     listen.public) and that the certificate it serves chains to a public root (against the \
     emulator: start it with --webhook-ca-file pointing at the CA of tls.cert); a validation call \
     that reached the collector is logged as answered";

/// `outbound:`: how the collector reaches Microsoft (and the emulator).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Extra trust root (PEM) for Microsoft / the emulator / a TLS-inspecting proxy.
    #[serde(deserialize_with = "de::opt::path")]
    pub ca_file: Option<std::path::PathBuf>,
    /// `http(s)://host:port` of an egress proxy; may carry credentials, so never echoed.
    #[serde(deserialize_with = "de::opt::text")]
    pub proxy: Option<String>,
}

impl OutboundConfig {
    pub fn check(&mut self, s: &mut Section) {
        if let Some(ca) = &self.ca_file {
            s.pem_certificates("ca_file", ca);
        }
        if let Some(proxy) = &mut self.proxy {
            *proxy = proxy.trim().to_owned();
            let fix = "write the proxy as http://host:port (or https://host:port)";
            match reqwest::Url::parse(proxy) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                Ok(u) => s.problem(
                    "proxy",
                    format!(
                        "uses the scheme `{}` or has no host; only http and https proxies are supported",
                        u.scheme()
                    ),
                    fix,
                ),
                Err(e) => s.problem("proxy", format!("is not a valid URL ({e})"), fix),
            }
        }
    }
}

/// Builds the one outbound HTTP client: no redirects (a redirect could carry the token elsewhere),
/// timeouts, the extra trust root and the egress proxy from `outbound`. A replica of a shared
/// store names itself in the user agent, so calls can be told apart by replica on the far side.
pub fn http_client(
    outbound: &OutboundConfig,
    replica: Option<&str>,
) -> Result<reqwest::Client, String> {
    const AGENT: &str = concat!("o365-collector/", env!("CARGO_PKG_VERSION"));
    let agent = match replica {
        Some(r) => format!("{AGENT} replica/{r}"),
        None => AGENT.to_owned(),
    };
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .user_agent(agent);
    if let Some(ca) = &outbound.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("outbound.ca_file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "outbound.ca_file {}: not PEM certificates: {e}",
                ca.display()
            )
        })?;
        b = b.tls_certs_merge(certs);
    }
    if let Some(p) = &outbound.proxy {
        let proxy = reqwest::Proxy::all(p).map_err(|e| format!("outbound.proxy: {e}"))?;
        b = b.proxy(proxy);
    }
    // Idle connections kept: at most one per call slot (HTTP/2 needs one, HTTP/1.1 one per call).
    b.pool_max_idle_per_host(MAX_CALLS_IN_FLIGHT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {}", without_query(&e)))
}

/// One tenant's view of the API.
pub struct ManagementClient {
    http: reqwest::Client,
    tokens: TokenSource,
    base: ResourceBase,
    publisher_id: String,
    /// This tenant's own request budget and 429 pause: throttling never crosses tenants.
    budget: RequestBudget,
    /// Shared by every tenant's client: bounds connections, TLS sessions and buffers in use
    /// whatever the number of tenants (a thousand listing at once would otherwise open a
    /// connection each). `None`: no bound (tests).
    slots: Option<Arc<tokio::sync::Semaphore>>,
    counters: Option<Arc<Counters>>,
}

impl ManagementClient {
    pub fn new(http: reqwest::Client, tenant: &TenantConfig) -> Result<Self, UriError> {
        let base = ResourceBase::new(&tenant.resource, &tenant.tenant_id)?;
        let tokens = TokenSource::new(
            http.clone(),
            &tenant.authority,
            &tenant.tenant_id,
            &tenant.client_id,
            tenant.credential.clone(),
            &tenant.resource,
        );
        Ok(ManagementClient {
            http,
            tokens,
            base,
            publisher_id: tenant.publisher_id.clone(),
            budget: RequestBudget::new(
                tenant.request_budget.per_minute,
                Duration::from_secs(60),
                tenant.request_budget.burst,
            ),
            slots: None,
            counters: None,
        })
    }

    /// Replaces the default budget ([`throttle::DEFAULT_REQUESTS_PER_MINUTE`]) of this tenant
    /// (tests; the product takes the budget from the tenant's configuration).
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_request_budget(mut self, per_minute: u32) -> Self {
        self.budget = RequestBudget::per_minute(per_minute);
        self
    }

    /// Shares `slots` (e.g. [`MAX_CALLS_IN_FLIGHT`] permits) with the other tenants' clients: a
    /// call (its token request included) holds one from sending to the end of its body.
    pub fn with_call_slots(mut self, slots: Arc<tokio::sync::Semaphore>) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Counts 429 answers in `Counters::throttled` and token fetches in `token_refreshes`.
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.tokens = self.tokens.with_counters(counters.clone());
        self.counters = Some(counters);
        self
    }

    /// How much longer this tenant is held by a 429 `Retry-After`, if at all.
    pub fn throttled_for(&self) -> Option<Duration> {
        self.budget.paused_for()
    }

    pub fn base(&self) -> &ResourceBase {
        &self.base
    }

    /// GET a content blob (the JSON array of records). Returns once the answer's status and
    /// headers are in; the body is then read piece by piece from [`ContentBody`], never whole.
    pub async fn fetch_content(&self, uri: &ApiUri) -> Result<ContentBody, ApiError> {
        let (resp, slot) = self
            .send(
                reqwest::Method::GET,
                uri.as_str(),
                None,
                Some(CONTENT_TIMEOUT),
            )
            .await?;
        Ok(ContentBody { resp, _slot: slot })
    }

    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, ApiError> {
        let url = self.base.operation("subscriptions/list");
        let (_, body) = self.call(reqwest::Method::GET, &url, None).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// `subscriptions/start`, with a webhook when `webhook` is `(address, auth_id)`.
    pub async fn start_subscription(
        &self,
        content_type: &str,
        webhook: Option<(&str, &Secret)>,
    ) -> Result<Subscription, ApiError> {
        let url = format!(
            "{}?contentType={}",
            self.base.operation("subscriptions/start"),
            content_type
        );
        let body = webhook.map(|(address, auth_id)| {
            serde_json::to_vec(&StartBody {
                webhook: WebhookSpec {
                    address,
                    auth_id: auth_id.expose(),
                    expiration: None,
                },
            })
            .unwrap_or_default()
        });
        let (_, body) = self.call(reqwest::Method::POST, &url, body).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// `subscriptions/stop`: the subscription (and its webhook) ends.
    pub async fn stop_subscription(&self, content_type: &str) -> Result<(), ApiError> {
        let url = format!(
            "{}?contentType={}",
            self.base.operation("subscriptions/stop"),
            content_type
        );
        self.call(reqwest::Method::POST, &url, None)
            .await
            .map(|_| ())
    }

    /// One page of `subscriptions/content`; the second value is the checked `NextPageUri`.
    pub async fn list_content(
        &self,
        content_type: &str,
        start: &str,
        end: &str,
    ) -> Result<(Vec<ContentNotice>, Option<ApiUri>), ApiError> {
        let url = format!(
            "{}?contentType={content_type}&startTime={start}&endTime={end}",
            self.base.operation("subscriptions/content")
        );
        self.content_page(&url).await
    }

    /// Follows a `NextPageUri` returned by [`Self::list_content`].
    pub async fn list_content_next(
        &self,
        next: &ApiUri,
    ) -> Result<(Vec<ContentNotice>, Option<ApiUri>), ApiError> {
        self.content_page(next.as_str()).await
    }

    async fn content_page(
        &self,
        url: &str,
    ) -> Result<(Vec<ContentNotice>, Option<ApiUri>), ApiError> {
        let (headers, body) = self.call(reqwest::Method::GET, url, None).await?;
        let items = serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let next = match headers.get("NextPageUri").and_then(|v| v.to_str().ok()) {
            Some(v) if !v.is_empty() => Some(self.base.next_page_uri(v)?),
            _ => None,
        };
        Ok((items, next))
    }

    /// [`Self::send`] and the whole (small) answer body.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(HeaderMap, Bytes), ApiError> {
        // The call slot is held until the body is read.
        let (resp, _slot) = self.send(method, url, body, None).await?;
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Transport(without_query(&e)))?;
        Ok((headers, bytes))
    }

    /// One request with the bearer token and `PublisherIdentifier`; a 401 refreshes the token once.
    /// Every request first waits for this tenant's budget; a 429 pauses the tenant for its
    /// `Retry-After` (all its calls wait) and is returned for the caller to reschedule. Returns a
    /// successful answer with its body unread; `timeout` replaces the client's for this request.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<(reqwest::Response, Option<tokio::sync::OwnedSemaphorePermit>), ApiError> {
        let mut refreshed = false;
        loop {
            self.budget.acquire().await;
            let slot = call_slot(self.slots.as_ref()).await?;
            let token = self.tokens.token().await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .query(&[("PublisherIdentifier", self.publisher_id.as_str())])
                .bearer_auth(token.expose());
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| ApiError::Transport(without_query(&e)))?;
            let status = resp.status();
            if status.as_u16() == 401 && !refreshed {
                self.tokens.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            if status.is_success() {
                return Ok((resp, slot));
            }
            let headers = resp.headers().clone();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ApiError::Transport(without_query(&e)))?;
            let error = http_error(status.as_u16(), &headers, &bytes);
            // A refused `subscriptions/start` is Microsoft's 15-minute rule for one subscription,
            // not the tenant's quota: the subscription keeper waits for it (in the store, shared
            // by replicas) while listing goes on, so it must not hold the tenant's other calls.
            if status.as_u16() == 429 && !url.contains("/subscriptions/start") {
                let retry_after = error.retry_after();
                let pause = retry_after.unwrap_or(throttle::DEFAULT_THROTTLE_PAUSE);
                self.budget.pause(pause);
                if let Some(c) = &self.counters {
                    Counters::add(&c.throttled, 1);
                }
                // Logged by the tenant's health (`pipeline::health`) when it starts and ends.
                tracing::debug!(
                    tenant = %self.base.tenant_id(),
                    pause_secs = pause.as_secs(),
                    "throttled by the Management Activity API (429); holding this tenant's calls"
                );
            }
            return Err(error);
        }
    }
}

/// Takes one of the call slots shared by every client (`None`: no bound).
pub(crate) async fn call_slot(
    slots: Option<&Arc<tokio::sync::Semaphore>>,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ApiError> {
    match slots {
        Some(s) => Arc::clone(s)
            .acquire_owned()
            .await
            .map(Some)
            .map_err(|_| ApiError::Transport("shutting down: no more calls".into())),
        None => Ok(None),
    }
}

/// The error of a failed answer: its status, Microsoft's `{"error": {"code", "message"}}` (or the
/// start of the body) and its `Retry-After`.
pub(crate) fn http_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| throttle::parse_retry_after(v, SystemTime::now()));
    let (code, message) = match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    };
    ApiError::Http {
        status,
        code,
        message,
        retry_after,
    }
}

/// The body of a content answer, read as it arrives.
pub struct ContentBody {
    resp: reqwest::Response,
    /// The shared call slot, held while the blob streams (it is a call in flight).
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ContentBody {
    /// The next piece of the body; `None` at its end. A broken or stalled connection is a
    /// `Transport` error (the records delivered so far stay delivered).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        match tokio::time::timeout(CONTENT_IDLE_TIMEOUT, self.resp.chunk()).await {
            Ok(r) => r.map_err(|e| ApiError::Transport(without_query(&e))),
            Err(_) => Err(ApiError::Transport(format!(
                "no data for {}s while reading a blob",
                CONTENT_IDLE_TIMEOUT.as_secs()
            ))),
        }
    }
}
