//! Where events go. `Output::send` returning `Ok` means the destination accepted the whole batch
//! (file: written and fsync'd); only then is the batch recorded as the blob's progress, and after
//! its last batch the blob completed in the store. A blob goes out in several batches
//! (`pipeline.batch_records`, `pipeline.batch_bytes`), in order, one at a time: an output must not
//! take a batch for a whole blob (dedup keys, ids and verdicts are per record or per batch).

pub mod config;
pub mod file;
pub mod http;
pub mod kafka;
pub mod sentinel;
pub mod stdout;
pub mod syslog;
pub mod template;
mod tls;

use std::future::Future;
use std::hash::{Hash, Hasher};

use serde_json::Value;

pub use file::FileOutput;
pub use http::HttpOutput;
pub use kafka::KafkaOutput;
pub use sentinel::{SentinelOutput, SentinelOutputConfig};
pub use stdout::StdoutOutput;
pub use syslog::SyslogOutput;

pub use file::{FileCompression, FileOutputConfig};
pub use http::{HttpAuth, HttpFormat, HttpOutputConfig};
pub use kafka::{
    KafkaCompression, KafkaKey, KafkaOutputConfig, KafkaSasl, KafkaTls, SaslMechanism,
};
pub use syslog::{SyslogOutputConfig, SyslogTransport};

pub use config::{OutputConfig, read_all};

use crate::core::settings::Section;

/// Connect/request timeout of network outputs.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A network output's `timeout`: zero is refused (and reset to the default).
fn check_timeout(timeout: &mut std::time::Duration, s: &mut Section) {
    if timeout.is_zero() {
        s.problem(
            "timeout",
            "is 0",
            "use a positive duration, e.g. 30s (the default)",
        );
        *timeout = DEFAULT_TIMEOUT;
    }
}

/// `host:port` with a port above 0.
fn is_host_port(v: &str) -> bool {
    v.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// One mapped record, encoded.
#[derive(Debug, Clone)]
pub struct Event {
    /// Identity of the record for output-side dedup ([`record_key`]); `None` when the record has no Id.
    pub key: Option<u128>,
    /// The event as one JSON object, without the trailing newline.
    pub json: Vec<u8>,
    /// The record's `RecordType` (an audit record's), for the completeness ledger's per-type
    /// counts that `verify` compares; known while mapping, so counting costs no parse.
    pub record_type: Option<i32>,
}

/// A batch of one content blob's events, in the blob's order (several batches make a blob).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub tenant_id: String,
    /// The tenant's `tenant_name`, for name templates ([`template`]).
    pub tenant_name: Option<String>,
    pub content_type: String,
    pub content_id: String,
    pub events: Vec<Event>,
}

/// What a successful send did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub written: usize,
    /// Records already at the destination (a batch re-sent after a crash between its send and the
    /// progress recorded after it).
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Try again later (destination down, disk full, …).
    #[error("output {output} unavailable: {reason}")]
    Retryable { output: String, reason: String },
    /// Will not succeed by retrying the same batch.
    #[error("output {output} refused the batch: {reason}")]
    Fatal { output: String, reason: String },
    /// The output cannot start as configured: at start-up, naming the key to change and how.
    #[error("output {output} cannot start: outputs.{output}.{key}: {problem} — fix: {fix}")]
    Setup {
        output: String,
        key: &'static str,
        problem: String,
        fix: String,
    },
}

impl Batch {
    /// What a name template is filled with for this batch.
    pub fn fields(&self) -> template::Fields<'_> {
        template::Fields {
            tenant_id: &self.tenant_id,
            tenant_name: self.tenant_name.as_deref(),
            content_type: &self.content_type,
        }
    }
}

