//! The file output with rotation, on real files in a temporary directory: size and age rotation
//! (with an injected clock, never sleeps), gzip of rotated files, `keep`, a start-up that finishes
//! a compression left half done, dedup across rotations and restarts, retryable I/O errors, and the
//! configuration keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use o365_collector::config::Config;
use o365_collector::output::file::{Clock, RotatedFile, read_rotated, rotated_files};
use o365_collector::output::{Batch, Event, FileOutput, Output, SendReport, record_key};
use o365_collector::output::{FileCompression, FileOutputConfig, OutputConfig};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(30);

/// A clock the test moves by hand.
struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(SystemTime::now())))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    fn rewind(&self, by: Duration) {
        *self.0.lock().unwrap() -= by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// A record of about 200 bytes, keyed like the mapping keys it.
fn event(id: &str) -> Event {
    let raw = json!({"Id": id, "CreationTime": "2026-11-25T15:30:00", "Operation": "FileAccessed", "RecordType": 6});
    let mapped = json!({"o365.audit.Id": id, "o365.audit.CreationTime": "2026-11-25T15:30:00",
        "o365.audit.Operation": "FileAccessed", "o365.audit.RecordType": 6,
        "o365.audit.ObjectId": "https://contoso.sharepoint.com/sites/finance/Shared Documents/q3.xlsx"});
    Event {
        key: record_key(&raw),
        json: serde_json::to_vec(&mapped).unwrap(),
        record_type: Some(6),
    }
}

fn line_len() -> u64 {
    event("r00000-00").json.len() as u64 + 1
}

/// Batch `n` holds records `r{n}-00` … `r{n}-{size-1}`.
fn batch(n: usize, size: usize) -> Batch {
    Batch {
        tenant_id: "t".into(),
        content_type: "Audit.SharePoint".into(),
        content_id: format!("blob-{n}"),
        events: (0..size)
            .map(|i| event(&format!("r{n:05}-{i:02}")))
            .collect(),
        tenant_name: None,
    }
}

fn ids_of(bytes: &[u8], into: &mut HashMap<String, u32>) {
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).expect("every line is JSON");
        let id = v["o365.audit.Id"].as_str().expect("id").to_string();
        *into.entry(id).or_insert(0) += 1;
    }
}

/// Every record id across the active file and all rotated files (plain or gzip), with counts.
fn all_ids(active: &Path) -> HashMap<String, u32> {
    let mut ids = HashMap::new();
    let files = rotated_files(active).unwrap();
    for f in &files {
        // A plain file and its `.gz` twin hold the same records: count the plain one.
        if f.gzip
            && files
                .iter()
                .any(|p| !p.gzip && p.rotated_at == f.rotated_at)
        {
            continue;
        }
        ids_of(&read_rotated(f).unwrap(), &mut ids);
    }
    ids_of(&std::fs::read(active).unwrap_or_default(), &mut ids);
    ids
}

fn assert_each_once(ids: &HashMap<String, u32>, batches: usize, size: usize) {
    assert_eq!(ids.len(), batches * size, "distinct records");
    let doubled: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "records not exactly once: {doubled:?}");
}

fn cfg(path: &Path) -> FileOutputConfig {
    FileOutputConfig {
        path: path.to_path_buf(),
        dedup_window_bytes: 1 << 20,
        ..FileOutputConfig::default()
    }
}

fn report(written: usize, duplicates: usize) -> SendReport {
    SendReport {
        written,
        duplicates,
    }
}

