//! Configuration: the YAML file is read into a raw tree ([`raw`]), then validated into [`Config`]
//! ([`validate`]) with every problem reported at once, in file order, as key, problem and fix.
//!
//! See `config.yaml` at the repository root for every key with its default. `${NAME}` in any string
//! value is taken from the environment (`$${` is a literal `${`); secrets can also come from files
//! (`client_secret_file`, `webhook.auth_id_file`, `admin.token_file`, `client_certificate.password_file`).

mod env;
pub mod net;
mod raw;
pub mod secret;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use env::ExpandError;
pub use net::{IpNet, IpNetError};
pub use secret::Secret;
pub use units::{UnitError, format_duration, parse_duration, parse_size};
pub use validate::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_RECORDS, DEFAULT_BODY_TIMEOUT,
    DEFAULT_DEDUP_WINDOW_BYTES, DEFAULT_ENCODING, DEFAULT_GRAPH_BACKFILL, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HTTP_MAX_EVENTS, DEFAULT_IDLE_TIMEOUT, DEFAULT_LAST_VALUE_STORAGE, DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_OUTPUT, DEFAULT_OUTPUT_TIMEOUT, DEFAULT_PUBLIC_LISTEN,
    DEFAULT_PULL_INTERVAL, DEFAULT_QUEUE_HIGH_WATER, DEFAULT_RECONCILE_EVERY, DEFAULT_RESOURCE,
    DEFAULT_SYSLOG_APP_NAME, DEFAULT_SYSLOG_FACILITY, DEFAULT_SYSLOG_SD_ID,
    DEFAULT_SYSLOG_SEVERITY, DEFAULT_TLS_RELOAD_EVERY, DEFAULT_WORKERS, MIN_ADMIN_TOKEN_LEN,
    MIN_AUTH_ID_LEN, derive_authority, is_guid, is_microsoft_cloud,
};

use crate::mapping::Format;

/// The five content types of the Management Activity API.
pub const CONTENT_TYPES: [&str; 5] = [
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
];

/// The product documentation's default for `content_type`.
pub const DEFAULT_CONTENT_TYPES: &str =
    "Audit.AzureActiveDirectory Audit.Exchange Audit.SharePoint Audit.General";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// One entry per tenant: the top-level keys make one, `tenants:` adds more.
    pub tenants: Vec<TenantConfig>,
    /// `None` → pull mode.
    pub webhook: Option<WebhookConfig>,
    pub listen: ListenConfig,
    /// `None` → plain HTTP (a proxy terminates TLS).
    pub tls: Option<TlsConfig>,
    pub admin: AdminConfig,
    pub pull: PullConfig,
    pub outbound: OutboundConfig,
    pub outputs: BTreeMap<String, OutputConfig>,
    /// Directory of the embedded store (`last_value_storage`).
    pub last_value_storage: PathBuf,
    /// Which store holds the queue (`store:`).
    pub store: StoreConfig,
    pub pipeline: PipelineConfig,
    pub enrichment: crate::mapping::enrich::EnrichmentConfig,
}

/// `store:` — where the queue, the dedup set and the cursors live.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One process: a file under `last_value_storage` (the default).
    Embedded,
    /// Several replicas share one PostgreSQL database.
    Postgres(crate::store::PostgresConfig),
}

/// One tenant's credentials and what to collect from it.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub tenant_id: String,
    /// Elastic's tenant name (`contoso.onmicrosoft.com`): `organization.name` and `host.name` in
    /// format `ecs`.
    pub tenant_name: Option<String>,
    pub client_id: String,
    pub credential: Credential,
    /// `resource`, e.g. `https://manage.office.com` (scheme + host [+ port], no path).
    pub resource: String,
    /// Login authority, e.g. `https://login.microsoftonline.com`; derived from `resource` unless set.
    pub authority: String,
    /// `PublisherIdentifier` sent on every call (default: the tenant id).
    pub publisher_id: String,
    pub content_types: Vec<String>,
    /// Name of an entry of `outputs`.
    pub output: String,
    /// Charset of the blobs (`encoding`, any WHATWG label).
    pub encoding: &'static encoding_rs::Encoding,
    pub format: Format,
    /// This tenant's own limit on calls to Microsoft (`requests_per_minute`, `request_burst`).
    pub request_budget: RequestBudgetConfig,
    /// The Microsoft Graph feeds of this tenant (none by default).
    pub graph: GraphConfig,
}

