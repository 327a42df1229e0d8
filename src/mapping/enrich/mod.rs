//! Optional enrichment of `format: ecs` events, as Elastic's o365 ingest pipeline does it:
//! `user_agent.*` parsed from `user_agent.original` ([`user_agent`]), `source.geo.*` and
//! `source.as.*` looked up for `source.ip` in MaxMind databases ([`geoip`]), and the configured
//! `tenant_name` as `organization.name` / `host.name`.
//!
//! [`apply`] runs inside `map_record`, after the ECS fields are in place, and reads them (so it
//! follows whatever the ECS mapping puts in `user_agent.original` and `source.ip`). It is a pure
//! function of the event and the loaded databases; the only state it touches is the user-agent
//! cache, which does not change answers. The databases are swapped by [`Enrichment::reload`]
//! (called every `enrichment.reload_every` by [`Enrichment::watch`]) when their files change.

pub mod geoip;
pub mod user_agent;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::event::{Entries, Out};
use crate::core::settings::{Section, de};
use geoip::{GeoDb, GeoError, Kind};
use user_agent::{UaCache, UaError, UaParser};

/// `enrichment:` in the configuration. Everything off by default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichmentConfig {
    /// Parse `user_agent.original` into `user_agent.*`.
    #[serde(deserialize_with = "de::flag")]
    pub user_agent: bool,
    /// A MaxMind City database (GeoIP2/GeoLite2-City layout) for `source.geo.*`.
    #[serde(deserialize_with = "de::opt::path")]
    pub geoip_city: Option<PathBuf>,
    /// A MaxMind ASN database (GeoLite2-ASN layout) for `source.as.*`.
    #[serde(deserialize_with = "de::opt::path")]
    pub geoip_asn: Option<PathBuf>,
    /// How often the database files are checked for a new version.
    #[serde(deserialize_with = "de::duration")]
    pub reload_every: Duration,
}

/// Default of `enrichment.reload_every`.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(60);

impl Default for EnrichmentConfig {
    fn default() -> Self {
        EnrichmentConfig {
            user_agent: false,
            geoip_city: None,
            geoip_asn: None,
            reload_every: DEFAULT_RELOAD_EVERY,
        }
    }
}

impl EnrichmentConfig {
    pub fn is_enabled(&self) -> bool {
        self.user_agent || self.geoip_city.is_some() || self.geoip_asn.is_some()
    }

    /// Checks the settings; `ecs_used`: whether any tenant has `format: ecs` (the only format
    /// enriched).
    pub fn check(&mut self, s: &mut Section, ecs_used: bool) {
        for (key, path, kind) in [
            ("geoip_city", &mut self.geoip_city, Kind::City),
            ("geoip_asn", &mut self.geoip_asn, Kind::Asn),
        ] {
            if let Some(p) = path
                && !geoip_database(s, key, p, kind)
            {
                *path = None;
            }
        }
        if self.reload_every < Duration::from_secs(1) {
            s.problem(
                "reload_every",
                "is shorter than 1s",
                "use a check interval such as 60s (the default)",
            );
        }
        if self.is_enabled()
            && !ecs_used
            && let Some(key) = ["user_agent", "geoip_city", "geoip_asn"]
                .into_iter()
                .find(|k| s.given(k))
        {
            s.problem(
                key,
                "applies to `format: ecs` only, and no tenant uses it",
                "set `format: ecs` for the tenants to enrich, or remove enrichment:",
            );
        }
    }
}

/// A MaxMind database of the expected kind (a City database given as the ASN one is a likely
/// slip); false when it cannot be used at all.
fn geoip_database(s: &mut Section, key: &str, path: &std::path::Path, kind: Kind) -> bool {
    let Some(bytes) = s.read(key, path) else {
        return false;
    };
    match maxminddb::Reader::from_source(bytes) {
        Ok(r) => {
            let t = r.metadata().database_type.to_ascii_lowercase();
            let (fits, expected) = match kind {
                Kind::City => (t.contains("city") || t.contains("enterprise"), "City"),
                Kind::Asn => (t.contains("asn") || t.contains("isp"), "ASN"),
            };
            if !fits {
                s.problem(
                    key,
                    format!(
                        "names a {} database, not a {expected} one",
                        r.metadata().database_type
                    ),
                    "geoip_city takes a City database, geoip_asn an ASN database",
                );
            }
            true
        }
        Err(e) => {
            s.problem(
                key,
                format!(
                    "names {}, which is not a MaxMind database ({e})",
                    path.display()
                ),
                "give a MaxMind DB file (.mmdb), e.g. GeoLite2-City.mmdb or GeoLite2-ASN.mmdb",
            );
            false
        }
    }
}