fn names(files: &[RotatedFile]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

async fn size_rotation(compression: FileCompression) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    // Room for two batches of 10 records: every third batch starts a new file.
    let c = FileOutputConfig {
        rotate_bytes: Some(line_len() * 25),
        compression,
        ..cfg(&path)
    };
    let out = FileOutput::open("f", &c).unwrap();
    for n in 0..20 {
        assert_eq!(out.send(&batch(n, 10)).await.unwrap(), report(10, 0));
    }
    assert!(out.settle(SETTLE));
    let files = rotated_files(&path).unwrap();
    assert_eq!(files.len(), 9, "{:?}", names(&files));
    for f in &files {
        assert_eq!(f.gzip, compression == FileCompression::Gzip, "{f:?}");
        let bytes = read_rotated(f).unwrap();
        // Batches are never split: each rotated file holds exactly two whole batches.
        assert_eq!(bytes.len() as u64, line_len() * 20, "{f:?}");
        let name = f.path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("events-") && name.contains(".ndjson"),
            "{name}"
        );
    }
    let sorted = {
        let mut n = names(&files);
        n.sort();
        n
    };
    assert_eq!(names(&files), sorted, "names sort by rotation time");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), line_len() * 20);
    assert_each_once(&all_ids(&path), 20, 10);
    // No temporaries are left once the background work is done.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn size_rotation_plain_keeps_every_record_once() {
    size_rotation(FileCompression::None).await;
}

#[tokio::test]
async fn size_rotation_gzip_keeps_every_record_once() {
    size_rotation(FileCompression::Gzip).await;
}

#[tokio::test]
async fn a_batch_larger_than_the_limit_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let c = FileOutputConfig {
        rotate_bytes: Some(line_len() * 5),
        ..cfg(&path)
    };
    let out = FileOutput::open("f", &c).unwrap();
    out.send(&batch(0, 2)).await.unwrap();
    out.send(&batch(1, 30)).await.unwrap();
    out.send(&batch(2, 2)).await.unwrap();
    let files = rotated_files(&path).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        read_rotated(&files[1]).unwrap().len() as u64,
        line_len() * 30
    );
    assert_each_once(&all_ids(&path), 1, 34);
}

#[tokio::test]
async fn age_rotation_follows_the_clock_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let clock = ManualClock::new();
    let c = FileOutputConfig {
        rotate_every: Some(Duration::from_secs(3600)),
        ..cfg(&path)
    };
    let out = FileOutput::open_with_clock("f", &c, clock.clone()).unwrap();
    out.send(&batch(0, 3)).await.unwrap();
    clock.advance(Duration::from_secs(3599));
    out.send(&batch(1, 3)).await.unwrap();
    assert!(
        rotated_files(&path).unwrap().is_empty(),
        "not an hour old yet"
    );
    clock.advance(Duration::from_secs(1));
    out.send(&batch(2, 3)).await.unwrap();
    let files = rotated_files(&path).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        read_rotated(&files[0]).unwrap().len() as u64,
        line_len() * 6
    );
    let rotated_at: SystemTime = files[0].rotated_at.into();
    let off = clock.now().duration_since(rotated_at).unwrap();
    assert!(
        off < Duration::from_millis(1),
        "named after the rotation time: {off:?}"
    );

    // A restart does not make the active file young again: its age counts from the rotation.
    drop(out);
    clock.advance(Duration::from_secs(1800));
    let out = FileOutput::open_with_clock("f", &c, clock.clone()).unwrap();
    out.send(&batch(3, 3)).await.unwrap();
    assert_eq!(rotated_files(&path).unwrap().len(), 1, "half an hour old");
    drop(out);
    clock.advance(Duration::from_secs(1800));
    let out = FileOutput::open_with_clock("f", &c, clock.clone()).unwrap();
    out.send(&batch(4, 3)).await.unwrap();
    let files = rotated_files(&path).unwrap();
    assert_eq!(files.len(), 2, "an hour old across two restarts");
    assert_eq!(
        read_rotated(&files[1]).unwrap().len() as u64,
        line_len() * 6
    );
    assert_each_once(&all_ids(&path), 5, 3);
}

