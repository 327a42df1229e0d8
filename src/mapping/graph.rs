//! Records of the Microsoft Graph feeds → flat events (pure, total, like [`super::map_record`]).
//!
//! Sign-ins, directory audits and service health go under `o365.signin.*`,
//! `o365.directory_audit.*` and `o365.service_health.*` with Microsoft's property names, values
//! unchanged: nested objects dotted (`o365.signin.status.errorCode`,
//! `o365.signin.location.geoCoordinates.latitude`); lists of `{key, value}` / `{name, value}`
//! (`additionalDetails`, `details`) as `<path>.<key>`; lists of `{displayName, oldValue, newValue}`
//! (`modifiedProperties`) as `<path>.<displayName>.oldValue|newValue`, spaces and dots in the name
//! as `_` — the rules Name/Value arrays follow in `o365.audit.*`. Other lists stay lists
//! (`targetResources`, `posts`, `appliedConditionalAccessPolicies`), each object element flattened
//! the same way inside. Message trace has its own documented names ([`super::message_trace`]).
//!
//! `@timestamp` is the feed's time property (sign-in `createdDateTime`, audit
//! `activityDateTime`, trace `receivedDateTime`, service health `lastModifiedDateTime`: an update
//! is a new event); `o365.meta.record_id` is the record's identity (the outputs' dedup key).
//! `format: ecs` adds the ECS fields of [`super::graph_ecs`].

use serde_json::{Map, Value};

use super::context::{Context, Format};
use super::enrich;
use super::event::{Entries, Issue, Mapped, Sink, kind_of};
use super::meta::{add_meta, not_an_object};
use crate::graph::GraphFeed;

/// Prefix of a feed's own fields.
pub fn prefix(feed: GraphFeed) -> &'static str {
    match feed {
        GraphFeed::SignIns => "o365.signin.",
        GraphFeed::DirectoryAudits => "o365.directory_audit.",
        GraphFeed::MessageTrace => "o365.message.",
        GraphFeed::ServiceHealth => "o365.service_health.",
    }
}

/// Maps one Graph record of `feed` (see the module doc).
pub fn map(feed: GraphFeed, raw: &Value, ctx: &Context<'_>) -> Mapped {
    let mut issues = Vec::new();
    let event = match raw {
        Value::Object(record) if ctx.format == Format::Raw => {
            let mut event = record.clone();
            add_meta(Some(record), ctx, &mut event, &mut issues);
            if let Some(id) = feed.identity(record) {
                event.insert("o365.meta.record_id".into(), Value::String(id));
            }
            event
        }
        Value::Object(record) => {
            let entries = entries(feed, record, ctx, &mut issues);
            super::o365::into_map(entries, &mut issues)
        }
        other => {
            let mut event = Map::new();
            not_an_object(other.clone(), ctx, &mut event, &mut issues);
            event
        }
    };
    Mapped { event, issues }
}

/// [`map`], written as JSON to `out` (the bytes `serde_json` writes for the mapped event).
pub fn map_json(
    feed: GraphFeed,
    raw: &Value,
    ctx: &Context<'_>,
    out: &mut Vec<u8>,
) -> serde_json::Result<Vec<Issue>> {
    if let (Value::Object(record), Format::O365 | Format::Ecs) = (raw, ctx.format) {
        let mut issues = Vec::new();
        let mut entries = entries(feed, record, ctx, &mut issues);
        super::o365::sort_dedup(&mut entries, "", &mut issues);
        super::o365::write_object(&entries, "", out)?;
        return Ok(issues);
    }
    let mapped = map(feed, raw, ctx);
    serde_json::to_writer(out, &mapped.event)?;
    Ok(mapped.issues)
}

fn entries(
    feed: GraphFeed,
    record: &Map<String, Value>,
    ctx: &Context<'_>,
    issues: &mut Vec<Issue>,
) -> Entries {
    let mut entries: Entries = Vec::with_capacity(record.len() + 32);
    match feed {
        GraphFeed::MessageTrace => super::message_trace::fields(record, &mut entries),
        _ => flatten(record, prefix(feed), &mut entries),
    }
    timestamp(feed, record, ctx, &mut entries, issues);
    add_meta(None, ctx, &mut entries, issues);
    if let Some(id) = feed.identity(record) {
        entries.put_value("o365.meta.record_id", Value::String(id));
    }
    if ctx.format == Format::Ecs {
        super::graph_ecs::add(feed, record, ctx, &mut entries);
        enrich::apply(&mut entries, ctx.tenant_id, ctx.tenant_name, ctx.enrichment);
    }
    entries
}

