//! The emulator's shared state (`Shared`: tenants, subscriptions, blobs, logs, faults, the clock)
//! and the plain data it is made of. Every handler module works on it, so it imports none of them:
//! only the data modules below it (`throttle`, `faults`, `generator`, `graph_state`, `tls`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::faults::{Faults, FaultsPatch};
use super::generator::{ContentType, Generator, Prng};
use super::graph_state::GraphState;
use super::throttle::Throttle;
use super::tls::Ca;
use super::{EmulatorConfig, lock};

/// Microsoft keeps content for 7 days after it became available.
pub(crate) const RETENTION: chrono::Duration = chrono::Duration::days(7);

/// One content blob: serialised once at publish time, served from memory.
#[derive(Debug)]
pub(crate) struct Blob {
    pub tenant: String,
    pub content_type: ContentType,
    pub content_id: String,
    pub seq: u64,
    pub created: DateTime<Utc>,
    pub body: Bytes,
    pub record_ids: Vec<String>,
    /// Served damaged on every fetch: the body ends in the middle of the array (a blob that
    /// always fails, published with `broken: true`).
    pub broken: bool,
}

impl Blob {
    pub fn expiration(&self) -> DateTime<Utc> {
        self.created + RETENTION
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookStatus {
    Enabled,
    Disabled,
}

/// One entry announced to a webhook.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub blob: Arc<Blob>,
}

#[derive(Debug)]
pub(crate) struct Webhook {
    pub address: String,
    pub auth_id: Option<String>,
    pub expiration: Option<DateTime<Utc>>,
    pub status: WebhookStatus,
    /// Increases with every (re)registration so an old delivery task knows it is obsolete.
    pub generation: u64,
    pub tx: mpsc::UnboundedSender<Notice>,
    pub cancel: CancellationToken,
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub enabled: bool,
    pub webhook: Option<Webhook>,
}

/// A notification attempt as `subscriptions/notifications` reports it.
#[derive(Debug, Clone)]
pub(crate) struct NotificationLog {
    pub tenant: String,
    pub blob: Arc<Blob>,
    pub sent: DateTime<Utc>,
    pub success: bool,
}

#[derive(Default)]
pub(crate) struct State {
    pub blobs: HashMap<String, Arc<Blob>>,
    /// Per tenant and content type, ordered by (created, seq).
    pub feeds: HashMap<(String, ContentType), Vec<Arc<Blob>>>,
    pub subs: HashMap<(String, ContentType), Subscription>,
    /// Emulator-clock time of the last accepted `subscriptions/start`, per tenant and content type
    /// (kept after a stop: stopping does not reset Microsoft's waiting period).
    pub last_start: HashMap<(String, ContentType), DateTime<Utc>>,
    pub notifications: Vec<NotificationLog>,
    pub deliveries: Vec<Delivery>,
    /// Blob bodies served, by contentId (how often a collector downloaded each blob).
    pub fetches: HashMap<String, u64>,
}

/// Faults plus the seeded dice that make error rates reproducible.
pub(crate) struct FaultState {
    pub faults: Faults,
    pub rng: Prng,
}

/// A registered certificate for client assertions.
pub(crate) struct RegisteredCert {
    pub x5t: String,
    pub x5t_s256: String,
    pub key: jsonwebtoken::DecodingKey,
}

pub(crate) struct App {
    pub client_id: String,
    pub secret: Option<String>,
    pub certs: Vec<RegisteredCert>,
}

pub(crate) struct Shared {
    pub cfg: EmulatorConfig,
    pub base_url: String,
    pub ca: Ca,
    /// HMAC key of the access tokens this emulator issues.
    pub token_key: Vec<u8>,
    /// Lower-case tenant id → its applications.
    pub tenants: HashMap<String, Vec<App>>,
    clock_offset_ms: AtomicI64,
    seq: AtomicU64,
    pub state: Mutex<State>,
    /// Microsoft Graph's collections and controls (`graph_state.rs`, served by `graph.rs`).
    pub graph: Mutex<GraphState>,
    pub generator: Mutex<Generator>,
    pub faults: Mutex<FaultState>,
    /// What the emulated Logs Ingestion API accepted and every upload it judged.
    pub ingestion: Mutex<IngestionState>,
    /// The latest Management Activity API calls, oldest first (`GET /_emulator/requests`).
    pub requests: Mutex<std::collections::VecDeque<ApiRequest>>,
    pub throttle: Throttle,
    /// What an admin changed in a tenant through the control surface (audit log, app roles).
    pub admin: Mutex<TenantAdmin>,
    pub webhook_client: reqwest::Client,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
}

/// Calls kept in the request log; older ones are dropped.
pub(crate) const REQUEST_LOG_LIMIT: usize = 100_000;

/// One Management Activity API call as it arrived (before any check), for tests that assert who
/// called what when (e.g. which replica listed a tenant).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ApiRequest {
    /// Wall-clock time of arrival (not the emulator clock, so it compares with the caller's).
    pub at: DateTime<Utc>,
    pub tenant_id: String,
    /// Microsoft's operation name: `StartSubscription`, `ListContent`, `RetrieveContent`, …
    pub operation: String,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
}

