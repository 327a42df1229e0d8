//! With several replicas on one store, exactly one of them at a time runs a tenant's subscription
//! keeper and content listing: the one holding the tenant's lease in the store. Every replica
//! still serves the webhook and runs workers for every tenant; only the calls that would repeat
//! across replicas (listing, starting subscriptions) are kept to one.
//!
//! # Timing
//!
//! With `L` = `store.tenant_lease`, [`keep`] runs a round every `L/4`; a renewal holds the row for
//! `L/2`. So when a holder dies, its row lapses at most `L/2` after its last renewal and another
//! replica takes the tenant at its next round: within `3L/4` of the death, inside one lease
//! period. A replica counts a tenant as its own only until `3L/8` after it sent the renewal that
//! succeeded (an eighth of `L` before the row could lapse in the database), so it stops listing
//! before anyone else can start, even when it stalled or lost the database. A tenant handed over
//! stops being listed here before its row is deleted. A store of one process holds every tenant,
//! and then nothing here runs.
//!
//! # Balance
//!
//! A round is two statements whatever the number of tenants: [`Store::lease_view`] writes this
//! replica's heartbeat and reads the live replicas (heartbeat within `L/2`, as long as a renewed
//! row lasts) and every lease row; [`Store::hold_tenants`] then lets go and takes or renews this
//! replica's tenants at once.
//! [`plan`] decides: each tenant prefers one live replica (rendezvous hashing of tenant ×
//! replica, the same answer on every replica), and no replica holds more than its share,
//! ⌈tenants / live replicas⌉ + 1 + 1 %. A replica takes the free tenants that prefer it at once,
//! and the others when their preferred replica is full or did not take them within `L/4` (it may
//! not have the tenant in its configuration); one left free for `L/2` is taken whatever the share.
//! A replica over the even split while another live one is clearly below it (one joined) gives
//! the excess back, the tenants it wants least first. A tenant is never taken from a live holder
//! and nothing moves while the live replicas stay the same: no takeovers in steady state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::tenant::Tenants;
use crate::store::{LeaseView, Store, owner_key};

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
    let mut memory = Memory::default();
    // Rounds start every `every` however long one takes (a slow round does not push the next
    // renewal towards the row's end).
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        round(
            &tenants,
            store.as_ref(),
            lease,
            row,
            margin,
            &mut memory,
            &reconcile_now,
        )
        .await;
    }
    let mut held = Vec::new();
    for (key, t) in tenants.iter() {
        if t.listing.held() {
            t.listing.set(None);
            held.push(key.clone());
        }
    }
    let _ = store.hold_tenants(&[], &held, row).await;
}

/// One lease round: observe, plan, stop listing what is let go, then hold.
async fn round<S: Store>(
    tenants: &Tenants,
    store: &S,
    lease: Duration,
    row: Duration,
    margin: Duration,
    memory: &mut Memory,
    reconcile_now: &Notify,
) {
    let began = Instant::now();
    // Live: a heartbeat within half a lease, as long as a renewed row lasts. A replica gone
    // that long has lost its rows too; its tenants then prefer the live replicas at once, so
    // they are held again within one lease of its death (counting a whole lease, they waited
    // for it up to a lease longer). A replica whose rounds run late by less keeps its place.
    let view = match store.lease_view(lease / 2).await {
        Ok(Some(view)) => view,
        Ok(None) => return,
        // Unreachable store: keep what we had until it runs out on its own.
        Err(e) => return warn!(error = %e, "cannot read the tenant leases"),
    };
    let Some(me) = store.replica() else { return };
    let mine: Vec<String> = tenants.keys().cloned().collect();
    let plan = plan(me, &mine, &view, memory, Instant::now(), lease / 4);
    // Stopped here before the row is deleted: the next holder cannot list while this one does.
    for key in &plan.release {
        if let Some(t) = tenants.get(key) {
            t.listing.set(None);
        }
    }
    if !plan.release.is_empty() {
        info!(
            tenants = plan.release.len(),
            replicas = view.replicas.len(),
            "handing tenants over to other replicas, to balance"
        );
    }
    let sent = Instant::now();
    let held = match store.hold_tenants(&plan.hold, &plan.release, row).await {
        Ok(held) => held.into_iter().collect::<HashSet<String>>(),
        Err(e) => return warn!(error = %e, "cannot renew the tenant leases"),
    };
    // Gained and lost are counted against what the database said last round, not against the
    // local deadline: a late round is no takeover and must not start every listing again.
    let mut gained = false;
    for key in &plan.hold {
        let Some(t) = tenants.get(key) else { continue };
        let was = memory.owned.contains(key);
        if held.contains(key) {
            t.listing.set(Some(sent + row - margin));
            if !was {
                info!(tenant.id = %t.cfg.tenant_id, "this replica now lists the tenant and keeps its subscriptions");
                gained = true;
            }
        } else {
            t.listing.set(None);
            if was {
                info!(tenant.id = %t.cfg.tenant_id, "another replica lists the tenant now");
            }
        }
    }
    memory.owned = held.clone();
    // Tenants neither held nor asked for (another replica holds them).
    let asked: HashSet<&String> = plan.hold.iter().collect();
    for (key, t) in tenants.iter() {
        if !held.contains(key) && !asked.contains(key) && t.listing.held() {
            t.listing.set(None);
        }
    }
    if gained {
        reconcile_now.notify_one();
    }
    // A round longer than an eighth of the lease eats the margin its rows have: say so.
    let took = began.elapsed();
    if took > lease / 8 {
        warn!(
            took_ms = took.as_millis() as u64,
            tenants = tenants.len(),
            held = held.len(),
            "a tenant lease round was slow: leases may lapse and change hands (a loaded database or host?)"
        );
    }
}

