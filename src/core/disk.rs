//! Whether a directory can take a write, asked before anything depends on it (the store's
//! directory, a file output's): `check-config` and readiness both probe rather than guess from
//! permission bits, which say nothing of a full or read-only filesystem.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The nearest ancestor of `dir` (or `dir` itself) that exists: where a missing directory would be
/// created. `.` when none of a relative path exists.
pub fn nearest_existing(dir: &Path) -> &Path {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => return Path::new("."),
        }
    }
    at
}

/// Writes `bytes` zero bytes to a file named `name`-pid-counter in `dir` with fsync and removes
/// it: `Err` with the reason when the directory cannot take a write (full, read-only, missing
/// permission). A missing directory is probed at its nearest existing ancestor.
pub fn probe_dir(dir: &Path, name: &str, bytes: usize) -> Result<(), String> {
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let at = nearest_existing(dir);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let file = at.join(format!("{name}-{}-{n}", std::process::id()));
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&file)?;
        f.write_all(&vec![0u8; bytes])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&file);
    result.map_err(|e| format!("{} does not take a write: {e}", at.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_probed_where_it_would_be_created() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("a/b/c");
        assert_eq!(nearest_existing(&missing), tmp.path());
        probe_dir(&missing, ".probe", 16).unwrap();
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "the probe is removed"
        );
        assert_eq!(nearest_existing(Path::new("no/such/dir")), Path::new("."));
    }
}