#[tokio::test]
async fn a_clock_that_steps_back_still_gives_later_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let clock = ManualClock::new();
    let c = FileOutputConfig {
        rotate_bytes: Some(1),
        ..cfg(&path)
    };
    let out = FileOutput::open_with_clock("f", &c, clock.clone()).unwrap();
    // Rotations within the same millisecond (the clock does not move), then after the clock was
    // set back an hour: names still differ and sort in rotation order.
    for n in 0..5 {
        out.send(&batch(n, 1)).await.unwrap();
    }
    clock.rewind(Duration::from_secs(3600));
    for n in 5..8 {
        out.send(&batch(n, 1)).await.unwrap();
    }
    let files = rotated_files(&path).unwrap();
    assert_eq!(files.len(), 7);
    assert!(files.windows(2).all(|w| w[0].rotated_at < w[1].rotated_at));
    let mut ids: Vec<String> = Vec::new();
    for f in &files {
        let mut one = HashMap::new();
        ids_of(&read_rotated(f).unwrap(), &mut one);
        ids.extend(one.into_keys());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        ids, sorted,
        "rotated files in name order hold the batches in order"
    );
    assert_each_once(&all_ids(&path), 8, 1);
}

#[tokio::test]
async fn keep_prunes_the_oldest_rotated_files() {
    for compression in [FileCompression::None, FileCompression::Gzip] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let c = FileOutputConfig {
            rotate_bytes: Some(line_len() * 10),
            keep: 3,
            compression,
            ..cfg(&path)
        };
        let out = FileOutput::open("f", &c).unwrap();
        for n in 0..10 {
            out.send(&batch(n, 10)).await.unwrap();
        }
        assert!(out.settle(SETTLE));
        let files = rotated_files(&path).unwrap();
        assert_eq!(files.len(), 3, "{:?}", names(&files));
        // The newest three rotated files hold batches 6, 7 and 8; batch 9 is active.
        let mut ids = all_ids(&path);
        ids.retain(|_, n| *n > 0);
        let mut batches: Vec<String> = ids.keys().map(|id| id[..6].to_string()).collect();
        batches.sort();
        batches.dedup();
        assert_eq!(batches, ["r00006", "r00007", "r00008", "r00009"]);
    }
}

#[tokio::test]
async fn start_up_finishes_a_compression_left_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let plain = FileOutputConfig {
        rotate_bytes: Some(line_len() * 10),
        ..cfg(&path)
    };
    let out = FileOutput::open("f", &plain).unwrap();
    for n in 0..4 {
        out.send(&batch(n, 10)).await.unwrap();
    }
    drop(out);
    let files = rotated_files(&path).unwrap();
    assert_eq!(files.len(), 3);
    let contents: Vec<Vec<u8>> = files.iter().map(|f| read_rotated(f).unwrap()).collect();
    // The states a kill -9 can leave: a half-written temporary next to the plain file (first), a
    // complete `.gz` renamed into place but the plain file not yet deleted (second), and a plain
    // file whose compression never started (third).
    let name = |f: &RotatedFile| f.path.file_name().unwrap().to_str().unwrap().to_string();
    let tmp = dir.path().join(format!(".{}.gz.tmp", name(&files[0])));
    std::fs::write(&tmp, b"\x1f\x8b\x08\x00 torn").unwrap();
    let gz = dir.path().join(format!("{}.gz", name(&files[1])));
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&contents[1]).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
    }
    // And a `.gz` whose rename happened before the data was whole cannot exist (fsync first), but
    // a damaged twin is redone from the plain file rather than trusted.
    let damaged = dir.path().join(format!("{}.gz", name(&files[2])));
    std::fs::write(&damaged, b"not gzip").unwrap();

    let gzip = FileOutputConfig {
        compression: FileCompression::Gzip,
        ..plain
    };
    let out = FileOutput::open("f", &gzip).unwrap();
    assert!(out.settle(SETTLE));
    let after = rotated_files(&path).unwrap();
    assert_eq!(after.len(), 3, "{:?}", names(&after));
    for (f, before) in after.iter().zip(&contents) {
        assert!(f.gzip, "{f:?}");
        assert_eq!(&read_rotated(f).unwrap(), before);
    }
    assert!(!tmp.exists());
    let hidden = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(hidden, 0);
    assert_each_once(&all_ids(&path), 4, 10);
}

