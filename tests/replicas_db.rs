//! Replicas on PostgreSQL when the database stops answering without going away: a replica cut
//! off from it mid-blob stops delivering within its lease and another finishes the blob, and a
//! server frozen with SIGSTOP (then resumed, or replaced by a fresh one on the same port) is
//! ridden out by every replica without a restart and without a stuck connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod outputs_support;
#[path = "support/postgres.rs"]
mod postgres;
mod support;

use o365_collector::store::PostgresStore;
use outputs_support::http::HttpReceiver;
use postgres::Postgres;
use support::{Collector, TENANT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TYPE: &str = "Audit.General";
const WAIT: Duration = Duration::from_secs(120);

/// A TCP proxy to the database that can be frozen: it then keeps every connection open but
/// passes no byte either way (a database that stopped answering, as seen by one replica only).
struct FreezableProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl FreezableProxy {
    async fn start(target: u16) -> FreezableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (f, w) = (frozen.clone(), wake.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, f.clone(), w.clone()));
                tokio::spawn(pipe(sr, cw, f.clone(), w.clone()));
            }
        });
        FreezableProxy { port, frozen, wake }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.frozen.store(false, Ordering::SeqCst);
        self.wake.notify_waiters();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            let woken = wake.notified();
            if !frozen.load(Ordering::SeqCst) {
                break;
            }
            woken.await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            let woken = wake.notified();
            if !frozen.load(Ordering::SeqCst) {
                break;
            }
            woken.await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A pull replica on `db_url` for the test tenant with one worker, its blob lease `lease`,
/// batches of `batch` records and the given output block (`output: x` plus `outputs:`).
fn replica(
    emu: &o365_emulator::Emulator,
    dir: &std::path::Path,
    db_url: &str,
    lease: Duration,
    batch: u32,
    outputs: &str,
) -> support::Setup {
    std::fs::create_dir_all(dir).unwrap();
    let ca = support::write_certs(emu, dir);
    let events = dir.join("events.ndjson");
    let yaml = format!(
        "client_id: {client}\ntenant_id: {TENANT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\n\
         resource: {b}\nauthority: {b}\ncontent_type: {TYPE}\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
         pipeline:\n  workers: 1\n  lease: {lease}ms\n  batch_records: {batch}\n\
         store:\n  type: postgres\n  url: {db_url}\n  sslmode: disable\n  pool_size: 4\n  \
         allow_file_output: true\n  tenant_lease: 4s\n{outputs}",
        client = support::CLIENT,
        b = emu.base_url(),
        ca = ca.display(),
        lease = lease.as_millis(),
        outputs = outputs.replace("{events}", &events.display().to_string()),
    );
    support::custom_setup(dir, &yaml, &events)
}

const FILE_OUTPUT: &str = "output: file\noutputs:\n  file:\n    type: file\n    path: {events}\n";

/// Record ids in an NDJSON receiver, with counts.
fn receiver_ids(r: &HttpReceiver) -> std::collections::HashMap<String, u32> {
    let mut ids = std::collections::HashMap::new();
    for e in r.state.events.lock().unwrap().iter() {
        let id = e["o365.audit.Id"]
            .as_str()
            .unwrap_or_else(|| panic!("an event without o365.audit.Id: {e}"))
            .to_string();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

/// A replica whose database stops answering (a frozen connection: no error, no byte) while it
/// delivers a blob stops delivering within its lease, whatever the store says, and counts it; a
/// second replica takes the blob over once the lease lapsed in the database and finishes it from
/// the recorded progress: every record arrives, at most two batches twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_the_database_stops_within_its_lease() {
    const LEASE: Duration = Duration::from_secs(4);
    const BATCH: u32 = 100;
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"));
    let proxy = FreezableProxy::start(port).await;
    let proxied = url.replacen(&format!(":{port}/"), &format!(":{}/", proxy.port), 1);
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // A slow destination, so the blob takes seconds and A is in its middle when cut off.
    let recv = HttpReceiver::start();
    recv.state.delay_ms.store(150, Ordering::SeqCst);
    let a_out = format!(
        "output: recv\noutputs:\n  recv:\n    type: http\n    format: ndjson\n    url: '{}'\n",
        recv.url("/")
    );
    let a = replica(&emu, &dir.path().join("a"), &proxied, LEASE, BATCH, &a_out);
    let mut a = Collector::spawn(&a);
    support::generate(&emu, TYPE, 3000, 1).await;
    let published = support::published_ids(&emu).await;
    assert_eq!(published.len(), 3000);
    support::wait_for(WAIT, "A in the middle of the blob", || async {
        recv.state.events.lock().unwrap().len() >= 300
    })
    .await;
    let cut = Instant::now();
    proxy.freeze();
    support::wait_for(WAIT, "A to stop delivering", || async {
        a.logs().contains("stopped delivering a blob")
    })
    .await;
    let stopped = cut.elapsed();
    assert!(
        stopped <= LEASE + Duration::from_millis(500),
        "A stopped {stopped:?} after it was cut off: not within its lease ({LEASE:?})\n{}",
        a.logs()
    );
    assert!(
        a.logs().contains("its lease ran out without a renewal"),
        "{}",
        a.logs()
    );
    let a_delivered = recv.state.events.lock().unwrap().len();

    // B takes the blob over and finishes it.
    let b = replica(&emu, &dir.path().join("b"), &url, LEASE, BATCH, FILE_OUTPUT);
    let mut b_proc = Collector::spawn(&b);
    support::wait_for(WAIT, "every record delivered by A or B", || async {
        let mut all = receiver_ids(&recv);
        for (id, n) in support::output_ids(&b.events) {
            *all.entry(id).or_insert(0) += n;
        }
        published.iter().all(|id| all.contains_key(id))
    })
    .await;
    assert_eq!(
        recv.state.events.lock().unwrap().len(),
        a_delivered,
        "A delivered after it stopped"
    );
    let from_a = receiver_ids(&recv);
    let from_b = support::output_ids(&b.events);
    let repeated = from_b.keys().filter(|id| from_a.contains_key(*id)).count();
    println!(
        "A stopped {stopped:?} after it was cut off (lease {LEASE:?}); A delivered {}, B {}, repeated {repeated}",
        from_a.len(),
        from_b.len()
    );
    assert!(
        repeated <= 2 * BATCH as usize,
        "{repeated} records delivered twice: more than two batches"
    );
    assert!(from_a.values().chain(from_b.values()).all(|n| *n == 1));
    a.kill();
    b_proc.terminate(Duration::from_secs(20));
}

/// The pids of the server's processes (the postmaster and its children).
fn server_pids(pg: &Postgres) -> Vec<String> {
    let pm = std::fs::read_to_string(pg.dir().join("data/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no postmaster.pid in {}", pg.dir().display()));
    let children = std::process::Command::new("pgrep")
        .args(["-P", &pm])
        .output()
        .unwrap();
    let mut pids = vec![pm];
    pids.extend(
        String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned),
    );
    pids
}

