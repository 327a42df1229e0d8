//! HTTP: NDJSON POST, Elasticsearch/OpenSearch `_bulk`, or Splunk HEC, optionally gzip'd, with
//! basic/token/header authentication and TLS with a custom CA and client certificate.
//!
//! A batch is sent in requests of at most `max_events` events, one after the other; it is accepted
//! only when every request was. With `linger`, batches smaller than `max_events` (small blobs, the
//! tail of a large one) wait up to that long for batches of other workers and go out together in
//! one request (the body is the concatenation of their parts); each sender still gets the verdict
//! of its own part. A failed request fails the whole batch, which is then sent again
//! from its start, so receivers may see the leading requests twice: Elasticsearch does not, because
//! each document goes in with `create` and `_id` = the record key, and a second `create` answers
//! 409 (counted as a duplicate). For NDJSON and Splunk HEC, deduplicate on `o365.audit.Id` downstream.
//!
//! Classification: connection failures, timeouts, 408, 429 and 5xx are `Retryable`; other 4xx
//! (bad token, missing index, request too large) are `Fatal` — the same batch will not pass until
//! the configuration or the receiver is fixed. Elasticsearch answers per document: a document
//! refused for good (a mapping error, 400) is written to `dead_letter_path` with its reason and
//! the batch counts as delivered; without `dead_letter_path` the batch fails (`Fatal`) so nothing
//! is dropped silently. Documents refused with 429/5xx make the batch `Retryable`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use serde::{Deserialize, Deserializer};

use super::syslog::event_time;
use super::template::{Fields, Template};
use super::{Batch, Event, Output, OutputError, SendReport};
use crate::core::Secret;
use crate::core::settings::{Section, de};

/// Default Elasticsearch index pattern.
pub const DEFAULT_ES_INDEX: &str = "o365-%Y.%m.%d";
pub const DEFAULT_SPLUNK_SOURCE: &str = "o365-collector";
pub const DEFAULT_SPLUNK_SOURCETYPE: &str = "o365:management:activity";

/// Events per HTTP request (Elasticsearch recommends bulk bodies of a few MB).
pub const DEFAULT_MAX_EVENTS: usize = 500;
/// Longest `linger`: blobs wait that long for company, so keep it short.
const MAX_LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// `type: http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpOutputConfig {
    #[serde(deserialize_with = "de::text")]
    pub url: String,
    pub format: HttpFormat,
    /// Elasticsearch: index name (a [`Template`]: `%Y %m %d %H` from the event's `@timestamp`,
    /// `{tenant_id}`, …; default `o365-%Y.%m.%d`); Splunk: the `index` field (default: the
    /// token's default index).
    pub index: Option<Template>,
    /// Splunk `source` (default `o365-collector`).
    pub source: Option<Template>,
    /// Splunk `sourcetype` (default `o365:management:activity`).
    pub sourcetype: Option<Template>,
    #[serde(deserialize_with = "de::flag")]
    pub gzip: bool,
    /// Basic authentication, with `password`.
    #[serde(deserialize_with = "de::opt::text")]
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `Authorization: Bearer …` (for `splunk_hec`: `Authorization: Splunk …`).
    pub token: Option<Secret>,
    /// A custom header, e.g. `X-API-Key`, with `header_value`.
    #[serde(deserialize_with = "de::opt::text")]
    pub header_name: Option<String>,
    pub header_value: Option<Secret>,
    /// What the settings above send, resolved by [`HttpOutputConfig::check`].
    #[serde(skip)]
    pub auth: HttpAuth,
    /// Extra trust root (PEM).
    #[serde(deserialize_with = "de::opt::path")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(deserialize_with = "de::opt::path")]
    pub client_cert: Option<std::path::PathBuf>,
    #[serde(deserialize_with = "de::opt::path")]
    pub client_key: Option<std::path::PathBuf>,
    /// Most events in one request; bigger batches are split.
    #[serde(deserialize_with = "de::whole")]
    pub max_events: usize,
    /// How long a blob smaller than `max_events` waits for others to share its request; zero sends
    /// each blob at once.
    #[serde(deserialize_with = "de::duration")]
    pub linger: std::time::Duration,
    #[serde(deserialize_with = "de::duration")]
    pub timeout: std::time::Duration,
    /// Elasticsearch documents rejected for good (4xx other than 429) are appended here with their
    /// reason, and count as delivered; without it such a batch is retried (and so stays visible).
    #[serde(deserialize_with = "de::opt::path")]
    pub dead_letter_path: Option<std::path::PathBuf>,
}

