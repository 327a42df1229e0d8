//! Faithful emulator of Microsoft's Office 365 Management Activity API and Azure AD token endpoint.
//! STUB: the emulator work replaces this file; the public signatures below are the contract.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub mod cli {
    /// `o365-collector emulator` flags.
    #[derive(clap::Args, Debug, Clone)]
    pub struct EmulatorArgs {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8444")]
        pub listen: std::net::SocketAddr,
    }

    /// Runs the emulator until SIGINT/SIGTERM.
    pub async fn serve(_args: EmulatorArgs) -> Result<(), super::EmulatorError> {
        Err(super::EmulatorError::Config("not built yet".into()))
    }
}

/// Errors of the emulator's own setup (never of the emulated API, which answers with HTTP errors).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("emulator configuration: {0}")]
    Config(String),
    #[error("emulator I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One registered application in one tenant.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// PEM certificates accepted for `client_assertion`.
    pub certificates_pem: Vec<String>,
}

/// Emulator settings; `Default` is what tests start from.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub tenants: Vec<TenantSpec>,
    /// Given certificate and key; `None` generates a CA and a server certificate.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub seed: u64,
    pub token_lifetime: Duration,
    pub content_delay: Duration,
    pub throttle_per_minute: u32,
    pub webhook_retry_base: Duration,
    /// Extra roots trusted when delivering to webhooks (the emulator always trusts its own CA).
    pub webhook_ca_pem: Vec<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            tenants: Vec::new(),
            tls: None,
            seed: 1,
            token_lifetime: Duration::from_secs(3599),
            content_delay: Duration::ZERO,
            throttle_per_minute: 2000,
            webhook_retry_base: Duration::from_secs(1),
            webhook_ca_pem: Vec::new(),
        }
    }
}

/// A running emulator.
pub struct Emulator {
    base_url: String,
    ca_pem: String,
}

impl Emulator {
    pub async fn start(_cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        Err(EmulatorError::Config("not built yet".into()))
    }
    /// `https://127.0.0.1:PORT` — the resource, the authority and the contentUri host.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
    /// PEM of the CA that signed the emulator's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
    /// A server certificate for `names`, signed by the emulator's CA (which the emulator trusts for
    /// webhook delivery): returns (cert PEM, key PEM).
    pub fn issue_server_cert(&self, _names: &[&str]) -> Result<(String, String), EmulatorError> {
        Err(EmulatorError::Config("not built yet".into()))
    }
    pub async fn shutdown(self) {}
}
