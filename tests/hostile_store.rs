//! Disk faults under the store, against the real binary: a full filesystem is answered 503 and
//! reported by `/readyz` and `o365_store_up`, and heals without a restart once space is back; a
//! damaged store file stops the start-up with the "store corrupt" message, never a panic.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use o365_collector::store::{ContentRef, EmbeddedStore, Store};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Writes zeros to `path` until the filesystem refuses with ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk).and_then(|_| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

async fn status_of(url: &str) -> u16 {
    match reqwest::get(url).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn store_up(url: &str) -> Option<u8> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("o365_store_up ")?.trim().parse().ok())
}

/// Notification attempts the emulator recorded with this HTTP status.
async fn notifications_answered(emu: &o365_emulator::Emulator, status: u16) -> usize {
    deliveries(emu)
        .await
        .iter()
        .filter(|d| d["kind"] == "notification" && d["status"] == status)
        .count()
}

/// Notification attempts the collector answered (any status).
async fn answered(emu: &o365_emulator::Emulator) -> usize {
    deliveries(emu)
        .await
        .iter()
        .filter(|d| d["kind"] == "notification" && !d["status"].is_null())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_filesystem_is_refused_then_heals_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&dir.path().join("store"), "size=4m") else {
        return;
    };
    let emu = redelivering_emulator().await;
    let types = ["Audit.General"];
    let s = setup(&emu, dir.path(), &types, "");
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &types).await;
    generate(&emu, "Audit.General", 10, 1).await;
    wait_for(WAIT, "the first records delivered", || async {
        line_count(&s.events) >= 10
    })
    .await;
    let readyz = admin_url(&c.logs(), "/readyz");
    let metrics = admin_url(&c.logs(), "/metrics");
    assert_eq!(status_of(&readyz).await, 200);
    assert_eq!(store_up(&metrics).await, Some(1));

    // The store's filesystem fills up: readiness says so at once, and notifications are refused
    // (503, so Microsoft delivers them again) as soon as the store needs space it cannot get.
    let filler = dir.path().join("store").join("filler");
    fill(&filler);
    wait_for(WAIT, "/readyz not ready", || async {
        status_of(&readyz).await == 503
    })
    .await;
    assert_eq!(store_up(&metrics).await, Some(0));
    publish_until_refused(&emu).await;
    assert_eq!(status_of(&readyz).await, 503, "not ready while it lasts");
    assert_eq!(store_up(&metrics).await, Some(0));

    // Space is back: the same process takes notifications again and delivers everything.
    std::fs::remove_file(&filler).unwrap();
    healed_in_place(&mut c, &emu, &s, &readyz).await;
    assert_eq!(store_up(&metrics).await, Some(1));
    let status = c.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", c.logs());
}

/// Once the store is healed: `/readyz` is ready again, every record Microsoft redelivers arrives
/// exactly once, and it is the same process (no restart healed it).
async fn healed_in_place(
    c: &mut Collector,
    emu: &o365_emulator::Emulator,
    s: &Setup,
    readyz: &str,
) {
    wait_for(WAIT, "/readyz ready again", || async {
        status_of(readyz).await == 200
    })
    .await;
    let published = published_ids(emu).await;
    wait_for(WAIT, "every published record delivered", || async {
        output_ids(&s.events).len() >= published.len()
    })
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
    assert!(
        c.child.try_wait().unwrap().is_none(),
        "no restart: the same process healed\n{}",
        c.logs()
    );
}
/// An emulator that keeps redelivering refused notifications, quickly, for as long as a test runs.
async fn redelivering_emulator() -> o365_emulator::Emulator {
    emulator(|c| {
        c.webhook_max_failures = 100_000;
        c.webhook_max_backoff = Duration::from_millis(200);
        c.webhook_disable_after = Duration::from_secs(600);
    })
    .await
}

/// Publishes small blobs, one at a time, until the collector refuses a notification with 503;
/// returns how many were published.
async fn publish_until_refused(emu: &o365_emulator::Emulator) -> usize {
    let before = notifications_answered(emu, 503).await;
    let answered_before = answered(emu).await;
    let mut blobs = 0;
    while notifications_answered(emu, 503).await == before {
        assert!(blobs < 200, "no notification refused");
        generate(emu, "Audit.General", 5, 1).await;
        blobs += 1;
        wait_for(WAIT, "the notification answered", || async {
            answered(emu).await >= answered_before + blobs
        })
        .await;
    }
    blobs
}

