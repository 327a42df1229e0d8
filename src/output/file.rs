//! Events appended to an NDJSON file, fsync'd before `send` returns.
//!
//! Dedup: the keys of the records in the last `dedup_window_bytes` of the file are remembered (read
//! back from the file at start-up, then kept as we write), and a record whose key is among them is
//! skipped. A blob re-sent after a crash between "written" and "completed" therefore adds nothing.
//! A torn last line (a crash mid-write, never acknowledged) is cut off at start-up.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Batch, Output, OutputError, SendReport, event_key};
use crate::config::FileOutputConfig;

pub struct FileOutput {
    name: String,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    file: File,
    window: u64,
    recent: Recent,
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
}

impl FileOutput {
    pub fn open(name: &str, cfg: &FileOutputConfig) -> Result<FileOutput, OutputError> {
        let fatal = |reason: String| OutputError::Fatal {
            output: name.to_string(),
            reason,
        };
        let inner = open_inner(&cfg.path, cfg.dedup_window_bytes)
            .map_err(|e| fatal(format!("{}: {e}", cfg.path.display())))?;
        Ok(FileOutput {
            name: name.to_string(),
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

fn open_inner(path: &Path, window: u64) -> std::io::Result<Inner> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut tail)?;
    // Cut a torn last line: it was never fsync'd as part of an accepted batch.
    let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < tail.len() {
        file.set_len(start + complete as u64)?;
        file.sync_all()?;
        tail.truncate(complete);
    }
    let mut recent = Recent::default();
    let mut lines = tail.split_inclusive(|b| *b == b'\n');
    if start > 0 {
        lines.next(); // starts mid-line
    }
    for line in lines {
        let key = serde_json::from_slice(line)
            .ok()
            .and_then(|v| event_key(&v));
        recent.push(key, line.len() as u64, window);
    }
    Ok(Inner {
        path: path.to_path_buf(),
        file,
        window,
        recent,
    })
}

impl Inner {
    fn append(&mut self, batch: &Batch) -> std::io::Result<SendReport> {
        let mut buf = Vec::with_capacity(batch.events.iter().map(|e| e.json.len() + 1).sum());
        let mut report = SendReport::default();
        let mut written = Vec::with_capacity(batch.events.len());
        let mut in_batch = HashSet::new();
        for e in &batch.events {
            if let Some(k) = e.key
                && (self.recent.keys.contains(&k) || !in_batch.insert(k))
            {
                report.duplicates += 1;
                continue;
            }
            buf.extend_from_slice(&e.json);
            buf.push(b'\n');
            written.push((e.key, e.json.len() as u64 + 1));
            report.written += 1;
        }
        if !buf.is_empty() {
            let before = self.file.metadata()?.len();
            if let Err(e) = self
                .file
                .write_all(&buf)
                .and_then(|_| self.file.sync_data())
            {
                // Leave no partial batch behind: the batch will be sent again.
                let _ = self.file.set_len(before);
                return Err(e);
            }
        }
        for (k, len) in written {
            self.recent.push(k, len, self.window);
        }
        Ok(report)
    }
}

impl Output for FileOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        let inner = self.inner.clone();
        let batch = batch.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut g = inner
                .lock()
                .map_err(|_| std::io::Error::other("file output poisoned"))?;
            g.append(&batch)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", g.path.display())))
        })
        .await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(OutputError::Retryable {
                output: self.name.clone(),
                reason: e.to_string(),
            }),
            Err(e) => Err(OutputError::Retryable {
                output: self.name.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Event, record_key};
    use serde_json::json;

    fn ev(id: &str) -> Event {
        let raw = json!({"Id": id, "CreationTime": "2026-01-01T00:00:00", "Operation": "Op", "RecordType": 1});
        let mapped = json!({"o365.audit.Id": id, "o365.audit.CreationTime": "2026-01-01T00:00:00",
            "o365.audit.Operation": "Op", "o365.audit.RecordType": 1});
        Event {
            key: record_key(&raw),
            json: serde_json::to_vec(&mapped).unwrap(),
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
