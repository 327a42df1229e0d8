//! Events appended to an NDJSON file, fsync'd before `send` returns, optionally rotated by size and
//! age, with rotated files optionally gzip'd.
//!
//! Dedup: the keys of the records in the last `dedup_window_bytes` written are remembered (read back
//! at start-up from the end of the active file and, when that is shorter than the window, from the
//! newest rotated files, plain or gzip), and a record whose key is among them is skipped. A batch
//! re-sent after a crash between "written" and "completed" therefore adds nothing, even when a
//! rotation happened in between: the in-memory window is kept across rotations.
//! A torn last line (a crash mid-write, never acknowledged) is cut off at start-up.
//!
//! Rotation (see [`rotate`]) happens only between batches, so a batch is never split across files:
//! before a batch that would make the active file larger than `rotate_bytes`, or once the active
//! file is `rotate_every` old (counted from its creation, taken at start-up from the later of its
//! birth time and the newest rotated name, so a restart does not make it young again). Rotating
//! fsyncs the active file, renames it to `<stem>-<UTC time>.<ext>`, fsyncs the directory and opens
//! a new active file. Compression and pruning (`keep`) run on a background thread; `kill -9` at any
//! point leaves either a complete rotated file or the untouched active file, and a sweep at
//! start-up removes temporaries and compresses what was left plain.

pub mod config;
pub mod rotate;

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

pub use rotate::{
    Clock, FileError, RotateReason, RotatedFile, SystemClock, read_rotated, rotated_files,
    rotation_due,
};
use rotate::{Context, Names, Sweeper, Worker, sync_dir, tail_of};

use super::{Batch, Output, OutputError, SendReport, event_key};
pub use config::{FileCompression, FileOutputConfig};

pub struct FileOutput {
    name: String,
    inner: Arc<Mutex<Inner>>,
    /// Compresses and prunes rotated files; `None` when the file does not rotate.
    worker: Option<Worker>,
}

struct Inner {
    path: PathBuf,
    names: Names,
    cfg: FileOutputConfig,
    clock: Arc<dyn Clock>,
    /// `None` after a rotation whose new active file could not be opened yet.
    file: Option<File>,
    /// Bytes of complete, fsync'd batches in the active file.
    len: u64,
    /// A failed write may have left bytes after `len`; they are cut before the next write.
    dirty: bool,
    /// A rename or a new file in the directory still needs the directory fsync'd.
    dir_unsynced: bool,
    /// When the active file was started (its age for `rotate_every`).
    started: SystemTime,
    /// Name time of the newest rotated file: the next name is later, whatever the clock says.
    last_rotated: Option<DateTime<Utc>>,
    window: u64,
    recent: Recent,
    sweeper: Option<Sweeper>,
}

/// Keys of the records within the last `window` bytes, oldest first.
#[derive(Default)]
struct Recent {
    order: VecDeque<(Option<u128>, u64)>,
    keys: HashSet<u128>,
    bytes: u64,
}

impl Recent {
    fn push(&mut self, key: Option<u128>, len: u64, window: u64) {
        if let Some(k) = key {
            self.keys.insert(k);
        }
        self.order.push_back((key, len));
        self.bytes += len;
        while self.bytes > window {
            let Some((k, l)) = self.order.pop_front() else {
                break;
            };
            self.bytes -= l;
            if let Some(k) = k {
                self.keys.remove(&k);
            }
        }
    }

    /// Remembers the records of `tail`, complete lines; `mid_line`: it starts inside a line.
    fn load(&mut self, tail: &[u8], mid_line: bool, window: u64) {
        let mut lines = tail.split_inclusive(|b| *b == b'\n');
        if mid_line {
            lines.next();
        }
        for line in lines {
            let key = serde_json::from_slice(line)
                .ok()
                .and_then(|v| event_key(&v));
            self.push(key, line.len() as u64, window);
        }
    }
}

impl FileOutput {
    pub fn open(name: &str, cfg: &FileOutputConfig) -> Result<FileOutput, OutputError> {
        Self::open_with_clock(name, cfg, Arc::new(SystemClock))
    }