/// Which Graph feeds a tenant collects and where Graph is. `Default`: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphConfig {
    /// `graph_feeds`; empty by default, so configurations written before them work unchanged.
    pub feeds: Vec<crate::graph::GraphFeed>,
    /// `graph_host`: derived from `resource` (its cloud's Graph host) unless set.
    pub host: String,
    /// `graph_backfill`: how far back the first read of a feed starts, within what it keeps.
    pub backfill: Duration,
}

/// How many Management Activity API calls one tenant allows itself. Microsoft's quota is per
/// tenant and grows with its seats, so it is configurable; the default stays under the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBudgetConfig {
    /// Steady rate (`requests_per_minute`).
    pub per_minute: u32,
    /// Calls that may go out back to back before the rate applies (`request_burst`).
    pub burst: u32,
}

impl Default for RequestBudgetConfig {
    fn default() -> Self {
        RequestBudgetConfig {
            per_minute: crate::mgmt_api::throttle::DEFAULT_REQUESTS_PER_MINUTE,
            burst: crate::mgmt_api::throttle::DEFAULT_BURST,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Credential {
    Secret(Secret),
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        password: Option<Secret>,
    },
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Public HTTPS URL Microsoft posts to (behind the proxy, if any).
    pub address: String,
    pub auth_id: Secret,
    /// Path the public listener serves the webhook on (the address's path).
    pub path: String,
    /// Largest accepted notification body.
    pub max_body_bytes: usize,
    /// A body must arrive whole within this once its headers were accepted.
    pub body_timeout: Duration,
    /// Bytes of all bodies being received at once, across connections (over it: 503).
    pub max_inflight_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Reverse proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (for logging the
    /// caller); empty → the TCP peer is the caller.
    pub trusted_proxies: Vec<IpNet>,
    /// Open connections of the public listener (bounded again below the open-file limit at start-up).
    pub max_connections: usize,
    /// TLS handshake and request headers must be complete within this of their first byte.
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this long without a byte.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the files are checked for a renewed certificate (loaded without a restart).
    pub reload_every: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct PullConfig {
    pub interval: Duration,
    pub reconcile_every: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    /// Extra trust root (PEM) for Microsoft / the emulator / a TLS-inspecting proxy.
    pub ca_file: Option<PathBuf>,
    pub proxy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Blobs processed at once.
    pub workers: usize,
    /// How long a claimed blob stays leased before another worker may take it.
    pub lease: Duration,
    /// Attempts before a blob is dead-lettered.
    pub max_attempts: u32,
    /// Queued blobs above which content listing (pull mode, reconciliation) waits for the output
    /// to catch up. The webhook keeps storing notifications whatever the queue holds.
    pub queue_high_water: u64,
    /// Records per batch handed to the output (a blob goes out in batches; progress is recorded
    /// after each).
    pub batch_records: usize,
    /// Bytes of encoded events per batch at most (a single larger event goes alone).
    pub batch_bytes: usize,
}

#[derive(Debug, Clone)]
pub enum OutputConfig {
    File(FileOutputConfig),
    Stdout,
    Syslog(SyslogOutputConfig),
    Http(HttpOutputConfig),
    Kafka(KafkaOutputConfig),
}

/// Compression of Kafka record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaCompression {
    #[default]
    None,
    Gzip,
    Snappy,
}

/// What the Kafka record key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaKey {
    /// The record's `Id` (same record → same partition, compaction-friendly).
    #[default]
    Id,
    /// No key.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

/// SASL authentication; the password is never logged.
#[derive(Debug, Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// TLS to the brokers (`tls: true`): the system's trust roots plus `ca_file`, and an optional
/// client certificate for brokers that want mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct KafkaTls {
    /// Extra trust root (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and its private key (PEM), set together.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name checked in every broker's certificate instead of the host it is reached at (brokers
    /// advertised by IP address, or behind a name the certificate does not carry).
    pub server_name: Option<String>,
}

/// `type: kafka`: acknowledged produce (acks = all).
#[derive(Debug, Clone)]
pub struct KafkaOutputConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic name; `{content_type}` and `{tenant_id}` are replaced per batch.
    pub topic: String,
    pub key: KafkaKey,
    pub compression: KafkaCompression,
    pub sasl: Option<KafkaSasl>,
    /// `None`: plaintext connections.
    pub tls: Option<KafkaTls>,
    /// Deadline of one produce (connecting and retrying included).
    pub timeout: Duration,
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// RFC 6587 octet counting over TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
    /// RFC 5426: one message per datagram (no delivery confirmation).
    Udp,
}

/// `type: syslog`: RFC 5424 messages whose MSG is the JSON event.
#[derive(Debug, Clone)]
pub struct SyslogOutputConfig {
    /// `host:port` of the receiver.
    pub address: String,
    pub transport: SyslogTransport,
    /// Extra trust root (PEM) for TLS; the system's webpki roots are used too.
    pub ca_file: Option<PathBuf>,
    /// Name checked in the receiver's certificate (default: the host of `address`).
    pub server_name: Option<String>,
    /// HOSTNAME field (default: this machine's host name).
    pub hostname: Option<String>,
    pub app_name: String,
    /// MSGID field; `None` → the content type (e.g. `Audit.Exchange`).
    pub msgid: Option<String>,
    /// 0–23 (default 16, local0).
    pub facility: u8,
    /// 0–7 (default 6, informational).
    pub severity: u8,
    /// SD-ID of the element carrying tenant/contentType/contentId; `None` → no structured data.
    pub sd_id: Option<String>,
    /// Connect and write timeout.
    pub timeout: Duration,
}

/// Body format of an `http` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFormat {
    /// One JSON event per line, POSTed to `url`.
    Ndjson,
    /// Elasticsearch/OpenSearch `_bulk` (`url` is the cluster, `/_bulk` is added when missing).
    Elasticsearch,
    /// Splunk HTTP Event Collector (`url` is `…/services/collector/event` or the server root).
    SplunkHec,
}

