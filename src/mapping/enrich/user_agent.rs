//! `user_agent.*` from a user-agent string, with the uap-core patterns and the same reading of
//! them as Elastic's `user_agent` ingest processor, so names and versions agree with Elastic's.
//!
//! The patterns are uap-core's `regexes.yaml` (Apache-2.0, `uap-core/` beside this file, from the
//! npm package `uap-core` 0.11.0: the release nearest to the 2020 snapshot Elastic's processor
//! ships). Each of the three lists (browser, OS, device) is tried in order and the first pattern
//! that matches and names something wins. As in Elastic (Java regex groups): a group that matched
//! the empty string is a present, empty version part (Firefox `72.0` → `72.0.`), a group that did
//! not take part is absent; a replacement substitutes `$1` only; a version part is used only when
//! the one before it is present.
//!
//! Matching goes through `regex-filtered`, which tries only the patterns whose literal atoms occur
//! in the string. Results are kept in a small cache ([`UaCache`]): a tenant's records carry few
//! distinct user agents.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;

/// The bundled uap-core patterns.
pub const BUNDLED_REGEXES: &str = include_str!("uap-core/regexes.yaml");

/// Distinct user agents kept per cache generation (two generations: at most twice this many).
pub const CACHE_ENTRIES: usize = 4096;

/// A problem with a patterns file.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    #[error("is not a uap-core regexes.yaml: {0}")]
    Yaml(String),
    #[error("pattern {index} of {list} does not compile: {error}")]
    Pattern {
        list: &'static str,
        index: usize,
        error: String,
    },
}

#[derive(Deserialize)]
struct RegexesFile {
    user_agent_parsers: Vec<Entry>,
    os_parsers: Vec<Entry>,
    device_parsers: Vec<Entry>,
}

/// One pattern of any of the three lists (each list uses its own replacement keys).
#[derive(Deserialize)]
struct Entry {
    regex: String,
    regex_flag: Option<String>,
    family_replacement: Option<String>,
    v1_replacement: Option<String>,
    v2_replacement: Option<String>,
    v3_replacement: Option<String>,
    v4_replacement: Option<String>,
    os_replacement: Option<String>,
    os_v1_replacement: Option<String>,
    os_v2_replacement: Option<String>,
    os_v3_replacement: Option<String>,
    os_v4_replacement: Option<String>,
    device_replacement: Option<String>,
}

/// Replacements of one pattern: name, then up to four version parts.
type Replacements = [Option<String>; 5];

/// One of the three ordered lists.
struct List {
    set: regex_filtered::Regexes,
    repl: Vec<Replacements>,
}

/// What one list found: a name and up to four version parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    name: String,
    parts: [Option<String>; 4],
}

impl List {
    fn build(
        name: &'static str,
        entries: Vec<Entry>,
        repl: impl Fn(Entry) -> Replacements,
    ) -> Result<Self, UaError> {
        let mut builder = regex_filtered::Builder::new();
        let mut replacements = Vec::with_capacity(entries.len());
        for (index, e) in entries.into_iter().enumerate() {
            let mut opts = regex_filtered::Options::new();
            opts.case_insensitive(e.regex_flag.as_deref() == Some("i"));
            builder = builder
                .push_opt(&e.regex, &opts)
                .map_err(|error| UaError::Pattern {
                    list: name,
                    index,
                    error: error.to_string(),
                })?;
            replacements.push(repl(e));
        }
        let set = builder.build().map_err(|error| UaError::Pattern {
            list: name,
            index: 0,
            error: error.to_string(),
        })?;
        Ok(List {
            set,
            repl: replacements,
        })
    }

    /// The first pattern that matches and yields a name.
    fn find(&self, ua: &str) -> Option<Named> {
        self.set.matching(ua).find_map(|(i, re)| {
            let caps = re.captures(ua)?;
            let group = |n: usize| caps.get(n).map(|m| m.as_str());
            let [name_repl, v1, v2, v3, v4] = &self.repl[i];
            let name = match name_repl {
                Some(r) => match group(1).filter(|_| r.contains("$1")) {
                    Some(g) => r.replacen("$1", g, 1),
                    None => r.clone(),
                },
                None => group(1)?.to_owned(),
            };
            let part = |repl: &Option<String>, n: usize| match repl {
                Some(r) => Some(r.clone()),
                None => group(n).map(str::to_owned),
            };
            Some(Named {
                name,
                parts: [part(v1, 2), part(v2, 3), part(v3, 4), part(v4, 5)],
            })
        })
    }
}

/// Version text as Elastic builds it: parts joined by `.` while each is present.
fn version(parts: &[Option<String>; 4]) -> Option<String> {
    let mut out = parts[0].clone()?;
    for p in parts[1..].iter() {
        match p {
            Some(p) => {
                out.push('.');
                out.push_str(p);
            }
            None => break,
        }
    }
    Some(out)
}

/// The compiled patterns.
pub struct UaParser {
    agents: List,
    os: List,
    devices: List,
}

impl UaParser {
    /// Compiles a uap-core `regexes.yaml` (the bundled one: [`BUNDLED_REGEXES`]).
    pub fn new(yaml: &str) -> Result<Self, UaError> {
        let file: RegexesFile =
            serde_yaml::from_str(yaml).map_err(|e| UaError::Yaml(e.to_string()))?;
        Ok(UaParser {
            agents: List::build("user_agent_parsers", file.user_agent_parsers, |e| {
                [
                    e.family_replacement,
                    e.v1_replacement,
                    e.v2_replacement,
                    e.v3_replacement,
                    e.v4_replacement,
                ]
            })?,
            os: List::build("os_parsers", file.os_parsers, |e| {
                [
                    e.os_replacement,
                    e.os_v1_replacement,
                    e.os_v2_replacement,
                    e.os_v3_replacement,
                    e.os_v4_replacement,
                ]
            })?,
            devices: List::build("device_parsers", file.device_parsers, |e| {
                [e.device_replacement, None, None, None, None]
            })?,
        })
    }