impl OutputError {
    /// [`OutputError::Setup`] of output `output`.
    pub fn setup(
        output: &str,
        key: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> OutputError {
        OutputError::Setup {
            output: output.to_owned(),
            key,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, OutputError::Retryable { .. })
    }
}

/// A destination for events.
pub trait Output: Send + Sync {
    fn send(&self, batch: &Batch) -> impl Future<Output = Result<SendReport, OutputError>> + Send;
}

/// The configured outputs, chosen at run time from the configuration (no dynamic registry).
pub enum AnyOutput {
    File(FileOutput),
    Stdout(StdoutOutput),
    Syslog(SyslogOutput),
    Http(HttpOutput),
    Kafka(KafkaOutput),
    Sentinel(SentinelOutput),
}

impl AnyOutput {
    /// Opens the output named `name` as configured.
    pub fn open(name: &str, cfg: &OutputConfig) -> Result<AnyOutput, OutputError> {
        match cfg {
            OutputConfig::File(f) => Ok(AnyOutput::File(FileOutput::open(name, f)?)),
            OutputConfig::Stdout => Ok(AnyOutput::Stdout(StdoutOutput::new(name))),
            OutputConfig::Syslog(c) => Ok(AnyOutput::Syslog(SyslogOutput::open(name, c)?)),
            OutputConfig::Http(c) => Ok(AnyOutput::Http(HttpOutput::open(name, c)?)),
            OutputConfig::Kafka(c) => Ok(AnyOutput::Kafka(KafkaOutput::open(name, c)?)),
            OutputConfig::Sentinel(c) => Ok(AnyOutput::Sentinel(SentinelOutput::open(name, c)?)),
        }
    }
}

impl Output for AnyOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        match self {
            AnyOutput::File(o) => o.send(batch).await,
            AnyOutput::Stdout(o) => o.send(batch).await,
            AnyOutput::Syslog(o) => o.send(batch).await,
            AnyOutput::Http(o) => o.send(batch).await,
            AnyOutput::Kafka(o) => o.send(batch).await,
            AnyOutput::Sentinel(o) => o.send(batch).await,
        }
    }
}

/// Fields that together identify one audit record: the same record delivered again (a batch re-sent
/// after a crash, or Microsoft repeating it) has the same key; records that merely share an `Id`
/// (documented in the corpus) differ in operation or time.
const KEY_FIELDS: [&str; 4] = ["Id", "CreationTime", "Operation", "RecordType"];

/// The dedup key of a raw record, or `None` when it has no `Id`.
pub fn record_key(raw: &Value) -> Option<u128> {
    key_from(|f| raw.get(f))
}

/// The dedup key recomputed from an event line as the mapping wrote it (`o365.audit.Id`, `Id` for
/// `format: raw`; `format: ecs` moves Id and Operation to `event.id` / `event.action`, and keeps
/// an Operation it renamed in `o365.meta.operation`).
pub fn event_key(event: &Value) -> Option<u128> {
    // A Graph record's line names its feed and identity.
    if let (Some(Value::String(ct)), Some(Value::String(id))) = (
        event.get("o365.meta.content_type"),
        event.get("o365.meta.record_id"),
    ) {
        return Some(graph_key(ct, id));
    }
    key_from(|f| {
        let ecs = match f {
            "Id" => ["event.id", "event.id"],
            "Operation" => ["o365.meta.operation", "event.action"],
            _ => [f, f],
        };
        event
            .get(format!("o365.audit.{f}").as_str())
            .or_else(|| event.get(f))
            .or_else(|| event.get(ecs[0]))
            .or_else(|| event.get(ecs[1]))
    })
}

/// The dedup key of a Graph record: its feed (`Graph.SignIns`, …) and its identity
/// ([`crate::graph::GraphFeed::identity`], written as `o365.meta.record_id`).
pub fn graph_key(content_type: &str, identity: &str) -> u128 {
    let mut lo = std::collections::hash_map::DefaultHasher::new();
    let mut hi = std::collections::hash_map::DefaultHasher::new();
    0x5Au8.hash(&mut hi);
    for part in [content_type, identity] {
        part.hash(&mut lo);
        part.hash(&mut hi);
    }
    ((hi.finish() as u128) << 64) | lo.finish() as u128
}

fn key_from<'a>(get: impl Fn(&str) -> Option<&'a Value>) -> Option<u128> {
    get("Id")?;
    let mut lo = std::collections::hash_map::DefaultHasher::new();
    let mut hi = std::collections::hash_map::DefaultHasher::new();
    0xA5u8.hash(&mut hi);
    let mut minute = 0;
    for f in KEY_FIELDS {
        // A string's text, so `RecordType: 15` and `"15"` (format ecs writes it as a string) agree.
        let text = match get(f) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        if f == "CreationTime" {
            minute = creation_minute(&text);
        }
        text.hash(&mut lo);
        text.hash(&mut hi);
    }
    Some(time_ordered(
        minute,
        ((hi.finish() as u128) << 64) | lo.finish() as u128,
    ))
}