#[tokio::test]
async fn dedup_holds_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let c = FileOutputConfig {
        rotate_bytes: Some(line_len() * 10),
        compression: FileCompression::Gzip,
        ..cfg(&path)
    };
    let out = FileOutput::open("f", &c).unwrap();
    out.send(&batch(0, 10)).await.unwrap();
    out.send(&batch(1, 10)).await.unwrap();
    assert!(out.settle(SETTLE));
    assert_eq!(rotated_files(&path).unwrap().len(), 1);
    // Batch 0 now lives in a rotated file, batch 1 in the new active file.
    assert_eq!(out.send(&batch(0, 10)).await.unwrap(), report(0, 10));
    assert_eq!(out.send(&batch(1, 10)).await.unwrap(), report(0, 10));
    // A batch that would rotate again, re-sent: the duplicates are skipped before rotating.
    out.send(&batch(2, 10)).await.unwrap();
    assert_eq!(out.send(&batch(2, 10)).await.unwrap(), report(0, 10));
    assert!(out.settle(SETTLE));
    assert_each_once(&all_ids(&path), 3, 10);
}

#[tokio::test]
async fn dedup_after_a_restart_reads_the_rotated_files() {
    for compression in [FileCompression::None, FileCompression::Gzip] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let c = FileOutputConfig {
            rotate_bytes: Some(line_len() * 10),
            // Three files' worth: the active file plus the two newest rotated ones.
            dedup_window_bytes: line_len() * 30,
            compression,
            ..cfg(&path)
        };
        let out = FileOutput::open("f", &c).unwrap();
        for n in 0..5 {
            out.send(&batch(n, 10)).await.unwrap();
        }
        assert!(out.settle(SETTLE));
        drop(out);
        assert!(
            rotated_files(&path)
                .unwrap()
                .iter()
                .all(|f| f.gzip == (compression == FileCompression::Gzip))
        );
        let out = FileOutput::open("f", &c).unwrap();
        // A crash between send and complete of the last blobs: they come again.
        for n in [4, 3, 2] {
            assert_eq!(
                out.send(&batch(n, 10)).await.unwrap(),
                report(0, 10),
                "batch {n} ({compression:?})"
            );
        }
        // An empty active file (as right after a rotation): the window comes from rotated files.
        drop(out);
        std::fs::write(&path, b"").unwrap();
        let out = FileOutput::open("f", &c).unwrap();
        for n in [3, 2] {
            assert_eq!(out.send(&batch(n, 10)).await.unwrap(), report(0, 10));
        }
        assert!(out.settle(SETTLE));
        let ids = all_ids(&path);
        assert!(ids.values().all(|n| *n == 1));
    }
}

#[tokio::test]
async fn a_file_already_at_the_rotated_name_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let clock = ManualClock::new();
    let c = FileOutputConfig {
        rotate_bytes: Some(line_len() * 10),
        ..cfg(&path)
    };
    let out = FileOutput::open_with_clock("f", &c, clock.clone()).unwrap();
    out.send(&batch(0, 10)).await.unwrap();
    let stamp = chrono::DateTime::<chrono::Utc>::from(clock.now()).format("%Y%m%dT%H%M%S%.3fZ");
    let foreign = dir.path().join(format!("events-{stamp}.ndjson"));
    std::fs::write(&foreign, b"").unwrap();
    out.send(&batch(1, 10)).await.unwrap();
    assert_eq!(std::fs::read(&foreign).unwrap(), b"");
    let files = rotated_files(&path).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        read_rotated(&files[1]).unwrap().len() as u64,
        line_len() * 10
    );
}

