//! How a component reads and checks its part of the configuration file.
//!
//! A component owns its settings type: `#[derive(Deserialize)]` with `#[serde(default)]` (defaults
//! in its `Default`), `deny_unknown_fields`, and the readers of [`de`] for values, which refuse a
//! value in our own words. Its `check` method then judges meaning through a [`Section`], which
//! files each problem under its dotted key. `config` reads the file, types every section, and
//! reports all problems in file order. A problem describes a value's shape, and quotes it only
//! where the key cannot hold a secret.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::{self as sde, Deserialize, Deserializer, IgnoredAny, Visitor};

use super::Secret;
use super::units::{self, UnitError};

/// The top-level key that lets placeholder values through (example and test files).
pub const ALLOW_PLACEHOLDERS: &str = "allow_placeholders";
/// What examples put where a secret, id or host goes (matched in any case).
pub const PLACEHOLDER_TEXT: &str = "REPLACE-ME";

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `tenants[2].client_secret`.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} — fix: {}", self.key, self.problem, self.fix)
    }
}

// ---- problems raised while a value is typed ------------------------------------------------------

/// Starts a serde error message that carries our own problems (serde's may quote the value).
const MARK: char = '\u{1}';
const FIX: char = '\u{1f}';
const NEXT: char = '\u{1e}';

/// A serde error holding `(problem, fix)` pairs for the key being read; [`decode`] takes them out.
pub fn fail<E: sde::Error>(problems: &[(String, String)]) -> E {
    let mut message = String::from(MARK);
    for (i, (problem, fix)) in problems.iter().enumerate() {
        if i > 0 {
            message.push(NEXT);
        }
        message.push_str(problem);
        message.push(FIX);
        message.push_str(fix);
    }
    E::custom(message)
}

/// [`fail`] with one problem.
pub fn fail1<E: sde::Error>(problem: impl fmt::Display, fix: impl fmt::Display) -> E {
    fail(&[(problem.to_string(), fix.to_string())])
}

/// The problems [`fail`] put into a serde error message; `None` for serde's own messages.
pub fn decode(message: &str) -> Option<Vec<(String, String)>> {
    let body = message.strip_prefix(MARK)?;
    Some(
        body.split(NEXT)
            .map(|one| match one.split_once(FIX) {
                Some((p, f)) => (p.to_owned(), f.to_owned()),
                None => (one.to_owned(), String::new()),
            })
            .collect(),
    )
}

/// A YAML value as far as a leaf reader needs to know it.
#[derive(Debug)]
pub enum Raw {
    Null,
    Bool(bool),
    /// A number ≥ 0 without a fraction.
    Whole(u64),
    /// Any other number, as written.
    Number(String),
    Text(String),
    List(Vec<Raw>),
    Map,
    /// `!tag value`.
    Tagged,
}

impl Raw {
    /// What the value is, never the value itself.
    pub fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "empty",
            Raw::Bool(_) => "a true/false value",
            Raw::Whole(_) | Raw::Number(_) => "a number",
            Raw::Text(_) => "text",
            Raw::List(_) => "a list",
            Raw::Map => "a mapping",
            Raw::Tagged => "a tagged value (`!…`)",
        }
    }

    /// The value as text: text itself, or a number as written.
    fn text(self) -> Result<String, Raw> {
        match self {
            Raw::Text(s) => Ok(s),
            Raw::Whole(n) => Ok(n.to_string()),
            Raw::Number(n) => Ok(n),
            other => Err(other),
        }
    }

    /// The problem of a value of the wrong kind.
    pub fn wrong<E: sde::Error>(&self, expected: &str) -> E {
        let fix = match self {
            Raw::Tagged => format!("remove the YAML tag (`!…`); write {expected}"),
            _ => format!("write {expected}"),
        };
        fail1(format!("is {}, expected {expected}", self.kind()), fix)
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Whole(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(u64::try_from(v).map_or_else(|_| Raw::Number(v.to_string()), Raw::Whole))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Text(v.to_owned()))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_seq<A: sde::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::List(items))
            }
            fn visit_map<A: sde::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Raw::Map)
            }
            fn visit_enum<A: sde::EnumAccess<'de>>(self, _: A) -> Result<Raw, A::Error> {
                Ok(Raw::Tagged)
            }
        }
        d.deserialize_any(Any)
    }
}

