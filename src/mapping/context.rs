//! What a record is mapped for: the format and where the record came from.

use super::enrich::Enrichment;

/// Output shape chosen by `format:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    O365,
    Ecs,
    Raw,
}

/// Where a record came from (becomes `o365.meta.*`).
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub format: Format,
    pub tenant_id: &'a str,
    pub content_type: &'a str,
    pub content_id: &'a str,
    pub content_created: Option<&'a str>,
    /// RFC 3339 time the collector received the blob.
    pub received: &'a str,
    /// The tenant's configured `tenant_name` (format `ecs`: `organization.name`, `host.name`).
    pub tenant_name: Option<&'a str>,
    /// Loaded enrichment (format `ecs`: `user_agent.*`, `source.geo.*`, `source.as.*`).
    pub enrichment: Option<&'a Enrichment>,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Self {
            format: Format::O365,
            tenant_id: "",
            content_type: "",
            content_id: "",
            content_created: None,
            received: "",
            tenant_name: None,
            enrichment: None,
        }
    }
}
