//! Serving a router on a socket, with rustls when certificates are configured, and draining on
//! shutdown with a deadline. Certificates are re-read when their files change ([`watch_tls`]), so a
//! renewal (cert-manager, ACME client, operator) needs no restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod config;
mod guard;

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio_util::sync::CancellationToken;

pub use config::{ListenConfig, TlsConfig};
pub use guard::ConnLimits;
use guard::Guard;

use crate::log_limit::{LOG_EVERY, LogLimiter};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot load TLS certificate {cert} / key {key}: {reason}")]
    Tls {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// How long in-flight requests may take to finish after shutdown was requested.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Loads a PEM certificate chain and key for the public listener.
pub async fn tls_config(cert: &Path, key: &Path) -> Result<RustlsConfig, ServerError> {
    install_crypto_provider();
    let files = read_pair(cert, key)
        .await
        .map_err(|reason| ServerError::Tls {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason,
        })?;
    let config = server_config(&files).map_err(|reason| ServerError::Tls {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason,
    })?;
    Ok(RustlsConfig::from_config(config))
}

/// Both files' bytes: what is compared between polls and parsed on change.
#[derive(PartialEq, Eq)]
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

async fn read_pair(cert: &Path, key: &Path) -> Result<PemPair, String> {
    let cert_bytes = tokio::fs::read(cert)
        .await
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_bytes = tokio::fs::read(key)
        .await
        .map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    Ok(PemPair {
        cert: cert_bytes,
        key: key_bytes,
    })
}

/// A rustls server config (aws-lc-rs, HTTP/2 and HTTP/1.1 by ALPN) from PEM bytes; refuses a key
/// that does not belong to the certificate, as happens mid-rotation when one file is already new.
fn server_config(files: &PemPair) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no CERTIFICATE block in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("key: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("key does not match the certificate: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Loads the certificate pair like [`tls_config`] and keeps it fresh: the files are polled every
/// `every` and the served certificate is swapped when their contents change. New files that do
/// not load (half-written, mismatched, not PEM) are reported once and the current certificate
/// stays in service; the next change is tried again. The watcher ends on `shutdown`.
pub async fn reloading_tls_config(
    cert: &Path,
    key: &Path,
    every: Duration,
    shutdown: CancellationToken,
) -> Result<(RustlsConfig, tokio::task::JoinHandle<()>), ServerError> {
    install_crypto_provider();
    let error = |reason| ServerError::Tls {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason,
    };
    let files = read_pair(cert, key).await.map_err(error)?;
    let tls = RustlsConfig::from_config(server_config(&files).map_err(error)?);
    let watcher = watch_tls(
        tls.clone(),
        files,
        cert.to_path_buf(),
        key.to_path_buf(),
        every,
        shutdown,
    );
    Ok((tls, watcher))
}

/// The polling loop of [`reloading_tls_config`]; `loaded` is what is served at the start.
fn watch_tls(
    tls: RustlsConfig,
    loaded: PemPair,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // What is served now, and the last files that did not load: unchanged files are not
        // parsed again, and only a certificate actually swapped in is reported as reloaded.
        let mut served = loaded;
        let mut refused: Option<PemPair> = None;
        let mut unreadable = false;
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let files = match read_pair(&cert, &key).await {
                Ok(f) => f,
                Err(reason) => {
                    if !unreadable {
                        tracing::warn!(%reason, "TLS certificate files unreadable; keeping the current certificate");
                        unreadable = true;
                    }
                    continue;
                }
            };
            if std::mem::take(&mut unreadable) {
                tracing::info!(cert = %cert.display(), "TLS certificate files readable again");
            }
            if files == served || refused.as_ref() == Some(&files) {
                continue;
            }
            match server_config(&files) {
                Ok(config) => {
                    tls.reload_from_config(config);
                    tracing::info!(cert = %cert.display(), key = %key.display(), "TLS certificate reloaded");
                    served = files;
                    refused = None;
                }
                Err(reason) => {
                    tracing::warn!(cert = %cert.display(), key = %key.display(), %reason,
                        "new TLS certificate files do not load; keeping the current certificate");
                    refused = Some(files);
                }
            }
        }
    })
}

