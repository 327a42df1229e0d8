//! The running emulator: shared state, the emulator clock, publishing, the router and start/stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::{Delivery, Faults, FaultsPatch, GenerateRequest, Published};
use super::generator::{ContentType, Generator, Prng, TenantFacts};
use super::throttle::Throttle;
use super::tls::{self, Ca};
use super::{EmulatorConfig, EmulatorError, TenantSpec, auth, webhooks};

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
    /// Microsoft Graph's collections and controls (`graph.rs`).
    pub graph: Mutex<super::graph::GraphState>,
    pub generator: Mutex<Generator>,
    pub faults: Mutex<FaultState>,
    /// The latest Management Activity API calls, oldest first (`GET /_emulator/requests`).
    pub requests: Mutex<std::collections::VecDeque<ApiRequest>>,
    pub throttle: Throttle,
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

/// Locks a mutex, recovering from poisoning (a panicked handler must not wedge the emulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
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

    /// Publishes one blob of exactly `records` and schedules its announcement.
    pub fn publish(
        self: &Arc<Self>,
        tenant: &str,
        content_type: ContentType,
        records: Vec<Value>,
        created: Option<DateTime<Utc>>,
    ) -> Result<String, EmulatorError> {
        let (body, record_ids) = serialise(&records)?;
        self.publish_serialised(tenant, content_type, body, record_ids, created)
    }

    /// Publishes an already serialised blob (the bytes served as they are).
    fn publish_serialised(
        self: &Arc<Self>,
        tenant: &str,
        content_type: ContentType,
        body: Bytes,
        record_ids: Vec<String>,
        created: Option<DateTime<Utc>>,
    ) -> Result<String, EmulatorError> {
        let tenant = self
            .canonical_tenant(tenant)
            .ok_or_else(|| EmulatorError::Request(format!("unknown tenant {tenant}")))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let created = created.unwrap_or_else(|| self.now());
        let stamp = format!(
            "{}{:06}",
            created.format("%Y%m%d%H%M%S%3f"),
            seq % 1_000_000
        );
        let camel = content_type.as_str().replace('.', "_");
        let content_id = format!(
            "{stamp}${stamp}${}${camel}$emu{:04}",
            content_type.id_piece(),
            seq / 1_000_000
        );
        let blob = Arc::new(Blob {
            tenant: tenant.clone(),
            content_type,
            content_id: content_id.clone(),
            seq,
            created,
            body,
            record_ids,
        });
        {
            let mut st = lock(&self.state);
            st.blobs.insert(content_id.clone(), blob.clone());
            let feed = st.feeds.entry((tenant, content_type)).or_default();
            let at = feed.partition_point(|b| (b.created, b.seq) <= (blob.created, blob.seq));
            feed.insert(at, blob.clone());
        }
        let delay = self.cfg.content_delay;
        if delay.is_zero() {
            webhooks::announce(self, blob);
        } else {
            let shared = self.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = shared.cancel.cancelled() => {}
                    _ = tokio::time::sleep(delay) => webhooks::announce(&shared, blob),
                }
            });
        }
        Ok(content_id)
    }

    /// Generates `records` synthetic records spread over `blobs` blobs. Blobs are built on all
    /// cores, each from its own seed drawn in order, so the result depends only on the seed and the
    /// sequence of requests. Blocking: call it outside the async executor for large requests.
    pub fn generate(self: &Arc<Self>, req: &GenerateRequest) -> Result<Vec<String>, EmulatorError> {
        let ct = ContentType::parse(&req.content_type).ok_or_else(|| {
            EmulatorError::Request(format!("invalid content type {}", req.content_type))
        })?;
        let tenant = self
            .canonical_tenant(&req.tenant_id)
            .ok_or_else(|| EmulatorError::Request(format!("unknown tenant {}", req.tenant_id)))?;
        let blobs = req.blobs.max(1);
        let created = req.created.unwrap_or_else(|| self.now());
        let seeds: Vec<u64> = {
            let mut g = lock(&self.generator);
            (0..blobs).map(|_| g.next_seed()).collect()
        };
        let sizes: Vec<usize> = (0..blobs)
            .map(|i| req.records / blobs + usize::from(i < req.records % blobs))
            .collect();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(blobs);
        let facts = TenantFacts::new(&tenant);
        let mut built: Vec<Option<Result<SerialisedBlob, EmulatorError>>> =
            (0..blobs).map(|_| None).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (seeds, sizes, facts) = (&seeds, &sizes, &facts);
                    scope.spawn(move || {
                        (t..seeds.len())
                            .step_by(threads)
                            .map(|i| {
                                let mut g = Generator::new(seeds[i]);
                                let records = (0..sizes[i]).map(|_| g.record(ct, facts, created));
                                (i, serialise_each(records, sizes[i]))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(done) => {
                        for (i, r) in done {
                            built[i] = Some(r);
                        }
                    }
                    Err(_) => tracing::error!("a generator thread panicked"),
                }
            }
        });
        let mut ids = Vec::with_capacity(blobs);
        for slot in built {
            let (body, record_ids) =
                slot.ok_or_else(|| EmulatorError::Request("record generation failed".into()))??;
            ids.push(self.publish_serialised(&tenant, ct, body, record_ids, Some(created))?);
        }
        Ok(ids)
    }

    pub fn published(&self, tenant: &str, content_type: Option<ContentType>) -> Published {
        let tenant = tenant.to_ascii_lowercase();
        let st = lock(&self.state);
        let mut blobs: Vec<&Arc<Blob>> = st
            .blobs
            .values()
            .filter(|b| b.tenant == tenant && content_type.is_none_or(|c| c == b.content_type))
            .collect();
        blobs.sort_by_key(|b| b.seq);
        Published {
            blobs: blobs.len(),
            records: blobs.iter().map(|b| b.record_ids.len()).sum(),
            record_ids: blobs
                .iter()
                .flat_map(|b| b.record_ids.iter().cloned())
                .collect(),
            content_ids: blobs.iter().map(|b| b.content_id.clone()).collect(),
            content_fetches: blobs
                .iter()
                .map(|b| st.fetches.get(&b.content_id).copied().unwrap_or(0))
                .sum(),
        }
    }

    pub fn set_faults(&self, patch: FaultsPatch) -> Faults {
        let mut f = lock(&self.faults);
        f.faults.apply(patch);
        self.throttle.set_limit(f.faults.throttle_per_minute);
        f.faults.clone()
    }

    pub fn log_delivery(&self, d: Delivery) {
        lock(&self.state).deliveries.push(d);
    }
}

