//! The running emulator: start (certificates, listener, shared state), the router that mounts
//! every handler module, and stop. The top of the crate: the only module that imports them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::auth;
use super::faults::{Faults, FaultsPatch};
use super::generator::ContentType;
use super::graph::{GraphAccessRequest, GraphFaults, GraphGenerate, GraphRequest, GraphUpdate};
use super::publish::{GenerateRequest, Published};
use super::state::{App, Delivery, IngestedUpload, IngestionRequest, Shared};
use super::tls::{self, Ca};
use super::{EmulatorConfig, EmulatorError, TenantSpec, lock};

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

        let shared = Arc::new(Shared::new(
            cfg,
            base_url,
            ca,
            token_key,
            tenants,
            webhook_client,
        ));

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

    /// `POST /_emulator/publish` with `broken: true`: a blob whose every fetch answers a body
    /// cut in the middle of its array.
    pub async fn publish_broken(
        &self,
        tenant_id: &str,
        content_type: ContentType,
        records: Vec<Value>,
        created: Option<DateTime<Utc>>,
    ) -> Result<String, EmulatorError> {
        self.shared
            .publish_blob(tenant_id, content_type, records, created, true)
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

    /// Same as `POST /_emulator/tenant`: turns the tenant's unified audit log on or off.
    pub async fn set_audit_log(&self, tenant: &str, enabled: bool) -> Result<(), EmulatorError> {
        self.shared.set_audit_log(tenant, enabled)
    }

    /// Same as `POST /_emulator/app-roles`: the roles the client's next tokens carry.
    pub async fn set_app_roles(&self, client_id: &str, roles: &[&str]) {
        super::lock(&self.shared.admin).app_roles.insert(
            client_id.to_owned(),
            roles.iter().map(|r| r.to_string()).collect(),
        );
    }

    /// Publishes Graph records (`/_emulator/graph/generate`); returns their identities.
    pub async fn graph_generate(&self, req: GraphGenerate) -> Result<Vec<String>, EmulatorError> {
        self.shared.graph_generate(&req)
    }

    /// Updates a service health issue in place; returns its new identity.
    pub async fn graph_update(&self, req: GraphUpdate) -> Result<String, EmulatorError> {
        self.shared.graph_update(&req)
    }

    /// Sets what a tenant may read from Graph (licence, permissions, service principal).
    pub async fn graph_access(&self, req: GraphAccessRequest) {
        self.shared.graph_access(req)
    }

    /// Replaces the Graph faults.
    pub async fn graph_faults(&self, faults: GraphFaults) {
        self.shared.graph_faults(faults)
    }

    /// Graph record identities ever published for `tenant`, by feed config name.
    pub async fn graph_published(&self, tenant: &str) -> HashMap<String, Vec<String>> {
        self.shared.graph_published(tenant)
    }

    /// Every Graph request answered so far.
    pub async fn graph_requests(&self) -> Vec<GraphRequest> {
        self.shared.graph_requests()
    }

    /// Same as `POST /_emulator/graph/audit-search`: the record limit and how long a query takes.
    pub async fn audit_search(&self, settings: super::audit_query::AuditSearch) {
        self.shared.set_audit_search(settings)
    }

    /// Same as `GET /_emulator/graph/audit-search`: every audit log query, its status and polls.
    pub async fn audit_queries(&self) -> Vec<super::audit_query::AuditQueryState> {
        self.shared.audit_queries()
    }

    /// What the emulated Logs Ingestion API accepted (`GET /_emulator/logs-ingestion/uploads`).
    pub fn ingested(&self) -> Vec<IngestedUpload> {
        lock(&self.shared.ingestion).uploads.clone()
    }

    /// Records accepted by the Logs Ingestion API so far (cheap enough to poll).
    pub fn ingested_records(&self) -> usize {
        lock(&self.shared.ingestion)
            .uploads
            .iter()
            .map(|u| u.records)
            .sum()
    }

    /// Every Logs Ingestion upload judged, oldest first (`GET /_emulator/logs-ingestion/requests`).
    pub fn ingestion_requests(&self) -> Vec<IngestionRequest> {
        lock(&self.shared.ingestion)
            .requests
            .iter()
            .cloned()
            .collect()
    }

    /// `{base}/dataCollectionRules/{id}/streams/{stream}?api-version=2023-01-01`: where uploads go.
    pub fn logs_ingestion_url(&self, dcr_immutable_id: &str, stream: &str) -> String {
        format!(
            "{}/dataCollectionRules/{dcr_immutable_id}/streams/{stream}?api-version=2023-01-01",
            self.shared.base_url
        )
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
        .merge(super::audit_query::routes())
        .merge(super::logs_ingestion::routes())
        .fallback(super::api::not_found)
        .with_state(shared)
}