fn signal_all(pids: &[String], sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(sig)
        .args(pids)
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pids:?}");
}

/// Collector sessions the server has been busy with (a statement running, or a transaction left
/// open) for longer than `for_secs`: stuck connections.
async fn stuck_sessions(observer: &PostgresStore, for_secs: u64) -> Vec<String> {
    observer
        .sessions_busy_longer_than(Duration::from_secs(for_secs))
        .await
        .unwrap()
}

/// The database frozen with SIGSTOP for 60 s while two replicas have calls in flight; then it
/// either resumes (`replace = false`) or is killed and a fresh server starts on the same port and
/// data (`replace = true`). Both replicas recover by themselves: every record arrives exactly
/// once, both answer ready again, and no collector session stays busy.
async fn frozen_database(replace: bool) {
    let pg = Postgres::start();
    let url = pg.create_database().await;
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let setups = [
        replica(
            &emu,
            &dir.path().join("a"),
            &url,
            Duration::from_secs(10),
            50,
            FILE_OUTPUT,
        ),
        replica(
            &emu,
            &dir.path().join("b"),
            &url,
            Duration::from_secs(10),
            50,
            FILE_OUTPUT,
        ),
    ];
    let mut replicas: Vec<Collector> = setups.iter().map(Collector::spawn).collect();
    support::generate(&emu, TYPE, 400, 8).await;
    support::wait_for(WAIT, "the first records", || async {
        setups
            .iter()
            .map(|s| support::line_count(&s.events))
            .sum::<usize>()
            >= 50
    })
    .await;
    // More content, so listings, claims and deliveries are in flight when the server freezes.
    support::generate(&emu, TYPE, 400, 8).await;
    let pids = server_pids(&pg);
    signal_all(&pids, "-STOP");
    // The scenario's length, not a synchronisation: the server stays frozen this long.
    tokio::time::sleep(Duration::from_secs(60)).await;
    if replace {
        signal_all(&pids, "-KILL");
        signal_all(&pids, "-CONT");
        support::wait_for(WAIT, "the frozen server gone", || async {
            !std::path::Path::new(&format!("/proc/{}", pids[0])).exists()
        })
        .await;
        let _ = std::fs::remove_file(pg.dir().join("data/postmaster.pid"));
        pg.start_server();
    } else {
        signal_all(&pids, "-CONT");
    }
    for r in &mut replicas {
        assert!(
            r.child.try_wait().unwrap().is_none(),
            "a replica exited while the database was frozen\n{}",
            r.logs()
        );
    }
    support::generate(&emu, TYPE, 200, 4).await;
    let published = support::published_ids(&emu).await;
    assert_eq!(published.len(), 1000);
    support::wait_for(WAIT, "every record after the freeze", || async {
        let mut all = std::collections::HashMap::new();
        for s in &setups {
            for (id, n) in support::output_ids(&s.events) {
                *all.entry(id).or_insert(0) += n;
            }
        }
        published.iter().all(|id| all.contains_key(id))
    })
    .await;
    for r in &replicas {
        support::wait_for(WAIT, "ready again", || async {
            let u = support::admin_url(&r.logs(), "/readyz");
            matches!(reqwest::get(u).await, Ok(resp) if resp.status() == 200)
        })
        .await;
    }
    let observer = PostgresStore::connect(&Postgres::config(&url))
        .await
        .expect("connect");
    let stuck = stuck_sessions(&observer, 20).await;
    assert!(stuck.is_empty(), "stuck collector sessions: {stuck:?}");
    let mut all = std::collections::HashMap::new();
    for s in &setups {
        for (id, n) in support::output_ids(&s.events) {
            *all.entry(id).or_insert(0) += n;
        }
    }
    let twice = all.values().filter(|n| **n > 1).count();
    println!(
        "replace={replace}: {} records delivered, {twice} twice (batches cut short by the freeze)",
        all.len()
    );
    for r in &mut replicas {
        r.terminate(Duration::from_secs(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_frozen_for_a_minute_then_resumed_is_ridden_out() {
    frozen_database(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_frozen_for_a_minute_then_replaced_is_ridden_out() {
    frozen_database(true).await;
}
