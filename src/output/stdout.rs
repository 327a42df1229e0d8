//! Events as NDJSON on standard output (for piping into another agent).

use std::io::Write;

use super::{Batch, Output, OutputError, SendReport};

pub struct StdoutOutput {
    name: String,
    lock: tokio::sync::Mutex<()>,
}

impl StdoutOutput {
    pub fn new(name: &str) -> Self {
        StdoutOutput {
            name: name.to_string(),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl Output for StdoutOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        let _one_writer = self.lock.lock().await;
        let mut buf = Vec::with_capacity(batch.events.iter().map(|e| e.json.len() + 1).sum());
        for e in &batch.events {
            buf.extend_from_slice(&e.json);
            buf.push(b'\n');
        }
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf).and_then(|_| out.flush())
        })
        .await
        .map_err(|e| OutputError::Retryable {
            output: name.clone(),
            reason: e.to_string(),
        })?
        .map_err(|e| OutputError::Retryable {
            output: name,
            reason: e.to_string(),
        })?;
        Ok(SendReport {
            written: batch.events.len(),
            duplicates: 0,
        })
    }
}
