//! Assembles the collector from a [`Config`]: store, outputs, API clients, the public listener,
//! workers and the subscription keeper; owns shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::graph::client::GraphClient;
use crate::graph::runtime::GraphRuntime;
use crate::mgmt_api::{MAX_CALLS_IN_FLIGHT, ManagementClient, http_client, uri::ResourceBase};
use crate::output::{AnyOutput, OutputError};
use crate::pipeline::gate::OutputGate;
use crate::pipeline::graph_puller;
use crate::pipeline::tenant::{ListingLease, TenantHealth};
use crate::pipeline::tenant_lease;
use crate::pipeline::worker::Workers;
use crate::pipeline::{TenantRuntime, Tenants, lifecycle, puller};
use crate::server::{self, ServerError};
use crate::store::StoreConfig;
use crate::store::{AnyStore, EmbeddedStore, PostgresStore, Store, StoreError};
use crate::telemetry::Counters;
use crate::webhook::{self, WebhookState, check};

/// First retry delay of a blob, and first pause of an output that went down; both double.
const OUTPUT_RETRY_BASE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Not a `source`: the text is already in the message, and `{:#}` would print it twice.
    #[error("last_value_storage: {0}")]
    Store(StoreError),
    /// The PostgreSQL store (`store: postgres`).
    #[error("store: {0}")]
    SharedStore(StoreError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("outbound HTTP: {0}")]
    Http(String),
    #[error("tenant {tenant}: resource: {reason}")]
    Resource { tenant: String, reason: String },
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("enrichment: {0}")]
    Enrichment(#[from] crate::mapping::enrich::EnrichError),
}

