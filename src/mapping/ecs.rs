//! The `ecs` format: what Elastic's o365 integration makes of a record, so dashboards and
//! detection rules written against it work on our events.
//!
//! The specification is Elastic's ingest pipeline for the o365 audit data stream; this module
//! follows it processor by processor, in its order, on a working copy of the record:
//! fields the pipeline *renames* into ECS leave `o365.audit` (`Id` → `event.id`, `Operation` →
//! `event.action`, …), fields it *converts* or *copies* stay; `Parameters`, `ExtendedProperties`
//! and `ModifiedProperties` become objects keyed by Name, JSON carried in strings (`Data`,
//! `OperationProperties`, `AdditionalInfo`) is parsed, numbers the pipeline turns into strings (`RecordType`,
//! `UserType`, `Version`, `Actor[].Type`, …) are strings. `tests/mapping_conformance.rs` checks the
//! result key by key against Elastic's own pipeline tests.
//!
//! Deliberate differences (each also in the README, with its reason):
//! - where Elastic's pipeline would fail the whole document (`pipeline_error`: a rename onto an
//!   existing field, unparsable `Data`, a non-IP `Data.sip`), we keep the value where it was and
//!   report an [`Issue`]; the rest of the record is mapped;
//! - `event.code` for a RecordType Elastic's table lacks is Microsoft's name (Elastic: none);
//! - `event.module`/`event.dataset` are written (Elastic's data stream adds them as constants);
//! - an empty Name in a Name/Value array becomes `_` (never a key ending in a dot);
//! - additions: `email.*` for Threat Intelligence mail, `session.id`/`token.id`/
//!   `application.name` from `AppAccessContext`, `o365.meta.operation` for a renamed Operation,
//!   Copilot and AI-app interactions (`CopilotEventData`, [`super::copilot`]);
//! - no `user_agent.*` parsing, GeoIP/ASN or tenant names here: that is enrichment
//!   ([`add_ecs`] takes the tenant's configured name; `None` falls back as Elastic does).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::copilot;
use super::enums;
use super::event::{Issue, Out, short};
use super::time::creation_time_to_rfc3339;

/// `ecs.version` of Elastic's pipeline.
pub const ECS_VERSION: &str = "8.11.0";

const DLP_CODES: [&str; 2] = ["ComplianceDLPSharePoint", "ComplianceDLPExchange"];

/// Every key the processors write, in key order: a [`Key`] is a place in this table, found when
/// the code is compiled ([`k!`]), so setting and reading a field costs no lookup by name and the
/// fields come out already in the event's order.
const ECS_KEYS: [&str; 76] = [
    "application.name",
    "client.address",
    "client.domain",
    "client.ip",
    "client.port",
    "destination.ip",
    "destination.user.domain",
    "destination.user.email",
    "destination.user.id",
    "destination.user.name",
    "ecs.version",
    "email.attachments",
    "email.delivery_timestamp",
    "email.direction",
    "email.from.address",
    "email.message_id",
    "email.sender.address",
    "email.subject",
    "email.to.address",
    "event.action",
    "event.category",
    "event.code",
    "event.dataset",
    "event.id",
    "event.kind",
    "event.module",
    "event.outcome",
    "event.provider",
    "event.severity",
    "event.type",
    "file.directory",
    "file.extension",
    "file.inode",
    "file.mtime",
    "file.name",
    "file.owner",
    "file.size",
    "group.name",
    "host.id",
    "host.name",
    "message",
    "network.type",
    "o365.meta.operation",
    "organization.id",
    "organization.name",
    "process.name",
    "related.ip",
    "related.user",
    "rule.category",
    "rule.description",
    "rule.id",
    "rule.name",
    "rule.reference",
    "rule.ruleset",
    "server.address",
    "server.domain",
    "server.ip",
    "session.id",
    "source.ip",
    "source.port",
    "source.user.domain",
    "source.user.email",
    "source.user.id",
    "source.user.name",
    "token.id",
    "url.original",
    "user.domain",
    "user.email",
    "user.full_name",
    "user.id",
    "user.name",
    "user.target.domain",
    "user.target.email",
    "user.target.id",
    "user.target.name",
    "user_agent.original",
];

/// An ECS key of [`ECS_KEYS`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(u8);

impl Key {
    /// The key named `name`; a name missing from the table fails the build (in `k!`).
    const fn of(name: &str) -> Key {
        let mut i = 0;
        while i < ECS_KEYS.len() {
            if const_str_eq(ECS_KEYS[i], name) {
                return Key(i as u8);
            }
            i += 1;
        }
        panic!("not in ECS_KEYS")
    }
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The [`Key`] of an ECS name, computed at compile time.
macro_rules! k {
    ($name:literal) => {
        const { Key::of($name) }
    };
}

/// The ECS side of the event while the processors run, one slot per key of [`ECS_KEYS`].
struct Fields<'r>([Option<Cow<'r, Value>>; ECS_KEYS.len()]);

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields([const { None }; ECS_KEYS.len()])
    }
}

impl<'r> Fields<'r> {
    fn slot(&mut self, key: Key) -> &mut Option<Cow<'r, Value>> {
        &mut self.0[usize::from(key.0)]
    }
    fn set(&mut self, key: Key, v: impl Into<Value>) {
        *self.slot(key) = Some(Cow::Owned(v.into()));
    }
    fn raw(&self, key: Key) -> Option<&Value> {
        self.0[usize::from(key.0)].as_deref()
    }
    fn get(&self, key: Key) -> Option<&Value> {
        self.raw(key).filter(|v| !v.is_null())
    }
    fn str(&self, key: Key) -> Option<&str> {
        self.raw(key).and_then(Value::as_str)
    }
    fn has(&self, key: Key) -> bool {
        self.get(key).is_some()
    }
    fn remove(&mut self, key: Key) -> Option<Value> {
        self.slot(key).take().map(Cow::into_owned)
    }
    /// The fields set, in key order.
    fn into_entries(self) -> impl Iterator<Item = (&'static str, Cow<'r, Value>)> {
        ECS_KEYS
            .into_iter()
            .zip(self.0)
            .filter_map(|(k, v)| Some((k, v?)))
    }
    /// Elastic's `append`: turns a scalar into a list; `allow_duplicates: false` skips a value
    /// already there.
    fn append(&mut self, key: Key, v: impl Into<Value>, allow_duplicates: bool) {
        let v = v.into();
        let slot = self
            .slot(key)
            .get_or_insert(Cow::Owned(Value::Array(Vec::new())))
            .to_mut();
        if !slot.is_array() {
            let old = slot.take();
            *slot = Value::Array(if old.is_null() { vec![] } else { vec![old] });
        }
        if let Value::Array(list) = slot
            && (allow_duplicates || !list.contains(&v))
        {
            list.push(v);
        }
    }
    /// Elastic's `rename` from the record into ECS. A target already set keeps its value and the
    /// source stays in the record (Elastic would fail the document).
    fn rename(&mut self, a: &mut Work<'r>, from: &str, to: Key) {
        if self.has(to) {
            return;
        }
        // A value the record holds stays borrowed.
        if let Some(v) = a.take(from) {
            *self.slot(to) = Some(v);
        }
    }
    /// Like [`Fields::rename`] for a field of a nested object of the record.
    fn rename_nested(&mut self, a: &mut Work<'r>, obj: &str, from: &str, to: Key) {
        if self.has(to) {
            return;
        }
        // Only an object that has the field is copied out of the record.
        if a.get(obj).and_then(|o| o.get(from)).is_none() {
            return;
        }
        if let Some(Value::Object(o)) = a.get_mut(obj)
            && let Some(v) = o.remove(from)
        {
            self.set(to, v);
        }
    }
}

