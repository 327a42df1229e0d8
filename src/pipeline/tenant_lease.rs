//! With several replicas on one store, exactly one of them at a time runs a tenant's subscription
//! keeper and content listing: the one holding the tenant's lease in the store
//! ([`Store::hold_tenant`]). Every replica still serves the webhook and runs workers for every
//! tenant; only the calls that would repeat across replicas (listing, starting subscriptions) are
//! kept to one.
//!
//! With `L` = `store.tenant_lease`, [`keep`] renews the leases of the tenants this replica holds,
//! and tries to take the others, every `L/4`; a renewal holds the row for `L/2`. So when a holder
//! dies, its row lapses at most `L/2` after its last renewal and another replica takes the tenant
//! at its next try: within `3L/4` of the death, inside one lease period. A replica counts a tenant
//! as its own only until `3L/8` after it sent the renewal that succeeded (an eighth of `L` before
//! the row could lapse in the database), so it stops listing before anyone else can start, even
//! when it stalled or lost the database. A store of one process holds every tenant, and then
//! nothing here runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::tenant::Tenants;
use crate::store::Store;

/// Takes and renews the tenants' leases until shutdown, then lets them go so another replica
/// takes over at once. `reconcile_now` is notified when this replica takes a tenant over (its
/// listing starts at once rather than at the next interval).
pub async fn keep<S: Store>(
    tenants: Arc<Tenants>,
    store: Arc<S>,
    lease: Duration,
    reconcile_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let every = lease / 4;
    let row = lease / 2;
    // A replica stops counting on its lease this long before it could lapse in the database.
    let margin = lease / 8;
    loop {
        let mut gained = false;
        for t in tenants.values() {
            let tid = &t.cfg.tenant_id;
            let was = t.listing.held();
            let sent = Instant::now();
            match store.hold_tenant(tid, row).await {
                Ok(true) => {
                    t.listing.set(Some(sent + row - margin));
                    if !was {
                        info!(tenant.id = %tid, "this replica now lists the tenant and keeps its subscriptions");
                        gained = true;
                    }
                }
                Ok(false) => {
                    t.listing.set(None);
                    if was {
                        info!(tenant.id = %tid, "another replica lists the tenant now");
                    }
                }
                // Unreachable store: keep what we had until it runs out on its own.
                Err(e) => warn!(tenant.id = %tid, error = %e, "cannot renew the tenant's lease"),
            }
        }
        if gained {
            reconcile_now.notify_one();
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    for t in tenants.values() {
        if t.listing.held() {
            t.listing.set(None);
            let _ = store.let_go_tenant(&t.cfg.tenant_id).await;
        }
    }
}
