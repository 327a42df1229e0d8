//! Serving a router on a socket, with rustls when certificates are configured, and draining on
//! shutdown with a deadline.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;

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
    RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| ServerError::Tls {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason: e.to_string(),
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

/// Binds `addr` and serves `router` until `shutdown`, then drains for up to [`DRAIN`].
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    tls: Option<RustlsConfig>,
    shutdown: CancellationToken,
) -> Result<Running, ServerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| ServerError::Bind {
        addr,
        reason: e.to_string(),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ServerError::Bind {
            addr,
            reason: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| ServerError::Bind {
        addr,
        reason: e.to_string(),
    })?;
    let handle: Handle<SocketAddr> = Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        h.graceful_shutdown(Some(DRAIN));
    });
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let task = match tls {
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(listener, tls)
                .map_err(|e| ServerError::Bind {
                    addr,
                    reason: e.to_string(),
                })?
                .handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(error = %e, "public listener failed");
                }
            })
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .map_err(|e| ServerError::Bind {
                    addr,
                    reason: e.to_string(),
                })?
                .handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(error = %e, "public listener failed");
                }
            })
        }
    };
    Ok(Running { addr: bound, task })
}