impl Default for HttpOutputConfig {
    fn default() -> Self {
        HttpOutputConfig {
            url: String::new(),
            format: HttpFormat::Ndjson,
            index: None,
            source: None,
            sourcetype: None,
            gzip: false,
            username: None,
            password: None,
            token: None,
            header_name: None,
            header_value: None,
            auth: HttpAuth::None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            max_events: DEFAULT_MAX_EVENTS,
            linger: std::time::Duration::ZERO,
            timeout: super::DEFAULT_TIMEOUT,
            dead_letter_path: None,
        }
    }
}

/// Body format of an `http` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFormat {
    /// One JSON event per line, POSTed to `url`.
    Ndjson,
    /// Elasticsearch/OpenSearch `_bulk` (`url` is the cluster, `/_bulk` is added when missing).
    Elasticsearch,
    /// Splunk HTTP Event Collector (`url` is `…/services/collector/event` or the server root).
    SplunkHec,
}

impl<'de> Deserialize<'de> for HttpFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let choices = [
            ("ndjson", HttpFormat::Ndjson),
            ("elasticsearch", HttpFormat::Elasticsearch),
            ("splunk_hec", HttpFormat::SplunkHec),
        ];
        de::choice(d, &choices, "an http format")
    }
}

/// Credentials sent with each request; never logged.
#[derive(Debug, Clone, Default)]
pub enum HttpAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: Secret,
    },
    Token(Secret),
    Header {
        name: String,
        value: Secret,
    },
}

