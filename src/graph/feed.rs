//! The four Microsoft Graph feeds and what Microsoft documents about each (reference graph.md):
//! where it lives, which property orders it in time, how far back and in what windows it may be
//! read, how fast, and what identifies one record.

use std::time::Duration;

use chrono::TimeDelta;
use serde_json::{Map, Value};

use crate::core::settings::Section;

/// One Graph feed of a tenant (`graph_feeds` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GraphFeed {
    SignIns,
    DirectoryAudits,
    MessageTrace,
    ServiceHealth,
}

/// Which Graph feeds a tenant collects and where Graph is (`graph_feeds`, `graph_host`,
/// `graph_backfill`; resolved per tenant by `config::tenant`). `Default`: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphConfig {
    /// `graph_feeds`; empty by default, so configurations written before them work unchanged.
    pub feeds: Vec<GraphFeed>,
    /// `graph_host`: derived from `resource` (its cloud's Graph host) unless set.
    pub host: String,
    /// `graph_backfill`: how far back the first read of a feed starts, within what it keeps.
    pub backfill: Duration,
    /// Graph's request limits ([`GraphFeed::request_limit`]) multiplied by this; 0 and 1 keep
    /// Microsoft's. Not a configuration key: only `demo` raises it, against its own emulator,
    /// whose quota it raises alike.
    pub limit_scale: u32,
}

/// How far back the first read of a Graph feed starts (`graph_backfill`).
pub const DEFAULT_GRAPH_BACKFILL: Duration = Duration::from_secs(24 * 3600);

