//! A tenant: who it is, how the collector signs in, what it collects and where it goes.
//!
//! The tenant keys at the top level of the file are both the first tenant (when `tenant_id` is
//! there) and the defaults of the `tenants:` entries; [`tenants`] resolves that inheritance and
//! checks each tenant. This module sits low (the Microsoft clients use [`TenantConfig`]), so it
//! knows outputs only by name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use encoding_rs::Encoding;
use serde::Deserialize;

pub use crate::mgmt_api::cloud::{DEFAULT_RESOURCE, derive_authority, is_microsoft_cloud};
pub use crate::mgmt_api::credential::{Credential, is_guid};

use crate::core::Secret;
use crate::core::settings::{Problems, Section, de};
use crate::graph::feed::{
    DEFAULT_GRAPH_BACKFILL, GraphConfig, GraphFeed, check_feeds, check_host, derive_graph_host,
    is_national_graph_host,
};
use crate::mapping::context::Format;
use crate::mgmt_api::cloud::{check_authority, check_resource};
use crate::mgmt_api::credential::{self, CertificateKeys};
use crate::mgmt_api::throttle::RequestBudgetConfig;
use crate::mgmt_api::wire::CONTENT_TYPES;

pub const DEFAULT_CONTENT_TYPES: &str =
    "Audit.AzureActiveDirectory Audit.Exchange Audit.SharePoint Audit.General";
/// Name of the output used when none is configured (it needs no entry under `outputs`).
pub const DEFAULT_OUTPUT: &str = "stdout";

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
    pub encoding: &'static Encoding,
    pub format: Format,
    /// This tenant's own limit on calls to Microsoft (`requests_per_minute`, `request_burst`).
    pub request_budget: RequestBudgetConfig,
    /// The Microsoft Graph feeds of this tenant (none by default).
    pub graph: GraphConfig,
}

/// The tenant keys as the file has them, at the top level or in a `tenants:` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantKeys {
    #[serde(deserialize_with = "de::opt::text")]
    tenant_id: Option<String>,
    #[serde(deserialize_with = "de::opt::text")]
    tenant_name: Option<String>,
    #[serde(deserialize_with = "de::opt::text")]
    client_id: Option<String>,
    client_secret: Option<Secret>,
    #[serde(deserialize_with = "de::opt::path")]
    client_secret_file: Option<PathBuf>,
    client_certificate: Option<CertificateKeys>,
    #[serde(deserialize_with = "de::opt::text")]
    resource: Option<String>,
    #[serde(deserialize_with = "de::opt::text")]
    authority: Option<String>,
    #[serde(deserialize_with = "de::opt::text")]
    publisher_id: Option<String>,
    #[serde(deserialize_with = "de::opt::words")]
    content_type: Option<Vec<String>>,
    #[serde(deserialize_with = "de::opt::text")]
    output: Option<String>,
    #[serde(deserialize_with = "de::opt::text")]
    encoding: Option<String>,
    #[serde(deserialize_with = "de::opt::text")]
    format: Option<String>,
    #[serde(deserialize_with = "de::opt::whole")]
    requests_per_minute: Option<u64>,
    #[serde(deserialize_with = "de::opt::whole")]
    request_burst: Option<u64>,
    #[serde(deserialize_with = "de::opt::words")]
    graph_feeds: Option<Vec<String>>,
    #[serde(deserialize_with = "de::opt::text")]
    graph_host: Option<String>,
    #[serde(deserialize_with = "de::opt::duration")]
    graph_backfill: Option<Duration>,
}