/// The record as Elastic's processors change it: its values stay borrowed from the record until
/// a processor changes or moves one, and only that one is copied (a deep copy of every record
/// was the largest cost of the format).
///
/// The fields in key order (the record's own order), searched by halving; a field removed leaves
/// an empty place, so nothing moves (a tree map here cost node allocations for every record).
/// Each key's first 8 bytes are kept as a number: they tell most record keys apart, so a lookup
/// compares numbers, not strings (comparing keys was a tenth of `ecs`).
struct Work<'r>(Vec<(u64, &'r str, Option<Cow<'r, Value>>)>);

/// The first 8 bytes of `key`, zero-padded, big-endian: they order as the bytes do, and keys with
/// equal heads are decided by the whole keys.
fn head(key: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key.as_bytes()[..n]);
    u64::from_be_bytes(b)
}

impl<'r> Work<'r> {
    fn new(record: &'r Map<String, Value>) -> Self {
        Work(
            record
                .iter()
                .map(|(k, v)| (head(k), k.as_str(), Some(Cow::Borrowed(v))))
                .collect(),
        )
    }
    fn find(&self, key: &str) -> Result<usize, usize> {
        let h = head(key);
        self.0
            .binary_search_by(|(kh, k, _)| kh.cmp(&h).then_with(|| (*k).cmp(key)))
    }
    fn slot(&mut self, key: &str) -> Option<&mut Option<Cow<'r, Value>>> {
        let i = self.find(key).ok()?;
        Some(&mut self.0[i].2)
    }
    fn get(&self, key: &str) -> Option<&Value> {
        let i = self.find(key).ok()?;
        self.0[i].2.as_deref()
    }
    /// The value to change in place (copied out of the record first).
    fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.slot(key)?.as_mut().map(Cow::to_mut)
    }
    fn remove(&mut self, key: &str) -> Option<Value> {
        self.take(key).map(Cow::into_owned)
    }
    /// The record's own value of a field no processor has changed.
    fn borrowed(&self, key: &str) -> Option<&'r Value> {
        let i = self.find(key).ok()?;
        match self.0[i].2 {
            Some(Cow::Borrowed(v)) => Some(v),
            _ => None,
        }
    }
    fn take(&mut self, key: &str) -> Option<Cow<'r, Value>> {
        self.slot(key)?.take()
    }
    /// Removes a field without copying it out of the record.
    fn discard(&mut self, key: &str) {
        self.take(key);
    }
    fn insert(&mut self, key: &'static str, v: Value) {
        self.put(key, Cow::Owned(v));
    }
    fn put(&mut self, key: &'static str, v: Cow<'r, Value>) {
        match self.find(key) {
            Ok(i) => self.0[i].2 = Some(v),
            Err(i) => self.0.insert(i, (head(key), key, Some(v))),
        }
    }
    /// Replaces the value of a field the record has.
    fn replace(&mut self, key: &str, v: Value) {
        if let Some(slot) = self.slot(key) {
            *slot = Some(Cow::Owned(v));
        }
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|(_, _, v)| v.is_none())
    }
}

/// Elastic's `convert` to string: numbers and booleans as text, lists element by element.
fn to_string_value(v: &Value) -> Option<Value> {
    Some(match v {
        Value::String(_) => v.clone(),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Number(n) => Value::String(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            // Java's Double.toString keeps a ".0" on whole numbers.
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e7 => format!("{f:.1}"),
            _ => n.to_string(),
        }),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| to_string_value(x).unwrap_or_else(|| x.clone()))
                .collect(),
        ),
        Value::Null | Value::Object(_) => return None,
    })
}

fn convert_in_place(a: &mut Map<String, Value>, key: &str) {
    if let Some(v) = a.get_mut(key)
        && let Some(s) = to_string_value(v)
    {
        *v = s;
    }
}

/// [`convert_in_place`] for a field of the record: a string stays borrowed.
fn convert_field(a: &mut Work<'_>, key: &str) {
    if let Some(v) = a.get(key)
        && !v.is_string()
        && let Some(s) = to_string_value(v)
    {
        a.replace(key, s);
    }
}

/// JSON carried in a string field (`OperationProperties`, `AdditionalInfo`) replaced by its
/// parse; an empty list or object is dropped, as in Elastic's documents. Unparsable text is an
/// issue: `OperationProperties` is then left out (as Elastic does), other fields keep the text
/// (and plain text that does not start like JSON is simply kept).
fn stringly_json(a: &mut Work<'_>, key: &str, issues: &mut Vec<Issue>) {
    let Some(Value::String(s)) = a.get(key) else {
        return;
    };
    let looks_like_json = s.trim_start().starts_with(['{', '[']);
    if key != "OperationProperties" && !looks_like_json {
        return;
    }
    match parse_json_first_wins(s) {
        Ok(v) => {
            let empty = match &v {
                Value::Array(l) => l.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if empty {
                a.discard(key);
            } else {
                a.replace(key, v);
            }
        }
        Err(e) => {
            let dropped = key == "OperationProperties";
            if dropped {
                a.discard(key);
            }
            issues.push(Issue {
                field: key.to_owned(),
                problem: format!(
                    "not JSON ({e}); {}",
                    if dropped { "left out" } else { "kept as text" }
                ),
            });
        }
    }
}

/// Elastic's RecordType → `event.code` table is Microsoft's `AuditLogRecordType` names except
/// for these (older names, and types Microsoft's table no longer lists).
fn record_type_name(n: i64) -> Option<&'static str> {
    match n {
        12 => Some("Sway"),
        22 => Some("Yammer"),
        44 => Some("WorkplaceAnalytics"),
        93 => Some("AipDiscover"),
        94 => Some("AipSensitivityLabelAction"),
        95 => Some("AipProtectionAction"),
        96 => Some("AipFileDeleted"),
        97 => Some("AipHeartBeat"),
        _ => enums::RECORD_TYPE.name(n),
    }
}

/// A `{Name, Value}` list (`Parameters`, `ExtendedProperties`) as Elastic makes it an object
/// keyed by Name (later names win, null values skipped, an empty Name is `_`), kept as names
/// sorted beside values borrowed from the record: building that object copied every value and
/// name of the list, for every record.
struct Named<'r> {
    field: &'static str,
    entries: Vec<(Cow<'r, str>, &'r Value)>,
}

impl<'r> Named<'r> {
    fn get(&self, name: &str) -> Option<&'r Value> {
        let i = self.find(name)?;
        Some(self.entries[i].1)
    }
    fn remove(&mut self, name: &str) -> Option<&'r Value> {
        let i = self.find(name)?;
        Some(self.entries.remove(i).1)
    }
    fn find(&self, name: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
    }
}

/// Sorts by name, keeping the last of equal names (a map's insert).
fn last_wins<T>(entries: &mut Vec<(Cow<'_, str>, T)>) {
    // Lists usually come sorted and distinct already: a check is cheaper than a sort.
    if entries.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    entries.sort_by(|x, y| x.0.cmp(&y.0));
    entries.dedup_by(|later, kept| {
        if later.0 != kept.0 {
            return false;
        }
        std::mem::swap(later, kept);
        true
    });
}

/// `{Name, Value}` list → object keyed by Name ([`Named`], taken out of the work copy and put
/// back in key order by [`flatten_audit`]); a string → `{_raw: string}`.
fn name_value_object<'r>(a: &mut Work<'r>, key: &'static str) -> Option<Named<'r>> {
    match a.get(key) {
        // The list is still the record's own: no processor before this one changes it.
        Some(Value::Array(_)) => {
            let list = a.borrowed(key)?.as_array()?;
            a.discard(key);
            let mut entries = Vec::with_capacity(list.len());
            for el in list {
                let Value::Object(el) = el else { continue };
                let (Some(Value::String(name)), Some(value)) = (el.get("Name"), el.get("Value"))
                else {
                    continue;
                };
                if !value.is_null() {
                    entries.push((nonempty_name(name), value));
                }
            }
            last_wins(&mut entries);
            Some(Named {
                field: key,
                entries,
            })
        }
        Some(s @ Value::String(_)) => {
            let raw = Value::Object(Map::from_iter([("_raw".to_owned(), s.clone())]));
            a.replace(key, raw);
            None
        }
        _ => None,
    }
}

fn nonempty_name(name: &str) -> Cow<'_, str> {
    if name.is_empty() {
        Cow::Borrowed("_")
    } else {
        Cow::Borrowed(name)
    }
}

