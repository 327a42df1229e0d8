//! One blob mapped on more than one core: its records go out in jobs of a few hundred, mapped by
//! the blob's own mapping thread and, while a core is spare, by one helper thread; the results are
//! taken back strictly in the blob's order, so batches, progress and resume are as if one thread
//! had mapped them.
//!
//! Why: cutting is cheap and mapping is most of the CPU, so one thread per blob left a core idle
//! while a single large blob streamed (records/s on one big blob fell below the same records in
//! many small blobs, which several workers map at once). Helpers are few and shared: at most
//! `cores − 1` in the whole process ([`HELPERS`]), taken by a blob only once it proves larger than
//! one job, so many small blobs (already mapped in parallel by the workers) never pay for them.
//!
//! Memory per blob stays bounded: at most [`MAX_PENDING`] jobs between cutting and the batcher,
//! each ≤ [`JOB_RECORDS`] records and about [`JOB_BYTES`] of record text plus their events.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::Scope;

use super::blob::{BlobError, map_one};
use crate::mapping::Context;
use crate::output::Event;

/// Records in one job: large enough that handing it over costs little next to mapping it (tens
/// of microseconds of work per hand-over), small enough to keep both threads busy.
pub const JOB_RECORDS: usize = 256;
/// Record text in one job before it is handed over early (very large records).
pub const JOB_BYTES: usize = 512 << 10;
/// Jobs of one blob that may wait, mapped or not, to be taken back in order.
pub const MAX_PENDING: usize = 4;

/// Helper threads running in the process now (all blobs).
static HELPERS: AtomicUsize = AtomicUsize::new(0);

/// Helper threads the whole process may run: one fewer than the cores it may use (read once: it
/// reads the cgroup's CPU quota from files).
fn helper_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) - 1)
}

/// A run of consecutive records of the blob (skipped ones are never in a job).
#[derive(Default)]
pub struct Job {
    text: Vec<u8>,
    records: Vec<(u64, Range<usize>)>,
}

impl Job {
    pub fn push(&mut self, index: u64, raw: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(raw);
        self.records.push((index, start..self.text.len()));
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= JOB_RECORDS || self.text.len() >= JOB_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The events of a job in order, and the failure that stopped it (records after it are dropped,
/// as the one-thread path stops at a broken record).
pub struct Mapped {
    /// Index, event, mapping issues, a RecordType Microsoft's table lacks.
    pub events: Vec<(u64, Event, usize, Option<i64>)>,
    pub error: Option<BlobError>,
}

fn map_job(job: &Job, ctx: &Context<'_>) -> Mapped {
    let mut events = Vec::with_capacity(job.records.len());
    for (index, range) in &job.records {
        match map_one(*index, &job.text[range.clone()], ctx) {
            Ok((event, issues, unknown)) => events.push((*index, event, issues, unknown)),
            Err(e) => {
                return Mapped {
                    events,
                    error: Some(e),
                };
            }
        }
    }
    Mapped {
        events,
        error: None,
    }
}

/// The helper's side: jobs in, results out, in the same order.
struct Helper {
    jobs: SyncSender<Job>,
    done: Receiver<Mapped>,
}

/// Gives back a helper slot when the blob's helper ends.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        HELPERS.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take_slot() -> Option<Slot> {
    let limit = helper_limit();
    HELPERS
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot)
}

/// Where each job of one blob goes, and the order results are taken back in.
pub struct Lanes<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env Context<'env>,
    helper: Option<Helper>,
    /// A helper was asked for once (a blob gets one try, when its first job is full).
    asked: bool,
    /// Jobs in blob order: `None` is at the helper (whose results arrive in order).
    pending: VecDeque<Option<Mapped>>,
}

impl<'scope, 'env> Lanes<'scope, 'env> {
    pub fn new(scope: &'scope Scope<'scope, 'env>, ctx: &'env Context<'env>) -> Self {
        Lanes {
            scope,
            ctx,
            helper: None,
            asked: false,
            pending: VecDeque::with_capacity(MAX_PENDING + 2),
        }
    }

