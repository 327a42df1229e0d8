//! kill -9 against the embedded store. The parent test re-executes this test binary as a child
//! (`crash_child`, selected by an environment variable) that loops enqueue / claim / complete /
//! reschedule / dead-letter / advance-cursor on one store directory and acknowledges each durable
//! step on stdout only after the call returned. The parent SIGKILLs it 24 times at random moments
//! (seeded PRNG: `O365_STORE_CRASH_SEED`, else `CRASH_SEED`, else a fixed default): at a random
//! time (start-up included), or right after a random number of acknowledgements, which the reopened
//! store must reach within [`ACK_WAIT`] after each kill. Then it reopens the store and checks
//! nothing acknowledged was lost:
//! every acknowledged id is still queued or was being completed / dead-lettered, enqueuing it again
//! is a duplicate, completed ids never come back, dead letters are kept, the cursor never moved back.
//! While a child runs, opening the same store from the parent process is refused (Unavailable).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use o365_collector::store::conformance::{WAIT_LIMIT, content};
use o365_collector::store::{EmbeddedStore, Store, StoreError};

const CHILD_DIR_ENV: &str = "O365_STORE_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "O365_STORE_CRASH_CHILD_ROUND";
const ROUNDS: u64 = 24;
const SEED: u64 = 0x5eed_0365_c011_ec70;
/// How long a child may take to acknowledge the steps the parent waits for (a bound on a hang, not
/// a speed).
const ACK_WAIT: Duration = Duration::from_secs(120);
const TENANT: &str = "t1";
const CONTENT_TYPE: &str = "Audit.General";

/// splitmix64: a small seeded PRNG so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the children acknowledged over all rounds.
#[derive(Default)]
struct Acks {
    /// Enqueue returned for these ids.
    enqueued: HashSet<String>,
    /// `complete` was called (maybe not finished) for these.
    completing: HashSet<String>,
    /// `complete` returned for these.
    completed: HashSet<String>,
    dead_lettering: HashSet<String>,
    dead: HashSet<String>,
    /// Highest cursor (ns) whose `advance_cursor` returned.
    cursor_ns: u64,
}

