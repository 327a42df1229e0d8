//! Faithful emulator of Microsoft's Office 365 Management Activity API and the Azure AD token
//! endpoint, on one HTTPS address, plus a control surface under `/_emulator/` for tests and demos.
//!
//! Modules, lowest first; each imports only modules before it in this list:
//! - this file: configuration (`EmulatorConfig`, `TenantSpec`), `EmulatorError`, `lock`;
//! - plain data and helpers: `error` (the API's error answer), `faults` (injected faults),
//!   `throttle` (per tenant/publisher quota), `generator` (synthetic records), `graph_records`
//!   (Graph's records), `graph_state` (what is kept of Graph), `tls` (CA and certificates);
//! - `state`: `Shared`, the state every handler works on, and the emulator clock;
//! - handlers: `auth` (token endpoints and token checks), `webhooks` (validation, delivery, retry,
//!   disable), then `api` (Management Activity API), `publish` (storing and announcing blobs),
//!   [`graph`] (Microsoft Graph: sign-ins, directory audits, message trace, service health),
//!   [`audit_query`] (Purview's Audit Log Query API, over the published blobs),
//!   `logs_ingestion` (Azure Monitor's Logs Ingestion API, the Sentinel output's destination), then
//!   `control` (`/_emulator`);
//! - `server` (start/stop and the router: the only module that imports every handler), [`cli`]
//!   (the `o365-emulator` binary and `o365-collector emulator`).
//!
//! `tests/architecture.rs` (workspace root) fails on an import loop among them. docs/emulator.md
//! explains how to drive the emulator with curl.
//!
//! A crate of its own so that the collector's product library does not carry it and it cannot lean on
//! the collector's types: it knows Microsoft's API only.

mod api;
pub mod audit_query;
mod auth;
pub mod cli;
mod control;
mod error;
mod faults;
mod generator;
pub mod graph;
mod graph_records;
mod graph_state;
mod logs_ingestion;
mod publish;
mod server;
mod state;
mod throttle;
mod tls;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use faults::{Faults, FaultsPatch};
pub use generator::ContentType;
pub use publish::{GenerateRequest, PublishRequest, Published};
pub use server::Emulator;
pub use state::{ApiRequest, Delivery, IngestedUpload, IngestionRequest};

/// Whether a `subscriptions/content` window, as a client sends it (`startTime`/`endTime` query
/// values, `None` when absent), is one Microsoft accepts at `now`: `Err((code, message))` with the
/// answer the API would give (AF20055, or AF20002 for an unreadable time). The very rule the
/// emulated API applies, for property tests of a client's window computation.
pub fn check_listing_window(
    start: Option<&str>,
    end: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), (String, String)> {
    api::listing_window(start, end, now)
        .map(|_| ())
        .map_err(|e| {
            let (code, message) = e.code_and_message();
            (code.to_owned(), message.to_owned())
        })
}

/// Errors of the emulator's own setup (never of the emulated API, which answers with HTTP errors).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("emulator configuration: {0}")]
    Config(String),
    #[error("emulator I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("emulator TLS: {0}")]
    Tls(String),
    /// A control-surface request the emulator refuses (unknown tenant, bad content type, ...).
    #[error("emulator request: {0}")]
    Request(String),
}

/// The demo tenant created when no tenant is configured (documented in docs/emulator.md).
pub const DEMO_TENANT_ID: &str = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f";
/// Client id of the demo application.
pub const DEMO_CLIENT_ID: &str = "0e4d5c6b-7a89-4b0c-9d1e-2f3a4b5c6d7e";
/// Client secret of the demo application (testing only).
pub const DEMO_CLIENT_SECRET: &str = "emulator-demo-secret";

/// One registered application in one tenant.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// PEM certificates accepted for `client_assertion`.
    pub certificates_pem: Vec<String>,
}

impl TenantSpec {
    /// An application authenticating with a client secret.
    pub fn with_secret(tenant_id: &str, client_id: &str, secret: &str) -> TenantSpec {
        TenantSpec {
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            client_secret: Some(secret.to_string()),
            certificates_pem: Vec::new(),
        }
    }

