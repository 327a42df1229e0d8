//! Record → event mapping into the `o365.*` schema.
//! STUB: the mapping work replaces this file; the public signatures below are the contract.

use serde_json::{Map, Value};

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
}

/// A problem found while mapping one record; the rest of the record is still mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub field: String,
    pub problem: String,
}

/// The mapped event: a flat JSON object with dotted keys.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub event: Map<String, Value>,
    pub issues: Vec<Issue>,
}

/// Maps one raw record. Pure and total: never panics.
pub fn map_record(raw: &Value, ctx: &Context<'_>) -> Mapped {
    let mut event = Map::new();
    if let Value::Object(o) = raw {
        for (k, v) in o {
            event.insert(format!("o365.audit.{k}"), v.clone());
        }
    }
    event.insert("o365.meta.tenant_id".into(), ctx.tenant_id.into());
    event.insert("o365.meta.content_type".into(), ctx.content_type.into());
    event.insert("o365.meta.content_id".into(), ctx.content_id.into());
    Mapped {
        event,
        issues: Vec::new(),
    }
}

pub mod cli {
    /// `o365-collector map` flags.
    #[derive(clap::Args, Debug, Clone)]
    pub struct MapArgs {
        #[arg(long, value_enum, default_value_t = super::Format::O365)]
        pub format: super::Format,
        /// JSON lines, a JSON array or a Purview CSV export; stdin when absent.
        pub file: Option<std::path::PathBuf>,
    }

    /// Runs `map`; returns the process exit code.
    pub fn run(_args: MapArgs) -> std::io::Result<i32> {
        Ok(2)
    }
}
