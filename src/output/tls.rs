//! rustls client configuration shared by the network outputs: the system's trust roots plus an
//! optional CA file, and an optional client certificate for mutual TLS.
//!
//! Crypto provider: the project uses aws-lc-rs only. The Kafka client's TLS feature compiles
//! rustls's `ring` provider in as well, and with two providers compiled rustls can no longer pick
//! one by itself: `ClientConfig::builder()` / `ServerConfig::builder()` without an explicit
//! provider would panic. Every config here names aws-lc-rs explicitly, and
//! [`crate::server::install_crypto_provider`] (called by `App::start`, `demo`, the emulator and
//! the Kafka output) makes aws-lc-rs the process default for any other code.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why a client configuration could not be built: the output's key at fault (`ca_file`,
/// `client_cert`, `client_key`, `server_name`) and the reason, which names the file, never its content.
pub(crate) type TlsProblem = (&'static str, String);

/// The fix for a [`TlsProblem`] at `key`.
pub(crate) fn tls_fix(key: &str) -> &'static str {
    match key {
        "ca_file" => {
            "point ca_file at the PEM certificate(s) of the CA that signed the receiver's certificate"
        }
        "client_cert" => "point client_cert at a PEM certificate (chain) whose key is client_key",
        "client_key" => "point client_key at the unencrypted PEM private key of client_cert",
        "server_name" => "write the DNS name (or IP address) in the receiver's certificate",
        _ => "check the output's TLS settings",
    }
}

/// Builds the configuration.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    client_identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsProblem> {
    client_config_for(ca_file, client_identity, alpn, None)
}

/// Like [`client_config`]; with `server_name`, every server's certificate is checked against that
/// name instead of the host the connection was made to (the Kafka client derives the name from
/// each broker's advertised host, which may be an IP address the certificate does not carry).
pub(crate) fn client_config_for(
    ca_file: Option<&Path>,
    client_identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
    server_name: Option<&str>,
) -> Result<rustls::ClientConfig, TlsProblem> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        for cert in read_certs(path).map_err(|e| ("ca_file", e))? {
            roots
                .add(cert)
                .map_err(|e| ("ca_file", format!("{}: {e}", path.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("ca_file", e.to_string()))?;
    let builder = match server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.to_owned()).map_err(|_| {
                (
                    "server_name",
                    format!("`{name}` is not a DNS name or IP address"),
                )
            })?;
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| ("ca_file", format!("trust roots: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedName { inner, name }))
        }
    };
    let mut cfg = match client_identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert).map_err(|e| ("client_cert", e))?;
            let bytes = std::fs::read(key)
                .map_err(|e| ("client_key", format!("{}: {e}", key.display())))?;
            let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
                (
                    "client_key",
                    format!("{}: no usable PEM private key", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                (
                    "client_cert",
                    format!("client certificate {}: {e}", cert.display()),
                )
            })?
        }
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The standard WebPKI verification, against a configured name instead of the connected host.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With ring compiled in too (the Kafka client's TLS feature), rustls cannot pick a provider by
    /// itself; after `install_crypto_provider` the provider-less builders work and use aws-lc-rs.
    #[test]
    fn provider_less_builders_work_after_install() {
        crate::server::install_crypto_provider();
        crate::server::install_crypto_provider();
        let _ = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let default = CryptoProvider::get_default().expect("installed");
        let aws = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(
            format!("{:?}", default.key_provider),
            format!("{:?}", aws.key_provider)
        );
        let ring = rustls::crypto::ring::default_provider();
        assert_ne!(
            format!("{:?}", default.key_provider),
            format!("{:?}", ring.key_provider)
        );
    }
}
