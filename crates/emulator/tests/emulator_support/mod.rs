//! Helpers for tests/emulator.rs: an in-process emulator, token and API calls over real HTTPS, and a
//! real TLS webhook receiver (axum + axum-server) that records what it is sent.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use o365_emulator::{Emulator, EmulatorConfig, TenantSpec};
use serde_json::Value;

pub const T1: &str = "6a1b2c3d-0000-4000-8000-000000000001";
pub const C1: &str = "0c1a0000-0000-4000-8000-0000000000c1";
pub const S1: &str = "secret-one";
pub const T2: &str = "6a1b2c3d-0000-4000-8000-000000000002";
pub const C2: &str = "0c2a0000-0000-4000-8000-0000000000c2";
pub const S2: &str = "secret-two";
pub const PUBLISHER: &str = "11111111-2222-4333-8444-555555555555";

pub struct Env {
    pub emu: Emulator,
    pub http: reqwest::Client,
}

pub async fn start_with(modify: impl FnOnce(&mut EmulatorConfig)) -> Env {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut cfg = EmulatorConfig {
        tenants: vec![
            TenantSpec::with_secret(T1, C1, S1),
            TenantSpec::with_secret(T2, C2, S2),
        ],
        webhook_retry_base: Duration::from_millis(50),
        webhook_timeout: Duration::from_secs(3),
        ..EmulatorConfig::default()
    };
    modify(&mut cfg);
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    let http = emu.client().expect("client");
    Env { emu, http }
}

pub async fn start() -> Env {
    start_with(|_| {}).await
}

impl Env {
    /// Form POST to the token endpoint; returns status and JSON body.
    pub async fn token_request(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.emu.base_url()))
            .form(form)
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        (status, resp.json().await.expect("token JSON"))
    }

    pub async fn token_for(&self, tenant: &str, client: &str, secret: &str) -> String {
        let scope = format!("{}/.default", self.emu.base_url());
        let (status, body) = self
            .token_request(
                &format!("/{tenant}/oauth2/v2.0/token"),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    ("client_secret", secret),
                    ("scope", &scope),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn token(&self) -> String {
        self.token_for(T1, C1, S1).await
    }

    /// GET `{base}{path}` with the bearer token.
    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, HeaderMap, Value) {
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.emu.base_url())
        };
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, headers, v)
    }

    pub async fn post(&self, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.emu.base_url()))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, v)
    }

    pub fn feed(&self, tenant: &str) -> String {
        format!("/api/v1.0/{tenant}/activity/feed")
    }

    pub async fn start_sub(&self, token: &str, tenant: &str, ct: &str) {
        let (s, b) = self
            .post(
                token,
                &format!("{}/subscriptions/start?contentType={ct}", self.feed(tenant)),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    /// POST to the control surface.
    pub async fn control(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/_emulator/{path}", self.emu.base_url()))
            .json(&body)
            .send()
            .await
            .expect("control POST");
        let status = resp.status();
        (status, resp.json().await.expect("control JSON"))
    }

    pub async fn control_get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!(
                "{}/_emulator/{path_and_query}",
                self.emu.base_url()
            ))
            .send()
            .await
            .expect("control GET");
        let status = resp.status();
        (status, resp.json().await.expect("control JSON"))
    }
}

/// `error.code` of an API error body.
pub fn af(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    /// Status answered to validation requests / notifications.
    pub validation_status: Arc<AtomicU16>,
    pub notification_status: Arc<AtomicU16>,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

#[derive(Clone)]
struct RxState {
    got: Arc<Mutex<Vec<Received>>>,
    validation_status: Arc<AtomicU16>,
    notification_status: Arc<AtomicU16>,
}

async fn receive(
    State(st): State<RxState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let is_validation = headers.contains_key("webhook-validationcode");
    st.got.lock().unwrap().push(Received { headers, body: v });
    let code = if is_validation {
        &st.validation_status
    } else {
        &st.notification_status
    };
    StatusCode::from_u16(code.load(Ordering::Relaxed)).unwrap()
}

impl Receiver {
    /// A TLS webhook receiver whose certificate is issued by the emulator's CA.
    pub async fn start(emu: &Emulator) -> Receiver {
        let (cert, key) = emu.issue_server_cert(&["127.0.0.1", "localhost"]).unwrap();
        let config =
            axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
                .await
                .unwrap();
        let st = RxState {
            got: Arc::new(Mutex::new(Vec::new())),
            validation_status: Arc::new(AtomicU16::new(200)),
            notification_status: Arc::new(AtomicU16::new(200)),
        };
        let app = axum::Router::new()
            .route("/o365/webhook", axum::routing::post(receive))
            .with_state(st.clone());
        let handle = axum_server::Handle::new();
        let server = axum_server::bind_rustls(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
            config,
        )
        .handle(handle.clone());
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        let addr = handle.listening().await.expect("receiver listening");
        Receiver {
            url: format!("https://127.0.0.1:{}/o365/webhook", addr.port()),
            got: st.got,
            validation_status: st.validation_status,
            notification_status: st.notification_status,
            handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn notifications(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| !r.headers.contains_key("webhook-validationcode"))
            .collect()
    }

    pub fn stop(&self) {
        self.handle.shutdown();
    }
}
