//! Rotation of the file output: names of rotated files, when to rotate, and the background worker
//! that compresses and prunes rotated files.
//!
//! A rotated file is named after the moment it was rotated, in UTC with milliseconds, between the
//! stem and the extension of the active file: `events.ndjson` → `events-20261125T153000.123Z.ndjson`
//! (and `….ndjson.gz` once compressed). Names are fixed-width, so they sort by time, and every
//! rotation gets a later name than the one before (the clock is not trusted to move forward).
//! Compression writes a hidden temporary file (`.events-….ndjson.gz.tmp`), fsyncs it, renames it to
//! the `.gz` name, fsyncs the directory and only then deletes the plain file; a sweep at start-up
//! finishes whatever a crash interrupted.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};
use flate2::Compression;
use flate2::GzBuilder;
use flate2::read::MultiGzDecoder;

use super::config::{FileCompression, FileOutputConfig};

/// Timestamp of rotated names: fixed width, so names sort by time.
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";
const STAMP_LEN: usize = "20261125T153000.123Z".len();
const CHUNK: usize = 256 * 1024;

/// The time source of rotation (ages and names); tests inject their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Why the active file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateReason {
    /// The next batch would make it larger than `rotate_bytes`.
    Size,
    /// It is `rotate_every` old.
    Age,
}

/// Whether the active file (`len` bytes, created at `started`) must be rotated before a batch of
/// `incoming` bytes is appended at `now`. An empty file is never rotated: a batch larger than
/// `rotate_bytes` goes whole into a file of its own, since a batch is never split.
pub fn rotation_due(
    cfg: &FileOutputConfig,
    len: u64,
    incoming: u64,
    started: SystemTime,
    now: SystemTime,
) -> Option<RotateReason> {
    if len == 0 {
        return None;
    }
    if let Some(limit) = cfg.rotate_bytes
        && len.saturating_add(incoming) > limit
    {
        return Some(RotateReason::Size);
    }
    if let Some(every) = cfg.rotate_every {
        // A clock that went backwards gives age 0: the file is not rotated early.
        let age = now.duration_since(started).unwrap_or(Duration::ZERO);
        if age >= every {
            return Some(RotateReason::Age);
        }
    }
    None
}

/// An I/O failure with what was being done and to which path, for logs and `Retryable` reasons.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct FileError {
    what: String,
    #[source]
    source: io::Error,
}

impl FileError {
    pub(super) fn new(what: impl Into<String>, source: io::Error) -> FileError {
        FileError {
            what: what.into(),
            source,
        }
    }
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// Shorthand: `io_result.ctx(|| format!("writing {}", path.display()))`.
pub(super) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, FileError>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, FileError> {
        self.map_err(|e| FileError::new(what(), e))
    }
}

/// One rotated file (plain or gzip) of an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedFile {
    pub path: PathBuf,
    /// When it was rotated (from its name).
    pub rotated_at: DateTime<Utc>,
    pub gzip: bool,
}

/// What a file in the output's directory is to us.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Rotated(RotatedFile),
    /// A compression that did not finish.
    Temp(PathBuf),
}

/// How rotated files of one active file are named.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub dir: PathBuf,
    stem: String,
    /// With its dot, or empty.
    ext: String,
}

impl Names {
    pub fn new(active: &Path) -> Names {
        let dir = match active.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stem = active
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = active
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        Names { dir, stem, ext }
    }

    pub fn rotated(&self, at: DateTime<Utc>) -> PathBuf {
        self.dir
            .join(format!("{}-{}{}", self.stem, at.format(STAMP), self.ext))
    }

    fn temp_of(plain: &Path) -> PathBuf {
        let name = plain
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        plain.with_file_name(format!(".{name}.gz.tmp"))
    }

    /// The timestamp in a plain rotated name, e.g. `events-20261125T153000.123Z.ndjson`.
    fn stamp_of(&self, name: &str) -> Option<DateTime<Utc>> {
        let rest = name.strip_prefix(&self.stem)?.strip_prefix('-')?;
        let stamp = rest.strip_suffix(self.ext.as_str())?;
        if stamp.len() != STAMP_LEN {
            return None;
        }
        NaiveDateTime::parse_from_str(stamp, STAMP)
            .ok()
            .map(|t| t.and_utc())
    }

