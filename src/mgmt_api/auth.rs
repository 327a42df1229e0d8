//! Client-credentials tokens for the Management Activity API (client secret, or a certificate-signed
//! client assertion, see [`super::assertion`]): fetched from Azure AD (or the emulator),
//! cached, refreshed before they expire, and refreshed by one caller at a time.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex;

use super::assertion::{ASSERTION_TYPE, ClientCertificate, CredentialError};
use super::credential::Credential;
use super::wire::{TokenErrorBody, TokenResponse};
use crate::core::Secret;
use crate::telemetry::Counters;

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Azure AD refused the credentials (wrong secret, unknown app, …): retrying will not help.
    #[error("Azure AD refused the token request: {error}: {description}")]
    Rejected { error: String, description: String },
    /// The token endpoint could not be reached or answered 5xx: retry later.
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// Local problem with the credential (unreadable certificate, key not matching it, …): the
    /// text names the file and what is wrong, never key material.
    #[error("credential problem: {0}")]
    Credential(String),
}

impl From<CredentialError> for AuthError {
    fn from(e: CredentialError) -> Self {
        AuthError::Credential(e.0)
    }
}

impl AuthError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Unavailable(_))
    }
}

struct Cached {
    token: Secret,
    refresh_at: Instant,
}

/// How the application proves itself, prepared once from the configured [`Credential`].
enum Proof {
    Secret(Secret),
    /// The loaded certificate, or why it could not be loaded (reported on every token request,
    /// so that a broken file fails this tenant only).
    Certificate(Result<Arc<ClientCertificate>, AuthError>),
    /// A federated token re-read from its file at every request (the platform rotates it).
    FederatedTokenFile(std::path::PathBuf),
}

/// Tokens for one tenant's application.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    proof: Proof,
    resource: String,
    /// v2 endpoint: `scope={resource}/.default` instead of v1's `resource`.
    v2: bool,
    cached: Mutex<Option<Cached>>,
    counters: Option<Arc<Counters>>,
}

impl TokenSource {
    /// `authority` is e.g. `https://login.microsoftonline.com` (`https://login.microsoftonline.us`
    /// for GCC High and DoD); the v1 endpoint `{authority}/{tenant}/oauth2/token` takes `resource`.
    /// A certificate credential is read and checked here, once.
    pub fn new(
        http: reqwest::Client,
        authority: &str,
        tenant_id: &str,
        client_id: &str,
        credential: Credential,
        resource: &str,
    ) -> Self {
        let proof = match credential {
            Credential::Secret(s) => Proof::Secret(s),
            Credential::Certificate {
                cert,
                key,
                password,
            } => Proof::Certificate(
                ClientCertificate::load(&cert, &key, password.as_ref())
                    .map(Arc::new)
                    .map_err(AuthError::from),
            ),
            Credential::FederatedTokenFile(path) => Proof::FederatedTokenFile(path),
        };
        TokenSource {
            http,
            token_url: format!(
                "{}/{tenant_id}/oauth2/token",
                authority.trim_end_matches('/')
            ),
            client_id: client_id.to_string(),
            proof,
            resource: resource.to_string(),
            v2: false,
            cached: Mutex::new(None),
            counters: None,
        }
    }

    /// Tokens from the v2 endpoint `{authority}/{tenant}/oauth2/v2.0/token` with
    /// `scope={audience}/.default`: what Azure Monitor's Logs Ingestion API documents.
    pub fn new_v2(
        http: reqwest::Client,
        authority: &str,
        tenant_id: &str,
        client_id: &str,
        credential: Credential,
        audience: &str,
    ) -> Self {
        let mut t = TokenSource::new(http, authority, tenant_id, client_id, credential, audience);
        t.token_url = format!(
            "{}/{tenant_id}/oauth2/v2.0/token",
            authority.trim_end_matches('/')
        );
        t.v2 = true;
        t
    }

