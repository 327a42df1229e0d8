//! `o365-collector demo`: the emulator and the collector in one process, over real HTTPS, with
//! certificates made on the fly. Publishes synthetic activity, waits until every record reached the
//! output file exactly once, and prints one summary line (audit and Graph rates apart) and the next
//! step. Graph's request quota is raised [`DEMO_GRAPH_SCALE`]-fold on both sides, so the demo shows
//! the pipeline's pace, not Microsoft's quota.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use o365_emulator::{DEMO_CLIENT_ID, DEMO_TENANT_ID, Emulator, EmulatorConfig, TenantSpec};
use tokio_util::sync::CancellationToken;

use crate::admin::config::AdminConfig;
use crate::app::App;
use crate::config::{Config, Credential, TenantConfig};
use crate::core::Secret;
use crate::graph::feed::GraphConfig;
use crate::mapping::Format;
use crate::mgmt_api::OutboundConfig;
use crate::mgmt_api::wire::CONTENT_TYPES;
use crate::output::{FileOutputConfig, OutputConfig};
use crate::pipeline::config::{PipelineConfig, PullConfig};
use crate::server::config::{ListenConfig, TlsConfig};
use crate::store::StoreConfig;
use crate::telemetry::Counters;
use crate::webhook::config::WebhookConfig;

/// Graph's request quota in the demo, in multiples of Microsoft's (identity reports 5 requests per
/// 10 s, message trace 100 per 5 min): the emulator's and the collector's alike.
pub const DEMO_GRAPH_SCALE: u32 = 100;

/// What a user does after the demo, printed after the summary.
pub const NEXT_STEP: &str = "demo: next: collect a real tenant: README.md, \"Running against a real tenant\" \
     (app registration with ActivityFeed.Read, a webhook address Microsoft can reach), then \
     o365-collector check-config --config config.yaml and o365-collector run --config config.yaml";

/// `demo` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Records to publish, spread over the five content types.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Records per content blob.
    #[arg(long, default_value_t = 1_000)]
    pub blob_records: u64,
    /// Working directory (wiped at start: it only holds demo data).
    #[arg(long, default_value = "./var/demo")]
    pub dir: PathBuf,
    /// Workers fetching blobs at once.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::O365)]
    pub format: Format,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Setup(String),
    #[error("demo: {0}")]
    Incomplete(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> DemoError + '_ {
    move |e| DemoError::Setup(format!("{what}: {e}"))
}

/// The result line's numbers.
#[derive(Debug, Clone)]
pub struct Summary {
    pub published: u64,
    pub delivered_once: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// From publishing to the last record delivered (or the timeout).
    pub elapsed: Duration,
    /// Audit records (Management Activity API) delivered, and when the last one was.
    pub audit: Part,
    /// Graph records delivered, and when the last one was.
    pub graph: Part,
    pub events_file: PathBuf,
}

/// One source's share of a demo: records delivered and the time from publishing to the last.
#[derive(Debug, Clone, Copy, Default)]
pub struct Part {
    pub records: u64,
    pub elapsed: Duration,
}

impl Part {
    fn text(&self, what: &str) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "{} {what} records in {secs:.2} s ({:.0} records/s)",
            self.records,
            self.records as f64 / secs.max(1e-9)
        )
    }
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "demo: {} of {} records delivered exactly once ({} missing, {} duplicated) in {:.2} s: {}, {}; events in {}",
            self.delivered_once,
            self.published,
            self.missing,
            self.duplicated,
            self.elapsed.as_secs_f64(),
            self.audit.text("audit"),
            self.graph.text("Graph"),
            self.events_file.display()
        )
    }

    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.delivered_once == self.published
    }
}

/// Runs the whole demo and returns its summary (boxed: compiled here once, see [`crate::app::run`]).
pub fn run(args: DemoArgs) -> Pin<Box<dyn Future<Output = Result<Summary, DemoError>>>> {
    Box::pin(run_demo(args))
}