impl HttpOutputConfig {
    /// Checks the meaning of the settings and resolves [`HttpOutputConfig::auth`].
    pub fn check(&mut self, s: &mut Section) {
        let fix = "set the receiver's URL, e.g. `url: https://es.example.com:9200`";
        self.url = self.url.trim().to_owned();
        if !s.given("url") {
            s.missing("url", fix);
        } else if !s.usable("url") {
            // Refused while typing; reported already.
        } else if self.url.is_empty() {
            s.problem("url", "is empty", fix);
        } else {
            match reqwest::Url::parse(&self.url) {
                // Never echoed: the URL may hold credentials.
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    if !u.username().is_empty() || u.password().is_some() {
                        s.problem(
                            "url",
                            "carries credentials in the URL",
                            "move them to username/password (or token) so they stay out of logs",
                        );
                    }
                }
                Ok(_) => s.problem("url", "is not an http(s) URL with a host", fix),
                Err(e) => s.problem("url", format!("is not a valid URL ({e})"), fix),
            }
        }
        let format = self.format;
        if let Some(index) = &self.index {
            // Judged as it comes out for a sample tenant (tenant names are checked with the
            // tenants that use this output).
            let invalid = |v: &Template| !es_index_ok(&es_sample(v));
            if format == HttpFormat::Ndjson {
                s.problem(
                    "index",
                    "does not apply to `format: ndjson`",
                    "remove it, or use elasticsearch or splunk_hec",
                );
            } else if format == HttpFormat::Elasticsearch && invalid(index) {
                s.problem(
                    "index",
                    "is not a valid Elasticsearch index name (lowercase, no spaces or \\/*?\"<>|,#)",
                    "e.g. `o365-%Y.%m.%d`",
                );
            }
        }
        for (key, value) in [("source", &self.source), ("sourcetype", &self.sourcetype)] {
            if value.is_some() && format != HttpFormat::SplunkHec {
                s.problem(
                    key,
                    "only applies to `format: splunk_hec`",
                    "remove it, or set `format: splunk_hec`",
                );
            }
        }
        self.auth = self.check_auth(s);
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
        ] {
            if let Some(p) = path {
                s.pem_certificates(key, p);
            }
        }
        if let Some(p) = &self.client_key {
            s.pem_private_key("client_key", p);
        }
        for (given, missing, what) in [
            (
                "client_cert",
                "client_key",
                "the client certificate's private key (PEM)",
            ),
            ("client_key", "client_cert", "the client certificate (PEM)"),
        ] {
            if s.given(given) && !s.given(missing) {
                s.missing_as(
                    missing,
                    format!("is missing while {given} is set"),
                    format!("set {what}"),
                );
            }
        }
        if self.max_events == 0 {
            s.problem(
                "max_events",
                "is 0",
                format!("use a positive number, e.g. {DEFAULT_MAX_EVENTS} (the default)"),
            );
            self.max_events = DEFAULT_MAX_EVENTS;
        }
        if let Some(p) = &self.dead_letter_path {
            if format != HttpFormat::Elasticsearch {
                s.problem(
                    "dead_letter_path",
                    "only applies to `format: elasticsearch`",
                    "remove it, or set `format: elasticsearch`",
                );
            } else if p.to_str().is_some_and(|p| p.trim().is_empty()) {
                s.problem(
                    "dead_letter_path",
                    "is empty",
                    "set a file path, e.g. ./var/rejected.ndjson",
                );
            }
        }
        if self.linger > MAX_LINGER {
            s.problem(
                "linger",
                format!(
                    "is {}, longer than {}",
                    crate::core::format_duration(self.linger),
                    crate::core::format_duration(MAX_LINGER)
                ),
                "use a short wait such as 200ms, or 0 to send every blob at once",
            );
            self.linger = std::time::Duration::ZERO;
        }
        super::check_timeout(&mut self.timeout, s);
    }

    /// One kind of authentication at most, each with its pair complete.
    fn check_auth(&self, s: &mut Section) -> HttpAuth {
        let given: Vec<&str> = ["username", "token", "header_name"]
            .into_iter()
            .filter(|k| s.given(k))
            .collect();
        if let [first, second, ..] = given.as_slice() {
            s.problem(
                second,
                format!("is set together with {first}; only one kind of authentication is sent"),
                "keep one of: username+password, token, header_name+header_value",
            );
            return HttpAuth::None;
        }
        for (a, b) in [("username", "password"), ("header_name", "header_value")] {
            if s.given(a) != s.given(b) {
                let (missing, present) = if s.given(a) { (b, a) } else { (a, b) };
                s.missing_as(
                    missing,
                    format!("is missing while {present} is set"),
                    format!("set both {a} and {b}"),
                );
                return HttpAuth::None;
            }
        }
        let splunk = self.format == HttpFormat::SplunkHec;
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            if splunk {
                s.problem(
                    "username",
                    "is not used by Splunk HEC",
                    "use `token:` with the HEC token",
                );
            }
            return HttpAuth::Basic {
                username: username.clone(),
                password: password.clone(),
            };
        }
        if let Some(token) = &self.token {
            return HttpAuth::Token(token.clone());
        }
        if let (Some(name), Some(value)) = (&self.header_name, &self.header_value) {
            if reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).is_err() {
                s.problem(
                    "header_name",
                    "is not a valid HTTP header name",
                    "e.g. X-API-Key",
                );
            }
            return HttpAuth::Header {
                name: name.trim().to_owned(),
                value: value.clone(),
            };
        }
        if splunk && !s.given("token") {
            s.missing_as(
                "token",
                "is missing; Splunk HEC needs its token",
                "set `token: ${SPLUNK_HEC_TOKEN}`",
            );
        }
        HttpAuth::None
    }
}

pub struct HttpOutput {
    shared: Arc<Shared>,
}

/// What sends and the coalescing timer share.
struct Shared {
    name: String,
    cfg: HttpOutputConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    auth: Option<(HeaderName, HeaderValue)>,
    dead_letter: Option<Arc<Mutex<File>>>,
    /// Small batches waiting out `linger` for others to share their request.
    group: Mutex<Option<Group>>,
    groups: AtomicU64,
}

/// Blobs that go out in one request; each sender waits for its own verdict.
struct Group {
    id: u64,
    events: usize,
    parts: Vec<(Batch, oneshot::Sender<Result<SendReport, OutputError>>)>,
}

/// What one request achieved for one of its parts (one batch).
enum Outcome {
    Done(SendReport),
    Retry(String),
    Refused(String),
}

impl HttpOutput {
    pub fn open(name: &str, cfg: &HttpOutputConfig) -> Result<HttpOutput, OutputError> {
        Ok(HttpOutput {
            shared: Arc::new(Shared::open(name, cfg)?),
        })
    }
}

