//! `outputs:`: each entry read by the output its `type` names, typed and checked by that output.

use serde::Deserialize;

use super::file::FileOutputConfig;
use super::http::HttpOutputConfig;
use super::http::{HttpFormat, es_index_ok, es_sample, index_name_at};
use super::kafka::{KafkaOutputConfig, topic_ok};
use super::sentinel::SentinelOutputConfig;
use super::syslog::SyslogOutputConfig;
use super::template::Fields;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::core::settings::Problems;
use crate::core::typed::{kind_of, typed};

/// `outputs.<name>`: one output's settings, by its `type`.
#[derive(Debug, Clone)]
pub enum OutputConfig {
    File(FileOutputConfig),
    Stdout,
    Syslog(SyslogOutputConfig),
    Http(HttpOutputConfig),
    Kafka(KafkaOutputConfig),
    Sentinel(SentinelOutputConfig),
}

impl OutputConfig {
    /// The name templates of this output that do not give a valid name for `fields` (a tenant):
    /// the key and the name they give.
    pub fn invalid_names(&self, fields: &Fields) -> Vec<(&'static str, String)> {
        let time = chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default();
        let mut bad = Vec::new();
        match self {
            OutputConfig::Http(h) if h.format == HttpFormat::Elasticsearch => {
                // A template refused on its own is reported once, by the output's check.
                if let Some(t) = h.index.as_ref().filter(|t| es_index_ok(&es_sample(t))) {
                    let name = index_name_at(t, fields, time);
                    if !es_index_ok(&name) {
                        bad.push(("index", name));
                    }
                }
            }
            OutputConfig::Kafka(k) => {
                let name = k.topic.render(fields, time);
                if topic_ok(&k.topic.sample()) && !topic_ok(&name) {
                    bad.push(("topic", name));
                }
            }
            _ => {}
        }
        bad
    }
}

/// `type: stdout` takes no other key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

/// `outputs:`: each entry typed and checked by the output its `type` names. Two outputs never
/// write the same file.
pub fn read_all(map: Mapping, p: &mut Problems) -> BTreeMap<String, OutputConfig> {
    let mut outputs = BTreeMap::new();
    let mut files: HashMap<PathBuf, String> = HashMap::new();
    for (name, mut value) in map {
        let name = name.as_str().unwrap_or_default().to_owned();
        let key = format!("outputs.{name}");
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            p.push(
                &key,
                "has a name that is not made of letters, digits, `_`, `-` or `.`",
                "rename the output, e.g. `siem` or `archive-1`",
            );
        }
        let kind = match &mut value {
            Value::Mapping(m) => m.remove("type"),
            Value::Null => {
                p.push(
                    &key,
                    "has no settings",
                    "give it a type, e.g. `{type: stdout}` or `{type: file, path: ./var/events.ndjson}`",
                );
                None
            }
            other => {
                p.push(
                    &key,
                    format!("is {}, expected a mapping of keys", kind_of(other)),
                    "write its settings as `key: value` lines indented below its name",
                );
                None
            }
        };
        let type_key = format!("{key}.type");
        let kind = match kind {
            Some(Value::String(t)) => t,
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                let problem = format!("is {}, expected text", kind_of(&other));
                p.push(
                    &type_key,
                    problem,
                    "write one of file, stdout, syslog, http, kafka or sentinel",
                );
                String::new()
            }
            None => {
                if value.is_mapping() && !p.is_invalid(&type_key) {
                    let order = p.order_of(&key);
                    p.push_at(
                        order,
                        &type_key,
                        "is missing",
                        "set `type:` to file, stdout, syslog, http, kafka or sentinel",
                    );
                }
                String::new()
            }
        };
        // Without a known type the other keys cannot be judged; the type problem says enough.
        let config = match kind.trim() {
            "" => OutputConfig::Stdout,
            "stdout" => {
                typed::<NoSettings>(value, &key, p);
                OutputConfig::Stdout
            }
            "file" => {
                let mut c: FileOutputConfig = typed(value, &key, p);
                c.check(&mut p.section(&key));
                distinct_file(&mut files, &c.path, &key, "path", p);
                OutputConfig::File(c)
            }
            "syslog" => {
                let mut c: SyslogOutputConfig = typed(value, &key, p);
                c.check(&mut p.section(&key));
                OutputConfig::Syslog(c)
            }
            "http" => {
                let mut c: HttpOutputConfig = typed(value, &key, p);
                c.check(&mut p.section(&key));
                if let Some(path) = &c.dead_letter_path {
                    distinct_file(&mut files, path, &key, "dead_letter_path", p);
                }
                OutputConfig::Http(c)
            }
            "kafka" => {
                let mut c: KafkaOutputConfig = typed(value, &key, p);
                c.check(&mut p.section(&key));
                OutputConfig::Kafka(c)
            }
            "sentinel" => {
                let mut c: SentinelOutputConfig = typed(value, &key, p);
                c.check(&mut p.section(&key));
                OutputConfig::Sentinel(c)
            }
            other => {
                p.push(
                    &type_key,
                    format!("`{other}` is not an output type"),
                    "use `file`, `stdout`, `syslog`, `http`, `kafka` or `sentinel`",
                );
                OutputConfig::Stdout
            }
        };
        outputs.insert(name, config);
    }
    outputs
}

/// Two writers to one file would interleave and break its dedup.
fn distinct_file(
    files: &mut HashMap<PathBuf, String>,
    path: &Path,
    output: &str,
    name: &str,
    p: &mut Problems,
) {
    if path.as_os_str().is_empty() {
        return;
    }
    if let Some(other) = files.insert(path.to_owned(), format!("{output}.{name}")) {
        p.push(
            &format!("{output}.{name}"),
            format!("is the same file as {other}"),
            "give each output its own file: two writers would interleave and break dedup",
        );
    }
}
