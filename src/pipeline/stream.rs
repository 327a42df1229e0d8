//! One blob on its way from the API to the output, in three stages that overlap:
//!
//! ```text
//! fetch task (async: reads the answer)          ─► chunk channel (CHUNK_QUEUE pieces of ≥ PIECE_BYTES)
//! mapping thread (charset, cut, skip, map, encode) ─► batch channel (one batch)
//! the worker's send loop (output, then progress)
//! ```
//!
//! Both channels are bounded, so a slow output stops the mapping thread, which stops the fetch
//! task, which stops reading the socket (TCP flow control holds the server): a worker holds at
//! most [`CHUNK_QUEUE`] + 1 pieces of the answer, the record being cut, and three batches (one being
//! filled, one queued, one being sent), whatever the size of the blob. The mapping runs on its own
//! thread (one per busy worker, so their number is bounded by `pipeline.workers`) because it is CPU
//! work that must not stall the async threads, and because it may wait on the batch channel for as
//! long as the output takes.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::blob::{Batcher, BlobError, Part, Records};
use super::jobs::{Job, Lanes, Mapped};
use crate::mapping::{Context, Format};
use crate::mgmt_api::{ApiError, ContentBody};

/// Pieces of the HTTP answer waiting for the mapping thread.
pub const CHUNK_QUEUE: usize = 8;
/// The fetch task hands the answer over in pieces of at least this size (the chunks the connection
/// delivers, typically 8–16 KiB each, gathered without copying): one hand-over, and one wake-up of
/// the mapping thread or the fetch task, per piece rather than per chunk.
pub const PIECE_BYTES: usize = 256 << 10;

/// What a blob is mapped with, and where its delivery resumes.
#[derive(Debug, Clone)]
pub struct MapSpec {
    pub encoding: &'static encoding_rs::Encoding,
    pub format: Format,
    pub tenant_id: String,
    pub content_type: String,
    pub content_id: String,
    pub content_created: Option<String>,
    /// When the blob was received (RFC 3339), `o365.meta.received` of every event.
    pub received: String,
    /// Records the output already accepted: cut but neither mapped nor sent again.
    pub skip: u64,
    /// `format: ecs`: the tenant's name (`host.name`, `organization.name`) and the enrichment.
    pub tenant_name: Option<String>,
    pub enrichment: Option<std::sync::Arc<crate::mapping::enrich::Enrichment>>,
    pub batch_records: usize,
    pub batch_bytes: usize,
}

/// Why a blob stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading the answer failed (network, timeout).
    #[error(transparent)]
    Fetch(ApiError),
    /// The blob itself is broken (not a JSON array, a record too large).
    #[error(transparent)]
    Blob(BlobError),
    /// The mapping thread could not start or ended without a verdict.
    #[error("mapping stopped: {0}")]
    Stopped(String),
}

/// One batch of the blob; `last` is set on the batch that ends it.
#[derive(Debug)]
pub struct Piece {
    pub part: Part,
    pub last: bool,
}

enum Chunk {
    Data(Vec<Bytes>),
    End,
    Failed(ApiError),
}

/// The batches of one blob, produced while the answer is still arriving. Dropping it stops the
/// fetch task and (at its next step) the mapping thread.
pub struct BlobStream {
    batches: mpsc::Receiver<Result<Piece, StreamError>>,
    fetch: tokio::task::JoinHandle<()>,
}

impl Drop for BlobStream {
    fn drop(&mut self) {
        self.fetch.abort();
    }
}

impl BlobStream {
    /// Starts reading `body` and mapping it as `spec` says. Must run inside a tokio runtime.
    pub fn start(mut body: ContentBody, spec: MapSpec) -> Result<BlobStream, StreamError> {
        Self::spawn(spec, move |chunk_tx| async move {
            let (mut piece, mut bytes) = (Vec::new(), 0);
            loop {
                let (last, full) = match body.chunk().await {
                    Ok(Some(b)) => {
                        bytes += b.len();
                        piece.push(b);
                        (None, bytes >= PIECE_BYTES)
                    }
                    Ok(None) => (Some(Chunk::End), true),
                    Err(e) => (Some(Chunk::Failed(e)), true),
                };
                if full && !piece.is_empty() {
                    let data = Chunk::Data(std::mem::take(&mut piece));
                    bytes = 0;
                    if chunk_tx.send(data).await.is_err() {
                        return;
                    }
                }
                if let Some(end) = last {
                    let _ = chunk_tx.send(end).await;
                    return;
                }
            }
        })
    }