    fn classify(&self, name: &str) -> Option<Entry> {
        if let Some(inner) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".gz.tmp"))
        {
            return self
                .stamp_of(inner)
                .map(|_| Entry::Temp(self.dir.join(name)));
        }
        let (plain, gzip) = match name.strip_suffix(".gz") {
            Some(p) => (p, true),
            None => (name, false),
        };
        self.stamp_of(plain).map(|rotated_at| {
            Entry::Rotated(RotatedFile {
                path: self.dir.join(name),
                rotated_at,
                gzip,
            })
        })
    }

    fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let dir = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in dir {
            let entry = entry?;
            if let Some(e) = entry.file_name().to_str().and_then(|n| self.classify(n)) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Rotated files, oldest first; a plain file sorts before its `.gz` twin.
    pub fn rotated_files(&self) -> io::Result<Vec<RotatedFile>> {
        let mut files: Vec<RotatedFile> = self
            .entries()?
            .into_iter()
            .filter_map(|e| match e {
                Entry::Rotated(r) => Some(r),
                Entry::Temp(_) => None,
            })
            .collect();
        files.sort_by_key(|f| (f.rotated_at, f.gzip));
        Ok(files)
    }
}

/// The name a plain rotated file has once compressed.
pub(super) fn gz_of(plain: &Path) -> PathBuf {
    let mut s = plain.as_os_str().to_owned();
    s.push(".gz");
    PathBuf::from(s)
}

/// The rotated files of the file output whose active file is `active`, oldest first (a rotation
/// caught half-compressed shows both its plain and its `.gz` file; the plain one is complete).
pub fn rotated_files(active: &Path) -> io::Result<Vec<RotatedFile>> {
    Names::new(active).rotated_files()
}

/// Reads the whole content of a rotated file, decompressing `.gz`.
pub fn read_rotated(file: &RotatedFile) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let f = File::open(&file.path)?;
    if file.gzip {
        MultiGzDecoder::new(BufReader::new(f)).read_to_end(&mut out)?;
    } else {
        BufReader::new(f).read_to_end(&mut out)?;
    }
    Ok(out)
}

/// The last `need` bytes of a rotated file (plain or gzip) and whether they start mid-file.
pub(super) fn tail_of(file: &RotatedFile, need: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut f = File::open(&file.path)?;
    if !file.gzip {
        let len = f.metadata()?.len();
        let start = len.saturating_sub(need);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.take(len - start).read_to_end(&mut buf)?;
        return Ok((buf, start > 0));
    }
    // The uncompressed size is unknown before the end: stream, keeping only the last `need` bytes.
    let need = usize::try_from(need).unwrap_or(usize::MAX);
    let mut dec = MultiGzDecoder::new(BufReader::new(f));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut cut = false;
    loop {
        let n = match dec.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > need.saturating_add(CHUNK * 4) {
            buf.drain(..buf.len() - need);
            cut = true;
        }
    }
    if buf.len() > need {
        buf.drain(..buf.len() - need);
        cut = true;
    }
    Ok((buf, cut))
}

/// fsync of a directory, so that a rename or a new file in it survives a power loss.
pub(super) fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// What the background worker is told to do (one job kind: a sweep of the directory).
enum Msg {
    Sweep,
    Stop,
}

/// Sweeps requested and done, so that callers can wait until the worker caught up.
#[derive(Default)]
struct Progress {
    requested: u64,
    done: u64,
}

/// Requests sweeps from the worker; cheap to clone.
#[derive(Clone)]
pub(super) struct Sweeper {
    tx: mpsc::Sender<Msg>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
}

impl Sweeper {
    /// Asks for a sweep: compress plain rotated files, remove stale temporaries, prune.
    pub fn request(&self) {
        if let Ok(mut p) = self.progress.0.lock() {
            p.requested += 1;
        }
        // A send fails only when the worker is gone (shutting down); the next start-up sweeps.
        let _ = self.tx.send(Msg::Sweep);
    }