/// `ModifiedProperties` as [`modified_properties`] makes it: `(NewValue, OldValue)` per cleaned
/// Name, or none for a bare string; borrowed from the record, as [`Named`].
struct Modified<'r>(Vec<(Cow<'r, str>, Option<Change<'r>>)>);

/// `(NewValue, OldValue)` of a modified property.
type Change<'r> = (&'r Value, &'r Value);

/// `ModifiedProperties` → `{Name_with_underscores: {NewValue, OldValue}}` for entries with both
/// values; removed when none has.
fn modified_properties<'r>(a: &mut Work<'r>) -> Option<Modified<'r>> {
    const KEY: &str = "ModifiedProperties";
    match a.get(KEY) {
        // The list is still the record's own: no processor before this one changes it.
        Some(Value::Array(_)) => {
            let list = a.borrowed(KEY)?.as_array()?;
            a.discard(KEY);
            let clean = |n: &'r str| -> Cow<'r, str> {
                if n.is_empty() {
                    Cow::Borrowed("_")
                } else if n.contains([' ', '.']) {
                    Cow::Owned(n.replace([' ', '.'], "_"))
                } else {
                    Cow::Borrowed(n)
                }
            };
            let mut out = Vec::new();
            for el in list {
                match el {
                    Value::Object(o) => {
                        if let (Some(new), Some(old), Some(Value::String(name))) = (
                            o.get("NewValue").filter(|x| !x.is_null()),
                            o.get("OldValue").filter(|x| !x.is_null()),
                            o.get("Name"),
                        ) {
                            out.push((clean(name), Some((new, old))));
                        }
                    }
                    Value::String(s) => out.push((clean(s), None)),
                    _ => {}
                }
            }
            if out.is_empty() {
                return None;
            }
            last_wins(&mut out);
            Some(Modified(out))
        }
        Some(s @ Value::String(_)) => {
            let raw = Value::Object(Map::from_iter([("_raw".to_owned(), s.clone())]));
            a.insert(KEY, raw);
            None
        }
        _ => None,
    }
}

/// The lists taken out of the work copy, put back by [`flatten_audit`] where their keys were.
#[derive(Default)]
struct Lists<'r> {
    parameters: Option<Named<'r>>,
    extended: Option<Named<'r>>,
    modified: Option<Modified<'r>>,
}

/// `AlertLinks` → the list of their `AlertLinkHref`s; removed when there is none.
fn alert_links(a: &mut Work<'_>) {
    let Some(Value::Array(list)) = a.get("AlertLinks") else {
        return;
    };
    let links: Vec<Value> = list
        .iter()
        .filter_map(|l| l.get("AlertLinkHref").filter(|h| h.is_string()).cloned())
        .collect();
    if links.is_empty() {
        a.discard("AlertLinks");
    } else {
        a.insert("AlertLinks", Value::Array(links));
    }
}