impl Shared {
    fn open(name: &str, cfg: &HttpOutputConfig) -> Result<Shared, OutputError> {
        let setup = |key, problem: String, fix: &str| OutputError::setup(name, key, problem, fix);
        let mut url = reqwest::Url::parse(&cfg.url).map_err(|e| {
            setup(
                "url",
                format!("is not a valid URL ({e})"),
                "set the receiver's http(s) URL",
            )
        })?;
        let path = url.path().trim_end_matches('/').to_owned();
        match cfg.format {
            HttpFormat::Elasticsearch if !path.ends_with("/_bulk") => {
                url.set_path(&format!("{path}/_bulk"));
            }
            HttpFormat::SplunkHec if path.is_empty() => url.set_path("/services/collector/event"),
            _ => {}
        }
        let identity = cfg.client_cert.as_deref().zip(cfg.client_key.as_deref());
        let tls = super::tls::client_config(cfg.ca_file.as_deref(), identity, &[b"http/1.1"])
            .map_err(|(key, e)| {
                setup(
                    key,
                    format!("cannot be used: {e}"),
                    super::tls::tls_fix(key),
                )
            })?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| {
                setup(
                    "url",
                    format!("cannot get an HTTP client: {e}"),
                    "check the TLS settings of the output (ca_file, client_cert, client_key)",
                )
            })?;
        let header = |key, v: String| {
            let mut h = HeaderValue::from_str(&v).map_err(|_| {
                setup(
                    key,
                    "cannot be sent in an HTTP header".into(),
                    "use visible ASCII characters only",
                )
            })?;
            h.set_sensitive(true);
            Ok::<_, OutputError>(h)
        };
        let auth = match &cfg.auth {
            HttpAuth::None => None,
            HttpAuth::Basic { username, password } => {
                use base64::Engine as _;
                let raw = format!("{username}:{}", password.expose());
                let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
                Some((AUTHORIZATION, header("password", format!("Basic {b64}"))?))
            }
            HttpAuth::Token(t) => {
                let scheme = match cfg.format {
                    HttpFormat::SplunkHec => "Splunk",
                    _ => "Bearer",
                };
                Some((
                    AUTHORIZATION,
                    header("token", format!("{scheme} {}", t.expose()))?,
                ))
            }
            HttpAuth::Header { name: n, value } => {
                let hn = HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                    setup(
                        "header_name",
                        format!("`{n}` is not a valid header name"),
                        "use letters, digits and `-`, e.g. X-API-Key",
                    )
                })?;
                Some((hn, header("header_value", value.expose().to_owned())?))
            }
        };
        let dead_letter = match &cfg.dead_letter_path {
            None => None,
            Some(p) => {
                let unusable = |problem: String| {
                    setup(
                        "dead_letter_path",
                        problem,
                        "point it at a regular file in a directory the collector's user can write (`check-config` checks it)",
                    )
                };
                super::file::config::probe_path(p).map_err(|(problem, _)| unusable(problem))?;
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        unusable(format!("cannot be created in {}: {e}", dir.display()))
                    })?;
                }
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .map_err(|e| unusable(format!("cannot be opened ({}): {e}", p.display())))?;
                Some(Arc::new(Mutex::new(f)))
            }
        };
        Ok(Shared {
            name: name.to_string(),
            cfg: cfg.clone(),
            url,
            client,
            auth,
            dead_letter,
            group: Mutex::new(None),
            groups: AtomicU64::new(0),
        })
    }

    /// Appends the body of `events` in the configured format (before gzip).
    fn body_into(&self, out: &mut Vec<u8>, batch: &Batch, events: &[Event]) {
        out.reserve(events.iter().map(|e| e.json.len() + 128).sum());
        match self.cfg.format {
            HttpFormat::Ndjson => {
                for e in events {
                    out.extend_from_slice(&e.json);
                    out.push(b'\n');
                }
            }
            HttpFormat::Elasticsearch => {
                let fields = batch.fields();
                static DEFAULT: std::sync::LazyLock<Template> = std::sync::LazyLock::new(|| {
                    Template::parse(DEFAULT_ES_INDEX).unwrap_or_else(|_| unreachable!())
                });
                let pattern = self.cfg.index.as_ref().unwrap_or(&DEFAULT);
                // One name per batch unless it holds the time (then per event, from its own time).
                let fixed = (!pattern.uses_time()).then(|| index_name(pattern, &fields, &[]));
                for e in events {
                    let index = match &fixed {
                        Some(name) => name.clone(),
                        None => index_name(pattern, &fields, &e.json),
                    };
                    let mut action = serde_json::Map::new();
                    action.insert("_index".into(), Value::String(index));
                    if let Some(k) = e.key {
                        action.insert("_id".into(), Value::String(format!("{k:032x}")));
                    }
                    let line = serde_json::json!({ "create": action });
                    let _ = serde_json::to_writer(&mut *out, &line);
                    out.push(b'\n');
                    out.extend_from_slice(&e.json);
                    out.push(b'\n');
                }
            }
            HttpFormat::SplunkHec => {
                let fields = batch.fields();
                for e in events {
                    // `event` is the JSON text spliced in as is: no re-encoding of the record.
                    let mut head = String::from("{");
                    let time = event_time(&e.json);
                    let name = |t: &Option<Template>, default: &str| match t {
                        Some(t) => t.render(&fields, time.unwrap_or_else(chrono::Utc::now)),
                        None => default.to_owned(),
                    };
                    let source = name(&self.cfg.source, DEFAULT_SPLUNK_SOURCE);
                    let sourcetype = name(&self.cfg.sourcetype, DEFAULT_SPLUNK_SOURCETYPE);
                    if let Some(t) = time {
                        let _ = write!(
                            head,
                            "\"time\":{}.{:03},",
                            t.timestamp(),
                            t.timestamp_subsec_millis()
                        );
                    }
                    let _ = write!(
                        head,
                        "\"source\":{},\"sourcetype\":{},",
                        Value::from(source),
                        Value::from(sourcetype)
                    );
                    if self.cfg.index.is_some() {
                        let index = name(&self.cfg.index, "");
                        let _ = write!(head, "\"index\":{},", Value::from(index));
                    }
                    let fields = serde_json::json!({
                        "tenant": batch.tenant_id,
                        "content_type": batch.content_type,
                        "content_id": batch.content_id,
                    });
                    let _ = write!(head, "\"fields\":{fields},\"event\":");
                    out.extend_from_slice(head.as_bytes());
                    out.extend_from_slice(&e.json);
                    out.extend_from_slice(b"}\n");
                }
            }
        }
    }

    /// Sends the parts (each one batch) in one request; one outcome per part.
    async fn post(&self, parts: &[(&Batch, &[Event])]) -> Vec<Outcome> {
        let all = |o: fn(String) -> Outcome, reason: String| {
            parts.iter().map(|_| o(reason.clone())).collect::<Vec<_>>()
        };
        let mut body = Vec::new();
        for (batch, events) in parts {
            self.body_into(&mut body, batch, events);
        }
        let content_type = match self.cfg.format {
            HttpFormat::Elasticsearch | HttpFormat::Ndjson => "application/x-ndjson",
            HttpFormat::SplunkHec => "application/json",
        };
        let mut req = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, content_type);
        let body = if self.cfg.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
            match gzip(&body) {
                Ok(b) => b,
                Err(e) => return all(Outcome::Retry, format!("gzip: {e}")),
            }
        } else {
            body
        };
        if let Some((name, value)) = &self.auth {
            req = req.header(name.clone(), value.clone());
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            // reqwest's error text names the URL, which config validation keeps free of credentials.
            Err(e) => return all(Outcome::Retry, error_chain(&e)),
        };
        let status = resp.status().as_u16();
        let text = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("reading the response: {}", error_chain(&e));
                return all(Outcome::Retry, reason);
            }
        };
        if !(200..300).contains(&status) {
            let reason = format!("HTTP {status}: {}", excerpt(&text));
            return if status == 408 || status == 429 || status >= 500 {
                all(Outcome::Retry, reason)
            } else {
                all(Outcome::Refused, reason)
            };
        }
        if self.cfg.format != HttpFormat::Elasticsearch {
            return all_written(parts);
        }
        let parsed: Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => return all(Outcome::Retry, format!("unreadable _bulk response: {e}")),
        };
        let total: usize = parts.iter().map(|(_, e)| e.len()).sum();
        if parsed.get("errors") == Some(&Value::Bool(false)) {
            return all_written(parts);
        }
        let items = parsed.get("items").and_then(Value::as_array);
        let Some(items) = items.filter(|i| i.len() == total) else {
            let reason = format!(
                "_bulk response lists {} items for {total} documents",
                items.map_or(0, Vec::len)
            );
            return all(Outcome::Retry, reason);
        };
        let mut from = 0;
        parts
            .iter()
            .map(|(batch, events)| {
                let mine = &items[from..from + events.len()];
                from += events.len();
                self.bulk_items(batch, events, mine)
            })
            .collect()
    }

    /// Reads one part's `_bulk` items: a part is refused or retried only for its own documents.
    fn bulk_items(&self, batch: &Batch, events: &[Event], items: &[Value]) -> Outcome {
        let mut report = SendReport::default();
        let mut rejected = Vec::new();
        let mut retry = None;
        for (item, event) in items.iter().zip(events) {
            let result = item
                .as_object()
                .and_then(|m| m.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
            match status {
                200..=299 => report.written += 1,
                409 => report.duplicates += 1,
                429 | 500..=599 | 0 => {
                    retry.get_or_insert_with(|| {
                        format!("document refused with {status}: {}", reason_of(&result))
                    });
                }
                _ => rejected.push((event, status, reason_of(&result))),
            }
        }
        if let Some(r) = retry {
            return Outcome::Retry(r);
        }
        if rejected.is_empty() {
            return Outcome::Done(report);
        }
        let Some(dl) = &self.dead_letter else {
            let (_, status, reason) = &rejected[0];
            return Outcome::Refused(format!(
                "{} document(s) rejected, first with {status}: {reason}; set dead_letter_path to keep them aside",
                rejected.len()
            ));
        };
        let mut buf = Vec::new();
        for (event, status, reason) in &rejected {
            let doc: Value = serde_json::from_slice(&event.json)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.json).into()));
            let line = serde_json::json!({
                "output": self.name,
                "tenant": batch.tenant_id,
                "content_type": batch.content_type,
                "content_id": batch.content_id,
                "status": status,
                "reason": reason,
                "event": doc,
            });
            let _ = serde_json::to_writer(&mut buf, &line);
            buf.push(b'\n');
        }
        let written = dl
            .lock()
            .map_err(|_| std::io::Error::other("dead-letter file poisoned"))
            .and_then(|mut f| {
                f.write_all(&buf)?;
                f.sync_data()
            });
        match written {
            Ok(()) => {
                report.written += rejected.len();
                Outcome::Done(report)
            }
            Err(e) => Outcome::Retry(format!("writing rejected documents: {e}")),
        }
    }
}

