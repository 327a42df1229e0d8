//! Tenant leases at fleet scale: `tenants` tenants on 3 replicas with a 4 s `tenant_lease`, the
//! emulator and a real PostgreSQL server on this machine, each collector in its own process.
//! Watches the lease table (an observer reads it twice a second) and prints:
//! - the time from start until every tenant is held, and each replica's share;
//! - takeovers per minute in steady state (`steady` seconds, no replica changing);
//! - one replica SIGKILLed, then a new one added: the takeovers each causes, how long until
//!   every tenant is held again and the longest time any tenant stayed unheld (bound: one lease);
//! - database transactions per second (pg_stat_database's commits: one per statement here).
//!
//! `cargo bench --bench fleet -- [tenants=10000] [steady=60]`

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use o365_collector::store::Store;

use support::{Proc, wait_until};

const CONTENT_TYPE: &str = "Audit.General";
const LEASE: Duration = Duration::from_secs(4);

fn main() {
    let args = support::Args::from_env();
    let n: usize = args.value("tenants", 10_000);
    let steady = Duration::from_secs(args.value("steady", 60));
    let rt = support::runtime();
    let pg = postgres::Postgres::start();
    let db = rt.block_on(pg.create_database());
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (_emu, base, emu_ca) = support::start_emulator(dir, n, "throttle_per_minute: 1000000\n");
    let spawn = |i: usize| -> Proc {
        let rdir = dir.join(format!("r{i}"));
        std::fs::create_dir_all(&rdir).expect("replica dir");
        // Listing is not what is measured: rare, besides the one at each takeover.
        let yaml = format!(
            "resource: {base}\nauthority: {base}\ncontent_type: {CONTENT_TYPE}\noutput: file\n\
             outbound:\n  ca_file: {ca}\n\
             outputs:\n  file:\n    type: file\n    path: {events}\n\
             listen:\n  admin: 127.0.0.1:0\npull:\n  interval: 1h\n\
             store:\n  type: postgres\n  url: {db}\n  sslmode: disable\n  allow_file_output: true\n  tenant_lease: {lease}ms\n{tenants}",
            ca = emu_ca.display(),
            events = rdir.join("events.ndjson").display(),
            lease = LEASE.as_millis(),
            tenants = support::tenants_yaml(n),
        );
        let config = rdir.join("config.yaml");
        std::fs::write(&config, yaml).expect("config");
        support::start_collector(
            &rdir,
            &config,
            &[("RUST_LOG", "warn,o365_collector::app=info")],
        )
    };
    let token = |i: usize| {
        let logs =
            std::fs::read_to_string(dir.join(format!("r{i}/collector.log"))).unwrap_or_default();
        postgres::replica_token(&logs)
    };
    let observer = rt
        .block_on(o365_collector::store::PostgresStore::connect(
            &postgres::Postgres::config(&db),
        ))
        .expect("connect");
    let pool = rt
        .block_on(sqlx::postgres::PgPool::connect(&db))
        .expect("connect for the statistics");
    let commits = || -> i64 {
        rt.block_on(
            sqlx::query_scalar::<_, i64>(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&pool),
        )
        .expect("pg_stat_database")
    };
    // Tenant → holder of every row that has not lapsed.
    let held = || -> HashMap<String, String> {
        rt.block_on(observer.tenant_holders())
            .expect("lease rows")
            .into_iter()
            .filter(|h| h.expires_in_ms > 0)
            .map(|h| (h.tenant_id, h.holder))
            .collect()
    };
    let shares = |rows: &HashMap<String, String>| {
        let mut c: HashMap<String, usize> = HashMap::new();
        for h in rows.values() {
            *c.entry(h.clone()).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = c.into_iter().collect();
        v.sort();
        v
    };
    let pct = |k: usize| format!("{:.1} %", k as f64 * 100.0 / n as f64);

    // Watches for `span`: takeovers (a tenant held by another replica than its last holder),
    // lapses (a row that ran out and was renewed by the same holder), the longest any tenant
    // stayed unheld, and when every tenant was first held again.
    struct Watch {
        takeovers: usize,
        lapses: usize,
        longest_unheld: Duration,
        all_held_after: Option<Duration>,
        commits_per_s: f64,
        last: HashMap<String, String>,
    }
    let watch = |start: Instant,
                 last: HashMap<String, String>,
                 span: Duration,
                 alive: &dyn Fn(&str) -> bool|
     -> Watch {
        let c0 = commits();
        let t0 = Instant::now();
        let mut w = Watch {
            takeovers: 0,
            lapses: 0,
            longest_unheld: Duration::ZERO,
            all_held_after: None,
            commits_per_s: 0.0,
            last,
        };
        let mut unheld_since: HashMap<String, Instant> = HashMap::new();
        // The last holder of each tenant, across lapses: a takeover is a change of holder.
        let mut owner = w.last.clone();
        while t0.elapsed() < span {
            std::thread::sleep(Duration::from_millis(500));
            let now = held();
            let at = Instant::now();
            for (t, h) in &now {
                if owner.get(t).is_some_and(|old| old != h) {
                    w.takeovers += 1;
                }
                if !w.last.contains_key(t) && owner.get(t).is_some_and(|old| old == h) {
                    w.lapses += 1;
                }
                owner.insert(t.clone(), h.clone());
                if let Some(since) = unheld_since.remove(t) {
                    w.longest_unheld = w.longest_unheld.max(at - since);
                }
            }
            // Unheld: no live row, or a row of a replica that is gone.
            let live_rows = now.iter().filter(|(_, h)| alive(h)).count();
            for i in 0..n {
                let t = support::tenant_id(i);
                if !now.get(&t).is_some_and(|h| alive(h)) {
                    unheld_since.entry(t).or_insert(at);
                }
            }
            if live_rows == n && w.all_held_after.is_none() {
                w.all_held_after = Some(at - start);
            }
            w.last = now;
        }
        for since in unheld_since.values() {
            w.longest_unheld = w.longest_unheld.max(since.elapsed());
        }
        w.commits_per_s = (commits() - c0) as f64 / t0.elapsed().as_secs_f64();
        w
    };

    // Three replicas start at once.
    let started = Instant::now();
    let mut procs: Vec<Option<Proc>> = (0..3).map(|i| Some(spawn(i))).collect();
    let mut tokens = Vec::new();
    for i in 0..3 {
        wait_until(Duration::from_secs(120), "a replica connected", || {
            token(i).is_some()
        });
        tokens.push(token(i).expect("token"));
    }
    wait_until(Duration::from_secs(600), "every tenant held", || {
        held().len() == n
    });
    let all_held = started.elapsed();
    // Balanced: nothing moved for one lease.
    let mut last = held();
    let mut quiet = Instant::now();
    while quiet.elapsed() < LEASE {
        std::thread::sleep(Duration::from_millis(500));
        let now = held();
        if now != last {
            quiet = Instant::now();
            last = now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "never settled"
        );
    }
    let settled = started.elapsed();
    println!(
        "{n} tenants, 3 replicas, tenant_lease {} s: every tenant held after {:.1} s, settled after {:.1} s",
        LEASE.as_secs(),
        all_held.as_secs_f64(),
        settled.as_secs_f64()
    );
    let split = shares(&last);
    for (h, k) in &split {
        println!("  replica {h}: {k} tenants ({})", pct(*k));
    }

    let all = |_: &str| true;
    let w = watch(Instant::now(), last, steady, &all);
    let per_min = w.takeovers as f64 * 60.0 / steady.as_secs_f64();
    println!(
        "steady state, {} s: {} takeovers ({per_min:.1}/min, {} of the tenants per minute), {} lapsed rows renewed late, {:.0} database transactions/s",
        steady.as_secs(),
        w.takeovers,
        pct(per_min.round() as usize),
        w.lapses,
        w.commits_per_s
    );

    // One replica dies.
    let dead = tokens[0].clone();
    drop(procs[0].take());
    let killed = Instant::now();
    let alive = |h: &str| h != dead;
    let k = watch(killed, w.last, LEASE * 3, &alive);
    println!(
        "replica SIGKILLed: {} takeovers; every tenant held again after {} (bound: one lease, {} s); longest unheld {:.1} s; {:.0} transactions/s",
        k.takeovers,
        k.all_held_after
            .map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        LEASE.as_secs(),
        k.longest_unheld.as_secs_f64(),
        k.commits_per_s
    );
    for (h, c) in shares(&k.last) {
        println!("  replica {h}: {c} tenants ({})", pct(c));
    }

    // A new one joins.
    procs.push(Some(spawn(3)));
    wait_until(
        Duration::from_secs(120),
        "the new replica connected",
        || token(3).is_some(),
    );
    let joined = Instant::now();
    let j = watch(joined, k.last, LEASE * 3, &alive);
    let newcomer = token(3).expect("token");
    let got = j.last.values().filter(|h| **h == newcomer).count();
    println!(
        "replica added: {} takeovers; it holds {got} tenants ({}); every tenant held throughout: {} (longest unheld {:.1} s); {:.0} transactions/s",
        j.takeovers,
        pct(got),
        if j.longest_unheld.is_zero() {
            "yes"
        } else {
            "no"
        },
        j.longest_unheld.as_secs_f64(),
        j.commits_per_s
    );
    for (h, c) in shares(&j.last) {
        println!("  replica {h}: {c} tenants ({})", pct(c));
    }
    let q = watch(Instant::now(), j.last, steady, &alive);
    println!(
        "steady again, {} s: {} takeovers, {} lapsed rows renewed late",
        steady.as_secs(),
        q.takeovers,
        q.lapses
    );
    drop(procs);
}