/// Credentials sent with each request; never logged.
#[derive(Debug, Clone, Default)]
pub enum HttpAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: Secret,
    },
    /// `Authorization: Bearer …` (for `splunk_hec`: `Authorization: Splunk …`).
    Token(Secret),
    /// A custom header, e.g. `X-API-Key`.
    Header {
        name: String,
        value: Secret,
    },
}

/// `type: http`.
#[derive(Debug, Clone)]
pub struct HttpOutputConfig {
    pub url: String,
    pub format: HttpFormat,
    /// Elasticsearch: index name with strftime-like `%Y %m %d %H` from the event's `@timestamp`
    /// (default `o365-%Y.%m.%d`); Splunk: the `index` field (default: the token's default index).
    pub index: Option<String>,
    /// Splunk `source` (default `o365-collector`).
    pub source: Option<String>,
    /// Splunk `sourcetype` (default `o365:management:activity`).
    pub sourcetype: Option<String>,
    pub gzip: bool,
    pub auth: HttpAuth,
    /// Extra trust root (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Most events in one request; bigger batches are split.
    pub max_events: usize,
    /// How long a blob smaller than `max_events` waits for others to share its request; zero sends
    /// each blob at once.
    pub linger: Duration,
    pub timeout: Duration,
    /// Elasticsearch documents rejected for good (4xx other than 429) are appended here with their
    /// reason, and count as delivered; without it such a batch is retried (and so stays visible).
    pub dead_letter_path: Option<PathBuf>,
}