/// Elastic's per-operation rules, in its order: append `value` to `field` when `event.action` is
/// one of `operations`.
type Rule = (Key, &'static str, &'static [&'static str]);

/// Applies `rules` for the current `event.action`.
fn apply_rules(f: &mut Fields<'_>, rules: &[Rule]) {
    let Some(action) = f.str(k!("event.action")).map(str::to_owned) else {
        return;
    };
    for (field, value, operations) in rules {
        if operations.contains(&action.as_str()) {
            f.append(*field, *value, true);
        }
    }
}

/// File operations (any workload).
const FILE_RULES: &[Rule] = &[
    (
        k!("event.category"),
        "file",
        &[
            "FileAccessed",
            "FileDeleted",
            "FileDownloaded",
            "FileModified",
            "FileMoved",
            "FileRenamed",
            "FileRestored",
            "FileUploaded",
            "FolderCopied",
            "FolderCreated",
            "FolderDeleted",
            "FolderModified",
            "FolderMoved",
            "FolderRenamed",
            "FolderRestored",
        ],
    ),
    (
        k!("event.category"),
        "configuration",
        &["ComplianceSettingChanged"],
    ),
    (
        k!("event.type"),
        "access",
        &["FileAccessed", "FileDownloaded"],
    ),
    (
        k!("event.type"),
        "change",
        &[
            "ComplianceSettingChanged",
            "FileModified",
            "FileMoved",
            "FileRenamed",
            "FileRestored",
            "FolderModified",
            "FolderMoved",
            "FolderRenamed",
            "FolderRestored",
        ],
    ),
    (
        k!("event.type"),
        "deletion",
        &["FileDeleted", "FolderDeleted"],
    ),
    (
        k!("event.type"),
        "creation",
        &["FileUploaded", "FolderCopied", "FolderCreated"],
    ),
];

const YAMMER_CONFIG: &[&str] = &[
    "NetworkConfigurationUpdated",
    "NetworkSecurityConfigurationUpdated",
    "SoftDeleteSettingsUpdated",
    "ProcessProfileFields",
    "SupervisorAdminToggled",
];

/// Viva Engage / Yammer operations.
const YAMMER_RULES: &[Rule] = &[
    (k!("event.category"), "configuration", YAMMER_CONFIG),
    (
        k!("event.category"),
        "iam",
        &[
            "NetworkSecurityConfigurationUpdated",
            "GroupCreation",
            "GroupDeletion",
            "NetworkUserSuspended",
            "UserSuspension",
        ],
    ),
    (
        k!("event.category"),
        "file",
        &[
            "FileCreated",
            "FileDownloaded",
            "FileShared",
            "FileUpdateDescription",
            "FileUpdateName",
            "FileVisited",
        ],
    ),
    (k!("event.type"), "change", YAMMER_CONFIG),
    (
        k!("event.type"),
        "admin",
        &["NetworkSecurityConfigurationUpdated"],
    ),
    (
        k!("event.type"),
        "creation",
        &["FileCreated", "GroupCreation", "FileUpdateName"],
    ),
    (k!("event.type"), "deletion", &["GroupDeletion"]),
    (
        k!("event.type"),
        "access",
        &[
            "FileDownloaded",
            "FileShared",
            "FileUpdateDescription",
            "FileVisited",
        ],
    ),
    (
        k!("event.type"),
        "group",
        &["GroupCreation", "GroupDeletion"],
    ),
];

/// An operation the pipeline renames into an ECS action with `iam` category and types.
fn iam_action(f: &mut Fields<'_>, from: &str, to: &'static str, types: &[&'static str]) -> bool {
    if f.str(k!("event.action")) != Some(from) {
        return false;
    }
    // The record's own Operation stays findable (the outputs' dedup key uses it).
    f.set(k!("o365.meta.operation"), from);
    f.set(k!("event.action"), to);
    f.append(k!("event.category"), "iam", true);
    for t in types {
        f.append(k!("event.type"), *t, true);
    }
    true
}

/// Adds the ECS fields and the `o365.audit.*` keys of `record` to `ev`. `tenant_name` is the
/// configured name of the record's tenant (Elastic's `_conf.tenants`), if any.
pub fn add_ecs(
    record: &Map<String, Value>,
    tenant_name: Option<&str>,
    ev: &mut super::event::Entries,
    issues: &mut Vec<Issue>,
) {
    add_ecs_to(record, tenant_name, ev, issues);
}

/// [`add_ecs`] into any [`Out`]: the JSON path borrows the record's values that reach the event
/// unchanged.
pub(crate) fn add_ecs_to<'r>(
    record: &'r Map<String, Value>,
    tenant_name: Option<&str>,
    ev: &mut impl Out<'r>,
    issues: &mut Vec<Issue>,
) {
    let mut a = Work::new(record);
    let mut f = Fields::default();

    f.set(k!("ecs.version"), ECS_VERSION);
    f.set(k!("event.module"), "o365");
    f.set(k!("event.dataset"), "o365.audit");
    f.set(k!("event.kind"), "event");
    f.append(k!("event.type"), "info", true);
    f.append(k!("event.category"), "web", true);
    f.rename(&mut a, "Id", k!("event.id"));
    convert_field(&mut a, "ListBaseType");
    let mut client_temp = ["ClientIPAddress", "ClientIP", "ActorIpAddress"]
        .into_iter()
        .find(|k| a.get(k).is_some_and(|v| !v.is_null()))
        .and_then(|k| a.remove(k));
    if let Some(uid) = a.get("UserId").and_then(to_string_value) {
        f.set(k!("user.id"), uid);
    }
    f.rename(&mut a, "Workload", k!("event.provider"));
    f.rename(&mut a, "Operation", k!("event.action"));
    f.rename(&mut a, "OrganizationId", k!("organization.id"));
    stringly_json(&mut a, "OperationProperties", issues);
    stringly_json(&mut a, "AdditionalInfo", issues);
    f.rename(&mut a, "UserAgent", k!("user_agent.original"));
    // Elastic looks the name up by the value's text: 25 and "25" both work, "25.0" does not.
    let code = match a.get("RecordType") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok().filter(|n: &i64| n.to_string() == *s),
        _ => None,
    }
    .and_then(record_type_name);
    if let Some(c) = code {
        f.set(k!("event.code"), c);
    }
    let outcome = match a.get("ResultStatus").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("failed") || s.eq_ignore_ascii_case("false") => "failure",
        _ => "success",
    };
    f.set(k!("event.outcome"), outcome);
    let mut lists = Lists {
        parameters: name_value_object(&mut a, "Parameters"),
        ..Lists::default()
    };
    if let Some(p) = a.get("Platform") {
        let name = match to_string_value(p).as_ref().and_then(Value::as_str) {
            Some("0") => Some("Unknown"),
            Some("1") => Some("Windows"),
            Some("2") => Some("MacOS"),
            Some("3") => Some("iOS"),
            Some("4") => Some("Android"),
            Some("5") => Some("Web Browser"),
            _ => None,
        };
        if let Some(n) = name {
            a.insert("Platform", Value::from(n));
        }
    }
    lists.extended = name_value_object(&mut a, "ExtendedProperties");
    lists.modified = modified_properties(&mut a);
    alert_links(&mut a);
    let severity = match a.get("Severity").and_then(Value::as_str) {
        Some("informational") => Some(1),
        Some("low") => Some(2),
        Some("medium") => Some(3),
        Some("high") => Some(4),
        _ => None,
    };
    if let Some(s) = severity {
        f.set(k!("event.severity"), s);
    }
    // A `Message` object is renamed so the `Message` string of other records keeps its type.
    if a.get("Message").is_some_and(Value::is_object)
        && let Some(m) = a.take("Message")
    {
        a.put("MessageObject", m);
    }

    let mut server_temp = None;
    match code {
        Some("ExchangeAdmin") => {
            f.rename(&mut a, "OrganizationName", k!("organization.name"));
            server_temp = a.remove("OriginatingServer");
        }
        Some("ExchangeItem") => {
            f.rename(&mut a, "MailboxOwnerUPN", k!("user.email"));
            if !f.has(k!("user.id"))
                && let Some(sid) = a.get("LogonUserSid").and_then(to_string_value)
            {
                f.set(k!("user.id"), sid);
            }
            f.rename(&mut a, "LogonUserDisplayName", k!("user.full_name"));
            f.rename(&mut a, "OrganizationName", k!("organization.name"));
            server_temp = a.remove("OriginatingServer");
            if client_temp.is_none() {
                client_temp = a.remove("ClientIPAddress");
            }
            f.rename(&mut a, "ClientProcessName", k!("process.name"));
        }
        Some("AzureActiveDirectory") => {
            if let Some(o) = a.get("ObjectId") {
                f.set(k!("user.target.id"), o.clone());
            }
            iam_action(
                &mut f,
                "Add user.",
                "added-user-account",
                &["user", "creation"],
            );
            iam_action(
                &mut f,
                "Update user.",
                "modified-user-account",
                &["user", "change"],
            );
            iam_action(
                &mut f,
                "Delete user.",
                "deleted-user-account",
                &["user", "deletion"],
            );
        }
        Some("AzureActiveDirectoryStsLogon") => {
            f.append(k!("event.category"), "authentication", true);
            f.append(k!("event.type"), "start", true);
            f.append(k!("event.type"), "access", true);
        }
        Some("SharePointFileOperation" | "SharePointSharingOperation") => {
            f.rename(&mut a, "ObjectId", k!("url.original"));
            f.rename(&mut a, "SourceRelativeUrl", k!("file.directory"));
            f.rename(&mut a, "SourceFileName", k!("file.name"));
            f.rename(&mut a, "SourceFileExtension", k!("file.extension"));
        }
        _ => {}
    }
    apply_rules(&mut f, FILE_RULES);

    match code {
        Some("SecurityComplianceAlerts") => security_alert(&mut a, &mut f),
        Some(c) if DLP_CODES.contains(&c) => dlp(&mut a, &mut f),
        Some("Yammer") => yammer(&mut a, &mut f),
        Some("MicrosoftTeams") => teams(&mut a, &mut f),
        Some("ThreatIntelligence") => mail(&a, &mut f),
        _ => {}
    }

    addresses(client_temp, server_temp, &mut f, issues);
    for keys in [
        [
            k!("user.id"),
            k!("user.email"),
            k!("user.domain"),
            k!("user.name"),
        ],
        [
            k!("user.target.id"),
            k!("user.target.email"),
            k!("user.target.domain"),
            k!("user.target.name"),
        ],
        [
            k!("source.user.id"),
            k!("source.user.email"),
            k!("source.user.domain"),
            k!("source.user.name"),
        ],
        [
            k!("destination.user.id"),
            k!("destination.user.email"),
            k!("destination.user.domain"),
            k!("destination.user.name"),
        ],
    ] {
        split_mail(&mut f, keys);
    }
    if let Some(ip) = f.str(k!("client.ip")) {
        let t = if ip.contains(':') { "ipv6" } else { "ipv4" };
        f.set(k!("network.type"), t);
    }
    for (from, to) in [
        (k!("client.ip"), k!("related.ip")),
        (k!("server.ip"), k!("related.ip")),
        (k!("user.name"), k!("related.user")),
        (k!("user.target.name"), k!("related.user")),
        (k!("file.owner"), k!("related.user")),
    ] {
        if let Some(v) = f.get(from).and_then(template_text) {
            f.append(to, v, false);
        }
    }
    let user = match &lists.parameters {
        Some(p) => p.get("User"),
        None => a.get("Parameters").and_then(|p| p.get("User")),
    };
    if let Some(u) = user.and_then(template_text) {
        f.append(k!("related.user"), u, false);
    }
    if !f.has(k!("user_agent.original")) {
        match &mut lists.extended {
            Some(e) => {
                if let Some(ua) = e.remove("UserAgent") {
                    f.set(k!("user_agent.original"), ua.clone());
                }
            }
            None => f.rename_nested(
                &mut a,
                "ExtendedProperties",
                "UserAgent",
                k!("user_agent.original"),
            ),
        }
    }
    host_and_organization(&mut f, tenant_name);
    for key in [
        "AzureActiveDirectoryEventType",
        "RecordType",
        "UserType",
        "Version",
        "InternalLogonType",
        "LogonType",
        "ActorYammerUserId",
        "YammerNetworkId",
    ] {
        convert_field(&mut a, key);
    }
    for list in ["Actor", "Target"] {
        // Copied out of the record only when some `Type` is not text already.
        let to_convert = |item: &Value| {
            matches!(
                item.get("Type"),
                Some(Value::Bool(_) | Value::Number(_) | Value::Array(_))
            )
        };
        if let Some(Value::Array(items)) = a.get(list)
            && items.iter().any(to_convert)
            && let Some(Value::Array(items)) = a.get_mut(list)
        {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                convert_in_place(item, "Type");
            }
        }
    }
    app_access_context(&a, &mut f);
    if let Some(size) = a.get("FileSize").and_then(file_size) {
        f.set(k!("file.size"), size);
    }
    data(&mut a, &mut f, issues);
    let added = copilot_interaction(&a, &mut f);

    flatten_audit(a, lists, ev);
    for (k, v) in added {
        ev.put_value(&k, v);
    }
    for (k, v) in f.into_entries() {
        ev.put_cow(k, v);
    }
}