/// Why the enrichment could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("user-agent patterns: {0}")]
    UserAgent(#[from] UaError),
    #[error(transparent)]
    Geo(#[from] GeoError),
}

/// The loaded parsers and databases, shared by all workers.
pub struct Enrichment {
    user_agent: Option<UaCache>,
    city: Option<GeoDb>,
    asn: Option<GeoDb>,
    reload_every: Duration,
}

impl std::fmt::Debug for Enrichment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrichment")
            .field("user_agent", &self.user_agent.is_some())
            .field("city", &self.city)
            .field("asn", &self.asn)
            .finish()
    }
}

impl Enrichment {
    /// Compiles the user-agent patterns and opens the databases the configuration names.
    pub fn new(cfg: &EnrichmentConfig) -> Result<Self, EnrichError> {
        let user_agent = if cfg.user_agent {
            Some(UaCache::new(UaParser::new(user_agent::BUNDLED_REGEXES)?))
        } else {
            None
        };
        let open = |kind, path: &Option<PathBuf>| -> Result<Option<GeoDb>, GeoError> {
            path.as_deref().map(|p| GeoDb::open(kind, p)).transpose()
        };
        Ok(Enrichment {
            user_agent,
            city: open(Kind::City, &cfg.geoip_city)?,
            asn: open(Kind::Asn, &cfg.geoip_asn)?,
            reload_every: cfg.reload_every,
        })
    }

    /// Swaps in the database files that changed; a file that cannot be read is logged (once per
    /// change) and its previous copy stays in use.
    pub fn reload(&self) {
        for db in self.city.iter().chain(self.asn.iter()) {
            match db.reload_if_changed() {
                Ok(true) => info!(path = %db.path().display(), "GeoIP database reloaded"),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "GeoIP database not reloaded; the previous copy stays in use")
                }
            }
        }
    }

    /// Checks the database files every `reload_every` until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        if self.city.is_none() && self.asn.is_none() {
            return;
        }
        // A zero period would make tokio's interval panic.
        let mut tick = tokio::time::interval(self.reload_every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let this = self.clone();
            // Reading and verifying a database is blocking file and CPU work.
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }

    /// Adds the enrichment keys to an event in the making.
    fn add<'r>(&self, ev: &mut impl Out<'r>) {
        let mut found: Vec<(&'static str, Value)> = Vec::new();
        if let Some(ua) = &self.user_agent
            && let Some(original) = ev.get("user_agent.original").and_then(Value::as_str)
        {
            found.extend(ua.get(original).iter().cloned());
        }
        if (self.city.is_some() || self.asn.is_some())
            && let Some(ip) = ev
                .get("source.ip")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
        {
            for db in self.city.iter().chain(self.asn.iter()) {
                db.lookup(ip, &mut found);
            }
        }
        // The ECS mapping writes none of these keys (only `user_agent.original`): no lookup needed.
        for (k, v) in found {
            ev.put_value(k, v);
        }
    }
}

/// The enrichment step of `format: ecs` (see the module doc). `tenant_name` applies to records of
/// the tenant `tenant_id` only (as Elastic's tenant map, keyed by organization id).
pub fn apply(
    ev: &mut Entries,
    tenant_id: &str,
    tenant_name: Option<&str>,
    enrichment: Option<&Enrichment>,
) {
    apply_to(ev, tenant_id, tenant_name, enrichment);
}

/// [`apply`] to any unsorted event.
pub(crate) fn apply_to<'r>(
    ev: &mut impl Out<'r>,
    tenant_id: &str,
    tenant_name: Option<&str>,
    enrichment: Option<&Enrichment>,
) {
    if let Some(name) = tenant_name.filter(|n| !n.is_empty()) {
        let own = ev
            .get("organization.id")
            .and_then(Value::as_str)
            .is_some_and(|id| !tenant_id.is_empty() && id.eq_ignore_ascii_case(tenant_id));
        if own {
            ev.set("organization.name", Value::from(name));
            ev.set("host.name", Value::from(name));
        }
    }
    if let Some(e) = enrichment {
        e.add(ev);
    }
}
