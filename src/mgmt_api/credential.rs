//! A tenant's credential: a client secret (inline or in a file) or a client certificate (PEM
//! pair, or PKCS#12), resolved from the tenant's keys and checked before anything is sent.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::Secret;
use crate::core::settings::{Section, de};

#[derive(Debug, Clone)]
pub enum Credential {
    Secret(Secret),
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        password: Option<Secret>,
    },
    /// Workload identity federation: a token file the platform keeps fresh (Kubernetes projects
    /// it at `AZURE_FEDERATED_TOKEN_FILE`), read at every token request and sent as the client
    /// assertion. Used by outputs that sign in on their own (`type: sentinel`).
    FederatedTokenFile(PathBuf),
}

/// `client_certificate:` — PEM cert and key, or one PKCS#12 file; a password for encrypted keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateKeys {
    #[serde(deserialize_with = "de::opt::path")]
    cert: Option<PathBuf>,
    #[serde(deserialize_with = "de::opt::path")]
    key: Option<PathBuf>,
    password: Option<Secret>,
    #[serde(deserialize_with = "de::opt::path")]
    password_file: Option<PathBuf>,
}

/// A tenant's credential from its keys: exactly one of `client_secret`, `client_secret_file` or
/// `client_certificate` (`s` is the tenant's section). Files named are read and checked.
pub fn resolve(
    secret: Option<&Secret>,
    secret_file: Option<&Path>,
    certificate: Option<&CertificateKeys>,
    s: &mut Section,
) -> Credential {
    let placeholder = Credential::Secret(Secret::new(String::new()));
    let one_of = "client_secret, client_secret_file or client_certificate";
    let given: Vec<&str> = ["client_secret", "client_secret_file", "client_certificate"]
        .into_iter()
        .filter(|k| s.given(k))
        .collect();
    match given.as_slice() {
        [] => {
            s.missing_as(
                "client_secret",
                "is missing: the tenant has no credential",
                format!(
                    "set exactly one of {one_of} (Azure portal → App registrations → your app → Certificates & secrets)"
                ),
            );
            return placeholder;
        }
        [_] => {}
        [first, rest @ ..] => {
            for extra in rest {
                s.problem(
                    extra,
                    format!("is set together with {}", s.path(first)),
                    format!("keep exactly one of {one_of}"),
                );
            }
            return placeholder;
        }
    }
    if let Some(secret) = secret {
        client_secret(s, "client_secret", secret);
        return Credential::Secret(secret.clone());
    }
    if let Some(path) = secret_file {
        return match s.secret_file("client_secret_file", path) {
            Some(secret) => {
                client_secret(s, "client_secret_file", &secret);
                Credential::Secret(secret)
            }
            None => placeholder,
        };
    }
    let Some(c) = certificate else {
        return placeholder;
    };
    let mut s = s.child("client_certificate");
    let pkcs12 = c.cert.as_deref().is_some_and(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"))
    });
    match &c.cert {
        Some(path) if pkcs12 => {
            let _ = s.read("cert", path);
        }
        Some(path) => s.pem_certificates("cert", path),
        None => s.missing(
            "cert",
            "set the certificate uploaded to the app registration (PEM, or PKCS#12 .p12/.pfx)",
        ),
    }
    let password = match (&c.password, &c.password_file) {
        (Some(pw), None) => Some(pw.clone()),
        (None, Some(path)) if !s.given("password") => s.secret_file("password_file", path),
        (_, _) if s.given("password") && s.given("password_file") => {
            let problem = format!("is set together with {}", s.path("password"));
            s.problem(
                "password_file",
                problem,
                "keep only one of password or password_file",
            );
            None
        }
        _ => None,
    };
    let encrypted = s.given("password") || s.given("password_file");
    let key = match &c.key {
        Some(path) => {
            // An encrypted key cannot be parsed without the password; the token code reports it.
            if pkcs12 || encrypted {
                let _ = s.read("key", path);
            } else {
                s.pem_private_key("key", path);
            }
            path.clone()
        }
        // PKCS#12 holds the key in the same file.
        None if pkcs12 => c.cert.clone().unwrap_or_default(),
        None => {
            s.missing(
                "key",
                "set the PEM private key of the certificate (or use a PKCS#12 .p12/.pfx file as cert)",
            );
            PathBuf::new()
        }
    };
    Credential::Certificate {
        cert: c.cert.clone().unwrap_or_default(),
        key,
        password,
    }
}

fn client_secret(s: &mut Section, key: &str, secret: &Secret) {
    let value = secret.expose();
    if value.is_empty() {
        s.problem(
            key,
            "is empty",
            "set the client secret's Value (Azure portal → App registrations → your app → Certificates & secrets)",
        );
    } else if is_guid(value) {
        s.problem(
            key,
            "looks like the secret's ID (a GUID), not the secret itself",
            "copy the Value column of the secret (Azure portal → App registrations → your app → Certificates & secrets); it is shown only once, so create a new secret if it is hidden",
        );
    }
}

/// Microsoft's GUID form: 8-4-4-4-12 hex digits.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(is_guid("66666666-7777-8888-9999-000000000000"));
        assert!(is_guid("ABCDEF01-2345-6789-abcd-ef0123456789"));
        assert!(!is_guid("66666666777788889999000000000000"));
        assert!(!is_guid("{66666666-7777-8888-9999-000000000000}"));
        assert!(!is_guid("contoso.onmicrosoft.com"));
        assert!(!is_guid("6666666g-7777-8888-9999-000000000000"));
    }
}
