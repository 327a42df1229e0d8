//! The admin API, on its own listener (`listen.admin`), never on the public one.
//! STUB: the admin work fills this module; `AdminState` and `router` are the contract.

pub mod cli;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use tokio::sync::Notify;

use crate::config::{Secret, WebhookConfig};
use crate::pipeline::Tenants;
use crate::store::Store;
use crate::telemetry::Counters;

/// What the admin handlers share.
pub struct AdminState<S> {
    pub store: Arc<S>,
    pub tenants: Arc<Tenants>,
    pub counters: Arc<Counters>,
    /// `None` in pull mode.
    pub webhook: Option<WebhookConfig>,
    /// Bearer token required on every call except `/healthz` and `/readyz`; `None` only on loopback.
    pub token: Option<Secret>,
    /// Wakes the workers after a backfill stored something.
    pub wake: Arc<Notify>,
    pub started: SystemTime,
}

/// The admin router.
pub fn router<S: Store>(_state: Arc<AdminState<S>>) -> Router {
    Router::new()
}