    /// Waits until every sweep requested so far is done; false after `timeout`.
    pub fn settle(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.progress;
        let Ok(guard) = lock.lock() else {
            return false;
        };
        cv.wait_timeout_while(guard, timeout, |p| p.done < p.requested)
            .map(|(_, r)| !r.timed_out())
            .unwrap_or(false)
    }
}

/// The background thread compressing and pruning rotated files, off the send path.
pub(super) struct Worker {
    sweeper: Sweeper,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(names: Names, cfg: &FileOutputConfig) -> io::Result<Worker> {
        let (tx, rx) = mpsc::channel();
        let sweeper = Sweeper {
            tx,
            progress: Arc::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let job = Sweep {
            names,
            compression: cfg.compression,
            keep: cfg.keep,
            stop: stop.clone(),
        };
        let progress = sweeper.progress.clone();
        let handle = std::thread::Builder::new()
            .name("file-output-rotation".into())
            .spawn(move || {
                while let Ok(Msg::Sweep) = rx.recv() {
                    // Requests that piled up while sweeping are served by one more sweep.
                    let mut stopping = false;
                    while let Ok(m) = rx.try_recv() {
                        stopping |= matches!(m, Msg::Stop);
                    }
                    if stopping {
                        break;
                    }
                    let target = progress.0.lock().map(|p| p.requested).unwrap_or(0);
                    job.run();
                    if job.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut p) = progress.0.lock() {
                        p.done = p.done.max(target);
                    }
                    progress.1.notify_all();
                }
            })?;
        Ok(Worker {
            sweeper,
            stop,
            handle: Some(handle),
        })
    }

    pub fn sweeper(&self) -> Sweeper {
        self.sweeper.clone()
    }
}

impl Drop for Worker {
    /// Stops at the next chunk; a compression cut short leaves a temporary file and the plain
    /// file, which the next start-up sweep handles.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sweeper.tx.send(Msg::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One pass over the directory: finish or redo compressions, then delete what `keep` excludes.
struct Sweep {
    names: Names,
    compression: FileCompression,
    keep: usize,
    stop: Arc<AtomicBool>,
}

impl Sweep {
    fn run(&self) {
        if let Err(e) = self.try_run() {
            tracing::warn!(error = %e, "file output: rotated files not swept; retried at the next rotation or start");
        }
    }

