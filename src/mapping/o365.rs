//! Flattening of a record into `o365.audit.*` keys (the `o365` format).
//!
//! Rules, applied recursively from each top-level field:
//! - scalars and non-special arrays are copied unchanged (numbers stay numbers, strings stay strings);
//! - objects are flattened into dotted keys; an empty object is kept as `{}` so the field is not lost;
//! - an array whose elements are all `{Name, Value}` objects (ExtendedProperties, DeviceProperties,
//!   Parameters, ExtraProperties, …) becomes one key per element: `<path>.<Name>` = Value, except
//!   the top-level `AuthDetails`, which stays a list as in Elastic's documents;
//! - an array whose elements are all `{Name, NewValue?, OldValue?}` objects (ModifiedProperties)
//!   becomes `<path>.<Name>.NewValue` / `.OldValue`, with spaces and dots in Name replaced by `_`;
//! - empty arrays are kept as `[]` (Elastic drops them; we keep values unchanged);
//! - `CopilotEventData`'s `Contexts`, `AccessedResources`, `Messages`, `AISystemPlugin` stay lists
//!   of objects, and its counts are added ([`super::copilot`]).
//!
//! A key produced twice (two elements with the same Name, or a top-level key `"A.B"` beside an
//! object `A` holding `B`) keeps the first value and reports an issue, so nothing is silently
//! overwritten.
//!
//! Speed: keys are collected into a vector, sorted once and bulk-loaded into the map, which is
//! cheaper than inserting dozens of keys sharing the `o365.audit.` prefix one by one. The encoding
//! path ([`super::map_record_json`]) skips the map: keys go into one text, values are borrowed
//! from the record, and the sorted entries are written as JSON directly.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Range;

use serde_json::{Map, Value};

use super::event::{Entries, Issue, Out, Sink};

/// Prefix of every flattened record key.
pub const AUDIT_PREFIX: &str = "o365.audit.";

/// `{Name, Value}` lists Elastic keeps as lists (`o365.audit.AuthDetails: [{Name, Value}]`): the
/// names are per-attempt details that repeat, not properties of the record.
const KEPT_AS_LISTS: [&str; 1] = ["AuthDetails"];

/// Flattens all fields of `record` under `o365.audit.` into a new map.
pub fn flatten_record(record: &Map<String, Value>, issues: &mut Vec<Issue>) -> Map<String, Value> {
    let mut entries = Vec::with_capacity(record.len() + 16);
    flatten_into(record, &mut entries);
    into_map(entries, issues)
}

/// Appends the flattened fields of `record` to `entries` (unsorted; see [`into_map`]).
pub fn flatten_into(record: &Map<String, Value>, entries: &mut Entries) {
    flatten_with(record, &mut |k, v| entries.push((k.to_owned(), v.clone())));
    super::copilot::add_counts(record, entries);
}

/// Calls `emit` with each flattened key and the record's value for it, in record order.
fn flatten_with<'a>(record: &'a Map<String, Value>, emit: &mut impl FnMut(&str, &'a Value)) {
    let mut path = String::with_capacity(128);
    path.push_str(AUDIT_PREFIX);
    for (k, v) in record {
        let len = path.len();
        path.push_str(k);
        if KEPT_AS_LISTS.contains(&k.as_str()) && v.is_array() {
            emit(&path, v);
        } else if let (super::copilot::FIELD, Value::Object(data)) = (k.as_str(), v)
            && !data.is_empty()
        {
            // A prompt's and a response's ids stay paired: these lists are never split.
            for (k2, child) in data {
                let len = path.len();
                path.push('.');
                path.push_str(k2);
                if super::copilot::KEPT_LISTS.contains(&k2.as_str()) && child.is_array() {
                    emit(&path, child);
                } else {
                    flatten_value(child, &mut path, emit);
                }
                path.truncate(len);
            }
        } else {
            flatten_value(v, &mut path, emit);
        }
        path.truncate(len);
    }
}

/// Sorts the entries stably and bulk-loads them. A duplicated `o365.audit.*` key keeps its first
/// value and is reported; for the keys the mapping adds itself the last value wins, as with
/// `Map::insert`.
pub fn into_map(mut entries: Entries, issues: &mut Vec<Issue>) -> Map<String, Value> {
    sort_dedup(&mut entries, "", issues);
    entries.into_iter().collect()
}

