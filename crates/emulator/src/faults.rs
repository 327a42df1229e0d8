//! Faults injected through `/_emulator/faults`: error rates, latency, failing or hanging webhooks,
//! foreign content URIs and redirects. Plain data, below the shared state that holds it.

use serde::{Deserialize, Serialize};

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
    /// The next N Logs Ingestion uploads are refused with `ingestion_fail_status` (after the
    /// token, rule, stream and body checks), then uploads are judged normally again.
    #[serde(default)]
    pub ingestion_fail_next: u32,
    /// 413, 429 (the default), 500 or 503; 429 and 503 carry `Retry-After`.
    #[serde(default = "too_many")]
    pub ingestion_fail_status: u16,
    /// Seconds in the `Retry-After` of injected 429/503 answers (default 1).
    #[serde(default = "one")]
    pub ingestion_retry_after: u64,
    /// Seconds a `subscriptions/start` must wait after the last accepted start of the same tenant
    /// and content type: Microsoft's 15 minutes (900) by default; 0 lifts the rule.
    #[serde(default = "start_wait")]
    pub subscription_start_wait_secs: u64,
    /// The next N blobs published (publish or generate) are stored, served and found by the
    /// Audit Log Query API, but never listed by `subscriptions/content` nor announced to a
    /// webhook: content Microsoft's Management API lost (what `verify` exists to find).
    #[serde(default)]
    pub unlist_next: u32,
}

fn too_many() -> u16 {
    429
}

fn one() -> u64 {
    1
}

fn found() -> u16 {
    302
}

/// Microsoft's documented waiting period between two start requests of one subscription.
pub(crate) const START_WAIT_SECS: u64 = 15 * 60;

fn start_wait() -> u64 {
    START_WAIT_SECS
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
            ingestion_fail_next: 0,
            ingestion_fail_status: too_many(),
            ingestion_retry_after: one(),
            subscription_start_wait_secs: START_WAIT_SECS,
            unlist_next: 0,
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
    pub ingestion_fail_next: Option<u32>,
    pub ingestion_fail_status: Option<u16>,
    pub ingestion_retry_after: Option<u64>,
    pub subscription_start_wait_secs: Option<u64>,
    pub unlist_next: Option<u32>,
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
        if let Some(v) = p.ingestion_fail_next {
            self.ingestion_fail_next = v;
        }
        if let Some(v) = p
            .ingestion_fail_status
            .filter(|v| matches!(v, 413 | 429 | 500 | 503))
        {
            self.ingestion_fail_status = v;
        }
        if let Some(v) = p.ingestion_retry_after {
            self.ingestion_retry_after = v;
        }
        if let Some(v) = p.subscription_start_wait_secs {
            self.subscription_start_wait_secs = v;
        }
        if let Some(v) = p.unlist_next {
            self.unlist_next = v;
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