/// `type: file`: NDJSON appended and fsync'd, optionally rotated by size and age.
#[derive(Debug, Clone)]
pub struct FileOutputConfig {
    pub path: PathBuf,
    /// Bytes at the end of the file whose record ids are remembered across restarts for dedup.
    pub dedup_window_bytes: u64,
    /// Rotate before a batch would make the active file larger than this; `None`: no size limit.
    pub rotate_bytes: Option<u64>,
    /// Rotate once the active file is this old (from its creation); `None`: no age limit.
    pub rotate_every: Option<Duration>,
    /// Rotated files kept (the oldest are deleted); 0 keeps all.
    pub keep: usize,
    /// Compression of rotated files (done in the background, never on the send path).
    pub compression: FileCompression,
}

impl Default for FileOutputConfig {
    /// Defaults as the configuration check applies them (the path is left empty).
    fn default() -> Self {
        FileOutputConfig {
            path: PathBuf::new(),
            dedup_window_bytes: validate::DEFAULT_DEDUP_WINDOW_BYTES,
            rotate_bytes: None,
            rotate_every: None,
            keep: 0,
            compression: FileCompression::None,
        }
    }
}

impl FileOutputConfig {
    /// Whether the file rotates at all.
    pub fn rotates(&self) -> bool {
        self.rotate_bytes.is_some() || self.rotate_every.is_some()
    }
}

/// Compression of rotated output files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileCompression {
    #[default]
    None,
    /// `<name>.gz`, written to a temporary name and renamed once complete.
    Gzip,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `tenants[2].client_secret`.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

/// Every problem found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigErrors(pub Vec<Problem>);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} — fix: {}", self.key, self.problem, self.fix)
    }
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates a file; relative paths are taken relative to the current directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Problem {
                key: "(file)".into(),
                problem: format!("cannot read {}: {e}", path.display()),
                fix: "pass an existing readable YAML file with --config".into(),
            }])
        })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses YAML text; `env` resolves `${NAME}`. Files named by the configuration (secrets,
    /// certificates) are read relative to the current directory.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        Self::parse_with(text, env, &validate::RealFiles)
    }

    fn parse_with(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        files: &dyn validate::Files,
    ) -> Result<Config, ConfigErrors> {
        let mut reader = raw::Reader::new(env);
        let tree = reader.read_text(text);
        let mut found = std::mem::take(&mut reader.problems);
        if tree.unreadable {
            return Err(ConfigErrors(found.into_iter().map(|f| f.problem).collect()));
        }
        let (config, more) = validate::validate(&tree, files);
        found.extend(more);
        match config {
            Some(config) if found.is_empty() => Ok(config),
            _ => {
                // Stable: problems at the same key keep the order they were found in.
                found.sort_by_key(|f| f.order);
                Err(ConfigErrors(found.into_iter().map(|f| f.problem).collect()))
            }
        }
    }

    /// Whether the collector runs in push mode (webhook notifications) rather than pull-only.
    pub fn is_push(&self) -> bool {
        self.webhook.is_some()
    }

    /// A short human summary (tenants, content types, mode, listeners, outputs); contains no secret.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "tenants: {}", self.tenants.len());
        for t in &self.tenants {
            let _ = writeln!(
                s,
                "  {}: {} -> output {} (format {}, encoding {}, resource {}, login {})",
                t.tenant_id,
                t.content_types.join(" "),
                t.output,
                format!("{:?}", t.format).to_lowercase(),
                t.encoding.name(),
                t.resource,
                t.authority,
            );
            if !t.graph.feeds.is_empty() {
                let feeds: Vec<&str> = t.graph.feeds.iter().map(|f| f.config_name()).collect();
                let _ = writeln!(
                    s,
                    "    graph: {} from {} (first read {} back)",
                    feeds.join(" "),
                    t.graph.host,
                    format_duration(t.graph.backfill)
                );
            }
            if !is_microsoft_cloud(&t.resource) {
                let _ = writeln!(
                    s,
                    "  note: {} is not a Microsoft cloud; it must serve the token endpoint itself (the emulator does)",
                    t.resource
                );
            }
        }
        match &self.webhook {
            Some(w) => {
                let _ = writeln!(
                    s,
                    "mode: push (webhook {} served at {}), reconciliation every {}",
                    w.address,
                    w.path,
                    format_duration(self.pull.reconcile_every)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "mode: pull every {} (no webhook configured)",
                    format_duration(self.pull.interval)
                );
            }
        }
        let _ = writeln!(
            s,
            "listen: public {} ({}), admin {} ({})",
            self.listen.public,
            if self.tls.is_some() {
                "TLS"
            } else {
                "plain HTTP, TLS terminated in front"
            },
            self.listen.admin,
            if self.admin.token.is_some() {
                "token required"
            } else {
                "no token, loopback only"
            },
        );
        let _ = writeln!(
            s,
            "listener limits: {} connections (less if the open-file limit is lower; admin: 64), headers within {}, idle {}",
            self.listen.max_connections,
            format_duration(self.listen.header_timeout),
            format_duration(self.listen.idle_timeout),
        );
        if let Some(w) = &self.webhook {
            let _ = writeln!(
                s,
                "webhook bodies: at most {} bytes each, within {}, {} bytes in flight",
                w.max_body_bytes,
                format_duration(w.body_timeout),
                w.max_inflight_bytes,
            );
        }
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|(name, o)| match o {
                OutputConfig::Stdout => format!("{name} (stdout)"),
                OutputConfig::File(f) => format!("{name} (file {})", f.path.display()),
                OutputConfig::Syslog(c) => {
                    format!("{name} (syslog {:?} {})", c.transport, c.address).to_lowercase()
                }
                OutputConfig::Http(c) => format!("{name} (http {:?})", c.format).to_lowercase(),
                OutputConfig::Kafka(c) => format!(
                    "{name} (kafka {}{})",
                    c.topic,
                    if c.tls.is_some() { ", tls" } else { "" }
                ),
            })
            .collect();
        let _ = writeln!(s, "outputs: {}", outputs.join(", "));
        match &self.store {
            StoreConfig::Embedded => {
                let _ = write!(s, "store: {}", self.last_value_storage.display());
            }
            StoreConfig::Postgres(p) => {
                // Host, port and database only: the URL holds the password.
                let at = reqwest::Url::parse(p.url.expose())
                    .map(|u| {
                        format!(
                            "{}:{}{}",
                            u.host_str().unwrap_or(""),
                            u.port().unwrap_or(5432),
                            u.path()
                        )
                    })
                    .unwrap_or_default();
                let _ = write!(s, "store: postgres {at} (pool {})", p.pool_size);
            }
        }
        s
    }
}

