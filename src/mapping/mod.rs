//! Record → event mapping into the `o365.*` schema.
//!
//! Records of the Microsoft Graph feeds (a [`Context::content_type`] `Graph.*`) go to [`graph`]
//! (`o365.signin.*`, `o365.directory_audit.*`, `o365.message.*`, `o365.service_health.*`).
//!
//! [`map_record`] turns one Management Activity API record (one element of a content blob) into one
//! flat event: a JSON object whose keys are dotted paths. It is pure and total: any JSON value goes
//! in, nothing panics, and whatever is broken is listed in [`Mapped::issues`] while the rest is
//! still mapped.
//!
//! # Formats
//!
//! - **`o365`** (default, [`o365`] module): every field of the record under `o365.audit.<Field>` with
//!   its value unchanged (a `RecordType` sent as `"25"` stays the string `"25"`); nested objects
//!   flattened to dotted keys; `{Name, Value}` arrays (ExtendedProperties, DeviceProperties,
//!   Parameters, ExtraProperties, …) as `o365.audit.<Field>.<Name>`; ModifiedProperties as
//!   `o365.audit.ModifiedProperties.<Name>.NewValue|OldValue` with spaces and dots in Name → `_`;
//!   other arrays (Actor, Target, …) kept as arrays. Empty arrays and empty-string IPs are kept
//!   (Elastic drops them; our rule is "values unchanged"). Plus `@timestamp` and `o365.meta.*`.
//! - **`ecs`**: what Elastic's o365 integration makes of the record ([`ecs`] module, a port of
//!   its ingest pipeline): Elastic Common Schema fields (`event.*`, `user.*`, `client.*`/`source.*`,
//!   `server.*`/`destination.*`, `host.*`, `organization.*`, `related.*`, `file.*`, `url.original`,
//!   `rule.*`, `group.name`, `email.*`, …) plus Elastic's `o365.audit.*`: the record without the
//!   fields moved into ECS, Name/Value lists of Parameters/ExtendedProperties/ModifiedProperties
//!   as objects, JSON strings (`Data`, `OperationProperties`, `AdditionalInfo`) parsed, and the
//!   numbers Elastic converts (`RecordType`, `UserType`, `Version`, …) as strings.
//! - **`raw`**: the record's own top-level fields exactly as received (nested objects stay nested,
//!   nothing is renamed or flattened) plus the flat `o365.meta.*` keys beside them. No `@timestamp`
//!   and no interpretation: for consumers that do their own parsing.
//!
//! # `@timestamp`
//!
//! `CreationTime` is UTC without a zone suffix (`2020-02-10T15:13:13`); it becomes RFC 3339 UTC
//! with milliseconds (`2020-02-10T15:13:13.000Z`). A suffix (`Z`, `+01:00`) is honoured. When
//! `CreationTime` is missing or unreadable the record gets an issue and `@timestamp` falls back to
//! the time the collector received the blob (`o365.meta.received`), so the event is still
//! searchable by time; `o365.audit.CreationTime` keeps whatever was sent.
//!
//! # `o365.meta.*`
//!
//! `tenant_id`, `content_type`, `content_id`, `content_created`, `received` from [`Context`] (empty
//! strings and `None` are left out, so offline `map` runs do not emit blanks), `record_type_name`
//! (RecordType → Microsoft's `AuditLogRecordType` name; the number may come as a string) and
//! `user_type_name` (UserType → name), and in format `ecs` `operation` where the mapping renamed
//! the record's Operation (`Add user.` → `event.action: added-user-account`; outputs key on it). Unknown enumeration values give no name and no issue
//! (Microsoft adds record types often); values that are not integers give an issue.
//!
//! A record that is not a JSON object maps to `o365.audit._raw` (the value as is) plus meta, with an
//! issue.
//!
//! # Issues
//!
//! Reported, with the rest of the record still mapped: missing/unreadable `CreationTime`,
//! non-integer `RecordType`/`UserType`, a key produced twice by flattening (first value kept),
//! a record that is not an object, and (format `ecs`) a client address that is not an IP, a JSON
//! string field that does not parse, a `Data.sip` that is not an IP.
//!
//! # Cost
//!
//! One call clones the record's values into the event (the input is borrowed); flattened keys are
//! collected, sorted and bulk-loaded into the map. [`map_record_json`] gives the same bytes without
//! the map (and, for `o365`, without the copies). `benches/mapping.rs` measures map + encode.

pub mod cli;
pub mod clientip;
pub mod ecs;
pub mod enums;
pub mod graph;
pub mod graph_ecs;
mod json;
pub mod message_trace;
pub mod o365;

use serde_json::{Map, Value};

