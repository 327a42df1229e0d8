//! Microsoft Sentinel through Azure Monitor's Logs Ingestion API (`type: sentinel`): each batch
//! POSTed to `{endpoint}/dataCollectionRules/{dcr_immutable_id}/streams/{stream}?api-version=2023-01-01`
//! as gzip'd JSON arrays, with an Entra ID token for `{audience}/.default`.
//!
//! Facts (Microsoft Learn: "Logs Ingestion API in Azure Monitor", "Azure Monitor service limits",
//! the REST reference "Logs Ingestion - Upload"; the azure-monitor-ingestion SDK):
//! - an API call carries at most 1 MB, compressed and uncompressed; the SDK cuts its uploads at
//!   1 MiB of JSON and gzips each, and so do we: every body is a JSON array of at most
//!   [`MAX_CALL_BYTES`] before gzip. A 413 all the same (a limit lowered on Microsoft's side)
//!   splits that request in halves and sends them again;
//! - 204 is the only success, and means the data was accepted (as durable as the destination
//!   gets: the same contract as the other outputs);
//! - 429 and 503 carry `Retry-After`: we wait that long and send the same request again;
//! - 401 and 403 are `Fatal` with Microsoft's reason (`OperationFailed`: the app lacks the
//!   "Monitoring Metrics Publisher" role on the DCR); a 401 first drops the cached token and tries
//!   once more with a fresh one;
//! - tokens: Entra ID's v2 endpoint, `scope={audience}/.default`; audience per cloud
//!   `https://monitor.azure.com`, `https://monitor.azure.us` (US Government),
//!   `https://monitor.azure.cn` (China), each with its login host.
//!
//! Each record goes out as `{"Event": <the mapped event>}`: the event's keys hold dots
//! (`o365.audit.Operation`), which a DCR stream cannot declare as columns, so the stream declares one
//! dynamic column `Event` and the DCR's transformation picks the table's columns out of it
//! (`deploy/sentinel/`). Delivery is at least once: a batch that fails part-way (or a crash) is sent
//! again from its start, and Log Analytics keeps both copies; deduplicate on `Id` in KQL.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use super::template::Template;
use super::{Batch, Event, Output, OutputError, SendReport};
use crate::core::Secret;
use crate::core::settings::{Section, de};
use crate::mgmt_api::auth::{AuthError, TokenSource};
use crate::mgmt_api::credential::{self, CertificateKeys, Credential, is_guid};

/// Largest body of one API call before gzip ("Maximum size of API call: 1 MB"; the SDK's
/// `MAX_CHUNK_SIZE_BYTES` is 1024 × 1024).
pub const MAX_CALL_BYTES: usize = 1024 * 1024;
/// The api-version of the Logs Ingestion API's stable release.
pub const API_VERSION: &str = "2023-01-01";
/// The global cloud's Azure Monitor audience.
pub const DEFAULT_AUDIENCE: &str = "https://monitor.azure.com";
/// The stream of the table `deploy/sentinel/` creates.
pub const DEFAULT_STREAM: &str = "Custom-O365Audit_CL";
/// Tries of one request that Microsoft throttles (429/503) before the batch is given back as
/// `Retryable` (the pipeline then pauses the output and sends it again later).
const THROTTLED_TRIES: u32 = 8;
/// Longest `Retry-After` honoured as given; longer ones are waited out by the pipeline's pause.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Azure Monitor's audience and login host per cloud.
const CLOUDS: [(&str, &str); 3] = [
    (
        "https://monitor.azure.com",
        "https://login.microsoftonline.com",
    ),
    (
        "https://monitor.azure.us",
        "https://login.microsoftonline.us",
    ),
    ("https://monitor.azure.cn", "https://login.chinacloudapi.cn"),
];