impl Shared {
    /// Sends a whole batch now, in requests of at most `max_events`.
    async fn send_now(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        let mut total = SendReport::default();
        for chunk in batch.events.chunks(self.cfg.max_events.max(1)) {
            let outcome = self.post(&[(batch, chunk)]).await.pop();
            let r = self.verdict(outcome)?;
            total.written += r.written;
            total.duplicates += r.duplicates;
        }
        Ok(total)
    }

    fn verdict(&self, outcome: Option<Outcome>) -> Result<SendReport, OutputError> {
        match outcome {
            Some(Outcome::Done(r)) => Ok(r),
            Some(Outcome::Retry(reason)) => Err(OutputError::Retryable {
                output: self.name.clone(),
                reason,
            }),
            Some(Outcome::Refused(reason)) => Err(OutputError::Fatal {
                output: self.name.clone(),
                reason,
            }),
            None => Err(OutputError::Retryable {
                output: self.name.clone(),
                reason: "no outcome for the request".into(),
            }),
        }
    }

    /// Sends the batches of a group in one request and gives each sender its own verdict.
    async fn flush(&self, group: Group) {
        let parts: Vec<(&Batch, &[Event])> = group
            .parts
            .iter()
            .map(|(b, _)| (b, b.events.as_slice()))
            .collect();
        let outcomes = self.post(&parts).await;
        for ((_, done), outcome) in group.parts.into_iter().zip(outcomes) {
            // A sender that gave up (shutdown) has nobody to tell.
            let _ = done.send(self.verdict(Some(outcome)));
        }
    }

