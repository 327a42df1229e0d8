//! HTTP: NDJSON POST, Elasticsearch/OpenSearch `_bulk`, or Splunk HEC, optionally gzip'd, with
//! basic/token/header authentication and TLS with a custom CA and client certificate.
//!
//! A batch is sent in requests of at most `max_events` events, one after the other; it is accepted
//! only when every request was. A failed request fails the whole batch, which is then sent again
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
use std::sync::{Arc, Mutex};

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use super::syslog::event_time;
use super::{Batch, Event, Output, OutputError, SendReport};
use crate::config::{HttpAuth, HttpFormat, HttpOutputConfig};

/// Default Elasticsearch index pattern.
pub const DEFAULT_ES_INDEX: &str = "o365-%Y.%m.%d";
pub const DEFAULT_SPLUNK_SOURCE: &str = "o365-collector";
pub const DEFAULT_SPLUNK_SOURCETYPE: &str = "o365:management:activity";

pub struct HttpOutput {
    name: String,
    cfg: HttpOutputConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    auth: Option<(HeaderName, HeaderValue)>,
    dead_letter: Option<Arc<Mutex<File>>>,
}

/// What one request achieved.
enum Outcome {
    Done(SendReport),
    Retry(String),
    Refused(String),
}

impl HttpOutput {
    pub fn open(name: &str, cfg: &HttpOutputConfig) -> Result<HttpOutput, OutputError> {
        let fatal = |reason: String| OutputError::Fatal {
            output: name.to_string(),
            reason,
        };
        let mut url = reqwest::Url::parse(&cfg.url).map_err(|e| fatal(format!("url: {e}")))?;
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
            .map_err(fatal)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| fatal(format!("HTTP client: {e}")))?;
        let header = |v: String| {
            let mut h = HeaderValue::from_str(&v)
                .map_err(|_| fatal("credentials are not valid in an HTTP header".into()))?;
            h.set_sensitive(true);
            Ok::<_, OutputError>(h)
        };
        let auth = match &cfg.auth {
            HttpAuth::None => None,
            HttpAuth::Basic { username, password } => {
                use base64::Engine as _;
                let raw = format!("{username}:{}", password.expose());
                let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
                Some((AUTHORIZATION, header(format!("Basic {b64}"))?))
            }
            HttpAuth::Token(t) => {
                let scheme = match cfg.format {
                    HttpFormat::SplunkHec => "Splunk",
                    _ => "Bearer",
                };
                Some((AUTHORIZATION, header(format!("{scheme} {}", t.expose()))?))
            }
            HttpAuth::Header { name: n, value } => {
                let hn = HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| fatal(format!("header_name `{n}` is not a valid header name")))?;
                Some((hn, header(value.expose().to_owned())?))
            }
        };
        let dead_letter = match &cfg.dead_letter_path {
            None => None,
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| fatal(format!("{}: {e}", dir.display())))?;
                }
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .map_err(|e| fatal(format!("{}: {e}", p.display())))?;
                Some(Arc::new(Mutex::new(f)))
            }
        };
        Ok(HttpOutput {
            name: name.to_string(),
            cfg: cfg.clone(),
            url,
            client,
            auth,
            dead_letter,
        })
    }

    /// The request body for `events` in the configured format (before gzip).
    pub fn body(&self, batch: &Batch, events: &[Event]) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.iter().map(|e| e.json.len() + 128).sum());
        match self.cfg.format {
            HttpFormat::Ndjson => {
                for e in events {
                    out.extend_from_slice(&e.json);
                    out.push(b'\n');
                }
            }
            HttpFormat::Elasticsearch => {
                let pattern = self.cfg.index.as_deref().unwrap_or(DEFAULT_ES_INDEX);
                for e in events {
                    let index = index_name(pattern, &e.json);
                    let mut action = serde_json::Map::new();
                    action.insert("_index".into(), Value::String(index));
                    if let Some(k) = e.key {
                        action.insert("_id".into(), Value::String(format!("{k:032x}")));
                    }
                    let line = serde_json::json!({ "create": action });
                    let _ = serde_json::to_writer(&mut out, &line);
                    out.push(b'\n');
                    out.extend_from_slice(&e.json);
                    out.push(b'\n');
                }
            }
            HttpFormat::SplunkHec => {
                let source = self.cfg.source.as_deref().unwrap_or(DEFAULT_SPLUNK_SOURCE);
                let sourcetype = self
                    .cfg
                    .sourcetype
                    .as_deref()
                    .unwrap_or(DEFAULT_SPLUNK_SOURCETYPE);
                for e in events {
                    // `event` is the JSON text spliced in as is: no re-encoding of the record.
                    let mut head = String::from("{");
                    if let Some(t) = event_time(&e.json) {
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
                    if let Some(i) = &self.cfg.index {
                        let _ = write!(head, "\"index\":{},", Value::from(i.as_str()));
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
        out
    }

    async fn post(&self, batch: &Batch, events: &[Event]) -> Outcome {
        let body = self.body(batch, events);
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
                Err(e) => return Outcome::Retry(format!("gzip: {e}")),
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
            Err(e) => return Outcome::Retry(error_chain(&e)),
        };
        let status = resp.status().as_u16();
        let text = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::Retry(format!("reading the response: {}", error_chain(&e))),
        };
        if !(200..300).contains(&status) {
            let reason = format!("HTTP {status}: {}", excerpt(&text));
            return if status == 408 || status == 429 || status >= 500 {
                Outcome::Retry(reason)
            } else {
                Outcome::Refused(reason)
            };
        }
        match self.cfg.format {
            HttpFormat::Elasticsearch => self.bulk_items(batch, events, &text),
            _ => Outcome::Done(SendReport {
                written: events.len(),
                duplicates: 0,
            }),
        }
    }

    /// Reads the `_bulk` response item by item.
    fn bulk_items(&self, batch: &Batch, events: &[Event], body: &[u8]) -> Outcome {
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Outcome::Retry(format!("unreadable _bulk response: {e}")),
        };
        let mut report = SendReport::default();
        if parsed.get("errors") == Some(&Value::Bool(false)) {
            report.written = events.len();
            return Outcome::Done(report);
        }
        let items = parsed.get("items").and_then(Value::as_array);
        let Some(items) = items.filter(|i| i.len() == events.len()) else {
            return Outcome::Retry(format!(
                "_bulk response lists {} items for {} documents",
                items.map_or(0, Vec::len),
                events.len()
            ));
        };
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

impl Output for HttpOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        let mut total = SendReport::default();
        for chunk in batch.events.chunks(self.cfg.max_events.max(1)) {
            match self.post(batch, chunk).await {
                Outcome::Done(r) => {
                    total.written += r.written;
                    total.duplicates += r.duplicates;
                }
                Outcome::Retry(reason) => {
                    return Err(OutputError::Retryable {
                        output: self.name.clone(),
                        reason,
                    });
                }
                Outcome::Refused(reason) => {
                    return Err(OutputError::Fatal {
                        output: self.name.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(total)
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// `%Y %m %d %H` (and `%%`) from the event's time, UTC; other text is kept.
pub fn index_name(pattern: &str, json: &[u8]) -> String {
    use chrono::{Datelike, Timelike};
    let t = event_time(json).unwrap_or_else(chrono::Utc::now);
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => {
                let _ = write!(out, "{:04}", t.year());
            }
            Some('m') => {
                let _ = write!(out, "{:02}", t.month());
            }
            Some('d') => {
                let _ = write!(out, "{:02}", t.day());
            }
            Some('H') => {
                let _ = write!(out, "{:02}", t.hour());
            }
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
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
        assert_eq!(index_name("o365-%Y.%m.%d", j), "o365-2020.02.10");
        assert_eq!(index_name("a-%H-%%-%q", j), "a-15-%-%q");
        assert_eq!(index_name("plain", j), "plain");
    }
}
