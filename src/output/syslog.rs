//! Syslog: RFC 5424 messages whose MSG is the JSON event, over TCP with RFC 6587 octet counting,
//! TLS (RFC 5425, same framing) or UDP (RFC 5426).
//!
//! Delivery: over TCP/TLS a batch is accepted once all its frames were written and flushed to a
//! connection that the receiver had not closed before the write (a receiver that went away between
//! two batches is noticed and the connection re-opened, so a restart loses nothing). Syslog has no
//! application-level acknowledgement, so bytes the kernel accepted just before the receiver crashed
//! can still be lost; a receiver that must never lose a record needs RELP or the HTTP/Kafka outputs.
//! UDP gives no delivery confirmation at all. Any I/O failure is `Retryable` and drops the connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use serde::{Deserialize, Deserializer};

use super::{Batch, Output, OutputError, SendReport};
use crate::core::settings::{Section, de};

pub const DEFAULT_APP_NAME: &str = "o365-collector";
/// local0.
pub const DEFAULT_FACILITY: u8 = 16;
/// informational.
pub const DEFAULT_SEVERITY: u8 = 6;
/// SD-ID with a private enterprise number, as RFC 5424 §6.3.2 asks for non-IANA ids.
pub const DEFAULT_SD_ID: &str = "o365@32473";
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// `type: syslog`: RFC 5424 messages whose MSG is the JSON event.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogOutputConfig {
    /// `host:port` of the receiver.
    #[serde(deserialize_with = "de::text")]
    pub address: String,
    pub transport: SyslogTransport,
    /// Extra trust root (PEM) for TLS; the system's webpki roots are used too.
    #[serde(deserialize_with = "de::opt::path")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name checked in the receiver's certificate (default: the host of `address`).
    #[serde(deserialize_with = "de::opt::text")]
    pub server_name: Option<String>,
    /// HOSTNAME field (default: this machine's host name).
    #[serde(deserialize_with = "de::opt::text")]
    pub hostname: Option<String>,
    #[serde(deserialize_with = "de::text")]
    pub app_name: String,
    /// MSGID field; `None` → the content type (e.g. `Audit.Exchange`).
    #[serde(deserialize_with = "de::opt::text")]
    pub msgid: Option<String>,
    /// 0–23 or its name (default 16, local0).
    #[serde(deserialize_with = "facility")]
    pub facility: u8,
    /// 0–7 or its name (default 6, informational).
    #[serde(deserialize_with = "severity")]
    pub severity: u8,
    /// SD-ID of the element carrying tenant/contentType/contentId; `None` → no structured data.
    #[serde(deserialize_with = "de::opt::text")]
    pub sd_id: Option<String>,
    /// `false` leaves the structured data out (`sd_id` becomes `None`).
    #[serde(deserialize_with = "de::flag")]
    pub structured_data: bool,
    /// Connect and write timeout.
    #[serde(deserialize_with = "de::duration")]
    pub timeout: Duration,
}

impl Default for SyslogOutputConfig {
    fn default() -> Self {
        SyslogOutputConfig {
            address: String::new(),
            transport: SyslogTransport::Tcp,
            ca_file: None,
            server_name: None,
            hostname: None,
            app_name: DEFAULT_APP_NAME.to_owned(),
            msgid: None,
            facility: DEFAULT_FACILITY,
            severity: DEFAULT_SEVERITY,
            sd_id: Some(DEFAULT_SD_ID.to_owned()),
            structured_data: true,
            timeout: super::DEFAULT_TIMEOUT,
        }
    }
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// RFC 6587 octet counting over TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
    /// RFC 5426: one message per datagram (no delivery confirmation).
    Udp,
}

impl<'de> Deserialize<'de> for SyslogTransport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let choices = [
            ("tcp", SyslogTransport::Tcp),
            ("tls", SyslogTransport::Tls),
            ("udp", SyslogTransport::Udp),
        ];
        de::choice(d, &choices, "a syslog transport")
    }
}

fn facility<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    code(d, &FACILITIES, "facility")
}

fn severity<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    code(d, &SEVERITIES, "severity")
}

