//! `admin:`: the token that guards the admin API; its checks.

use std::path::PathBuf;

use serde::Deserialize;

use crate::core::Secret;
use crate::core::settings::{Section, de};

/// Shortest accepted admin token: it guards subscription changes and backfills.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `Authorization: Bearer <token>` required on the admin API; `None`: loopback only.
    pub token: Option<Secret>,
    /// The token read from a file instead (into `token`, by the check).
    #[serde(deserialize_with = "de::opt::path")]
    pub token_file: Option<PathBuf>,
}

impl AdminConfig {
    /// Checks the token and reads `token_file`. `listen` is where the admin API listens (at
    /// `listen_order` in the file): off loopback, a token is required.
    pub fn check(&mut self, s: &mut Section, listen: std::net::SocketAddr, listen_order: usize) {
        match (&self.token, &self.token_file) {
            (Some(token), None) if !s.token("token", token, MIN_TOKEN_LEN) => self.token = None,
            (None, Some(path)) if !s.given("token") => {
                self.token = s.secret_file("token_file", path);
                if let Some(token) = &self.token
                    && !s.token("token_file", token, MIN_TOKEN_LEN)
                {
                    self.token = None;
                }
            }
            (_, Some(_)) if s.given("token") => {
                s.problem(
                    "token_file",
                    "is set together with admin.token",
                    "keep only one of token or token_file",
                );
            }
            _ => {}
        }
        if !s.given("token") && !s.given("token_file") && !listen.ip().is_loopback() {
            let key = s.path("token");
            s.problems.push_at(
                listen_order,
                &key,
                format!("is missing while the admin API listens on {listen}, reachable from other machines"),
                "set admin.token (e.g. ${O365_ADMIN_TOKEN}, at least 16 random characters), or bind listen.admin to 127.0.0.1",
            );
        }
    }
}
