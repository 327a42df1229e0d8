//! One tenant while the collector runs: its configuration, API client, output and gate, Graph
//! side and listing lease, shared by the workers, pullers and the admin API.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::gate;
use crate::config::tenant::TenantConfig;
use crate::graph::runtime::GraphRuntime;
use crate::mgmt_api::ManagementClient;
use crate::output::AnyOutput;
use crate::telemetry::{Counters, Metrics};

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
    /// Whether this replica lists the tenant and keeps its subscriptions (`tenant_lease`).
    pub listing: ListingLease,
    /// Whether its listing waits for its backlog, and the windows Microsoft no longer kept.
    pub health: TenantHealth,
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

/// Gaps kept per tenant for `/status` (the newest; the metrics count them all).
pub const MAX_GAPS: usize = 20;

/// A stretch of time whose content was lost: listing had to resume after it, because Microsoft no
/// longer keeps what was published in it (7 days for the activity API, 30 for sign-ins and
/// audits). Shown in `/status`, counted in `o365_listing_gaps_total`, logged once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// The content type or Graph feed (`Graph.SignIns`, …).
    pub source: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
    pub noticed_at: DateTime<Utc>,
}

/// A tenant's listing health, shared by its pullers and the admin API.
#[derive(Debug, Default)]
pub struct TenantHealth {
    deferring: AtomicBool,
    gaps: Mutex<VecDeque<Gap>>,
    /// The process's counters, where gaps are counted.
    counters: Arc<Counters>,
}

impl TenantHealth {
    pub fn new(counters: Arc<Counters>) -> TenantHealth {
        TenantHealth {
            counters,
            ..TenantHealth::default()
        }
    }

    /// Records that the tenant's listing waits (`true`) or goes on (`false`) for its backlog;
    /// logs only the changes.
    pub fn set_deferring(&self, tenant_id: &str, deferring: bool, queued: u64, high_water: u64) {
        if self.deferring.swap(deferring, Ordering::Relaxed) == deferring {
            return;
        }
        if deferring {
            warn!(tenant.id = %tenant_id, queued, high_water,
                  "tenant's queue at its high water mark (its output is slow or down): its listing waits; other tenants go on");
        } else {
            info!(tenant.id = %tenant_id, high_water, "tenant's queue below its high water mark: its listing resumes");
        }
    }

    pub fn deferring(&self) -> bool {
        self.deferring.load(Ordering::Relaxed)
    }

    /// Records a lost window once: the same `source` and `from` again (a round retried before the
    /// cursor moved) only widens the last entry.
    pub fn gap(&self, tenant_id: &str, gap: Gap) {
        let counters = &self.counters;
        let mut gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = gaps
            .iter_mut()
            .rev()
            .find(|g| g.source == gap.source && g.from == gap.from)
        {
            last.to = last.to.max(gap.to);
            return;
        }
        let lost = (gap.to - gap.from).num_milliseconds().max(0) as f64 / 1000.0;
        warn!(tenant.id = %tenant_id, source = %gap.source, from = %gap.from.to_rfc3339(), to = %gap.to.to_rfc3339(),
              lost_s = lost, reason = %gap.reason,
              "content lost: Microsoft no longer keeps this window; listing goes on from the oldest time it keeps");
        Counters::add(&counters.listing_gaps, 1);
        let labels = Metrics::tenant_labels(tenant_id, &gap.source);
        counters.metrics.listing_gaps.get_or_create(&labels).inc();
        counters
            .metrics
            .listing_gap_seconds
            .get_or_create(&labels)
            .inc_by(lost);
        if gaps.len() == MAX_GAPS {
            gaps.pop_front();
        }
        gaps.push_back(gap);
    }

    /// The newest gaps, oldest first.
    pub fn gaps(&self) -> Vec<Gap> {
        let gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
        gaps.iter().cloned().collect()
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