/// The values the top level gives every `tenants:` entry that does not set its own.
struct Inherited {
    /// A shared app registration (multi-tenant app): only when the top level has no tenant_id.
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

/// The tenants of the file: the top level (when it has `tenant_id`) and each entry of `tenants:`
/// (its key, e.g. `tenants[1]`, and keys). `outputs` names the outputs defined.
pub fn tenants(
    top: &TenantKeys,
    entries: &[(String, TenantKeys)],
    outputs: &[String],
    p: &mut Problems,
) -> Vec<TenantConfig> {
    let inherited = inherited(top, outputs, &mut p.section(""));
    let mut tenants = Vec::new();
    let mut keys = Vec::new();
    if top.tenant_id.is_some() || p.is_given("tenant_id") {
        tenants.push(tenant(top, &inherited, true, outputs, &mut p.section("")));
        keys.push(String::new());
    }
    for (key, t) in entries {
        tenants.push(tenant(t, &inherited, false, outputs, &mut p.section(key)));
        keys.push(key.clone());
    }
    if tenants.is_empty() {
        p.push_at(
            p.end(),
            "tenant_id",
            "is missing: no tenant is configured",
            "set tenant_id, client_id and client_secret at the top level, or add entries under tenants:",
        );
    }
    // One process must own each tenant's subscriptions exactly once.
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (t, key) in tenants.iter().zip(&keys) {
        let at = p.section(key).path("tenant_id");
        if t.tenant_id.is_empty() {
            continue;
        }
        match seen.get(t.tenant_id.as_str()) {
            Some(first) => p.push(
                &at,
                format!(
                    "repeats the tenant {} already configured at {first}",
                    t.tenant_id
                ),
                "configure each tenant once; merge the two entries",
            ),
            None => {
                seen.insert(&t.tenant_id, at);
            }
        }
    }
    tenants
}

fn inherited(top: &TenantKeys, outputs: &[String], s: &mut Section) -> Inherited {
    let resource = match &top.resource {
        Some(v) => check_resource(s, v),
        None => DEFAULT_RESOURCE.to_owned(),
    };
    if top.tenant_name.is_some() && !s.given("tenant_id") {
        s.problem(
            "tenant_name",
            "names a tenant, but the top level has no tenant_id",
            "set tenant_name in each tenants: entry",
        );
    }
    // Without a top-level tenant_id the top level is not a tenant, so its client_id and
    // credential can only mean "shared by the entries" (one multi-tenant app registration).
    let shared = !s.given("tenant_id");
    let client_id = match &top.client_id {
        Some(v) if shared => Some(guid(s, "client_id", v, Guid::Client)),
        None if shared && s.given("client_id") => Some(String::new()),
        _ => None,
    };
    let has_credential = ["client_secret", "client_secret_file", "client_certificate"]
        .iter()
        .any(|k| s.given(k));
    let credential = (shared && has_credential).then(|| own_credential(top, s));
    let output = top.output.clone();
    if let Some(name) = &output {
        output_name(s, name, outputs);
    }
    Inherited {
        client_id,
        credential,
        authority: top.authority.as_ref().map(|v| check_authority(s, v)),
        publisher_id: top
            .publisher_id
            .as_ref()
            .map(|v| guid(s, "publisher_id", v, Guid::Publisher)),
        content_types: match &top.content_type {
            Some(v) => content_types(s, v),
            None => DEFAULT_CONTENT_TYPES
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        },
        output,
        encoding: top
            .encoding
            .as_ref()
            .map_or(encoding_rs::UTF_8, |v| encoding(s, v)),
        format: top
            .format
            .as_ref()
            .map_or(Format::default(), |v| format(s, v)),
        request_budget: RequestBudgetConfig::resolve(
            top.requests_per_minute,
            top.request_burst,
            RequestBudgetConfig::default(),
            false,
            s,
        ),
        burst_given: s.given("request_burst"),
        graph_feeds: top
            .graph_feeds
            .as_ref()
            .map_or_else(Vec::new, |v| check_feeds(s, v)),
        graph_host: top.graph_host.as_ref().map(|v| check_host(s, v)),
        graph_backfill: positive(
            s,
            "graph_backfill",
            top.graph_backfill,
            DEFAULT_GRAPH_BACKFILL,
        ),
        resource,
    }
}

fn tenant(
    t: &TenantKeys,
    inh: &Inherited,
    is_top: bool,
    outputs: &[String],
    s: &mut Section,
) -> TenantConfig {
    let tenant_id = match &t.tenant_id {
        Some(v) => guid(s, "tenant_id", v, Guid::Tenant),
        None => {
            s.missing(
                "tenant_id",
                "set the Directory (tenant) ID from Azure portal → Microsoft Entra ID → Overview",
            );
            String::new()
        }
    };
    let client_id = match &t.client_id {
        Some(v) => guid(s, "client_id", v, Guid::Client),
        None if !is_top && inh.client_id.is_some() && !s.given("client_id") => {
            inh.client_id.clone().unwrap_or_default()
        }
        None => {
            s.missing(
                "client_id",
                "set the Application (client) ID from Azure portal → App registrations → your app → Overview",
            );
            String::new()
        }
    };
    let has_own = ["client_secret", "client_secret_file", "client_certificate"]
        .iter()
        .any(|k| s.given(k));
    let credential = match &inh.credential {
        Some(shared) if !is_top && !has_own => shared.clone(),
        _ => own_credential(t, s),
    };
    // The top level's own values were checked once, in `inherited`.
    let given = |s: &Section, key: &str| !is_top && s.given(key);
    let own: HashMap<&str, bool> = [
        "resource",
        "authority",
        "publisher_id",
        "content_type",
        "output",
        "encoding",
        "format",
    ]
    .into_iter()
    .map(|k| (k, given(s, k)))
    .collect();
    let own = |key: &str| own[key];
    let resource = match &t.resource {
        Some(v) if own("resource") => check_resource(s, v),
        None if own("resource") => String::new(),
        _ => inh.resource.clone(),
    };
    let authority = match &t.authority {
        Some(v) if own("authority") => check_authority(s, v),
        None if own("authority") => String::new(),
        // A tenant with its own resource gets that cloud's authority, not the top level's.
        _ if own("resource") => derive_authority(&resource),
        _ => inh
            .authority
            .clone()
            .unwrap_or_else(|| derive_authority(&resource)),
    };
    let publisher_id = match &t.publisher_id {
        Some(v) if own("publisher_id") => guid(s, "publisher_id", v, Guid::Publisher),
        None if own("publisher_id") => String::new(),
        _ => inh
            .publisher_id
            .clone()
            .unwrap_or_else(|| tenant_id.clone()),
    };
    let content_types = match &t.content_type {
        Some(v) if !is_top => content_types(s, v),
        None if own("content_type") => Vec::new(),
        _ => inh.content_types.clone(),
    };
    let output = match &t.output {
        Some(v) if own("output") => {
            output_name(s, v, outputs);
            v.clone()
        }
        None if s.given("output") => String::new(),
        _ => match &inh.output {
            Some(o) => o.clone(),
            None => default_output(s, outputs),
        },
    };
    let encoding = match &t.encoding {
        Some(v) if own("encoding") => encoding(s, v),
        _ => inh.encoding,
    };
    let format = match &t.format {
        Some(v) if own("format") => format(s, v),
        _ => inh.format,
    };
    let request_budget = if is_top {
        inh.request_budget
    } else {
        RequestBudgetConfig::resolve(
            t.requests_per_minute,
            t.request_burst,
            inh.request_budget,
            inh.burst_given,
            s,
        )
    };
    let graph = tenant_graph(t, inh, is_top, &resource, s);
    // Not inherited: a name belongs to one tenant.
    let tenant_name = match &t.tenant_name {
        Some(v) if v.trim().is_empty() => {
            s.problem(
                "tenant_name",
                "is empty",
                "give the tenant's name, e.g. contoso.onmicrosoft.com, or remove the key",
            );
            None
        }
        Some(v) => Some(v.trim().to_owned()),
        None => None,
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
    t: &TenantKeys,
    inh: &Inherited,
    is_top: bool,
    resource: &str,
    s: &mut Section,
) -> GraphConfig {
    let feeds = match &t.graph_feeds {
        Some(v) if !is_top => check_feeds(s, v),
        None if !is_top && s.given("graph_feeds") => Vec::new(),
        _ => inh.graph_feeds.clone(),
    };
    let host = match &t.graph_host {
        Some(v) if !is_top => check_host(s, v),
        None if !is_top && s.given("graph_host") => String::new(),
        _ if !is_top && s.given("resource") => derive_graph_host(resource),
        _ => inh
            .graph_host
            .clone()
            .unwrap_or_else(|| derive_graph_host(resource)),
    };
    let backfill = if is_top {
        inh.graph_backfill
    } else {
        positive(s, "graph_backfill", t.graph_backfill, inh.graph_backfill)
    };
    if feeds.contains(&GraphFeed::MessageTrace) && is_national_graph_host(&host) {
        let at = ["graph_feeds", "graph_host", "resource"]
            .into_iter()
            .find(|k| s.given(k))
            .unwrap_or("graph_feeds");
        s.problem(
            at,
            format!(
                "asks for message_trace on {host}, but Microsoft offers the message trace API in the global cloud only"
            ),
            "remove message_trace from graph_feeds for this tenant",
        );
    }
    GraphConfig {
        feeds,
        host,
        backfill,
        limit_scale: 1,
    }
}

fn positive(s: &mut Section, key: &str, d: Option<Duration>, default: Duration) -> Duration {
    match d {
        Some(d) if d.is_zero() => {
            s.positive(key, d);
            default
        }
        Some(d) => d,
        None => default,
    }
}

/// A tenant's own credential (`client_secret`, `client_secret_file` or `client_certificate`).
fn own_credential(t: &TenantKeys, s: &mut Section) -> Credential {
    credential::resolve(
        t.client_secret.as_ref(),
        t.client_secret_file.as_deref(),
        t.client_certificate.as_ref(),
        s,
    )
}

#[derive(Clone, Copy)]
enum Guid {
    Tenant,
    Client,
    Publisher,
}

/// A GUID, lower-cased. The value is not echoed: a secret pasted into the wrong key must not
/// end up in a log.
fn guid(s: &mut Section, key: &str, value: &str, which: Guid) -> String {
    let v = value.trim();
    if is_guid(v) {
        return v.to_ascii_lowercase();
    }
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
    s.problem(key, shape, fix);
    String::new()
}

fn content_types(s: &mut Section, words: &[String]) -> Vec<String> {
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
        s.problem("content_type", format!("`{w}` is not a content type"), fix);
    }
    if words.is_empty() {
        s.problem(
            "content_type",
            "lists no content type",
            format!(
                "list some of: {} (or remove the key for the default)",
                CONTENT_TYPES.join(" ")
            ),
        );
    }
    out
}

fn encoding(s: &mut Section, label: &str) -> &'static Encoding {
    let label = label.trim();
    match Encoding::for_label(label.as_bytes()) {
        Some(e) if e == encoding_rs::REPLACEMENT => {
            s.problem(
                "encoding",
                format!(
                    "`{label}` names the replacement encoding, which turns every byte into U+FFFD"
                ),
                "use the charset the blobs are really in, normally utf-8",
            );
            encoding_rs::UTF_8
        }
        Some(e) => e,
        None => {
            s.problem(
                "encoding",
                format!("`{label}` is not a known character encoding label"),
                "use a WHATWG encoding label such as utf-8 (default), windows-1252, iso-8859-2, shift_jis or utf-16le",
            );
            encoding_rs::UTF_8
        }
    }
}