    /// The fixed demo tenant ([`DEMO_TENANT_ID`], [`DEMO_CLIENT_ID`], [`DEMO_CLIENT_SECRET`]).
    pub fn demo() -> TenantSpec {
        TenantSpec::with_secret(DEMO_TENANT_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    }
}

/// Emulator settings; `Default` is what tests start from.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    /// Registered applications. Empty: the demo tenant ([`TenantSpec::demo`]) is registered.
    pub tenants: Vec<TenantSpec>,
    /// Given certificate and key; `None` generates a CA and a server certificate.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub seed: u64,
    pub token_lifetime: Duration,
    pub content_delay: Duration,
    pub throttle_per_minute: u32,
    pub webhook_retry_base: Duration,
    /// Extra roots trusted when delivering to webhooks (the emulator always trusts its own CA).
    pub webhook_ca_pem: Vec<String>,
    /// Entries per `subscriptions/content` (and `notifications`) page before `NextPageUri`.
    pub page_size: usize,
    /// Timeout of one webhook validation or notification POST.
    pub webhook_timeout: Duration,
    /// Consecutive failed notification attempts after which the webhook is disabled.
    pub webhook_max_failures: u32,
    /// A webhook failing continuously for longer than this is disabled (whichever comes first).
    pub webhook_disable_after: Duration,
    /// Upper bound of the exponential back-off between notification retries.
    pub webhook_max_backoff: Duration,
    /// Content entries per notification POST at most.
    pub notification_batch: usize,
    /// Application roles per client id; absent: `ActivityFeed.Read`, `ActivityFeed.ReadDlp`,
    /// `ServiceHealth.Read`. A token without `ActivityFeed.Read` (or `ActivityFeed.ReadDlp` for
    /// DLP.All) gets AF10001.
    pub app_roles: HashMap<String, Vec<String>>,
    /// Extra names (DNS or IP) in the generated server certificate besides localhost/127.0.0.1/::1.
    pub server_names: Vec<String>,
    /// Base URL announced in contentUri/NextPageUri; default `https://{listen address}`.
    pub public_base_url: Option<String>,
    /// Data collection rules the emulated Logs Ingestion API (Azure Monitor) accepts uploads for,
    /// on the same address (`/dataCollectionRules/{id}/streams/{stream}`).
    pub data_collection_rules: Vec<DataCollectionRule>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tenants: Vec::new(),
            tls: None,
            seed: 1,
            token_lifetime: Duration::from_secs(3599),
            content_delay: Duration::ZERO,
            throttle_per_minute: 2000,
            webhook_retry_base: Duration::from_secs(1),
            webhook_ca_pem: Vec::new(),
            page_size: 200,
            webhook_timeout: Duration::from_secs(10),
            webhook_max_failures: 8,
            webhook_disable_after: Duration::from_secs(6 * 3600),
            webhook_max_backoff: Duration::from_secs(300),
            notification_batch: 100,
            app_roles: HashMap::new(),
            server_names: Vec::new(),
            public_base_url: None,
            data_collection_rules: Vec::new(),
        }
    }
}

/// One data collection rule of the emulated Logs Ingestion API: its immutable id, the input streams
/// it declares (`Custom-…`), and the applications (client ids) granted "Monitoring Metrics
/// Publisher" on it. Microsoft's DCR also transforms and routes to a table; the emulator keeps what
/// was accepted as sent.
#[derive(Debug, Clone)]
pub struct DataCollectionRule {
    pub immutable_id: String,
    pub streams: Vec<String>,
    pub publishers: Vec<String>,
}

/// The resource accepted besides the emulator's own base URL.
pub const MICROSOFT_RESOURCE: &str = "https://manage.office.com";
/// The global cloud's Graph audience; the emulator's own base URL is accepted too.
pub const MICROSOFT_GRAPH: &str = "https://graph.microsoft.com";
/// The global cloud's Azure Monitor audience (Logs Ingestion API tokens).
pub const AZURE_MONITOR: &str = "https://monitor.azure.com";

/// Locks a mutex, recovering from poisoning (a panicked handler must not wedge the emulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