    /// Like [`FileOutput::open`] with another time source for rotation ages and names (tests).
    pub fn open_with_clock(
        name: &str,
        cfg: &FileOutputConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<FileOutput, OutputError> {
        // What check-config judges, again at start-up: a problem names the key and the fix.
        config::probe_path(&cfg.path)
            .map_err(|(problem, fix)| OutputError::setup(name, "path", problem, fix))?;
        let fatal = |e: FileError| OutputError::Fatal {
            output: name.to_string(),
            reason: e.to_string(),
        };
        let mut inner = open_inner(cfg, clock).map_err(|e| {
            OutputError::setup(
                name,
                "path",
                format!("cannot be opened: {e}"),
                "point path at a regular file in a directory the collector's user can write (`check-config` checks it)",
            )
        })?;
        let worker = if cfg.rotates() {
            let w = Worker::start(inner.names.clone(), cfg)
                .ctx(|| "starting the rotation thread".to_string())
                .map_err(fatal)?;
            let sweeper = w.sweeper();
            // Finish what a previous run left half done (temporaries, plain rotated files, keep).
            sweeper.request();
            inner.sweeper = Some(sweeper);
            Some(w)
        } else {
            None
        };
        Ok(FileOutput {
            name: name.to_string(),
            inner: Arc::new(Mutex::new(inner)),
            worker,
        })
    }

    /// Waits until the background work requested so far (compressing, pruning) is done, at most
    /// `timeout`; true when it is. For tests, benchmarks and an orderly shutdown.
    pub fn settle(&self, timeout: Duration) -> bool {
        self.worker
            .as_ref()
            .is_none_or(|w| w.sweeper().settle(timeout))
    }
}

fn open_inner(cfg: &FileOutputConfig, clock: Arc<dyn Clock>) -> Result<Inner, FileError> {
    let path = cfg.path.as_path();
    let names = Names::new(path);
    let shown = || path.display().to_string();
    std::fs::create_dir_all(&names.dir).ctx(|| format!("creating {}", names.dir.display()))?;
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .ctx(|| format!("opening {}", shown()))?;
    if !existed {
        sync_dir(&names.dir)?;
    }
    let meta = file.metadata().ctx(|| format!("reading {}", shown()))?;
    let window = cfg.dedup_window_bytes;
    let len = meta.len();
    let start = len.saturating_sub(window);
    let mut tail = Vec::with_capacity((len - start) as usize);
    // Bounded by the length seen: a special file (or one growing meanwhile) must not be read on.
    file.seek(SeekFrom::Start(start))
        .and_then(|_| (&mut file).take(len - start).read_to_end(&mut tail))
        .ctx(|| format!("reading {}", shown()))?;
    // Cut a torn last line: it was never fsync'd as part of an accepted batch.
    let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let len = if complete < tail.len() {
        let cut = start + complete as u64;
        file.set_len(cut)
            .and_then(|_| file.sync_all())
            .ctx(|| format!("cutting the torn last line of {}", shown()))?;
        tail.truncate(complete);
        cut
    } else {
        len
    };
    let rotated = names
        .rotated_files()
        .ctx(|| format!("listing {}", names.dir.display()))?;
    // Fill the dedup window from the newest rotated files when the active file is shorter.
    let mut need = window.saturating_sub(tail.len() as u64);
    let mut older: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut seen_stamp = None;
    for f in rotated.iter().rev() {
        if need == 0 {
            break;
        }
        // A plain file and its `.gz` twin (a compression caught mid-way) hold the same records.
        if seen_stamp == Some(f.rotated_at) {
            continue;
        }
        match tail_of(f, need) {
            Ok((bytes, mid)) => {
                need = need.saturating_sub(bytes.len() as u64);
                seen_stamp = Some(f.rotated_at);
                older.push((bytes, mid));
            }
            Err(e) => {
                tracing::warn!(file = %f.path.display(), error = %e,
                    "file output: rotated file unreadable; its records are not in the dedup window");
            }
        }
    }
    let mut recent = Recent::default();
    for (bytes, mid) in older.iter().rev() {
        recent.load(bytes, *mid, window);
    }
    recent.load(&tail, start > 0, window);
    let last_rotated = rotated.last().map(|f| f.rotated_at);
    // Age of the active file: now if we just created it, else its birth time or the newest
    // rotation (which created it), whichever is later.
    let born = if existed {
        meta.created().ok()
    } else {
        Some(clock.now())
    };
    let started = [born, last_rotated.map(SystemTime::from)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_else(|| clock.now());
    Ok(Inner {
        path: path.to_path_buf(),
        names,
        cfg: cfg.clone(),
        clock,
        file: Some(file),
        len,
        dirty: false,
        dir_unsynced: false,
        started,
        last_rotated,
        window,
        recent,
        sweeper: None,
    })
}

impl Inner {
    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Makes the active file writable again after an earlier failure: opens it when a rotation
    /// could not, fsyncs the directory, cuts the leftovers of a failed write.
    fn ready(&mut self) -> Result<(), FileError> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&self.path)
                .ctx(|| format!("opening {}", self.shown()))?;
            self.len = f
                .metadata()
                .ctx(|| format!("reading {}", self.shown()))?
                .len();
            self.file = Some(f);
            self.dir_unsynced = true;
        }
        if self.dir_unsynced {
            sync_dir(&self.names.dir)?;
            self.dir_unsynced = false;
        }
        if self.dirty
            && let Some(f) = &self.file
        {
            f.set_len(self.len)
                .and_then(|_| f.sync_data())
                .ctx(|| format!("cutting a failed write from {}", self.shown()))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// fsync, rename to the next rotated name, fsync the directory, open a new active file.
    fn rotate(&mut self, reason: RotateReason, now: SystemTime) -> Result<(), FileError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.sync_all()
            .ctx(|| format!("syncing {}", self.shown()))?;
        let mut at = DateTime::<Utc>::from(now);
        at = DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
        if let Some(last) = self.last_rotated
            && at <= last
        {
            at = last + chrono::Duration::milliseconds(1);
        }
        let mut target = self.names.rotated(at);
        // rename() replaces silently: never over a file someone else put there.
        while target.exists() || rotate::gz_of(&target).exists() {
            at += chrono::Duration::milliseconds(1);
            target = self.names.rotated(at);
        }
        std::fs::rename(&self.path, &target)
            .ctx(|| format!("rotating {} to {}", self.shown(), target.display()))?;
        tracing::info!(file = %self.path.display(), rotated = %target.display(), ?reason,
            bytes = self.len, "file output rotated");
        self.file = None;
        self.len = 0;
        self.dirty = false;
        self.started = now;
        self.last_rotated = Some(at);
        self.dir_unsynced = true;
        sync_dir(&self.names.dir)?;
        self.dir_unsynced = false;
        if let Some(s) = &self.sweeper {
            s.request();
        }
        self.ready()
    }