/// A facility or severity given by name or number.
fn code<'de, D: Deserializer<'de>>(d: D, names: &[&str], what: &str) -> Result<u8, D::Error> {
    let v = de::text(d)?;
    let v = v.trim();
    if let Some(i) = names.iter().position(|n| *n == v) {
        return Ok(i as u8);
    }
    match v.parse::<u8>() {
        Ok(n) if usize::from(n) < names.len() => Ok(n),
        _ => Err(crate::core::settings::fail1(
            format!("`{v}` is not a syslog {what}"),
            format!(
                "use a number 0–{} or one of: {}",
                names.len() - 1,
                names.join(", ")
            ),
        )),
    }
}

impl SyslogOutputConfig {
    /// Checks the meaning of the settings.
    pub fn check(&mut self, s: &mut Section) {
        let fix = "set the receiver as host:port, e.g. `address: siem.example.com:6514`";
        if !s.given("address") {
            s.missing("address", fix);
        } else if !s.usable("address") {
            // Refused while typing; reported already.
        } else if self.address.trim().is_empty() {
            s.problem("address", "is empty", fix);
        } else if !super::is_host_port(self.address.trim()) {
            s.problem(
                "address",
                "is not host:port",
                "write the receiver as host:port, e.g. siem.example.com:6514 or [::1]:514",
            );
        }
        self.address = self.address.trim().to_owned();
        if let Some(ca) = &self.ca_file {
            s.pem_certificates("ca_file", ca);
        }
        self.server_name = self.server_name.as_ref().map(|n| n.trim().to_owned());
        if self.transport != SyslogTransport::Tls {
            for (key, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("server_name", self.server_name.is_some()),
            ] {
                if set {
                    s.problem(
                        key,
                        "only applies to `transport: tls`",
                        "remove it, or set `transport: tls`",
                    );
                }
            }
        }
        for (key, value, max) in [
            ("hostname", self.hostname.as_deref(), 255),
            ("app_name", Some(self.app_name.as_str()), 48),
            ("msgid", self.msgid.as_deref(), 32),
        ] {
            let ok = |v: &str| {
                !v.is_empty() && v.len() <= max && v.bytes().all(|b| (33..=126).contains(&b))
            };
            if value.is_some_and(|v| !ok(v)) {
                s.problem(
                    key,
                    format!("is not 1 to {max} printable ASCII characters without spaces"),
                    "RFC 5424 allows only characters 33–126 here; e.g. `o365-collector`",
                );
            }
        }
        let sd_ok = |v: &str| {
            !v.is_empty()
                && v.len() <= 32
                && v.bytes()
                    .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"' | b' '))
        };
        if self.sd_id.as_deref().is_some_and(|v| !sd_ok(v)) {
            s.problem(
                "sd_id",
                "is not a valid SD-ID (1 to 32 printable ASCII characters without `=`, `]`, `\"` or spaces)",
                "use name@<private enterprise number>, e.g. o365@32473",
            );
        }
        if !self.structured_data {
            self.sd_id = None;
        }
        super::check_timeout(&mut self.timeout, s);
    }
}

/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

pub struct SyslogOutput {
    name: String,
    cfg: SyslogOutputConfig,
    hostname: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Mutex<Option<Conn>>,
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Udp(UdpSocket),
}

impl SyslogOutput {
    /// Prepares the output; the connection is opened on the first send, so a receiver that is down
    /// at start-up only delays delivery.
    pub fn open(name: &str, cfg: &SyslogOutputConfig) -> Result<SyslogOutput, OutputError> {
        let tls = match cfg.transport {
            SyslogTransport::Tls => {
                let config = super::tls::client_config(cfg.ca_file.as_deref(), None, &[]).map_err(
                    |(key, e)| {
                        OutputError::setup(
                            name,
                            key,
                            format!("cannot be used: {e}"),
                            super::tls::tls_fix(key),
                        )
                    },
                )?;
                let host = match &cfg.server_name {
                    Some(s) => s.clone(),
                    None => host_of(&cfg.address).to_owned(),
                };
                let server_name = ServerName::try_from(host).map_err(|e| {
                    OutputError::setup(
                        name,
                        "server_name",
                        format!("is not a name for TLS ({e})"),
                        "set server_name to the DNS name in the receiver's certificate",
                    )
                })?;
                Some((TlsConnector::from(Arc::new(config)), server_name))
            }
            _ => None,
        };
        let hostname = cfg.hostname.clone().unwrap_or_else(local_hostname);
        Ok(SyslogOutput {
            name: name.to_string(),
            cfg: cfg.clone(),
            hostname,
            tls,
            conn: Mutex::new(None),
        })
    }