/// Bytes of accepted Logs Ingestion bodies kept for tests (decompressed); uploads past it are
/// still judged and logged, and counted in `IngestionState::dropped`, but not kept.
pub(crate) const INGESTED_KEEP_BYTES: usize = 1 << 30;

/// The emulated Logs Ingestion API's memory: accepted uploads (bounded by
/// [`INGESTED_KEEP_BYTES`]) and the request log (bounded by [`REQUEST_LOG_LIMIT`]).
#[derive(Default)]
pub(crate) struct IngestionState {
    pub uploads: Vec<IngestedUpload>,
    pub kept_bytes: usize,
    pub dropped: u64,
    pub requests: std::collections::VecDeque<IngestionRequest>,
}

/// One upload the Logs Ingestion API accepted (answered 204).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestedUpload {
    pub dcr_immutable_id: String,
    pub stream: String,
    /// `appid` of the token.
    pub client_id: String,
    /// The JSON array as sent, after gzip was undone.
    pub body: String,
    pub records: usize,
}

/// One Logs Ingestion API call as judged: when, where to, what came and what was answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestionRequest {
    /// Wall-clock time of arrival.
    pub at: DateTime<Utc>,
    pub dcr_immutable_id: String,
    pub stream: String,
    pub content_encoding: Option<String>,
    /// Body bytes on the wire, and after gzip was undone (`None` when it could not be).
    pub wire_bytes: usize,
    pub json_bytes: Option<usize>,
    pub status: u16,
    /// The `error.code` of a refusal.
    pub error_code: Option<String>,
    pub retry_after: Option<u64>,
}

/// One webhook call (validation or notification attempt) as `GET /_emulator/deliveries` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// Emulator clock at the end of the attempt.
    pub time: DateTime<Utc>,
    /// `validation` or `notification`.
    pub kind: String,
    pub tenant_id: String,
    pub content_type: String,
    pub address: String,
    pub content_ids: Vec<String>,
    /// 1 for the first try of a batch, then 2, 3, … for its retries.
    pub attempt: u32,
    /// HTTP status answered (or injected); `None` on timeout/connection error.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub success: bool,
    pub duration_ms: u64,
}

/// A tenant admin's settings, changed through `POST /_emulator/tenant` and `/_emulator/app-roles`.
#[derive(Debug, Default)]
pub(crate) struct TenantAdmin {
    /// Lower-case tenant ids whose unified audit log is turned off.
    pub audit_log_off: std::collections::HashSet<String>,
    /// Application roles per client id granted since start (replace `EmulatorConfig::app_roles`).
    pub app_roles: HashMap<String, Vec<String>>,
}