/// Key/value pairs collected before they are sorted and bulk-loaded into the event map (cheaper
/// than inserting dozens of keys one by one).
pub type Entries = Vec<(String, Value)>;

/// Where the mapping writes a key: the event map itself (format `raw`) or the entries vector.
trait Sink {
    fn put_value(&mut self, key: &str, value: Value);
}

impl Sink for Map<String, Value> {
    fn put_value(&mut self, key: &str, value: Value) {
        self.insert(key.to_owned(), value);
    }
}

impl Sink for Entries {
    fn put_value(&mut self, key: &str, value: Value) {
        self.push((key.to_owned(), value));
    }
}

/// Output shape chosen by `format:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    O365,
    Ecs,
    Raw,
}

/// Where a record came from (becomes `o365.meta.*`).
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub format: Format,
    pub tenant_id: &'a str,
    pub content_type: &'a str,
    pub content_id: &'a str,
    pub content_created: Option<&'a str>,
    /// RFC 3339 time the collector received the blob.
    pub received: &'a str,
    /// The tenant's configured `tenant_name` (format `ecs`: `organization.name`, `host.name`).
    pub tenant_name: Option<&'a str>,
    /// Loaded enrichment (format `ecs`: `user_agent.*`, `source.geo.*`, `source.as.*`).
    pub enrichment: Option<&'a crate::enrich::Enrichment>,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Self {
            format: Format::O365,
            tenant_id: "",
            content_type: "",
            content_id: "",
            content_created: None,
            received: "",
            tenant_name: None,
            enrichment: None,
        }
    }
}

/// A problem found while mapping one record; the rest of the record is still mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// The record field concerned (`CreationTime`, `ClientIP`, `ExtendedProperties.x`, or `""` for
    /// the record as a whole).
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

/// The mapped event: a flat JSON object with dotted keys.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub event: Map<String, Value>,
    pub issues: Vec<Issue>,
}

/// Maps one raw record. Pure and total: never panics.
pub fn map_record(raw: &Value, ctx: &Context<'_>) -> Mapped {
    if let Some(feed) = crate::graph::GraphFeed::from_content_type(ctx.content_type) {
        return graph::map(feed, raw, ctx);
    }
    let mut issues = Vec::new();
    let event = match raw {
        Value::Object(record) => match ctx.format {
            Format::Raw => {
                // Meta keys win over record keys of the same name (our provenance).
                let mut event = record.clone();
                add_meta(Some(record), ctx, &mut event, &mut issues);
                event
            }
            Format::O365 | Format::Ecs => {
                o365::into_map(entries(record, ctx, &mut issues), &mut issues)
            }
        },
        other => {
            let mut event = Map::new();
            not_an_object(other.clone(), ctx, &mut event, &mut issues);
            event
        }
    };
    Mapped { event, issues }
}

/// The flattened (`o365`) or ECS (`ecs`) event of an object record as unsorted entries, with
/// `@timestamp`, meta and (`ecs`) enrichment.
fn entries(record: &Map<String, Value>, ctx: &Context<'_>, issues: &mut Vec<Issue>) -> Entries {
    let mut entries = Vec::with_capacity(record.len() + 64);
    if ctx.format == Format::Ecs {
        // The tenant's configured name is enrichment's (`None`: Elastic's fallback).
        ecs::add_ecs(record, None, &mut entries, issues);
    } else {
        o365::flatten_into(record, &mut entries);
    }
    add_timestamp(record, ctx, &mut entries, issues);
    add_meta(Some(record), ctx, &mut entries, issues);
    if ctx.format == Format::Ecs {
        crate::enrich::apply(&mut entries, ctx);
    }
    entries
}

/// Maps one raw record and appends its event as JSON to `out`: exactly the bytes
/// `serde_json::to_writer(out, &map_record(raw, ctx).event)` writes, and the same issues, but
/// without building the event map (and, for `o365`, without copying the record's values). The
/// encoding path of the pipeline and the bench. An error (none is expected: every `Value`
/// encodes) may leave part of an event in `out`.
pub fn map_record_json(
    raw: &Value,
    ctx: &Context<'_>,
    out: &mut Vec<u8>,
) -> serde_json::Result<Vec<Issue>> {
    if let Some(feed) = crate::graph::GraphFeed::from_content_type(ctx.content_type) {
        return graph::map_json(feed, raw, ctx, out);
    }
    let mut issues = Vec::new();
    match (raw, ctx.format) {
        (Value::Object(record), Format::O365) => {
            let mut flat = o365::Borrowed::flatten(record);
            add_timestamp(record, ctx, &mut flat, &mut issues);
            add_meta(Some(record), ctx, &mut flat, &mut issues);
            flat.write(&mut issues, out)?;
        }
        (Value::Object(record), Format::Ecs) => {
            let mut entries = entries(record, ctx, &mut issues);
            o365::sort_dedup(&mut entries, "", &mut issues);
            o365::write_object(&entries, "", out)?;
        }
        _ => {
            let mapped = map_record(raw, ctx);
            json::write_map(out, &mapped.event)?;
            issues = mapped.issues;
        }
    }
    Ok(issues)
}