    fn retryable(&self, reason: impl std::fmt::Display) -> OutputError {
        OutputError::Retryable {
            output: self.name.clone(),
            reason: format!("syslog {}: {reason}", self.cfg.address),
        }
    }

    /// One RFC 5424 message (without framing) for `json`.
    pub fn format_message(&self, batch: &Batch, json: &[u8], out: &mut Vec<u8>) {
        use std::io::Write as _;
        let pri = u16::from(self.cfg.facility) * 8 + u16::from(self.cfg.severity);
        let ts = event_time(json)
            .unwrap_or_else(Utc::now)
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        let msgid = match &self.cfg.msgid {
            Some(m) => m.as_str(),
            None => header_safe(&batch.content_type, 32),
        };
        let _ = write!(
            out,
            "<{pri}>1 {ts} {} {} {} {} ",
            self.hostname,
            self.cfg.app_name,
            std::process::id(),
            if msgid.is_empty() { "-" } else { msgid }
        );
        match &self.cfg.sd_id {
            Some(id) => {
                let _ = write!(out, "[{id}");
                for (k, v) in [
                    ("tenant", batch.tenant_id.as_str()),
                    ("contentType", batch.content_type.as_str()),
                    ("contentId", batch.content_id.as_str()),
                ] {
                    let _ = write!(out, " {k}=\"");
                    sd_escape(v, out);
                    out.push(b'"');
                }
                out.push(b']');
            }
            None => out.push(b'-'),
        }
        out.push(b' ');
        out.extend_from_slice(json);
    }

    async fn connect(&self) -> io::Result<Conn> {
        let limit = self.cfg.timeout;
        match self.cfg.transport {
            SyslogTransport::Udp => {
                let sock = UdpSocket::bind(if self.cfg.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .await?;
                timed(limit, sock.connect(&self.cfg.address)).await?;
                Ok(Conn::Udp(sock))
            }
            SyslogTransport::Tcp => {
                let s = timed(limit, TcpStream::connect(&self.cfg.address)).await?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
            SyslogTransport::Tls => {
                let Some((connector, server_name)) = &self.tls else {
                    return Err(io::Error::other("TLS is not configured"));
                };
                let s = timed(limit, TcpStream::connect(&self.cfg.address)).await?;
                s.set_nodelay(true)?;
                let tls = timed(limit, connector.connect(server_name.clone(), s)).await?;
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }

    async fn write(&self, conn: &mut Conn, frames: &[u8], datagrams: &[Vec<u8>]) -> io::Result<()> {
        let limit = self.cfg.timeout;
        match conn {
            Conn::Tcp(s) => write_flush(s, frames, limit).await,
            Conn::Tls(s) => write_flush(s.as_mut(), frames, limit).await,
            Conn::Udp(s) => {
                for d in datagrams {
                    timed(limit, s.send(d)).await?;
                }
                Ok(())
            }
        }
    }
}

impl Output for SyslogOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        let udp = self.cfg.transport == SyslogTransport::Udp;
        let mut frames = Vec::new();
        let mut datagrams = Vec::new();
        let mut msg = Vec::new();
        for e in &batch.events {
            msg.clear();
            self.format_message(batch, &e.json, &mut msg);
            if udp {
                if msg.len() > MAX_DATAGRAM {
                    return Err(OutputError::Fatal {
                        output: self.name.clone(),
                        reason: format!(
                            "a {} byte message does not fit in a UDP datagram; use transport tcp or tls",
                            msg.len()
                        ),
                    });
                }
                datagrams.push(msg.clone());
            } else {
                frames.extend_from_slice(msg.len().to_string().as_bytes());
                frames.push(b' ');
                frames.extend_from_slice(&msg);
            }
        }
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_mut()
            && !still_open(c).await
        {
            *guard = None;
        }
        let conn = match guard.as_mut() {
            Some(c) => c,
            None => guard.insert(self.connect().await.map_err(|e| self.retryable(e))?),
        };
        if let Err(e) = self.write(conn, &frames, &datagrams).await {
            *guard = None;
            return Err(self.retryable(e));
        }
        Ok(SendReport {
            written: batch.events.len(),
            duplicates: 0,
        })
    }
}

async fn timed<T>(limit: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(
    s: &mut S,
    buf: &[u8],
    limit: Duration,
) -> io::Result<()> {
    timed(limit, async {
        s.write_all(buf).await?;
        s.flush().await
    })
    .await
}

/// Whether the receiver still has the connection open. Receivers send nothing but TLS records, so
/// anything readable is drained (through TLS: tickets, close_notify) and end of stream or an error
/// means closed. The read waits up to a millisecond so the runtime's reactor gets to deliver a FIN
/// that arrived while nothing was polling the socket (a cached "not readable" would hide it).
async fn still_open(conn: &mut Conn) -> bool {
    async fn drain<S: AsyncRead + Unpin>(s: &mut S) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                Err(_) => return true,
                Ok(Ok(0)) | Ok(Err(_)) => return false,
                Ok(Ok(_)) => continue,
            }
        }
        true
    }
    match conn {
        Conn::Tcp(s) => drain(s).await,
        Conn::Tls(s) => drain(s.as_mut()).await,
        Conn::Udp(_) => true,
    }
}

fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn local_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name = header_safe(name.trim(), 255);
    if name.is_empty() {
        "-".to_owned()
    } else {
        name.to_owned()
    }
}

/// The longest prefix of `s` made of RFC 5424 PRINTUSASCII, at most `max` bytes.
fn header_safe(s: &str, max: usize) -> &str {
    let end = s
        .bytes()
        .take(max)
        .position(|b| !(33..=126).contains(&b))
        .unwrap_or_else(|| s.len().min(max));
    &s[..end]
}

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]` get a backslash.
fn sd_escape(v: &str, out: &mut Vec<u8>) {
    for b in v.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The record's own time: `@timestamp`, else `CreationTime` (UTC without a zone in the API).
pub fn event_time(json: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Times<'a> {
        #[serde(rename = "@timestamp", borrow)]
        timestamp: Option<&'a str>,
        #[serde(rename = "o365.audit.CreationTime", borrow)]
        mapped_creation: Option<&'a str>,
        #[serde(rename = "CreationTime", borrow)]
        creation: Option<&'a str>,
    }
    let t: Times = serde_json::from_slice(json).ok()?;
    [t.timestamp, t.mapped_creation, t.creation]
        .into_iter()
        .flatten()
        .find_map(parse_time)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SyslogOutputConfig {
        SyslogOutputConfig {
            address: "127.0.0.1:1".into(),
            transport: SyslogTransport::Tcp,
            ca_file: None,
            server_name: None,
            hostname: Some("h".into()),
            app_name: "app".into(),
            msgid: None,
            facility: 16,
            severity: 6,
            sd_id: Some("o365@32473".into()),
            structured_data: true,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn message_layout() {
        let out = SyslogOutput::open("s", &cfg()).unwrap();
        let batch = Batch {
            tenant_id: "t".into(),
            content_type: "Audit.Exchange".into(),
            content_id: "a\"b]c\\".into(),
            events: vec![],
            tenant_name: None,
        };
        let json = br#"{"@timestamp":"2020-02-10T15:13:13.000Z","x":1}"#;
        let mut m = Vec::new();
        out.format_message(&batch, json, &mut m);
        let m = String::from_utf8(m).unwrap();
        let pid = std::process::id();
        assert_eq!(
            m,
            format!(
                "<134>1 2020-02-10T15:13:13.000000Z h app {pid} Audit.Exchange \
                 [o365@32473 tenant=\"t\" contentType=\"Audit.Exchange\" contentId=\"a\\\"b\\]c\\\\\"] {}",
                std::str::from_utf8(json).unwrap()
            )
        );
    }

    #[test]
    fn times() {
        let t = event_time(br#"{"CreationTime":"2020-02-10T15:13:13"}"#).unwrap();
        assert_eq!(t.to_rfc3339(), "2020-02-10T15:13:13+00:00");
        assert!(event_time(b"{}").is_none());
        assert!(event_time(b"not json").is_none());
        assert_eq!(header_safe("a b", 10), "a");
        assert_eq!(header_safe("abcdef", 3), "abc");
        assert_eq!(host_of("[::1]:514"), "::1");
    }
}
