//! From YAML text to typed sections, every problem on the way filed by its dotted key.
//!
//! The file is parsed into a YAML tree, which one walk prepares: it notes each key's position
//! (problems are reported in file order), expands `${NAME}` in every string before anything is
//! typed (so `workers: ${WORKERS}` works), and drops empty values (an empty key reads as absent).
//! Each section is then typed by its owner ([`crate::core::typed`]).

use serde_yaml::{Mapping, Value};

use super::env::{self, ExpandError};
use crate::core::settings::Problems;
use crate::core::typed::{kind_of, unknown_fix};

/// Marks an integer literal too large for the YAML library, quoted by [`parse_yaml`] so that the
/// rest of the file can still be read and checked.
const TOO_LARGE: &str = "o365-collector-too-large-number";

/// Sections whose entries are named by the user and may be empty (an output without settings is
/// a problem of its own, not an absent key).
const NAMED_ENTRIES: &str = "outputs";

/// Parses and prepares the file; `None` when it is not a YAML mapping at all (nothing else can
/// be judged then).
pub(super) fn read(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Mapping> {
    let mut root = match parse_yaml(text) {
        Ok(v) => v,
        Err(e) => {
            let message = e.to_string();
            let mut problem = format!("is not valid YAML: {message}");
            if let Some(loc) = e.location().filter(|_| !message.contains(" line ")) {
                problem.push_str(&format!(" (line {}, column {})", loc.line(), loc.column()));
            }
            let fix = if message.starts_with("duplicate entry") {
                "keep only one of the repeated keys"
            } else {
                "correct the YAML syntax at the position shown (indent with spaces, `key: value`)"
            };
            p.push_at(0, "(file)", problem, fix);
            return None;
        }
    };
    if let Err(e) = root.apply_merge() {
        p.push_at(
            0,
            "(file)",
            format!("has a YAML merge key (`<<`) that cannot be applied: {e}"),
            "merge only mappings (`<<: *anchor` where the anchor is a mapping)",
        );
    }
    let mut map = match root {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        other => {
            p.push_at(
                0,
                "(file)",
                format!("is {}, not a mapping of keys", kind_of(&other)),
                "write the configuration as `key: value` lines (see config.yaml)",
            );
            return None;
        }
    };
    Prepare { env, p }.mapping(&mut map, "");
    Some(map)
}

/// The walk over the tree before typing.
struct Prepare<'a, 'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    p: &'a mut Problems,
}

impl Prepare<'_, '_> {
    fn mapping(&mut self, map: &mut Mapping, key: &str) {
        for (name, mut value) in std::mem::take(map) {
            let Some(text) = name.as_str() else {
                let at = if key.is_empty() { "(file)" } else { key };
                self.p.push(
                    at,
                    format!("has a key that is {}, not a name", kind_of(&name)),
                    "name each key with plain text",
                );
                continue;
            };
            let empty = value.is_null() || value.as_mapping().is_some_and(Mapping::is_empty);
            if empty && key != NAMED_ENTRIES {
                continue;
            }
            let path = if key.is_empty() {
                text.to_owned()
            } else {
                format!("{key}.{text}")
            };
            self.p.place(&path);
            if self.value(&mut value, &path) {
                map.insert(name, value);
            } else {
                self.p.invalidate(&path);
            }
        }
        self.p.close(key);
    }

    /// Expands and checks one value; false when it cannot be used (a problem was filed).
    fn value(&mut self, value: &mut Value, key: &str) -> bool {
        match value {
            Value::String(s) => match env::expand(s, self.env) {
                Ok(expanded) => {
                    *s = expanded;
                    true
                }
                Err(errors) => {
                    for e in errors {
                        self.p.push(key, e.to_string(), expand_fix(&e));
                    }
                    false
                }
            },
            Value::Mapping(m) => {
                self.mapping(m, key);
                true
            }
            Value::Sequence(items) => {
                let mut usable = true;
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Mapping(m) = item {
                        let entry = format!("{key}[{i}]");
                        self.p.place(&entry);
                        self.mapping(m, &entry);
                    } else {
                        usable &= self.value(item, key);
                    }
                }
                usable
            }
            Value::Tagged(t) if t.tag == serde_yaml::value::Tag::new(TOO_LARGE) => {
                self.p.push(
                    key,
                    "is a number too large to read (not text)",
                    "quote the value if it is text (`key: \"…\"`), or write a smaller number",
                );
                false
            }
            Value::Tagged(t) => self.value(&mut t.value, key),
            _ => true,
        }
    }
}

fn expand_fix(e: &ExpandError) -> String {
    match e {
        ExpandError::Unset(name) => format!(
            "export {name} in the collector's environment, or write the value instead of ${{{name}}}"
        ),
        ExpandError::Unterminated => {
            "close it as `${NAME}`, or write `$${` for a literal `${`".to_owned()
        }
        ExpandError::BadName(_) => {
            "variable names are letters, digits and `_` (not starting with a digit); write `$${` for a literal `${`".to_owned()
        }
    }
}

/// Splits the top level into the keys of `first` and of `second`; any other key is a problem.
pub(super) fn split(
    map: Mapping,
    first: &[&str],
    second: &[&str],
    p: &mut Problems,
) -> (Mapping, Mapping) {
    let (mut a, mut b) = (Mapping::new(), Mapping::new());
    for (name, value) in map {
        let text = name.as_str().unwrap_or_default();
        if first.contains(&text) {
            a.insert(name, value);
        } else if second.contains(&text) {
            b.insert(name, value);
        } else {
            let known: Vec<&str> = first.iter().chain(second).copied().collect();
            p.push(text, "is not a known key", unknown_fix(text, &known));
        }
    }
    (a, b)
}

/// Parses the YAML text; an integer literal beyond 128 bits (which the YAML library refuses, with
/// its value in the message) is rewritten as a tagged string and reported by its key later.
fn parse_yaml(text: &str) -> Result<Value, serde_yaml::Error> {
    let mut text = std::borrow::Cow::Borrowed(text);
    loop {
        match serde_yaml::from_str::<Value>(&text) {
            Err(e) if e.to_string().contains("invalid type: integer") => {
                let Some(fixed) = e.location().and_then(|l| tag_scalar_at(&text, l.index())) else {
                    return Err(e);
                };
                text = std::borrow::Cow::Owned(fixed);
            }
            other => return other,
        }
    }
}

/// `text` with the plain scalar starting at byte `at` written as `!TOO_LARGE "scalar"`; `None`
/// if no digits start there (so the loop in [`parse_yaml`] always ends).
fn tag_scalar_at(text: &str, at: usize) -> Option<String> {
    let rest = text.get(at..)?;
    let len = rest
        .find(|c: char| c.is_whitespace() || ",]}#".contains(c))
        .unwrap_or(rest.len());
    let scalar = &rest[..len];
    if scalar.is_empty()
        || !scalar
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-_.".contains(&b))
    {
        return None;
    }
    Some(format!(
        "{}!{TOO_LARGE} \"{scalar}\"{}",
        &text[..at],
        &rest[len..]
    ))
}
