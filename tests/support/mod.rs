//! Shared by the integration tests: an in-process emulator, the real collector binary as a child
//! process, and waits on conditions (never fixed sleeps).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use o365_emulator::{Emulator, EmulatorConfig, TenantSpec};

pub const TENANT: &str = "41463f53-8812-40f4-890f-865bf6e35190";
pub const CLIENT: &str = "2d4f5a8c-1111-4222-8333-444455556666";
pub const SECRET: &str = "test-client-secret-value";
pub const AUTH_ID: &str = "test-webhook-auth-id";
pub const ALL_TYPES: [&str; 5] = [
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
];

pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An emulator with the test tenant; `tune` adjusts the settings.
pub async fn emulator(tune: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    init();
    let mut cfg = EmulatorConfig {
        tenants: vec![TenantSpec {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            client_secret: Some(SECRET.into()),
            certificates_pem: Vec::new(),
        }],
        webhook_retry_base: Duration::from_millis(50),
        ..EmulatorConfig::default()
    };
    tune(&mut cfg);
    Emulator::start(cfg).await.expect("emulator starts")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Files and addresses of one collector under test.
pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub events: PathBuf,
    pub port: u16,
}

impl Setup {
    pub fn webhook_url(&self) -> String {
        format!("https://127.0.0.1:{}/o365/webhook", self.port)
    }
}