    /// Maps records the queue carried (a Graph page, already a JSON array in memory) the same
    /// way: same thread, batches, skip and progress as a fetched blob.
    pub fn inline(body: Bytes, spec: MapSpec) -> Result<BlobStream, StreamError> {
        Self::spawn(spec, move |chunk_tx| async move {
            if chunk_tx.send(Chunk::Data(vec![body])).await.is_ok() {
                let _ = chunk_tx.send(Chunk::End).await;
            }
        })
    }

    /// Starts the mapping thread and the task `feed` that hands it the blob's pieces.
    fn spawn<F, Fut>(spec: MapSpec, feed: F) -> Result<BlobStream, StreamError>
    where
        F: FnOnce(mpsc::Sender<Chunk>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (chunk_tx, chunk_rx) = mpsc::channel(CHUNK_QUEUE);
        let (batch_tx, batches) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("o365-map".into())
            .spawn(move || map_blob(chunk_rx, batch_tx, &spec))
            .map_err(|e| StreamError::Stopped(format!("cannot start a mapping thread: {e}")))?;
        let fetch = tokio::spawn(feed(chunk_tx));
        Ok(BlobStream { batches, fetch })
    }

    /// The next batch. After an `Err` or a `last` piece there is nothing more.
    pub async fn next(&mut self) -> Result<Piece, StreamError> {
        self.batches.recv().await.unwrap_or_else(|| {
            Err(StreamError::Stopped(
                "the mapping thread ended early".into(),
            ))
        })
    }
}

/// Why the mapping loop stopped early.
enum Stop {
    Blob(BlobError),
    Fetch(ApiError),
    /// The receiving side is gone (the worker gave up on the blob).
    Gone,
}

impl From<BlobError> for Stop {
    fn from(e: BlobError) -> Self {
        Stop::Blob(e)
    }
}