/// Copilot and AI-app interactions (Elastic has no mapping yet; ours, in the README): the
/// interaction is an access (`event.type: access`), of files too (`event.category: file`) when
/// Copilot read resources; web addresses among `Contexts` go to `url.original` (one string, or a
/// list when several), the first document context to `file.name`/`file.extension`, and the
/// counts and distinct `AccessedResources[].SensitivityLabelId`s beside the record's lists (a
/// record field of the same name wins).
fn copilot_interaction(a: &Work<'_>, f: &mut Fields<'_>) -> Vec<(String, Value)> {
    let Some(Value::Object(data)) = a.get(copilot::FIELD) else {
        return Vec::new();
    };
    f.append(k!("event.type"), "access", false);
    if data
        .get("AccessedResources")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
    {
        f.append(k!("event.category"), "file", false);
    }
    let mut urls: Vec<Value> = copilot::context_urls(data)
        .into_iter()
        .map(Value::from)
        .collect();
    if !f.has(k!("url.original")) && !urls.is_empty() {
        let url = if urls.len() == 1 {
            urls.swap_remove(0)
        } else {
            Value::Array(urls)
        };
        f.set(k!("url.original"), url);
    }
    if let Some((name, ext)) = copilot::document(data) {
        if !f.has(k!("file.extension")) {
            f.set(k!("file.extension"), ext);
        }
        if let Some(n) = name
            && !f.has(k!("file.name"))
        {
            f.set(k!("file.name"), n);
        }
    }
    // Beside the record's own keys (which win), without copying the interaction.
    let mut added: Vec<(String, Value)> = Vec::new();
    let mut add = |k: &str, v: Value| {
        if !data.contains_key(k) {
            added.push((format!("o365.audit.{}.{k}", copilot::FIELD), v));
        }
    };
    for (k, n) in copilot::counts(data) {
        add(k, Value::from(n));
    }
    let labels = copilot::sensitivity_label_ids(data);
    if !labels.is_empty() {
        add("sensitivity_label_ids", Value::Array(labels));
    }
    added
}

/// The text Elastic's `{{field}}` template gives for a value: strings as they are, numbers and
/// booleans as text; nothing for lists, objects and null.
fn template_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

/// `file.size` from `FileSize` (a number, or a number written as a string).
fn file_size(v: &Value) -> Option<u64> {
    let f = match v {
        Value::Number(n) => return n.as_u64().or_else(|| whole(n.as_f64()?)),
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    whole(f)
}

fn whole(f: f64) -> Option<u64> {
    // Saturating float → integer conversion; negative and non-finite sizes are no sizes.
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// `session.id`, `token.id`, `application.name`: Elastic's field definitions list them (its
/// ECS-extended fields) with the meanings of `AppAccessContext`'s `AADSessionId`,
/// `UniqueTokenId` and `ClientAppName`; copied, the record keeps its own.
fn app_access_context(a: &Work<'_>, f: &mut Fields<'_>) {
    let Some(ctx) = a.get("AppAccessContext").and_then(Value::as_object) else {
        return;
    };
    for (from, to) in [
        ("AADSessionId", k!("session.id")),
        ("UniqueTokenId", k!("token.id")),
        ("ClientAppName", k!("application.name")),
    ] {
        if let Some(Value::String(v)) = ctx.get(from)
            && !v.is_empty()
        {
            f.set(to, v.as_str());
        }
    }
}

/// Security & Compliance alerts (RecordType 40).
fn security_alert<'r>(a: &mut Work<'r>, f: &mut Fields<'r>) {
    f.rename(a, "Comments", k!("message"));
    f.rename(a, "Name", k!("rule.name"));
    f.rename(a, "PolicyId", k!("rule.id"));
    f.rename(a, "Category", k!("rule.category"));
    f.rename(a, "EntityType", k!("rule.ruleset"));
    f.rename(a, "AlertEntityId", k!("rule.description"));
    f.rename(a, "AlertLinks", k!("rule.reference"));
    f.set(k!("event.kind"), "alert");
    // Elastic's category rules test `Category` after it was moved to `rule.category`, so they
    // never fire; the same holds for the user fields it would take from `AlertEntityId`.
    f.append(k!("event.category"), "web", false);
    f.append(k!("event.type"), "info", false);
}

/// Data loss prevention (RecordType 11 and 13).
fn dlp<'r>(a: &mut Work<'r>, f: &mut Fields<'r>) {
    const SP: &str = "SharePointMetaData";
    const EX: &str = "ExchangeMetaData";
    f.set(k!("event.kind"), "alert");
    f.append(k!("event.category"), "file", true);
    f.append(k!("event.type"), "access", true);
    if !f.has(k!("user.id")) {
        f.rename_nested(a, SP, "From", k!("user.id"));
    }
    f.rename_nested(a, SP, "FileName", k!("file.name"));
    f.rename_nested(a, SP, "FilePathUrl", k!("url.original"));
    f.rename_nested(a, SP, "UniqueId", k!("file.inode"));
    f.rename_nested(a, SP, "UniqueID", k!("file.inode"));
    f.rename_nested(a, SP, "FileOwner", k!("file.owner"));
    f.rename_nested(a, EX, "From", k!("source.user.email"));
    f.rename_nested(a, EX, "Subject", k!("message"));
    f.rename(a, "PolicyId", k!("rule.id"));
    f.rename(a, "PolicyName", k!("rule.name"));
    if let Some(t) = a
        .get(SP)
        .and_then(|m| m.get("LastModifiedTime"))
        .and_then(Value::as_str)
        .and_then(creation_time_to_rfc3339)
    {
        f.set(k!("file.mtime"), t);
    }
    if let Some(m) = a.get(EX) {
        let mut to = Vec::new();
        for k in ["To", "CC", "BCC"] {
            match m.get(k) {
                Some(Value::Array(list)) => to.extend(list.iter().cloned()),
                Some(s @ Value::String(_)) => to.push(s.clone()),
                _ => {}
            }
        }
        f.set(k!("destination.user.email"), Value::Array(to));
    }
    if let Some(Value::String(_)) = a.get("ExceptionInfo")
        && let Some(s) = a.remove("ExceptionInfo")
    {
        a.insert(
            "ExceptionInfo",
            Value::Object(Map::from_iter([("Reason".to_owned(), s)])),
        );
    }
    let Some(policies) = a.get("PolicyDetails").filter(|p| !p.is_null()) else {
        return;
    };
    let mut ids = list_of(f.remove(k!("rule.id")));
    let mut names = list_of(f.remove(k!("rule.name")));
    let mut max_severity = 0;
    let mut allowed = true;
    let rules = policies
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("Rules")?.as_array())
        .flatten();
    for rule in rules {
        if let (Some(id), Some(name)) = (
            rule.get("RuleId").filter(|v| !v.is_null()),
            rule.get("RuleName").filter(|v| !v.is_null()),
        ) {
            ids.push(id.clone());
            names.push(name.clone());
        }
        let sev = match rule
            .get("Severity")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("informational") => 1,
            Some("low") => 2,
            Some("medium") => 3,
            Some("high") => 4,
            _ => 0,
        };
        max_severity = max_severity.max(sev);
        if rule
            .get("Actions")
            .and_then(Value::as_array)
            .is_some_and(|acts| acts.iter().any(|x| x == "BlockAccess"))
        {
            allowed = false;
        }
    }
    f.set(k!("rule.id"), Value::Array(ids));
    f.set(k!("rule.name"), Value::Array(names));
    f.set(k!("event.severity"), max_severity);
    let excepted = match a.get("ExceptionInfo") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(l)) => !l.is_empty(),
        Some(_) => true,
    };
    let outcome = match f.str(k!("event.action")) {
        _ if allowed => "success",
        Some("DlpRuleUndo") => "success",
        Some("DlpInfo") => "failure",
        _ if excepted => "success",
        _ => "failure",
    };
    f.set(k!("event.outcome"), outcome);
}

