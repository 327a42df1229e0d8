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
//! the map and without copying the values that reach the event unchanged (`o365`: all of them;
//! `ecs`: all but those Elastic's processors rename or rewrite), keys in one text sorted by their
//! first 24 bytes. `benches/mapping.rs` measures map + encode.

pub mod cli;
pub mod clientip;
pub mod context;
pub mod copilot;
pub mod ecs;
pub mod enrich;
pub mod enums;
pub mod event;
pub mod graph;
pub mod graph_ecs;
mod json;
pub mod message_trace;
mod meta;
pub mod o365;
pub mod time;

pub use context::{Context, Format};
pub use event::{Entries, Issue, Mapped};
pub use time::creation_time_to_rfc3339;

use serde_json::{Map, Value};

use meta::{add_meta, add_timestamp, not_an_object};

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
        enrich::apply(&mut entries, ctx.tenant_id, ctx.tenant_name, ctx.enrichment);
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
            // The steps of `entries`, into keys in one text and values borrowed where unchanged.
            let mut flat = o365::Borrowed::with_capacity(record.len() + 64);
            ecs::add_ecs_to(record, None, &mut flat, &mut issues);
            add_timestamp(record, ctx, &mut flat, &mut issues);
            add_meta(Some(record), ctx, &mut flat, &mut issues);
            enrich::apply_to(&mut flat, ctx.tenant_id, ctx.tenant_name, ctx.enrichment);
            flat.write(&mut issues, out)?;
        }
        _ => {
            let mapped = map_record(raw, ctx);
            json::write_map(out, &mapped.event)?;
            issues = mapped.issues;
        }
    }
    Ok(issues)
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