fn not_an_object(
    value: Value,
    ctx: &Context<'_>,
    event: &mut Map<String, Value>,
    issues: &mut Vec<Issue>,
) {
    issues.push(Issue {
        field: String::new(),
        problem: format!("record is not a JSON object but {}", kind_of(&value)),
    });
    event.insert("o365.audit._raw".to_owned(), value);
    add_meta(None, ctx, event, issues);
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn add_timestamp(
    record: &Map<String, Value>,
    ctx: &Context<'_>,
    event: &mut impl Sink,
    issues: &mut Vec<Issue>,
) {
    let problem = match record.get("CreationTime") {
        Some(Value::String(s)) => match creation_time_to_rfc3339(s) {
            Some(ts) => {
                event.put_value("@timestamp", Value::String(ts));
                return;
            }
            None => format!("not a date-time: {s:?}"),
        },
        Some(other) => format!("not a string but {}", kind_of(other)),
        None => "missing".to_owned(),
    };
    let fallback = if ctx.received.is_empty() {
        "; no @timestamp"
    } else {
        event.put_value("@timestamp", Value::String(ctx.received.to_owned()));
        "; @timestamp is the receive time"
    };
    issues.push(Issue {
        field: "CreationTime".to_owned(),
        problem: problem + fallback,
    });
}

fn add_meta(
    record: Option<&Map<String, Value>>,
    ctx: &Context<'_>,
    event: &mut impl Sink,
    issues: &mut Vec<Issue>,
) {
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            event.put_value(key, Value::String(value.to_owned()));
        }
    };
    put("o365.meta.tenant_id", ctx.tenant_id);
    put("o365.meta.content_type", ctx.content_type);
    put("o365.meta.content_id", ctx.content_id);
    put(
        "o365.meta.content_created",
        ctx.content_created.unwrap_or(""),
    );
    put("o365.meta.received", ctx.received);
    let Some(record) = record else { return };
    for (field, table, key) in [
        (
            "RecordType",
            &enums::RECORD_TYPE,
            "o365.meta.record_type_name",
        ),
        ("UserType", &enums::USER_TYPE, "o365.meta.user_type_name"),
    ] {
        let Some(value) = record.get(field) else {
            continue;
        };
        match enums::as_enum_int(value) {
            Some(n) => {
                if let Some(name) = table.name(n) {
                    event.put_value(key, Value::String(name.to_owned()));
                }
            }
            None => issues.push(Issue {
                field: field.to_owned(),
                problem: format!("not an integer: {}", short(value)),
            }),
        }
    }
}

