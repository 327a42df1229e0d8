//! The raw configuration tree: what the YAML file says, typed but not yet checked for meaning.
//!
//! Instead of `#[derive(Deserialize)]` with `deny_unknown_fields` (which stops at the first unknown key
//! or wrong type), the file is parsed into a `serde_yaml::Value` and walked by [`Reader`]. The walk has
//! the same strictness — every key must be known, every value must have the right shape — but it
//! records each problem with its full key path and carries on, so the user sees every mistake at once.
//! `${NAME}` expansion happens here, on every string value, before typing (so `workers: ${WORKERS}`
//! works). Values are never copied into problem texts here: any of them could be a secret.

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::env::{self, ExpandError};
use super::units::{self, UnitError};
use super::{Problem, Secret};

/// Where a value sits: its dotted key path and its position in the file (order of appearance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At {
    pub key: String,
    pub order: usize,
}

/// A problem plus the position used to report problems in file order.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub order: usize,
    pub problem: Problem,
}

/// One key's value. `Invalid` means the key is present but its value was unusable — a problem has
/// already been recorded, so later checks must neither use it nor complain that it is missing.
#[derive(Debug, Clone, Default)]
pub(crate) enum Field<T> {
    #[default]
    Absent,
    Invalid(At),
    Value(T, At),
}

impl<T> Field<T> {
    pub fn is_present(&self) -> bool {
        !matches!(self, Field::Absent)
    }
    pub fn at(&self) -> Option<&At> {
        match self {
            Field::Absent => None,
            Field::Invalid(at) | Field::Value(_, at) => Some(at),
        }
    }
    pub fn value(&self) -> Option<(&T, &At)> {
        match self {
            Field::Value(v, at) => Some((v, at)),
            _ => None,
        }
    }
}

/// Keys a tenant takes, both at the top level (first tenant and defaults) and under `tenants:`.
pub(crate) const TENANT_KEYS: [&str; 18] = [
    "tenant_id",
    "tenant_name",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_certificate",
    "resource",
    "authority",
    "publisher_id",
    "content_type",
    "output",
    "encoding",
    "format",
    "requests_per_minute",
    "request_burst",
    "graph_feeds",
    "graph_host",
    "graph_backfill",
];

/// Tenant keys that identify an app or tenant (the others are only defaults for `tenants:` entries);
/// the first one seen at the top level marks where problems about the top-level tenant are reported.
/// The top level is itself a tenant when it has `tenant_id`.
pub(crate) const TENANT_IDENTITY_KEYS: [&str; 6] = [
    "tenant_id",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_certificate",
    "publisher_id",
];

const GLOBAL_KEYS: [&str; 12] = [
    "last_value_storage",
    "store",
    "webhook",
    "listen",
    "tls",
    "admin",
    "pull",
    "outbound",
    "outputs",
    "tenants",
    "pipeline",
    "enrichment",
];

#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    /// The top-level tenant keys (a tenant if it has identity keys; defaults for `tenants:` anyway).
    pub top: RawTenant,
    pub last_value_storage: Field<String>,
    pub store: Option<RawStore>,
    pub webhook: Option<RawWebhook>,
    pub listen: RawListen,
    pub tls: Option<RawTls>,
    pub admin: RawAdmin,
    pub pull: RawPull,
    pub outbound: RawOutbound,
    /// `None` when the file has no (or an empty) `outputs:` key.
    pub outputs: Option<(At, Vec<RawOutput>)>,
    pub tenants: Vec<RawTenant>,
    pub pipeline: RawPipeline,
    pub enrichment: RawEnrichment,
    /// Position after the last key: where problems about the file as a whole are reported.
    pub end: usize,
    /// The file could not be read as a mapping at all; checking its meaning would only add noise.
    pub unreadable: bool,
}

#[derive(Debug, Default)]
pub(crate) struct RawTenant {
    /// The entry itself (`tenants[1]`), or for the top level the first identity key seen.
    pub at: Option<At>,
    /// Key prefix for problems: `""` at the top level, `tenants[1].` for entries.
    pub prefix: String,
    /// End of the entry (where its missing keys are reported); unused at the top level.
    pub end: usize,
    pub tenant_id: Field<String>,
    pub tenant_name: Field<String>,
    pub client_id: Field<String>,
    pub client_secret: Field<Secret>,
    pub client_secret_file: Field<String>,
    pub client_certificate: Field<RawCertificate>,
    pub resource: Field<String>,
    pub authority: Field<String>,
    pub publisher_id: Field<String>,
    pub content_type: Field<Vec<String>>,
    pub output: Field<String>,
    pub encoding: Field<String>,
    pub format: Field<String>,
    pub requests_per_minute: Field<u64>,
    pub request_burst: Field<u64>,
    pub graph_feeds: Field<Vec<String>>,
    pub graph_host: Field<String>,
    pub graph_backfill: Field<Duration>,
}