/// A started collector.
pub struct App {
    /// The public listener's bound address (push mode only).
    pub public_addr: Option<SocketAddr>,
    /// The admin listener's bound address.
    pub admin_addr: SocketAddr,
    pub counters: Arc<Counters>,
    pub store: Arc<AnyStore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl App {
    /// Opens everything and starts the listener, the workers and the subscription keeper.
    pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<App, AppError> {
        server::install_crypto_provider();
        let store = Arc::new(open_store(&cfg).await?);
        let counters = Arc::new(Counters::default());
        let http = http_client(&cfg.outbound, store.replica()).map_err(AppError::Http)?;
        let call_slots = Arc::new(tokio::sync::Semaphore::new(MAX_CALLS_IN_FLIGHT));

        let shared = store.replica().is_some();
        let wake = Arc::new(Notify::new());
        let mut outputs: HashMap<String, (Arc<AnyOutput>, Arc<OutputGate>)> = HashMap::new();
        let mut tenants: Tenants = HashMap::new();
        for t in &cfg.tenants {
            let (output, gate) = match outputs.get(&t.output) {
                Some(o) => o.clone(),
                None => {
                    let Some(ocfg) = cfg.outputs.get(&t.output) else {
                        return Err(AppError::Http(format!(
                            "output {} is not configured",
                            t.output
                        )));
                    };
                    let o = Arc::new(AnyOutput::open(&t.output, ocfg)?);
                    let gate = Arc::new(OutputGate::new(OUTPUT_RETRY_BASE, wake.clone()));
                    outputs.insert(t.output.clone(), (o.clone(), gate.clone()));
                    (o, gate)
                }
            };
            let client = ManagementClient::new(http.clone(), t)
                .map_err(|e| AppError::Resource {
                    tenant: t.tenant_id.clone(),
                    reason: e.to_string(),
                })?
                .with_call_slots(call_slots.clone())
                .with_counters(counters.clone());
            let graph = if t.graph.feeds.is_empty() {
                None
            } else {
                let client = GraphClient::new(http.clone(), t)
                    .map_err(|e| AppError::Resource {
                        tenant: t.tenant_id.clone(),
                        reason: format!("graph_host: {e}"),
                    })?
                    .with_call_slots(call_slots.clone())
                    .with_counters(counters.clone());
                Some(GraphRuntime::new(client, &t.graph.feeds))
            };
            // Built for every tenant of the global cloud: cheap until a backfill asks for a token.
            let audit_search = if crate::graph::audit_search::available(&t.graph.host) {
                GraphClient::new(http.clone(), t).ok().map(|c| {
                    c.with_call_slots(call_slots.clone())
                        .with_counters(counters.clone())
                })
            } else {
                None
            };
            tenants.insert(
                t.tenant_id.to_ascii_lowercase(),
                Arc::new(TenantRuntime {
                    cfg: t.clone(),
                    client,
                    output,
                    output_name: t.output.clone(),
                    gate,
                    paused: Default::default(),
                    graph,
                    audit_search,
                    listing: if shared {
                        ListingLease::shared()
                    } else {
                        ListingLease::default()
                    },
                    health: TenantHealth::new(counters.clone()),
                    start_waits: Default::default(),
                }),
            );
        }
        let tenants = Arc::new(tenants);
        let tasks = TaskTracker::new();

        // Both listeners hold every connection to the same limits, the cap kept below the
        // open-file limit (raised to the hard limit first).
        let fd_limit = server::raise_fd_limit();
        let limits = server::ConnLimits {
            max_connections: server::connection_cap(cfg.listen.max_connections, fd_limit),
            header_timeout: cfg.listen.header_timeout,
            idle_timeout: cfg.listen.idle_timeout,
        };
        if limits.max_connections < cfg.listen.max_connections {
            warn!(
                configured = cfg.listen.max_connections,
                max_connections = limits.max_connections,
                fd_limit,
                "listen.max_connections lowered to stay below the open-file limit"
            );
        }
        let mut public_addr = None;
        if let Some(hook) = &cfg.webhook {
            let rules = check::Rules {
                auth_id: hook.auth_id.clone(),
                tenants: cfg
                    .tenants
                    .iter()
                    .map(|t| {
                        let base = ResourceBase::new(&t.resource, &t.tenant_id).map_err(|e| {
                            AppError::Resource {
                                tenant: t.tenant_id.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                        Ok((
                            t.tenant_id.to_ascii_lowercase(),
                            check::TenantRule {
                                client_id: t.client_id.clone(),
                                base,
                                content_types: t.content_types.clone(),
                            },
                        ))
                    })
                    .collect::<Result<_, AppError>>()?,
            };
            let state = Arc::new(WebhookState {
                rules,
                store: store.clone(),
                wake: wake.clone(),
                counters: counters.clone(),
                intake: webhook::intake::Intake::new(
                    hook.max_body_bytes,
                    hook.max_inflight_bytes,
                    hook.body_timeout,
                ),
                log: crate::log_limit::LogLimiter::new(crate::log_limit::LOG_EVERY),
            });
            let router = webhook::forwarded::trust(
                webhook::router(state, &hook.path),
                cfg.listen.trusted_proxies.clone(),
            );
            let tls = match &cfg.tls {
                Some(t) => {
                    let (tls, watch) = server::reloading_tls_config(
                        &t.cert,
                        &t.key,
                        t.reload_every,
                        shutdown.clone(),
                    )
                    .await?;
                    tasks.spawn(async move {
                        let _ = watch.await;
                    });
                    Some(tls)
                }
                None => None,
            };
            let running =
                server::serve(cfg.listen.public, router, tls, &limits, shutdown.clone()).await?;
            info!(addr = %running.addr, path = %hook.path, tls = cfg.tls.is_some(),
                max_connections = limits.max_connections, fd_limit, "webhook listener ready");
            public_addr = Some(running.addr);
            let task = running.task;
            tasks.spawn(async move {
                let _ = task.await;
            });
        }
        // Pull mode lists every `pull.interval`; push mode reconciles every `pull.reconcile_every`
        // (and at start-up, which closes the gap of any downtime).
        let every = if cfg.webhook.is_some() {
            cfg.pull.reconcile_every
        } else {
            cfg.pull.interval
        };
        if cfg.webhook.is_none() {
            info!(every_s = every.as_secs(), "no webhook.address: pull mode");
        }
        let reconcile_now = Arc::new(Notify::new());
        tasks.spawn(crate::store::retention::run(
            store.clone(),
            cfg.retention.clone(),
            counters.clone(),
            shutdown.clone(),
        ));
        if let StoreConfig::Postgres(p) = &cfg.store {
            tasks.spawn(crate::store::clock::watch(
                store.clone(),
                counters.clone(),
                shutdown.clone(),
            ));
            tasks.spawn(tenant_lease::keep(
                tenants.clone(),
                store.clone(),
                p.tenant_lease,
                reconcile_now.clone(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(puller::run(
            tenants.clone(),
            store.clone(),
            every,
            cfg.pull.interval,
            cfg.pipeline.queue_high_water,
            counters.clone(),
            wake.clone(),
            reconcile_now.clone(),
            shutdown.clone(),
        ));

        // One listing task per tenant × Graph feed: a refused or throttled feed holds no other.
        for t in tenants.values() {
            for feed in &t.cfg.graph.feeds {
                tasks.spawn(graph_puller::run(
                    t.clone(),
                    *feed,
                    store.clone(),
                    cfg.pull.interval,
                    cfg.pipeline.queue_high_water,
                    counters.clone(),
                    wake.clone(),
                    shutdown.clone(),
                ));
            }
        }

        let enrichment = if cfg.enrichment.is_enabled() {
            let cfg = cfg.enrichment.clone();
            // Compiling the user-agent patterns and reading the databases is blocking work.
            let e =
                tokio::task::spawn_blocking(move || crate::mapping::enrich::Enrichment::new(&cfg))
                    .await
                    .map_err(|e| AppError::Http(format!("enrichment set-up failed: {e}")))??;
            let e = Arc::new(e);
            tasks.spawn(e.clone().watch(shutdown.clone()));
            Some(e)
        } else {
            None
        };
        let admin_wake = wake.clone();
        let workers = Arc::new(Workers {
            enrichment,
            store: store.clone(),
            tenants: tenants.clone(),
            cfg: cfg.pipeline.clone(),
            wake,
            counters: counters.clone(),
            shutdown: shutdown.clone(),
            retry_base: OUTPUT_RETRY_BASE,
            record_dedup_window: cfg.retention.record_dedup_window,
            ledger: cfg.completeness.record && crate::store::ledger::enabled(),
        });
        for i in 0..cfg.pipeline.workers.max(1) {
            tasks.spawn(workers.clone().run(i));
        }
        tasks.spawn(lifecycle::keep(
            tenants.clone(),
            store.clone(),
            cfg.webhook.clone(),
            lifecycle::RECHECK_EVERY.min(cfg.pull.reconcile_every),
            counters.clone(),
            reconcile_now.clone(),
            shutdown.clone(),
        ));

        let admin_state = Arc::new(AdminState {
            store: store.clone(),
            tenants,
            counters: counters.clone(),
            webhook: cfg.webhook.clone(),
            token: cfg.admin.token.clone(),
            wake: admin_wake,
            reconcile_now,
            started: std::time::SystemTime::now(),
            completeness: cfg.completeness.clone(),
            completeness_metrics: Default::default(),
        });
        // The admin listener's few clients (operators, the CLI, a metrics scraper) get a small cap
        // of their own, so that both listeners together stay below the open-file limit.
        let admin_limits = server::ConnLimits {
            max_connections: limits.max_connections.min(server::ADMIN_MAX_CONNECTIONS),
            ..limits.clone()
        };
        let admin = server::serve(
            cfg.listen.admin,
            admin::router(admin_state),
            None,
            &admin_limits,
            shutdown.clone(),
        )
        .await?;
        info!(addr = %admin.addr, "admin listener ready");
        let admin_addr = admin.addr;
        let task = admin.task;
        tasks.spawn(async move {
            let _ = task.await;
        });
        info!(
            tenants = cfg.tenants.len(),
            workers = cfg.pipeline.workers,
            "collector started"
        );
        Ok(App {
            public_addr,
            admin_addr,
            counters,
            store,
            shutdown,
            tasks,
        })
    }

    /// Asks everything to stop.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every task has ended (after [`App::stop`] or the shutdown token).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Opens the store `store:` chose: the embedded file, or the shared database (migrated).
async fn open_store(cfg: &Config) -> Result<AnyStore, AppError> {
    match &cfg.store {
        StoreConfig::Embedded => EmbeddedStore::open(&cfg.last_value_storage)
            .map(AnyStore::Embedded)
            .map_err(AppError::Store),
        StoreConfig::Postgres(p) => {
            let store = PostgresStore::connect(p)
                .await
                .map_err(AppError::SharedStore)?;
            info!(
                replica = store.owner(),
                "connected to the shared PostgreSQL store"
            );
            Ok(AnyStore::Postgres(store))
        }
    }
}

/// Runs until SIGINT or SIGTERM, then drains (listener first, then workers) and returns.
///
/// Boxed here so that the whole collector's async code is compiled once, in this crate, and not
/// again in each crate that awaits it (the binary): see the README's Build profiles.
pub fn run(cfg: Config) -> Pin<Box<dyn Future<Output = Result<(), AppError>>>> {
    Box::pin(run_until_signal(cfg))
}

async fn run_until_signal(cfg: Config) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    let app = App::start(cfg, shutdown.clone()).await?;
    wait_for_signal().await;
    info!("shutdown requested: no new notifications; finishing blobs in flight");
    app.stop();
    app.wait().await;
    info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes, systemd).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