fn list_of(v: Option<Value>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(l)) => l,
        Some(other) => vec![other],
    }
}

/// Viva Engage / Yammer (RecordType 22).
fn yammer<'r>(a: &mut Work<'r>, f: &mut Fields<'r>) {
    f.rename(a, "ActorUserId", k!("user.email"));
    if !f.has(k!("user.id"))
        && let Some(id) = a.get("ActorYammerUserId").and_then(to_string_value)
    {
        f.set(k!("user.id"), id);
    }
    f.rename(a, "FileId", k!("file.inode"));
    f.rename(a, "FileName", k!("file.name"));
    f.rename(a, "GroupName", k!("group.name"));
    f.rename(a, "TargetUserId", k!("destination.user.email"));
    f.rename(a, "TargetYammerUserId", k!("destination.user.id"));
    apply_rules(f, YAMMER_RULES);
}

/// Microsoft Teams (RecordType 25).
fn teams<'r>(a: &mut Work<'r>, f: &mut Fields<'r>) {
    iam_action(
        f,
        "TeamCreated",
        "added-group-account-to",
        &["group", "creation"],
    );
    f.rename(a, "TeamName", k!("group.name"));
    iam_action(
        f,
        "MemberAdded",
        "added-users-to-group",
        &["group", "change"],
    );
    if iam_action(
        f,
        "Delete user.",
        "deleted-user-account",
        &["user", "deletion"],
    ) {
        f.rename(a, "ObjectId", k!("user.target.id"));
    }
    if let Some(Value::Array(members)) = a.get("Members") {
        for m in members {
            if let Some(Value::String(upn)) = m.get("UPN")
                && !upn.is_empty()
            {
                f.append(k!("related.user"), upn.as_str(), true);
            }
        }
    }
}

/// ECS `email.*` for Threat Intelligence mail records (RecordType 28). Not in the pipeline we
/// follow: named after ECS's definitions of the fields; the record keeps its own fields too.
fn mail(a: &Work<'_>, f: &mut Fields<'_>) {
    let text = |k: &str| a.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(v) = text("InternetMessageId") {
        f.set(k!("email.message_id"), v);
    }
    if let Some(v) = text("Subject") {
        f.set(k!("email.subject"), v);
    }
    if let Some(v) = text("P2Sender") {
        f.set(k!("email.from.address"), Value::Array(vec![v.into()]));
    }
    if let Some(v) = text("P1Sender") {
        f.set(k!("email.sender.address"), v);
    }
    if let Some(Value::Array(to)) = a.get("Recipients") {
        let to: Vec<Value> = to.iter().filter(|v| v.is_string()).cloned().collect();
        if !to.is_empty() {
            f.set(k!("email.to.address"), Value::Array(to));
        }
    }
    if let Some(v) = text("Directionality") {
        f.set(k!("email.direction"), v.to_ascii_lowercase());
    }
    if let Some(t) = text("MessageTime").and_then(creation_time_to_rfc3339) {
        f.set(k!("email.delivery_timestamp"), t);
    }
    if let Some(Value::Array(items)) = a.get("AttachmentData") {
        let attachments: Vec<Value> = items
            .iter()
            .filter_map(Value::as_object)
            .map(|att| {
                let mut file = Map::new();
                if let Some(n) = att.get("FileName").filter(|v| v.is_string()) {
                    file.insert("name".into(), n.clone());
                }
                if let Some(t) = att.get("FileType").filter(|v| v.is_string()) {
                    file.insert("mime_type".into(), t.clone());
                }
                if let Some(h) = att.get("SHA256").filter(|v| v.is_string()) {
                    let hash = Map::from_iter([("sha256".to_owned(), h.clone())]);
                    file.insert("hash".into(), Value::Object(hash));
                }
                Value::Object(Map::from_iter([("file".to_owned(), Value::Object(file))]))
            })
            .collect();
        if !attachments.is_empty() {
            f.set(k!("email.attachments"), Value::Array(attachments));
        }
    }
    if let Some(ip) = text("SenderIp").filter(|s| s.parse::<std::net::IpAddr>().is_ok()) {
        f.append(k!("related.ip"), ip, false);
    }
}

/// `<prefix>.id` of the form `name@domain` → `.email`, `.name`, `.domain`.
fn split_mail(f: &mut Fields<'_>, [id, email, domain, name]: [Key; 4]) {
    let Some(id) = f.str(id).map(str::to_owned) else {
        return;
    };
    let mut parts = id.split('@');
    let (Some(n), Some(d), None) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    f.set(email, id.as_str());
    f.set(domain, d);
    f.set(name, n);
}

fn host_and_organization(f: &mut Fields<'_>, tenant_name: Option<&str>) {
    if let Some(org) = f.slot(k!("organization.id"))
        && let Value::String(id) = &**org
        && (!id.is_ascii() || id.bytes().any(|b| b.is_ascii_uppercase()))
    {
        *org = Cow::Owned(Value::String(id.to_lowercase()));
    }
    if let Some(org) = f.get(k!("organization.id")).cloned() {
        f.set(k!("host.id"), org);
        if let Some(name) = tenant_name {
            f.set(k!("organization.name"), name);
            f.set(k!("host.name"), name);
        }
    }
    if !f.has(k!("host.name")) {
        if let Some(n) = f.get(k!("organization.name")).cloned() {
            f.set(k!("host.name"), n);
        } else if let Some(d) = f.get(k!("user.domain")).cloned() {
            f.set(k!("host.name"), d);
        }
    }
}