/// A blob's bytes and the `Id`s of its records.
type SerialisedBlob = (Bytes, Vec<String>);

/// Serialises records one by one as they are generated, so a blob of a million records costs its
/// bytes, not a tree of every record at once.
fn serialise_each(
    records: impl Iterator<Item = Value>,
    count: usize,
) -> Result<SerialisedBlob, EmulatorError> {
    let mut body = Vec::with_capacity(count.saturating_mul(1024).min(1 << 30) + 2);
    let mut record_ids = Vec::with_capacity(count);
    body.push(b'[');
    for (i, r) in records.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        if let Some(id) = r.get("Id").and_then(Value::as_str) {
            record_ids.push(id.to_string());
        }
        serde_json::to_writer(&mut body, &r)
            .map_err(|e| EmulatorError::Request(format!("records do not serialise: {e}")))?;
    }
    body.push(b']');
    body.shrink_to_fit();
    Ok((Bytes::from(body), record_ids))
}

/// Serialises a blob once; returns the bytes and the record `Id`s.
fn serialise(records: &[Value]) -> Result<SerialisedBlob, EmulatorError> {
    let record_ids = records
        .iter()
        .filter_map(|r| r.get("Id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let body = serde_json::to_vec(records)
        .map_err(|e| EmulatorError::Request(format!("records do not serialise: {e}")))?;
    Ok((Bytes::from(body), record_ids))
}

/// A running emulator.
pub struct Emulator {
    shared: Arc<Shared>,
    handle: axum_server::Handle<std::net::SocketAddr>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut cfg = cfg;
        if cfg.tenants.is_empty() {
            cfg.tenants.push(TenantSpec::demo());
        }
        if cfg.page_size == 0 || cfg.notification_batch == 0 {
            return Err(EmulatorError::Config(
                "page_size and notification_batch must be positive".into(),
            ));
        }
        let mut tenants: HashMap<String, Vec<App>> = HashMap::new();
        for spec in &cfg.tenants {
            if uuid::Uuid::parse_str(&spec.tenant_id).is_err() {
                return Err(EmulatorError::Config(format!(
                    "tenant id {} is not a GUID",
                    spec.tenant_id
                )));
            }
            let certs = spec
                .certificates_pem
                .iter()
                .map(|pem| auth::register_certificate(pem))
                .collect::<Result<Vec<_>, _>>()?;
            tenants
                .entry(spec.tenant_id.to_ascii_lowercase())
                .or_default()
                .push(App {
                    client_id: spec.client_id.clone(),
                    secret: spec.client_secret.clone(),
                    certs,
                });
        }

        let ca = Ca::generate()?;
        let (cert_pem, key_pem) = match &cfg.tls {
            Some((cert, key)) => (
                tokio::fs::read_to_string(cert).await?,
                tokio::fs::read_to_string(key).await?,
            ),
            None => {
                let mut names: Vec<String> =
                    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
                let ip = cfg.listen.ip();
                if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
                    names.push(ip.to_string());
                }
                names.extend(cfg.server_names.iter().cloned());
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                ca.issue(&refs)?
            }
        };
        let server_tls = tls::server_config(&cert_pem, &key_pem)?;

        let mut roots: Vec<&str> = vec![ca.cert_pem.as_str()];
        roots.extend(cfg.webhook_ca_pem.iter().map(String::as_str));
        let webhook_client = tls::reqwest_client(&roots, Some(cfg.webhook_timeout))?;

        let listener = std::net::TcpListener::bind(cfg.listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let base_url = match &cfg.public_base_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let ip = if local.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    local.ip()
                };
                match ip {
                    std::net::IpAddr::V4(v4) => format!("https://{v4}:{}", local.port()),
                    std::net::IpAddr::V6(v6) => format!("https://[{v6}]:{}", local.port()),
                }
            }
        };

        let mut token_key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut token_key)
            .map_err(|_| EmulatorError::Config("no randomness for the token key".into()))?;

        let faults = Faults {
            throttle_per_minute: cfg.throttle_per_minute,
            ..Faults::default()
        };
        let shared = Arc::new(Shared {
            throttle: Throttle::new(cfg.throttle_per_minute),
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
            seq: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            graph: Mutex::new(Default::default()),
            webhook_client,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });

        let app = router(shared.clone());
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(server_tls),
        )?
        .handle(handle.clone());
        let join = tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        tracing::info!(base_url = %shared.base_url, "emulator listening");
        Ok(Emulator {
            shared,
            handle,
            server: Some(join),
        })
    }

    /// `https://127.0.0.1:PORT` — the resource, the authority and the contentUri host.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// PEM of the CA that signed the emulator's certificate. With `EmulatorConfig::tls` set, the
    /// served certificate is yours and this CA only signs `issue_server_cert` certificates.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca.cert_pem
    }

    /// A server certificate for `names`, signed by the emulator's CA (which the emulator trusts for
    /// webhook delivery): returns (cert PEM, key PEM).
    pub fn issue_server_cert(&self, names: &[&str]) -> Result<(String, String), EmulatorError> {
        self.shared.ca.issue(names)
    }

    /// The registered applications (the demo tenant when none was configured).
    pub fn tenants(&self) -> &[TenantSpec] {
        &self.shared.cfg.tenants
    }

    /// `{base}/{tenant}/oauth2/token` (v1); append `/v2.0` before `/token` for v2.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/token", self.shared.base_url)
    }

    /// `{base}/api/v1.0/{tenant}/activity/feed` — the root of the Management Activity API.
    pub fn feed_url(&self, tenant: &str) -> String {
        format!("{}/api/v1.0/{tenant}/activity/feed", self.shared.base_url)
    }

    /// A reqwest client trusting the emulator's CA (HTTP/1.1, no redirects).
    pub fn client(&self) -> Result<reqwest::Client, EmulatorError> {
        tls::reqwest_client(&[self.ca_pem()], None)
    }

    /// The emulator clock (system time plus the advanced offset).
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    /// Moves the emulator clock forward (ages content, expires tokens). Returns the new time.
    pub async fn advance_clock(&self, by: Duration) -> DateTime<Utc> {
        self.shared.advance_clock(by)
    }

    /// Same as `POST /_emulator/generate`: returns the content ids.
    pub async fn generate(&self, req: GenerateRequest) -> Result<Vec<String>, EmulatorError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.generate(&req))
            .await
            .map_err(|e| EmulatorError::Request(format!("generation task failed: {e}")))?
    }

    /// Same as `POST /_emulator/publish`: one blob of exactly `records`; returns its content id.
    pub async fn publish(
        &self,
        tenant_id: &str,
        content_type: ContentType,
        records: Vec<Value>,
        created: Option<DateTime<Utc>>,
    ) -> Result<String, EmulatorError> {
        self.shared
            .publish(tenant_id, content_type, records, created)
    }

    /// Same as `GET /_emulator/published`.
    pub async fn published(&self, tenant_id: &str) -> Published {
        self.shared.published(tenant_id, None)
    }

    /// Content downloads answered 200 so far, all blobs together: `published().content_fetches`
    /// without copying every record id (cheap enough to poll).
    pub async fn content_fetches(&self) -> u64 {
        lock(&self.shared.state).fetches.values().sum()
    }

    /// Same as `GET /_emulator/deliveries`.
    pub async fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.state).deliveries.clone()
    }

    /// Same as `POST /_emulator/faults`: applies the given changes, returns the faults now in force.
    pub async fn set_faults(&self, patch: FaultsPatch) -> Faults {
        self.shared.set_faults(patch)
    }

    /// Stops accepting connections, stops webhook deliveries and waits for the server to end.
    /// Publishes Graph records (`/_emulator/graph/generate`); returns their identities.
    pub async fn graph_generate(
        &self,
        req: super::graph::GraphGenerate,
    ) -> Result<Vec<String>, EmulatorError> {
        self.shared.graph_generate(&req)
    }

    /// Updates a service health issue in place; returns its new identity.
    pub async fn graph_update(
        &self,
        req: super::graph::GraphUpdate,
    ) -> Result<String, EmulatorError> {
        self.shared.graph_update(&req)
    }

    /// Sets what a tenant may read from Graph (licence, permissions, service principal).
    pub async fn graph_access(&self, req: super::graph::GraphAccessRequest) {
        self.shared.graph_access(req)
    }

    /// Replaces the Graph faults.
    pub async fn graph_faults(&self, faults: super::graph::GraphFaults) {
        self.shared.graph_faults(faults)
    }

    /// Graph record identities ever published for `tenant`, by feed config name.
    pub async fn graph_published(&self, tenant: &str) -> HashMap<String, Vec<String>> {
        self.shared.graph_published(tenant)
    }

    /// Every Graph request answered so far.
    pub async fn graph_requests(&self) -> Vec<super::graph::GraphRequest> {
        self.shared.graph_requests()
    }

    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        self.handle.graceful_shutdown(Some(Duration::from_secs(2)));
        if let Some(join) = self.server.take() {
            let _ = join.await;
        }
        self.shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait()).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        if self.server.is_some() {
            self.handle.shutdown();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(auth::routes())
        .merge(super::api::routes())
        .merge(super::control::routes())
        .merge(super::graph::routes())
        .fallback(super::api::not_found)
        .with_state(shared)
}