/// Never echoed: a number or true/false is what YAML made of an unquoted value, and may differ
/// from what was meant (leading zeros, exponents).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(s) => Ok(Secret::new(s)),
            raw @ (Raw::Whole(_) | Raw::Number(_) | Raw::Bool(_)) => Err(fail1(
                format!("is {}, not text (a secret is text)", raw.kind()),
                "quote the value (`key: \"…\"`): YAML reads unquoted digits as a number and may change them",
            )),
            raw => Err(raw.wrong("text")),
        }
    }
}

/// Readers for `#[serde(deserialize_with = "…")]`, each refusing a value with our own problem;
/// [`de::opt`] has the same for `Option` fields.
pub mod de {
    use super::*;

    /// Text; a number is taken as written.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Raw::deserialize(d)?.text().map_err(|raw| raw.wrong("text"))
    }

    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<std::path::PathBuf, D::Error> {
        text(d).map(Into::into)
    }

    /// `true`/`false`, also as text (from `${NAME}`).
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(b),
            Raw::Text(s) => match s.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(fail1(
                    format!("is `{other}`, not true or false"),
                    "write true or false",
                )),
            },
            raw => Err(raw.wrong("true or false")),
        }
    }

    /// A whole number ≥ 0 that fits `T`; also as text.
    pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        let fix = "write a whole number such as 4";
        let n = match Raw::deserialize(d)? {
            Raw::Whole(n) => n,
            Raw::Number(n) => return Err(fail1(format!("is {n}, not a whole number ≥ 0"), fix)),
            Raw::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| fail1(format!("is `{}`, not a whole number ≥ 0", s.trim()), fix))?,
            raw => return Err(raw.wrong("a whole number")),
        };
        T::try_from(n).map_err(|_| fail1(format!("is {n}, too large"), fix))
    }

    /// Bytes: a number, or with a unit (`64MiB`).
    pub fn size<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        let n = match Raw::deserialize(d)? {
            Raw::Whole(n) => n,
            raw @ Raw::Number(_) => return Err(raw.wrong("a size in bytes")),
            Raw::Text(s) => units::parse_size(&s).map_err(|e| {
                fail1(
                    format!("is `{}`, which {e}", s.trim()),
                    "write bytes as a number, or with a unit: 1048576, 1MiB, 64MiB, 512KB",
                )
            })?,
            raw => return Err(raw.wrong("a size such as 64MiB")),
        };
        T::try_from(n).map_err(|_| fail1(format!("is {n} bytes, too large"), "use a smaller size"))
    }

    /// A duration with its unit (`60s`, `1h30m`); a bare number is refused.
    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Whole(n) => return Err(no_unit(&n.to_string())),
            Raw::Number(n) => return Err(no_unit(&n)),
            raw => return Err(raw.wrong("a duration such as 60s")),
        };
        units::parse_duration(&s).map_err(|e| {
            let fix = if e == UnitError::MissingUnit {
                format!("add a unit, e.g. `{}s` (units: ms, s, m, h, d)", s.trim())
            } else {
                "write a duration such as 500ms, 60s, 15m, 1h or 1h30m".to_owned()
            };
            fail1(format!("is `{}`, which {e}", s.trim()), fix)
        })
    }

    fn no_unit<E: sde::Error>(n: &str) -> E {
        fail1(
            format!("is the bare number {n}, which has no unit"),
            format!("add a unit, e.g. `{n}s` (units: ms, s, m, h, d)"),
        )
    }

    /// Words: a space-separated string, or a list of strings (each may hold several words).
    pub fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let parts = match Raw::deserialize(d)? {
            Raw::List(items) => items,
            one => vec![one],
        };
        let mut words = Vec::new();
        for part in parts {
            match part.text() {
                Ok(s) => words.extend(s.split_whitespace().map(str::to_owned)),
                Err(Raw::Null) => {}
                Err(raw) => return Err(raw.wrong("text, or a list of text")),
            }
        }
        Ok(words)
    }

    /// One of the owner's words (`gzip`, `udp`), given as text.
    pub fn choice<'de, D: Deserializer<'de>, T: Copy>(
        d: D,
        choices: &[(&str, T)],
        what: &str,
    ) -> Result<T, D::Error> {
        let v = text(d)?;
        let v = v.trim();
        if let Some((_, t)) = choices.iter().find(|(c, _)| *c == v) {
            return Ok(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(c, _)| *c).collect();
        let fix = match names.split_last() {
            Some((last, init)) if !init.is_empty() => format!("use {} or {last}", init.join(", ")),
            Some((last, _)) => format!("use {last}"),
            None => String::new(),
        };
        Err(fail1(format!("`{v}` is not {what}"), fix))
    }

    /// The same readers for `Option` fields (an absent key is `None` through `#[serde(default)]`).
    pub mod opt {
        use super::*;

        macro_rules! some {
            ($($name:ident -> $t:ty),*) => {$(
                pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
                    super::$name(d).map(Some)
                }
            )*};
        }
        some!(text -> String, path -> std::path::PathBuf, flag -> bool, duration -> Duration, words -> Vec<String>);

        pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
            d: D,
        ) -> Result<Option<T>, D::Error> {
            super::whole(d).map(Some)
        }

        pub fn size<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
            d: D,
        ) -> Result<Option<T>, D::Error> {
            super::size(d).map(Some)
        }
    }
}

