//! Configuration: the YAML file, typed section by section by the components that own each section
//! ([`load`]), and composed here into one [`Config`]: tenants inherit the top level ([`tenant`]),
//! and the rules that span sections (output names, the store against file outputs) are checked.
//! Every problem is reported at once, in file order, as key, problem and fix.
//!
//! See `config.yaml` at the repository root for every key with its default. `${NAME}` in any string
//! value is taken from the environment (`$${` is a literal `${`); secrets can also come from files
//! (`client_secret_file`, `webhook.auth_id_file`, `admin.token_file`, `client_certificate.password_file`,
//! `store.url_file`).

mod env;
mod load;
mod placeholders;
pub mod tenant;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

pub use crate::core::settings::Problem;
pub use env::ExpandError;
pub use tenant::{Credential, TenantConfig};

use crate::admin::config::AdminConfig;
use crate::core::format_duration;
use crate::core::settings::{Problems, de, field_names};
use crate::core::typed::{kind_of, typed};
use crate::mapping::Format;
use crate::mapping::enrich::EnrichmentConfig;
use crate::mgmt_api::OutboundConfig;
use crate::output::OutputConfig;
use crate::output::template::Fields;
use crate::pipeline::config::{PipelineConfig, PullConfig};
use crate::server::config::{ListenConfig, TlsConfig};
use crate::store::ledger::CompletenessConfig;
use crate::store::{RetentionConfig, StoreConfig};
use crate::webhook::config::WebhookConfig;
use tenant::{DEFAULT_OUTPUT, TenantKeys, is_microsoft_cloud};

/// The product documentation's default for `last_value_storage`.
pub const DEFAULT_LAST_VALUE_STORAGE: &str = "./var/last_value_storage";

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
    /// How long the dedup set remembers (`store.dedup_retention`).
    pub retention: RetentionConfig,
    pub pipeline: PipelineConfig,
    pub enrichment: EnrichmentConfig,
    /// When an hour of the completeness ledger is sealed (`completeness:`).
    pub completeness: CompletenessConfig,
}

/// The sections of the file besides the top-level tenant keys, as their owners type them.
/// `store`, `outputs` and `tenants` are typed entry by entry (an entry's `type` decides its keys).
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Sections {
    /// Lets example values through (`placeholders`): for example and test files only.
    #[serde(deserialize_with = "de::flag")]
    allow_placeholders: bool,
    #[serde(deserialize_with = "de::opt::path")]
    last_value_storage: Option<PathBuf>,
    store: Option<Value>,
    webhook: Option<WebhookConfig>,
    listen: ListenConfig,
    tls: Option<TlsConfig>,
    admin: AdminConfig,
    pull: PullConfig,
    outbound: OutboundConfig,
    outputs: Mapping,
    tenants: Vec<Value>,
    pipeline: PipelineConfig,
    enrichment: EnrichmentConfig,
    completeness: CompletenessConfig,
}