    /// Counts every token fetched from Azure AD in `Counters::token_refreshes`.
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// The token endpoint, which is also the `aud` of certificate assertions.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// A valid token: the cached one, or a fresh one when it is close to expiry. Concurrent callers
    /// wait for the single refresh in flight instead of starting their own.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.request().await?;
        if let Some(c) = &self.counters {
            Counters::add(&c.token_refreshes, 1);
        }
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + refresh_after(lifetime),
        });
        Ok(token)
    }

    /// Drops `rejected` from the cache after the API answered 401 with it, so the next call refreshes.
    pub async fn invalidate(&self, rejected: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == rejected) {
            *cached = None;
        }
    }

    async fn request(&self) -> Result<(Secret, Duration), AuthError> {
        let scope = format!("{}/.default", self.resource.trim_end_matches('/'));
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
        ];
        if self.v2 {
            form.push(("scope", &scope));
        } else {
            form.push(("resource", &self.resource));
        }
        let assertion;
        match &self.proof {
            Proof::Secret(s) => form.push(("client_secret", s.expose())),
            Proof::FederatedTokenFile(path) => {
                assertion = std::fs::read_to_string(path)
                    .map_err(|e| {
                        AuthError::Credential(format!(
                            "the federated token file {} cannot be read: {e}",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_owned();
                if assertion.is_empty() {
                    return Err(AuthError::Credential(format!(
                        "the federated token file {} is empty",
                        path.display()
                    )));
                }
                form.push(("client_assertion_type", ASSERTION_TYPE));
                form.push(("client_assertion", &assertion));
            }
            Proof::Certificate(Err(e)) => return Err(e.clone()),
            Proof::Certificate(Ok(cert)) => {
                // Fresh per request: a unique jti and a short exp.
                assertion = cert.assertion(&self.client_id, &self.token_url, SystemTime::now())?;
                form.push(("client_assertion_type", ASSERTION_TYPE));
                form.push(("client_assertion", &assertion));
            }
        }
        let resp = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(without_query(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AuthError::Unavailable(without_query(&e)))?;
        if status.is_success() {
            let t: TokenResponse = serde_json::from_slice(&body)
                .map_err(|e| AuthError::Unavailable(format!("unreadable token answer: {e}")))?;
            return Ok((
                Secret::new(t.access_token),
                Duration::from_secs(t.expires_in),
            ));
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(AuthError::Unavailable(format!("HTTP {status}")));
        }
        match serde_json::from_slice::<TokenErrorBody>(&body) {
            Ok(e) => Err(AuthError::Rejected {
                error: e.error,
                description: first_line(&e.error_description),
            }),
            Err(_) => Err(AuthError::Rejected {
                error: format!("HTTP {status}"),
                description: "the token endpoint answered without an Azure AD error body".into(),
            }),
        }
    }
}

/// Refresh 5 minutes before expiry, or half-way through a short lifetime.
fn refresh_after(lifetime: Duration) -> Duration {
    let early = Duration::from_secs(300).min(lifetime / 2);
    lifetime.saturating_sub(early)
}

/// AADSTS descriptions carry trace ids on further lines; the first line says what is wrong.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// reqwest errors print the whole URL: keep scheme, host, port and path (which host failed is
/// what an operator needs) and drop the query and any user info, which may carry more than that.
pub(crate) fn without_query(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        msg = msg.replace(url.as_str(), shown.as_str());
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn network_errors_name_the_host_but_not_the_query() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Nothing listens there any more: connection refused.
        let e = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{port}/tenant/oauth2/token?code=s3cr3t"
            ))
            .send()
            .await
            .unwrap_err();
        let text = without_query(&e);
        assert!(
            text.contains(&format!("127.0.0.1:{port}/tenant/oauth2/token")),
            "{text}"
        );
        assert!(!text.contains("s3cr3t") && !text.contains("()"), "{text}");
    }

    /// Workload identity: the v2 endpoint gets `scope={audience}/.default` and the token file's
    /// content as the client assertion, read again at every request (the platform rotates it).
    #[tokio::test]
    async fn federated_token_file_is_the_v2_client_assertion() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut forms = Vec::new();
            for _ in 0..2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head and body: read until the body announced by Content-Length is in.
                loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            forms.push((head.lines().next().unwrap().to_owned(), body.to_owned()));
                            break;
                        }
                    }
                    assert!(n > 0, "connection closed early");
                }
                let answer = r#"{"token_type":"Bearer","expires_in":0,"access_token":"t"}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                sock.write_all(resp.as_bytes()).await.unwrap();
            }
            forms
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first.jwt.value\n").unwrap();
        let t = TokenSource::new_v2(
            reqwest::Client::new(),
            &format!("http://{addr}"),
            "t1",
            "c1",
            Credential::FederatedTokenFile(file.clone()),
            "https://monitor.azure.us",
        );
        assert_eq!(t.token().await.unwrap().expose(), "t");
        std::fs::write(&file, "second.jwt.value").unwrap();
        // A token with no lifetime left is fetched again at the next call.
        t.token().await.unwrap();
        let forms = server.await.unwrap();
        let decoded = |body: &str| {
            let unescape = |v: &str| {
                let b = v.replace('+', " ").into_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' && i + 2 < b.len() {
                        let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            body.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (unescape(k), unescape(v)))
                .collect::<std::collections::HashMap<String, String>>()
        };
        assert_eq!(forms[0].0, "POST /t1/oauth2/v2.0/token HTTP/1.1");
        let first = decoded(&forms[0].1);
        assert_eq!(first["scope"], "https://monitor.azure.us/.default");
        assert_eq!(first["client_assertion"], "first.jwt.value");
        assert_eq!(first["client_assertion_type"], ASSERTION_TYPE);
        assert!(!first.contains_key("resource") && !first.contains_key("client_secret"));
        assert_eq!(decoded(&forms[1].1)["client_assertion"], "second.jwt.value");
        std::fs::remove_file(&file).unwrap();
        let t = TokenSource::new_v2(
            reqwest::Client::new(),
            "http://127.0.0.1:9",
            "t1",
            "c1",
            Credential::FederatedTokenFile(file.clone()),
            "https://monitor.azure.com",
        );
        let e = t.token().await.unwrap_err();
        assert!(
            matches!(e, AuthError::Credential(ref m) if m.contains("federated token file")),
            "{e}"
        );
    }

    #[test]
    fn refreshes_early() {
        assert_eq!(
            refresh_after(Duration::from_secs(3599)),
            Duration::from_secs(3299)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn v1_token_endpoint_per_cloud() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let secret = || Credential::Secret(Secret::new("s"));
        for (authority, resource, url) in [
            (
                "https://login.microsoftonline.com",
                "https://manage.office.com",
                "https://login.microsoftonline.com/t1/oauth2/token",
            ),
            (
                "https://login.microsoftonline.com/",
                "https://manage-gcc.office.com",
                "https://login.microsoftonline.com/t1/oauth2/token",
            ),
            (
                "https://login.microsoftonline.us",
                "https://manage.office365.us",
                "https://login.microsoftonline.us/t1/oauth2/token",
            ),
            (
                "https://login.microsoftonline.us/",
                "https://manage.protection.apps.mil",
                "https://login.microsoftonline.us/t1/oauth2/token",
            ),
        ] {
            let t = TokenSource::new(
                reqwest::Client::new(),
                authority,
                "t1",
                "c",
                secret(),
                resource,
            );
            assert_eq!(t.token_url(), url);
            assert_eq!(t.resource, resource);
        }
    }
}
