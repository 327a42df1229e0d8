//! Certificate credentials for Azure AD: the application proves itself with a short-lived JWT
//! (`client_assertion`) signed by the private key of a certificate registered on the app, instead
//! of sending a shared secret. Microsoft recommends this over client secrets.
//!
//! The assertion follows Microsoft's "certificate credentials" format: header `alg` PS256, `typ`
//! JWT, `x5t#S256` (base64url SHA-256 of the certificate DER) and the older `x5t` (SHA-1) so that
//! either lookup finds the key; claims `aud` = the token endpoint URL, `iss` = `sub` = client id, a
//! unique `jti`, `nbf`/`iat` = now and `exp` a few minutes later.
//!
//! The certificate and key are read and checked once; only the RSA key pair and the thumbprints are
//! kept. Errors name the file and what is wrong with it, never key material.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RSA_PSS_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::core::Secret;

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of one assertion: Microsoft asks to keep it short (5–10 minutes after `nbf` at most);
/// a fresh one is signed for every token request anyway.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// A loaded client certificate: the key that signs assertions and the thumbprints naming it.
pub struct ClientCertificate {
    key: RsaKeyPair,
    x5t: String,
    x5t_s256: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

/// A local problem with the client certificate: the text names the file and what is wrong, never
/// key material. The token client reports it as a credential problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

fn problem(path: &Path, what: impl std::fmt::Display) -> CredentialError {
    CredentialError(format!("{}: {what}", path.display()))
}

fn is_pkcs12_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"))
}

impl ClientCertificate {
    /// Reads the configured files: a PKCS#12 `.p12`/`.pfx` (then `key` is the same file and
    /// `password` opens it), or a PEM certificate (the first one is the leaf; a chain may follow)
    /// with an unencrypted PEM RSA key, PKCS#8 or PKCS#1.
    pub fn load(
        cert: &Path,
        key: &Path,
        password: Option<&Secret>,
    ) -> Result<Self, CredentialError> {
        let cert_bytes = std::fs::read(cert).map_err(|e| problem(cert, e))?;
        if is_pkcs12_path(cert) || (cert == key && !looks_like_pem(&cert_bytes)) {
            let pw = password.map(Secret::expose).unwrap_or("");
            return Self::from_pkcs12(&cert_bytes, pw).map_err(|w| problem(cert, w));
        }
        let key_bytes = if key == cert {
            cert_bytes.clone()
        } else {
            std::fs::read(key).map_err(|e| problem(key, e))?
        };
        let cert_der = leaf_from_pem(&cert_bytes).map_err(|w| problem(cert, w))?;
        let key_path = key;
        let key = key_from_pem(&key_bytes).map_err(|w| problem(key_path, w))?;
        Self::from_parts(&cert_der, key).map_err(|w| {
            CredentialError(format!(
                "{} with {}: {w}",
                cert.display(),
                key_path.display()
            ))
        })
    }

    /// From PEM text (certificate, then key); `what` strings describe the problem without paths.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        let cert_der = leaf_from_pem(cert_pem)?;
        let key = key_from_pem(key_pem)?;
        Self::from_parts(&cert_der, key)
    }

    /// From a PKCS#12 archive: its first private key and the certificate holding that key's
    /// public half.
    pub fn from_pkcs12(data: &[u8], password: &str) -> Result<Self, String> {
        let archive =
            p12_keystore::Pkcs12Archive::from_pkcs12(data, password).map_err(|e| match e {
                p12_keystore::error::Error::MacError(_) => {
                    "PKCS#12 integrity check failed: wrong password (client_certificate.password)"
                        .to_string()
                }
                other => format!("not a readable PKCS#12 file ({other})"),
            })?;
        let bag = archive
            .keys
            .first()
            .ok_or("the PKCS#12 file holds no private key")?;
        let key = RsaKeyPair::from_pkcs8(bag.key.as_der()).map_err(
            |_| "the private key in the PKCS#12 file is not an RSA key Azure AD accepts",
        )?;
        let public = key.public_key().as_ref().to_vec();
        let cert = archive
            .certs
            .iter()
            .find(|c| rsa_public_key(c.cert.as_der()).is_ok_and(|p| p == public))
            .ok_or("the PKCS#12 file holds no certificate for its private key")?;
        Self::from_parts(cert.cert.as_der(), key)
    }

    fn from_parts(cert_der: &[u8], key: RsaKeyPair) -> Result<Self, String> {
        let public = rsa_public_key(cert_der)?;
        if public != key.public_key().as_ref() {
            return Err("the private key does not belong to the certificate".into());
        }
        if key.public_modulus_len() < 256 {
            return Err("the RSA key is shorter than 2048 bits; Azure AD refuses it".into());
        }
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        Ok(ClientCertificate {
            key,
            x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
            rng: SystemRandom::new(),
        })
    }

    /// Base64url SHA-256 thumbprint of the certificate (the `x5t#S256` header).
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// Base64url SHA-1 thumbprint of the certificate (the legacy `x5t` header).
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// A freshly signed assertion for `client_id` at the token endpoint `audience`.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<String, CredentialError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": iat,
            "nbf": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        let mut jwt = String::with_capacity(1024);
        jwt.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PSS_SHA256, &self.rng, jwt.as_bytes(), &mut sig)
            .map_err(|_| CredentialError("signing the client assertion failed".into()))?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(&sig));
        Ok(jwt)
    }
}

fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The first certificate of a PEM file.
fn leaf_from_pem(data: &[u8]) -> Result<Vec<u8>, String> {
    match CertificateDer::pem_slice_iter(data).next() {
        Some(Ok(c)) => Ok(c.to_vec()),
        Some(Err(e)) => Err(format!("unreadable PEM certificate ({})", pem_error(&e))),
        None => Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into()),
    }
}

/// An unencrypted RSA private key from PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
fn key_from_pem(data: &[u8]) -> Result<RsaKeyPair, String> {
    let encrypted = || {
        "the private key is encrypted; encrypted PEM keys are not supported: decrypt it \
         (openssl pkey -in key.pem -out plain.pem) and protect the file, or use a PKCS#12 file with a password"
            .to_string()
    };
    let text = String::from_utf8_lossy(data);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(encrypted());
    }
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(data) {
        let (kind, der) = item.map_err(|e| format!("unreadable PEM ({})", pem_error(&e)))?;
        let parsed = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.into()),
            SectionKind::EcPrivateKey => {
                return Err(
                    "the private key is an EC key; Azure AD client assertions need an RSA key"
                        .into(),
                );
            }
            _ => continue,
        };
        return match parsed {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).map_err(|_| {
                "the PKCS#8 private key is not a usable RSA key (Azure AD needs RSA, 2048 bits or more)"
                    .into()
            }),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map_err(|_| "the PKCS#1 RSA private key is not readable".into()),
            _ => Err("unsupported private key type".into()),
        };
    }
    Err(
        "no PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----) found"
            .into(),
    )
}

/// PEM errors without echoing file content.
fn pem_error(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line",
        pem::Error::Base64Decode(_) => "bad base64",
        _ => "malformed",
    }
}

/// The certificate's RSA public key (PKCS#1 `RSAPublicKey` DER).
fn rsa_public_key(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| "the certificate is not valid X.509 DER".to_string())?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(
            "the certificate does not hold an RSA key; Azure AD client assertions need RSA".into(),
        );
    }
    Ok(spki.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["collector.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn assertion_has_microsofts_header_and_claims() {
        let (cert, key) = self_signed();
        let c = ClientCertificate::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let jwt = c
            .assertion("client", "https://login/t/oauth2/token", now)
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t#S256"], c.x5t_s256());
        assert_eq!(URL_SAFE_NO_PAD.decode(c.x5t_s256()).unwrap().len(), 32);
        assert_eq!(claims["aud"], "https://login/t/oauth2/token");
        assert_eq!(claims["iss"], "client");
        assert_eq!(claims["sub"], "client");
        assert_eq!(claims["nbf"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_000_300u64);
        let again = c.assertion("client", "aud", now).unwrap();
        let claims2: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(again.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_ne!(claims["jti"], claims2["jti"], "jti is unique per assertion");
    }

    #[test]
    fn mismatched_key_and_ec_key_are_refused() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let e = ClientCertificate::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let e = ClientCertificate::from_pem(cert.as_bytes(), ec.as_bytes()).unwrap_err();
        assert!(e.contains("RSA"), "{e}");
        let e = ClientCertificate::from_pem(
            cert.as_bytes(),
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(e.contains("encrypted"), "{e}");
    }
}
