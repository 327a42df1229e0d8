//! `webhook:`: where Microsoft posts notifications and what a post may be; its defaults and checks.
//! Without it the collector runs in pull mode.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::Secret;
use crate::core::settings::{Section, de};

pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 << 20;
/// Shortest accepted auth id: it is the only thing telling Microsoft's posts from forged ones.
pub const MIN_AUTH_ID_LEN: usize = 8;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Public HTTPS URL Microsoft posts to (behind the proxy, if any).
    #[serde(deserialize_with = "de::text")]
    pub address: String,
    pub auth_id: Secret,
    /// The auth id read from a file instead (into `auth_id`, by the check).
    #[serde(deserialize_with = "de::opt::path")]
    pub auth_id_file: Option<PathBuf>,
    /// Path the public listener serves the webhook on (default: the address's path).
    #[serde(deserialize_with = "de::text")]
    pub path: String,
    /// Largest accepted notification body.
    #[serde(deserialize_with = "de::size")]
    pub max_body_bytes: usize,
    /// A body must arrive whole within this once its headers were accepted.
    #[serde(deserialize_with = "de::duration")]
    pub body_timeout: Duration,
    /// Bytes of all bodies being received at once, across connections (over it: 503).
    #[serde(deserialize_with = "de::size")]
    pub max_inflight_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            address: String::new(),
            auth_id: Secret::new(String::new()),
            auth_id_file: None,
            path: String::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
        }
    }
}

impl WebhookConfig {
    /// Checks the settings, derives `path` from the address and reads `auth_id_file`.
    pub fn check(&mut self, s: &mut Section) {
        self.address = self.address.trim().to_owned();
        let mut address_path = None;
        if !s.given("address") {
            s.missing(
                "address",
                "set the public HTTPS URL Microsoft posts notifications to, or remove webhook: to run in pull mode",
            );
        } else if s.usable("address") {
            let fix = "use the public HTTPS URL Microsoft posts to, e.g. https://collector.example.com/o365/webhook (Microsoft only calls HTTPS)";
            if let Some(url) = s.https_url("address", &self.address, fix) {
                if url.query().is_some() {
                    s.problem(
                        "address",
                        "has a query (`?…`), which the listener does not check",
                        "remove the query; auth_id is what authenticates Microsoft's posts",
                    );
                }
                address_path = Some(url.path().to_owned());
            }
        }
        self.path = self.path.trim().to_owned();
        if s.given("path") {
            let p = &self.path;
            if s.usable("path")
                && (!p.starts_with('/')
                    || p.contains(['?', '#'])
                    || p.contains(char::is_whitespace))
            {
                s.problem(
                    "path",
                    "is not a URL path",
                    "write a path starting with `/`, e.g. /o365/webhook, or remove it to use the address's path",
                );
            }
        } else {
            self.path = address_path
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".to_owned());
        }
        match (s.given("auth_id"), &self.auth_id_file) {
            (false, None) if !s.given("auth_id_file") => s.missing(
                "auth_id",
                "set auth_id (e.g. ${O365_WEBHOOK_AUTH_ID} holding `openssl rand -hex 16`): Microsoft echoes it in Webhook-AuthID so forged posts can be refused",
            ),
            (true, None) if s.usable("auth_id") => {
                s.token("auth_id", &self.auth_id, MIN_AUTH_ID_LEN);
            }
            (false, Some(path)) => {
                if let Some(id) = s.secret_file("auth_id_file", path) {
                    s.token("auth_id_file", &id, MIN_AUTH_ID_LEN);
                    self.auth_id = id;
                }
            }
            (true, Some(_)) => {
                let problem = format!("is set together with {}", s.path("auth_id"));
                s.problem("auth_id_file", problem, "keep only one of auth_id or auth_id_file");
            }
            _ => {}
        }
        if self.max_body_bytes == 0 {
            s.problem(
                "max_body_bytes",
                "is 0 or too large",
                "use a size such as 1MiB (the default)",
            );
        }
        s.positive("body_timeout", self.body_timeout);
        if !s.given("max_inflight_bytes") {
            self.max_inflight_bytes = self.max_inflight_bytes.max(self.max_body_bytes);
        } else if self.max_inflight_bytes < self.max_body_bytes {
            s.problem(
                "max_inflight_bytes",
                format!(
                    "is smaller than webhook.max_body_bytes ({} bytes): no full-size body could be received",
                    self.max_body_bytes
                ),
                "use a size of several bodies, such as 16MiB (the default)",
            );
        }
    }
}