async fn run_demo(args: DemoArgs) -> Result<Summary, DemoError> {
    crate::server::install_crypto_provider();
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).map_err(setup("cannot wipe the demo directory"))?;
    }
    let certs = args.dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(setup("cannot create the demo directory"))?;

    let secret = format!("demo-{}", uuid::Uuid::new_v4());
    let scale = DEMO_GRAPH_SCALE as usize;
    let emu = Emulator::start(EmulatorConfig {
        tenants: vec![TenantSpec {
            tenant_id: DEMO_TENANT_ID.into(),
            client_id: DEMO_CLIENT_ID.into(),
            client_secret: Some(secret.clone()),
            certificates_pem: Vec::new(),
        }],
        webhook_retry_base: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .await
    .map_err(setup("emulator"))?;
    emu.graph_faults(o365_emulator::graph::GraphFaults {
        identity_per_10s: Some(5 * scale),
        trace_per_5min: Some(100 * scale),
        ..Default::default()
    })
    .await;
    eprintln!("demo: emulator at {}", emu.base_url());

    let (cert_pem, key_pem) = emu
        .issue_server_cert(&["127.0.0.1", "localhost"])
        .map_err(setup("certificate"))?;
    let files = [
        ("ca.pem", emu.ca_pem()),
        ("server.pem", &cert_pem),
        ("server.key", &key_pem),
    ];
    for (name, pem) in files {
        std::fs::write(certs.join(name), pem).map_err(setup("cannot write certificates"))?;
    }

    let port = free_port().map_err(setup("no free port"))?;
    let events_file = args.dir.join("events.ndjson");
    let cfg = demo_config(&args, emu.base_url(), &certs, port, &secret, &events_file);
    let shutdown = CancellationToken::new();
    let app = App::start(cfg, shutdown.clone())
        .await
        .map_err(setup("collector"))?;
    eprintln!("demo: collector webhook at https://127.0.0.1:{port}/o365/webhook");

    let result = drive(&args, &emu, &app.counters, &events_file).await;
    app.stop();
    app.wait().await;
    emu.shutdown().await;
    result
}

fn demo_config(
    args: &DemoArgs,
    base: &str,
    certs: &Path,
    port: u16,
    secret: &str,
    events: &Path,
) -> Config {
    let mut outputs = BTreeMap::new();
    outputs.insert(
        "demo".to_string(),
        OutputConfig::File(FileOutputConfig {
            path: events.to_path_buf(),
            dedup_window_bytes: 64 << 20,
            ..FileOutputConfig::default()
        }),
    );
    Config {
        tenants: vec![TenantConfig {
            tenant_id: DEMO_TENANT_ID.into(),
            client_id: DEMO_CLIENT_ID.into(),
            credential: Credential::Secret(Secret::new(secret)),
            resource: base.to_string(),
            authority: base.to_string(),
            publisher_id: DEMO_TENANT_ID.into(),
            content_types: CONTENT_TYPES.iter().map(|s| s.to_string()).collect(),
            output: "demo".into(),
            encoding: encoding_rs::UTF_8,
            format: args.format,
            request_budget: Default::default(),
            tenant_name: None,
            // Every Graph feed too, on the emulator (it serves Graph on its own address).
            graph: GraphConfig {
                feeds: crate::graph::GraphFeed::ALL.to_vec(),
                host: base.to_string(),
                backfill: Duration::from_secs(24 * 3600),
                limit_scale: DEMO_GRAPH_SCALE,
            },
        }],
        webhook: Some(WebhookConfig {
            address: format!("https://127.0.0.1:{port}/o365/webhook"),
            auth_id: Secret::new(format!("auth-{}", uuid::Uuid::new_v4())),
            path: "/o365/webhook".into(),
            ..WebhookConfig::default()
        }),
        listen: ListenConfig {
            public: ([127, 0, 0, 1], port).into(),
            admin: ([127, 0, 0, 1], 0).into(),
            ..ListenConfig::default()
        },
        tls: Some(TlsConfig {
            cert: certs.join("server.pem"),
            key: certs.join("server.key"),
            ..TlsConfig::default()
        }),
        admin: AdminConfig::default(),
        pull: PullConfig {
            interval: Duration::from_secs(1), // push mode: only the Graph feeds list every interval
            reconcile_every: Duration::from_secs(900),
        },
        outbound: OutboundConfig {
            ca_file: Some(certs.join("ca.pem")),
            ..OutboundConfig::default()
        },
        outputs,
        last_value_storage: args.dir.join("last_value_storage"),
        store: StoreConfig::Embedded,
        retention: Default::default(),
        pipeline: PipelineConfig {
            workers: args.workers,
            ..PipelineConfig::default()
        },
        enrichment: Default::default(),
        completeness: Default::default(),
    }
}

/// Publishes, waits for delivery, and checks the output file against what was published.
async fn drive(
    args: &DemoArgs,
    emu: &Emulator,
    counters: &Arc<Counters>,
    events: &Path,
) -> Result<Summary, DemoError> {
    let http = control_client(emu)?;
    let base = emu.base_url().to_string();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);

    // Every subscription must be validated before content is announced.
    wait_until(deadline, || {
        Counters::get(&counters.validations) >= CONTENT_TYPES.len() as u64
    })
    .await
    .map_err(|_| {
        DemoError::Incomplete("the webhook subscriptions were not validated in time".into())
    })?;

    let started = Instant::now();
    let per_type = args.records / CONTENT_TYPES.len() as u64;
    for (i, ct) in CONTENT_TYPES.iter().enumerate() {
        let records = per_type
            + if i == 0 {
                args.records % CONTENT_TYPES.len() as u64
            } else {
                0
            };
        if records == 0 {
            continue;
        }
        let blobs = records.div_ceil(args.blob_records.max(1));
        let body = serde_json::json!({"tenant_id": DEMO_TENANT_ID, "content_type": ct, "records": records, "blobs": blobs});
        let resp = http
            .post(format!("{base}/_emulator/generate"))
            .json(&body)
            .send()
            .await
            .map_err(setup("emulator generate"))?;
        if !resp.status().is_success() {
            return Err(DemoError::Setup(format!(
                "emulator generate answered {}",
                resp.status()
            )));
        }
    }
    // The Graph feeds: a twentieth of --records (at least 1) per feed, over the 10 minutes that
    // ended 2 s ago (a listing's window ends at a whole second: the next round finds them all).
    let per_feed = graph_records_per_feed(args.records);
    let to = chrono::Utc::now() - chrono::TimeDelta::seconds(2);
    let from = to - chrono::TimeDelta::minutes(10);
    let mut graph_rows = 0u64;
    for feed in crate::graph::GraphFeed::ALL {
        // Message trace: one row per recipient, so messages of two recipients (and one of a single
        // recipient for an odd count) make exactly `per_feed` rows.
        let batches = if feed == crate::graph::GraphFeed::MessageTrace {
            vec![(per_feed / 2, Some(2)), (per_feed % 2, Some(1))]
        } else {
            vec![(per_feed, None)]
        };
        for (records, recipients) in batches.into_iter().filter(|(n, _)| *n > 0) {
            let ids = emu
                .graph_generate(o365_emulator::graph::GraphGenerate {
                    tenant_id: DEMO_TENANT_ID.into(),
                    feed: feed.config_name().into(),
                    records: records as usize,
                    from: Some(from),
                    to: Some(to),
                    recipients,
                })
                .await
                .map_err(setup("emulator Graph generate"))?;
            graph_rows += ids.len() as u64;
        }
    }
    let total = args.records + graph_rows;
    eprintln!(
        "demo: published {} audit records and {graph_rows} Graph records; waiting for delivery",
        args.records
    );

    let mut last_report = Instant::now();
    let mut audit = Part::default();
    let mut graph = Part::default();
    loop {
        let delivered = Counters::get(&counters.records_delivered);
        let (audit_now, graph_now) = delivered_by_source(counters);
        if audit_now > audit.records {
            audit = Part {
                records: audit_now,
                elapsed: started.elapsed(),
            };
        }
        if graph_now > graph.records {
            graph = Part {
                records: graph_now,
                elapsed: started.elapsed(),
            };
        }
        if delivered >= total {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "demo: {delivered}/{total} records delivered ({:.0} records/s)",
                delivered as f64 / secs.max(1e-9)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();

    let published: serde_json::Value = http
        .get(format!("{base}/_emulator/published"))
        .query(&[("tenant_id", DEMO_TENANT_ID)])
        .send()
        .await
        .map_err(setup("emulator published"))?
        .json()
        .await
        .map_err(setup("emulator published"))?;
    let mut ids: Vec<String> = published["record_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (feed, identities) in emu.graph_published(DEMO_TENANT_ID).await {
        if let Some(feed) = crate::graph::GraphFeed::from_config_name(&feed) {
            ids.extend(
                identities
                    .iter()
                    .map(|id| graph_key(DEMO_TENANT_ID, feed.content_type(), id)),
            );
        }
    }
    let seen = count_ids(events).map_err(setup("cannot read the events file"))?;
    let mut summary = Summary {
        published: ids.len() as u64,
        delivered_once: 0,
        missing: 0,
        duplicated: 0,
        elapsed,
        audit,
        graph,
        events_file: events.to_path_buf(),
    };
    for id in &ids {
        match seen.get(id.as_str()).copied().unwrap_or(0) {
            0 => summary.missing += 1,
            1 => summary.delivered_once += 1,
            _ => summary.duplicated += 1,
        }
    }
    Ok(summary)
}

/// Graph records the demo publishes per feed for `--records`: a twentieth, at least 1.
pub fn graph_records_per_feed(records: u64) -> u64 {
    (records / 20).max(1)
}

/// Records delivered so far: (audit, Graph), from the per-content-type delivery counters.
fn delivered_by_source(counters: &Counters) -> (u64, u64) {
    let delivered = |ct: &str| {
        counters
            .metrics
            .records_delivered
            .get_or_create(&crate::telemetry::Metrics::tenant_labels(
                DEMO_TENANT_ID,
                ct,
            ))
            .get()
    };
    let audit = CONTENT_TYPES.iter().map(|ct| delivered(ct)).sum();
    let graph = crate::graph::GraphFeed::ALL
        .iter()
        .map(|f| delivered(f.content_type()))
        .sum();
    (audit, graph)
}

/// Record ids in the output file with how often each appears. Every line must be a JSON object
/// carrying one record id: a torn or foreign line is an error (`InvalidData`, naming the line),
/// never skipped, so the ids count every line. Only a last line without its newline is left out:
/// it is still being written (a batch is appended with one write; a torn tail left by a crash is
/// cut when the output starts again).
pub fn count_ids(path: &Path) -> std::io::Result<HashMap<String, u32>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    count_ids_in(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// [`count_ids`] on an output file's bytes (or several files', concatenated): `Err` names the
/// first line (1-based) that is not one record.
pub fn count_ids_in(bytes: &[u8]) -> Result<HashMap<String, u32>, String> {
    let mut seen = HashMap::new();
    // What follows the last newline is still being written.
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return Ok(seen);
    };
    for (n, line) in bytes[..end].split(|b| *b == b'\n').enumerate() {
        let key = record_key(line).map_err(|why| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(160)]);
            format!("line {}: {why}: {shown}", n + 1)
        })?;
        *seen.entry(key).or_insert(0) += 1;
    }
    Ok(seen)
}

