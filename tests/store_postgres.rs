//! What only the PostgreSQL store has, on a real server (tests/support/postgres.rs): leases owned
//! by a replica, migrations when replicas start together, tenant leases, the password kept out of
//! errors, TLS to the database, and a database that goes away and comes back. The shared conformance checks run on it
//! in tests/store.rs.

use std::time::Duration;

use o365_collector::store::conformance::{self, content};
use o365_collector::store::{PostgresStore, Store, StoreError};

mod outputs_support;
#[path = "support/postgres.rs"]
mod postgres;
mod support;
use postgres::{PASSWORD, Postgres};

const LONG: Duration = Duration::from_secs(600);

async fn connect(url: &str) -> PostgresStore {
    PostgresStore::connect(&Postgres::config(url))
        .await
        .expect("connect")
}

#[tokio::test]
async fn progress_survives_reopen() {
    let url = Postgres::shared().create_database().await;
    conformance::progress_survives_reopen(|| connect(&url)).await;
}

/// A replica whose lease lapsed and was claimed by another can neither renew, complete,
/// reschedule, release nor dead-letter the blob; the new holder can.
#[tokio::test]
async fn a_lapsed_lease_taken_by_another_replica_stays_with_it() {
    let url = Postgres::shared().create_database().await;
    let (a, b) = (connect(&url).await, connect(&url).await);
    assert_ne!(a.owner(), b.owner());
    a.enqueue(vec![content("x")]).await.unwrap();
    let first = a.claim(1, Duration::from_millis(50)).await.unwrap();
    let taken = conformance::claim_within(&b, 1, LONG).await;
    let seq = first[0].seq;
    assert_eq!(taken[0].seq, seq);
    let lost = |r: Result<(), StoreError>| matches!(r, Err(StoreError::LeaseLost(s)) if s == seq);
    assert!(lost(a.renew(seq, LONG).await), "renew");
    assert!(lost(a.complete(seq).await), "complete");
    assert!(lost(a.release(seq).await), "release");
    assert!(lost(a.dead_letter(seq, "x").await), "dead_letter");
    assert!(lost(
        a.reschedule(seq, std::time::SystemTime::now(), "x").await
    ));
    // Progress is a fact about the output, whoever reports it; it still never goes backwards.
    a.record_progress(seq, 10).await.unwrap();
    b.renew(seq, LONG).await.unwrap();
    b.complete(seq).await.unwrap();
    assert!(matches!(
        a.complete(seq).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(b.stats().await.unwrap().leased, 0);
}

/// Replicas claiming at once never get the same blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_claiming_at_once_share_nothing() {
    let url = Postgres::shared().create_database().await;
    let stores = futures_util::future::join_all((0..3).map(|_| connect(&url))).await;
    let batch = (0..300).map(|i| content(&format!("c{i}"))).collect();
    stores[0].enqueue(batch).await.unwrap();
    let mut tasks = Vec::new();
    for s in &stores {
        for _ in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let c = s.claim(7, LONG).await.unwrap();
                    if c.is_empty() {
                        return got;
                    }
                    got.extend(c.into_iter().map(|c| c.seq));
                }
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((n, all.len()), (300, 300), "each blob claimed exactly once");
}

/// Replicas that start together on an empty database migrate it once, and all come up.
#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let url = Postgres::shared().create_database().await;
    let stores = futures_util::future::join_all((0..5).map(|_| {
        let url = url.clone();
        async move { PostgresStore::connect(&Postgres::config(&url)).await }
    }))
    .await;
    let latest = o365_collector::store::postgres::MIGRATIONS
        .last()
        .unwrap()
        .0;
    for s in stores {
        assert_eq!(
            s.expect("every replica starts")
                .schema_version()
                .await
                .unwrap(),
            latest
        );
    }
}

