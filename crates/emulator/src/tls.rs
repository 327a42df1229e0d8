//! Certificates: the emulator's own CA, the server certificate it signs, and rustls configurations.
//! Everything is generated in memory at start so tests and demos need no files.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::EmulatorError;

/// The emulator's certificate authority (ECDSA P-256, valid for ten years from its creation).
pub(crate) struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Tls(format!("{what}: {e}"))
}

impl Ca {
    pub fn generate() -> Result<Ca, EmulatorError> {
        let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            "o365-collector emulator CA (testing only)",
        );
        dn.push(DnType::OrganizationName, "o365-collector");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, 3650);
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_err("CA certificate", e))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) usable as a TLS server and client.
    pub fn issue(&self, names: &[&str]) -> Result<(String, String), EmulatorError> {
        if names.is_empty() {
            return Err(EmulatorError::Config(
                "a certificate needs at least one name".into(),
            ));
        }
        let key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(|e| tls_err("certificate names", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0]);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        set_validity(&mut params, 825);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_err("server certificate", e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Valid from yesterday to `days` from now (rcgen takes calendar dates).
fn set_validity(params: &mut CertificateParams, days: i64) {
    use chrono::Datelike;
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::days(1);
    let to = now + chrono::Duration::days(days);
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

/// Parses a PEM chain (one or more certificates).
pub(crate) fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, EmulatorError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("certificate PEM", e))?;
    if certs.is_empty() {
        return Err(EmulatorError::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

pub(crate) fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, EmulatorError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| tls_err("private key PEM", e))
}

/// rustls server configuration with the aws-lc-rs provider, HTTP/2 and HTTP/1.1.
pub(crate) fn server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, EmulatorError> {
    let certs = certs_from_pem(cert_pem)?;
    let key = key_from_pem(key_pem)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err("TLS versions", e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls_err("server certificate/key", e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// rustls client configuration trusting exactly the given PEM roots.
pub(crate) fn client_config(roots_pem: &[&str]) -> Result<rustls::ClientConfig, EmulatorError> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        for cert in certs_from_pem(pem)? {
            roots.add(cert).map_err(|e| tls_err("trust root", e))?;
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err("TLS versions", e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(cfg)
}

/// A reqwest client trusting the given roots (HTTP/1.1, no redirects).
pub(crate) fn reqwest_client(
    roots_pem: &[&str],
    timeout: Option<std::time::Duration>,
) -> Result<reqwest::Client, EmulatorError> {
    let tls = client_config(roots_pem)?;
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().map_err(|e| tls_err("HTTP client", e))
}