/// The field names of a settings type, as serde knows them (its `deserialize_struct` call).
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl sde::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

// ---- problems about meaning, filed by key ----------------------------------------------------------

/// Every problem found so far, and where each key of the file is (the order they are reported in).
#[derive(Debug, Default)]
pub struct Problems {
    found: Vec<(usize, Problem)>,
    /// Position of each key present in the file (even numbers, in file order).
    at: HashMap<String, usize>,
    /// Position just after each mapping's last key (odd): where its missing keys are reported.
    ends: HashMap<String, usize>,
    /// Keys present whose value could not be typed (a problem was filed; they read as absent).
    invalid: HashSet<String>,
    next: usize,
    /// `allow_placeholders: true`: example values pass (secret files are checked for them too).
    pub allow_placeholders: bool,
}

impl Problems {
    /// Notes the next key of the file (in file order).
    pub fn place(&mut self, key: &str) {
        self.at.insert(key.to_owned(), self.next);
        self.next += 2;
    }

    /// Notes the end of a mapping, after its keys were placed.
    pub fn close(&mut self, key: &str) {
        self.ends
            .insert(key.to_owned(), self.next.saturating_sub(1));
    }

    /// Position of `key`, or for a key not in the file, the end of the nearest mapping around it.
    pub fn order_of(&self, key: &str) -> usize {
        if let Some(at) = self.at.get(key) {
            return *at;
        }
        let mut k = key;
        while let Some(cut) = k.rfind(['.', '[']) {
            k = &k[..cut];
            if let Some(end) = self.ends.get(k) {
                return *end;
            }
        }
        self.end()
    }

    /// After everything in the file.
    pub fn end(&self) -> usize {
        self.next.saturating_sub(1)
    }

    pub fn push_at(
        &mut self,
        order: usize,
        key: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let problem = Problem {
            key: key.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        };
        self.found.push((order, problem));
    }

    pub fn push(&mut self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.push_at(self.order_of(key), key, problem, fix);
    }