/// Writes certificates and a config.yaml for a collector in push mode against `emu`.
pub fn setup(emu: &Emulator, dir: &Path, content_types: &[&str], extra_yaml: &str) -> Setup {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = emu.issue_server_cert(&["127.0.0.1", "localhost"]).unwrap();
    std::fs::write(dir.join("ca.pem"), emu.ca_pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    let port = free_port();
    let events = dir.join("events.ndjson");
    let base = emu.base_url();
    let yaml = format!(
        r#"client_id: {CLIENT}
tenant_id: {TENANT}
client_secret: ${{TEST_CLIENT_SECRET}}
resource: {base}
authority: {base}
content_type: {types}
output: file
last_value_storage: {dir}/store
webhook:
  address: https://127.0.0.1:{port}/o365/webhook
  auth_id: {AUTH_ID}
listen:
  public: 127.0.0.1:{port}
  admin: 127.0.0.1:0
tls:
  cert: {dir}/server.pem
  key: {dir}/server.key
outbound:
  ca_file: {dir}/ca.pem
outputs:
  file:
    type: file
    path: {events}
{extra_yaml}"#,
        types = content_types.join(" "),
        dir = dir.display(),
        events = events.display(),
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    Setup {
        dir: dir.to_path_buf(),
        config,
        events,
        port,
    }
}

/// Points the collector of `setup` at the output `name` (declared in its `extra_yaml`) instead of
/// the file output.
pub fn select_output(setup: &Setup, name: &str) {
    let yaml = std::fs::read_to_string(&setup.config).unwrap();
    assert!(yaml.contains("\noutput: file\n"));
    let yaml = yaml.replacen("\noutput: file\n", &format!("\noutput: {name}\n"), 1);
    std::fs::write(&setup.config, yaml).unwrap();
}

/// The real binary, running `run --config`.
pub struct Collector {
    pub child: Child,
    pub log: PathBuf,
}

impl Collector {
    pub fn spawn(setup: &Setup) -> Collector {
        Collector::spawn_with_env(setup, &[])
    }

    /// `spawn` with more environment variables (e.g. libfaketime's, for a clock that is off).
    pub fn spawn_with_env(setup: &Setup, envs: &[(&str, &str)]) -> Collector {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = setup.dir.join(format!("collector-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_o365-collector"))
            .args(["run", "--config"])
            .arg(&setup.config)
            .env("TEST_CLIENT_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("collector binary starts");
        Collector { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait up to `within` for the exit; returns the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.wait_exit(within)
    }

    /// Waits up to `within` for the process to exit (on its own, or after a signal); returns the
    /// exit status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "collector did not exit within {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `http://<admin>{path}` from the collector's "admin listener ready addr=…" log line.
/// Waits for the collector's admin listener and returns its base URL (`http://addr`).
pub async fn wait_admin(c: &Collector) -> String {
    wait_for(Duration::from_secs(30), "the admin listener", || {
        let up = c.logs().contains("admin listener ready");
        async move { up }
    })
    .await;
    admin_url(&c.logs(), "")
}

pub fn admin_url(logs: &str, path: &str) -> String {
    let line = logs
        .lines()
        .find(|l| l.contains("admin listener ready"))
        .expect("admin listener logged");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .expect("addr= in the log line");
    format!("http://{addr}{path}")
}

/// A tmpfs mounted at a directory for the test's lifetime (CI runs as root), e.g. a small one to
/// fill up or a read-only one.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts with `options` (e.g. `size=4m` or `size=1m,ro`). A test that cannot mount one cannot
    /// run its scenario, so this fails it, unless `O365_TEST_ALLOW_SKIP=tmpfs` (or `all`) says a
    /// skip is acceptable here: then `None`, and the caller returns.
    pub fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs(at.to_path_buf())),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        skip_or_fail(
            "tmpfs",
            &format!(
                "cannot mount a tmpfs at {} ({why}); run the tests as root or with CAP_SYS_ADMIN \
                 (scripts/test checks this up front)",
                at.display()
            ),
        );
        None
    }
}

/// A scenario the test cannot set up: a failure, unless `O365_TEST_ALLOW_SKIP` names `what` (a
/// comma-separated list, or `all`); then a line on stdout says what was not tested.
pub fn skip_or_fail(what: &str, why: &str) {
    let allowed = std::env::var("O365_TEST_ALLOW_SKIP").unwrap_or_default();
    if allowed
        .split(',')
        .any(|a| a.trim() == what || a.trim() == "all")
    {
        println!("SKIPPED ({what}, allowed by O365_TEST_ALLOW_SKIP): {why}");
        return;
    }
    panic!("{why}; set O365_TEST_ALLOW_SKIP={what} to skip this test knowingly");
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes (then panics with `what`).
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client trusting the emulator's CA.
pub fn client(emu: &Emulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

/// A v1 client-credentials token for the test tenant, fetched like any Azure AD client would.
pub async fn token(emu: &Emulator) -> String {
    let resp: serde_json::Value = client(emu)
        .post(format!("{}/{TENANT}/oauth2/token", emu.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("resource", emu.base_url()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().expect("token").to_string()
}

/// `subscriptions/list` as the API answers it.
pub async fn subscriptions(emu: &Emulator) -> Vec<serde_json::Value> {
    let t = token(emu).await;
    client(emu)
        .get(format!(
            "{}/api/v1.0/{TENANT}/activity/feed/subscriptions/list",
            emu.base_url()
        ))
        .bearer_auth(t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until every content type has an enabled subscription with an enabled webhook.
pub async fn wait_webhooks_enabled(emu: &Emulator, types: &[&str]) {
    wait_for(
        Duration::from_secs(30),
        "webhook subscriptions enabled",
        || async {
            let subs = subscriptions(emu).await;
            types.iter().all(|ct| {
                subs.iter().any(|s| {
                    s["contentType"] == *ct
                        && s["status"] == "enabled"
                        && s["webhook"]["status"].as_str().unwrap_or("enabled") == "enabled"
                        && !s["webhook"].is_null()
                })
            })
        },
    )
    .await;
}

/// Publishes `records` synthetic records in `blobs` blobs.
pub async fn generate(emu: &Emulator, content_type: &str, records: u64, blobs: u64) {
    let resp = client(emu)
        .post(format!("{}/_emulator/generate", emu.base_url()))
        .json(&serde_json::json!({"tenant_id": TENANT, "content_type": content_type, "records": records, "blobs": blobs}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "generate: {}", resp.status());
}

/// Every record id the emulator published for the test tenant.
pub async fn published_ids(emu: &Emulator) -> Vec<String> {
    let v: serde_json::Value = control_get(emu, "published", TENANT).await;
    v["record_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `GET /_emulator/{what}?tenant_id=…` of the control surface, decoded.
pub async fn control_get<T: serde::de::DeserializeOwned>(
    emu: &Emulator,
    what: &str,
    tenant_id: &str,
) -> T {
    client(emu)
        .get(format!("{}/_emulator/{what}", emu.base_url()))
        .query(&[("tenant_id", tenant_id)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A small deterministic PRNG for the crash tests, so a failing run can be repeated (seed printed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// A crash test's seed: `CRASH_SEED` (CI draws a fresh one per run) or the test's own default;
/// printed with the test's name so a failure can be replayed.
pub fn crash_seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("{test}: CRASH_SEED={seed} (set CRASH_SEED to repeat)");
    seed
}

/// Record ids in the output file with their counts: one per line, and a line that is not one
/// record fails the test, naming it. A last line without its newline is left out (still being
/// written), so this may be polled while the collector runs.
pub fn output_ids(path: &Path) -> HashMap<String, u32> {
    o365_collector::demo::count_ids(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts every published id is in the output exactly once (and nothing else is).
pub fn assert_exactly_once(published: &[String], out: &HashMap<String, u32>) {
    let missing: Vec<_> = published
        .iter()
        .filter(|id| !out.contains_key(*id))
        .collect();
    let dup: Vec<_> = out.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} of {} records missing, e.g. {:?}",
        missing.len(),
        published.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(
        dup.is_empty(),
        "{} records duplicated, e.g. {:?}",
        dup.len(),
        &dup[..dup.len().min(3)]
    );
    assert_eq!(
        out.len(),
        published.len(),
        "output holds records that were never published"
    );
}

/// Lines in the output file (cheap enough to poll).
pub fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// Applies a faults patch (`POST /_emulator/faults`).
pub async fn faults(emu: &Emulator, patch: serde_json::Value) {
    let resp = client(emu)
        .post(format!("{}/_emulator/faults", emu.base_url()))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "faults: {}", resp.status());
}

/// The emulator's webhook delivery log.
pub async fn deliveries(emu: &Emulator) -> Vec<serde_json::Value> {
    let v: serde_json::Value = client(emu)
        .get(format!("{}/_emulator/deliveries", emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    match v {
        serde_json::Value::Array(a) => a,
        other => other["deliveries"].as_array().cloned().unwrap_or_default(),
    }
}

/// Content ids whose notification the collector acknowledged with 200.
pub async fn acknowledged_content_ids(emu: &Emulator) -> std::collections::HashSet<String> {
    deliveries(emu)
        .await
        .into_iter()
        .filter(|d| d["kind"] == "notification" && d["status"] == 200)
        .flat_map(|d| {
            d["content_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from))
        })
        .collect()
}

/// Writes the emulator's CA and a server certificate for 127.0.0.1 into `dir`; returns the CA path.
pub fn write_certs(emu: &Emulator, dir: &Path) -> PathBuf {
    let (cert, key) = emu.issue_server_cert(&["127.0.0.1", "localhost"]).unwrap();
    std::fs::write(dir.join("ca.pem"), emu.ca_pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    dir.join("ca.pem")
}

/// A setup from a hand-written config (no webhook port).
pub fn custom_setup(dir: &Path, yaml: &str, events: &Path) -> Setup {
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    Setup {
        dir: dir.to_path_buf(),
        config,
        events: events.to_path_buf(),
        port: 0,
    }
}

/// The contents of the active file and of every rotated file of a file output (plain or gzip), in
/// rotation order. A file caught mid-compression (plain and `.gz` both there) is read once; one
/// deleted between listing and reading is read from its `.gz`.
pub fn read_with_rotated(active: &Path) -> Vec<u8> {
    use o365_collector::output::file::{RotatedFile, read_rotated, rotated_files};
    let files = rotated_files(active).unwrap_or_default();
    let mut out = Vec::new();
    let mut done = None;
    for f in &files {
        if done == Some(f.rotated_at) {
            continue;
        }
        let read = read_rotated(f).or_else(|e| {
            if f.gzip || e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
            let mut gz = f.path.clone().into_os_string();
            gz.push(".gz");
            read_rotated(&RotatedFile {
                path: gz.into(),
                rotated_at: f.rotated_at,
                gzip: true,
            })
        });
        if let Ok(bytes) = read {
            out.extend_from_slice(&bytes);
            done = Some(f.rotated_at);
        }
    }
    out.extend_from_slice(&std::fs::read(active).unwrap_or_default());
    out
}

/// Lines across the active and the rotated files of a file output.
pub fn line_count_with_rotated(active: &Path) -> usize {
    read_with_rotated(active)
        .iter()
        .filter(|c| **c == b'\n')
        .count()
}

/// Record ids across the active and the rotated files of a stopped collector's file output, with
/// their counts. Every line is one record (a line that is not fails the test, naming it), so the
/// counts add up to the line count; and no line may be torn, not even the last: the output writes
/// whole batches and cuts a crash's torn tail when it starts, so a clean stop leaves none.
pub fn output_ids_with_rotated(active: &Path) -> HashMap<String, u32> {
    let bytes = read_with_rotated(active);
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\n"),
        "{}: the last line is torn after a clean stop: {}",
        active.display(),
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(160)..])
    );
    o365_collector::demo::count_ids_in(&bytes)
        .unwrap_or_else(|e| panic!("{} and its rotated files: {e}", active.display()))
}