/// `graph_feeds`: some of the four feed names.
pub fn check_feeds(s: &mut Section, words: &[String]) -> Vec<GraphFeed> {
    let mut out = Vec::new();
    for w in words {
        match GraphFeed::from_config_name(&w.to_ascii_lowercase()) {
            Some(f) if !out.contains(&f) => out.push(f),
            Some(_) => {}
            None => s.problem(
                "graph_feeds",
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

/// `graph_host`: an https origin.
pub fn check_host(s: &mut Section, value: &str) -> String {
    let fix = "use the Graph host only, e.g. https://graph.microsoft.com (GCC High: https://graph.microsoft.us, DoD: https://dod-graph.microsoft.us, China: https://microsoftgraph.chinacloudapi.cn), or remove graph_host to derive it from resource";
    s.https_origin("graph_host", value, fix).unwrap_or_default()
}

impl GraphFeed {
    pub const ALL: [GraphFeed; 4] = [
        GraphFeed::SignIns,
        GraphFeed::DirectoryAudits,
        GraphFeed::MessageTrace,
        GraphFeed::ServiceHealth,
    ];

    /// The configuration word (`graph_feeds: sign_ins directory_audits …`).
    pub fn config_name(self) -> &'static str {
        match self {
            GraphFeed::SignIns => "sign_ins",
            GraphFeed::DirectoryAudits => "directory_audits",
            GraphFeed::MessageTrace => "message_trace",
            GraphFeed::ServiceHealth => "service_health",
        }
    }

    pub fn from_config_name(s: &str) -> Option<GraphFeed> {
        GraphFeed::ALL.into_iter().find(|f| f.config_name() == s)
    }

    /// The label the feed's records carry through the queue, the cursors, the metrics and
    /// `o365.meta.content_type` (the Management API's content types never start with `Graph.`).
    pub fn content_type(self) -> &'static str {
        match self {
            GraphFeed::SignIns => "Graph.SignIns",
            GraphFeed::DirectoryAudits => "Graph.DirectoryAudits",
            GraphFeed::MessageTrace => "Graph.MessageTrace",
            GraphFeed::ServiceHealth => "Graph.ServiceHealth",
        }
    }

    pub fn from_content_type(s: &str) -> Option<GraphFeed> {
        GraphFeed::ALL.into_iter().find(|f| f.content_type() == s)
    }

    /// The feed an `@odata.context` (`…/$metadata#auditLogs/signIns`) names.
    pub fn from_odata_context(context: &str) -> Option<GraphFeed> {
        let collection = context.rsplit_once('#')?.1;
        GraphFeed::ALL
            .into_iter()
            .find(|f| f.paths().iter().any(|p| collection.starts_with(p)))
    }

    /// The collections read, under `/v1.0/` (service health has two: issues and message center).
    pub fn paths(self) -> &'static [&'static str] {
        match self {
            GraphFeed::SignIns => &["auditLogs/signIns"],
            GraphFeed::DirectoryAudits => &["auditLogs/directoryAudits"],
            GraphFeed::MessageTrace => &["admin/exchange/tracing/messageTraces"],
            GraphFeed::ServiceHealth => &[
                "admin/serviceAnnouncement/issues",
                "admin/serviceAnnouncement/messages",
            ],
        }
    }

    /// The Microsoft Graph application permission reading collection `path` needs (admin consent).
    pub fn permission(path: &str) -> &'static str {
        match path {
            "auditLogs/signIns" | "auditLogs/directoryAudits" => "AuditLog.Read.All",
            "admin/exchange/tracing/messageTraces" => "ExchangeMessageTrace.Read.All",
            "admin/serviceAnnouncement/issues" => "ServiceHealth.Read.All",
            _ => "ServiceMessage.Read.All",
        }
    }

    /// The date-time property the time filter and the cursor use.
    pub fn time_property(self) -> &'static str {
        match self {
            GraphFeed::SignIns => "createdDateTime",
            GraphFeed::DirectoryAudits => "activityDateTime",
            GraphFeed::MessageTrace => "receivedDateTime",
            // Updated in place: an update is a new event, so the cursor follows the last change.
            GraphFeed::ServiceHealth => "lastModifiedDateTime",
        }
    }

    /// `$top` asked for (the documented maximum), or `None` where the page size is asked with
    /// `Prefer: odata.maxpagesize` (service health).
    pub fn top(self) -> Option<u32> {
        match self {
            GraphFeed::SignIns | GraphFeed::DirectoryAudits => Some(1000),
            GraphFeed::MessageTrace => Some(5000),
            GraphFeed::ServiceHealth => None,
        }
    }

    /// Longest window one listing covers. Message trace refuses more than 10 days; for the others
    /// a day keeps the cursor moving during a long backfill.
    pub fn max_window(self) -> TimeDelta {
        match self {
            GraphFeed::MessageTrace => TimeDelta::days(10),
            _ => TimeDelta::days(1),
        }
    }

    /// How far back the API reads (a few minutes inside, so a request never starts out of range):
    /// 30 days for sign-ins and audits (Entra ID P1/P2), 90 for message trace; service health keeps
    /// its items as long as they matter, 90 days bounds a first read.
    pub fn max_back(self) -> TimeDelta {
        let days = match self {
            GraphFeed::SignIns | GraphFeed::DirectoryAudits => 30,
            GraphFeed::MessageTrace | GraphFeed::ServiceHealth => 90,
        };
        TimeDelta::days(days) - TimeDelta::minutes(5)
    }

    /// Microsoft's documented request limit for one app in one tenant, as (requests, period):
    /// identity reports 5 / 10 s, message trace 100 / 5 min; service health has none documented,
    /// so the Graph-wide budget of the tenant applies.
    pub fn request_limit(self) -> Option<(u32, Duration)> {
        match self {
            GraphFeed::SignIns | GraphFeed::DirectoryAudits => Some((5, Duration::from_secs(10))),
            GraphFeed::MessageTrace => Some((100, Duration::from_secs(300))),
            GraphFeed::ServiceHealth => None,
        }
    }

    /// Where Microsoft offers the feed: message trace in the global cloud only.
    pub fn global_only(self) -> bool {
        self == GraphFeed::MessageTrace
    }

    /// What identifies one record of this feed, for dedup across re-read overlaps: the id
    /// (message trace: trace id + recipient, one row per recipient; service health: id + last
    /// change, an update is a new event). `None` when the record lacks it.
    pub fn identity(self, record: &Map<String, Value>) -> Option<String> {
        let text = |k: &str| record.get(k).and_then(Value::as_str);
        let id = text("id").filter(|s| !s.is_empty())?;
        match self {
            GraphFeed::SignIns | GraphFeed::DirectoryAudits => Some(id.to_owned()),
            GraphFeed::MessageTrace => Some(format!(
                "{id}|{}",
                text("recipientAddress").unwrap_or("").to_ascii_lowercase()
            )),
            GraphFeed::ServiceHealth => Some(format!(
                "{id}@{}",
                text("lastModifiedDateTime").unwrap_or("")
            )),
        }
    }
}