#[tokio::test]
async fn a_failed_rotation_is_retryable_names_the_paths_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The rotated name (21 bytes longer) exceeds the 255-byte limit of a file name: rename fails.
    let path = dir.path().join(format!("{}.ndjson", "e".repeat(236)));
    let c = FileOutputConfig {
        rotate_bytes: Some(line_len() * 10),
        ..cfg(&path)
    };
    let out = FileOutput::open("f", &c).unwrap();
    out.send(&batch(0, 10)).await.unwrap();
    for _ in 0..2 {
        let err = out.send(&batch(1, 10)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("rotating {}", path.display())),
            "{text}"
        );
        assert!(text.contains("too long"), "{text}");
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), line_len() * 10);
    drop(out);
    // Without rotation the same file takes the batch; nothing was lost or doubled meanwhile.
    let out = FileOutput::open("f", &cfg(&path)).unwrap();
    assert_eq!(out.send(&batch(0, 10)).await.unwrap(), report(0, 10));
    assert_eq!(out.send(&batch(1, 10)).await.unwrap(), report(10, 0));
    assert_each_once(&all_ids(&path), 2, 10);
}

#[tokio::test]
async fn disk_full_is_retryable_and_names_the_path() {
    let full = PathBuf::from("/dev/full");
    if !full.exists() {
        eprintln!("no /dev/full on this system");
        return;
    }
    let out = FileOutput::open("f", &cfg(&full)).unwrap();
    let err = out.send(&batch(0, 3)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("/dev/full"), "{text}");
    assert!(text.contains("No space left"), "{text}");
}

// ---- configuration ---------------------------------------------------------------------------

fn parse(outputs: &str) -> Result<Config, Vec<(String, String)>> {
    let text = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         output: f\n\
         outputs:\n  f:\n    type: file\n    path: ./var/events.ndjson\n{outputs}"
    );
    Config::parse(&text, &|_| None)
        .map_err(|e| e.0.into_iter().map(|p| (p.key, p.problem)).collect())
}

fn file_cfg(c: &Config) -> &FileOutputConfig {
    match c.outputs.get("f") {
        Some(OutputConfig::File(f)) => f,
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_reads_the_rotation_keys() {
    let c = parse(
        "    rotate_bytes: 100MiB\n    rotate_every: 1h\n    keep: 24\n    compression: gzip\n",
    )
    .unwrap();
    let f = file_cfg(&c);
    assert_eq!(f.rotate_bytes, Some(100 << 20));
    assert_eq!(f.rotate_every, Some(Duration::from_secs(3600)));
    assert_eq!(f.keep, 24);
    assert_eq!(f.compression, FileCompression::Gzip);
    assert!(f.rotates());

    let c = parse("").unwrap();
    let f = file_cfg(&c);
    assert_eq!(
        (f.rotate_bytes, f.rotate_every, f.keep, f.compression),
        (None, None, 0, FileCompression::None)
    );
    assert!(!f.rotates());
}

#[test]
fn config_reports_bad_rotation_keys() {
    let p = parse(
        "    rotate_bytes: 0\n    rotate_every: 500ms\n    keep: -1\n    compression: zstd\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "outputs.f.rotate_bytes",
            "outputs.f.rotate_every",
            "outputs.f.keep",
            "outputs.f.compression"
        ],
        "{p:?}"
    );
    let p = parse("    keep: 3\n    compression: gzip\n").unwrap_err();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p.iter().all(|(_, problem)| problem.contains("rotated")),
        "{p:?}"
    );
    let p = parse("    rotate_byte: 1MiB\n").unwrap_err();
    assert_eq!(p[0].0, "outputs.f.rotate_byte");
    let long = format!(
        "outputs:\n  g:\n    type: file\n    path: ./var/{}.ndjson\n    rotate_every: 1h\n",
        "e".repeat(236)
    );
    let p = parse(&long.replacen("outputs:\n", "", 1)).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "outputs.g.path", "{p:?}");
}
