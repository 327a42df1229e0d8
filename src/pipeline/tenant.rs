//! One tenant while the collector runs: its configuration, API client, output and gate, Graph
//! side and listing lease, shared by the workers, pullers and the admin API.

use std::collections::HashMap;
use std::sync::Arc;

use super::{gate, tenant_lease};
use crate::config::TenantConfig;
use crate::graph::runtime::GraphRuntime;
use crate::mgmt_api::ManagementClient;
use crate::output::AnyOutput;

/// Everything a worker needs to process one tenant's blobs.
pub struct TenantRuntime {
    pub cfg: TenantConfig,
    pub client: ManagementClient,
    pub output: Arc<AnyOutput>,
    pub output_name: String,
    /// The output's gate, shared with the other tenants of the same output.
    pub gate: Arc<gate::OutputGate>,
    /// Content types an operator stopped through the admin API: the subscription keeper leaves them
    /// stopped until they are started again (or the process restarts).
    pub paused: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The Graph client and feed status, when the tenant collects a Graph feed.
    pub graph: Option<GraphRuntime>,
    /// Whether this replica lists the tenant and keeps its subscriptions ([`tenant_lease`]).
    pub listing: tenant_lease::ListingLease,
}

impl TenantRuntime {
    pub fn is_paused(&self, content_type: &str) -> bool {
        self.paused
            .lock()
            .map(|p| p.contains(content_type))
            .unwrap_or(false)
    }

    pub fn set_paused(&self, content_type: &str, paused: bool) {
        if let Ok(mut p) = self.paused.lock() {
            if paused {
                p.insert(content_type.to_string());
            } else {
                p.remove(content_type);
            }
        }
    }
}

/// Tenants by lower-case tenant id.
pub type Tenants = HashMap<String, Arc<TenantRuntime>>;