#[derive(Debug, Default)]
pub(crate) struct RawCertificate {
    pub end: usize,
    pub cert: Field<String>,
    pub key: Field<String>,
    pub password: Field<Secret>,
    pub password_file: Field<String>,
}

#[derive(Debug)]
pub(crate) struct RawWebhook {
    pub at: At,
    pub end: usize,
    pub address: Field<String>,
    pub auth_id: Field<Secret>,
    pub auth_id_file: Field<String>,
    pub path: Field<String>,
    pub max_body_bytes: Field<u64>,
    pub body_timeout: Field<Duration>,
    pub max_inflight_bytes: Field<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct RawListen {
    pub public: Field<String>,
    pub admin: Field<String>,
    pub trusted_proxies: Field<Vec<String>>,
    pub max_connections: Field<u64>,
    pub header_timeout: Field<Duration>,
    pub idle_timeout: Field<Duration>,
}

#[derive(Debug)]
pub(crate) struct RawTls {
    pub at: At,
    pub end: usize,
    pub cert: Field<String>,
    pub key: Field<String>,
    pub reload_every: Field<Duration>,
}

/// `store:` — a kind alone (`store: postgres`) or a mapping with `type` and its settings.
#[derive(Debug)]
pub(crate) struct RawStore {
    pub at: At,
    pub kind: Field<String>,
    /// Holds the database password: never echoed.
    pub url: Field<Secret>,
    pub url_file: Field<String>,
    pub pool_size: Field<u64>,
    pub sslmode: Field<String>,
    pub ca_file: Field<String>,
    pub allow_file_output: Field<bool>,
    pub tenant_lease: Field<Duration>,
}

#[derive(Debug, Default)]
pub(crate) struct RawAdmin {
    pub token: Field<Secret>,
    pub token_file: Field<String>,
}

#[derive(Debug, Default)]
pub(crate) struct RawPull {
    pub interval: Field<Duration>,
    pub reconcile_every: Field<Duration>,
}

#[derive(Debug, Default)]
pub(crate) struct RawOutbound {
    pub ca_file: Field<String>,
    /// May carry credentials (`http://user:pass@proxy`): never echoed.
    pub proxy: Field<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputKind {
    File,
    Stdout,
    Syslog,
    Http,
    Kafka,
}

/// One option of a `syslog`/`http` output, typed by the reader for its key (see [`output_option_kind`]).
#[derive(Debug)]
pub(crate) enum Opt {
    Text(Field<String>),
    /// Passwords and tokens: never echoed.
    Secret(Field<Secret>),
    Bool(Field<bool>),
    Uint(Field<u64>),
    Duration(Field<Duration>),
    Words(Field<Vec<String>>),
}

#[derive(Clone, Copy)]
enum OptKind {
    Words,
    Text,
    Secret,
    Bool,
    Uint,
    Duration,
}

/// Keys of a `file` output besides `type`.
pub(crate) const FILE_KEYS: [&str; 6] = [
    "path",
    "dedup_window_bytes",
    "rotate_bytes",
    "rotate_every",
    "keep",
    "compression",
];

/// Keys of a `syslog` output besides `type`.
pub(crate) const SYSLOG_KEYS: [&str; 12] = [
    "address",
    "transport",
    "ca_file",
    "server_name",
    "hostname",
    "app_name",
    "msgid",
    "facility",
    "severity",
    "sd_id",
    "structured_data",
    "timeout",
];

/// Keys of an `http` output besides `type`.
pub(crate) const HTTP_KEYS: [&str; 18] = [
    "url",
    "format",
    "index",
    "source",
    "sourcetype",
    "gzip",
    "username",
    "password",
    "token",
    "header_name",
    "header_value",
    "ca_file",
    "client_cert",
    "client_key",
    "max_events",
    "linger",
    "timeout",
    "dead_letter_path",
];

/// Keys of a `kafka` output besides `type`.
pub(crate) const KAFKA_KEYS: [&str; 13] = [
    "brokers",
    "topic",
    "key",
    "compression",
    "sasl_mechanism",
    "username",
    "password",
    "tls",
    "ca_file",
    "client_cert",
    "client_key",
    "server_name",
    "timeout",
];

fn output_option_kind(key: &str) -> OptKind {
    match key {
        "brokers" => OptKind::Words,
        "password" | "token" | "header_value" => OptKind::Secret,
        "gzip" | "structured_data" | "tls" => OptKind::Bool,
        "max_events" => OptKind::Uint,
        "timeout" | "linger" => OptKind::Duration,
        _ => OptKind::Text,
    }
}

#[derive(Debug)]
pub(crate) struct RawOutput {
    pub name: String,
    pub at: At,
    pub end: usize,
    pub kind: Field<OutputKind>,
    pub path: Field<String>,
    pub dedup_window_bytes: Field<u64>,
    /// `file` rotation: size limit of the active file.
    pub rotate_bytes: Field<u64>,
    /// `file` rotation: age limit of the active file.
    pub rotate_every: Field<Duration>,
    /// `file` rotation: rotated files kept.
    pub keep: Field<u64>,
    /// `file` rotation: `none` or `gzip`.
    pub compression: Field<String>,
    /// Options of `syslog`/`http` outputs, in file order.
    pub opts: Vec<(&'static str, Opt)>,
}

impl RawOutput {
    pub fn opt(&self, key: &str) -> Option<&Opt> {
        self.opts.iter().find(|(k, _)| *k == key).map(|(_, o)| o)
    }
    /// A text option's value; `None` when absent or invalid (already reported).
    pub fn text(&self, key: &str) -> Option<(&String, &At)> {
        match self.opt(key) {
            Some(Opt::Text(f)) => f.value(),
            _ => None,
        }
    }
    pub fn secret(&self, key: &str) -> Option<(&Secret, &At)> {
        match self.opt(key) {
            Some(Opt::Secret(f)) => f.value(),
            _ => None,
        }
    }
    pub fn flag(&self, key: &str) -> Option<(&bool, &At)> {
        match self.opt(key) {
            Some(Opt::Bool(f)) => f.value(),
            _ => None,
        }
    }
    pub fn uint(&self, key: &str) -> Option<(&u64, &At)> {
        match self.opt(key) {
            Some(Opt::Uint(f)) => f.value(),
            _ => None,
        }
    }
    pub fn words(&self, key: &str) -> Option<(&Vec<String>, &At)> {
        match self.opt(key) {
            Some(Opt::Words(f)) => f.value(),
            _ => None,
        }
    }
    pub fn duration(&self, key: &str) -> Option<(&Duration, &At)> {
        match self.opt(key) {
            Some(Opt::Duration(f)) => f.value(),
            _ => None,
        }
    }
    /// Whether the key was given at all (even with an unusable value).
    pub fn has(&self, key: &str) -> bool {
        match self.opt(key) {
            Some(Opt::Text(f)) => f.is_present(),
            Some(Opt::Secret(f)) => f.is_present(),
            Some(Opt::Bool(f)) => f.is_present(),
            Some(Opt::Uint(f)) => f.is_present(),
            Some(Opt::Duration(f)) => f.is_present(),
            Some(Opt::Words(f)) => f.is_present(),
            None => false,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct RawPipeline {
    pub workers: Field<u64>,
    pub lease: Field<Duration>,
    pub max_attempts: Field<u64>,
    pub queue_high_water: Field<u64>,
    pub batch_records: Field<u64>,
    pub batch_bytes: Field<u64>,
}

/// `enrichment:` (format `ecs`).
#[derive(Debug, Default)]
pub(crate) struct RawEnrichment {
    pub user_agent: Field<bool>,
    pub geoip_city: Field<String>,
    pub geoip_asn: Field<String>,
    pub reload_every: Field<Duration>,
}

/// Walks the YAML tree, typing values and recording problems.
pub(crate) struct Reader<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    next_order: usize,
    pub problems: Vec<Found>,
}

impl<'e> Reader<'e> {
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Reader {
            env,
            next_order: 0,
            problems: Vec::new(),
        }
    }

    /// Parses the text and reads the whole tree; problems accumulate in `self.problems`.
    pub fn read_text(&mut self, text: &str) -> RawConfig {
        let mut root: Value = match parse_yaml(text) {
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
                self.push(0, "(file)", problem, fix);
                return RawConfig {
                    unreadable: true,
                    ..RawConfig::default()
                };
            }
        };
        if let Err(e) = root.apply_merge() {
            self.push(
                0,
                "(file)",
                format!("has a YAML merge key (`<<`) that cannot be applied: {e}"),
                "merge only mappings (`<<: *anchor` where the anchor is a mapping)",
            );
        }
        let mut raw = RawConfig::default();
        match &root {
            Value::Null => {}
            Value::Mapping(map) => self.read_root(map, &mut raw),
            other => {
                self.push(
                    0,
                    "(file)",
                    format!("is {}, not a mapping of keys", kind_of(other)),
                    "write the configuration as `key: value` lines (see config.yaml)",
                );
                raw.unreadable = true;
            }
        }
        raw.end = self.end();
        raw
    }

