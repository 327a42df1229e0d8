//! `listen:` and `tls:`: where the public and admin listeners bind, their limits, and the public
//! listener's certificate; defaults and checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::core::IpNet;
use crate::core::settings::{Section, de, fail, fail1};

pub const DEFAULT_PUBLIC_LISTEN: &str = "0.0.0.0:8443";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_TLS_RELOAD_EVERY: Duration = Duration::from_secs(10);
/// More connections than any file-descriptor limit allows.
const MAX_CONNECTIONS: usize = 1 << 24;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub public: SocketAddr,
    #[serde(deserialize_with = "socket_addr")]
    pub admin: SocketAddr,
    /// Reverse proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (for logging the
    /// caller); empty → the TCP peer is the caller.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Open connections of the public listener (bounded again below the open-file limit at start-up).
    #[serde(deserialize_with = "de::whole")]
    pub max_connections: usize,
    /// TLS handshake and request headers must be complete within this of their first byte.
    #[serde(deserialize_with = "de::duration")]
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this long without a byte.
    #[serde(deserialize_with = "de::duration")]
    pub idle_timeout: Duration,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            public: DEFAULT_PUBLIC_LISTEN.parse().expect("a socket address"),
            admin: DEFAULT_ADMIN_LISTEN.parse().expect("a socket address"),
            trusted_proxies: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let v = de::text(d)?;
    v.trim().parse().map_err(|_| {
        fail1(
            format!("`{}` is not an IP address with a port", v.trim()),
            "write IP:port, e.g. 0.0.0.0:8443, 127.0.0.1:9090 or [::]:8443",
        )
    })
}

/// IP networks; every word that is not one is a problem of its own.
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let mut nets = Vec::new();
    let mut problems = Vec::new();
    for w in de::words(d)? {
        match w.parse::<IpNet>() {
            Ok(n) => nets.push(n),
            Err(e) => problems.push((
                format!("has `{w}`: {e}"),
                "list proxy IP addresses or networks, e.g. [127.0.0.1, 10.0.0.0/8, fd00::/8]"
                    .to_owned(),
            )),
        }
    }
    if problems.is_empty() {
        Ok(nets)
    } else {
        Err(fail(&problems))
    }
}

impl ListenConfig {
    pub fn check(&mut self, s: &mut Section) {
        let (p, a) = (self.public, self.admin);
        let overlap = p.port() == a.port()
            && p.port() != 0
            && (p.ip() == a.ip() || p.ip().is_unspecified() || a.ip().is_unspecified());
        if overlap {
            s.problem(
                "admin",
                format!("overlaps listen.public ({p})"),
                "use another port: the admin API must never be reachable on the public listener",
            );
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            s.problem(
                "max_connections",
                format!("is {}, outside 1..={MAX_CONNECTIONS}", self.max_connections),
                "use a number such as 2048 (the default); it is also kept below the open-file limit",
            );
            self.max_connections = DEFAULT_MAX_CONNECTIONS;
        }
        s.positive("header_timeout", self.header_timeout);
        s.positive("idle_timeout", self.idle_timeout);
    }
}

/// `tls:` of the public listener; without it the listener speaks plain HTTP (a proxy in front
/// terminates TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(deserialize_with = "de::path")]
    pub cert: PathBuf,
    #[serde(deserialize_with = "de::path")]
    pub key: PathBuf,
    /// How often the files are checked for a renewed certificate (loaded without a restart).
    #[serde(deserialize_with = "de::duration")]
    pub reload_every: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            reload_every: DEFAULT_TLS_RELOAD_EVERY,
        }
    }
}

impl TlsConfig {
    pub fn check(&mut self, s: &mut Section) {
        for (name, path, certificate) in [("cert", &self.cert, true), ("key", &self.key, false)] {
            if !s.given(name) {
                s.missing_as(
                    name,
                    "is missing (tls needs both cert and key)",
                    "set both tls.cert and tls.key (PEM), or remove tls: when a proxy terminates TLS",
                );
            } else if s.usable(name) && certificate {
                s.pem_certificates(name, path);
            } else if s.usable(name) {
                s.pem_private_key(name, path);
            }
        }
        s.positive("reload_every", self.reload_every);
    }
}