/// A key/value pair whose key may live in a shared key text (`keys`).
pub(crate) trait Keyed {
    fn key<'s>(&'s self, keys: &'s str) -> &'s str;
    fn value(&self) -> &Value;
    /// The order of the keys.
    fn cmp_key(&self, other: &Self, keys: &str) -> Ordering {
        self.key(keys).cmp(other.key(keys))
    }
    /// Whether the keys are equal.
    fn same_key(&self, other: &Self, keys: &str) -> bool {
        self.key(keys) == other.key(keys)
    }
    /// Appends the key as a JSON string.
    fn write_key(&self, keys: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
        super::json::write_str(out, self.key(keys))
    }
}

impl Keyed for (String, Value) {
    fn key<'s>(&'s self, _: &'s str) -> &'s str {
        &self.0
    }
    fn value(&self) -> &Value {
        &self.1
    }
}

/// An entry of [`Borrowed`]: the key's place in the key text, its first 24 bytes as numbers (most
/// keys share `o365.audit.`, so comparing whole keys was a large part of the sort), whether the
/// key needs JSON escaping (checked once, when pushed, as the key text is warm), the value.
pub(crate) struct Slot<'a> {
    head: (u64, u128),
    key: Range<usize>,
    escape: bool,
    value: Cow<'a, Value>,
}

impl Keyed for Slot<'_> {
    fn key<'s>(&'s self, keys: &'s str) -> &'s str {
        keys.get(self.key.clone()).unwrap_or_default()
    }
    fn value(&self) -> &Value {
        &self.value
    }
    fn cmp_key(&self, other: &Self, keys: &str) -> Ordering {
        // Zero-padded big-endian prefixes order as the bytes do; equal prefixes (also a key and
        // the same key plus NULs) are decided by the whole keys.
        self.head
            .cmp(&other.head)
            .then_with(|| self.key(keys).cmp(other.key(keys)))
    }
    fn same_key(&self, other: &Self, keys: &str) -> bool {
        // Most neighbours differ in their first 24 bytes: no need to read the key text.
        self.head == other.head && self.key(keys) == other.key(keys)
    }
    fn write_key(&self, keys: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if self.escape {
            return super::json::write_str(out, self.key(keys));
        }
        super::json::write_plain_str(out, self.key(keys));
        Ok(())
    }
}

/// The rules of [`into_map`], in place: a stable sort by key, then duplicates removed (first value
/// of an `o365.audit.*` key kept and reported, last value of any other key kept).
pub(crate) fn sort_dedup<T: Keyed>(entries: &mut Vec<T>, keys: &str, issues: &mut Vec<Issue>) {
    entries.sort_by(|a, b| a.cmp_key(b, keys));
    // `later` is removed when the closure says true; `kept` is the earlier entry that stays.
    entries.dedup_by(|later, kept| {
        if !later.same_key(kept, keys) {
            return false;
        }
        match later.key(keys).strip_prefix(AUDIT_PREFIX) {
            Some(field) => issues.push(Issue {
                field: field.to_owned(),
                problem: "key produced twice (duplicate Name or dotted key); first value kept"
                    .to_owned(),
            }),
            None => std::mem::swap(later, kept),
        }
        true
    });
}

/// Writes sorted, de-duplicated entries as one JSON object: the bytes `serde_json` writes for the
/// map they would be collected into (a `Map` iterates in key order), without building it.
pub(crate) fn write_object<T: Keyed>(
    entries: &[T],
    keys: &str,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    out.push(b'{');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write_key(keys, out)?;
        out.push(b':');
        super::json::write_value(out, e.value())?;
    }
    out.push(b'}');
    Ok(())
}

/// The `o365` event of one record before it is written: keys in one text, values borrowed from
/// the record (only `@timestamp` and meta are owned), so flattening allocates almost nothing.
pub(crate) struct Borrowed<'a> {
    keys: String,
    entries: Vec<Slot<'a>>,
}

