//! Raw tree → [`Config`]: applies defaults and inheritance and checks meaning, collecting every problem.
//!
//! Pure apart from reading the files the configuration names (secrets in `*_file`, certificates), which
//! goes through [`Files`] so the checks stay testable. Problem texts never contain secret values, and
//! not even values of keys where a secret is often pasted by mistake (ids, URLs that may carry
//! credentials): only their shape is described.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use encoding_rs::Encoding;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::raw::{At, Field, Found, OutputKind, RawConfig, RawOutput, RawTenant};
use super::{
    AdminConfig, CONTENT_TYPES, Config, Credential, DEFAULT_CONTENT_TYPES, FileCompression,
    FileOutputConfig, GraphConfig, HttpAuth, HttpFormat, HttpOutputConfig, IpNet, KafkaCompression,
    KafkaKey, KafkaOutputConfig, KafkaSasl, KafkaTls, ListenConfig, OutboundConfig, OutputConfig,
    PipelineConfig, Problem, PullConfig, RequestBudgetConfig, SaslMechanism, Secret, StoreConfig,
    SyslogOutputConfig, SyslogTransport, TenantConfig, TlsConfig, WebhookConfig,
};
use crate::graph::feed::{GraphFeed, derive_graph_host, is_national_graph_host};
use crate::mapping::Format;
use crate::mapping::enrich::EnrichmentConfig;
use crate::mapping::enrich::geoip::Kind;
use crate::mgmt_api::throttle::{DEFAULT_BURST, DEFAULT_REQUESTS_PER_MINUTE};
use crate::pipeline::tenant_lease::DEFAULT_TENANT_LEASE;
use crate::store::postgres::{DEFAULT_POOL_SIZE, PostgresConfig};

/// Documented defaults (product documentation and DESIGN §4).
pub const DEFAULT_RESOURCE: &str = "https://manage.office.com";
pub const DEFAULT_ENCODING: &str = "utf-8";
pub const DEFAULT_LAST_VALUE_STORAGE: &str = "./var/last_value_storage";
pub const DEFAULT_PUBLIC_LISTEN: &str = "0.0.0.0:8443";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 << 20;
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_DEDUP_WINDOW_BYTES: u64 = 64 << 20;
/// Shortest `rotate_every` of a file output: rotated names carry milliseconds, and a shorter age
/// would only rotate before every batch.
pub const MIN_FILE_ROTATE_EVERY: Duration = Duration::from_secs(1);
pub const DEFAULT_PULL_INTERVAL: Duration = Duration::from_secs(60);
/// How far back the first read of a Graph feed starts (`graph_backfill`).
pub const DEFAULT_GRAPH_BACKFILL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_WORKERS: usize = 4;
pub const DEFAULT_TLS_RELOAD_EVERY: Duration = Duration::from_secs(10);
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Queued blobs above which content listing waits for the output to catch up.
pub const DEFAULT_QUEUE_HIGH_WATER: u64 = 10_000;
/// Records per batch sent to the output: large enough that the per-batch fsyncs (output and
/// progress) cost little, small enough that a crash repeats little.
pub const DEFAULT_BATCH_RECORDS: usize = 1_000;
/// Bytes of encoded events per batch at most; with `DEFAULT_BATCH_RECORDS` it only binds for
/// records larger than 4 KiB on average.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
/// Upper bounds of the batch settings: a worker holds up to three batches.
pub const MAX_BATCH_RECORDS: u64 = 100_000;
pub const MAX_BATCH_BYTES: u64 = 256 << 20;
/// Connect/request timeout of network outputs.
pub const DEFAULT_OUTPUT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SYSLOG_APP_NAME: &str = "o365-collector";
/// local0.
pub const DEFAULT_SYSLOG_FACILITY: u8 = 16;
/// informational.
pub const DEFAULT_SYSLOG_SEVERITY: u8 = 6;
/// SD-ID with a private enterprise number, as RFC 5424 §6.3.2 asks for non-IANA ids.
pub const DEFAULT_SYSLOG_SD_ID: &str = "o365@32473";
/// Kafka topic when none is configured.
pub const DEFAULT_KAFKA_TOPIC: &str = "o365-{content_type}";
/// Events per HTTP request (Elasticsearch recommends bulk bodies of a few MB).
pub const DEFAULT_HTTP_MAX_EVENTS: usize = 500;
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
/// Name of the output used when none is configured.
pub const DEFAULT_OUTPUT: &str = "stdout";

/// Shortest accepted webhook auth id: it is the only thing telling Microsoft's posts from forged ones.
pub const MIN_AUTH_ID_LEN: usize = 8;
/// Shortest accepted admin token: it guards subscription changes and backfills.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
const MAX_WORKERS: u64 = 1024;
/// Far above any tenant's quota; a larger value is a typo.
const MAX_REQUESTS_PER_MINUTE: u64 = 1_000_000;
/// More connections than any file-descriptor limit allows.
const MAX_CONNECTIONS: u64 = 1 << 24;
/// Longest `linger` of an http output: blobs wait that long for company, so keep it short.
const MAX_LINGER: Duration = Duration::from_secs(10);

const CLOUDS: &str = "Enterprise https://manage.office.com, GCC https://manage-gcc.office.com, \
GCC High https://manage.office365.us, DoD https://manage.protection.apps.mil, \
China https://manage.chinacloudapi.cn";

/// Access to the files a configuration names.
pub(crate) trait Files {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real file system; relative paths are relative to the current directory.
pub(crate) struct RealFiles;

impl Files for RealFiles {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// The login authority for a normalised resource origin. Microsoft's clouds log in at their own hosts;
/// anything else is taken to be the emulator (or a test double), which serves the token endpoint on
/// the same address as the API — so the authority is the resource itself.
pub fn derive_authority(resource: &str) -> String {
    match host_of(resource) {
        "manage.office.com" | "manage-gcc.office.com" => "https://login.microsoftonline.com".into(),
        "manage.office365.us" | "manage.protection.apps.mil" => {
            "https://login.microsoftonline.us".into()
        }
        "manage.chinacloudapi.cn" => "https://login.chinacloudapi.cn".into(),
        _ => resource.to_owned(),
    }
}

/// Whether a resource origin is one of Microsoft's clouds (as opposed to an emulator).
pub fn is_microsoft_cloud(resource: &str) -> bool {
    matches!(
        host_of(resource),
        "manage.office.com"
            | "manage-gcc.office.com"
            | "manage.office365.us"
            | "manage.protection.apps.mil"
            | "manage.chinacloudapi.cn"
    )
}

/// The host of a normalised origin (`https://host[:port]`), without the port.
fn host_of(origin: &str) -> &str {
    let rest = origin.strip_prefix("https://").unwrap_or(origin);
    let host_port = rest.split('/').next().unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.is_empty() =>
        {
            host
        }
        _ => host_port,
    }
}

/// Microsoft's GUID form: 8-4-4-4-12 hex digits.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// Tenant keys resolved once at the top level and inherited by `tenants:` entries.
struct Inherited {
    /// Shared app registration (a multi-tenant app): only when the top level has no tenant_id.
    client_id: Option<String>,
    credential: Option<Credential>,
    resource: String,
    authority: Option<String>,
    publisher_id: Option<String>,
    content_types: Vec<String>,
    output: Option<String>,
    encoding: &'static Encoding,
    format: Format,
    request_budget: RequestBudgetConfig,
    /// `request_burst` was given at the top level (else it follows each tenant's rate).
    burst_given: bool,
    graph_feeds: Vec<GraphFeed>,
    graph_host: Option<String>,
    graph_backfill: Duration,
}

struct Checker<'f> {
    files: &'f dyn Files,
    found: Vec<Found>,
}

/// Validates the raw tree. Returns the configuration only when no problem was found; the problems are
/// in no particular order (the caller sorts them into file order).
pub(crate) fn validate(raw: &RawConfig, files: &dyn Files) -> (Option<Config>, Vec<Found>) {
    let mut c = Checker {
        files,
        found: Vec::new(),
    };
    let mut outputs = c.outputs(raw);
    let inherited = c.inherited(&raw.top, &outputs);
    let tenants = c.tenants(raw, &inherited, &mut outputs);
    let webhook = c.webhook(raw);
    let listen = c.listen(raw);
    let tls = c.tls(raw);
    let admin = c.admin(raw, &listen);
    let pull = c.pull(raw);
    let outbound = c.outbound(raw);
    let last_value_storage = match &raw.last_value_storage {
        Field::Value(v, at) if v.trim().is_empty() => {
            c.problem(
                at,
                "is empty",
                format!("give a directory for the store, or remove the key for {DEFAULT_LAST_VALUE_STORAGE}"),
            );
            PathBuf::new()
        }
        Field::Value(v, _) => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_LAST_VALUE_STORAGE),
    };
    let pipeline = c.pipeline(raw);
    let enrichment = c.enrichment(raw, &tenants);
    let store = c.store(raw, &outputs);
    if !c.found.is_empty() {
        return (None, c.found);
    }
    let config = Config {
        tenants,
        webhook,
        listen,
        tls,
        admin,
        pull,
        outbound,
        outputs,
        last_value_storage,
        store,
        pipeline,
        enrichment,
    };
    (Some(config), Vec::new())
}