    /// The `user_agent.*` keys (besides `original`) for one string, as Elastic sets them:
    /// `name` and `device.name` always (`Other` when unknown), `version` when known, `os.*` when
    /// an OS was recognised.
    pub fn parse(&self, ua: &str) -> Vec<(&'static str, Value)> {
        let mut out = Vec::with_capacity(6);
        let agent = self.agents.find(ua);
        let name = agent.as_ref().map_or("Other", |a| a.name.as_str());
        out.push(("user_agent.name", Value::from(name)));
        if let Some(v) = agent.as_ref().and_then(|a| version(&a.parts)) {
            out.push(("user_agent.version", Value::from(v)));
        }
        if let Some(os) = self.os.find(ua) {
            if let Some(v) = version(&os.parts) {
                out.push((
                    "user_agent.os.full",
                    Value::from(format!("{} {v}", os.name)),
                ));
                out.push(("user_agent.os.version", Value::from(v)));
            }
            out.push(("user_agent.os.name", Value::from(os.name)));
        }
        let device = self.devices.find(ua);
        let device = device.as_ref().map_or("Other", |d| d.name.as_str());
        out.push(("user_agent.device.name", Value::from(device)));
        out
    }
}

/// Parsed user agents by string: two generations of at most [`CACHE_ENTRIES`] each. When the new
/// one fills up it becomes the old one and the previous old one is dropped, so frequently seen
/// strings stay (a hit in the old generation moves the entry to the new one) and the memory bound
/// is fixed.
pub struct UaCache {
    parser: UaParser,
    generations: Mutex<[HashMap<String, CachedUa>; 2]>,
}

/// One parsed user agent, shared between the cache and its readers.
pub type CachedUa = std::sync::Arc<Vec<(&'static str, Value)>>;

impl UaCache {
    pub fn new(parser: UaParser) -> Self {
        UaCache {
            parser,
            generations: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    /// The parsed fields for `ua`, from the cache or parsed now. Strings longer than 1 KiB are
    /// parsed but not cached (they are rare, and would make the bound a bound on count only).
    pub fn get(&self, ua: &str) -> CachedUa {
        if ua.len() > 1024 {
            return std::sync::Arc::new(self.parser.parse(ua));
        }
        let found = {
            let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hit) = g[0].get(ua) {
                Some(hit.clone())
            } else if let Some((k, v)) = g[1].remove_entry(ua) {
                let hit = v.clone();
                Self::insert(&mut g, k, v);
                Some(hit)
            } else {
                None
            }
        };
        if let Some(hit) = found {
            return hit;
        }
        // Parse outside the lock: a miss costs tens of microseconds.
        let parsed: CachedUa = std::sync::Arc::new(self.parser.parse(ua));
        let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        Self::insert(&mut g, ua.to_owned(), parsed.clone());
        parsed
    }

    fn insert(g: &mut [HashMap<String, CachedUa>; 2], key: String, value: CachedUa) {
        if g[0].len() >= CACHE_ENTRIES {
            g.swap(0, 1);
            g[0].clear();
        }
        g[0].insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ua: &str) -> serde_json::Map<String, Value> {
        // Compiling the patterns takes seconds in a debug build: once for all tests.
        static PARSER: std::sync::OnceLock<UaParser> = std::sync::OnceLock::new();
        PARSER
            .get_or_init(|| UaParser::new(BUNDLED_REGEXES).unwrap())
            .parse(ua)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn elastic_readings() {
        let m = parse(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.14; rv:72.0) Gecko/20100101 Firefox/72.0",
        );
        assert_eq!(m["user_agent.name"], "Firefox");
        assert_eq!(m["user_agent.version"], "72.0.");
        assert_eq!(m["user_agent.os.name"], "Mac OS X");
        assert_eq!(m["user_agent.os.version"], "10.14");
        assert_eq!(m["user_agent.os.full"], "Mac OS X 10.14");
        assert_eq!(m["user_agent.device.name"], "Mac");
        let m = parse("");
        assert_eq!(m["user_agent.name"], "Other");
        assert_eq!(m["user_agent.device.name"], "Other");
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn version_stops_at_first_missing_part() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(version(&[s("1"), s("2"), None, s("4")]).unwrap(), "1.2");
        assert_eq!(version(&[s("1"), s(""), None, None]).unwrap(), "1.");
        assert_eq!(version(&[None, s("2"), None, None]), None);
    }

    #[test]
    fn cache_stays_bounded_and_answers_alike() {
        let cache = UaCache::new(UaParser::new(BUNDLED_REGEXES).unwrap());
        let first = cache.get("curl/8.0.1");
        for i in 0..(CACHE_ENTRIES * 2 + 10) {
            cache.get(&format!("agent-{i}"));
        }
        let g = cache.generations.lock().unwrap();
        assert!(g[0].len() <= CACHE_ENTRIES && g[1].len() <= CACHE_ENTRIES);
        drop(g);
        assert_eq!(cache.get("curl/8.0.1"), first);
    }
}
