//! Typing one section of the configuration file with its owner's `Deserialize`, every refused
//! value filed as a problem by its dotted key.
//!
//! serde stops at the first value it refuses, and its message may contain the value (a secret,
//! perhaps). So the problem is filed in our own words (the owner's reader gave them, see
//! [`super::settings::fail`], or else they are made from the value's shape), the key is removed, and
//! the section is typed again, until it types: one run reports every problem.

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::settings::{self, Problems};

/// Types `value` (the section at `key`) as `T`. Each refused value is filed as a problem and
/// removed, and the section typed again; what cannot be typed reads as absent.
pub fn typed<T: DeserializeOwned + Default>(mut value: Value, key: &str, p: &mut Problems) -> T {
    // Each round removes one key, so a file cannot make this loop for long.
    for _ in 0..1000 {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(typed) => return typed,
            Err(e) => e,
        };
        // Keys down to the refused value; a list entry is reported (and removed) as its list.
        let steps: Vec<String> = error
            .path()
            .iter()
            .map_while(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let at = steps.iter().fold(key.to_owned(), |k, s| {
            if k.is_empty() {
                s.clone()
            } else {
                format!("{k}.{s}")
            }
        });
        let found = steps.iter().try_fold(&value, |v, s| {
            v.as_mapping().and_then(|m| m.get(s.as_str()))
        });
        describe(&error.into_inner().to_string(), found, &at, p);
        p.invalidate(&at);
        let Some((last, parents)) = steps.split_last() else {
            break;
        };
        let parent = parents
            .iter()
            .try_fold(&mut value, |v, s| v.as_mapping_mut()?.get_mut(s.as_str()));
        let removed = parent
            .and_then(Value::as_mapping_mut)
            .and_then(|m| m.remove(last.as_str()));
        if removed.is_none() {
            break;
        }
    }
    T::default()
}

/// Files the problem of a refused value: our own words from the owner's reader, or for serde's
/// own refusals (an unknown key, a section of the wrong shape) a description without the value.
fn describe(message: &str, found: Option<&Value>, key: &str, p: &mut Problems) {
    if let Some(problems) = settings::decode(message) {
        for (problem, fix) in problems {
            p.push(key, problem, fix);
        }
        return;
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        // serde lists the known fields after "expected", each in backticks.
        let known: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        p.push(key, "is not a known key", unknown_fix(name, &known));
        return;
    }
    let expected = if message.contains("expected a sequence") {
        "a list"
    } else {
        "a mapping of keys (`key: value` lines indented below it)"
    };
    let found = found.unwrap_or(&Value::Null);
    let fix = if matches!(found, Value::Tagged(_)) {
        format!("remove the YAML tag (`!…`); write {expected}")
    } else {
        format!("write {expected}")
    };
    p.push(
        key,
        format!("is {}, expected {expected}", kind_of(found)),
        fix,
    );
}

pub fn unknown_fix(name: &str, known: &[&str]) -> String {
    match suggest(name, known) {
        Some(s) => format!("did you mean `{s}`?"),
        None if known.is_empty() => "remove it; nothing else is set here".to_owned(),
        None => format!("remove it; known keys here: {}", known.join(", ")),
    }
}

/// A description of a YAML value's shape that never includes the value itself.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a true/false value",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value (`!…`)",
    }
}

/// The known key closest to a misspelt one (case, `-` for `_`, or at most two edits away).
pub fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let folded = name.to_ascii_lowercase().replace('-', "_");
    if let Some(k) = known.iter().find(|k| **k == folded) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(&folded, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known = ["client_secret", "client_id", "tenant_id", "webhook"];
        assert_eq!(suggest("client_secert", &known), Some("client_secret"));
        assert_eq!(suggest("Client-Id", &known), Some("client_id"));
        assert_eq!(suggest("webhooks", &known), Some("webhook"));
        assert_eq!(suggest("zzz", &known), None);
    }
}