    /// The key's value was refused while typing: it reads as absent, but is not "missing".
    pub fn invalidate(&mut self, key: &str) {
        self.invalid.insert(key.to_owned());
    }

    pub fn is_invalid(&self, key: &str) -> bool {
        self.invalid.contains(key)
    }

    /// Whether the file has the key (with a usable value or not).
    pub fn is_given(&self, key: &str) -> bool {
        self.at.contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems in file order (stable: those at one position keep the order they were found in).
    pub fn into_sorted(mut self) -> Vec<Problem> {
        self.found.sort_by_key(|(order, _)| *order);
        self.found.into_iter().map(|(_, p)| p).collect()
    }

    /// The section at `key` (`""`: the top level).
    pub fn section(&mut self, key: &str) -> Section<'_> {
        Section {
            problems: self,
            key: key.to_owned(),
        }
    }
}

/// One section of the file (`outputs.siem`, `webhook`): its owner's `check` files problems by key
/// relative to it.
pub struct Section<'p> {
    pub problems: &'p mut Problems,
    key: String,
}

impl Section<'_> {
    /// The section's own dotted key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The dotted key of `name` in this section.
    pub fn path(&self, name: &str) -> String {
        if self.key.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.key)
        }
    }

    /// Whether the file sets `name` here (with a usable value or not).
    pub fn given(&self, name: &str) -> bool {
        self.problems.is_given(&self.path(name))
    }

    /// Whether the file sets `name` here with a value that could be typed.
    pub fn usable(&self, name: &str) -> bool {
        let key = self.path(name);
        self.problems.is_given(&key) && !self.problems.is_invalid(&key)
    }

    pub fn problem(&mut self, name: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let key = self.path(name);
        self.problems.push(&key, problem, fix);
    }

    /// A problem with the section as a whole, at its own key.
    pub fn here(&mut self, problem: impl Into<String>, fix: impl Into<String>) {
        let key = self.key.clone();
        self.problems.push(&key, problem, fix);
    }

    /// `name` is required and absent: reported at the end of the section, unless its value was
    /// refused already.
    pub fn missing(&mut self, name: &str, fix: impl Into<String>) {
        self.missing_as(name, "is missing", fix);
    }

    pub fn missing_as(&mut self, name: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let key = self.path(name);
        if !self.problems.is_invalid(&key) {
            let order = self.problems.order_of(&key);
            self.problems.push_at(order, &key, problem, fix);
        }
    }

    /// A section inside this one.
    pub fn child(&mut self, name: &str) -> Section<'_> {
        let key = self.path(name);
        Section {
            problems: self.problems,
            key,
        }
    }

    /// The bytes of a file the configuration names; a problem at `name` when it cannot be read.
    pub fn read(&mut self, name: &str, path: &Path) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(
                    name,
                    format!("names {}, which cannot be read: {e}", path.display()),
                    "fix the path or the file's permissions; relative paths start at the working directory",
                );
                None
            }
        }
    }

    /// A secret kept in a file (`*_file`), without the trailing newline editors and `echo` add.
    pub fn secret_file(&mut self, name: &str, path: &Path) -> Option<Secret> {
        let shown = path.display();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                self.problem(
                    name,
                    format!("names {shown}, which cannot be read: {e}"),
                    "create the file (readable by the collector) or fix the path; relative paths start at the working directory",
                );
                return None;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.problem(
                name,
                format!("names {shown}, which is not UTF-8 text"),
                "store the secret as plain text in the file",
            );
            return None;
        };
        let trimmed = text.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            self.problem(
                name,
                format!("names {shown}, which is empty"),
                "write the secret into the file",
            );
            return None;
        }
        let placeholder = PLACEHOLDER_TEXT.to_ascii_lowercase();
        if !self.problems.allow_placeholders && trimmed.to_ascii_lowercase().contains(&placeholder)
        {
            self.problem(
                name,
                format!("names {shown}, which still holds the placeholder {PLACEHOLDER_TEXT}"),
                format!("write the real secret into the file (e.g. in the Kubernetes Secret it is mounted from); an example or test file may set `{ALLOW_PLACEHOLDERS}: true` at the top level"),
            );
            return None;
        }
        Some(Secret::new(trimmed))
    }

    /// A PEM file of certificates (a CA, a server or client certificate).
    pub fn pem_certificates(&mut self, name: &str, path: &Path) {
        let Some(bytes) = self.read(name, path) else {
            return;
        };
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes).collect();
        if certs.is_empty() || certs.iter().any(Result::is_err) {
            self.problem(
                name,
                format!(
                    "names {}, which holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
                    path.display()
                ),
                "point it at the PEM certificate file (check that cert and key are not swapped)",
            );
        }
    }

    /// A PEM private key file.
    pub fn pem_private_key(&mut self, name: &str, path: &Path) {
        let Some(bytes) = self.read(name, path) else {
            return;
        };
        if PrivateKeyDer::from_pem_slice(&bytes).is_err() {
            self.problem(
                name,
                format!(
                    "names {}, which holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    path.display()
                ),
                "point it at the private key file (check that cert and key are not swapped)",
            );
        }
    }

    /// An absolute `https` URL with a host, no credentials and no fragment; never echoed.
    pub fn https_url(&mut self, name: &str, value: &str, fix: &str) -> Option<reqwest::Url> {
        let url = match reqwest::Url::parse(value.trim()) {
            Ok(u) => u,
            Err(e) => {
                self.problem(name, format!("is not a valid URL ({e})"), fix);
                return None;
            }
        };
        let problem = if url.scheme() != "https" {
            format!(
                "uses the scheme `{}`, but only https is allowed",
                url.scheme()
            )
        } else if url.host_str().is_none_or(str::is_empty) {
            "has no host".to_owned()
        } else if !url.username().is_empty() || url.password().is_some() {
            "contains a user name or password".to_owned()
        } else if url.fragment().is_some() {
            "has a fragment (`#…`)".to_owned()
        } else {
            return Some(url);
        };
        self.problem(name, problem, fix);
        None
    }

    /// An https origin (scheme, host and port only), normalised to `https://host[:port]`.
    pub fn https_origin(&mut self, name: &str, value: &str, fix: &str) -> Option<String> {
        let url = self.https_url(name, value, fix)?;
        let mut ok = true;
        if !matches!(url.path(), "" | "/") {
            self.problem(name, format!("has a path ({})", url.path()), fix);
            ok = false;
        }
        if url.query().is_some() {
            self.problem(name, "has a query (`?…`)", fix);
            ok = false;
        }
        let host = url.host_str().unwrap_or_default();
        ok.then(|| match url.port() {
            Some(port) => format!("https://{host}:{port}"),
            None => format!("https://{host}"),
        })
    }

    /// A shared secret sent in an HTTP header: long enough and header-safe. Never echoed.
    pub fn token(&mut self, name: &str, secret: &Secret, min_len: usize) -> bool {
        let v = secret.expose();
        let (problem, fix) = if v.chars().count() < min_len {
            (
                format!("is shorter than {min_len} characters"),
                "use a random value, e.g. the output of `openssl rand -hex 16`",
            )
        } else if !v.bytes().all(|b| b.is_ascii_graphic()) {
            (
                "contains spaces or characters that cannot be sent in an HTTP header".to_owned(),
                "use visible ASCII only, e.g. the output of `openssl rand -hex 16`",
            )
        } else {
            return true;
        };
        self.problem(name, problem, fix);
        false
    }

    /// A positive duration (`0s` refused).
    pub fn positive(&mut self, name: &str, d: Duration) {
        if d.is_zero() {
            self.problem(name, "is zero", "use a positive duration such as 60s");
        }
    }
}