/// Bits at the top of a record key that hold its creation minute ([`time_ordered`]).
pub const KEY_TIME_BITS: u32 = 32;

/// A record key from its creation minute and a hash of its identity: the minute in the top
/// [`KEY_TIME_BITS`], 96 bits of the hash below. Keys sort by creation time, so that the record
/// dedup's claims of one blob (records minutes apart) land on a few neighbouring pages of the
/// store's index, not on one page each.
pub fn time_ordered(minute: u32, hash: u128) -> u128 {
    (u128::from(minute) << (128 - KEY_TIME_BITS)) | (hash & (u128::MAX >> KEY_TIME_BITS))
}

/// Minutes since 1970 of a `CreationTime` (`2026-01-01T10:00:00`, with or without fraction and
/// zone: only the first 16 characters count); 0 when it is not one.
pub fn creation_minute(text: &str) -> u32 {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(r)?;
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let seconds = (|| {
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(13) != Some(&b':') {
            return None;
        }
        let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
        Some(
            date.and_hms_opt(num(11..13)?, num(14..16)?, 0)?
                .and_utc()
                .timestamp(),
        )
    })();
    seconds
        .and_then(|s| u32::try_from(s / 60).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_match_between_raw_and_mapped_forms() {
        let raw = json!({"Id": "a", "CreationTime": "2026-01-01T00:00:00", "Operation": "X", "RecordType": 15});
        let mapped = json!({"o365.audit.Id": "a", "o365.audit.CreationTime": "2026-01-01T00:00:00",
            "o365.audit.Operation": "X", "o365.audit.RecordType": 15, "o365.meta.received": "now"});
        assert_eq!(record_key(&raw), event_key(&mapped));
        assert_eq!(record_key(&raw), event_key(&raw));
        let ecs = json!({"event.id": "a", "o365.audit.CreationTime": "2026-01-01T00:00:00",
            "event.action": "X", "o365.audit.RecordType": "15"});
        assert_eq!(record_key(&raw), event_key(&ecs));
        let renamed = json!({"Id": "a", "CreationTime": "2026-01-01T00:00:00", "Operation": "Add user.", "RecordType": 8});
        let ecs = json!({"event.id": "a", "o365.audit.CreationTime": "2026-01-01T00:00:00",
            "event.action": "added-user-account", "o365.meta.operation": "Add user.", "o365.audit.RecordType": "8"});
        assert_eq!(record_key(&renamed), event_key(&ecs));
        let other = json!({"Id": "a", "CreationTime": "2026-01-01T00:00:00", "Operation": "Y", "RecordType": 15});
        assert_ne!(record_key(&raw), record_key(&other));
        assert_eq!(record_key(&json!({"Operation": "X"})), None);
    }

    #[test]
    fn keys_sort_by_creation_minute() {
        assert_eq!(creation_minute("1970-01-01T00:01:00"), 1);
        assert_eq!(creation_minute("2026-01-01T10:00:00.1234567Z"), 29_454_360);
        assert_eq!(creation_minute("2026-02-30T10:00:00"), 0);
        assert_eq!(creation_minute("yesterday"), 0);
        let at = |t: &str, id: &str| {
            record_key(&json!({"Id": id, "CreationTime": t, "Operation": "X"})).unwrap()
        };
        assert!(at("2026-01-01T10:00:59", "z") < at("2026-01-01T10:01:00", "a"));
        assert!(at("2025-12-31T23:59:00", "z") < at("2026-01-01T00:00:00", "a"));
        assert_ne!(
            at("2026-01-01T10:00:00", "a"),
            at("2026-01-01T10:00:01", "a")
        );
    }

    #[test]
    fn graph_lines_key_on_feed_and_identity() {
        let line = json!({"o365.meta.content_type": "Graph.SignIns", "o365.meta.record_id": "s1"});
        assert_eq!(event_key(&line), Some(graph_key("Graph.SignIns", "s1")));
        assert_ne!(
            graph_key("Graph.SignIns", "s1"),
            graph_key("Graph.DirectoryAudits", "s1")
        );
    }
}