/// `type: sentinel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelOutputConfig {
    /// The data collection endpoint's logs ingestion URL (or the DCR's own logs ingestion endpoint).
    #[serde(deserialize_with = "de::text")]
    pub endpoint: String,
    /// `dcr-` and 32 hex digits: the DCR's immutable id (its JSON view, `immutableId`).
    #[serde(deserialize_with = "de::text")]
    pub dcr_immutable_id: String,
    /// The DCR's input stream (a [`Template`], e.g. `Custom-O365_{content_type}`); characters
    /// other than letters, digits, `_` and `-` become `_`.
    pub stream: Template,
    /// The app registration that holds "Monitoring Metrics Publisher" on the DCR.
    #[serde(deserialize_with = "de::text")]
    pub tenant_id: String,
    #[serde(deserialize_with = "de::text")]
    pub client_id: String,
    pub client_secret: Option<Secret>,
    #[serde(deserialize_with = "de::opt::path")]
    pub client_secret_file: Option<PathBuf>,
    pub client_certificate: Option<CertificateKeys>,
    /// Workload identity federation: the projected service account token
    /// (`AZURE_FEDERATED_TOKEN_FILE` on AKS).
    #[serde(deserialize_with = "de::opt::path")]
    pub federated_token_file: Option<PathBuf>,
    /// Login host; derived from `audience` unless set.
    #[serde(deserialize_with = "de::opt::text")]
    pub authority: Option<String>,
    /// `https://monitor.azure.com` (default), `https://monitor.azure.us` or `https://monitor.azure.cn`.
    #[serde(deserialize_with = "de::text")]
    pub audience: String,
    /// Extra trust root (PEM), e.g. an emulator's CA or a TLS-inspecting proxy's.
    #[serde(deserialize_with = "de::opt::path")]
    pub ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "de::duration")]
    pub timeout: Duration,
    /// What the credential keys above resolve to ([`SentinelOutputConfig::check`]).
    #[serde(skip)]
    pub credential: Option<Credential>,
}

impl Default for SentinelOutputConfig {
    fn default() -> Self {
        SentinelOutputConfig {
            endpoint: String::new(),
            dcr_immutable_id: String::new(),
            stream: Template::parse(DEFAULT_STREAM).unwrap_or_else(|_| unreachable!()),
            tenant_id: String::new(),
            client_id: String::new(),
            client_secret: None,
            client_secret_file: None,
            client_certificate: None,
            federated_token_file: None,
            authority: None,
            audience: DEFAULT_AUDIENCE.to_owned(),
            ca_file: None,
            timeout: super::DEFAULT_TIMEOUT,
            credential: None,
        }
    }
}