    fn append(&mut self, lines: Lines) -> Result<SendReport, FileError> {
        let mut report = SendReport::default();
        let mut in_batch = HashSet::new();
        let dup: Vec<bool> = lines
            .spans
            .iter()
            .map(|(key, _)| {
                key.is_some_and(|k| self.recent.keys.contains(&k) || !in_batch.insert(k))
            })
            .collect();
        report.duplicates = dup.iter().filter(|d| **d).count();
        report.written = dup.len() - report.duplicates;
        let mut written = Vec::with_capacity(report.written);
        // The common case (no duplicate) writes the encoded lines as they are; otherwise the
        // duplicates are cut out.
        let buf = if report.duplicates == 0 {
            written.extend(lines.spans.iter().copied());
            lines.bytes
        } else {
            let mut buf = Vec::with_capacity(lines.bytes.len());
            let mut at = 0usize;
            for (&(key, len), dup) in lines.spans.iter().zip(&dup) {
                let end = at + len as usize;
                if !dup {
                    buf.extend_from_slice(&lines.bytes[at..end]);
                    written.push((key, len));
                }
                at = end;
            }
            buf
        };
        if buf.is_empty() {
            // Nothing to write (all duplicates): nothing to rotate for either.
            return Ok(report);
        }
        self.ready()?;
        if self.cfg.rotates() {
            let now = self.clock.now();
            if let Some(reason) =
                rotation_due(&self.cfg, self.len, buf.len() as u64, self.started, now)
            {
                self.rotate(reason, now)?;
            } else if self.len == 0
                && rotation_due(&self.cfg, 1, 0, self.started, now) == Some(RotateReason::Age)
            {
                // An empty file that sat idle past its age: its age counts from this first write.
                self.started = now;
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Err(FileError::new(
                format!("writing {}", self.path.display()),
                std::io::Error::other("the file is not open"),
            ));
        };
        if let Err(e) = file.write_all(&buf).and_then(|_| file.sync_data()) {
            // Leave no partial batch behind: the batch will be sent again.
            self.dirty = file.set_len(self.len).is_err();
            return Err(FileError::new(format!("writing {}", self.shown()), e));
        }
        self.len += buf.len() as u64;
        for (k, len) in written {
            self.recent.push(k, len, self.window);
        }
        Ok(report)
    }
}

/// A batch encoded as the lines to append (one copy of the events, taken before the write moves
/// to a blocking thread), with each line's record key and length.
struct Lines {
    bytes: Vec<u8>,
    spans: Vec<(Option<u128>, u64)>,
}

impl Lines {
    fn of(batch: &Batch) -> Lines {
        let mut bytes = Vec::with_capacity(batch.events.iter().map(|e| e.json.len() + 1).sum());
        let mut spans = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            bytes.extend_from_slice(&e.json);
            bytes.push(b'\n');
            spans.push((e.key, e.json.len() as u64 + 1));
        }
        Lines { bytes, spans }
    }
}