impl Checker<'_> {
    fn problem(&mut self, at: &At, problem: impl Into<String>, fix: impl Into<String>) {
        self.problem_at(at.order, &at.key, problem, fix);
    }

    fn problem_at(
        &mut self,
        order: usize,
        key: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.found.push(Found {
            order,
            problem: Problem {
                key: key.to_owned(),
                problem: problem.into(),
                fix: fix.into(),
            },
        });
    }

    // ---- outputs -----------------------------------------------------------------------------

    fn outputs(&mut self, raw: &RawConfig) -> BTreeMap<String, OutputConfig> {
        let mut outputs = BTreeMap::new();
        let Some((_, entries)) = &raw.outputs else {
            return outputs;
        };
        let mut paths: HashMap<PathBuf, String> = HashMap::new();
        for o in entries {
            let name_ok = !o.name.is_empty()
                && o.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !name_ok {
                self.problem(
                    &o.at,
                    "has a name that is not made of letters, digits, `_`, `-` or `.`",
                    "rename the output, e.g. `siem` or `archive-1`",
                );
            }
            let config = match o.kind.value() {
                Some((OutputKind::Stdout, _)) => OutputConfig::Stdout,
                Some((OutputKind::File, _)) => OutputConfig::File(self.file_output(o, &mut paths)),
                Some((OutputKind::Syslog, _)) => OutputConfig::Syslog(self.syslog_output(o)),
                Some((OutputKind::Http, _)) => OutputConfig::Http(self.http_output(o, &mut paths)),
                Some((OutputKind::Kafka, _)) => OutputConfig::Kafka(self.kafka_output(o)),
                None => OutputConfig::Stdout,
            };
            outputs.insert(o.name.clone(), config);
        }
        outputs
    }

    fn file_output(
        &mut self,
        o: &RawOutput,
        paths: &mut HashMap<PathBuf, String>,
    ) -> FileOutputConfig {
        let path = match &o.path {
            Field::Absent => {
                self.problem_at(
                    o.end,
                    &format!("{}.path", o.at.key),
                    "is missing",
                    "set the file the events are appended to, e.g. `path: ./var/events.ndjson`",
                );
                PathBuf::new()
            }
            Field::Invalid(_) => PathBuf::new(),
            Field::Value(p, at) => {
                if p.trim().is_empty() {
                    self.problem(at, "is empty", "set a file path, e.g. ./var/events.ndjson");
                } else if let Some(other) = paths.insert(PathBuf::from(p), o.at.key.clone()) {
                    self.problem(
                        at,
                        format!("is the same file as {other}.path"),
                        "give each file output its own file: two writers would interleave and break dedup",
                    );
                }
                PathBuf::from(p)
            }
        };
        let dedup_window_bytes = match &o.dedup_window_bytes {
            Field::Value(0, at) => {
                self.problem(
                    at,
                    "is 0, which would turn off the record-id dedup that prevents duplicates after a crash",
                    "use a positive size, e.g. 64MiB (the default)",
                );
                0
            }
            Field::Value(v, _) => *v,
            _ => DEFAULT_DEDUP_WINDOW_BYTES,
        };
        let rotate_bytes = match &o.rotate_bytes {
            Field::Value(0, at) => {
                self.problem(
                    at,
                    "is 0, which would rotate before every batch",
                    "use a size such as 100MiB, or remove it to have no size limit",
                );
                None
            }
            Field::Value(v, _) => Some(*v),
            _ => None,
        };
        let rotate_every = match &o.rotate_every {
            Field::Value(d, at) if *d < MIN_FILE_ROTATE_EVERY => {
                self.problem(
                    at,
                    "is shorter than 1s",
                    "use an age such as 1h or 1d, or remove it to have no age limit",
                );
                None
            }
            Field::Value(d, _) => Some(*d),
            _ => None,
        };
        let keep = match &o.keep {
            Field::Value(v, _) => usize::try_from(*v).unwrap_or(usize::MAX),
            _ => 0,
        };
        let compression = match o.compression.value() {
            None => FileCompression::None,
            Some((v, at)) => match v.trim() {
                "none" => FileCompression::None,
                "gzip" => FileCompression::Gzip,
                other => {
                    self.problem(
                        at,
                        format!("`{other}` is not a compression of rotated files"),
                        "use none (default) or gzip",
                    );
                    FileCompression::None
                }
            },
        };
        let rotates_given = o.rotate_bytes.is_present() || o.rotate_every.is_present();
        // Rotated names add `-YYYYMMDDTHHMMSS.mmmZ` (21 bytes) to the file name; most file systems
        // allow 255 bytes.
        if rotates_given
            && let Some((_, at)) = o.path.value()
            && path.file_name().is_some_and(|n| n.len() + 21 + 3 > 255)
        {
            self.problem(
                at,
                "has a file name too long for rotated names (they add 21 bytes, and .gz)",
                "use a file name of at most 231 bytes",
            );
        }
        if !rotates_given {
            for at in [o.keep.at(), o.compression.at()].into_iter().flatten() {
                self.problem(
                    at,
                    "only applies to a rotated file",
                    "add rotate_bytes (e.g. 100MiB) or rotate_every (e.g. 1d), or remove it",
                );
            }
        }
        FileOutputConfig {
            path,
            dedup_window_bytes,
            rotate_bytes,
            rotate_every,
            keep,
            compression,
        }
    }

    fn required_text<'o>(
        &mut self,
        o: &'o RawOutput,
        key: &str,
        fix: &str,
    ) -> Option<(&'o str, &'o At)> {
        match o.text(key) {
            Some((v, at)) if v.trim().is_empty() => {
                self.problem(at, "is empty", fix);
                None
            }
            Some((v, at)) => Some((v.trim(), at)),
            None => {
                if !o.has(key) {
                    self.problem_at(o.end, &format!("{}.{key}", o.at.key), "is missing", fix);
                }
                None
            }
        }
    }

    /// A PEM file option: checked to hold what it should.
    fn pem_option(&mut self, o: &RawOutput, key: &str, private_key: bool) -> Option<PathBuf> {
        let (v, at) = o.text(key)?;
        let p = PathBuf::from(v.trim());
        if private_key {
            self.pem_private_key(at, &p);
        } else {
            self.pem_certificates(at, &p);
        }
        Some(p)
    }

    /// An RFC 5424 header field: 1..=max printable US-ASCII characters, no spaces.
    fn header_field(&mut self, o: &RawOutput, key: &str, max: usize) -> Option<String> {
        let (v, at) = o.text(key)?;
        let ok = !v.is_empty() && v.len() <= max && v.bytes().all(|b| (33..=126).contains(&b));
        if !ok {
            self.problem(
                at,
                format!("is not 1 to {max} printable ASCII characters without spaces"),
                "RFC 5424 allows only characters 33–126 here; e.g. `o365-collector`",
            );
            return None;
        }
        Some(v.clone())
    }

    fn syslog_output(&mut self, o: &RawOutput) -> SyslogOutputConfig {
        let transport = match o.text("transport") {
            None => SyslogTransport::Tcp,
            Some((v, at)) => match v.trim() {
                "tcp" => SyslogTransport::Tcp,
                "tls" => SyslogTransport::Tls,
                "udp" => SyslogTransport::Udp,
                other => {
                    self.problem(
                        at,
                        format!("`{other}` is not a syslog transport"),
                        "use tcp (default), tls or udp",
                    );
                    SyslogTransport::Tcp
                }
            },
        };
        let address = match self.required_text(
            o,
            "address",
            "set the receiver as host:port, e.g. `address: siem.example.com:6514`",
        ) {
            Some((v, at)) => {
                let port_ok = v
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !port_ok {
                    self.problem(
                        at,
                        "is not host:port",
                        "write the receiver as host:port, e.g. siem.example.com:6514 or [::1]:514",
                    );
                }
                v.to_owned()
            }
            None => String::new(),
        };
        let ca_file = self.pem_option(o, "ca_file", false);
        let server_name = o.text("server_name").map(|(v, _)| v.trim().to_owned());
        if transport != SyslogTransport::Tls {
            for key in ["ca_file", "server_name"] {
                if let Some((_, at)) = o.text(key) {
                    self.problem(
                        at,
                        "only applies to `transport: tls`",
                        "remove it, or set `transport: tls`",
                    );
                }
            }
        }
        let hostname = self.header_field(o, "hostname", 255);
        let app_name = self
            .header_field(o, "app_name", 48)
            .unwrap_or_else(|| DEFAULT_SYSLOG_APP_NAME.to_owned());
        let msgid = self.header_field(o, "msgid", 32);
        let facility = self.syslog_code(o, "facility", &FACILITIES, DEFAULT_SYSLOG_FACILITY);
        let severity = self.syslog_code(o, "severity", &SEVERITIES, DEFAULT_SYSLOG_SEVERITY);
        let mut sd_id = Some(DEFAULT_SYSLOG_SD_ID.to_owned());
        if let Some((v, at)) = o.text("sd_id") {
            let ok = !v.is_empty()
                && v.len() <= 32
                && v.bytes()
                    .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"' | b' '));
            if ok {
                sd_id = Some(v.clone());
            } else {
                self.problem(
                    at,
                    "is not a valid SD-ID (1 to 32 printable ASCII characters without `=`, `]`, `\"` or spaces)",
                    "use name@<private enterprise number>, e.g. o365@32473",
                );
            }
        }
        if let Some((false, _)) = o.flag("structured_data") {
            sd_id = None;
        }
        SyslogOutputConfig {
            address,
            transport,
            ca_file,
            server_name,
            hostname,
            app_name,
            msgid,
            facility,
            severity,
            sd_id,
            timeout: self.output_timeout(o),
        }
    }

    /// A facility or severity given by name or number.
    fn syslog_code(&mut self, o: &RawOutput, key: &str, names: &[&str], default: u8) -> u8 {
        let Some((v, at)) = o.text(key) else {
            return default;
        };
        let v = v.trim();
        if let Some(i) = names.iter().position(|n| *n == v) {
            return i as u8;
        }
        match v.parse::<u8>() {
            Ok(n) if (n as usize) < names.len() => n,
            _ => {
                self.problem(
                    at,
                    format!("`{v}` is not a syslog {key}"),
                    format!(
                        "use a number 0–{} or one of: {}",
                        names.len() - 1,
                        names.join(", ")
                    ),
                );
                default
            }
        }
    }

    fn output_timeout(&mut self, o: &RawOutput) -> Duration {
        match o.duration("timeout") {
            Some((d, at)) if d.is_zero() => {
                self.problem(
                    at,
                    "is 0",
                    "use a positive duration, e.g. 30s (the default)",
                );
                DEFAULT_OUTPUT_TIMEOUT
            }
            Some((d, _)) => *d,
            None => DEFAULT_OUTPUT_TIMEOUT,
        }
    }

    fn http_output(
        &mut self,
        o: &RawOutput,
        paths: &mut HashMap<PathBuf, String>,
    ) -> HttpOutputConfig {
        let format = match o.text("format") {
            None => HttpFormat::Ndjson,
            Some((v, at)) => match v.trim() {
                "ndjson" => HttpFormat::Ndjson,
                "elasticsearch" => HttpFormat::Elasticsearch,
                "splunk_hec" => HttpFormat::SplunkHec,
                other => {
                    self.problem(
                        at,
                        format!("`{other}` is not an http format"),
                        "use ndjson (default), elasticsearch or splunk_hec",
                    );
                    HttpFormat::Ndjson
                }
            },
        };
        let url_fix = "set the receiver's URL, e.g. `url: https://es.example.com:9200`";
        let url = match self.required_text(o, "url", url_fix) {
            Some((v, at)) => {
                match reqwest::Url::parse(v) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                        if !u.username().is_empty() || u.password().is_some() {
                            // Never echo: the URL holds credentials.
                            self.problem(
                                at,
                                "carries credentials in the URL",
                                "move them to username/password (or token) so they stay out of logs",
                            );
                        }
                    }
                    Ok(_) => self.problem(at, "is not an http(s) URL with a host", url_fix),
                    Err(e) => self.problem(at, format!("is not a valid URL ({e})"), url_fix),
                }
                v.to_owned()
            }
            None => String::new(),
        };
        let index = o.text("index").map(|(v, at)| {
            if format == HttpFormat::Ndjson {
                self.problem(at, "does not apply to `format: ndjson`", "remove it, or use elasticsearch or splunk_hec");
            } else if format == HttpFormat::Elasticsearch
                && (v.trim().is_empty()
                    || ["%Y", "%m", "%d", "%H", "%%"]
                        .iter()
                        .fold(v.to_owned(), |s, p| s.replace(p, "0"))
                        .chars().any(|c| c.is_ascii_uppercase() || matches!(c, ' ' | '"' | '\\' | '/' | ',' | '#' | '*' | '?' | '<' | '>' | '|')))
            {
                self.problem(
                    at,
                    "is not a valid Elasticsearch index name (lowercase, no spaces or \\/*?\"<>|,#)",
                    "e.g. `o365-%Y.%m.%d`",
                );
            }
            v.trim().to_owned()
        });
        let splunk_only = |c: &mut Self, key: &str| {
            o.text(key).map(|(v, at)| {
                if format != HttpFormat::SplunkHec {
                    c.problem(
                        at,
                        "only applies to `format: splunk_hec`",
                        "remove it, or set `format: splunk_hec`",
                    );
                }
                v.trim().to_owned()
            })
        };
        let source = splunk_only(self, "source");
        let sourcetype = splunk_only(self, "sourcetype");
        let auth = self.http_auth(o, format);
        let ca_file = self.pem_option(o, "ca_file", false);
        let client_cert = self.pem_option(o, "client_cert", false);
        let client_key = self.pem_option(o, "client_key", true);
        match (o.text("client_cert"), o.text("client_key")) {
            (Some(_), None) if !o.has("client_key") => self.problem_at(
                o.end,
                &format!("{}.client_key", o.at.key),
                "is missing while client_cert is set",
                "set the client certificate's private key (PEM)",
            ),
            (None, Some(_)) if !o.has("client_cert") => self.problem_at(
                o.end,
                &format!("{}.client_cert", o.at.key),
                "is missing while client_key is set",
                "set the client certificate (PEM)",
            ),
            _ => {}
        }
        let max_events = match o.uint("max_events") {
            Some((0, at)) => {
                self.problem(
                    at,
                    "is 0",
                    format!("use a positive number, e.g. {DEFAULT_HTTP_MAX_EVENTS} (the default)"),
                );
                DEFAULT_HTTP_MAX_EVENTS
            }
            Some((n, _)) => usize::try_from(*n).unwrap_or(usize::MAX),
            None => DEFAULT_HTTP_MAX_EVENTS,
        };
        let dead_letter_path = o.text("dead_letter_path").map(|(v, at)| {
            if format != HttpFormat::Elasticsearch {
                self.problem(
                    at,
                    "only applies to `format: elasticsearch`",
                    "remove it, or set `format: elasticsearch`",
                );
            } else if v.trim().is_empty() {
                self.problem(
                    at,
                    "is empty",
                    "set a file path, e.g. ./var/rejected.ndjson",
                );
            } else if let Some(other) = paths.insert(PathBuf::from(v.trim()), o.at.key.clone()) {
                self.problem(
                    at,
                    format!("is the same file as one used by {other}"),
                    "give each output its own file",
                );
            }
            PathBuf::from(v.trim())
        });
        HttpOutputConfig {
            url,
            format,
            index,
            source,
            sourcetype,
            gzip: o.flag("gzip").is_some_and(|(g, _)| *g),
            auth,
            ca_file,
            client_cert,
            client_key,
            max_events,
            linger: match o.duration("linger") {
                Some((d, at)) if *d > MAX_LINGER => {
                    self.problem(
                        at,
                        format!(
                            "is {}, longer than {}",
                            super::format_duration(*d),
                            super::format_duration(MAX_LINGER)
                        ),
                        "use a short wait such as 200ms, or 0 to send every blob at once",
                    );
                    Duration::ZERO
                }
                Some((d, _)) => *d,
                None => Duration::ZERO,
            },
            timeout: self.output_timeout(o),
            dead_letter_path,
        }
    }

    fn kafka_output(&mut self, o: &RawOutput) -> KafkaOutputConfig {
        let fix =
            "list the bootstrap brokers as host:port, e.g. `brokers: kafka-1:9092 kafka-2:9092`";
        let brokers = match o.words("brokers") {
            Some((list, at)) => {
                if list.is_empty() {
                    self.problem(at, "is empty", fix);
                }
                for b in list {
                    let ok = b.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        self.problem(at, format!("`{b}` is not host:port"), fix);
                    }
                }
                list.clone()
            }
            None => {
                if !o.has("brokers") {
                    self.problem_at(o.end, &format!("{}.brokers", o.at.key), "is missing", fix);
                }
                Vec::new()
            }
        };
        let topic = match o.text("topic") {
            Some((t, at)) => {
                let sample = t
                    .replace("{content_type}", "Audit.Exchange")
                    .replace("{tenant_id}", "00000000-0000-0000-0000-000000000000");
                let ok = !sample.is_empty()
                    && sample.len() <= 249
                    && sample
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                if !ok {
                    self.problem(
                        at,
                        "is not a valid Kafka topic (letters, digits, `.`, `_`, `-`; at most 249) after replacing {content_type} and {tenant_id}",
                        format!("e.g. `{DEFAULT_KAFKA_TOPIC}`"),
                    );
                }
                t.trim().to_owned()
            }
            None => DEFAULT_KAFKA_TOPIC.to_owned(),
        };
        let key = match o.text("key") {
            None => KafkaKey::Id,
            Some((v, at)) => match v.trim() {
                "id" => KafkaKey::Id,
                "none" => KafkaKey::None,
                other => {
                    self.problem(
                        at,
                        format!("`{other}` is not a key choice"),
                        "use id (default) or none",
                    );
                    KafkaKey::Id
                }
            },
        };
        let compression = match o.text("compression") {
            None => KafkaCompression::None,
            Some((v, at)) => match v.trim() {
                "none" => KafkaCompression::None,
                "gzip" => KafkaCompression::Gzip,
                "snappy" => KafkaCompression::Snappy,
                other => {
                    self.problem(
                        at,
                        format!("`{other}` is not a supported compression"),
                        "use none (default), gzip or snappy",
                    );
                    KafkaCompression::None
                }
            },
        };
        let mechanism = o.text("sasl_mechanism").and_then(|(v, at)| match v.trim() {
            "PLAIN" | "plain" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" | "scram-sha-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" | "scram-sha-512" => Some(SaslMechanism::ScramSha512),
            other => {
                self.problem(
                    at,
                    format!("`{other}` is not a supported SASL mechanism"),
                    "use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                );
                None
            }
        });
        let mut sasl = None;
        let any = ["sasl_mechanism", "username", "password"]
            .iter()
            .any(|k| o.has(k));
        if any {
            for k in ["sasl_mechanism", "username", "password"] {
                if !o.has(k) {
                    self.problem_at(
                        o.end,
                        &format!("{}.{k}", o.at.key),
                        "is missing while other SASL keys are set",
                        "set sasl_mechanism, username and password together",
                    );
                }
            }
            if let (Some(mechanism), Some((u, _)), Some((p, _))) =
                (mechanism, o.text("username"), o.secret("password"))
            {
                sasl = Some(KafkaSasl {
                    mechanism,
                    username: u.clone(),
                    password: p.clone(),
                });
            }
        }
        let tls = self.kafka_tls(o);
        KafkaOutputConfig {
            brokers,
            topic,
            key,
            compression,
            sasl,
            tls,
            timeout: self.output_timeout(o),
        }
    }

    /// `tls: true` with its optional `ca_file`, `client_cert` + `client_key` and `server_name`;
    /// those keys without `tls: true` are a problem rather than silently plaintext.
    fn kafka_tls(&mut self, o: &RawOutput) -> Option<KafkaTls> {
        let on = o.flag("tls").is_some_and(|(t, _)| *t);
        let keys = ["ca_file", "client_cert", "client_key", "server_name"];
        if !on {
            for key in keys {
                if let Some((_, at)) = o.text(key) {
                    self.problem(
                        at,
                        "only applies with `tls: true`",
                        "set `tls: true` (the brokers' TLS listener), or remove it",
                    );
                }
            }
            return None;
        }
        let ca_file = self.pem_option(o, "ca_file", false);
        let client_cert = self.pem_option(o, "client_cert", false);
        let client_key = self.pem_option(o, "client_key", true);
        for (given, missing, what) in [
            (
                "client_cert",
                "client_key",
                "the client certificate's private key (PEM)",
            ),
            ("client_key", "client_cert", "the client certificate (PEM)"),
        ] {
            if o.has(given) && !o.has(missing) {
                self.problem_at(
                    o.end,
                    &format!("{}.{missing}", o.at.key),
                    format!("is missing while {given} is set"),
                    format!("set {what}"),
                );
            }
        }
        let server_name = match o.text("server_name") {
            None => None,
            Some((v, at)) => {
                let name = v.trim();
                if rustls_pki_types::ServerName::try_from(name).is_err() {
                    self.problem(
                        at,
                        format!("`{name}` is not a DNS name or IP address"),
                        "give the name the brokers' certificates carry, e.g. kafka.example.com",
                    );
                }
                Some(name.to_owned())
            }
        };
        Some(KafkaTls {
            ca_file,
            client_cert,
            client_key,
            server_name,
        })
    }

    fn http_auth(&mut self, o: &RawOutput, format: HttpFormat) -> HttpAuth {
        let given: Vec<&str> = ["username", "token", "header_name"]
            .into_iter()
            .filter(|k| o.has(k))
            .collect();
        if given.len() > 1 {
            let at = o
                .text(given[1])
                .map(|(_, a)| a.clone())
                .or_else(|| o.secret(given[1]).map(|(_, a)| a.clone()))
                .unwrap_or_else(|| o.at.clone());
            self.problem(
                &at,
                format!(
                    "is set together with {}; only one kind of authentication is sent",
                    given[0]
                ),
                "keep one of: username+password, token, header_name+header_value",
            );
            return HttpAuth::None;
        }
        let pair = |c: &mut Self, a: &str, b: &str| -> bool {
            if o.has(a) != o.has(b) {
                let (missing, present) = if o.has(a) { (b, a) } else { (a, b) };
                c.problem_at(
                    o.end,
                    &format!("{}.{missing}", o.at.key),
                    format!("is missing while {present} is set"),
                    format!("set both {a} and {b}"),
                );
                return false;
            }
            true
        };
        if !pair(self, "username", "password") || !pair(self, "header_name", "header_value") {
            return HttpAuth::None;
        }
        if let (Some((u, at)), Some((p, _))) = (o.text("username"), o.secret("password")) {
            if format == HttpFormat::SplunkHec {
                self.problem(
                    at,
                    "is not used by Splunk HEC",
                    "use `token:` with the HEC token",
                );
            }
            return HttpAuth::Basic {
                username: u.clone(),
                password: p.clone(),
            };
        }
        if let Some((t, _)) = o.secret("token") {
            return HttpAuth::Token(t.clone());
        }
        if let (Some((n, at)), Some((v, _))) = (o.text("header_name"), o.secret("header_value")) {
            let valid = reqwest::header::HeaderName::from_bytes(n.trim().as_bytes()).is_ok();
            if !valid {
                self.problem(at, "is not a valid HTTP header name", "e.g. X-API-Key");
            }
            return HttpAuth::Header {
                name: n.trim().to_owned(),
                value: v.clone(),
            };
        }
        if format == HttpFormat::SplunkHec && !o.has("token") {
            self.problem_at(
                o.end,
                &format!("{}.token", o.at.key),
                "is missing; Splunk HEC needs its token",
                "set `token: ${SPLUNK_HEC_TOKEN}`",
            );
        }
        HttpAuth::None
    }

    /// Checks an explicitly named output; `stdout` needs no entry (it is added implicitly).
    fn output_name(&mut self, at: &At, name: &str, outputs: &BTreeMap<String, OutputConfig>) {
        if name == DEFAULT_OUTPUT || outputs.contains_key(name) {
            return;
        }
        let mut known: Vec<&str> = outputs.keys().map(String::as_str).collect();
        if !known.contains(&DEFAULT_OUTPUT) {
            known.push(DEFAULT_OUTPUT);
        }
        self.problem(
            at,
            format!("names the output `{name}`, which is not defined under outputs"),
            format!(
                "use one of: {}, or add `{name}: {{type: file, path: …}}` under outputs",
                known.join(", ")
            ),
        );
    }

    /// The output a tenant uses when neither it nor the top level names one.
    fn default_output(
        &mut self,
        order: usize,
        key: &str,
        outputs: &BTreeMap<String, OutputConfig>,
    ) -> String {
        match outputs.len() {
            0 => DEFAULT_OUTPUT.to_owned(),
            1 => outputs.keys().next().cloned().unwrap_or_default(),
            _ => {
                self.problem_at(
                    order,
                    key,
                    format!("is missing and {} outputs are defined", outputs.len()),
                    format!(
                        "set output to one of: {}",
                        outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
                String::new()
            }
        }
    }

    // ---- tenants -----------------------------------------------------------------------------

    fn inherited(
        &mut self,
        top: &RawTenant,
        outputs: &BTreeMap<String, OutputConfig>,
    ) -> Inherited {
        let resource = match &top.resource {
            Field::Value(v, at) => self.resource(at, v),
            _ => DEFAULT_RESOURCE.to_owned(),
        };
        let authority = match &top.authority {
            Field::Value(v, at) => Some(self.authority(at, v)),
            _ => None,
        };
        let publisher_id = match &top.publisher_id {
            Field::Value(v, at) => Some(self.guid(at, v, Guid::Publisher)),
            _ => None,
        };
        let content_types = match &top.content_type {
            Field::Value(v, at) => self.content_types(at, v),
            _ => DEFAULT_CONTENT_TYPES
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        };
        let output = match &top.output {
            Field::Value(v, at) => {
                self.output_name(at, v, outputs);
                Some(v.clone())
            }
            _ => None,
        };
        let encoding = match &top.encoding {
            Field::Value(v, at) => self.encoding(at, v),
            _ => encoding_rs::UTF_8,
        };
        let format = match &top.format {
            Field::Value(v, at) => self.format(at, v),
            _ => Format::default(),
        };
        if let (Some(at), false) = (top.tenant_name.at(), top.tenant_id.is_present()) {
            self.problem(
                at,
                "names a tenant, but the top level has no tenant_id",
                "set tenant_name in each tenants: entry",
            );
        }
        // Without a top-level tenant_id the top level is not a tenant, so its client_id and
        // credential can only mean "shared by the entries" (one multi-tenant app registration).
        let shared = !top.tenant_id.is_present();
        let client_id = match &top.client_id {
            Field::Value(v, at) if shared => Some(self.guid(at, v, Guid::Client)),
            Field::Invalid(_) if shared => Some(String::new()),
            _ => None,
        };
        let has_credential = top.client_secret.is_present()
            || top.client_secret_file.is_present()
            || top.client_certificate.is_present();
        let credential = (shared && has_credential).then(|| self.credential(top, 0));
        let request_budget = self.request_budget(top, RequestBudgetConfig::default(), false);
        let graph_feeds = match &top.graph_feeds {
            Field::Value(v, at) => self.graph_feeds(at, v),
            _ => Vec::new(),
        };
        let graph_host = match &top.graph_host {
            Field::Value(v, at) => Some(self.graph_host(at, v)),
            _ => None,
        };
        let graph_backfill = self.positive_duration(&top.graph_backfill, DEFAULT_GRAPH_BACKFILL);
        Inherited {
            graph_feeds,
            graph_host,
            graph_backfill,
            client_id,
            credential,
            resource,
            authority,
            publisher_id,
            content_types,
            output,
            encoding,
            format,
            request_budget,
            burst_given: top.request_burst.is_present(),
        }
    }

    /// `requests_per_minute` and `request_burst` of one level, falling back to `inherited`. A burst
    /// not given follows the rate (at most [`DEFAULT_BURST`], never above the rate) unless an
    /// upper level gave one.
    fn request_budget(
        &mut self,
        t: &RawTenant,
        inherited: RequestBudgetConfig,
        burst_inherited: bool,
    ) -> RequestBudgetConfig {
        let per_minute = match &t.requests_per_minute {
            Field::Value(v, at) if *v == 0 || *v > MAX_REQUESTS_PER_MINUTE => {
                self.problem(
                    at,
                    format!("is {v}, outside 1..={MAX_REQUESTS_PER_MINUTE}"),
                    format!(
                        "use the calls per minute Microsoft allows this tenant, e.g. {DEFAULT_REQUESTS_PER_MINUTE} (the default, under the baseline quota of 2000)"
                    ),
                );
                inherited.per_minute
            }
            Field::Value(v, _) => u32::try_from(*v).unwrap_or(inherited.per_minute),
            _ => inherited.per_minute,
        };
        let burst = match &t.request_burst {
            Field::Value(v, at) if *v == 0 || *v > u64::from(per_minute) => {
                self.problem(
                    at,
                    format!("is {v}, outside 1..={per_minute} (requests_per_minute)"),
                    format!("use a burst below the rate, e.g. {DEFAULT_BURST} (the default)"),
                );
                DEFAULT_BURST.min(per_minute)
            }
            Field::Value(v, _) => u32::try_from(*v).unwrap_or(DEFAULT_BURST),
            _ if burst_inherited => inherited.burst.min(per_minute),
            _ => DEFAULT_BURST.min(per_minute),
        };
        RequestBudgetConfig { per_minute, burst }
    }

    fn tenants(
        &mut self,
        raw: &RawConfig,
        inherited: &Inherited,
        outputs: &mut BTreeMap<String, OutputConfig>,
    ) -> Vec<TenantConfig> {
        let mut tenants = Vec::new();
        let top_order = raw.top.at.as_ref().map_or(raw.end, |at| at.order);
        let top_is_tenant = raw.top.tenant_id.is_present();
        if top_is_tenant {
            tenants.push(self.tenant(&raw.top, top_order, true, inherited, outputs));
        }
        for t in &raw.tenants {
            tenants.push(self.tenant(t, t.end, false, inherited, outputs));
        }
        if tenants.is_empty() {
            self.problem_at(
                top_order,
                "tenant_id",
                "is missing: no tenant is configured",
                "set tenant_id, client_id and client_secret at the top level, or add entries under tenants:",
            );
        }
        // Duplicate tenant ids: one process must own each tenant's subscriptions exactly once.
        let mut seen: HashMap<String, String> = HashMap::new();
        let all_raw: Vec<&RawTenant> = top_is_tenant
            .then_some(&raw.top)
            .into_iter()
            .chain(raw.tenants.iter())
            .collect();
        for (t, raw_t) in tenants.iter().zip(all_raw) {
            if t.tenant_id.is_empty() {
                continue;
            }
            if let Some((_, at)) = raw_t.tenant_id.value() {
                if let Some(first) = seen.get(&t.tenant_id) {
                    self.problem(
                        at,
                        format!(
                            "repeats the tenant {} already configured at {first}",
                            t.tenant_id
                        ),
                        "configure each tenant once; merge the two entries",
                    );
                } else {
                    seen.insert(t.tenant_id.clone(), at.key.clone());
                }
            }
        }
        // `stdout` needs no entry of its own.
        if tenants.iter().any(|t| t.output == DEFAULT_OUTPUT)
            && !outputs.contains_key(DEFAULT_OUTPUT)
        {
            outputs.insert(DEFAULT_OUTPUT.to_owned(), OutputConfig::Stdout);
        }
        tenants
    }

    fn tenant(
        &mut self,
        t: &RawTenant,
        order: usize,
        is_top: bool,
        inh: &Inherited,
        outputs: &BTreeMap<String, OutputConfig>,
    ) -> TenantConfig {
        let p = &t.prefix;
        let tenant_id = match &t.tenant_id {
            Field::Value(v, at) => self.guid(at, v, Guid::Tenant),
            Field::Invalid(_) => String::new(),
            Field::Absent => {
                self.problem_at(
                    order,
                    &format!("{p}tenant_id"),
                    "is missing",
                    "set the Directory (tenant) ID from Azure portal → Microsoft Entra ID → Overview",
                );
                String::new()
            }
        };
        let client_id = match &t.client_id {
            Field::Value(v, at) => self.guid(at, v, Guid::Client),
            Field::Invalid(_) => String::new(),
            Field::Absent if !is_top && inh.client_id.is_some() => {
                inh.client_id.clone().unwrap_or_default()
            }
            Field::Absent => {
                self.problem_at(
                    order,
                    &format!("{p}client_id"),
                    "is missing",
                    "set the Application (client) ID from Azure portal → App registrations → your app → Overview",
                );
                String::new()
            }
        };
        let own_credential = t.client_secret.is_present()
            || t.client_secret_file.is_present()
            || t.client_certificate.is_present();
        let credential = match &inh.credential {
            Some(shared) if !is_top && !own_credential => shared.clone(),
            _ => self.credential(t, order),
        };
        // The top-level tenant's own values were checked once in `inherited`.
        let own = |f: &Field<String>| !is_top && f.is_present();
        let resource = match &t.resource {
            Field::Value(v, at) if own(&t.resource) => self.resource(at, v),
            Field::Invalid(_) => String::new(),
            _ => inh.resource.clone(),
        };
        let authority = match &t.authority {
            Field::Value(v, at) if own(&t.authority) => self.authority(at, v),
            Field::Invalid(_) => String::new(),
            // A tenant with its own resource gets that cloud's authority, not the top level's.
            _ if own(&t.resource) => derive_authority(&resource),
            _ => inh
                .authority
                .clone()
                .unwrap_or_else(|| derive_authority(&resource)),
        };
        let publisher_id = match &t.publisher_id {
            Field::Value(v, at) if own(&t.publisher_id) => self.guid(at, v, Guid::Publisher),
            Field::Invalid(_) => String::new(),
            _ => inh
                .publisher_id
                .clone()
                .unwrap_or_else(|| tenant_id.clone()),
        };
        let content_types = match &t.content_type {
            Field::Value(v, at) if !is_top => self.content_types(at, v),
            Field::Invalid(_) => Vec::new(),
            _ => inh.content_types.clone(),
        };
        let output = match &t.output {
            Field::Value(v, at) if own(&t.output) => {
                self.output_name(at, v, outputs);
                v.clone()
            }
            Field::Invalid(_) => String::new(),
            _ => match &inh.output {
                Some(o) => o.clone(),
                None => self.default_output(order, &format!("{p}output"), outputs),
            },
        };
        let encoding = match &t.encoding {
            Field::Value(v, at) if own(&t.encoding) => self.encoding(at, v),
            _ => inh.encoding,
        };
        let format = match &t.format {
            Field::Value(v, at) if own(&t.format) => self.format(at, v),
            _ => inh.format,
        };
        let request_budget = if is_top {
            inh.request_budget
        } else {
            self.request_budget(t, inh.request_budget, inh.burst_given)
        };
        let graph = self.tenant_graph(t, inh, is_top, &resource);
        // Not inherited: a name belongs to one tenant.
        let tenant_name = match &t.tenant_name {
            Field::Value(v, at) if v.trim().is_empty() => {
                self.problem(
                    at,
                    "is empty",
                    "give the tenant's name, e.g. contoso.onmicrosoft.com, or remove the key",
                );
                None
            }
            Field::Value(v, _) => Some(v.trim().to_owned()),
            _ => None,
        };
        TenantConfig {
            tenant_id,
            tenant_name,
            client_id,
            credential,
            resource,
            authority,
            publisher_id,
            content_types,
            output,
            encoding,
            format,
            request_budget,
            graph,
        }
    }

    /// `graph_feeds`, `graph_host`, `graph_backfill` of one tenant, falling back to the top level.
    /// The Graph host follows the tenant's own `resource` (its cloud) unless given; message trace
    /// is refused where Microsoft does not offer it.
    fn tenant_graph(
        &mut self,
        t: &RawTenant,
        inh: &Inherited,
        is_top: bool,
        resource: &str,
    ) -> GraphConfig {
        let own = |present: bool| !is_top && present;
        let feeds = match &t.graph_feeds {
            Field::Value(v, at) if own(true) => self.graph_feeds(at, v),
            Field::Invalid(_) => Vec::new(),
            _ => inh.graph_feeds.clone(),
        };
        let host = match &t.graph_host {
            Field::Value(v, at) if own(true) => self.graph_host(at, v),
            Field::Invalid(_) => String::new(),
            _ if own(t.resource.is_present()) => derive_graph_host(resource),
            _ => inh
                .graph_host
                .clone()
                .unwrap_or_else(|| derive_graph_host(resource)),
        };
        let backfill = if is_top {
            inh.graph_backfill
        } else {
            self.positive_duration(&t.graph_backfill, inh.graph_backfill)
        };
        if feeds.contains(&GraphFeed::MessageTrace) && is_national_graph_host(&host) {
            let at = t
                .graph_feeds
                .at()
                .or(t.graph_host.at())
                .or(t.resource.at())
                .cloned();
            let problem = format!(
                "asks for message_trace on {host}, but Microsoft offers the message trace API in the global cloud only"
            );
            let fix = "remove message_trace from graph_feeds for this tenant";
            match at {
                Some(at) => self.problem(&at, problem, fix),
                None => self.problem_at(0, &format!("{}graph_feeds", t.prefix), problem, fix),
            }
        }
        GraphConfig {
            feeds,
            host,
            backfill,
        }
    }

    /// `graph_feeds`: some of the four feed names.
    fn graph_feeds(&mut self, at: &At, words: &[String]) -> Vec<GraphFeed> {
        let mut out = Vec::new();
        for w in words {
            match GraphFeed::from_config_name(&w.to_ascii_lowercase()) {
                Some(f) if !out.contains(&f) => out.push(f),
                Some(_) => {}
                None => self.problem(
                    at,
                    format!("`{w}` is not a Graph feed"),
                    format!(
                        "use some of: {}",
                        GraphFeed::ALL.map(GraphFeed::config_name).join(" ")
                    ),
                ),
            }
        }
        out
    }

    fn graph_host(&mut self, at: &At, value: &str) -> String {
        let fix = "use the Graph host only, e.g. https://graph.microsoft.com (GCC High: https://graph.microsoft.us, DoD: https://dod-graph.microsoft.us, China: https://microsoftgraph.chinacloudapi.cn), or remove graph_host to derive it from resource";
        self.https_origin(at, value, fix).unwrap_or_default()
    }

    fn credential(&mut self, t: &RawTenant, order: usize) -> Credential {
        let p = &t.prefix;
        let placeholder = Credential::Secret(Secret::new(String::new()));
        let present: Vec<&At> = [
            t.client_secret.at(),
            t.client_secret_file.at(),
            t.client_certificate.at(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let one_of = "client_secret, client_secret_file or client_certificate";
        match present.as_slice() {
            [] => {
                self.problem_at(
                    order,
                    &format!("{p}client_secret"),
                    "is missing: the tenant has no credential",
                    format!(
                        "set exactly one of {one_of} (Azure portal → App registrations → your app → Certificates & secrets)"
                    ),
                );
                return placeholder;
            }
            [_] => {}
            [first, rest @ ..] => {
                for extra in rest {
                    self.problem(
                        extra,
                        format!("is set together with {}", first.key),
                        format!("keep exactly one of {one_of}"),
                    );
                }
                return placeholder;
            }
        }
        if let Some((secret, at)) = t.client_secret.value() {
            self.client_secret(at, secret);
            return Credential::Secret(secret.clone());
        }
        if let Some((path, at)) = t.client_secret_file.value() {
            return match self.secret_file(at, path) {
                Some(secret) => {
                    self.client_secret(at, &secret);
                    Credential::Secret(secret)
                }
                None => placeholder,
            };
        }
        if let Some((c, at)) = t.client_certificate.value() {
            let cert = match c.cert.value() {
                Some((v, cert_at)) => {
                    let path = PathBuf::from(v);
                    if is_pkcs12(&path) {
                        self.readable(cert_at, &path);
                    } else {
                        self.pem_certificates(cert_at, &path);
                    }
                    Some(path)
                }
                None => {
                    if !c.cert.is_present() {
                        self.problem_at(
                            c.end,
                            &format!("{}.cert", at.key),
                            "is missing",
                            "set the certificate uploaded to the app registration (PEM, or PKCS#12 .p12/.pfx)",
                        );
                    }
                    None
                }
            };
            let password = match (&c.password, &c.password_file) {
                (Field::Value(s, _), Field::Absent) => Some(s.clone()),
                (Field::Absent, Field::Value(path, at)) => self.secret_file(at, path),
                (pw, Field::Value(_, at)) if pw.is_present() => {
                    self.problem(
                        at,
                        format!("is set together with {}.password", c_key(at)),
                        "keep only one of password or password_file",
                    );
                    None
                }
                _ => None,
            };
            let pkcs12 = cert.as_deref().is_some_and(is_pkcs12);
            let key = match c.key.value() {
                Some((v, key_at)) => {
                    let path = PathBuf::from(v);
                    // An encrypted key cannot be parsed without the password; the token code reports it.
                    if pkcs12 || c.password.is_present() || c.password_file.is_present() {
                        self.readable(key_at, &path);
                    } else {
                        self.pem_private_key(key_at, &path);
                    }
                    path
                }
                // PKCS#12 holds the key in the same file.
                None if pkcs12 => cert.clone().unwrap_or_default(),
                None => {
                    if !c.key.is_present() {
                        self.problem_at(
                            c.end,
                            &format!("{}.key", at.key),
                            "is missing",
                            "set the PEM private key of the certificate (or use a PKCS#12 .p12/.pfx file as cert)",
                        );
                    }
                    PathBuf::new()
                }
            };
            return Credential::Certificate {
                cert: cert.unwrap_or_default(),
                key,
                password,
            };
        }
        placeholder
    }

    fn client_secret(&mut self, at: &At, secret: &Secret) {
        let value = secret.expose();
        if value.is_empty() {
            self.problem(
                at,
                "is empty",
                "set the client secret's Value (Azure portal → App registrations → your app → Certificates & secrets)",
            );
        } else if is_guid(value) {
            self.problem(
                at,
                "looks like the secret's ID (a GUID), not the secret itself",
                "copy the Value column of the secret (Azure portal → App registrations → your app → Certificates & secrets); it is shown only once, so create a new secret if it is hidden",
            );
        }
    }

    /// Reads a `*_file` secret, dropping the trailing newline editors and `echo` add.
    fn secret_file(&mut self, at: &At, path: &str) -> Option<Secret> {
        let bytes = match self.files.read(Path::new(path)) {
            Ok(b) => b,
            Err(e) => {
                self.problem(
                    at,
                    format!("names {path}, which cannot be read: {e}"),
                    "create the file (readable by the collector) or fix the path; relative paths start at the working directory",
                );
                return None;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.problem(
                at,
                format!("names {path}, which is not UTF-8 text"),
                "store the secret as plain text in the file",
            );
            return None;
        };
        let trimmed = text.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            self.problem(
                at,
                format!("names {path}, which is empty"),
                "write the secret into the file",
            );
            return None;
        }
        Some(Secret::new(trimmed))
    }

    fn guid(&mut self, at: &At, value: &str, which: Guid) -> String {
        let v = value.trim();
        if is_guid(v) {
            return v.to_ascii_lowercase();
        }
        // The value is not echoed: a secret pasted into the wrong key must not end up in a log.
        let shape = if v.is_empty() {
            "is empty".to_owned()
        } else if v.contains('.') {
            "is not a GUID (it looks like a domain name)".to_owned()
        } else if v.starts_with('{') && v.ends_with('}') && is_guid(&v[1..v.len() - 1]) {
            "is a GUID in braces".to_owned()
        } else {
            format!("is not a GUID ({} characters)", v.chars().count())
        };
        let fix = match which {
            Guid::Tenant => {
                "use the Directory (tenant) ID, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, from Azure portal → Microsoft Entra ID → Overview; the Management Activity API refuses anything else (AF20013)"
            }
            Guid::Client => {
                "use the Application (client) ID, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, from Azure portal → App registrations → your app → Overview"
            }
            Guid::Publisher => {
                "use your organisation's Directory (tenant) ID GUID, or remove publisher_id to use the tenant id"
            }
        };
        self.problem(at, shape, fix);
        String::new()
    }

    /// `resource`: an HTTPS origin, normalised to `https://host[:port]`.
    fn resource(&mut self, at: &At, value: &str) -> String {
        let fix =
            format!("use the scheme and host only: {CLOUDS}, or the emulator's https://host:port");
        self.https_origin(at, value, &fix).unwrap_or_default()
    }

    fn authority(&mut self, at: &At, value: &str) -> String {
        let fix = "use the login host only, e.g. https://login.microsoftonline.com (GCC High / DoD: https://login.microsoftonline.us), or remove authority to derive it from resource";
        self.https_origin(at, value, fix).unwrap_or_default()
    }

    fn https_origin(&mut self, at: &At, value: &str, fix: &str) -> Option<String> {
        let url = self.https_url(at, value, fix)?;
        let mut ok = true;
        if !matches!(url.path(), "" | "/") {
            self.problem(at, format!("has a path ({})", url.path()), fix);
            ok = false;
        }
        if url.query().is_some() {
            self.problem(at, "has a query (`?…`)", fix);
            ok = false;
        }
        if !ok {
            return None;
        }
        let host = url.host_str().unwrap_or_default();
        Some(match url.port() {
            Some(port) => format!("https://{host}:{port}"),
            None => format!("https://{host}"),
        })
    }

    /// An absolute `https` URL with a host, no credentials and no fragment. The value is not echoed.
    fn https_url(&mut self, at: &At, value: &str, fix: &str) -> Option<reqwest::Url> {
        let url = match reqwest::Url::parse(value.trim()) {
            Ok(u) => u,
            Err(e) => {
                self.problem(at, format!("is not a valid URL ({e})"), fix);
                return None;
            }
        };
        if url.scheme() != "https" {
            self.problem(
                at,
                format!(
                    "uses the scheme `{}`, but only https is allowed",
                    url.scheme()
                ),
                fix,
            );
            return None;
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.problem(at, "has no host", fix);
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.problem(at, "contains a user name or password", fix);
            return None;
        }
        if url.fragment().is_some() {
            self.problem(at, "has a fragment (`#…`)", fix);
            return None;
        }
        Some(url)
    }

    fn content_types(&mut self, at: &At, words: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for w in words {
            if CONTENT_TYPES.contains(&w.as_str()) {
                if !out.contains(w) {
                    out.push(w.clone());
                }
                continue;
            }
            let fix = match CONTENT_TYPES.iter().find(|c| c.eq_ignore_ascii_case(w)) {
                Some(exact) => format!("write it as {exact}"),
                None => format!("use some of: {}", CONTENT_TYPES.join(" ")),
            };
            self.problem(at, format!("`{w}` is not a content type"), fix);
        }
        if words.is_empty() {
            self.problem(
                at,
                "lists no content type",
                format!(
                    "list some of: {} (or remove the key for the default)",
                    CONTENT_TYPES.join(" ")
                ),
            );
        }
        out
    }

    fn encoding(&mut self, at: &At, label: &str) -> &'static Encoding {
        let label = label.trim();
        match Encoding::for_label(label.as_bytes()) {
            Some(e) if e == encoding_rs::REPLACEMENT => {
                self.problem(
                    at,
                    format!("`{label}` names the replacement encoding, which turns every byte into U+FFFD"),
                    "use the charset the blobs are really in, normally utf-8",
                );
                encoding_rs::UTF_8
            }
            Some(e) => e,
            None => {
                self.problem(
                    at,
                    format!("`{label}` is not a known character encoding label"),
                    "use a WHATWG encoding label such as utf-8 (default), windows-1252, iso-8859-2, shift_jis or utf-16le",
                );
                encoding_rs::UTF_8
            }
        }
    }

    fn format(&mut self, at: &At, value: &str) -> Format {
        let lower = value.trim().to_ascii_lowercase();
        match serde_yaml::from_value::<Format>(serde_yaml::Value::String(lower)) {
            Ok(f) => f,
            Err(_) => {
                self.problem(
                    at,
                    format!("`{}` is not an event format", value.trim()),
                    "use o365 (default), ecs or raw",
                );
                Format::default()
            }
        }
    }

    // ---- files -------------------------------------------------------------------------------

    fn read_file(&mut self, at: &At, path: &Path) -> Option<Vec<u8>> {
        match self.files.read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                self.problem(
                    at,
                    format!("names {}, which cannot be read: {e}", path.display()),
                    "fix the path or the file's permissions; relative paths start at the working directory",
                );
                None
            }
        }
    }

    fn readable(&mut self, at: &At, path: &Path) {
        let _ = self.read_file(at, path);
    }

    fn pem_certificates(&mut self, at: &At, path: &Path) {
        let Some(bytes) = self.read_file(at, path) else {
            return;
        };
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes).collect();
        if certs.is_empty() || certs.iter().any(Result::is_err) {
            self.problem(
                at,
                format!(
                    "names {}, which holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
                    path.display()
                ),
                "point it at the PEM certificate file (check that cert and key are not swapped)",
            );
        }
    }

    fn pem_private_key(&mut self, at: &At, path: &Path) {
        let Some(bytes) = self.read_file(at, path) else {
            return;
        };
        if PrivateKeyDer::from_pem_slice(&bytes).is_err() {
            self.problem(
                at,
                format!(
                    "names {}, which holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    path.display()
                ),
                "point it at the private key file (check that cert and key are not swapped)",
            );
        }
    }

    // ---- webhook, listeners, tls, admin ------------------------------------------------------

    fn webhook(&mut self, raw: &RawConfig) -> Option<WebhookConfig> {
        let w = raw.webhook.as_ref()?;
        let address = match &w.address {
            Field::Value(v, at) => self
                .https_url(
                    at,
                    v,
                    "use the public HTTPS URL Microsoft posts to, e.g. https://collector.example.com/o365/webhook (Microsoft only calls HTTPS)",
                )
                .and_then(|url| {
                    if url.query().is_some() {
                        self.problem(
                            at,
                            "has a query (`?…`), which the listener does not check",
                            "remove the query; auth_id is what authenticates Microsoft's posts",
                        );
                        None
                    } else {
                        Some((v.trim().to_owned(), url.path().to_owned()))
                    }
                }),
            Field::Invalid(_) => None,
            Field::Absent => {
                self.problem_at(
                    w.end,
                    &format!("{}.address", w.at.key),
                    "is missing",
                    "set the public HTTPS URL Microsoft posts notifications to, or remove webhook: to run in pull mode",
                );
                None
            }
        };
        let path = match &w.path {
            Field::Value(v, at) => {
                let v = v.trim();
                if !v.starts_with('/') || v.contains(['?', '#']) || v.contains(char::is_whitespace)
                {
                    self.problem(
                        at,
                        "is not a URL path",
                        "write a path starting with `/`, e.g. /o365/webhook, or remove it to use the address's path",
                    );
                }
                v.to_owned()
            }
            _ => address
                .as_ref()
                .map(|(_, p)| {
                    if p.is_empty() {
                        "/".to_owned()
                    } else {
                        p.clone()
                    }
                })
                .unwrap_or_default(),
        };
        let auth_id = match (&w.auth_id, &w.auth_id_file) {
            (Field::Absent, Field::Absent) => {
                self.problem_at(
                    w.end,
                    &format!("{}.auth_id", w.at.key),
                    "is missing",
                    "set auth_id (e.g. ${O365_WEBHOOK_AUTH_ID} holding `openssl rand -hex 16`): Microsoft echoes it in Webhook-AuthID so forged posts can be refused",
                );
                None
            }
            (Field::Value(s, at), Field::Absent) => self.token(at, s, MIN_AUTH_ID_LEN),
            (Field::Absent, Field::Value(path, at)) => self
                .secret_file(at, path)
                .and_then(|s| self.token(at, &s, MIN_AUTH_ID_LEN)),
            (a, Field::Value(_, at)) if a.is_present() => {
                self.problem(
                    at,
                    format!("is set together with {}.auth_id", w.at.key),
                    "keep only one of auth_id or auth_id_file",
                );
                None
            }
            _ => None,
        };
        let max_body_bytes = match &w.max_body_bytes {
            Field::Value(v, at) => match usize::try_from(*v) {
                Ok(0) | Err(_) => {
                    self.problem(
                        at,
                        "is 0 or too large",
                        "use a size such as 1MiB (the default)",
                    );
                    0
                }
                Ok(v) => v,
            },
            _ => DEFAULT_MAX_BODY_BYTES,
        };
        let body_timeout = self.positive_duration(&w.body_timeout, DEFAULT_BODY_TIMEOUT);
        let max_inflight_bytes = match &w.max_inflight_bytes {
            Field::Value(v, at) => match usize::try_from(*v) {
                Ok(v) if v >= max_body_bytes => v,
                _ => {
                    self.problem(
                        at,
                        format!("is smaller than webhook.max_body_bytes ({max_body_bytes} bytes): no full-size body could be received"),
                        "use a size of several bodies, such as 16MiB (the default)",
                    );
                    DEFAULT_MAX_INFLIGHT_BYTES
                }
            },
            _ => DEFAULT_MAX_INFLIGHT_BYTES.max(max_body_bytes),
        };
        let (address, _) = address?;
        Some(WebhookConfig {
            address,
            auth_id: auth_id?,
            path,
            max_body_bytes,
            body_timeout,
            max_inflight_bytes,
        })
    }

    /// A shared secret sent in an HTTP header: long enough and header-safe. Never echoed.
    fn token(&mut self, at: &At, secret: &Secret, min_len: usize) -> Option<Secret> {
        let v = secret.expose();
        if v.chars().count() < min_len {
            self.problem(
                at,
                format!("is shorter than {min_len} characters"),
                "use a random value, e.g. the output of `openssl rand -hex 16`",
            );
            return None;
        }
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                at,
                "contains spaces or characters that cannot be sent in an HTTP header",
                "use visible ASCII only, e.g. the output of `openssl rand -hex 16`",
            );
            return None;
        }
        Some(secret.clone())
    }

    fn listen(&mut self, raw: &RawConfig) -> ListenConfig {
        let mut addr = |field: &Field<String>, default: &str| -> Option<SocketAddr> {
            match field {
                Field::Value(v, at) => match v.trim().parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.problem(
                            at,
                            format!("`{}` is not an IP address with a port", v.trim()),
                            "write IP:port, e.g. 0.0.0.0:8443, 127.0.0.1:9090 or [::]:8443",
                        );
                        None
                    }
                },
                Field::Invalid(_) => None,
                Field::Absent => default.parse().ok(),
            }
        };
        let public = addr(&raw.listen.public, DEFAULT_PUBLIC_LISTEN);
        let admin = addr(&raw.listen.admin, DEFAULT_ADMIN_LISTEN);
        let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
        if let (Some(p), Some(a)) = (public, admin) {
            let overlap = p.port() == a.port()
                && p.port() != 0
                && (p.ip() == a.ip() || p.ip().is_unspecified() || a.ip().is_unspecified());
            if overlap {
                let order = raw
                    .listen
                    .admin
                    .at()
                    .or(raw.listen.public.at())
                    .map_or(raw.end, |at| at.order);
                self.problem_at(
                    order,
                    "listen.admin",
                    format!("overlaps listen.public ({p})"),
                    "use another port: the admin API must never be reachable on the public listener",
                );
            }
        }
        let trusted_proxies = match &raw.listen.trusted_proxies {
            Field::Value(words, at) => words
                .iter()
                .filter_map(|w| match w.parse::<IpNet>() {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.problem(
                            at,
                            format!("has `{w}`: {e}"),
                            "list proxy IP addresses or networks, e.g. [127.0.0.1, 10.0.0.0/8, fd00::/8]",
                        );
                        None
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let max_connections = match &raw.listen.max_connections {
            Field::Value(v, at) if *v == 0 || *v > MAX_CONNECTIONS => {
                self.problem(
                    at,
                    format!("is {v}, outside 1..={MAX_CONNECTIONS}"),
                    "use a number such as 2048 (the default); it is also kept below the open-file limit",
                );
                DEFAULT_MAX_CONNECTIONS
            }
            Field::Value(v, _) => *v as usize,
            _ => DEFAULT_MAX_CONNECTIONS,
        };
        ListenConfig {
            public: public.unwrap_or(fallback),
            admin: admin.unwrap_or(fallback),
            trusted_proxies,
            max_connections,
            header_timeout: self
                .positive_duration(&raw.listen.header_timeout, DEFAULT_HEADER_TIMEOUT),
            idle_timeout: self.positive_duration(&raw.listen.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        }
    }

    fn tls(&mut self, raw: &RawConfig) -> Option<TlsConfig> {
        let t = raw.tls.as_ref()?;
        let mut path = |field: &Field<String>, name: &str, pem_cert: bool| -> Option<PathBuf> {
            match field {
                Field::Value(v, at) => {
                    let p = PathBuf::from(v.trim());
                    if pem_cert {
                        self.pem_certificates(at, &p);
                    } else {
                        self.pem_private_key(at, &p);
                    }
                    Some(p)
                }
                Field::Invalid(_) => None,
                Field::Absent => {
                    self.problem_at(
                        t.end,
                        &format!("{}.{name}", t.at.key),
                        "is missing (tls needs both cert and key)",
                        "set both tls.cert and tls.key (PEM), or remove tls: when a proxy terminates TLS",
                    );
                    None
                }
            }
        };
        let cert = path(&t.cert, "cert", true);
        let key = path(&t.key, "key", false);
        let reload_every = self.positive_duration(&t.reload_every, DEFAULT_TLS_RELOAD_EVERY);
        Some(TlsConfig {
            cert: cert?,
            key: key?,
            reload_every,
        })
    }

    fn admin(&mut self, raw: &RawConfig, listen: &ListenConfig) -> AdminConfig {
        let a = &raw.admin;
        let token = match (&a.token, &a.token_file) {
            (Field::Value(s, at), Field::Absent) => self.token(at, s, MIN_ADMIN_TOKEN_LEN),
            (Field::Absent, Field::Value(path, at)) => self
                .secret_file(at, path)
                .and_then(|s| self.token(at, &s, MIN_ADMIN_TOKEN_LEN)),
            (t, Field::Value(_, at)) if t.is_present() => {
                self.problem(
                    at,
                    "is set together with admin.token",
                    "keep only one of token or token_file",
                );
                None
            }
            _ => None,
        };
        let no_token = !a.token.is_present() && !a.token_file.is_present();
        if no_token && !listen.admin.ip().is_loopback() {
            let order = raw.listen.admin.at().map_or(raw.end, |at| at.order);
            self.problem_at(
                order,
                "admin.token",
                format!("is missing while the admin API listens on {}, reachable from other machines", listen.admin),
                "set admin.token (e.g. ${O365_ADMIN_TOKEN}, at least 16 random characters), or bind listen.admin to 127.0.0.1",
            );
        }
        AdminConfig { token }
    }

    // ---- store -------------------------------------------------------------------------------

    fn store(&mut self, raw: &RawConfig, outputs: &BTreeMap<String, OutputConfig>) -> StoreConfig {
        let Some(st) = &raw.store else {
            return StoreConfig::Embedded;
        };
        let postgres_keys = [
            st.url.at(),
            st.url_file.at(),
            st.pool_size.at(),
            st.sslmode.at(),
            st.ca_file.at(),
            st.allow_file_output.at(),
            st.tenant_lease.at(),
        ];
        let kind = match &st.kind {
            Field::Value(k, at) => Some((k.trim().to_ascii_lowercase(), at)),
            Field::Invalid(_) => return StoreConfig::Embedded,
            Field::Absent => {
                self.problem(
                    &st.at,
                    "has no type",
                    "add `type: embedded` (one process, the default) or `type: postgres` (several replicas)",
                );
                return StoreConfig::Embedded;
            }
        };
        match kind {
            Some((k, _)) if k == "embedded" => {
                for at in postgres_keys.into_iter().flatten() {
                    self.problem(
                        at,
                        "is a setting of store type postgres, not embedded",
                        "remove it, or set `type: postgres`",
                    );
                }
                StoreConfig::Embedded
            }
            Some((k, _)) if k == "postgres" => self.postgres_store(raw, outputs),
            Some((k, at)) => {
                self.problem(
                    at,
                    format!("is `{k}`, not a store type"),
                    "use `embedded` (one process, the default) or `postgres` (several replicas)",
                );
                StoreConfig::Embedded
            }
            None => StoreConfig::Embedded,
        }
    }

    fn postgres_store(
        &mut self,
        raw: &RawConfig,
        outputs: &BTreeMap<String, OutputConfig>,
    ) -> StoreConfig {
        let Some(st) = &raw.store else {
            return StoreConfig::Embedded;
        };
        let url = match (&st.url, &st.url_file) {
            (Field::Value(u, at), Field::Absent) => Some((u.clone(), at)),
            (Field::Absent, Field::Value(path, at)) => self.secret_file(at, path).map(|u| (u, at)),
            (u, Field::Value(_, at)) if u.is_present() => {
                self.problem(
                    at,
                    "is set together with store.url",
                    "keep only one of url or url_file",
                );
                None
            }
            (Field::Absent, Field::Absent) => {
                self.problem(
                    &st.at,
                    "is postgres but has no url",
                    "add `url: ${O365_DATABASE_URL}` (postgres://user:password@host:5432/database) or `url_file:`",
                );
                None
            }
            _ => None,
        };
        let url = url.and_then(|(u, at)| {
            // Never quote the URL: it holds the password.
            let fix = "write it as postgres://user:password@host:5432/database";
            match reqwest::Url::parse(u.expose().trim()) {
                Ok(p) if matches!(p.scheme(), "postgres" | "postgresql") && p.has_host() => {
                    Some(Secret::new(u.expose().trim()))
                }
                Ok(_) => {
                    self.problem(at, "is not a postgres:// URL with a host", fix);
                    None
                }
                Err(e) => {
                    self.problem(at, format!("is not a URL ({e})"), fix);
                    None
                }
            }
        });
        let pool_size = match &st.pool_size {
            Field::Value(n, at) if *n == 0 || *n > 1000 => {
                self.problem(
                    at,
                    format!("is {n}"),
                    "use 1 to 1000 connections (default 8)",
                );
                DEFAULT_POOL_SIZE
            }
            Field::Value(n, _) => *n as u32,
            _ => DEFAULT_POOL_SIZE,
        };
        let sslmode = st.sslmode.value().and_then(|(m, at)| {
            let m = m.trim().to_ascii_lowercase();
            const MODES: [&str; 6] = [
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ];
            if MODES.contains(&m.as_str()) {
                Some(m)
            } else {
                self.problem(
                    at,
                    format!("is `{m}`, not an sslmode"),
                    format!("use one of {}", MODES.join(", ")),
                );
                None
            }
        });
        let ca_file = st.ca_file.value().map(|(v, at)| {
            let p = PathBuf::from(v.trim());
            self.pem_certificates(at, &p);
            p
        });
        let allow_file_output = st.allow_file_output.value().is_some_and(|(b, _)| *b);
        let tenant_lease = match &st.tenant_lease {
            Field::Value(d, at) if *d < Duration::from_secs(1) => {
                self.problem(
                    at,
                    "is under 1s",
                    "use a lease of seconds, e.g. 30s (the default)",
                );
                DEFAULT_TENANT_LEASE
            }
            Field::Value(d, _) => *d,
            _ => DEFAULT_TENANT_LEASE,
        };
        if !allow_file_output {
            for (name, o) in outputs {
                if !matches!(o, OutputConfig::File(_)) {
                    continue;
                }
                let at = raw
                    .outputs
                    .as_ref()
                    .and_then(|(_, entries)| entries.iter().find(|e| e.name == *name))
                    .map_or_else(|| st.at.clone(), |e| e.at.clone());
                self.problem(
                    &at,
                    "is a file output, while store: postgres runs several replicas: each replica would write its own file, and a blob one replica delivered in part before it died is delivered again by another into another file, where the duplicates cannot be found",
                    "send to a network output (http, kafka, syslog), or set store.allow_file_output: true if you accept that (e.g. one replica, or duplicates removed downstream)",
                );
            }
        }
        match url {
            Some(url) => StoreConfig::Postgres(PostgresConfig {
                url,
                pool_size,
                sslmode,
                ca_file,
                allow_file_output,
                tenant_lease,
            }),
            None => StoreConfig::Embedded,
        }
    }

    // ---- pull, outbound, pipeline ------------------------------------------------------------

    fn positive_duration(&mut self, field: &Field<Duration>, default: Duration) -> Duration {
        match field {
            Field::Value(d, at) if d.is_zero() => {
                self.problem(at, "is zero", "use a positive duration such as 60s");
                default
            }
            Field::Value(d, _) => *d,
            _ => default,
        }
    }

    fn pull(&mut self, raw: &RawConfig) -> PullConfig {
        PullConfig {
            interval: self.positive_duration(&raw.pull.interval, DEFAULT_PULL_INTERVAL),
            reconcile_every: self
                .positive_duration(&raw.pull.reconcile_every, DEFAULT_RECONCILE_EVERY),
        }
    }

    fn outbound(&mut self, raw: &RawConfig) -> OutboundConfig {
        let o = &raw.outbound;
        let ca_file = o.ca_file.value().map(|(v, at)| {
            let p = PathBuf::from(v.trim());
            self.pem_certificates(at, &p);
            p
        });
        let proxy = o.proxy.value().and_then(|(v, at)| {
            let fix = "write the proxy as http://host:port (or https://host:port)";
            match reqwest::Url::parse(v.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    Some(v.trim().to_owned())
                }
                Ok(u) => {
                    // The value may hold proxy credentials: describe, never echo.
                    self.problem(
                        at,
                        format!("uses the scheme `{}` or has no host; only http and https proxies are supported", u.scheme()),
                        fix,
                    );
                    None
                }
                Err(e) => {
                    self.problem(at, format!("is not a valid URL ({e})"), fix);
                    None
                }
            }
        });
        OutboundConfig { ca_file, proxy }
    }

    /// A count in `1..=max` when set, else `default`; outside the range it is a problem (with `fix`).
    fn count(&mut self, field: &Field<u64>, max: u64, default: usize, fix: &str) -> usize {
        match field {
            Field::Value(v, at) if *v == 0 || *v > max => {
                self.problem(at, format!("is {v}, outside 1..={max}"), fix);
                default
            }
            Field::Value(v, _) => usize::try_from(*v).unwrap_or(default),
            _ => default,
        }
    }

    fn pipeline(&mut self, raw: &RawConfig) -> PipelineConfig {
        let p = &raw.pipeline;
        let workers = self.count(
            &p.workers,
            MAX_WORKERS,
            DEFAULT_WORKERS,
            "use a small number such as 4 (the default)",
        );
        let lease = match &p.lease {
            Field::Value(d, at) if *d < Duration::from_secs(1) => {
                self.problem(
                    at,
                    "is shorter than 1s: blobs would be taken from a worker still fetching them",
                    "use a lease longer than a blob fetch, e.g. 5m (the default)",
                );
                DEFAULT_LEASE
            }
            Field::Value(d, _) => *d,
            _ => DEFAULT_LEASE,
        };
        let max_attempts = match &p.max_attempts {
            Field::Value(v, at) => match u32::try_from(*v) {
                Ok(n) if n >= 1 => n,
                _ => {
                    self.problem(
                        at,
                        format!("is {v}, outside 1..={}", u32::MAX),
                        "use a number such as 10 (the default)",
                    );
                    DEFAULT_MAX_ATTEMPTS
                }
            },
            _ => DEFAULT_MAX_ATTEMPTS,
        };
        let queue_high_water = match &p.queue_high_water {
            Field::Value(0, at) => {
                self.problem(
                    at,
                    "is 0: content listing would never run",
                    "use a number of blobs such as 10000 (the default)",
                );
                DEFAULT_QUEUE_HIGH_WATER
            }
            Field::Value(v, _) => *v,
            _ => DEFAULT_QUEUE_HIGH_WATER,
        };
        let batch_records = self.count(
            &p.batch_records,
            MAX_BATCH_RECORDS,
            DEFAULT_BATCH_RECORDS,
            "use a number of records such as 1000 (the default)",
        );
        let batch_bytes = match &p.batch_bytes {
            Field::Value(v, at) if *v < 1024 || *v > MAX_BATCH_BYTES => {
                self.problem(
                    at,
                    format!("is {v} bytes, outside 1KiB..=256MiB"),
                    "use a size such as 4MiB (the default)",
                );
                DEFAULT_BATCH_BYTES
            }
            Field::Value(v, _) => usize::try_from(*v).unwrap_or(DEFAULT_BATCH_BYTES),
            _ => DEFAULT_BATCH_BYTES,
        };
        PipelineConfig {
            workers,
            lease,
            max_attempts,
            queue_high_water,
            batch_records,
            batch_bytes,
        }
    }

    // ---- enrichment --------------------------------------------------------------------------

    fn enrichment(&mut self, raw: &RawConfig, tenants: &[TenantConfig]) -> EnrichmentConfig {
        let e = &raw.enrichment;
        let mut cfg = EnrichmentConfig::default();
        if let Some((on, _)) = e.user_agent.value() {
            cfg.user_agent = *on;
        }
        cfg.geoip_city = self.geoip_database(&e.geoip_city, Kind::City);
        cfg.geoip_asn = self.geoip_database(&e.geoip_asn, Kind::Asn);
        if let Some((every, at)) = e.reload_every.value() {
            if *every < Duration::from_secs(1) {
                self.problem(
                    at,
                    "is shorter than 1s",
                    "use a check interval such as 60s (the default)",
                );
            }
            cfg.reload_every = *every;
        }
        if cfg.is_enabled() && !tenants.iter().any(|t| t.format == Format::Ecs) {
            let at = [e.user_agent.at(), e.geoip_city.at(), e.geoip_asn.at()]
                .into_iter()
                .flatten()
                .next();
            if let Some(at) = at {
                self.problem(
                    at,
                    "applies to `format: ecs` only, and no tenant uses it",
                    "set `format: ecs` for the tenants to enrich, or remove enrichment:",
                );
            }
        }
        cfg
    }

    /// A MaxMind database path: readable, a MaxMind DB, and of the expected kind (a City database
    /// given as the ASN one is a likely slip).
    fn geoip_database(&mut self, field: &Field<String>, kind: Kind) -> Option<PathBuf> {
        let (path, at) = field.value()?;
        let path = PathBuf::from(path);
        let bytes = self.read_file(at, &path)?;
        let fix = "give a MaxMind DB file (.mmdb), e.g. GeoLite2-City.mmdb or GeoLite2-ASN.mmdb";
        match maxminddb::Reader::from_source(bytes) {
            Ok(r) => {
                let t = r.metadata().database_type.to_ascii_lowercase();
                let (fits, expected) = match kind {
                    Kind::City => (t.contains("city") || t.contains("enterprise"), "City"),
                    Kind::Asn => (t.contains("asn") || t.contains("isp"), "ASN"),
                };
                if !fits {
                    self.problem(
                        at,
                        format!(
                            "names a {} database, not a {expected} one",
                            r.metadata().database_type
                        ),
                        "geoip_city takes a City database, geoip_asn an ASN database",
                    );
                }
            }
            Err(e) => {
                self.problem(
                    at,
                    format!(
                        "names {}, which is not a MaxMind database ({e})",
                        path.display()
                    ),
                    fix,
                );
                return None;
            }
        }
        Some(path)
    }
}

#[derive(Clone, Copy)]
enum Guid {
    Tenant,
    Client,
    Publisher,
}

fn is_pkcs12(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"))
}

/// `tenants[0].client_certificate` from `tenants[0].client_certificate.password_file`.
fn c_key(at: &At) -> &str {
    at.key
        .rsplit_once('.')
        .map_or(at.key.as_str(), |(head, _)| head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(is_guid("66666666-7777-8888-9999-000000000000"));
        assert!(is_guid("ABCDEF01-2345-6789-abcd-ef0123456789"));
        assert!(!is_guid("66666666777788889999000000000000"));
        assert!(!is_guid("{66666666-7777-8888-9999-000000000000}"));
        assert!(!is_guid("contoso.onmicrosoft.com"));
        assert!(!is_guid("6666666g-7777-8888-9999-000000000000"));
    }

    #[test]
    fn authorities() {
        assert_eq!(
            derive_authority("https://manage.office.com"),
            "https://login.microsoftonline.com"
        );
        assert_eq!(
            derive_authority("https://manage.protection.apps.mil"),
            "https://login.microsoftonline.us"
        );
        assert_eq!(
            derive_authority("https://127.0.0.1:8444"),
            "https://127.0.0.1:8444"
        );
        assert_eq!(derive_authority("https://[::1]:8444"), "https://[::1]:8444");
        assert_eq!(
            derive_authority("https://manage.office365.us:443"),
            "https://login.microsoftonline.us"
        );
        assert!(!is_microsoft_cloud(
            "https://manage.office.com.evil.example"
        ));
    }
}