    /// Maps `job` here or at the helper, then hands every result that is next in order to `feed`.
    pub fn dispatch<E>(
        &mut self,
        job: Job,
        feed: &mut impl FnMut(Mapped) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.asked && job.is_full() {
            self.asked = true;
            self.helper = self.start_helper();
        }
        let job = match &self.helper {
            Some(h) => match h.jobs.try_send(job) {
                Ok(()) => {
                    self.pending.push_back(None);
                    return self.take_back(self.pending.len() > MAX_PENDING, feed);
                }
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        self.pending.push_back(Some(map_job(&job, self.ctx)));
        self.take_back(self.pending.len() > MAX_PENDING, feed)
    }

    /// Waits for every job still out and hands the results to `feed`.
    pub fn finish<E>(&mut self, feed: &mut impl FnMut(Mapped) -> Result<(), E>) -> Result<(), E> {
        self.take_back(true, feed)
    }

    /// Feeds the results at the front that are ready; with `wait`, waits until none is left.
    fn take_back<E>(
        &mut self,
        wait: bool,
        feed: &mut impl FnMut(Mapped) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(front) = self.pending.front_mut() {
            if front.is_none() {
                let Some(helper) = &self.helper else {
                    unreachable!("a job is at the helper only while there is one")
                };
                let got = if wait {
                    helper.done.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    helper.done.try_recv()
                };
                *front = Some(match got {
                    Ok(mapped) => mapped,
                    Err(TryRecvError::Empty) => return Ok(()),
                    // Mapping is total, so this is a panic in the helper: the job is lost, and
                    // the blob stops here (its retry resumes after what was delivered).
                    Err(TryRecvError::Disconnected) => Mapped {
                        events: Vec::new(),
                        error: Some(BlobError::NotJson("a mapping helper thread stopped".into())),
                    },
                });
            }
            if let Some(Some(mapped)) = self.pending.pop_front() {
                feed(mapped)?;
            }
        }
        Ok(())
    }

    fn start_helper(&self) -> Option<Helper> {
        let slot = take_slot()?;
        let (jobs, job_rx) = sync_channel::<Job>(1);
        let (done_tx, done) = sync_channel::<Mapped>(MAX_PENDING + 2);
        let ctx = self.ctx;
        std::thread::Builder::new()
            .name("o365-map-helper".into())
            .spawn_scoped(self.scope, move || {
                let _slot = slot;
                while let Ok(job) = job_rx.recv() {
                    if done_tx.send(map_job(&job, ctx)).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Helper { jobs, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Format;

    fn ctx() -> Context<'static> {
        Context {
            format: Format::Raw,
            tenant_id: "t",
            content_type: "Audit.General",
            content_id: "c",
            content_created: None,
            received: "2026-12-01T00:00:00.000Z",
            tenant_name: None,
            enrichment: None,
        }
    }

    /// Whatever thread maps a job, results come back in the blob's order, and a broken record
    /// stops the results there.
    #[test]
    fn results_come_back_in_order_and_stop_at_a_broken_record() {
        let ctx = ctx();
        let n = JOB_RECORDS as u64 * 9 + 17;
        let broken = n - 5;
        let (mut got, mut error) = (Vec::new(), None);
        std::thread::scope(|s| {
            let mut lanes = Lanes::new(s, &ctx);
            let mut feed = |m: Mapped| -> Result<(), ()> {
                got.extend(m.events.iter().map(|(i, _, _, _)| *i));
                match m.error {
                    Some(e) => {
                        error = Some(e);
                        Err(())
                    }
                    None => Ok(()),
                }
            };
            let mut job = Job::default();
            let mut outcome = Ok(());
            for i in 0..n {
                let raw = if i == broken {
                    "{oops".to_owned()
                } else {
                    format!(r#"{{"Id":"r{i}"}}"#)
                };
                job.push(i, raw.as_bytes());
                if job.is_full() {
                    outcome = lanes.dispatch(std::mem::take(&mut job), &mut feed);
                    if outcome.is_err() {
                        break;
                    }
                }
            }
            if outcome.is_ok() && !job.is_empty() {
                outcome = lanes.dispatch(job, &mut feed);
            }
            if outcome.is_ok() {
                let _ = lanes.finish(&mut feed);
            }
        });
        assert_eq!(got, (0..broken).collect::<Vec<_>>());
        assert!(
            matches!(error, Some(BlobError::NotJson(m)) if m.contains(&format!("record {broken}")))
        );
    }
}