/// Damage found while running: a full disk closes the store's handle, and while it is closed the
/// file's pages are damaged, so the reopen finds the damage. The webhook answers 503 while it
/// lasts and the process stays up (never a panic); once a good copy of the file is put back, the
/// same process reopens it, and every notification Microsoft delivers again is stored and
/// delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_found_while_running_is_refused_then_heals_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let _tmpfs = Tmpfs::mount(&store_dir, "size=8m").expect("a tmpfs for the store");
    let emu = redelivering_emulator().await;
    let s = setup(&emu, dir.path(), &["Audit.General"], "");
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;
    generate(&emu, "Audit.General", 10, 1).await;
    wait_for(WAIT, "the first records delivered", || async {
        line_count(&s.events) >= 10
    })
    .await;
    let readyz = admin_url(&c.logs(), "/readyz");

    // A write fails (full disk): the store closes its handle and stays closed while the disk is
    // full. Nothing can change the file now, so a copy of it is what the store holds.
    let filler = store_dir.join("filler");
    fill(&filler);
    publish_until_refused(&emu).await;
    wait_for(WAIT, "the store closed after the failed write", || async {
        c.logs().contains("store closed after a failure")
    })
    .await;
    let file = store_dir.join(o365_collector::store::embedded::FILE_NAME);
    let good = dir.path().join("queue.redb.good");
    std::fs::copy(&file, &good).unwrap();
    let damaged = damage_pages(&file, &[LEAF, BRANCH]);
    assert!(damaged > 0, "the store has pages to damage");

    // Space is back: the reopen reads the damaged file and refuses it; the webhook keeps
    // answering 503 and the process stays up.
    std::fs::remove_file(&filler).unwrap();
    wait_for(WAIT, "the damage found by a reopen", || async {
        c.logs().contains("store corrupt")
    })
    .await;
    let refused = notifications_answered(&emu, 503).await;
    generate(&emu, "Audit.General", 5, 1).await;
    wait_for(
        WAIT,
        "a notification refused on the damaged store (or the process gone)",
        || async {
            notifications_answered(&emu, 503).await > refused || status_of(&readyz).await == 0
        },
    )
    .await;
    assert!(
        c.child.try_wait().unwrap().is_none(),
        "the process stays up\n{}",
        c.logs()
    );
    assert_eq!(status_of(&readyz).await, 503, "not ready while damaged");
    assert!(!c.logs().contains("panicked"), "{}", c.logs());

    // A good copy is put back (renamed over the file, as an operator restores one): the same
    // process reopens it and stores what Microsoft delivers again.
    let restored = store_dir.join("queue.redb.restored");
    std::fs::copy(&good, &restored).unwrap();
    std::fs::rename(&restored, &file).unwrap();
    healed_in_place(&mut c, &emu, &s, &readyz).await;
    assert!(!c.logs().contains("panicked"), "{}", c.logs());
    let status = c.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", c.logs());
}

/// A store with enough entries for interior (branch) pages, then random bytes over every one.
#[tokio::test]
async fn damaged_interior_pages_stop_the_start_with_store_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    {
        let store = EmbeddedStore::open(&store_dir).unwrap();
        let items: Vec<ContentRef> = (0..3000)
            .map(|i| ContentRef {
                tenant_id: TENANT.into(),
                content_type: "Audit.General".into(),
                content_id: format!("20261130{i:08}$blob$audit_general$Audit_General$emea0001"),
                content_uri: format!(
                    "https://manage.office.com/api/v1.0/{TENANT}/activity/feed/audit/{i}"
                ),
                content_created: None,
                content_expiration: None,
                records: None,
            })
            .collect();
        store.enqueue(items).await.unwrap();
    }
    let file = store_dir.join(o365_collector::store::embedded::FILE_NAME);
    let damaged = damage_pages(&file, &[BRANCH]);
    assert!(damaged > 0, "the store has interior pages");

    let emu = emulator(|_| {}).await;
    let s = setup(&emu, dir.path(), &["Audit.General"], "");
    let mut c = Collector::spawn(&s);
    let status = c.wait_exit(WAIT);
    let logs = c.logs();
    assert!(!status.success(), "exits non-zero: {status}\n{logs}");
    assert_ne!(status.code(), Some(101), "not a panic\n{logs}");
    assert!(logs.contains("store corrupt"), "{logs}");
    assert!(
        logs.contains(&file.display().to_string()),
        "names the file\n{logs}"
    );
    assert!(logs.contains("aside"), "says how to recover\n{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    assert_eq!(
        logs.matches("store corrupt").count(),
        1,
        "the error is printed once\n{logs}"
    );
}

/// redb's page type bytes.
const LEAF: u8 = 1;
const BRANCH: u8 = 2;

/// Overwrites every B-tree page of a redb file whose type byte is in `kinds` (4 KiB pages after
/// the header page) with random bytes, keeping the type byte; returns how many. Written in place,
/// so it needs no free space.
fn damage_pages(file: &Path, kinds: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let bytes = std::fs::read(file).unwrap();
    let out = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut damaged = 0;
    for (i, page) in bytes.chunks(PAGE).enumerate().skip(1) {
        if !kinds.contains(&page[0]) {
            continue;
        }
        let mut noise = page.to_vec();
        for b in &mut noise[1..] {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        out.write_all_at(&noise, (i * PAGE) as u64).unwrap();
        damaged += 1;
    }
    out.sync_all().unwrap();
    damaged
}