/// The mapping thread: chunks in, batches out, until the end of the blob or a failure. Before a
/// failure it still hands over the records mapped so far, so they count as delivered.
fn map_blob(
    mut chunks: mpsc::Receiver<Chunk>,
    out: mpsc::Sender<Result<Piece, StreamError>>,
    spec: &MapSpec,
) {
    let ctx = Context {
        format: spec.format,
        tenant_id: &spec.tenant_id,
        content_type: &spec.content_type,
        content_id: &spec.content_id,
        content_created: spec.content_created.as_deref(),
        received: &spec.received,
        tenant_name: spec.tenant_name.as_deref(),
        enrichment: spec.enrichment.as_deref(),
    };
    let mut records = Records::new(spec.encoding);
    let mut batcher = Batcher::new(spec.batch_records, spec.batch_bytes);
    let mut sent = false;
    let outcome = std::thread::scope(|scope| {
        let mut lanes = Lanes::new(scope, &ctx);
        let mut job = Job::default();
        // Mapped jobs come back in order: their events go into batches, full ones to the worker.
        let mut feed = |mapped: Mapped| -> Result<(), Stop> {
            for (index, event, issues, unknown) in mapped.events {
                let full = batcher.add(index, event, issues);
                if let Some(record_type) = unknown {
                    batcher.unknown_record_type(record_type);
                }
                if let Some(part) = full {
                    let piece = Piece { part, last: false };
                    out.blocking_send(Ok(piece)).map_err(|_| Stop::Gone)?;
                    sent = true;
                }
            }
            mapped.error.map_or(Ok(()), |e| Err(Stop::Blob(e)))
        };
        let mut emit = |index: u64, raw: &[u8]| -> Result<(), Stop> {
            if index < spec.skip {
                return Ok(());
            }
            job.push(index, raw);
            if job.is_full() {
                lanes.dispatch(std::mem::take(&mut job), &mut feed)?;
            }
            Ok(())
        };
        let cut = loop {
            let step = match chunks.blocking_recv() {
                Some(Chunk::Data(piece)) => {
                    piece.iter().try_for_each(|b| records.push(b, &mut emit))
                }
                Some(Chunk::End) => break records.finish(&mut emit),
                Some(Chunk::Failed(e)) => Err(Stop::Fetch(e)),
                None => Err(Stop::Gone),
            };
            if step.is_err() {
                break step;
            }
        };
        // What was cut before the end (or a failure) is mapped and delivered first.
        let rest = if job.is_empty() {
            Ok(())
        } else {
            lanes.dispatch(job, &mut feed)
        };
        rest.and_then(|()| lanes.finish(&mut feed)).and(cut)
    });
    let failure = match outcome {
        Ok(()) => {
            let mut part = batcher.take();
            part.through = part.through.max(records.count());
            if !part.events.is_empty() || !sent {
                let _ = out.blocking_send(Ok(Piece { part, last: true }));
            }
            return;
        }
        Err(Stop::Gone) => return,
        Err(Stop::Blob(e)) => StreamError::Blob(e),
        Err(Stop::Fetch(e)) => StreamError::Fetch(e),
    };
    // The records mapped before the failure go out first, so they count as delivered.
    if !batcher.is_empty() {
        let part = batcher.take();
        if out.blocking_send(Ok(Piece { part, last: false })).is_err() {
            return;
        }
    }
    let _ = out.blocking_send(Err(failure));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(skip: u64, batch_records: usize) -> MapSpec {
        MapSpec {
            encoding: encoding_rs::UTF_8,
            format: Format::Raw,
            tenant_id: "t".into(),
            content_type: "Audit.General".into(),
            content_id: "c".into(),
            content_created: None,
            received: "2026-11-30T00:00:00.000Z".into(),
            skip,
            tenant_name: None,
            enrichment: None,
            batch_records,
            batch_bytes: 1 << 20,
        }
    }

    fn body(n: usize) -> Vec<u8> {
        let records: Vec<String> = (0..n).map(|i| format!(r#"{{"Id":"r{i}"}}"#)).collect();
        format!("[{}]", records.join(",")).into_bytes()
    }

    /// Runs the mapping thread over `chunks` (cut every `piece` bytes of `body`, then `end`).
    fn run(
        body: &[u8],
        piece: usize,
        end: Chunk,
        spec: MapSpec,
    ) -> Vec<Result<Piece, StreamError>> {
        let (chunk_tx, chunk_rx) = mpsc::channel(CHUNK_QUEUE);
        let (batch_tx, mut batches) = mpsc::channel(1);
        let mapper = std::thread::spawn(move || map_blob(chunk_rx, batch_tx, &spec));
        let pieces: Vec<Bytes> = body.chunks(piece).map(Bytes::copy_from_slice).collect();
        let feeder = std::thread::spawn(move || {
            for p in pieces {
                chunk_tx.blocking_send(Chunk::Data(vec![p])).unwrap();
            }
            chunk_tx.blocking_send(end).unwrap();
        });
        let mut out = Vec::new();
        while let Some(p) = batches.blocking_recv() {
            out.push(p);
        }
        feeder.join().unwrap();
        mapper.join().unwrap();
        out
    }

    fn ids(p: &Piece) -> Vec<String> {
        p.part
            .events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
                v["Id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn batches_resume_after_the_skipped_records() {
        let out = run(&body(10), 7, Chunk::End, spec(3, 4));
        let got: Vec<(Vec<String>, u64, bool)> = out
            .iter()
            .map(|p| {
                let p = p.as_ref().unwrap();
                (ids(p), p.part.through, p.last)
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                (s(&["r3", "r4", "r5", "r6"]), 7, false),
                (s(&["r7", "r8", "r9"]), 10, true),
            ]
        );
        // Everything delivered before: one empty last batch that completes the blob.
        let out = run(&body(10), 5, Chunk::End, spec(10, 4));
        assert_eq!(out.len(), 1);
        let p = out[0].as_ref().unwrap();
        assert!(p.last && p.part.events.is_empty() && p.part.through == 10);
    }

    #[test]
    fn a_blob_broken_midway_delivers_the_records_before_the_break() {
        let mut broken = body(6);
        broken.truncate(broken.len() - 8);
        broken.extend_from_slice(b"}}oops");
        let out = run(&broken, 9, Chunk::End, spec(0, 4));
        assert_eq!(out.len(), 3);
        let first = out[0].as_ref().unwrap();
        assert_eq!((first.part.through, first.last), (4, false));
        let before = out[1].as_ref().unwrap();
        assert_eq!(
            (ids(before), before.part.through),
            (vec!["r4".to_string()], 5)
        );
        assert!(matches!(out[2], Err(StreamError::Blob(_))));
    }

    #[test]
    fn a_failed_read_delivers_what_was_mapped_then_fails() {
        let whole = body(5);
        let out = run(
            &whole[..whole.len() / 2],
            4,
            Chunk::Failed(ApiError::Transport("connection reset".into())),
            spec(0, 100),
        );
        let delivered = out[0].as_ref().unwrap();
        assert!(!delivered.last && !delivered.part.events.is_empty());
        assert!(matches!(
            out[1],
            Err(StreamError::Fetch(ApiError::Transport(_)))
        ));
        assert_eq!(out.len(), 2);
    }
}