impl<'a> Borrowed<'a> {
    /// An empty event with room for `entries` keys.
    pub(crate) fn with_capacity(entries: usize) -> Self {
        Self {
            keys: String::with_capacity(2048),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Flattens `record` (the rules of [`flatten_into`]).
    pub(crate) fn flatten(record: &'a Map<String, Value>) -> Self {
        let mut b = Self::with_capacity(record.len() + 32);
        flatten_with(record, &mut |k, v| b.push(k, Cow::Borrowed(v)));
        super::copilot::add_counts(record, &mut b);
        b
    }

    fn push(&mut self, key: &str, value: Cow<'a, Value>) {
        let start = self.keys.len();
        self.keys.push_str(key);
        let mut head = [0u8; 24];
        let n = key.len().min(24);
        head[..n].copy_from_slice(&key.as_bytes()[..n]);
        let (a, b) = head.split_at(8);
        self.entries.push(Slot {
            head: (
                u64::from_be_bytes(a.try_into().unwrap_or_default()),
                u128::from_be_bytes(b.try_into().unwrap_or_default()),
            ),
            key: start..self.keys.len(),
            escape: super::json::needs_escape(key),
            value,
        });
    }

    /// Sorts, de-duplicates (as [`into_map`]) and writes the event as JSON.
    pub(crate) fn write(
        mut self,
        issues: &mut Vec<Issue>,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        sort_dedup(&mut self.entries, &self.keys, issues);
        write_object(&self.entries, &self.keys, out)
    }
}

impl Sink for Borrowed<'_> {
    fn put_value(&mut self, key: &str, value: Value) {
        self.push(key, Cow::Owned(value));
    }
}

impl<'a> Out<'a> for Borrowed<'a> {
    fn put_cow(&mut self, key: &str, value: Cow<'a, Value>) {
        self.push(key, value);
    }
    fn get(&self, key: &str) -> Option<&Value> {
        let keys = self.keys.as_str();
        self.entries
            .iter()
            .find(|e| e.key(keys) == key)
            .map(|e| &*e.value)
    }
    fn set(&mut self, key: &str, value: Value) {
        let keys = self.keys.as_str();
        match self.entries.iter_mut().find(|e| e.key(keys) == key) {
            Some(e) => e.value = Cow::Owned(value),
            None => self.push(key, Cow::Owned(value)),
        }
    }
}

/// Flattens one value found at `path` (which the function leaves as it found it).
fn flatten_value<'a>(v: &'a Value, path: &mut String, out: &mut impl FnMut(&str, &'a Value)) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                flatten_value(child, path, out);
                path.truncate(len);
            }
        }
        Value::Array(a) if !a.is_empty() => match array_kind(a) {
            ArrayKind::NameValue => {
                for el in a {
                    if let (Some(name), Some(value)) =
                        (el.get("Name").and_then(Value::as_str), el.get("Value"))
                    {
                        let len = path.len();
                        path.push('.');
                        push_name(path, name, false);
                        flatten_value(value, path, out);
                        path.truncate(len);
                    }
                }
            }
            ArrayKind::Modified => {
                for el in a {
                    let Some(name) = el.get("Name").and_then(Value::as_str) else {
                        continue;
                    };
                    let len = path.len();
                    path.push('.');
                    push_name(path, name, true);
                    for side in ["NewValue", "OldValue"] {
                        if let Some(value) = el.get(side) {
                            let len2 = path.len();
                            path.push('.');
                            path.push_str(side);
                            out(path, value);
                            path.truncate(len2);
                        }
                    }
                    path.truncate(len);
                }
            }
            ArrayKind::Plain => out(path, v),
        },
        _ => out(path, v),
    }
}

/// Appends a Name to the key; ModifiedProperties names get spaces and dots replaced by `_`
/// (Elastic's convention, so `Included Updated Properties` → `Included_Updated_Properties`).
/// An empty name becomes `_` so the key never ends in a dot.
fn push_name(path: &mut String, name: &str, sanitize: bool) {
    if name.is_empty() {
        path.push('_');
    } else if sanitize {
        path.extend(
            name.chars()
                .map(|c| if c == ' ' || c == '.' { '_' } else { c }),
        );
    } else {
        path.push_str(name);
    }
}

/// How an array is flattened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayKind {
    /// All elements are exactly `{Name: string, Value}`.
    NameValue,
    /// All elements are `{Name: string}` plus `NewValue` and/or `OldValue` and nothing else.
    Modified,
    /// Anything else: kept as an array.
    Plain,
}