/// `Data` (JSON in a string) → `Data.flattened` plus the known short keys beside it, dates
/// normalised, mail addresses into `related.user`.
fn data(a: &mut Work<'_>, f: &mut Fields<'_>, issues: &mut Vec<Issue>) {
    const KNOWN: [&str; 59] = [
        "ad", "af", "aii", "ail", "alk", "als", "an", "at", "cid", "cpid", "dm", "dpn", "eid",
        "etps", "etype", "f3u", "fvs", "imsgid", "lon", "mat", "md", "ms", "od", "op", "ot", "plk",
        "pud", "reid", "rid", "sev", "sict", "sid", "sip", "sitmi", "srt", "ssic", "suid", "tdc",
        "te", "thn", "tht", "tid", "tpid", "tpt", "trc", "ts", "tsd", "ttdt", "ttr", "upfc",
        "upfv", "ut", "von", "wl", "zfh", "zfn", "zmfh", "zmfn", "zu",
    ];
    let Some(raw) = a.remove("Data") else { return };
    let parsed = match raw {
        Value::String(s) => match parse_json_first_wins(&s) {
            Ok(v) => v,
            Err(e) => {
                issues.push(Issue {
                    field: "Data".into(),
                    problem: format!("not JSON ({e}); kept as text in Data.flattened"),
                });
                Value::String(s)
            }
        },
        other => other,
    };
    let mut out = Map::new();
    if let Value::Object(o) = &parsed {
        for k in KNOWN {
            if let Some(v) = o.get(k) {
                out.insert(k.to_owned(), v.clone());
            }
        }
    }
    for k in ["at", "md", "te", "ts", "ttdt"] {
        if let Some(Value::String(s)) = out.get(k)
            && let Some(t) = creation_time_to_rfc3339(s)
        {
            out.insert(k.to_owned(), Value::String(t));
        }
    }
    if let Some(sip) = out.get("sip")
        && sip
            .as_str()
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            .is_none()
    {
        issues.push(Issue {
            field: "Data.sip".into(),
            problem: format!("not an IP address: {}", short(sip)),
        });
    }
    for k in ["f3u", "suid", "tsd", "trc"] {
        if let Some(Value::String(s)) = out.get(k)
            && s.split('@').count() == 2
            && s.chars().count() >= 3
        {
            f.append(k!("related.user"), s.as_str(), false);
        }
    }
    // A mail-bearing alert names the message by its Internet message id.
    if let Some(Value::String(id)) = out.get("imsgid")
        && !f.has(k!("email.message_id"))
    {
        f.set(k!("email.message_id"), id.as_str());
    }
    out.insert("flattened".into(), parsed);
    a.insert("Data", Value::Object(out));
}