/// `@timestamp` from the feed's time property (message trace: also the legacy `Received`, UTC
/// without a zone); the receive time with an issue when it is missing or unreadable.
fn timestamp(
    feed: GraphFeed,
    record: &Map<String, Value>,
    ctx: &Context<'_>,
    entries: &mut Entries,
    issues: &mut Vec<Issue>,
) {
    let field = feed.time_property();
    let value = record.get(field).or_else(|| match feed {
        GraphFeed::MessageTrace => record.get("Received"),
        _ => None,
    });
    let problem = match value {
        Some(Value::String(s)) => match super::time::creation_time_to_rfc3339(s) {
            Some(ts) => {
                entries.put_value("@timestamp", Value::String(ts));
                return;
            }
            None => format!("not a date-time: {s:?}"),
        },
        Some(other) => format!("not a string but {}", kind_of(other)),
        None => "missing".to_owned(),
    };
    if !ctx.received.is_empty() {
        entries.put_value("@timestamp", Value::String(ctx.received.to_owned()));
    }
    issues.push(Issue {
        field: field.to_owned(),
        problem,
    });
}

/// Flattens `record` under `prefix` (the rules of the module doc).
pub fn flatten(record: &Map<String, Value>, prefix: &str, entries: &mut Entries) {
    let mut path = String::with_capacity(96);
    path.push_str(prefix);
    for (k, v) in record {
        if k.starts_with("@odata.") {
            continue;
        }
        let len = path.len();
        path.push_str(k);
        flatten_value(v, &mut path, entries);
        path.truncate(len);
    }
}

fn flatten_value(v: &Value, path: &mut String, entries: &mut Entries) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                if k.starts_with("@odata.") {
                    continue;
                }
                let len = path.len();
                path.push('.');
                path.push_str(k);
                flatten_value(child, path, entries);
                path.truncate(len);
            }
        }
        Value::Array(a) if !a.is_empty() => match list_kind(a) {
            List::KeyValue(key) => {
                for el in a {
                    let name = el.get(key).and_then(Value::as_str).unwrap_or("");
                    let len = path.len();
                    path.push('.');
                    push_name(path, name);
                    flatten_value(el.get("value").unwrap_or(&Value::Null), path, entries);
                    path.truncate(len);
                }
            }
            List::Modified => {
                for el in a {
                    let name = el.get("displayName").and_then(Value::as_str).unwrap_or("");
                    let len = path.len();
                    path.push('.');
                    push_name(path, name);
                    for side in ["oldValue", "newValue"] {
                        if let Some(value) = el.get(side) {
                            entries.push((format!("{path}.{side}"), value.clone()));
                        }
                    }
                    path.truncate(len);
                }
            }
            List::Plain => {
                entries.push((path.clone(), Value::Array(a.iter().map(nested).collect())))
            }
        },
        _ => entries.push((path.clone(), v.clone())),
    }
}

/// An element of a plain list: an object gets its own lists flattened as nested objects
/// (`targetResources[].modifiedProperties` → `{"Group_DisplayName": {"oldValue", "newValue"}}`).
fn nested(v: &Value) -> Value {
    let Value::Object(o) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, child) in o {
        if k.starts_with("@odata.") {
            continue;
        }
        let value = match child {
            Value::Array(a) if !a.is_empty() => match list_kind(a) {
                List::KeyValue(key) => Value::Object(
                    a.iter()
                        .map(|el| {
                            (
                                sanitize(el.get(key).and_then(Value::as_str).unwrap_or("")),
                                el.get("value").cloned().unwrap_or(Value::Null),
                            )
                        })
                        .collect(),
                ),
                List::Modified => Value::Object(
                    a.iter()
                        .map(|el| {
                            let mut sides = Map::new();
                            for side in ["oldValue", "newValue"] {
                                if let Some(value) = el.get(side) {
                                    sides.insert(side.to_owned(), value.clone());
                                }
                            }
                            (
                                sanitize(
                                    el.get("displayName").and_then(Value::as_str).unwrap_or(""),
                                ),
                                Value::Object(sides),
                            )
                        })
                        .collect(),
                ),
                List::Plain => Value::Array(a.iter().map(nested).collect()),
            },
            other => nested(other),
        };
        out.insert(k.clone(), value);
    }
    Value::Object(out)
}