impl std::fmt::Display for GraphFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.config_name())
    }
}

/// The Graph host of the cloud whose Management API host is `resource` (`https://host[:port]`);
/// anything else (the emulator) serves Graph on the resource itself.
pub fn derive_graph_host(resource: &str) -> String {
    let host = resource.strip_prefix("https://").unwrap_or(resource);
    let host = host.split(':').next().unwrap_or(host);
    match host {
        "manage.office.com" | "manage-gcc.office.com" => "https://graph.microsoft.com".into(),
        "manage.office365.us" => "https://graph.microsoft.us".into(),
        "manage.protection.apps.mil" => "https://dod-graph.microsoft.us".into(),
        "manage.chinacloudapi.cn" => "https://microsoftgraph.chinacloudapi.cn".into(),
        _ => resource.to_owned(),
    }
}

/// Whether a Graph host is one of Microsoft's national clouds (no message trace there).
pub fn is_national_graph_host(graph_host: &str) -> bool {
    let host = graph_host.strip_prefix("https://").unwrap_or(graph_host);
    let host = host.split(':').next().unwrap_or(host);
    matches!(
        host,
        "graph.microsoft.us" | "dod-graph.microsoft.us" | "microsoftgraph.chinacloudapi.cn"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip() {
        for f in GraphFeed::ALL {
            assert_eq!(GraphFeed::from_config_name(f.config_name()), Some(f));
            assert_eq!(GraphFeed::from_content_type(f.content_type()), Some(f));
        }
    }

    #[test]
    fn odata_contexts() {
        assert_eq!(
            GraphFeed::from_odata_context(
                "https://graph.microsoft.com/v1.0/$metadata#admin/serviceAnnouncement/messages"
            ),
            Some(GraphFeed::ServiceHealth)
        );
        assert_eq!(GraphFeed::from_odata_context("x#users"), None);
    }

    #[test]
    fn identities() {
        let r = json!({"id": "T1", "recipientAddress": "A@x", "lastModifiedDateTime": "2026-11-30T00:00:00Z"});
        let r = r.as_object().unwrap();
        assert_eq!(GraphFeed::SignIns.identity(r).as_deref(), Some("T1"));
        assert_eq!(
            GraphFeed::MessageTrace.identity(r).as_deref(),
            Some("T1|a@x")
        );
        assert_eq!(
            GraphFeed::ServiceHealth.identity(r).as_deref(),
            Some("T1@2026-11-30T00:00:00Z")
        );
        assert_eq!(
            GraphFeed::SignIns.identity(json!({"id": ""}).as_object().unwrap()),
            None
        );
    }

    #[test]
    fn clouds() {
        assert_eq!(
            derive_graph_host("https://manage.office.com"),
            "https://graph.microsoft.com"
        );
        assert_eq!(
            derive_graph_host("https://manage.protection.apps.mil"),
            "https://dod-graph.microsoft.us"
        );
        assert_eq!(
            derive_graph_host("https://127.0.0.1:8444"),
            "https://127.0.0.1:8444"
        );
        assert!(is_national_graph_host("https://graph.microsoft.us"));
        assert!(!is_national_graph_host("https://graph.microsoft.com"));
    }
}