    fn read_root(&mut self, map: &Mapping, raw: &mut RawConfig) {
        let allowed: Vec<&str> = TENANT_KEYS
            .iter()
            .chain(GLOBAL_KEYS.iter())
            .copied()
            .collect();
        for (key, value, at) in self.entries(map, "", &allowed) {
            if TENANT_KEYS.contains(&key) {
                if raw.top.at.is_none() && TENANT_IDENTITY_KEYS.contains(&key) {
                    raw.top.at = Some(at.clone());
                }
                self.tenant_key(&mut raw.top, key, value, at);
                continue;
            }
            match key {
                "last_value_storage" => raw.last_value_storage = self.text(value, at),
                "store" => raw.store = self.store(value, at),
                "webhook" => raw.webhook = self.webhook(value, at),
                "listen" => raw.listen = self.listen(value, at),
                "tls" => raw.tls = self.tls(value, at),
                "admin" => raw.admin = self.admin(value, at),
                "pull" => raw.pull = self.pull(value, at),
                "outbound" => raw.outbound = self.outbound(value, at),
                "outputs" => raw.outputs = self.outputs(value, at),
                "tenants" => raw.tenants = self.tenants(value, at),
                "pipeline" => raw.pipeline = self.pipeline(value, at),
                "enrichment" => raw.enrichment = self.enrichment(value, at),
                _ => {}
            }
        }
    }