    fn try_run(&self) -> Result<(), FileError> {
        let dir = &self.names.dir;
        let entries = self
            .names
            .entries()
            .ctx(|| format!("listing {}", dir.display()))?;
        let mut changed = false;
        // Only this worker writes temporaries and it does one thing at a time: any found now is
        // left over from a compression that was interrupted.
        for e in &entries {
            if let Entry::Temp(p) = e {
                remove(p)?;
                changed = true;
            }
        }
        if self.compression == FileCompression::Gzip {
            let files = self
                .names
                .rotated_files()
                .ctx(|| format!("listing {}", dir.display()))?;
            for f in files.iter().filter(|f| !f.gzip) {
                if self.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let gz = gz_of(&f.path);
                let twin = files.iter().any(|g| g.gzip && g.path == gz);
                match self.compress(f, twin) {
                    Ok(()) => {}
                    // Pruned meanwhile, or someone else's doing: nothing to compress.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "file output: rotated file left uncompressed for now");
                    }
                }
            }
        }
        if self.keep > 0 {
            let files = self
                .names
                .rotated_files()
                .ctx(|| format!("listing {}", dir.display()))?;
            let mut stamps: Vec<DateTime<Utc>> = files.iter().map(|f| f.rotated_at).collect();
            stamps.dedup();
            if stamps.len() > self.keep {
                let cutoff = stamps[stamps.len() - self.keep];
                for f in files.iter().filter(|f| f.rotated_at < cutoff) {
                    remove(&f.path)?;
                    changed = true;
                }
            }
        }
        if changed {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Compresses one plain rotated file; `twin`: its `.gz` already exists (a crash between the
    /// rename and the delete), in which case it is checked and the plain file deleted.
    fn compress(&self, plain: &RotatedFile, twin: bool) -> Result<(), FileError> {
        let gz = gz_of(&plain.path);
        if twin {
            let ok = read_rotated(&RotatedFile {
                path: gz.clone(),
                rotated_at: plain.rotated_at,
                gzip: true,
            })
            .is_ok();
            if ok {
                remove(&plain.path)?;
                return sync_dir(&self.names.dir);
            }
            remove(&gz)?;
        }
        let tmp = Names::temp_of(&plain.path);
        match self.write_gz(&plain.path, &tmp) {
            Ok(true) => {}
            Ok(false) => {
                let _ = std::fs::remove_file(&tmp);
                return Ok(());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        std::fs::rename(&tmp, &gz)
            .ctx(|| format!("renaming {} to {}", tmp.display(), gz.display()))?;
        sync_dir(&self.names.dir)?;
        remove(&plain.path)?;
        sync_dir(&self.names.dir)
    }

    /// Writes `plain` gzip'd into `tmp` and fsyncs it; `false` when stopped midway.
    fn write_gz(&self, plain: &Path, tmp: &Path) -> Result<bool, FileError> {
        let mut src = File::open(plain).ctx(|| format!("opening {}", plain.display()))?;
        let out = File::create(tmp).ctx(|| format!("creating {}", tmp.display()))?;
        let name = plain
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut enc = GzBuilder::new()
            .filename(name)
            .write(BufWriter::with_capacity(CHUNK, out), Compression::default());
        let mut chunk = vec![0u8; CHUNK];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let n = match src.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FileError::new(format!("reading {}", plain.display()), e)),
            };
            enc.write_all(&chunk[..n])
                .ctx(|| format!("writing {}", tmp.display()))?;
        }
        let file = enc
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .ctx(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .ctx(|| format!("syncing {}", tmp.display()))?;
        Ok(true)
    }
}

fn remove(path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::new(format!("deleting {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        let n = Names::new(Path::new("/var/log/o365/events.ndjson"));
        let t = DateTime::parse_from_rfc3339("2026-11-25T15:30:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = n.rotated(t);
        assert_eq!(
            p,
            Path::new("/var/log/o365/events-20261125T153000.123Z.ndjson")
        );
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            n.classify(name),
            Some(Entry::Rotated(RotatedFile {
                path: p.clone(),
                rotated_at: t,
                gzip: false
            }))
        );
        let gz = format!("{name}.gz");
        assert!(matches!(
            n.classify(&gz),
            Some(Entry::Rotated(RotatedFile { gzip: true, .. }))
        ));
        let tmp = format!(".{name}.gz.tmp");
        assert!(matches!(n.classify(&tmp), Some(Entry::Temp(_))));
        for other in [
            "events.ndjson",
            "events-.ndjson",
            "events-2026.ndjson",
            "other-20261125T153000.123Z.ndjson",
            "events-20261125T153000.123Z.json",
        ] {
            assert_eq!(n.classify(other), None, "{other}");
        }
        let later = n.rotated(t + chrono::Duration::milliseconds(1));
        assert!(later > p);
    }

    #[test]
    fn names_without_extension_or_directory() {
        let n = Names::new(Path::new("events"));
        assert_eq!(n.dir, Path::new("."));
        let t = DateTime::from_timestamp(0, 0).unwrap();
        assert_eq!(n.rotated(t), Path::new("./events-19700101T000000.000Z"));
    }

    #[test]
    fn due_by_size_and_age() {
        let cfg = FileOutputConfig {
            rotate_bytes: Some(100),
            rotate_every: Some(Duration::from_secs(3600)),
            ..FileOutputConfig::default()
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(rotation_due(&cfg, 0, 1_000, t0, t0), None);
        assert_eq!(rotation_due(&cfg, 50, 50, t0, t0), None);
        assert_eq!(rotation_due(&cfg, 50, 51, t0, t0), Some(RotateReason::Size));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            rotation_due(&cfg, 1, 1, t0, t0 + hour),
            Some(RotateReason::Age)
        );
        assert_eq!(rotation_due(&cfg, 1, 1, t0 + hour, t0), None);
    }
}