/// The record id one output line carries: a Graph record's `tenant/feed/identity`, as
/// [`graph_key`] spells what was published, otherwise the audit record's `Id`.
fn record_key(line: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON record ({e})"))?;
    let text = |k: &str| v.get(k).and_then(|v| v.as_str());
    if let (Some(id), Some(ct)) = (text("o365.meta.record_id"), text("o365.meta.content_type")) {
        return Ok(graph_key(text("o365.meta.tenant_id").unwrap_or(""), ct, id));
    }
    text("o365.audit.Id")
        .or_else(|| text("event.id"))
        .or_else(|| text("Id"))
        .map(str::to_owned)
        .ok_or_else(|| "carries no record id".to_owned())
}

/// How [`count_ids`] names a Graph record: `tenant/Graph.Feed/identity` (tenant in lower case).
pub fn graph_key(tenant: &str, content_type: &str, identity: &str) -> String {
    format!("{}/{content_type}/{identity}", tenant.to_ascii_lowercase())
}

fn control_client(emu: &Emulator) -> Result<reqwest::Client, DemoError> {
    let ca =
        reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).map_err(setup("emulator CA"))?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .map_err(setup("HTTP client"))
}

async fn wait_until(deadline: Instant, cond: impl Fn() -> bool) -> Result<(), ()> {
    while !cond() {
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::count_ids_in;

    #[test]
    fn every_written_line_is_one_record_and_an_unfinished_last_line_waits() {
        let out =
            count_ids_in(b"{\"Id\":\"a\"}\n{\"o365.audit.Id\":\"b\"}\n{\"Id\":\"a\"}\n{\"Id\":\"c")
                .unwrap();
        assert_eq!((out["a"], out["b"], out.len()), (2, 1, 2));
        assert!(count_ids_in(b"").unwrap().is_empty());
        assert!(count_ids_in(b"{\"Id\":").unwrap().is_empty());
    }

    #[test]
    fn a_torn_or_foreign_line_is_an_error_naming_it() {
        let torn = count_ids_in(b"{\"Id\":\"a\"}\n{\"Id\":\"b\n{\"Id\":\"c\"}\n").unwrap_err();
        assert!(torn.starts_with("line 2: not a JSON record"), "{torn}");
        let empty = count_ids_in(b"{\"Id\":\"a\"}\n\n{\"Id\":\"c\"}\n").unwrap_err();
        assert!(empty.starts_with("line 2: "), "{empty}");
        let foreign = count_ids_in(b"{\"Id\":\"a\"}\n{\"other\":1}\n").unwrap_err();
        assert!(
            foreign.starts_with("line 2: carries no record id"),
            "{foreign}"
        );
    }
}