/// Classifies a non-empty array.
pub fn array_kind(a: &[Value]) -> ArrayKind {
    let mut kind = None;
    for el in a {
        let Value::Object(o) = el else {
            return ArrayKind::Plain;
        };
        if !matches!(o.get("Name"), Some(Value::String(_))) {
            return ArrayKind::Plain;
        }
        let this = if o.len() == 2 && o.contains_key("Value") {
            ArrayKind::NameValue
        } else if (2..=3).contains(&o.len())
            && o.keys()
                .all(|k| k == "Name" || k == "NewValue" || k == "OldValue")
        {
            ArrayKind::Modified
        } else {
            return ArrayKind::Plain;
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => return ArrayKind::Plain,
            Some(_) => {}
        }
    }
    kind.unwrap_or(ArrayKind::Plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(v: Value) -> (Map<String, Value>, Vec<Issue>) {
        let mut issues = Vec::new();
        let event = flatten_record(v.as_object().unwrap(), &mut issues);
        (event, issues)
    }

    #[test]
    fn modified_properties_naming() {
        let (e, issues) = flat(json!({"ModifiedProperties": [
            {"Name": "Included Updated Properties", "NewValue": "X", "OldValue": ""},
            {"Name": "ServicePrincipal.AppId", "NewValue": "[\"a\"]", "OldValue": "[]"},
            {"Name": "OnlyNew", "NewValue": 3}
        ]}));
        assert!(issues.is_empty());
        assert_eq!(
            e["o365.audit.ModifiedProperties.Included_Updated_Properties.NewValue"],
            "X"
        );
        assert_eq!(
            e["o365.audit.ModifiedProperties.Included_Updated_Properties.OldValue"],
            ""
        );
        assert_eq!(
            e["o365.audit.ModifiedProperties.ServicePrincipal_AppId.NewValue"],
            "[\"a\"]"
        );
        assert_eq!(e["o365.audit.ModifiedProperties.OnlyNew.NewValue"], 3);
        assert!(!e.contains_key("o365.audit.ModifiedProperties.OnlyNew.OldValue"));
    }

    #[test]
    fn name_value_arrays_any_field() {
        let (e, _) = flat(json!({
            "DeviceProperties": [{"Name": "OS", "Value": "Windows 10"}, {"Name": "BrowserType", "Value": "Edge"}],
            "ExtraProperties": [{"Name": "k", "Value": 1}],
            "Parameters": [{"Name": "Identity", "Value": "x"}]
        }));
        assert_eq!(e["o365.audit.DeviceProperties.OS"], "Windows 10");
        assert_eq!(e["o365.audit.DeviceProperties.BrowserType"], "Edge");
        assert_eq!(e["o365.audit.ExtraProperties.k"], 1);
        assert_eq!(e["o365.audit.Parameters.Identity"], "x");
    }

    #[test]
    fn nested_objects_and_plain_arrays() {
        let (e, _) = flat(json!({
            "Item": {"Id": "x", "ParentFolder": {"Path": "\\Inbox"}},
            "Actor": [{"ID": "a", "Type": 5}],
            "Empty": [], "EmptyObj": {}, "N": 1.5, "S": "1", "B": true, "Z": null,
            "Mixed": [{"Name": "a", "Value": 1}, {"Name": "b", "NewValue": 2}]
        }));
        assert_eq!(e["o365.audit.Item.Id"], "x");
        assert_eq!(e["o365.audit.Item.ParentFolder.Path"], "\\Inbox");
        assert_eq!(e["o365.audit.Actor"], json!([{"ID": "a", "Type": 5}]));
        assert_eq!(e["o365.audit.Empty"], json!([]));
        assert_eq!(e["o365.audit.EmptyObj"], json!({}));
        assert_eq!(e["o365.audit.N"], 1.5);
        assert_eq!(e["o365.audit.S"], "1");
        assert_eq!(e["o365.audit.B"], true);
        assert_eq!(e["o365.audit.Z"], Value::Null);
        assert!(e["o365.audit.Mixed"].is_array());
    }

    #[test]
    fn auth_details_stay_a_list() {
        let details = json!([{"Name": "x", "Value": "1"}, {"Name": "x", "Value": "2"}]);
        let (e, issues) = flat(json!({ "AuthDetails": details }));
        assert!(issues.is_empty());
        assert_eq!(e["o365.audit.AuthDetails"], details);
    }

    #[test]
    fn duplicates_keep_first_and_report() {
        let (e, issues) = flat(json!({
            "ExtendedProperties": [{"Name": "a", "Value": 1}, {"Name": "a", "Value": 2}, {"Name": "", "Value": 3}]
        }));
        assert_eq!(e["o365.audit.ExtendedProperties.a"], 1);
        assert_eq!(e["o365.audit.ExtendedProperties._"], 3);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "ExtendedProperties.a");
    }
}