/// The one crypto provider of the process (aws-lc-rs); harmless when already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A server that is running: its bound address and the task that ends when it has drained.
pub struct Running {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` and serves `router` until `shutdown`, then drains for up to [`DRAIN`]. Every
/// connection is held to `limits` ([`guard`]); a TLS handshake must finish within
/// `header_timeout`. Accept errors (`EMFILE`, failed handshakes, refusals at the cap) are logged at
/// most once per kind and peer per [`LOG_EVERY`]; the accept loop backs off after a listener error.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    tls: Option<RustlsConfig>,
    limits: &ConnLimits,
    shutdown: CancellationToken,
) -> Result<Running, ServerError> {
    let bind_error = |e: std::io::Error| ServerError::Bind {
        addr,
        reason: e.to_string(),
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let handle: Handle<SocketAddr> = Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        h.graceful_shutdown(Some(DRAIN));
    });
    let log = Arc::new(LogLimiter::new(LOG_EVERY));
    let guard = Guard::new(limits.clone(), log.clone());
    let on_error = move |peer: Option<&SocketAddr>, e: &std::io::Error| accept_error(&log, peer, e);
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut server = axum_server::from_tcp(listener)
        .map_err(bind_error)?
        .accept_error_handler(on_error)
        .handle(handle);
    let http = server.http_builder();
    http.http1().max_buf_size(MAX_HEADER_BYTES);
    http.http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(H2_STREAMS)
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW);
    let task = match tls {
        Some(tls) => {
            let acceptor = RustlsAcceptor::new(tls)
                .handshake_timeout(limits.header_timeout)
                .acceptor(guard);
            let server = server.acceptor(acceptor);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(error = %e, "listener failed");
                }
            })
        }
        None => {
            let server = server.acceptor(guard);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(error = %e, "listener failed");
                }
            })
        }
    };
    Ok(Running { addr: bound, task })
}

/// Largest request head (HTTP/1 buffer, HTTP/2 header list): Microsoft's headers are well under it,
/// and it is what a connection dribbling headers can make us hold.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// HTTP/2 streams at once per connection, and the flow-control windows that bound how much body a
/// connection can have us buffer before the handler reads it.
const H2_STREAMS: u32 = 32;
/// `webhook::intake::DISCARD_MAX_BYTES` (what a refused body may send before the answer) equals it.
const H2_WINDOW: u32 = 256 * 1024;

fn accept_error(log: &LogLimiter, peer: Option<&SocketAddr>, e: &std::io::Error) {
    let key = match peer {
        Some(p) => format!("{} {:?}", p.ip(), e.kind()),
        None => format!("listener {:?}", e.kind()),
    };
    if let Some(held_back) = log.admit(&key) {
        match peer {
            // Failed handshakes, timeouts, refusals at the cap: the peer's doing.
            Some(p) => tracing::info!(peer = %p.ip(), error = %e, held_back, "connection dropped"),
            // The listener itself (EMFILE, ENFILE, ENOBUFS): ours; accepting resumes after a pause.
            None => tracing::warn!(error = %e, held_back, "cannot accept connections"),
        }
    }
}

/// Raises the soft limit on open files to the hard one (so `max_connections` is not cut short by
/// a distribution's 1024 default) and returns the soft limit in force, if known.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::warn!(error = %e, soft = ?limit.current, hard = ?limit.maximum,
                "cannot raise the open-file limit to the hard limit"),
        }
    }
    limit.current
}

/// Open connections of the admin listener; counted in [`FD_RESERVE`].
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// File descriptors kept for everything but the public listener's connections: the store, output
/// files and connections, outbound HTTPS, the admin listener.
pub const FD_RESERVE: u64 = 256;

/// `max_connections` bounded below the open-file limit, so that accepting can never take the fds
/// the store, outputs and outbound calls need.
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(fds) => configured.min(fds.saturating_sub(FD_RESERVE).max(1) as usize),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(2048, Some(20_000)), 2048);
        assert_eq!(connection_cap(2048, Some(1024)), 1024 - FD_RESERVE as usize);
        assert_eq!(
            connection_cap(2048, Some(10)),
            1,
            "a tiny limit still serves"
        );
        assert_eq!(connection_cap(2048, None), 2048);
    }
}
