//! The work after a notification is stored: workers claim blobs, fetch them with the tenant's token,
//! map and encode the records, hand them to the output, and complete the blob only after the output
//! accepted them. `lifecycle` keeps the webhook subscriptions in place.

pub mod blob;
pub mod gate;
pub mod jobs;
pub mod lifecycle;
pub mod puller;
pub mod stream;
pub mod tenant_lease;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::TenantConfig;
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
    pub graph: Option<crate::graph::puller::GraphRuntime>,
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
