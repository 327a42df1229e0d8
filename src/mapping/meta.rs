//! What every event gets whatever its format: `@timestamp` from `CreationTime`, the
//! `o365.meta.*` keys, and the event of a record that is not a JSON object.

use serde_json::{Map, Value};

use super::context::Context;
use super::enums;
use super::event::{Issue, Sink, kind_of, short};
use super::time::creation_time_to_rfc3339;

/// A record that is not a JSON object: kept whole under `o365.audit._raw`, with an issue.
pub(crate) fn not_an_object(
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

/// `@timestamp` from `CreationTime`, else the receive time, with an issue.
pub(crate) fn add_timestamp(
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

/// `o365.meta.*` from the context, and the names of `RecordType` and `UserType`.
pub(crate) fn add_meta(
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