/// `o365-collector check-config --config FILE`: the report to print and the exit code — 0 with a
/// summary when the file is valid and the store directory takes a write, 2 with one
/// `key: problem — fix: …` line per problem otherwise.
pub fn check_config(path: &Path) -> (String, i32) {
    check_config_with(path, &|name| std::env::var(name).ok())
}

/// [`check_config`] with an explicit environment for `${NAME}` (tests cannot safely set variables).
pub fn check_config_with(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> (String, i32) {
    let result = match std::fs::read_to_string(path) {
        Ok(text) => Config::parse(&text, env),
        Err(e) => Err(ConfigErrors(vec![Problem {
            key: "(file)".into(),
            problem: format!("cannot read {}: {e}", path.display()),
            fix: "pass an existing readable YAML file with --config".into(),
        }])),
    };
    // The store directory must take writes, or `run` fails at once (or on the first notification).
    let result = result.and_then(|config| {
        if matches!(config.store, StoreConfig::Postgres(_)) {
            return Ok(config);
        }
        match crate::store::embedded::probe_dir(&config.last_value_storage) {
            Ok(()) => Ok(config),
            Err(e) => Err(ConfigErrors(vec![Problem {
                key: "last_value_storage".into(),
                problem: e,
                fix: "give a directory on a writable filesystem with free space (the store writes and fsyncs there)".into(),
            }])),
        }
    });
    match result {
        Ok(config) => (format!("{}: OK\n{}\n", path.display(), config.summary()), 0),
        Err(errors) => {
            let n = errors.0.len();
            (
                format!(
                    "{errors}\n{}: {n} problem{}\n",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                ),
                2,
            )
        }
    }
}