    /// The waiting group, if it is still the one with `id`.
    fn take_group(&self, id: Option<u64>) -> Option<Group> {
        let mut g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        match (id, g.as_ref()) {
            (Some(id), Some(current)) if current.id != id => None,
            _ => g.take(),
        }
    }
}

impl Output for HttpOutput {
    /// A batch of `max_events` or more goes out at once (split into requests of `max_events`).
    /// With `linger`, smaller batches wait up to that long for other batches (from other workers)
    /// to share a request of at most `max_events` events; each batch still gets its own verdict
    /// (an Elasticsearch document refused in one batch does not fail the others).
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        let shared = &self.shared;
        let max = shared.cfg.max_events.max(1);
        let n = batch.events.len();
        if shared.cfg.linger.is_zero() || n >= max || n == 0 {
            return shared.send_now(batch).await;
        }
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut g = shared.group.lock().unwrap_or_else(|p| p.into_inner());
            // A group this batch would push over `max_events` goes out first.
            let full = match g.as_ref() {
                Some(current) if current.events + n > max => g.take(),
                _ => None,
            };
            let group = g.get_or_insert_with(|| {
                let id = shared.groups.fetch_add(1, Ordering::Relaxed);
                let timer = self.shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(timer.cfg.linger).await;
                    if let Some(group) = timer.take_group(Some(id)) {
                        timer.flush(group).await;
                    }
                });
                Group {
                    id,
                    events: 0,
                    parts: Vec::new(),
                }
            });
            group.events += n;
            group.parts.push((batch.clone(), tx));
            let now_full = (group.events >= max).then(|| g.take()).flatten();
            [full, now_full]
        };
        for group in full.into_iter().flatten() {
            let s = self.shared.clone();
            tokio::spawn(async move { s.flush(group).await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(OutputError::Retryable {
                output: shared.name.clone(),
                reason: "the shared request was abandoned".into(),
            })
        })
    }
}