/// A database migrated by a newer build is refused, not written with an older schema in mind.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let url = Postgres::shared().create_database().await;
    let store = connect(&url).await;
    drop(store);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql("INSERT INTO o365_schema_migrations (version) VALUES (9999)")
        .execute(&mut conn)
        .await
        .unwrap();
    match PostgresStore::connect(&Postgres::config(&url)).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("9999"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Wrong password, wrong port: the error says what failed, never the password.
#[tokio::test]
async fn the_password_never_shows_in_errors() {
    let pg = Postgres::shared();
    let wrong = pg.url("postgres").replace(PASSWORD, "wrong-password-4c1d");
    let err = PostgresStore::connect(&Postgres::config(&wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong-password-4c1d"), "{err}");
    let closed = pg.url("postgres").replace(
        &format!(":{}/", pg.port),
        &format!(":{}/", support::free_port()),
    );
    let err = PostgresStore::connect(&Postgres::config(&closed))
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains(PASSWORD), "{err}");
}

/// One replica holds a tenant; another takes it only once the lease lapsed (or was let go).
/// Whatever the machine's load: a lease that must hold is a long one, and the takeover is checked
/// against the lapse the database reported, not against a sleep.
#[tokio::test]
async fn one_replica_holds_a_tenant_at_a_time() {
    let url = Postgres::shared().create_database().await;
    let (a, b) = (connect(&url).await, connect(&url).await);
    assert!(a.hold_tenant("T1", LONG).await.unwrap());
    assert!(
        !b.hold_tenant("t1", LONG).await.unwrap(),
        "case-insensitive"
    );
    assert!(b.hold_tenant("t2", LONG).await.unwrap());
    assert!(a.hold_tenant("t1", LONG).await.unwrap(), "renewed");
    let holders = b.tenant_holders().await.unwrap();
    let view: Vec<(&str, &str, bool)> = holders
        .iter()
        .map(|h| (h.tenant_id.as_str(), h.holder.as_str(), h.this_replica))
        .collect();
    assert_eq!(view, [("t1", a.owner(), false), ("t2", b.owner(), true)]);
    // Not before: while `a`'s lease runs, `b` cannot take t1.
    assert!(
        !b.hold_tenant("t1", LONG).await.unwrap(),
        "taken while the lease ran"
    );
    // `a` renews one last time, for two seconds, then stops. `b` asks until it gets t1: it gets it
    // only once that lease lapsed on the database's clock, the clock `since` is read from.
    assert!(a.hold_tenant("t1", Duration::from_secs(2)).await.unwrap());
    let read = std::time::SystemTime::now();
    let holders = b.tenant_holders().await.unwrap();
    let t1 = holders.iter().find(|h| h.tenant_id == "t1").unwrap();
    assert_eq!(t1.holder, a.owner());
    // At the earliest: the database counts whole milliseconds.
    let lapses =
        read + Duration::from_millis(t1.expires_in_ms.max(0) as u64) - Duration::from_millis(1);
    support::wait_for(conformance::WAIT_LIMIT, "t1 taken over", || async {
        b.hold_tenant("t1", LONG).await.unwrap()
    })
    .await;
    let holders = b.tenant_holders().await.unwrap();
    let t1 = holders.iter().find(|h| h.tenant_id == "t1").unwrap();
    assert!(t1.this_replica);
    assert!(
        t1.since >= lapses,
        "taken at {:?}, before a's lease lapsed ({lapses:?})",
        t1.since
    );
    assert!(!a.hold_tenant("t1", LONG).await.unwrap(), "a lost it");
    b.let_go_tenant("t2").await.unwrap();
    assert!(
        a.hold_tenant("t2", LONG).await.unwrap(),
        "let go: taken at once"
    );
}

/// The database stops: every call fails as unavailable (no panic, no hang) and works again,
/// with nothing lost, once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_when_the_database_comes_back() {
    let pg = Postgres::start();
    let store = connect(&pg.create_database().await).await;
    store
        .enqueue(vec![content("before")])
        .await
        .expect("enqueue");
    pg.stop_server();
    let err = store.enqueue(vec![content("during")]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(store.ready().await.is_err());
    assert!(!err.to_string().contains(PASSWORD));
    pg.start_server();
    support::wait_for(
        conformance::WAIT_LIMIT,
        "the store is ready again",
        || async { store.ready().await.is_ok() },
    )
    .await;
    let out = store
        .enqueue(vec![content("before"), content("after")])
        .await
        .unwrap();
    assert_eq!((out.added, out.duplicates), (1, 1), "nothing was lost");
}

/// TLS to the database: `verify-full` with the server's CA connects; with another CA it is
/// refused (the server is not who it claims).
#[tokio::test]
async fn tls_to_the_database_checks_the_server() {
    support::init();
    let pki = outputs_support::TestPki::generate();
    let pg = Postgres::start_tls(&pki.cert_pem, &pki.key_pem);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let url = pg.create_database().await;
    let with = |mode: &str, ca: Option<&std::path::Path>| {
        let mut cfg = Postgres::config(&url.replace("127.0.0.1", "localhost"));
        cfg.sslmode = Some(mode.into());
        cfg.ca_file = ca.map(std::path::Path::to_path_buf);
        cfg
    };
    let store = PostgresStore::connect(&with("verify-full", Some(&ca)))
        .await
        .expect("verify-full with the server's CA");
    store.enqueue(vec![content("over-tls")]).await.unwrap();
    let other = outputs_support::TestPki::generate();
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, &other.ca_pem).unwrap();
    let err = PostgresStore::connect(&with("verify-full", Some(&wrong)))
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(
        err.to_ascii_lowercase().contains("certificate") || err.contains("tls"),
        "refused for its certificate: {err}"
    );
}

/// Claims pass over a paused tenant's backlog: with 50,000 blobs of tenant P queued first and P
/// skipped (its output paused), each claim returns the next blob of another tenant, in order.
/// The claim latency with and without the backlog is printed (measured, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_pass_over_a_paused_tenants_backlog() {
    const BACKLOG: usize = 50_000;
    const OTHERS: usize = 200;
    let of = |tenant: &str, i: usize| {
        let mut c = content(&format!("{tenant}-{i}"));
        c.tenant_id = tenant.to_string();
        c
    };
    let paused = "11111111-1111-4111-8111-111111111111";
    let other = "22222222-2222-4222-8222-222222222222";
    let mut medians = Vec::new();
    for backlog in [0, BACKLOG] {
        let url = Postgres::shared().create_database().await;
        let store = connect(&url).await;
        for chunk in (0..backlog).collect::<Vec<_>>().chunks(5_000) {
            store
                .enqueue(chunk.iter().map(|i| of(paused, *i)).collect())
                .await
                .unwrap();
        }
        store
            .enqueue((0..OTHERS).map(|i| of(other, i)).collect())
            .await
            .unwrap();
        let skip = [paused.to_string()];
        let mut took = Vec::new();
        for i in 0..OTHERS {
            let t = std::time::Instant::now();
            let c = store.claim_except(1, LONG, &skip).await.unwrap();
            took.push(t.elapsed());
            assert_eq!(c.len(), 1);
            assert_eq!(
                c[0].content.tenant_id, other,
                "a paused tenant's blob was claimed"
            );
            assert_eq!(c[0].content.content_id, format!("{other}-{i}"), "in order");
            store.complete(c[0].seq).await.unwrap();
        }
        assert!(store.claim_except(1, LONG, &skip).await.unwrap().is_empty());
        let first = took[0];
        took.sort();
        let (p50, p90, p99) = (
            took[took.len() / 2],
            took[took.len() * 9 / 10],
            took[took.len() * 99 / 100],
        );
        println!(
            "claim with {backlog} paused blobs ahead: p50 {p50:?}, p90 {p90:?}, p99 {p99:?} (the first {first:?})"
        );
        medians.push(p50);
    }
    println!(
        "claim p50 with the backlog / without: {:.2}",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}

/// The database's clock rules: `now()` is the database's, and a cursor asked to move past it (a
/// replica whose clock runs ahead) stops at it. Dead letters are read a page at a time, and the
/// queue's counts for `/metrics` are kept per replica for the age asked, while `stats` stays
/// exact.
#[tokio::test]
async fn cursors_stop_at_the_database_clock_pages_and_cached_counts() {
    let url = Postgres::shared().create_database().await;
    let store = connect(&url).await;
    let local = std::time::SystemTime::now();
    let db = store.now().await.unwrap();
    let apart = db.duration_since(local).unwrap_or_else(|e| e.duration());
    assert!(apart < Duration::from_secs(5), "{apart:?}");
    let ahead = local + Duration::from_secs(3 * 3600);
    store
        .advance_cursor("t1", "Audit.General", ahead)
        .await
        .unwrap();
    let cursor = store.cursor("t1", "Audit.General").await.unwrap().unwrap();
    assert!(cursor <= store.now().await.unwrap(), "{cursor:?}");
    assert!(cursor >= db, "{cursor:?} moved to the database's now");

    store
        .enqueue((0..5).map(|i| content(&format!("d{i}"))).collect())
        .await
        .unwrap();
    let claimed = store.claim(5, LONG).await.unwrap();
    let seqs: Vec<u64> = claimed.iter().map(|c| c.seq).collect();
    for s in &seqs {
        store.dead_letter(*s, "for the test").await.unwrap();
    }
    let page = |after, limit| {
        let store = store.clone();
        async move {
            let p = store.dead_letters_page(after, limit).await.unwrap();
            p.iter().map(|d| d.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(0, 2).await, seqs[..2]);
    assert_eq!(page(seqs[1], 10).await, seqs[2..]);
    assert!(page(seqs[4], 10).await.is_empty());
    assert_eq!(store.dead_letters().await.unwrap().len(), 5);

    store.enqueue(vec![content("p0")]).await.unwrap();
    let max = Duration::from_secs(60);
    assert_eq!(store.recent_stats(max).await.unwrap().pending, 1);
    store.enqueue(vec![content("p1")]).await.unwrap();
    assert_eq!(store.recent_stats(max).await.unwrap().pending, 1, "kept");
    assert_eq!(store.stats().await.unwrap().pending, 2, "exact");
    assert_eq!(
        store.recent_stats(Duration::ZERO).await.unwrap().pending,
        2,
        "taken again once older than asked"
    );
}

/// Steps the database's clock, as every statement of the store sees it (`o365_now_ms()`), by
/// `offset_ms` from its true time: what a database server whose time synchronisation steps does.
async fn step_database_clock(url: &str, offset_ms: i64) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!(
        "CREATE OR REPLACE FUNCTION o365_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
         AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint + {offset_ms} $$"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
}

/// The database's clock steps forward by ten minutes while a blob and a tenant are held: no
/// other replica takes either over early, because takeovers are judged by the time each replica
/// expects the database to have (its last reading plus its own monotonic clock). The holder
/// renews on the stepped clock; once it stops, the other replica takes over as usual.
#[tokio::test]
async fn a_database_clock_stepping_forward_ends_no_lease_early() {
    let url = Postgres::shared().create_database().await;
    let (a, b) = (connect(&url).await, connect(&url).await);
    let lease = Duration::from_secs(3);
    // Each replica reads the database's clock, as its tenant-lease rounds do.
    for s in [&a, &b] {
        s.now().await.unwrap();
        s.lease_view(lease).await.unwrap();
    }
    a.enqueue(vec![content("x")]).await.unwrap();
    let held = a.claim(1, LONG).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(a.hold_tenant("t1", LONG).await.unwrap());
    // b takes part too: its longest lease is what it holds a step off for.
    assert!(b.hold_tenant("t2", lease).await.unwrap());

    step_database_clock(&url, 20 * 60 * 1000).await;
    // b's first calls after the step, before any reading showed it, and the reading itself.
    assert!(
        b.claim(1, lease).await.unwrap().is_empty(),
        "blob taken over right after the step"
    );
    assert!(
        !b.hold_tenant("t1", lease).await.unwrap(),
        "tenant taken over right after the step"
    );
    b.now().await.unwrap();
    assert!(
        b.held_clock_step_ms().unwrap() >= 20 * 60 * 1000 - 1000,
        "step noticed"
    );
    let view = b.lease_view(lease).await.unwrap().unwrap();
    assert!(
        view.replicas.contains(&a.owner().to_owned()),
        "a still counts as live"
    );
    assert!(
        view.leases
            .iter()
            .any(|(t, h, left)| t == "t1" && h == a.owner() && *left > 0),
        "a's lease still runs: {:?}",
        view.leases
    );
    assert!(
        b.claim(1, lease).await.unwrap().is_empty(),
        "blob taken over after the step"
    );
    assert!(
        !b.hold_tenant("t1", lease).await.unwrap(),
        "tenant taken over after the step"
    );

    // The holder renews for a short lease on the stepped clock and then stops (it died). Once
    // b's hold on the old basis ended and a's last lease lapsed, b takes both over.
    a.renew(held[0].seq, lease).await.unwrap();
    assert!(a.hold_tenant("t1", lease).await.unwrap());
    support::wait_for(
        conformance::WAIT_LIMIT,
        "blob and tenant taken over",
        || async {
            b.now().await.unwrap();
            b.hold_tenant("t1", lease).await.unwrap()
                && !b.claim(1, lease).await.unwrap().is_empty()
        },
    )
    .await;
    assert_eq!(
        b.held_clock_step_ms(),
        None,
        "the stepped clock is trusted again"
    );
}