impl Shared {
    /// The state of a freshly started emulator: empty feeds, the configured quota and seed.
    pub fn new(
        cfg: EmulatorConfig,
        base_url: String,
        ca: Ca,
        token_key: Vec<u8>,
        tenants: HashMap<String, Vec<App>>,
        webhook_client: reqwest::Client,
    ) -> Shared {
        let faults = Faults {
            throttle_per_minute: cfg.throttle_per_minute,
            ..Faults::default()
        };
        Shared {
            throttle: Throttle::new(cfg.throttle_per_minute),
            admin: Mutex::new(TenantAdmin::default()),
            generator: Mutex::new(Generator::new(cfg.seed)),
            faults: Mutex::new(FaultState {
                faults,
                rng: Prng::new(cfg.seed.wrapping_add(0xFA17)),
            }),
            cfg,
            base_url,
            ca,
            token_key,
            tenants,
            clock_offset_ms: AtomicI64::new(0),
            requests: Mutex::new(std::collections::VecDeque::new()),
            ingestion: Mutex::new(IngestionState::default()),
            seq: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            graph: Mutex::new(Default::default()),
            webhook_client,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// The next blob sequence number (1, 2, …): orders blobs and numbers their content ids.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The emulator clock: system time plus the offset moved by `/_emulator/clock`.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    pub fn advance_clock(&self, by: Duration) -> DateTime<Utc> {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2);
        self.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.now()
    }

    pub fn clock_offset_secs(&self) -> f64 {
        self.clock_offset_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn tenant_known(&self, tenant: &str) -> bool {
        self.tenants.contains_key(&tenant.to_ascii_lowercase())
    }

    /// The canonical (registered) spelling of a tenant id.
    pub fn canonical_tenant(&self, tenant: &str) -> Option<String> {
        let lower = tenant.to_ascii_lowercase();
        self.tenants.contains_key(&lower).then_some(lower)
    }

    pub fn content_uri(&self, tenant: &str, content_id: &str) -> String {
        let base = lock(&self.faults)
            .faults
            .foreign_content_uri
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.base_url.clone());
        format!(
            "{}/api/v1.0/{tenant}/activity/feed/audit/{content_id}",
            base.trim_end_matches('/')
        )
    }

    pub fn set_faults(&self, patch: FaultsPatch) -> Faults {
        let mut f = lock(&self.faults);
        f.faults.apply(patch);
        self.throttle.set_limit(f.faults.throttle_per_minute);
        f.faults.clone()
    }

    /// Whether `tenant`'s unified audit log is on (it is unless turned off).
    pub fn audit_log_on(&self, tenant: &str) -> bool {
        !lock(&self.admin)
            .audit_log_off
            .contains(&tenant.to_ascii_lowercase())
    }

    /// Turns `tenant`'s unified audit log on or off; refused for an unknown tenant.
    pub fn set_audit_log(&self, tenant: &str, on: bool) -> Result<(), super::EmulatorError> {
        let Some(t) = self.canonical_tenant(tenant) else {
            return Err(super::EmulatorError::Request(format!(
                "unknown tenant {tenant}"
            )));
        };
        let mut admin = lock(&self.admin);
        match on {
            true => admin.audit_log_off.remove(&t),
            false => admin.audit_log_off.insert(t),
        };
        Ok(())
    }

    /// The roles a token for `client_id` carries: granted through the control surface, else
    /// configured, else `default`.
    pub fn app_roles(&self, client_id: &str, default: &[&str]) -> Vec<String> {
        if let Some(r) = lock(&self.admin).app_roles.get(client_id) {
            return r.clone();
        }
        self.cfg
            .app_roles
            .get(client_id)
            .cloned()
            .unwrap_or_else(|| default.iter().map(|r| r.to_string()).collect())
    }

    pub fn log_delivery(&self, d: Delivery) {
        lock(&self.state).deliveries.push(d);
    }
}