impl Acks {
    /// Reads one acknowledgement: a line ending in `<tag> <value> .`, so a torn line is ignored.
    fn record(&mut self, line: &str) {
        let mut parts = line.split(' ').rev();
        let (Some("."), Some(value), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let value = value.to_owned();
        match tag {
            "E" => {
                self.enqueued.insert(value);
            }
            "P" => {
                self.completing.insert(value);
            }
            "C" => {
                self.completed.insert(value);
            }
            "Q" => {
                self.dead_lettering.insert(value);
            }
            "D" => {
                self.dead.insert(value);
            }
            "K" => {
                let ns: u64 = value.parse().expect("cursor ack");
                self.cursor_ns = self.cursor_ns.max(ns);
            }
            _ => {}
        }
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // O365_STORE_CRASH_SEED (or CRASH_SEED, which CI draws afresh for every run) replays or
    // varies the kill moments; the child gets the same seed.
    let seed = ["O365_STORE_CRASH_SEED", "CRASH_SEED"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(SEED);
    println!("kill_9_loses_nothing_acknowledged: CRASH_SEED={seed} (set CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    let mut acks = Acks::default();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_ROUND_ENV, round.to_string())
            .env("O365_STORE_CRASH_SEED", seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut lines = Vec::new();
        // Acknowledgements waited for, and how many came.
        let mut waited = None;
        if rng.below(2) == 0 {
            // A moment in time: anywhere from start-up to well into the loop.
            std::thread::sleep(Duration::from_millis(5 + rng.below(400)));
        } else {
            // Right after the n-th acknowledgement, where a write that was not durable would be
            // lost.
            let target = 1 + rng.below(600) as usize;
            let deadline = Instant::now() + ACK_WAIT;
            let mut acked = 0;
            while acked < target && Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(line) => {
                        acked += usize::from(line.ends_with(" ."));
                        lines.push(line);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            waited = Some((target, acked));
        }
        if let Some(status) = child.try_wait().unwrap() {
            let err = err_reader.join().unwrap();
            panic!("round {round}: child exited by itself ({status}) before the kill:\n{err}");
        }
        if let Some((target, acked)) = waited {
            // The store the previous kill left took every step the child tried: one that could not
            // be used after a crash (a lock never freed, a wedged file) stops here.
            assert!(
                acked >= target,
                "round {round}: the child acknowledged {acked} of the {target} steps waited for \
                 within {ACK_WAIT:?}"
            );
            // The child has the store open now: another process must be refused.
            match EmbeddedStore::open(dir.path()) {
                Err(StoreError::Unavailable(msg)) => assert!(msg.contains("already in use")),
                other => panic!("round {round}: open beside a running child: {other:?}"),
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for line in &lines {
            acks.record(line);
        }
        let _ = err_reader.join();
        runtime.block_on(verify(dir.path(), round, &acks));
    }
    assert!(
        acks.enqueued.len() > 100 && !acks.completed.is_empty() && !acks.dead.is_empty(),
        "the children did real work: {} enqueued, {} completed, {} dead",
        acks.enqueued.len(),
        acks.completed.len(),
        acks.dead.len()
    );
    println!(
        "seed {seed}, {ROUNDS} kills: {} ids acknowledged, {} completed, {} dead-lettered, cursor {} ns",
        acks.enqueued.len(),
        acks.completed.len(),
        acks.dead.len(),
        acks.cursor_ns
    );
}

/// Reopens the store after a kill and checks every acknowledged step survived.
async fn verify(dir: &Path, round: u64, acks: &Acks) {
    let store = match EmbeddedStore::open(dir) {
        Ok(s) => s,
        Err(e) => panic!("round {round}: store does not open after kill -9: {e}"),
    };
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.leased, 0,
        "round {round}: a fresh process holds no lease"
    );

    // Claim the whole queue; blobs rescheduled shortly before the kill become due within 50 ms.
    let mut queued: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + WAIT_LIMIT;
    while (queued.len() as u64) < stats.pending {
        assert!(
            Instant::now() < deadline,
            "round {round}: only {} of {} pending blobs became claimable",
            queued.len(),
            stats.pending
        );
        let claimed = store
            .claim(usize::MAX, Duration::from_secs(60))
            .await
            .unwrap();
        if claimed.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for c in claimed {
            let id = c.content.content_id;
            assert!(
                queued.insert(id.clone(), c.seq).is_none(),
                "round {round}: {id} queued twice"
            );
        }
    }
    assert_eq!(
        queued.len() as u64,
        stats.pending,
        "round {round}: stats match the queue"
    );

    let dead: HashSet<String> = store
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c.content_id)
        .collect();
    for id in &acks.completed {
        assert!(
            !queued.contains_key(id),
            "round {round}: completed {id} reappeared"
        );
        assert!(
            !dead.contains(id),
            "round {round}: completed {id} is a dead letter"
        );
    }
    for id in &acks.dead {
        assert!(dead.contains(id), "round {round}: dead letter {id} lost");
        assert!(
            !queued.contains_key(id),
            "round {round}: dead letter {id} queued"
        );
    }
    for id in &acks.enqueued {
        let accounted = queued.contains_key(id)
            || (acks.completing.contains(id) && !dead.contains(id))
            || (acks.dead_lettering.contains(id) && dead.contains(id));
        assert!(accounted, "round {round}: acknowledged {id} was lost");
    }
    let again: Vec<_> = acks.enqueued.iter().map(|id| content(id)).collect();
    let out = store.enqueue(again).await.unwrap();
    assert_eq!(
        (out.added, out.duplicates),
        (0, acks.enqueued.len()),
        "round {round}: every acknowledged id is still a duplicate"
    );

    let cursor = store.cursor(TENANT, CONTENT_TYPE).await.unwrap();
    let cursor_ns = cursor.map_or(0, |t| {
        t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    assert!(
        cursor_ns >= acks.cursor_ns,
        "round {round}: cursor moved back: {cursor_ns} < acknowledged {}",
        acks.cursor_ns
    );
}

/// The child side: runs only when re-executed by the parent with the environment variable set.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(child_loop(Path::new(&dir), round));
}

async fn child_loop(dir: &Path, round: u64) {
    let store = EmbeddedStore::open(dir).expect("child opens the store");
    let seed = std::env::var("O365_STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let mut rng = Rng(seed ^ round.wrapping_mul(0x1000_0001));
    let mut cursor_ns = store
        .cursor(TENANT, CONTENT_TYPE)
        .await
        .unwrap()
        .map_or(0, |t| {
            t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    let mut n = 0u64;
    let mut previous: Option<String> = None;
    // Ends the harness's "test crash_child ... " line so acknowledgements start on their own.
    println!();
    loop {
        // Random mixes leave stretches where the last durable write was an enqueue followed only
        // by non-durable claims and renewals.
        match rng.below(8) {
            0..=3 => {
                let len = 1 + rng.below(8);
                let ids: Vec<String> = (0..len).map(|i| format!("r{round}-{}", n + i)).collect();
                n += len;
                let mut batch: Vec<_> = ids.iter().map(|id| content(id)).collect();
                if let Some(old) = &previous {
                    batch.push(content(old));
                }
                let out = store.enqueue(batch).await.unwrap();
                assert_eq!(out.added as u64, len);
                for id in &ids {
                    println!("E {id} .");
                }
                previous = ids.last().cloned();
            }
            4..=6 => handle_some(&store, &mut rng).await,
            _ => {
                cursor_ns += 1 + rng.below(1_000_000);
                let to = UNIX_EPOCH + Duration::from_nanos(cursor_ns);
                store
                    .advance_cursor(TENANT, CONTENT_TYPE, to)
                    .await
                    .unwrap();
                println!("K {cursor_ns} .");
                // An older position must be ignored.
                let back = UNIX_EPOCH + Duration::from_nanos(cursor_ns.saturating_sub(5_000_000));
                store
                    .advance_cursor(TENANT, CONTENT_TYPE, back)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Claims a few blobs and completes, reschedules, dead-letters or keeps each.
async fn handle_some(store: &EmbeddedStore, rng: &mut Rng) {
    let claimed = store
        .claim(1 + rng.below(6) as usize, Duration::from_secs(600))
        .await
        .unwrap();
    for c in claimed {
        let id = &c.content.content_id;
        match rng.below(8) {
            0..=3 => {
                println!("P {id} .");
                store.complete(c.seq).await.unwrap();
                println!("C {id} .");
            }
            4 | 5 => {
                let not_before = SystemTime::now() + Duration::from_millis(rng.below(50));
                store.reschedule(c.seq, not_before, "retry").await.unwrap();
            }
            6 => {
                println!("Q {id} .");
                store.dead_letter(c.seq, "gave up").await.unwrap();
                println!("D {id} .");
            }
            _ => {
                // Left leased: the lease dies with the process.
                store.renew(c.seq, Duration::from_secs(600)).await.unwrap();
            }
        }
    }
}