fn format(s: &mut Section, value: &str) -> Format {
    let choices = [
        ("o365", Format::O365),
        ("ecs", Format::Ecs),
        ("raw", Format::Raw),
    ];
    let lower = value.trim().to_ascii_lowercase();
    match choices.iter().find(|(name, _)| *name == lower) {
        Some((_, f)) => *f,
        None => {
            s.problem(
                "format",
                format!("`{}` is not an event format", value.trim()),
                "use o365 (default), ecs or raw",
            );
            Format::default()
        }
    }
}

/// An output named by a tenant must be defined (`stdout` needs no entry).
fn output_name(s: &mut Section, name: &str, outputs: &[String]) {
    if name == DEFAULT_OUTPUT || outputs.iter().any(|o| o == name) {
        return;
    }
    let mut known: Vec<&str> = outputs.iter().map(String::as_str).collect();
    if !known.contains(&DEFAULT_OUTPUT) {
        known.push(DEFAULT_OUTPUT);
    }
    s.problem(
        "output",
        format!("names the output `{name}`, which is not defined under outputs"),
        format!(
            "use one of: {}, or add `{name}: {{type: file, path: …}}` under outputs",
            known.join(", ")
        ),
    );
}

/// The output of a tenant that names none, where the top level names none either.
fn default_output(s: &mut Section, outputs: &[String]) -> String {
    match outputs {
        [] => DEFAULT_OUTPUT.to_owned(),
        [one] => one.clone(),
        _ => {
            s.missing_as(
                "output",
                format!("is missing and {} outputs are defined", outputs.len()),
                format!("set output to one of: {}", outputs.join(", ")),
            );
            String::new()
        }
    }
}
