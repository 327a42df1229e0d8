//! One tenant while the collector runs: its configuration, API client, output and gate, Graph
//! side and listing lease, shared by the workers, pullers and the admin API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::gate;
pub use super::health::{Assessment, Gap, MAX_GAPS, Observed, TenantHealth, TenantState};
use crate::config::tenant::TenantConfig;
use crate::graph::client::GraphClient;
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
    /// The Graph client of Purview's Audit Log Query API (`backfill --source audit-search`);
    /// `None` in a national cloud, which does not offer it.
    pub audit_search: Option<GraphClient>,
    /// Whether this replica lists the tenant and keeps its subscriptions (`tenant_lease`).
    pub listing: ListingLease,
    /// Whether its listing waits for its backlog, and the windows Microsoft no longer kept.
    pub health: TenantHealth,
    /// Content types whose subscription needs a start that Microsoft's 15-minute rule does not
    /// allow yet, with the next allowed start (`lifecycle`): listed by pull until then.
    pub start_waits: Mutex<HashMap<String, std::time::SystemTime>>,
}

impl TenantRuntime {
    pub fn is_paused(&self, content_type: &str) -> bool {
        self.paused
            .lock()
            .map(|p| p.contains(content_type))
            .unwrap_or(false)
    }

    /// The tenant's state for `/status` and `o365_tenant_up` (see [`TenantHealth::assess`]).
    pub fn assess(&self) -> Assessment {
        self.health.assess(&Observed {
            output_paused: self
                .gate
                .paused_since()
                .map(|since| (self.output_name.clone(), since)),
            not_listed_here: !self.listing.held(),
        })
    }

    /// The content types waiting for a start (see `start_waits`), with the next allowed start,
    /// sorted by content type.
    pub fn start_waits(&self) -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = self
            .start_waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }

    /// Notes that `content_type`'s start waits until `until`, or (`None`) no longer waits.
    pub fn set_start_wait(&self, content_type: &str, until: Option<std::time::SystemTime>) {
        let mut w = self.start_waits.lock().unwrap_or_else(|e| e.into_inner());
        match until {
            Some(t) => {
                w.insert(content_type.to_owned(), t);
            }
            None => {
                w.remove(content_type);
            }
        }
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

/// Whether this replica lists one tenant.
#[derive(Debug, Default)]
pub struct ListingLease {
    /// `None`: not shared, always held. `Some(until)`: held until that instant.
    shared: Mutex<Option<Option<Instant>>>,
}

impl ListingLease {
    /// A lease held by nobody yet, to be taken through the store.
    pub fn shared() -> ListingLease {
        ListingLease {
            shared: Mutex::new(Some(None)),
        }
    }

    /// Whether this replica may list the tenant and keep its subscriptions now.
    pub fn held(&self) -> bool {
        match *self.shared.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some(until) => until.is_some_and(|u| Instant::now() < u),
        }
    }

    /// Held until `until` (`None`: not held), as [`super::tenant_lease::keep`] learnt it.
    pub(super) fn set(&self, until: Option<Instant>) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_some() {
            *s = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lease_of_one_process_is_always_held_and_a_shared_one_only_until_it_runs_out() {
        let own = ListingLease::default();
        own.set(None);
        assert!(own.held());
        let shared = ListingLease::shared();
        assert!(!shared.held());
        shared.set(Some(Instant::now() + Duration::from_secs(60)));
        assert!(shared.held());
        shared.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!shared.held());
    }
}