    fn tenant_key(&mut self, t: &mut RawTenant, key: &str, value: &Value, at: At) {
        match key {
            "tenant_id" => t.tenant_id = self.text(value, at),
            "tenant_name" => t.tenant_name = self.text(value, at),
            "client_id" => t.client_id = self.text(value, at),
            "client_secret" => t.client_secret = self.secret(value, at),
            "client_secret_file" => t.client_secret_file = self.text(value, at),
            "client_certificate" => t.client_certificate = self.certificate(value, at),
            "resource" => t.resource = self.text(value, at),
            "authority" => t.authority = self.text(value, at),
            "publisher_id" => t.publisher_id = self.text(value, at),
            "content_type" => t.content_type = self.words(value, at),
            "output" => t.output = self.text(value, at),
            "encoding" => t.encoding = self.text(value, at),
            "format" => t.format = self.text(value, at),
            "requests_per_minute" => t.requests_per_minute = self.uint(value, at),
            "request_burst" => t.request_burst = self.uint(value, at),
            "graph_feeds" => t.graph_feeds = self.words(value, at),
            "graph_host" => t.graph_host = self.text(value, at),
            "graph_backfill" => t.graph_backfill = self.duration(value, at),
            _ => {}
        }
    }

    fn tenants(&mut self, value: &Value, at: At) -> Vec<RawTenant> {
        let items = match value {
            Value::Null => return Vec::new(),
            Value::Sequence(items) => items,
            other => {
                self.wrong_type(&at, other, "a list of tenants (`- tenant_id: …`)");
                return Vec::new();
            }
        };
        let mut tenants = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("{}[{i}]", at.key);
            let item_at = self.at(prefix.clone());
            let Some(map) = self.mapping(item, &item_at) else {
                if matches!(item, Value::Null) {
                    self.push(
                        item_at.order,
                        &item_at.key,
                        "is an empty list entry",
                        "remove the lone `-` or give the entry its tenant keys",
                    );
                }
                continue;
            };
            let mut t = RawTenant {
                at: Some(item_at),
                prefix: format!("{prefix}."),
                ..RawTenant::default()
            };
            for (key, v, key_at) in self.entries(map, &t.prefix.clone(), &TENANT_KEYS) {
                self.tenant_key(&mut t, key, v, key_at);
            }
            t.end = self.end();
            tenants.push(t);
        }
        tenants
    }

    fn certificate(&mut self, value: &Value, at: At) -> Field<RawCertificate> {
        let Some(map) = self.mapping(value, &at) else {
            return self.absent_or_invalid(value, at);
        };
        let mut c = RawCertificate::default();
        let prefix = format!("{}.", at.key);
        for (key, v, key_at) in
            self.entries(map, &prefix, &["cert", "key", "password", "password_file"])
        {
            match key {
                "cert" => c.cert = self.text(v, key_at),
                "key" => c.key = self.text(v, key_at),
                "password" => c.password = self.secret(v, key_at),
                "password_file" => c.password_file = self.text(v, key_at),
                _ => {}
            }
        }
        c.end = self.end();
        Field::Value(c, at)
    }

    fn webhook(&mut self, value: &Value, at: At) -> Option<RawWebhook> {
        let map = self.mapping(value, &at)?;
        if map.is_empty() {
            return None;
        }
        let mut w = RawWebhook {
            at: at.clone(),
            end: 0,
            address: Field::Absent,
            auth_id: Field::Absent,
            auth_id_file: Field::Absent,
            path: Field::Absent,
            max_body_bytes: Field::Absent,
            body_timeout: Field::Absent,
            max_inflight_bytes: Field::Absent,
        };
        let allowed = [
            "address",
            "auth_id",
            "auth_id_file",
            "path",
            "max_body_bytes",
            "body_timeout",
            "max_inflight_bytes",
        ];
        for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
            match key {
                "address" => w.address = self.text(v, key_at),
                "auth_id" => w.auth_id = self.secret(v, key_at),
                "auth_id_file" => w.auth_id_file = self.text(v, key_at),
                "path" => w.path = self.text(v, key_at),
                "max_body_bytes" => w.max_body_bytes = self.size(v, key_at),
                "body_timeout" => w.body_timeout = self.duration(v, key_at),
                "max_inflight_bytes" => w.max_inflight_bytes = self.size(v, key_at),
                _ => {}
            }
        }
        w.end = self.end();
        Some(w)
    }