/// Every part accepted whole.
fn all_written(parts: &[(&Batch, &[Event])]) -> Vec<Outcome> {
    parts
        .iter()
        .map(|(_, events)| {
            Outcome::Done(SendReport {
                written: events.len(),
                duplicates: 0,
            })
        })
        .collect()
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// An Elasticsearch index name from `pattern`, with the event's time (UTC; now if it has none)
/// and in lowercase, as Elasticsearch requires (a tenant name may have capitals).
pub fn index_name(pattern: &Template, fields: &Fields, json: &[u8]) -> String {
    index_name_at(
        pattern,
        fields,
        event_time(json).unwrap_or_else(chrono::Utc::now),
    )
}

/// [`index_name`] at `time`.
pub fn index_name_at(
    pattern: &Template,
    fields: &Fields,
    time: chrono::DateTime<chrono::Utc>,
) -> String {
    pattern.render(fields, time).to_lowercase()
}

/// The index a template gives for a sample tenant, its placeholders lowercased as [`index_name`]
/// writes them (the template's own text is not: capitals there are refused).
pub fn es_sample(t: &Template) -> String {
    let fields = Fields {
        content_type: "audit.exchange",
        ..Fields::SAMPLE
    };
    t.render(
        &fields,
        chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default(),
    )
}

/// Whether Elasticsearch takes `name` as an index name (lowercase, none of ` "\/,#*?<>|`, not
/// starting with `-`, `_` or `+`, not `.` or `..`, at most 255 bytes).
pub fn es_index_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !matches!(name, "." | "..")
        && !name.starts_with(['-', '_', '+'])
        && !name
            .chars()
            .any(|c| c.is_uppercase() || " \"\\/,#*?<>|:".contains(c))
}

fn reason_of(result: &Value) -> String {
    match result.get("error") {
        Some(Value::Object(e)) => {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let why = e.get("reason").and_then(Value::as_str).unwrap_or("");
            format!("{kind}: {why}")
        }
        Some(other) => other.to_string(),
        None => "no reason given".into(),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_patterns() {
        let j = br#"{"@timestamp":"2020-02-10T15:13:13.000Z"}"#;
        let f = Fields {
            tenant_id: "t-1",
            tenant_name: Some("Contoso"),
            content_type: "Audit.General",
        };
        let t = |s: &str| Template::parse(s).unwrap();
        assert_eq!(index_name(&t("o365-%Y.%m.%d"), &f, j), "o365-2020.02.10");
        assert_eq!(index_name(&t("a-%H-%%"), &f, j), "a-15-%");
        assert_eq!(index_name(&t("plain"), &f, j), "plain");
        assert_eq!(
            index_name(&t("o365-{tenant_name}-{tenant_id}-%Y"), &f, j),
            "o365-contoso-t-1-2020"
        );
        assert!(es_index_ok("o365-t-1-2020.02.10"));
        assert!(!es_index_ok("o365 x") && !es_index_ok("O365") && !es_index_ok("_x"));
    }
}
