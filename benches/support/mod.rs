//! What the process-level benchmarks share: the emulator and the collector each run as their own
//! process (`o365-collector emulator`, `o365-collector run`), so the numbers are those of the
//! collector alone; this program only drives them and reads `/proc/PID/status`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

/// The collector binary Cargo built for this bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_o365-collector");

/// Client secret every emulated tenant shares.
pub const SECRET: &str = "bench-secret";
/// The webhook's shared secret.
pub const AUTH_ID: &str = "bench-auth-id-0123456789abcdef0123456789";

/// Tenant and client GUIDs of tenant `i` (deterministic, valid GUIDs).
pub fn tenant_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-00000000a11c")
}
pub fn client_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-0000000c11e7")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `key` of `/proc/PID/status` in KiB (or the bare number, e.g. for `Threads`).
    pub fn status(&self, key: &str) -> u64 {
        let text =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Peak RSS, RSS now, threads now.
    pub fn memory(&self) -> Memory {
        Memory {
            peak_mib: self.status("VmHWM") as f64 / 1024.0,
            rss_mib: self.status("VmRSS") as f64 / 1024.0,
            threads: self.status("Threads"),
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU time the process used so far (user + system, all threads), in seconds: the cost of
    /// its work that other processes' load hardly changes, unlike wall time.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The fields after the command name (which may hold spaces) start after its ")".
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of the line, 11 and 12 after the name.
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        ticks / clock_ticks()
    }
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `/proc/loadavg`'s three load averages, to print beside results measured on a shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub peak_mib: f64,
    pub rss_mib: f64,
    pub threads: u64,
}

/// Samples a process's thread count every 20 ms on a thread of its own; `stop` returns the most
/// seen (the peak is what a burst of blocking work shows).
pub struct ThreadPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl ThreadPeak {
    pub fn start(pid: u32) -> ThreadPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut most = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let text =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let n = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                most = most.max(n);
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        });
        ThreadPeak { stop, handle }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it: the collector's webhook listener, trusted
/// by the emulator through `webhook_ca_files`. Returns (ca.pem, cert.pem, key.pem) paths.
pub fn webhook_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "o365-collector bench CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("names");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let paths = (
        dir.join("bench-ca.pem"),
        dir.join("webhook.pem"),
        dir.join("webhook.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// The emulator in its own process with `tenants` tenants; `extra` is appended to its YAML.
/// Returns the process, its base URL and the path of its CA.
pub fn start_emulator(dir: &Path, tenants: usize, extra: &str) -> (Proc, String, PathBuf) {
    let mut yaml = String::from("tenants:\n");
    for i in 0..tenants {
        yaml.push_str(&format!(
            "  - tenant_id: {}\n    client_id: {}\n    client_secret: {SECRET}\n",
            tenant_id(i),
            client_id(i)
        ));
    }
    yaml.push_str(extra);
    let cfg = dir.join("emulator.yaml");
    std::fs::write(&cfg, yaml).expect("write emulator.yaml");
    let ca = dir.join("emulator-ca.pem");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["emulator", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&cfg)
        .arg("--ca-out")
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the emulator");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("emulator exited before listening")
            .expect("emulator stdout");
        if let Some(rest) = line.strip_prefix("o365-collector emulator listening on ") {
            break rest.trim().to_string();
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (
        Proc {
            child,
            name: "emulator",
        },
        base,
        ca,
    )
}

/// The collector (`run`) in its own process on `config`; its logs (warnings and up) go to
/// `dir/collector.log`. `env` adds environment variables.
///
/// For heap profiles, `BENCH_COLLECTOR_WRAPPER` runs it under a profiler (e.g. `heaptrack -o
/// /tmp/tenants`) and `BENCH_COLLECTOR_BIN` names another build (one with the
/// `system-allocator` feature); the memory figures printed are then not the collector's.
pub fn start_collector(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Proc {
    let log = std::fs::File::create(dir.join("collector.log")).expect("log file");
    let bin = std::env::var("BENCH_COLLECTOR_BIN").unwrap_or_else(|_| BIN.to_string());
    let wrapper = std::env::var("BENCH_COLLECTOR_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().expect("start the collector"),
        name: "collector",
    }
}

/// A tenant list for the collector's YAML: `tenants:` entries sharing the top-level secret.
pub fn tenants_yaml(n: usize) -> String {
    let mut yaml = format!("client_secret: {SECRET}\ntenants:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - tenant_id: {}\n    client_id: {}\n",
            tenant_id(i),
            client_id(i)
        ));
    }
    yaml
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines in a file (0 when it does not exist yet).
pub fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Record ids in the output file with how often each appears.
pub fn record_counts(path: &Path) -> std::collections::HashMap<String, u32> {
    o365_collector::demo::count_ids(path).expect("output file")
}

/// An HTTPS client trusting `ca` (PEM file).
pub fn client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("CA file");
    reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM"))
        .build()
        .expect("client")
}

/// The bench's own arguments (cargo's `--bench` left out): bare numbers, `key=value` and words.
pub struct Args(Vec<String>);

impl Args {
    pub fn from_env() -> Args {
        Args(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with("--"))
                .collect(),
        )
    }

    /// The bare numbers, or `default` when there are none.
    pub fn numbers<T: std::str::FromStr + Copy>(&self, default: &[T]) -> Vec<T> {
        let n: Vec<T> = self.0.iter().filter_map(|a| a.parse().ok()).collect();
        if n.is_empty() { default.to_vec() } else { n }
    }

    /// Whether the bare word `word` was given.
    pub fn has(&self, word: &str) -> bool {
        self.0.iter().any(|a| a == word)
    }

    /// `key=value`, or `default`.
    pub fn value<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.0
            .iter()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(default)
    }

    /// Which of two variants to run: `[true]` for word `a` alone, `[false]` for `b` alone,
    /// both otherwise (`a` first).
    pub fn either(&self, a: &str, b: &str) -> Vec<bool> {
        match (self.0.iter().any(|x| x == a), self.0.iter().any(|x| x == b)) {
            (true, false) => vec![true],
            (false, true) => vec![false],
            _ => vec![true, false],
        }
    }
}

