//! The event being built: its keys and values before they are sorted ([`Entries`]), where a
//! mapping writes ([`Sink`]), and what it found wrong ([`Issue`]); shared by every format.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// Key/value pairs collected before they are sorted and bulk-loaded into the event map (cheaper
/// than inserting dozens of keys one by one).
pub type Entries = Vec<(String, Value)>;

/// Where the mapping writes a key: the event map itself (format `raw`) or the entries vector.
pub(crate) trait Sink {
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

/// The unsorted event of format `ecs`: values may stay borrowed from the record (`'r`), and
/// enrichment reads and replaces keys already put.
pub(crate) trait Out<'r>: Sink {
    fn put_cow(&mut self, key: &str, value: Cow<'r, Value>);
    /// The first value put under `key`.
    fn get(&self, key: &str) -> Option<&Value>;
    /// Replaces the first value put under `key`, or puts it.
    fn set(&mut self, key: &str, value: Value);
}

impl<'r> Out<'r> for Entries {
    fn put_cow(&mut self, key: &str, value: Cow<'r, Value>) {
        self.push((key.to_owned(), value.into_owned()));
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn set(&mut self, key: &str, value: Value) {
        match self.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.push((key.to_owned(), value)),
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

/// What a value is, for an issue message.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value shortened for an issue message (records can hold megabytes).
pub(crate) fn short(v: &Value) -> String {
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