/// What a replica remembers between rounds (bounded by its own tenants).
#[derive(Debug, Default)]
pub struct Memory {
    /// Since when each free tenant of ours has been seen free.
    free_since: HashMap<String, Instant>,
    /// Tenants taken beyond the share because no replica took them within twice the grace
    /// (replicas with different configurations): never given back for the share's sake until
    /// the live replicas change, or they would flap.
    forced: HashSet<String>,
    /// The tenants the database said this replica holds at the last round.
    owned: HashSet<String>,
    /// The live replicas of the last round.
    replicas: Vec<String>,
}

/// What one round does: the tenants to take or renew, and those to let go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub hold: Vec<String>,
    pub release: Vec<String>,
}

/// The most tenants one replica holds: an even split plus a little slack.
pub fn share(tenants: usize, replicas: usize) -> usize {
    tenants.div_ceil(replicas.max(1)) + 1 + tenants / 100
}

/// How much `replica` wants `tenant` (rendezvous hashing: the same on every replica).
fn score(tenant: &str, replica: &str) -> u64 {
    let mut h = owner_key(tenant) ^ owner_key(replica).rotate_left(32);
    // splitmix64's finaliser: FNV alone mixes the last bytes poorly.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Decides one round for replica `me` holding lease rows on the tenants `mine` (lower-case ids).
/// `grace`: how long a free tenant waits for the replica it prefers.
pub fn plan(
    me: &str,
    mine: &[String],
    view: &LeaseView,
    memory: &mut Memory,
    now: Instant,
    grace: Duration,
) -> Plan {
    let live = &view.replicas;
    if memory.replicas != *live {
        memory.replicas = live.clone();
        memory.forced.clear();
    }
    let preferred = |t: &str| {
        live.iter()
            .max_by_key(|r| (score(t, r), r.as_str()))
            .map_or(me, |r| r.as_str())
    };
    let rows: HashMap<&str, (&str, i64)> = view
        .leases
        .iter()
        .map(|(t, h, left)| (t.as_str(), (h.as_str(), *left)))
        .collect();
    let mut held_by: HashMap<&str, usize> = HashMap::new();
    let mut known: HashSet<&str> = mine.iter().map(String::as_str).collect();
    for (t, (holder, left)) in &rows {
        if *left > 0 {
            *held_by.entry(holder).or_default() += 1;
            known.insert(t);
        }
    }
    let quota = share(known.len(), live.len());
    let mut sorted: Vec<&String> = mine.iter().collect();
    sorted.sort_unstable();

    let mut keep = Vec::new();
    let mut free = Vec::new();
    for t in sorted {
        match rows.get(t.as_str()) {
            Some((holder, left)) if *left > 0 && *holder == me => keep.push(t),
            Some((_, left)) if *left > 0 => {}
            _ => free.push(t),
        }
    }
    let free_set: HashSet<&String> = free.iter().copied().collect();
    let keep_set: HashSet<&String> = keep.iter().copied().collect();
    memory.free_since.retain(|t, _| free_set.contains(t));
    memory.forced.retain(|t| keep_set.contains(t));

    let mut release = Vec::new();
    // Give back what is over the share, or over the even split while another live replica is
    // clearly below it (one joined): the least wanted first, so that they go where preferred.
    let even = known.len().div_ceil(live.len().max(1));
    let slack = quota - even;
    let starved = live
        .iter()
        .filter(|r| r.as_str() != me)
        .any(|r| held_by.get(r.as_str()).copied().unwrap_or(0) + slack < even);
    let forced = keep
        .iter()
        .filter(|t| memory.forced.contains(t.as_str()))
        .count();
    let limit = if starved { even } else { quota } + forced;
    if keep.len() > limit {
        keep.sort_by_key(|t| {
            let f = memory.forced.contains(t.as_str());
            (f, preferred(t) == me, score(t, me))
        });
        let over = keep.len() - limit;
        release.extend(keep.drain(..over).cloned());
    }
    // Take free tenants up to the share: those preferring this replica, then those whose
    // preferred replica is full or did not take them within `grace`.
    // A tenant nobody took in twice the grace is taken whatever the share: held beats balanced.
    let mut take: Vec<(bool, u64, &String)> = Vec::new();
    let mut forced = Vec::new();
    for t in free {
        let since = *memory.free_since.entry(t.clone()).or_insert(now);
        let p = preferred(t);
        let mine = p == me;
        let full = held_by.get(p).copied().unwrap_or(0) >= even;
        let waited = now.duration_since(since);
        if waited >= grace * 2 {
            forced.push(t);
        } else if mine || full || waited >= grace {
            take.push((mine, score(t, me), t));
        }
    }
    take.sort_unstable_by_key(|t| std::cmp::Reverse((t.0, t.1)));
    let mut hold: Vec<String> = keep.into_iter().cloned().collect();
    // While a live replica is below the even split, no more than the even split: what this one
    // gave back goes to that one.
    let cap = if starved { even } else { quota };
    for (_, _, t) in take {
        if hold.len() >= cap {
            break;
        }
        hold.push(t.clone());
    }
    for t in forced {
        memory.forced.insert(t.clone());
        hold.push(t.clone());
    }
    hold.sort_unstable();
    release.sort_unstable();
    Plan { hold, release }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tenant-{i:05}")).collect()
    }

    /// Runs rounds of every replica in turn against one simulated lease table (every row held
    /// is renewed, every row let go is deleted) and returns each replica's tenants.
    fn simulate(
        replicas: &[&str],
        all: &[String],
        table: &mut HashMap<String, String>,
        memories: &mut HashMap<String, Memory>,
        rounds: usize,
    ) -> usize {
        let mut moves = 0;
        let live: Vec<String> = {
            let mut v: Vec<String> = replicas.iter().map(|r| r.to_string()).collect();
            v.sort();
            v
        };
        table.retain(|_, h| live.contains(h));
        let start = Instant::now();
        for i in 0..rounds {
            for r in replicas {
                let view = LeaseView {
                    replicas: live.clone(),
                    leases: table
                        .iter()
                        .map(|(t, h)| (t.clone(), h.clone(), 1000))
                        .collect(),
                };
                let memory = memories.entry(r.to_string()).or_default();
                let now = start + Duration::from_secs(i as u64);
                let p = plan(r, all, &view, memory, now, Duration::from_secs(2));
                for t in &p.release {
                    assert_eq!(table.remove(t).as_deref(), Some(*r));
                }
                for t in &p.hold {
                    match table.get(t) {
                        Some(h) if h != r => {}
                        Some(_) => {}
                        None => {
                            table.insert(t.clone(), r.to_string());
                            moves += 1;
                        }
                    }
                }
            }
        }
        moves
    }

    fn counts(table: &HashMap<String, String>) -> HashMap<String, usize> {
        let mut c = HashMap::new();
        for h in table.values() {
            *c.entry(h.clone()).or_default() += 1;
        }
        c
    }

    #[test]
    fn replicas_split_the_tenants_within_their_share_and_then_nothing_moves() {
        let all = tenants(1000);
        let mut table = HashMap::new();
        let mut memories = HashMap::new();
        // The first replica alone takes everything.
        simulate(&["a"], &all, &mut table, &mut memories, 2);
        assert_eq!(counts(&table)["a"], 1000);
        // Two more join: everything is spread within the share in a few rounds.
        simulate(&["a", "b", "c"], &all, &mut table, &mut memories, 6);
        assert_eq!(table.len(), 1000, "every tenant held: {:?}", counts(&table));
        for (r, n) in counts(&table) {
            assert!(n <= share(1000, 3), "{r} holds {n}");
            assert!(n >= 250, "{r} holds only {n}");
        }
        // Steady state: no tenant changes hands.
        let moves = simulate(&["a", "b", "c"], &all, &mut table, &mut memories, 10);
        assert_eq!(moves, 0);
        // One dies: the others take its tenants within the share.
        let moves = simulate(&["a", "c"], &all, &mut table, &mut memories, 4);
        assert!(moves > 250 && moves < 450, "{moves}");
        assert_eq!(table.len(), 1000);
        assert!(counts(&table).values().all(|n| *n <= share(1000, 2)));
        assert_eq!(
            simulate(&["a", "c"], &all, &mut table, &mut memories, 10),
            0
        );
    }

    #[test]
    fn a_tenant_its_preferred_replica_does_not_know_is_taken_after_the_grace() {
        let all = tenants(40);
        let mut table = HashMap::new();
        let mut memories = HashMap::new();
        // Replica "b" knows only half of the tenants; "a" knows all of them.
        let half: Vec<String> = all[..20].to_vec();
        let live = vec!["a".to_string(), "b".to_string()];
        let start = Instant::now();
        for i in 0..6u64 {
            for (r, mine) in [("a", &all), ("b", &half)] {
                let view = LeaseView {
                    replicas: live.clone(),
                    leases: table
                        .iter()
                        .map(|(t, h): (&String, &String)| (t.clone(), h.clone(), 1000))
                        .collect(),
                };
                let memory = memories.entry(r.to_string()).or_default();
                let p = plan(
                    r,
                    mine,
                    &view,
                    memory,
                    start + Duration::from_secs(i),
                    Duration::from_secs(2),
                );
                for t in &p.release {
                    table.remove(t);
                }
                for t in &p.hold {
                    table.entry(t.clone()).or_insert_with(|| r.to_string());
                }
            }
        }
        assert_eq!(table.len(), 40, "every tenant held: {table:?}");
    }
}