/// Every problem found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigErrors(pub Vec<Problem>);

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
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses YAML text; `env` resolves `${NAME}`. Files named by the configuration (secrets,
    /// certificates) are read relative to the current directory.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let mut p = Problems::default();
        let config = load::read(text, env, &mut p).map(|root| compose(root, &mut p));
        match config {
            Some(config) if p.is_empty() => Ok(config),
            _ => Err(ConfigErrors(p.into_sorted())),
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
                "  {}{}: {} -> output {} (format {}, encoding {}, resource {}, login {})",
                t.tenant_id,
                t.tenant_name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
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
                OutputConfig::Sentinel(c) => {
                    format!(
                        "{name} (sentinel {} stream {})",
                        c.dcr_immutable_id, c.stream
                    )
                }
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

fn unreadable(path: &Path, e: std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![Problem {
        key: "(file)".into(),
        problem: format!("cannot read {}: {e}", path.display()),
        fix: "pass an existing readable YAML file with --config".into(),
    }])
}

/// The one pass over the typed sections: each owner checks its own, then the rules across them.
fn compose(root: Mapping, p: &mut Problems) -> Config {
    let placeholders = placeholders::find(&root);
    let (top, sections) = load::split(
        root,
        field_names::<TenantKeys>(),
        field_names::<Sections>(),
        p,
    );
    let top: TenantKeys = typed(Value::Mapping(top), "", p);
    let mut c: Sections = typed(Value::Mapping(sections), "", p);
    p.allow_placeholders = c.allow_placeholders;
    if !c.allow_placeholders {
        for (key, problem, fix) in placeholders {
            p.push(&key, problem, fix);
        }
    }
    let mut outputs = crate::output::read_all(std::mem::take(&mut c.outputs), p);
    let mut entries = Vec::new();
    for (i, entry) in std::mem::take(&mut c.tenants).into_iter().enumerate() {
        let key = format!("tenants[{i}]");
        match entry {
            Value::Mapping(_) => entries.push((key.clone(), typed(entry, &key, p))),
            Value::Null => p.push(
                &key,
                "is an empty list entry",
                "remove the lone `-` or give the entry its tenant keys",
            ),
            other => p.push(
                &key,
                format!("is {}, expected a mapping of tenant keys", kind_of(&other)),
                "write the entry as `- tenant_id: …` with its keys indented below",
            ),
        }
    }
    let names: Vec<String> = outputs.keys().cloned().collect();
    let tenants = tenant::tenants(&top, &entries, &names, p);
    // `stdout` needs no entry of its own.
    if tenants.iter().any(|t| t.output == DEFAULT_OUTPUT) {
        outputs
            .entry(DEFAULT_OUTPUT.to_owned())
            .or_insert(OutputConfig::Stdout);
    }
    if let Some(w) = &mut c.webhook {
        w.check(&mut p.section("webhook"));
    }
    c.listen.check(&mut p.section("listen"));
    if let Some(t) = &mut c.tls {
        t.check(&mut p.section("tls"));
    }
    let listen_order = match p.is_given("listen.admin") {
        true => p.order_of("listen.admin"),
        false => p.end(),
    };
    c.admin
        .check(&mut p.section("admin"), c.listen.admin, listen_order);
    c.pull.check(&mut p.section("pull"));
    c.outbound.check(&mut p.section("outbound"));
    c.pipeline.check(&mut p.section("pipeline"));
    c.completeness.check(&mut p.section("completeness"));
    let ecs = tenants.iter().any(|t| t.format == Format::Ecs);
    c.enrichment.check(&mut p.section("enrichment"), ecs);
    let last_value_storage = match c.last_value_storage {
        Some(dir) if dir.to_str().is_some_and(|d| d.trim().is_empty()) => {
            p.push(
                "last_value_storage",
                "is empty",
                format!("give a directory for the store, or remove the key for {DEFAULT_LAST_VALUE_STORAGE}"),
            );
            dir
        }
        Some(dir) => dir,
        None => PathBuf::from(DEFAULT_LAST_VALUE_STORAGE),
    };
    let (store, retention) = StoreConfig::read(c.store, p);
    // A tenant's name (or id) goes into index and topic names: each must give a valid name.
    for t in &tenants {
        let Some(output) = outputs.get(&t.output) else {
            continue;
        };
        let fields = Fields {
            tenant_id: &t.tenant_id,
            tenant_name: t.tenant_name.as_deref(),
            content_type: t
                .content_types
                .first()
                .map_or("Audit.General", String::as_str),
        };
        for (key, name) in output.invalid_names(&fields) {
            p.push(
                &format!("outputs.{}.{key}", t.output),
                format!("gives `{name}` for tenant {}, which is not a valid name there", t.tenant_id),
                "use {tenant_id} in the template, or give that tenant a tenant_name of lowercase letters, digits, `.`, `_` and `-`",
            );
        }
    }
    // Several replicas cannot share a file output (unless allowed): each would write its own.
    if let StoreConfig::Postgres(pg) = &store
        && !pg.allow_file_output
    {
        for (name, _) in outputs
            .iter()
            .filter(|(_, o)| matches!(o, OutputConfig::File(_)))
        {
            p.push(
                &format!("outputs.{name}"),
                "is a file output, while store: postgres runs several replicas: each replica would write its own file, and a blob one replica delivered in part before it died is delivered again by another into another file, where the duplicates cannot be found",
                "send to a network output (http, kafka, syslog), or set store.allow_file_output: true if you accept that (e.g. one replica, or duplicates removed downstream)",
            );
        }
    }
    Config {
        tenants,
        webhook: c.webhook,
        listen: c.listen,
        tls: c.tls,
        admin: c.admin,
        pull: c.pull,
        outbound: c.outbound,
        outputs,
        last_value_storage,
        store,
        retention,
        pipeline: c.pipeline,
        enrichment: c.enrichment,
        completeness: c.completeness,
    }
}

/// What `check-config` finds on disk: the store directory and the files outputs write.
fn writable_paths(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    if matches!(config.store, StoreConfig::Embedded)
        && let Err(e) = crate::store::embedded::probe_dir(&config.last_value_storage)
    {
        problems.push(Problem {
            key: "last_value_storage".into(),
            problem: e,
            fix: "give a directory on a writable filesystem with free space (the store writes and fsyncs there)".into(),
        });
    }
    for (name, output) in &config.outputs {
        let (key, path) = match output {
            OutputConfig::File(f) => ("path", &f.path),
            OutputConfig::Http(h) => match &h.dead_letter_path {
                Some(p) => ("dead_letter_path", p),
                None => continue,
            },
            _ => continue,
        };
        if let Err((problem, fix)) = crate::output::file::config::check_path(path) {
            problems.push(Problem {
                key: format!("outputs.{name}.{key}"),
                problem,
                fix,
            });
        }
    }
    problems
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
        Err(e) => Err(unreadable(path, e)),
    };
    // The store directory and every file an output writes must take writes, or `run` fails at
    // once (or on the first notification).
    let result = result.and_then(|config| {
        let problems = writable_paths(&config);
        match problems.is_empty() {
            true => Ok(config),
            false => Err(ConfigErrors(problems)),
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
