//! What the emulator keeps of Microsoft Graph: each tenant's collections, published identities,
//! access, faults, quotas and the request log. Plain data held by the shared state (`state`); the
//! handlers that fill and serve it are in `graph`, which re-exports the public types.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::generator::Prng;

/// One stored record of a collection.
pub(crate) struct Stored {
    /// The collection's time property (sign-in time, …, last change).
    pub time: DateTime<Utc>,
    pub seq: u64,
    pub value: Value,
}

/// What a tenant may read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphAccess {
    /// No Entra ID P1/P2: sign-ins answer 403 (non-premium).
    #[serde(default)]
    pub unlicensed: bool,
    /// Feeds (`sign_ins`, …) whose permission was not granted: 403 Authorization_RequestDenied.
    #[serde(default)]
    pub denied: Vec<String>,
    /// The message trace service principal does not exist: message trace answers 401.
    #[serde(default)]
    pub trace_principal_missing: bool,
}

/// A forced 429 of one tenant × feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphThrottle {
    pub tenant_id: String,
    pub feed: String,
    /// How many of the next requests get 429.
    pub next: u32,
    #[serde(default = "one")]
    pub retry_after_secs: u64,
}

fn one() -> u64 {
    1
}

/// `POST /_emulator/graph/faults` (replaces the Graph faults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphFaults {
    #[serde(default)]
    pub throttle: Vec<GraphThrottle>,
    /// Origin (`https://evil.example`) put in every `@odata.nextLink` instead of ours.
    #[serde(default)]
    pub foreign_next_link: Option<String>,
    /// Records per page at most, below what `$top` asks (forces paging in tests).
    #[serde(default)]
    pub page_size: Option<usize>,
    /// Requests per 10 s per tenant before the identity reports answer 429 (Microsoft: 5).
    #[serde(default)]
    pub identity_per_10s: Option<usize>,
    /// Requests per 5 min per tenant before message trace answers 429 (Microsoft: 100).
    #[serde(default)]
    pub trace_per_5min: Option<usize>,
}

/// One answered Graph request, as `GET /_emulator/graph/requests` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphRequest {
    pub tenant_id: String,
    pub path: String,
    pub status: u16,
    /// The time bounds of `$filter` (ge/gt, le/lt), as asked.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The emulator clock when it was answered.
    pub at: DateTime<Utc>,
    /// Whether an `Authorization` header came with it.
    pub authorized: bool,
}

/// Everything kept of Graph, behind `Shared::graph`.
#[derive(Default)]
pub(crate) struct GraphState {
    /// (lower tenant, collection path) → records.
    pub collections: HashMap<(String, &'static str), Vec<Stored>>,
    /// (lower tenant, feed config name) → identities ever published, in order.
    pub published: HashMap<(String, String), Vec<String>>,
    pub access: HashMap<String, GraphAccess>,
    pub faults: GraphFaults,
    /// (lower tenant, quota group) → request times in the current window.
    pub quotas: HashMap<(String, &'static str), VecDeque<DateTime<Utc>>>,
    pub requests: Vec<GraphRequest>,
    pub seq: u64,
    /// Numbers service health ids.
    pub serial: u64,
    pub rng: Option<Prng>,
    /// Audit log queries, oldest first (at most [`MAX_AUDIT_QUERIES`]: the oldest are dropped).
    pub audit_queries: VecDeque<AuditQuery>,
    pub audit: AuditSearchSettings,
}

/// Audit log queries kept; older ones are forgotten (Microsoft keeps them a while, then drops them).
pub(crate) const MAX_AUDIT_QUERIES: usize = 10_000;

/// One audit log query (`POST /v1.0/security/auditLog/queries`), kept for its lifetime.
#[derive(Debug, Clone)]
pub(crate) struct AuditQuery {
    pub id: String,
    /// Lower-case tenant that created it (another tenant's token gets 404).
    pub tenant: String,
    pub display_name: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `recordTypeFilters` as sent (camelCase names); empty: every type.
    pub record_types: Vec<String>,
    /// Emulator clock at creation: the status moves on from here.
    pub created: DateTime<Utc>,
    /// How long this query takes (the setting when it was created).
    pub takes: chrono::TimeDelta,
    pub record_limit: usize,
    /// Evaluated once, when it first reads as succeeded: later publications do not change it.
    pub records: Option<std::sync::Arc<Vec<Value>>>,
    /// More records matched than `record_limit`.
    pub exceeded: bool,
    /// `GET …/queries/{id}` answered (status polls).
    pub polls: u32,
}

/// The Audit Log Query API's settings (`POST /_emulator/graph/audit-search`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditSearchSettings {
    /// Records one query returns at most (`recordCountLimit`); more set `isRecordCountLimitExceeded`.
    #[serde(default = "default_record_limit")]
    pub record_limit: usize,
    /// Emulator-clock time from creation until a query has succeeded (a third of it notStarted,
    /// the rest running).
    #[serde(default = "default_ready_after")]
    pub ready_after_secs: u64,
}

/// Purview's audit search caps one search at 50,000 records (the same cap the portal's searches
/// and `Search-UnifiedAuditLog` sessions have).
pub const AUDIT_RECORD_LIMIT: usize = 50_000;

fn default_record_limit() -> usize {
    AUDIT_RECORD_LIMIT
}

fn default_ready_after() -> u64 {
    2
}

impl Default for AuditSearchSettings {
    fn default() -> Self {
        AuditSearchSettings {
            record_limit: AUDIT_RECORD_LIMIT,
            ready_after_secs: default_ready_after(),
        }
    }
}

/// A query as `GET /_emulator/graph/audit-search` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditQueryView {
    pub id: String,
    pub tenant_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub status: String,
    pub polls: u32,
    pub exceeded: bool,
}
