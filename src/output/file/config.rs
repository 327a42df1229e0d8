//! `type: file`: the settings of a file output, their defaults and checks.

use std::path::PathBuf;
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