/// A runtime for the driving side (control calls, load), small so it leaves the cores to the
/// processes measured.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Waits until the emulator's validation call of a webhook subscription was answered (the
/// collectors are up and subscribed); panics once `alive` says a collector exited.
pub async fn wait_validated(http: &reqwest::Client, base: &str, mut alive: impl FnMut() -> bool) {
    let ready = Instant::now();
    loop {
        assert!(alive(), "collector exited");
        assert!(ready.elapsed() < Duration::from_secs(60), "no subscription");
        let d: Vec<serde_json::Value> = match http
            .get(format!("{base}/_emulator/deliveries"))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if d.iter()
            .any(|d| d["kind"] == "validation" && d["success"] == true)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `records` records in `blobs` blobs of tenant 0 and returns one notification body
/// (a one-entry JSON array, as Microsoft sends) per blob.
pub async fn publish_notices(
    http: &reqwest::Client,
    base: &str,
    content_type: &str,
    records: usize,
    blobs: usize,
) -> Vec<Vec<u8>> {
    let tenant = tenant_id(0);
    let r: serde_json::Value = http
        .post(format!("{base}/_emulator/generate"))
        .json(&serde_json::json!({
            "tenant_id": tenant, "content_type": content_type,
            "records": records, "blobs": blobs,
        }))
        .send()
        .await
        .expect("generate")
        .json()
        .await
        .expect("generate answer");
    let ids: Vec<String> = r["content_ids"]
        .as_array()
        .expect("content_ids")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), blobs);
    let client_id = client_id(0);
    ids.iter()
        .map(|id| {
            serde_json::to_vec(&serde_json::json!([{
                "tenantId": tenant,
                "clientId": client_id,
                "contentType": content_type,
                "contentId": id,
                "contentUri": format!("{base}/api/v1.0/{tenant}/activity/feed/audit/{id}"),
                "contentCreated": "2026-01-01T00:00:00.000Z",
                "contentExpiration": "2026-01-08T00:00:00.000Z",
            }]))
            .expect("json")
        })
        .collect()
}

/// POSTs the notices open loop, `rate` per second (0: all at once), each to the next of
/// `webhooks` in turn; returns each one's latency from its scheduled send and whether it got 200.
pub async fn post_notices(
    load: reqwest::Client,
    webhooks: &[String],
    notices: Vec<Vec<u8>>,
    rate: u64,
) -> Vec<(Duration, bool)> {
    // One call to each first, so the load shares open connections (HTTP/2) instead of starting
    // with a storm of TLS handshakes; an empty batch changes nothing.
    for url in webhooks {
        let _ = load
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-authid", AUTH_ID)
            .body("[]")
            .send()
            .await;
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let interval = if rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(1.0 / rate as f64)
    };
    let load = std::sync::Arc::new(load);
    let mut tasks = Vec::with_capacity(notices.len());
    for (i, body) in notices.into_iter().enumerate() {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let load = load.clone();
        let url = webhooks[i % webhooks.len()].clone();
        tasks.push(tokio::spawn(async move {
            let r = load
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-authid", AUTH_ID)
                .body(body)
                .send()
                .await;
            let ok = matches!(&r, Ok(r) if r.status() == 200);
            (at.elapsed(), ok)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("load task"));
    }
    out
}

/// p-th percentile (0..1) of sorted milliseconds.
pub fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    sorted_ms
        .get(((sorted_ms.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The emulator with one tenant, for a bench that notifies the collector itself: retries far
/// apart and never disabling, so its own notifications can fail (a fault) without ever changing
/// the subscription. `webhook_ca`: the CA of the collectors' webhook certificate.
pub fn start_notified_emulator(dir: &Path, webhook_ca: &Path) -> (Proc, String, PathBuf) {
    start_emulator(
        dir,
        1,
        &format!(
            "throttle_per_minute: 1000000\nwebhook_ca_files: [{}]\nwebhook_retry_base_ms: 3600000\nwebhook_max_failures: 1000000\n",
            webhook_ca.display()
        ),
    )
}

/// A push-mode collector of tenant 0 on `port` (TLS with `tls` = cert, key), a file output at
/// `events`, no periodic reconciliation; `store` is its store's YAML (`last_value_storage: …` or a
/// `store:` block).
pub fn push_collector_yaml(
    base: &str,
    content_type: &str,
    emu_ca: &Path,
    events: &Path,
    port: u16,
    tls: (&Path, &Path),
    store: &str,
) -> String {
    format!(
        "resource: {base}\nauthority: {base}\ncontent_type: {content_type}\noutput: file\n\
         requests_per_minute: 600000\nrequest_burst: 1000\n{store}\
         outbound:\n  ca_file: {emu_ca}\n\
         outputs:\n  file:\n    type: file\n    path: {events}\n\
         listen:\n  admin: 127.0.0.1:0\n  public: 127.0.0.1:{port}\n\
         webhook:\n  address: https://127.0.0.1:{port}/o365/webhook\n  auth_id: {AUTH_ID}\n\
         tls:\n  cert: {cert}\n  key: {key}\n\
         pull:\n  reconcile_every: 24h\n{tenants}",
        emu_ca = emu_ca.display(),
        events = events.display(),
        cert = tls.0.display(),
        key = tls.1.display(),
        tenants = tenants_yaml(1),
    )
}