/// A stream name as the DCR declares it: `Custom-` (or `Microsoft-`) and letters, digits, `_`, `-`.
pub fn stream_ok(name: &str) -> bool {
    let rest = name
        .strip_prefix("Custom-")
        .or_else(|| name.strip_prefix("Microsoft-"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.len() <= 250
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// A rendered stream template with characters a stream name cannot hold replaced by `_`
/// (`{content_type}` gives `Audit.Exchange`).
fn stream_name(rendered: &str) -> String {
    let (prefix, rest) = rendered.split_once('-').unwrap_or(("", rendered));
    let clean: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if prefix.is_empty() {
        clean
    } else {
        format!("{prefix}-{clean}")
    }
}

impl SentinelOutputConfig {
    /// Checks the meaning of the settings and resolves [`SentinelOutputConfig::credential`].
    pub fn check(&mut self, s: &mut Section) {
        let fix = "set the data collection endpoint's logs ingestion URL, e.g. `endpoint: https://my-dce-a1b2.eastus-1.ingest.monitor.azure.com` (Azure portal → Monitor → Data collection endpoints → Overview)";
        if !s.given("endpoint") {
            s.missing("endpoint", fix);
        } else if s.usable("endpoint") {
            match s.https_url("endpoint", &self.endpoint, fix) {
                Some(u) if u.query().is_some() => {
                    s.problem("endpoint", "has a query (`?…`)", fix);
                }
                Some(u) => self.endpoint = u.as_str().trim_end_matches('/').to_owned(),
                None => {}
            }
        }
        let dcr_fix = "copy the DCR's immutableId (`dcr-` and 32 hex digits: Azure portal → Monitor → Data collection rules → your rule → JSON view)";
        self.dcr_immutable_id = self.dcr_immutable_id.trim().to_owned();
        if !s.given("dcr_immutable_id") {
            s.missing("dcr_immutable_id", dcr_fix);
        } else if s.usable("dcr_immutable_id") && !dcr_id_ok(&self.dcr_immutable_id) {
            s.problem(
                "dcr_immutable_id",
                "is not a DCR immutable id (`dcr-` and 32 hex digits)",
                dcr_fix,
            );
        }
        let sample = stream_name(&self.stream.sample());
        if !stream_ok(&sample) {
            s.problem(
                "stream",
                format!("gives `{sample}`, which is not a DCR stream name"),
                format!(
                    "use `Custom-` and letters, digits or `_`, as declared in the DCR's streamDeclarations, e.g. `{DEFAULT_STREAM}`"
                ),
            );
        }
        for key in ["tenant_id", "client_id"] {
            let v = if key == "tenant_id" {
                &mut self.tenant_id
            } else {
                &mut self.client_id
            };
            *v = v.trim().to_owned();
            let fix = format!(
                "set the {} of the app registration that holds \"Monitoring Metrics Publisher\" on the DCR (a GUID)",
                if key == "tenant_id" {
                    "Directory (tenant) ID"
                } else {
                    "Application (client) ID"
                }
            );
            if !s.given(key) {
                s.missing(key, fix);
            } else if s.usable(key) && !is_guid(v) {
                s.problem(key, "is not a GUID", fix);
            }
        }
        self.audience = self.audience.trim().trim_end_matches('/').to_owned();
        let login = CLOUDS
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(&self.audience))
            .map(|(_, l)| *l);
        if login.is_none() && s.usable("audience") {
            s.problem(
                "audience",
                format!("`{}` is not an Azure Monitor audience", self.audience),
                "use https://monitor.azure.com (global), https://monitor.azure.us (US Government) or https://monitor.azure.cn (China)",
            );
        }
        self.authority = match &self.authority {
            Some(a) => Some(crate::mgmt_api::cloud::check_authority(s, a)),
            None => login.map(str::to_owned),
        };
        self.credential = self.check_credential(s);
        if let Some(p) = &self.ca_file {
            s.pem_certificates("ca_file", p);
        }
        super::check_timeout(&mut self.timeout, s);
    }

    /// Exactly one of the four credential kinds.
    fn check_credential(&self, s: &mut Section) -> Option<Credential> {
        if s.given("federated_token_file") {
            for other in ["client_secret", "client_secret_file", "client_certificate"] {
                if s.given(other) {
                    s.problem(
                        other,
                        "is set together with federated_token_file",
                        "keep exactly one of client_secret, client_secret_file, client_certificate or federated_token_file",
                    );
                    return None;
                }
            }
            let path = self.federated_token_file.clone()?;
            // Read once to prove access; the token itself is read again at every sign-in.
            s.read("federated_token_file", &path)?;
            return Some(Credential::FederatedTokenFile(path));
        }
        let c = credential::resolve(
            self.client_secret.as_ref(),
            self.client_secret_file.as_deref(),
            self.client_certificate.as_ref(),
            s,
        );
        Some(c)
    }
}

fn dcr_id_ok(id: &str) -> bool {
    id.strip_prefix("dcr-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub struct SentinelOutput {
    name: String,
    base: String,
    dcr: String,
    stream: Template,
    client: reqwest::Client,
    tokens: TokenSource,
}

/// What one request's answer means.
enum Answer {
    Accepted,
    TooLarge,
    Throttled(Duration, String),
    Unauthorized(String),
    Retry(String),
    Refused(String),
}

impl SentinelOutput {
    pub fn open(name: &str, cfg: &SentinelOutputConfig) -> Result<SentinelOutput, OutputError> {
        let setup = |key, problem: String, fix: &str| OutputError::setup(name, key, problem, fix);
        let tls = super::tls::client_config(cfg.ca_file.as_deref(), None, &[b"http/1.1"]).map_err(
            |(key, e)| {
                setup(
                    key,
                    format!("cannot be used: {e}"),
                    super::tls::tls_fix(key),
                )
            },
        )?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| {
                setup(
                    "ca_file",
                    format!("cannot get an HTTP client: {e}"),
                    "check the output's ca_file",
                )
            })?;
        let credential = cfg.credential.clone().ok_or_else(|| {
            setup(
                "client_secret",
                "no credential was resolved".into(),
                "set one of client_secret, client_secret_file, client_certificate or federated_token_file",
            )
        })?;
        let authority = cfg.authority.clone().ok_or_else(|| {
            setup(
                "authority",
                "is unknown for this audience".into(),
                "set authority, e.g. https://login.microsoftonline.com",
            )
        })?;
        let tokens = TokenSource::new_v2(
            client.clone(),
            &authority,
            &cfg.tenant_id,
            &cfg.client_id,
            credential,
            &cfg.audience,
        );
        Ok(SentinelOutput {
            name: name.to_owned(),
            base: cfg.endpoint.trim_end_matches('/').to_owned(),
            dcr: cfg.dcr_immutable_id.clone(),
            stream: cfg.stream.clone(),
            client,
            tokens,
        })
    }

    fn retryable(&self, reason: String) -> OutputError {
        OutputError::Retryable {
            output: self.name.clone(),
            reason,
        }
    }

    fn fatal(&self, reason: String) -> OutputError {
        OutputError::Fatal {
            output: self.name.clone(),
            reason,
        }
    }

    /// The upload URL of a batch.
    fn url(&self, batch: &Batch) -> String {
        let stream = stream_name(&self.stream.render(&batch.fields(), chrono::Utc::now()));
        format!(
            "{}/dataCollectionRules/{}/streams/{stream}?api-version={API_VERSION}",
            self.base, self.dcr
        )
    }

    /// One request: a token, the gzip'd body, the answer classified.
    async fn post(&self, url: &str, gz: &[u8]) -> Result<Answer, OutputError> {
        let token = self.tokens.token().await.map_err(|e| match e {
            AuthError::Unavailable(_) => self.retryable(format!("no Azure Monitor token: {e}")),
            _ => self.fatal(format!("no Azure Monitor token: {e}")),
        })?;
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| self.fatal("the token cannot be sent in a header".into()))?;
        bearer.set_sensitive(true);
        let resp = match self
            .client
            .post(url)
            .header(AUTHORIZATION, bearer)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .body(gz.to_vec())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Ok(Answer::Retry(crate::mgmt_api::auth::without_query(&e)));
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.bytes().await.unwrap_or_default();
        let reason = reason_of(status, &body);
        Ok(match status.as_u16() {
            204 => Answer::Accepted,
            413 => Answer::TooLarge,
            429 | 503 => Answer::Throttled(
                retry_after
                    .unwrap_or(Duration::from_secs(1))
                    .min(MAX_RETRY_AFTER),
                reason,
            ),
            401 => {
                self.tokens.invalidate(&token).await;
                Answer::Unauthorized(reason)
            }
            408 | 500..=599 => Answer::Retry(reason),
            // Another 2xx is not Microsoft's "accepted": do not count the records as delivered.
            200..=299 => Answer::Retry(format!("{reason} (only 204 means accepted)")),
            _ => Answer::Refused(reason),
        })
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or_default())
}

/// `HTTP 403 OperationFailed: The authentication token provided does not have access …`, from
/// Azure's error body (`{"error":{"code","message"}}`), or the status alone.
fn reason_of(status: reqwest::StatusCode, body: &[u8]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let err = v.as_ref().and_then(|v| v.get("error"));
    let code = err.and_then(|e| e.get("code")).and_then(|c| c.as_str());
    let message = err.and_then(|e| e.get("message")).and_then(|c| c.as_str());
    let mut out = format!("HTTP {}", status.as_u16());
    if let Some(c) = code {
        out.push(' ');
        out.push_str(c);
    }
    if let Some(m) = message {
        out.push_str(": ");
        out.extend(m.chars().take(500));
    }
    out
}

/// The events (by position in the batch) of one request body, and that body.
pub type Part = (std::ops::Range<usize>, Vec<u8>);

/// Cuts a batch's events into JSON arrays of `{"Event": …}` of at most `max` bytes each.
/// Returns the ranges of events per body and the bodies, or the index of an event too large
/// for a call of its own.
pub fn bodies(events: &[Event], max: usize) -> Result<Vec<Part>, usize> {
    const OPEN: &[u8] = b"{\"Event\":";
    let mut out = Vec::new();
    let mut start = 0;
    let mut body: Vec<u8> = Vec::with_capacity(max.min(1 << 20));
    body.push(b'[');
    for (i, e) in events.iter().enumerate() {
        let need = OPEN.len() + e.json.len() + 1;
        if 2 + need > max {
            return Err(i);
        }
        let sep = usize::from(i > start);
        if body.len() + sep + need + 1 > max {
            body.push(b']');
            out.push((start..i, std::mem::take(&mut body)));
            body.push(b'[');
            start = i;
        }
        if i > start {
            body.push(b',');
        }
        body.extend_from_slice(OPEN);
        body.extend_from_slice(&e.json);
        body.push(b'}');
    }
    if start < events.len() {
        body.push(b']');
        out.push((start..events.len(), body));
    }
    Ok(out)
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 6 + 64),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// The JSON array of `events` (what [`bodies`] makes of them, in one piece).
fn array_of(events: &[Event]) -> Vec<u8> {
    bodies(events, usize::MAX)
        .ok()
        .and_then(|mut v| v.pop())
        .map(|(_, b)| b)
        .unwrap_or_else(|| b"[]".to_vec())
}

impl Output for SentinelOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        if batch.events.is_empty() {
            return Ok(SendReport::default());
        }
        let url = self.url(batch);
        let parts = bodies(&batch.events, MAX_CALL_BYTES).map_err(|i| {
            self.fatal(format!(
                "event {i} of content {} is larger than the {MAX_CALL_BYTES} bytes one Logs Ingestion call may carry",
                batch.content_id
            ))
        })?;
        // Requests still to send, in order: event ranges with their bodies when already made.
        let mut todo: std::collections::VecDeque<(std::ops::Range<usize>, Option<Vec<u8>>)> =
            parts.into_iter().map(|(r, b)| (r, Some(b))).collect();
        let mut throttled = 0u32;
        let mut reauthorised = false;
        while let Some((range, body)) = todo.pop_front() {
            let body = body.unwrap_or_else(|| array_of(&batch.events[range.clone()]));
            let gz = gzip(&body);
            match self.post(&url, &gz).await? {
                Answer::Accepted => {
                    throttled = 0;
                }
                Answer::TooLarge if range.len() > 1 => {
                    // Microsoft's limit is below ours: halves, in order, each judged again.
                    let mid = range.start + range.len() / 2;
                    todo.push_front((mid..range.end, None));
                    todo.push_front((range.start..mid, None));
                }
                Answer::TooLarge => {
                    return Err(self.fatal(format!(
                        "HTTP 413: one event ({} bytes of JSON) is too large for a Logs Ingestion call",
                        body.len()
                    )));
                }
                Answer::Throttled(wait, reason) => {
                    throttled += 1;
                    if throttled >= THROTTLED_TRIES {
                        return Err(self.retryable(format!("{reason}, {throttled} times in a row")));
                    }
                    tracing::debug!(output = %self.name, wait_ms = wait.as_millis() as u64, %reason, "throttled: waiting Retry-After");
                    tokio::time::sleep(wait).await;
                    todo.push_front((range, Some(body)));
                }
                Answer::Unauthorized(reason) if !reauthorised => {
                    // A token revoked or expired early: one more try with a fresh one.
                    tracing::debug!(output = %self.name, %reason, "401: signing in again");
                    reauthorised = true;
                    todo.push_front((range, Some(body)));
                }
                Answer::Unauthorized(reason) | Answer::Refused(reason) => {
                    return Err(self.fatal(reason));
                }
                Answer::Retry(reason) => return Err(self.retryable(reason)),
            }
        }
        Ok(SendReport {
            written: batch.events.len(),
            duplicates: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> Event {
        Event {
            key: None,
            json: format!("{{\"n\":\"{}\"}}", "x".repeat(n)).into_bytes(),
            record_type: None,
        }
    }

    #[test]
    fn bodies_are_json_arrays_within_the_limit() {
        let events: Vec<Event> = (0..100).map(|i| ev(i * 37 % 500)).collect();
        let parts = bodies(&events, 4096).unwrap();
        let mut next = 0;
        for (range, body) in &parts {
            assert_eq!(range.start, next);
            next = range.end;
            assert!(body.len() <= 4096, "{}", body.len());
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            let items = v.as_array().unwrap();
            assert_eq!(items.len(), range.len());
            for (item, e) in items.iter().zip(&events[range.clone()]) {
                let inner: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
                assert_eq!(item["Event"], inner);
            }
        }
        assert_eq!(next, 100);
        assert!(parts.len() > 1);
        assert_eq!(bodies(&[ev(5000)], 4096), Err(0));
        assert_eq!(array_of(&events[..0]), b"[]");
    }

    #[test]
    fn stream_names() {
        assert_eq!(
            stream_name("Custom-O365_Audit.Exchange"),
            "Custom-O365_Audit_Exchange"
        );
        assert!(stream_ok("Custom-O365Audit_CL"));
        assert!(!stream_ok("O365Audit_CL"));
        assert!(!stream_ok("Custom-"));
        assert!(dcr_id_ok("dcr-0123456789abcdef0123456789ABCDEF"));
        assert!(!dcr_id_ok("dcr-0123"));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn reasons_quote_azure_errors() {
        let body = br#"{"error":{"code":"OperationFailed","message":"The authentication token provided does not have access to ingest data for the data collection rule with immutable Id 'dcr-1'."}}"#;
        let r = reason_of(reqwest::StatusCode::FORBIDDEN, body);
        assert!(
            r.starts_with("HTTP 403 OperationFailed: The authentication token"),
            "{r}"
        );
        assert_eq!(
            reason_of(reqwest::StatusCode::BAD_GATEWAY, b"<html>"),
            "HTTP 502"
        );
    }
}