    fn listen(&mut self, value: &Value, at: At) -> RawListen {
        let mut l = RawListen::default();
        if let Some(map) = self.mapping(value, &at) {
            let allowed = [
                "public",
                "admin",
                "trusted_proxies",
                "max_connections",
                "header_timeout",
                "idle_timeout",
            ];
            for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
                match key {
                    "public" => l.public = self.text(v, key_at),
                    "admin" => l.admin = self.text(v, key_at),
                    "trusted_proxies" => l.trusted_proxies = self.words(v, key_at),
                    "max_connections" => l.max_connections = self.uint(v, key_at),
                    "header_timeout" => l.header_timeout = self.duration(v, key_at),
                    "idle_timeout" => l.idle_timeout = self.duration(v, key_at),
                    _ => {}
                }
            }
        }
        l
    }

    fn tls(&mut self, value: &Value, at: At) -> Option<RawTls> {
        let map = self.mapping(value, &at)?;
        if map.is_empty() {
            return None;
        }
        let mut t = RawTls {
            at: at.clone(),
            end: 0,
            cert: Field::Absent,
            key: Field::Absent,
            reload_every: Field::Absent,
        };
        let allowed = ["cert", "key", "reload_every"];
        for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
            match key {
                "cert" => t.cert = self.text(v, key_at),
                "key" => t.key = self.text(v, key_at),
                "reload_every" => t.reload_every = self.duration(v, key_at),
                _ => {}
            }
        }
        t.end = self.end();
        Some(t)
    }

    fn store(&mut self, value: &Value, at: At) -> Option<RawStore> {
        let mut st = RawStore {
            at: at.clone(),
            kind: Field::Absent,
            url: Field::Absent,
            url_file: Field::Absent,
            pool_size: Field::Absent,
            sslmode: Field::Absent,
            ca_file: Field::Absent,
            allow_file_output: Field::Absent,
            tenant_lease: Field::Absent,
        };
        match value {
            Value::Null => return None,
            Value::Mapping(map) => {
                let allowed = [
                    "type",
                    "url",
                    "url_file",
                    "pool_size",
                    "sslmode",
                    "ca_file",
                    "allow_file_output",
                    "tenant_lease",
                ];
                for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
                    match key {
                        "type" => st.kind = self.text(v, key_at),
                        "url" => st.url = self.secret(v, key_at),
                        "url_file" => st.url_file = self.text(v, key_at),
                        "pool_size" => st.pool_size = self.uint(v, key_at),
                        "sslmode" => st.sslmode = self.text(v, key_at),
                        "ca_file" => st.ca_file = self.text(v, key_at),
                        "allow_file_output" => st.allow_file_output = self.boolean(v, key_at),
                        "tenant_lease" => st.tenant_lease = self.duration(v, key_at),
                        _ => {}
                    }
                }
            }
            _ => st.kind = self.text(value, at),
        }
        Some(st)
    }

    fn admin(&mut self, value: &Value, at: At) -> RawAdmin {
        let mut a = RawAdmin::default();
        if let Some(map) = self.mapping(value, &at) {
            for (key, v, key_at) in
                self.entries(map, &format!("{}.", at.key), &["token", "token_file"])
            {
                match key {
                    "token" => a.token = self.secret(v, key_at),
                    "token_file" => a.token_file = self.text(v, key_at),
                    _ => {}
                }
            }
        }
        a
    }

    fn pull(&mut self, value: &Value, at: At) -> RawPull {
        let mut p = RawPull::default();
        if let Some(map) = self.mapping(value, &at) {
            let allowed = ["interval", "reconcile_every"];
            for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
                match key {
                    "interval" => p.interval = self.duration(v, key_at),
                    "reconcile_every" => p.reconcile_every = self.duration(v, key_at),
                    _ => {}
                }
            }
        }
        p
    }

    fn outbound(&mut self, value: &Value, at: At) -> RawOutbound {
        let mut o = RawOutbound::default();
        if let Some(map) = self.mapping(value, &at) {
            for (key, v, key_at) in
                self.entries(map, &format!("{}.", at.key), &["ca_file", "proxy"])
            {
                match key {
                    "ca_file" => o.ca_file = self.text(v, key_at),
                    "proxy" => o.proxy = self.text(v, key_at),
                    _ => {}
                }
            }
        }
        o
    }

    fn pipeline(&mut self, value: &Value, at: At) -> RawPipeline {
        let mut p = RawPipeline::default();
        if let Some(map) = self.mapping(value, &at) {
            let allowed = [
                "workers",
                "lease",
                "max_attempts",
                "queue_high_water",
                "batch_records",
                "batch_bytes",
            ];
            for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
                match key {
                    "workers" => p.workers = self.uint(v, key_at),
                    "lease" => p.lease = self.duration(v, key_at),
                    "max_attempts" => p.max_attempts = self.uint(v, key_at),
                    "queue_high_water" => p.queue_high_water = self.uint(v, key_at),
                    "batch_records" => p.batch_records = self.uint(v, key_at),
                    "batch_bytes" => p.batch_bytes = self.size(v, key_at),
                    _ => {}
                }
            }
        }
        p
    }

    fn enrichment(&mut self, value: &Value, at: At) -> RawEnrichment {
        let mut e = RawEnrichment::default();
        if let Some(map) = self.mapping(value, &at) {
            let allowed = ["user_agent", "geoip_city", "geoip_asn", "reload_every"];
            for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
                match key {
                    "user_agent" => e.user_agent = self.boolean(v, key_at),
                    "geoip_city" => e.geoip_city = self.text(v, key_at),
                    "geoip_asn" => e.geoip_asn = self.text(v, key_at),
                    "reload_every" => e.reload_every = self.duration(v, key_at),
                    _ => {}
                }
            }
        }
        e
    }

    fn outputs(&mut self, value: &Value, at: At) -> Option<(At, Vec<RawOutput>)> {
        let map = self.mapping(value, &at)?;
        let mut outputs = Vec::new();
        for (key, v) in map {
            let Some(name) = key.as_str() else {
                let key_at = self.at(format!("{}.?", at.key));
                self.push(
                    key_at.order,
                    &at.key,
                    format!("has a key that is {}, not a name", kind_of(key)),
                    "name each output with plain text, e.g. `siem:`",
                );
                continue;
            };
            let out_at = self.at(format!("{}.{name}", at.key));
            outputs.push(self.output(name, v, out_at));
        }
        if outputs.is_empty() {
            return None;
        }
        Some((at, outputs))
    }

    fn output(&mut self, name: &str, value: &Value, at: At) -> RawOutput {
        let mut o = RawOutput {
            name: name.to_owned(),
            at: at.clone(),
            end: at.order,
            kind: Field::Absent,
            path: Field::Absent,
            dedup_window_bytes: Field::Absent,
            rotate_bytes: Field::Absent,
            rotate_every: Field::Absent,
            keep: Field::Absent,
            compression: Field::Absent,
            opts: Vec::new(),
        };
        let Some(map) = self.mapping(value, &at) else {
            if matches!(value, Value::Null) {
                self.push(
                    at.order,
                    &at.key,
                    "has no settings",
                    "give it a type, e.g. `{type: stdout}` or `{type: file, path: ./var/events.ndjson}`",
                );
            }
            return o;
        };
        // The type decides which other keys are allowed, so it is read first.
        let type_at = At {
            key: format!("{}.type", at.key),
            order: at.order,
        };
        o.kind = match map.get("type") {
            None | Some(Value::Null) => {
                self.push(
                    at.order,
                    &type_at.key,
                    "is missing",
                    "set `type:` to file, stdout, syslog, http or kafka",
                );
                Field::Invalid(type_at)
            }
            Some(v) => match self.text(v, type_at.clone()) {
                Field::Value(t, type_at) => match t.as_str() {
                    "file" => Field::Value(OutputKind::File, type_at),
                    "stdout" => Field::Value(OutputKind::Stdout, type_at),
                    "syslog" => Field::Value(OutputKind::Syslog, type_at),
                    "http" => Field::Value(OutputKind::Http, type_at),
                    "kafka" => Field::Value(OutputKind::Kafka, type_at),
                    _ => {
                        self.push(
                            type_at.order,
                            &type_at.key,
                            format!("`{t}` is not an output type"),
                            "use `file`, `stdout`, `syslog`, `http` or `kafka`",
                        );
                        Field::Invalid(type_at)
                    }
                },
                other => other.map_invalid(),
            },
        };
        let with_type = |keys: &[&'static str]| {
            let mut all = vec!["type"];
            all.extend_from_slice(keys);
            all
        };
        let allowed: Vec<&'static str> = match &o.kind {
            Field::Value(OutputKind::Stdout, _) => vec!["type"],
            Field::Value(OutputKind::File, _) => with_type(&FILE_KEYS),
            Field::Value(OutputKind::Syslog, _) => with_type(&SYSLOG_KEYS),
            Field::Value(OutputKind::Http, _) => with_type(&HTTP_KEYS),
            Field::Value(OutputKind::Kafka, _) => with_type(&KAFKA_KEYS),
            // Without a known type the other keys cannot be judged; the type problem says enough.
            _ => return o,
        };
        let generic = matches!(
            &o.kind,
            Field::Value(OutputKind::Syslog | OutputKind::Http | OutputKind::Kafka, _)
        );
        for (key, v, key_at) in self.entries(map, &format!("{}.", at.key), &allowed) {
            match key {
                "type" => {}
                _ if generic => {
                    let opt = match output_option_kind(key) {
                        OptKind::Text => Opt::Text(self.text(v, key_at)),
                        OptKind::Words => Opt::Words(self.words(v, key_at)),
                        OptKind::Secret => Opt::Secret(self.secret(v, key_at)),
                        OptKind::Bool => Opt::Bool(self.boolean(v, key_at)),
                        OptKind::Uint => Opt::Uint(self.uint(v, key_at)),
                        OptKind::Duration => Opt::Duration(self.duration(v, key_at)),
                    };
                    o.opts.push((key, opt));
                }
                "path" => o.path = self.text(v, key_at),
                "dedup_window_bytes" => o.dedup_window_bytes = self.size(v, key_at),
                "rotate_bytes" => o.rotate_bytes = self.size(v, key_at),
                "rotate_every" => o.rotate_every = self.duration(v, key_at),
                "keep" => o.keep = self.uint(v, key_at),
                "compression" => o.compression = self.text(v, key_at),
                _ => {}
            }
        }
        o.end = self.end();
        o
    }

    // ---- generic typed readers -------------------------------------------------------------

    /// The known keys of `map` in file order, each with its position; unknown keys become problems.
    fn entries<'v>(
        &mut self,
        map: &'v Mapping,
        prefix: &str,
        allowed: &[&'static str],
    ) -> Vec<(&'static str, &'v Value, At)> {
        let mut out = Vec::new();
        for (key, value) in map {
            let Some(name) = key.as_str() else {
                let at = self.at(format!("{prefix}?"));
                let section = prefix.trim_end_matches('.');
                self.push(
                    at.order,
                    if section.is_empty() {
                        "(file)"
                    } else {
                        section
                    },
                    format!("has a key that is {}, not a name", kind_of(key)),
                    format!("use only these keys: {}", allowed.join(", ")),
                );
                continue;
            };
            let at = self.at(format!("{prefix}{name}"));
            match allowed.iter().find(|k| **k == name) {
                Some(known) => out.push((*known, value, at)),
                None => {
                    let fix = match suggest(name, allowed) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("remove it; known keys here: {}", allowed.join(", ")),
                    };
                    self.push(at.order, &at.key, "is not a known key", fix);
                }
            }
        }
        out
    }

    fn mapping<'v>(&mut self, value: &'v Value, at: &At) -> Option<&'v Mapping> {
        match value {
            Value::Null => None,
            Value::Mapping(m) => Some(m),
            other => {
                self.wrong_type(
                    at,
                    other,
                    "a mapping of keys (`key: value` lines indented below it)",
                );
                None
            }
        }
    }

    fn absent_or_invalid<T>(&self, value: &Value, at: At) -> Field<T> {
        if matches!(value, Value::Null) {
            Field::Absent
        } else {
            Field::Invalid(at)
        }
    }

    /// A string (after `${NAME}` expansion). Numbers are taken as their text.
    fn text(&mut self, value: &Value, at: At) -> Field<String> {
        let raw = match value {
            Value::Null => return Field::Absent,
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                self.wrong_type(&at, other, "text");
                return Field::Invalid(at);
            }
        };
        match env::expand(&raw, self.env) {
            Ok(s) => Field::Value(s, at),
            Err(errors) => {
                for e in errors {
                    let fix = match &e {
                        ExpandError::Unset(name) => format!(
                            "export {name} in the collector's environment, or write the value instead of ${{{name}}}"
                        ),
                        ExpandError::Unterminated => {
                            "close it as `${NAME}`, or write `$${` for a literal `${`".to_owned()
                        }
                        ExpandError::BadName(_) => {
                            "variable names are letters, digits and `_` (not starting with a digit); write `$${` for a literal `${`".to_owned()
                        }
                    };
                    self.push(at.order, &at.key, e.to_string(), fix);
                }
                Field::Invalid(at)
            }
        }
    }

    fn secret(&mut self, value: &Value, at: At) -> Field<Secret> {
        // A number or true/false is what YAML made of an unquoted value: it may have changed it
        // (leading zeros, exponents, huge integers). Reported without the value.
        if matches!(value, Value::Number(_) | Value::Bool(_)) || is_too_large(value) {
            self.push(
                at.order,
                &at.key,
                format!("is {}, not text (a secret is text)", kind_of(value)),
                "quote the value (`key: \"…\"`): YAML reads unquoted digits as a number and may change them",
            );
            return Field::Invalid(at);
        }
        match self.text(value, at) {
            Field::Value(s, at) => Field::Value(Secret::new(s), at),
            other => other.map_invalid(),
        }
    }

    /// Either a space-separated string or a list of strings (each may itself hold several words).
    fn words(&mut self, value: &Value, at: At) -> Field<Vec<String>> {
        let parts: Vec<&Value> = match value {
            Value::Sequence(items) => items.iter().collect(),
            Value::Null => return Field::Absent,
            other => vec![other],
        };
        let mut words = Vec::new();
        let mut ok = true;
        for part in parts {
            match self.text(part, at.clone()) {
                Field::Value(s, _) => words.extend(s.split_whitespace().map(str::to_owned)),
                Field::Absent => {}
                Field::Invalid(_) => ok = false,
            }
        }
        if ok {
            Field::Value(words, at)
        } else {
            Field::Invalid(at)
        }
    }

    /// `true`/`false` (also as text, e.g. from `${NAME}`).
    fn boolean(&mut self, value: &Value, at: At) -> Field<bool> {
        if let Value::Bool(b) = value {
            return Field::Value(*b, at);
        }
        match self.text(value, at) {
            Field::Value(s, at) => match s.trim() {
                "true" => Field::Value(true, at),
                "false" => Field::Value(false, at),
                other => {
                    self.push(
                        at.order,
                        &at.key,
                        format!("is `{other}`, not true or false"),
                        "write true or false",
                    );
                    Field::Invalid(at)
                }
            },
            other => other.map_invalid(),
        }
    }

    fn uint(&mut self, value: &Value, at: At) -> Field<u64> {
        if let Value::Number(n) = value {
            return match n.as_u64() {
                Some(v) => Field::Value(v, at),
                None => {
                    self.push(
                        at.order,
                        &at.key,
                        format!("is {n}, not a whole number ≥ 0"),
                        "write a whole number such as 4",
                    );
                    Field::Invalid(at)
                }
            };
        }
        match self.text(value, at) {
            Field::Value(s, at) => match s.trim().parse::<u64>() {
                Ok(v) => Field::Value(v, at),
                Err(_) => {
                    self.push(
                        at.order,
                        &at.key,
                        format!("is `{}`, not a whole number ≥ 0", s.trim()),
                        "write a whole number such as 4",
                    );
                    Field::Invalid(at)
                }
            },
            other => other.map_invalid(),
        }
    }

    fn size(&mut self, value: &Value, at: At) -> Field<u64> {
        if let Value::Number(_) = value {
            return self.uint(value, at);
        }
        match self.text(value, at) {
            Field::Value(s, at) => match units::parse_size(&s) {
                Ok(v) => Field::Value(v, at),
                Err(e) => {
                    self.push(
                        at.order,
                        &at.key,
                        format!("is `{}`, which {e}", s.trim()),
                        "write bytes as a number, or with a unit: 1048576, 1MiB, 64MiB, 512KB",
                    );
                    Field::Invalid(at)
                }
            },
            other => other.map_invalid(),
        }
    }

    fn duration(&mut self, value: &Value, at: At) -> Field<Duration> {
        if let Value::Number(n) = value {
            self.push(
                at.order,
                &at.key,
                format!("is the bare number {n}, which has no unit"),
                format!("add a unit, e.g. `{n}s` (units: ms, s, m, h, d)"),
            );
            return Field::Invalid(at);
        }
        match self.text(value, at) {
            Field::Value(s, at) => match units::parse_duration(&s) {
                Ok(d) => Field::Value(d, at),
                Err(e) => {
                    let fix = if e == UnitError::MissingUnit {
                        format!("add a unit, e.g. `{}s` (units: ms, s, m, h, d)", s.trim())
                    } else {
                        "write a duration such as 500ms, 60s, 15m, 1h or 1h30m".to_owned()
                    };
                    self.push(
                        at.order,
                        &at.key,
                        format!("is `{}`, which {e}", s.trim()),
                        fix,
                    );
                    Field::Invalid(at)
                }
            },
            other => other.map_invalid(),
        }
    }

    // ---- bookkeeping --------------------------------------------------------------------------

    /// Positions are even; the odd position just before the next key is a section's end (see
    /// [`Reader::end`]), where problems about its missing keys are reported.
    fn at(&mut self, key: String) -> At {
        let order = self.next_order;
        self.next_order += 2;
        At { key, order }
    }

    /// The position after everything read so far: between the last key and the next one.
    fn end(&self) -> usize {
        self.next_order.saturating_sub(1)
    }

    fn wrong_type(&mut self, at: &At, found: &Value, expected: &str) {
        let fix = if matches!(found, Value::Tagged(_)) && !is_too_large(found) {
            format!("remove the YAML tag (`!…`); write {expected}")
        } else {
            format!("write {expected}")
        };
        self.push(
            at.order,
            &at.key,
            format!("is {}, expected {expected}", kind_of(found)),
            fix,
        );
    }

    fn push(
        &mut self,
        order: usize,
        key: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(Found {
            order,
            problem: Problem {
                key: key.to_owned(),
                problem: problem.into(),
                fix: fix.into(),
            },
        });
    }
}

impl<T> Field<T> {
    /// Re-types an `Absent`/`Invalid` field (a `Value` becomes `Invalid`; callers only pass non-values).
    fn map_invalid<U>(self) -> Field<U> {
        match self {
            Field::Absent => Field::Absent,
            Field::Invalid(at) | Field::Value(_, at) => Field::Invalid(at),
        }
    }
}

/// A description of a YAML value's shape that never includes the value itself.
/// Marks an integer literal too large for the YAML library, quoted by [`parse_yaml`] so that the
/// rest of the file can still be read and checked.
const TOO_LARGE: &str = "o365-collector-too-large-number";

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

fn is_too_large(value: &Value) -> bool {
    matches!(value, Value::Tagged(t) if t.tag == serde_yaml::value::Tag::new(TOO_LARGE))
}

fn kind_of(value: &Value) -> &'static str {
    if is_too_large(value) {
        return "a number too large to read";
    }
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
pub(crate) fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
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