impl Output for FileOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        let inner = self.inner.clone();
        let lines = Lines::of(batch);
        let result = tokio::task::spawn_blocking(move || {
            let mut g = inner
                .lock()
                .map_err(|_| "file output poisoned by an earlier panic".to_string())?;
            g.append(lines).map_err(|e| e.to_string())
        })
        .await;
        let reason = match result {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(reason)) => reason,
            Err(e) => e.to_string(),
        };
        Err(OutputError::Retryable {
            output: self.name.clone(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Event, record_key};
    use serde_json::json;
    use std::path::Path;

    fn ev(id: &str) -> Event {
        let raw = json!({"Id": id, "CreationTime": "2026-01-01T00:00:00", "Operation": "Op", "RecordType": 1});
        let mapped = json!({"o365.audit.Id": id, "o365.audit.CreationTime": "2026-01-01T00:00:00",
            "o365.audit.Operation": "Op", "o365.audit.RecordType": 1});
        Event {
            key: record_key(&raw),
            json: serde_json::to_vec(&mapped).unwrap(),
            record_type: Some(1),
        }
    }

    fn batch(ids: &[&str]) -> Batch {
        Batch {
            events: ids.iter().map(|i| ev(i)).collect(),
            ..Batch::default()
        }
    }

    fn cfg(path: &Path) -> FileOutputConfig {
        FileOutputConfig {
            path: path.to_path_buf(),
            dedup_window_bytes: 1 << 20,
            ..FileOutputConfig::default()
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[tokio::test]
    async fn appends_and_dedups_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.ndjson");
        let out = FileOutput::open("f", &cfg(&path)).unwrap();
        let r = out.send(&batch(&["a", "b"])).await.unwrap();
        assert_eq!(
            r,
            SendReport {
                written: 2,
                duplicates: 0
            }
        );
        drop(out);
        // A crash between send and complete: the same blob comes again after a restart.
        let out = FileOutput::open("f", &cfg(&path)).unwrap();
        let r = out.send(&batch(&["a", "b", "c"])).await.unwrap();
        assert_eq!(
            r,
            SendReport {
                written: 1,
                duplicates: 2
            }
        );
        assert_eq!(lines(&path).len(), 3);
    }

    #[tokio::test]
    async fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let out = FileOutput::open("f", &cfg(&path)).unwrap();
        out.send(&batch(&["a"])).await.unwrap();
        drop(out);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"o365.audit.Id\":\"b")
            .unwrap();
        let out = FileOutput::open("f", &cfg(&path)).unwrap();
        out.send(&batch(&["b"])).await.unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 2);
        for line in l {
            serde_json::from_str::<serde_json::Value>(&line).unwrap();
        }
    }

    #[tokio::test]
    async fn window_forgets_old_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let one = ev("a").json.len() as u64 + 1;
        let c = FileOutputConfig {
            path: path.clone(),
            dedup_window_bytes: one * 2,
            ..FileOutputConfig::default()
        };
        let out = FileOutput::open("f", &c).unwrap();
        out.send(&batch(&["a", "b", "c"])).await.unwrap();
        let r = out.send(&batch(&["a", "c"])).await.unwrap();
        assert_eq!(
            r,
            SendReport {
                written: 1,
                duplicates: 1
            }
        );
    }
}