/// A value shortened for an issue message (records can hold megabytes).
fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Converts Microsoft's `CreationTime` (`YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]`, UTC when no
/// zone is given) to RFC 3339 UTC with milliseconds. `None` when it is not such a date-time.
pub fn creation_time_to_rfc3339(s: &str) -> Option<String> {
    use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
    let s = s.trim();
    let has_zone =
        s.ends_with(['Z', 'z']) || s.get(19..).is_some_and(|tail| tail.contains(['+', '-']));
    if !has_zone && let Some(fast) = fast_naive(s) {
        return Some(fast);
    }
    let utc: DateTime<Utc> = if has_zone {
        DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc)
    } else {
        let t = s.replacen(' ', "T", 1);
        NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc()
    };
    Some(utc.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Fast path for the usual `YYYY-MM-DDTHH:MM:SS[.fraction]` without a zone: validates with
/// chrono's calendar and copies the text instead of parsing and formatting through chrono.
fn fast_naive(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?;
    chrono::NaiveTime::from_hms_opt(h, mi, sec)?;
    let frac = match &b[19..] {
        [] => &b""[..],
        [b'.', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            digits
        }
        _ => return None,
    };
    let mut out = String::with_capacity(24);
    out.push_str(&s[..19]);
    out.push('.');
    for i in 0..3 {
        out.push(char::from(*frac.get(i).unwrap_or(&b'0')));
    }
    out.push('Z');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(format: Format) -> Context<'static> {
        Context {
            format,
            tenant_id: "t",
            content_type: "Audit.General",
            content_id: "c",
            content_created: Some("2020-02-10T15:20:00.000Z"),
            received: "2020-02-10T15:21:00.000Z",
            ..Context::default()
        }
    }

    #[test]
    fn timestamp_conversion() {
        let c = creation_time_to_rfc3339;
        assert_eq!(
            c("2020-02-10T15:13:13").as_deref(),
            Some("2020-02-10T15:13:13.000Z")
        );
        assert_eq!(
            c("2021-02-03T17:11:39.1234567").as_deref(),
            Some("2021-02-03T17:11:39.123Z")
        );
        assert_eq!(
            c("2021-02-03T17:11:39Z").as_deref(),
            Some("2021-02-03T17:11:39.000Z")
        );
        assert_eq!(
            c("2021-02-03T17:11:39.5+01:00").as_deref(),
            Some("2021-02-03T16:11:39.500Z")
        );
        assert_eq!(
            c("2021-02-03 17:11:39").as_deref(),
            Some("2021-02-03T17:11:39.000Z")
        );
        for bad in [
            "",
            "yesterday",
            "2021-02-30T00:00:00",
            "2021-02-03",
            "2021-02-03T25:00:00",
            "2021-02-03T17:11:39+99:00",
        ] {
            assert_eq!(c(bad), None, "{bad}");
        }
    }

    #[test]
    fn meta_and_timestamp() {
        let m = map_record(
            &json!({"CreationTime": "2020-02-10T15:13:13", "RecordType": "25", "UserType": 2, "Id": "x"}),
            &ctx(Format::O365),
        );
        assert!(m.issues.is_empty(), "{:?}", m.issues);
        let e = &m.event;
        assert_eq!(e["@timestamp"], "2020-02-10T15:13:13.000Z");
        assert_eq!(e["o365.audit.RecordType"], "25");
        assert_eq!(e["o365.meta.record_type_name"], "MicrosoftTeams");
        assert_eq!(e["o365.meta.user_type_name"], "Admin");
        assert_eq!(e["o365.meta.tenant_id"], "t");
        assert_eq!(e["o365.meta.content_type"], "Audit.General");
        assert_eq!(e["o365.meta.content_id"], "c");
        assert_eq!(e["o365.meta.content_created"], "2020-02-10T15:20:00.000Z");
        assert_eq!(e["o365.meta.received"], "2020-02-10T15:21:00.000Z");
    }

    #[test]
    fn bad_creation_time_falls_back_to_received() {
        let m = map_record(
            &json!({"CreationTime": 5, "RecordType": "x"}),
            &ctx(Format::O365),
        );
        assert_eq!(m.event["@timestamp"], "2020-02-10T15:21:00.000Z");
        assert_eq!(m.issues.len(), 2);
        assert_eq!(m.issues[0].field, "CreationTime");
        assert_eq!(m.issues[1].field, "RecordType");
        let m = map_record(&json!({}), &Context::default());
        assert!(!m.event.contains_key("@timestamp"));
        assert!(!m.event.contains_key("o365.meta.tenant_id"));
    }

    #[test]
    fn raw_format_keeps_record() {
        let rec =
            json!({"CreationTime": "2020-02-10T15:13:13", "Item": {"Id": 1}, "RecordType": 1});
        let m = map_record(&rec, &ctx(Format::Raw));
        assert_eq!(m.event["Item"], json!({"Id": 1}));
        assert_eq!(m.event["CreationTime"], "2020-02-10T15:13:13");
        assert_eq!(m.event["o365.meta.record_type_name"], "ExchangeAdmin");
        assert!(!m.event.contains_key("@timestamp"));
    }

    #[test]
    fn json_path_writes_the_event_bytes() {
        let records = [
            json!({"CreationTime": "2020-02-10T15:13:13", "RecordType": 25, "UserType": "x",
                "ExtendedProperties": [{"Name": "a", "Value": 1}, {"Name": "a", "Value": "\"2\""}],
                "Item": {"Id": "é\u{1}"}, "Item.Id": 3, "ClientIP": "10.0.0.1:443",
                "Operation": "Add user.", "Empty": {}, "List": []}),
            json!({"CreationTime": 7}),
            json!({}),
            json!([1, {"a": 2}]),
            json!(null),
        ];
        for rec in &records {
            for format in [Format::O365, Format::Ecs, Format::Raw] {
                let m = map_record(rec, &ctx(format));
                let mut out = Vec::new();
                let issues = map_record_json(rec, &ctx(format), &mut out).unwrap();
                assert_eq!(
                    out,
                    serde_json::to_vec(&m.event).unwrap(),
                    "{format:?} {rec}"
                );
                assert_eq!(issues, m.issues, "{format:?} {rec}");
            }
        }
    }

    #[test]
    fn non_object_records() {
        for v in [json!(null), json!([1, 2]), json!("x"), json!(1)] {
            let m = map_record(&v, &ctx(Format::Ecs));
            assert_eq!(m.event["o365.audit._raw"], v);
            assert_eq!(m.issues.len(), 1);
        }
    }
}