/// Parses JSON where a key repeated in an object keeps its first value (Elastic's parser does;
/// serde_json's `Value` keeps the last).
pub fn parse_json_first_wins(s: &str) -> Result<Value, serde_json::Error> {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct First(Value);
    impl<'de> Deserialize<'de> for First {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(FirstVisitor)
        }
    }
    struct FirstVisitor;
    impl<'de> Visitor<'de> for FirstVisitor {
        type Value = First;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<First, E> {
            Ok(First(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<First, E> {
            Ok(First(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<First, E> {
            Ok(First(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<First, E> {
            Ok(First(
                serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
            ))
        }
        fn visit_str<E>(self, v: &str) -> Result<First, E> {
            Ok(First(Value::String(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<First, E> {
            Ok(First(Value::String(v)))
        }
        fn visit_unit<E>(self) -> Result<First, E> {
            Ok(First(Value::Null))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First, A::Error> {
            let mut out = Vec::new();
            while let Some(First(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(First(Value::Array(out)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<First, A::Error> {
            let mut out = Map::new();
            while let Some((k, First(v))) = map.next_entry::<String, First>()? {
                out.entry(k).or_insert(v);
            }
            Ok(First(Value::Object(out)))
        }
    }
    let mut de = serde_json::Deserializer::from_str(s);
    let First(v) = First::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// `o365.audit.*` keys: nested objects become dotted keys (an empty one stays `{}`), lists stay
/// lists, as in Elastic's documents. Values the processors left alone stay borrowed.
fn flatten_audit<'r>(a: Work<'r>, lists: Lists<'r>, ev: &mut impl Out<'r>) {
    fn walk<'r>(path: &mut String, v: Cow<'r, Value>, ev: &mut impl Out<'r>) {
        match v {
            Cow::Borrowed(Value::Object(o)) if !o.is_empty() => {
                for (k, child) in o {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    walk(path, Cow::Borrowed(child), ev);
                    path.truncate(len);
                }
            }
            Cow::Owned(Value::Object(o)) if !o.is_empty() => {
                for (k, child) in o {
                    let len = path.len();
                    path.push('.');
                    path.push_str(&k);
                    walk(path, Cow::Owned(child), ev);
                    path.truncate(len);
                }
            }
            other => ev.put_cow(path, other),
        }
    }
    /// `path.name` for each name, walked as the object they stand for.
    fn walk_names<'r, T>(
        path: &mut String,
        names: &[(Cow<'r, str>, T)],
        ev: &mut impl Out<'r>,
        mut each: impl FnMut(&mut String, &T, &mut dyn FnMut(&mut String, Cow<'r, Value>)),
    ) where
        T: Copy,
    {
        if names.is_empty() {
            ev.put_value(path, Value::Object(Map::new()));
            return;
        }
        for (name, v) in names {
            let len = path.len();
            path.push('.');
            path.push_str(name);
            each(path, v, &mut |p, x| walk(p, x, ev));
            path.truncate(len);
        }
    }
    let mut path = String::with_capacity(128);
    path.push_str("o365.audit");
    let Lists {
        parameters,
        extended,
        modified,
    } = lists;
    if a.is_empty() && parameters.is_none() && extended.is_none() && modified.is_none() {
        ev.put_value(&path, Value::Object(Map::new()));
        return;
    }
    for (_, k, v) in a.0 {
        path.push('.');
        path.push_str(k);
        match v {
            Some(v) => walk(&mut path, v, ev),
            None => {
                // A list taken out by a processor goes back in its place.
                for named in [&parameters, &extended].into_iter().flatten() {
                    if named.field == k {
                        walk_names(&mut path, &named.entries, ev, |p, v, w| {
                            w(p, Cow::Borrowed(*v))
                        });
                    }
                }
                if let Some(m) = modified.as_ref().filter(|_| k == "ModifiedProperties") {
                    walk_names(&mut path, &m.0, ev, |p, pair, w| match pair {
                        Some((new, old)) => {
                            for (side, v) in [("NewValue", *new), ("OldValue", *old)] {
                                let len = p.len();
                                p.push('.');
                                p.push_str(side);
                                w(p, Cow::Borrowed(v));
                                p.truncate(len);
                            }
                        }
                        None => w(p, Cow::Owned(Value::Object(Map::new()))),
                    });
                }
            }
        }
        path.truncate("o365.audit".len());
    }
}

/// Client and server addresses as Elastic's grok patterns read them, then `client.ip`,
/// `source.*`, `server.ip`, `destination.ip`.
fn addresses(
    client: Option<Value>,
    server: Option<Value>,
    f: &mut Fields<'_>,
    issues: &mut Vec<Issue>,
) {
    if let Some(Value::String(raw)) = client
        && !raw.is_empty()
    {
        let text = strip_ipv4_mapped(&raw);
        let parts = super::clientip::grok_client(&text);
        if let Some(d) = parts.domain {
            f.set(k!("client.domain"), d);
        }
        if let Some(addr) = parts.address {
            if addr.parse::<std::net::IpAddr>().is_ok() {
                f.set(k!("client.ip"), addr);
            } else {
                issues.push(Issue {
                    field: "ClientIP".into(),
                    problem: format!("not an IP address: {:?}", short(&Value::from(addr))),
                });
            }
            f.set(k!("client.address"), addr);
        }
        if let Some(p) = parts.port.and_then(|p| p.parse::<u64>().ok()) {
            f.set(k!("client.port"), p);
        }
    }
    if let Some(Value::String(raw)) = server {
        let text: String = raw.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        if !text.is_empty() {
            let (domain, address) = super::clientip::grok_server(&text);
            if let Some(d) = domain {
                f.set(k!("server.domain"), d);
            }
            f.set(k!("server.address"), address);
            if address.parse::<std::net::IpAddr>().is_ok() {
                f.set(k!("server.ip"), address);
            }
        }
    }
    if let Some(ip) = f.get(k!("client.ip")).cloned() {
        f.set(k!("source.ip"), ip);
    }
    if let Some(p) = f.get(k!("client.port")).cloned() {
        f.set(k!("source.port"), p);
    }
    if let Some(ip) = f.get(k!("server.ip")).cloned() {
        f.set(k!("destination.ip"), ip);
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d` anywhere in the text (Elastic's gsub).
fn strip_ipv4_mapped(s: &str) -> std::borrow::Cow<'_, str> {
    const MARK: &str = "::ffff:";
    if !s.contains(MARK) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(MARK) {
        let after = &rest[i + MARK.len()..];
        let n = dotted_quad_len(after);
        out.push_str(&rest[..i]);
        if n > 0 {
            out.push_str(&after[..n]);
        } else {
            out.push_str(MARK);
        }
        rest = &after[n..];
    }
    out.push_str(rest);
    out.into()
}

/// Length of a leading `[0-9]+.[0-9]+.[0-9]+.[0-9]+`, or 0.
fn dotted_quad_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    for group in 0..4 {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return 0;
        }
        if group < 3 {
            if b.get(i) != Some(&b'.') {
                return 0;
            }
            i += 1;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ecs(v: Value) -> (Map<String, Value>, Vec<Issue>) {
        let mut ev = Vec::new();
        let mut issues = Vec::new();
        add_ecs(v.as_object().unwrap(), None, &mut ev, &mut issues);
        (ev.into_iter().collect(), issues)
    }

    #[test]
    fn outcome_follows_elastic() {
        for (s, o) in [
            ("Succeeded", "success"),
            ("InProgress", "success"),
            ("Failed", "failure"),
            ("FALSE", "failure"),
            ("Weird", "success"),
        ] {
            let (ev, _) = ecs(json!({ "ResultStatus": s }));
            assert_eq!(ev["event.outcome"], o, "{s}");
        }
    }

    #[test]
    fn logon_record() {
        let (ev, issues) = ecs(json!({
            "RecordType": 15, "Operation": "UserLoginFailed", "ResultStatus": "Failed",
            "UserId": "asr@example.com", "ClientIP": "[2001:db8::1]:443", "OrganizationId": "ORG",
            "Id": "id1", "Workload": "AzureActiveDirectory", "UserType": 0,
            "ExtendedProperties": [{"Name": "UserAgent", "Value": "Mozilla"}, {"Name": "x", "Value": null}]
        }));
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(ev["event.category"], json!(["web", "authentication"]));
        assert_eq!(ev["event.type"], json!(["info", "start", "access"]));
        assert_eq!(ev["event.outcome"], "failure");
        assert_eq!(ev["event.code"], "AzureActiveDirectoryStsLogon");
        assert_eq!(ev["event.id"], "id1");
        assert_eq!(ev["user.name"], "asr");
        assert_eq!(ev["host.name"], "example.com");
        assert_eq!(ev["host.id"], "org");
        assert_eq!(ev["source.ip"], "2001:db8::1");
        assert_eq!(ev["source.port"], 443);
        assert_eq!(ev["network.type"], "ipv6");
        assert_eq!(ev["related.ip"], json!(["2001:db8::1"]));
        assert_eq!(ev["related.user"], json!(["asr"]));
        assert_eq!(ev["user_agent.original"], "Mozilla");
        assert_eq!(ev["o365.audit.UserType"], "0");
        assert!(!ev.contains_key("o365.audit.Id"));
        assert!(!ev.contains_key("o365.audit.ClientIP"));
        assert!(!ev.contains_key("o365.audit.ExtendedProperties.x"));
        assert!(!ev.contains_key("o365.audit.ExtendedProperties.UserAgent"));
    }

    #[test]
    fn alert_data_is_parsed() {
        let (ev, issues) = ecs(json!({
            "RecordType": 40, "Name": "Rule", "PolicyId": "p", "Category": "ThreatManagement",
            "AlertLinks": [{"AlertLinkHref": "https://x/1"}, {"AlertLinkHref": ""}, {"Nope": 1}],
            "Data": "{\"f3u\":\"a@b.c\",\"ts\":\"2020-02-14T18:54:45.0000000Z\",\"k\":1,\"k\":2}"
        }));
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(ev["event.kind"], "alert");
        assert_eq!(ev["rule.name"], "Rule");
        assert_eq!(ev["rule.category"], "ThreatManagement");
        assert_eq!(ev["rule.reference"], json!(["https://x/1", ""]));
        assert_eq!(ev["o365.audit.Data.ts"], "2020-02-14T18:54:45.000Z");
        assert_eq!(
            ev["o365.audit.Data.flattened.ts"],
            "2020-02-14T18:54:45.0000000Z"
        );
        assert_eq!(ev["o365.audit.Data.flattened.k"], 1);
        assert_eq!(ev["related.user"], json!(["a@b.c"]));
    }

    #[test]
    fn broken_json_strings_are_issues() {
        let (ev, issues) = ecs(json!({"Data": "{", "OperationProperties": "[", "RecordType": 64}));
        assert_eq!(issues.len(), 2);
        assert_eq!(ev["o365.audit.Data.flattened"], "{");
        assert!(!ev.contains_key("o365.audit.OperationProperties"));
    }

    #[test]
    fn threat_intelligence_mail() {
        let (ev, _) = ecs(json!({
            "RecordType": 28, "Operation": "TIMailData", "InternetMessageId": "<m@x>",
            "Subject": "Hi", "P1Sender": "a@x.com", "P2Sender": "b@x.com",
            "Recipients": ["c@y.com"], "SenderIp": "192.0.2.1", "Directionality": "Inbound",
            "MessageTime": "2024-01-01T00:00:00",
            "AttachmentData": [{"FileName": "a.pdf", "FileType": "pdf", "SHA256": "ab"}]
        }));
        assert_eq!(ev["email.message_id"], "<m@x>");
        assert_eq!(ev["email.from.address"], json!(["b@x.com"]));
        assert_eq!(ev["email.sender.address"], "a@x.com");
        assert_eq!(ev["email.to.address"], json!(["c@y.com"]));
        assert_eq!(ev["email.direction"], "inbound");
        assert_eq!(ev["email.delivery_timestamp"], "2024-01-01T00:00:00.000Z");
        assert_eq!(
            ev["email.attachments"],
            json!([{"file": {"name": "a.pdf", "mime_type": "pdf", "hash": {"sha256": "ab"}}}])
        );
        assert_eq!(ev["related.ip"], json!(["192.0.2.1"]));
        assert_eq!(ev["o365.audit.Subject"], "Hi");
    }

    #[test]
    fn app_access_context_ids() {
        let (ev, _) = ecs(json!({"AppAccessContext": {
            "AADSessionId": "s", "UniqueTokenId": "t", "ClientAppName": "Teams"}}));
        assert_eq!(ev["session.id"], "s");
        assert_eq!(ev["token.id"], "t");
        assert_eq!(ev["application.name"], "Teams");
        assert_eq!(ev["o365.audit.AppAccessContext.AADSessionId"], "s");
    }

    #[test]
    fn client_forms() {
        for (ip, addr, cip, domain, port) in [
            (
                "::ffff:10.1.2.3",
                Some("10.1.2.3"),
                Some("10.1.2.3"),
                None,
                None,
            ),
            (
                "[10.1.2.3]:80",
                Some("10.1.2.3"),
                Some("10.1.2.3"),
                None,
                Some(80),
            ),
            ("localhost:80", None, None, Some("localhost:80"), None),
            (
                "[A (1.2.3.4)]",
                Some("1.2.3.4"),
                Some("1.2.3.4"),
                Some("A"),
                None,
            ),
            (
                "NOT IP (10.9000.0.1)",
                Some("NOT IP (10.9000.0.1)"),
                None,
                None,
                None,
            ),
        ] {
            let (ev, _) = ecs(json!({ "ClientIP": ip }));
            assert_eq!(
                ev.get("client.address").and_then(Value::as_str),
                addr,
                "{ip}"
            );
            assert_eq!(ev.get("client.ip").and_then(Value::as_str), cip, "{ip}");
            assert_eq!(
                ev.get("client.domain").and_then(Value::as_str),
                domain,
                "{ip}"
            );
            assert_eq!(ev.get("client.port").and_then(Value::as_u64), port, "{ip}");
        }
    }
}