enum List {
    /// Every element is `{<key>: string, value}` with `<key>` `key` or `name`.
    KeyValue(&'static str),
    /// Every element is `{displayName: string, oldValue?, newValue?}`.
    Modified,
    Plain,
}

fn list_kind(a: &[Value]) -> List {
    let all =
        |f: &dyn Fn(&Map<String, Value>) -> bool| a.iter().all(|el| el.as_object().is_some_and(f));
    for key in ["key", "name"] {
        if all(&|o| {
            o.len() == 2 && matches!(o.get(key), Some(Value::String(_))) && o.contains_key("value")
        }) {
            return List::KeyValue(key);
        }
    }
    if all(&|o| {
        matches!(o.get("displayName"), Some(Value::String(_)))
            && o.keys()
                .all(|k| k == "displayName" || k == "oldValue" || k == "newValue")
    }) {
        return List::Modified;
    }
    List::Plain
}

/// A name from a list element as a key part: spaces and dots → `_`, empty → `_`.
fn sanitize(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    name.chars()
        .map(|c| if c == ' ' || c == '.' { '_' } else { c })
        .collect()
}

fn push_name(path: &mut String, name: &str) {
    path.push_str(&sanitize(name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(format: Format, content_type: &'static str) -> Context<'static> {
        Context {
            format,
            tenant_id: "t",
            content_type,
            received: "2026-11-30T10:00:00.000Z",
            ..Context::default()
        }
    }

    #[test]
    fn sign_in_is_flattened_with_microsofts_names() {
        let rec = json!({
            "id": "s1", "createdDateTime": "2026-11-30T09:41:17.5123456Z",
            "status": {"errorCode": 53003, "failureReason": "blocked", "additionalDetails": null},
            "location": {"city": "Lyon", "geoCoordinates": {"latitude": 45.76, "longitude": 4.84}},
            "riskEventTypes_v2": ["unfamiliarFeatures"],
            "appliedConditionalAccessPolicies": [{"id": "p", "enforcedGrantControls": ["Block"], "result": "failure"}]
        });
        let m = map(
            GraphFeed::SignIns,
            &rec,
            &ctx(Format::O365, "Graph.SignIns"),
        );
        assert!(m.issues.is_empty(), "{:?}", m.issues);
        let e = &m.event;
        assert_eq!(e["@timestamp"], "2026-11-30T09:41:17.512Z");
        assert_eq!(e["o365.signin.status.errorCode"], 53003);
        assert_eq!(e["o365.signin.location.geoCoordinates.latitude"], 45.76);
        assert_eq!(
            e["o365.signin.riskEventTypes_v2"],
            json!(["unfamiliarFeatures"])
        );
        assert_eq!(
            e["o365.signin.appliedConditionalAccessPolicies"][0]["result"],
            "failure"
        );
        assert_eq!(e["o365.meta.record_id"], "s1");
        assert_eq!(e["o365.meta.content_type"], "Graph.SignIns");
    }

    #[test]
    fn audit_lists_are_flattened() {
        let rec = json!({
            "id": "a1", "activityDateTime": "2026-11-30T09:52:03.118Z",
            "initiatedBy": {"app": null, "user": {"userPrincipalName": "it@x", "@odata.type": "#microsoft.graph.userIdentity"}},
            "targetResources": [{"id": "u", "type": "User", "modifiedProperties": [
                {"displayName": "Group.DisplayName", "oldValue": null, "newValue": "\"Finance\""}]}],
            "additionalDetails": [{"key": "User-Agent", "value": "Mozilla/5.0"}]
        });
        let m = map(
            GraphFeed::DirectoryAudits,
            &rec,
            &ctx(Format::O365, "Graph.DirectoryAudits"),
        );
        let e = &m.event;
        assert_eq!(
            e["o365.directory_audit.additionalDetails.User-Agent"],
            "Mozilla/5.0"
        );
        assert_eq!(
            e["o365.directory_audit.initiatedBy.user.userPrincipalName"],
            "it@x"
        );
        assert_eq!(e["o365.directory_audit.initiatedBy.app"], Value::Null);
        assert!(!e.contains_key("o365.directory_audit.initiatedBy.user.@odata.type"));
        assert_eq!(
            e["o365.directory_audit.targetResources"][0]["modifiedProperties"]["Group_DisplayName"]
                ["newValue"],
            "\"Finance\""
        );
    }

    #[test]
    fn service_health_details_and_timestamp() {
        let rec = json!({"id": "EX1", "lastModifiedDateTime": "2026-11-30T09:05:12.41Z",
            "details": [{"name": "NotifyInApp", "value": "True"}], "posts": []});
        let m = map(
            GraphFeed::ServiceHealth,
            &rec,
            &ctx(Format::O365, "Graph.ServiceHealth"),
        );
        let e = &m.event;
        assert_eq!(e["o365.service_health.details.NotifyInApp"], "True");
        assert_eq!(e["@timestamp"], "2026-11-30T09:05:12.410Z");
        assert_eq!(e["o365.meta.record_id"], "EX1@2026-11-30T09:05:12.41Z");
    }

    #[test]
    fn json_path_matches_the_map() {
        let recs = [
            json!({"id": "s", "createdDateTime": "bad", "x": [{"key": "a", "value": 1}, {"key": "a", "value": 2}]}),
            json!(7),
            json!({"id": "t", "recipientAddress": "R@x", "status": "filteredAsSpam", "toIP": ""}),
        ];
        for feed in GraphFeed::ALL {
            for rec in &recs {
                for format in [Format::O365, Format::Ecs, Format::Raw] {
                    let c = ctx(format, feed.content_type());
                    let m = map(feed, rec, &c);
                    let mut out = Vec::new();
                    let issues = map_json(feed, rec, &c, &mut out).unwrap();
                    assert_eq!(out, serde_json::to_vec(&m.event).unwrap());
                    assert_eq!(issues, m.issues);
                }
            }
        }
    }
}
