//! `type: file`: the settings of a file output, their defaults and checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::core::settings::{Section, de};

/// Bytes at the end of the file whose record ids are remembered for dedup (`dedup_window_bytes`).
pub const DEFAULT_DEDUP_WINDOW_BYTES: u64 = 64 << 20;
/// Shortest `rotate_every`: rotated names carry milliseconds, and a shorter age would only rotate
/// before every batch.
pub const MIN_ROTATE_EVERY: Duration = Duration::from_secs(1);

/// `type: file`: NDJSON appended and fsync'd, optionally rotated by size and age.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileOutputConfig {
    #[serde(deserialize_with = "de::path")]
    pub path: PathBuf,
    /// Bytes at the end of the file whose record ids are remembered across restarts for dedup.
    #[serde(deserialize_with = "de::size")]
    pub dedup_window_bytes: u64,
    /// Rotate before a batch would make the active file larger than this; `None`: no size limit.
    #[serde(deserialize_with = "de::opt::size")]
    pub rotate_bytes: Option<u64>,
    /// Rotate once the active file is this old (from its creation); `None`: no age limit.
    #[serde(deserialize_with = "de::opt::duration")]
    pub rotate_every: Option<Duration>,
    /// Rotated files kept (the oldest are deleted); 0 keeps all.
    #[serde(deserialize_with = "de::whole")]
    pub keep: usize,
    /// Compression of rotated files (done in the background, never on the send path).
    pub compression: FileCompression,
}

impl Default for FileOutputConfig {
    /// The documented defaults (the path is left empty: it is required).
    fn default() -> Self {
        FileOutputConfig {
            path: PathBuf::new(),
            dedup_window_bytes: DEFAULT_DEDUP_WINDOW_BYTES,
            rotate_bytes: None,
            rotate_every: None,
            keep: 0,
            compression: FileCompression::None,
        }
    }
}

/// Compression of rotated output files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileCompression {
    #[default]
    None,
    /// `<name>.gz`, written to a temporary name and renamed once complete.
    Gzip,
}

impl<'de> Deserialize<'de> for FileCompression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let choices = [
            ("none", FileCompression::None),
            ("gzip", FileCompression::Gzip),
        ];
        de::choice(d, &choices, "a compression of rotated files")
    }
}

impl FileOutputConfig {
    /// Whether the file rotates at all.
    pub fn rotates(&self) -> bool {
        self.rotate_bytes.is_some() || self.rotate_every.is_some()
    }

    /// Checks the meaning of the settings; values refused are reset to their defaults.
    pub fn check(&mut self, s: &mut Section) {
        if !s.given("path") {
            s.missing(
                "path",
                "set the file the events are appended to, e.g. `path: ./var/events.ndjson`",
            );
        } else if s.usable("path") && self.path.to_str().is_some_and(|p| p.trim().is_empty()) {
            s.problem(
                "path",
                "is empty",
                "set a file path, e.g. ./var/events.ndjson",
            );
        }
        if self.dedup_window_bytes == 0 {
            s.problem(
                "dedup_window_bytes",
                "is 0, which would turn off the record-id dedup that prevents duplicates after a crash",
                "use a positive size, e.g. 64MiB (the default)",
            );
        }
        if self.rotate_bytes == Some(0) {
            s.problem(
                "rotate_bytes",
                "is 0, which would rotate before every batch",
                "use a size such as 100MiB, or remove it to have no size limit",
            );
            self.rotate_bytes = None;
        }
        if self.rotate_every.is_some_and(|d| d < MIN_ROTATE_EVERY) {
            s.problem(
                "rotate_every",
                "is shorter than 1s",
                "use an age such as 1h or 1d, or remove it to have no age limit",
            );
            self.rotate_every = None;
        }
        let rotates_given = s.given("rotate_bytes") || s.given("rotate_every");
        // Rotated names add `-YYYYMMDDTHHMMSS.mmmZ` (21 bytes) to the file name; most file systems
        // allow 255 bytes.
        if rotates_given
            && self
                .path
                .file_name()
                .is_some_and(|n| n.len() + 21 + 3 > 255)
        {
            s.problem(
                "path",
                "has a file name too long for rotated names (they add 21 bytes, and .gz)",
                "use a file name of at most 231 bytes",
            );
        }
        if !rotates_given {
            let given: Vec<&str> = ["keep", "compression"]
                .into_iter()
                .filter(|k| s.given(k))
                .collect();
            for key in given {
                s.problem(
                    key,
                    "only applies to a rotated file",
                    "add rotate_bytes (e.g. 100MiB) or rotate_every (e.g. 1d), or remove it",
                );
            }
        }
    }
}

/// A problem with where a file is written: the problem and the fix.
pub type PathProblem = (String, String);

/// Whether a file can be written at `path` by this user, as `run` opens it: not a directory, not
/// under `/proc` or `/sys`, and in a directory that exists (or can be created under one that
/// does: `run` creates it) and takes a write (a probe file written, fsync'd and removed). A special
/// file (FIFO, device) passes here, see [`check_path`].
pub fn probe_path(path: &Path) -> Result<(), PathProblem> {
    let shown = path.display();
    let user = format!("the user the collector runs as (uid {})", current_uid());
    if path.as_os_str().to_string_lossy().ends_with('/') || path.is_dir() {
        return Err((
            format!("names {shown}, which is a directory"),
            format!(
                "name a file in it, e.g. {}",
                path.join("events.ndjson").display()
            ),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The nearest directory that exists: `run` creates the rest.
    let at = crate::core::disk::nearest_existing(dir);
    let real = at.canonicalize().unwrap_or_else(|_| at.to_owned());
    if let Some(kernel) = ["/proc", "/sys"].into_iter().find(|k| real.starts_with(k)) {
        return Err((
            format!("names {shown}, under {kernel}, a kernel interface where no file can be kept"),
            "write to a directory on a real filesystem, e.g. /var/lib/o365-collector/events.ndjson"
                .to_owned(),
        ));
    }
    if !at.is_dir() {
        return Err((
            format!(
                "names {shown}, but {} is a file, not a directory",
                at.display()
            ),
            "fix the path: every part before the file name must be a directory".to_owned(),
        ));
    }
    if let Err(e) = crate::core::disk::probe_dir(at, ".write-probe", 4096) {
        return Err((
            format!("names {shown}, which cannot be written: {e}"),
            format!(
                "create {} with write permission for {user}, or choose a writable directory",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// [`probe_path`], and an existing `path` must be a regular file this user can append to: a FIFO,
/// a device or a socket would take (or block) writes that are not kept, and rotation would rename it.
pub fn check_path(path: &Path) -> Result<(), PathProblem> {
    probe_path(path)?;
    let shown = path.display();
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !meta.is_file() {
        return Err((
            format!("names {shown}, which is a special file (a FIFO, device or socket), not a regular file"),
            "name a regular file (it is appended to, fsync'd and rotated), e.g. ./var/events.ndjson".to_owned(),
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new().append(true).open(path) {
        return Err((
            format!("names {shown}, which cannot be opened for appending: {e}"),
            format!(
                "give the user the collector runs as (uid {}) write permission on the file, or choose another path",
                current_uid()
            ),
        ));
    }
    Ok(())
}

fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}
