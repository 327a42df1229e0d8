//! Publishing content: a blob of given records or of generated ones is stored in its tenant's feed
//! and announced to the subscription's webhook. Above `webhooks` (it announces) and below
//! `control` and `server` (which publish).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::generator::{ContentType, Generator, TenantFacts};
use super::state::{Blob, Shared};
use super::webhooks;
use super::{EmulatorError, lock};

/// `POST /_emulator/generate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub tenant_id: String,
    pub content_type: String,
    /// Records in all, spread evenly over the blobs.
    pub records: usize,
    /// Number of blobs (at least 1).
    #[serde(default = "one")]
    pub blobs: usize,
    /// contentCreated of the blobs (RFC 3339); default: now on the emulator clock.
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
}

fn one() -> usize {
    1
}

/// `POST /_emulator/publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    pub tenant_id: String,
    pub content_type: String,
    pub records: Vec<Value>,
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
    /// Every fetch of this blob answers a body cut in the middle of the array: a blob that
    /// always fails (its records before the cut are readable).
    #[serde(default)]
    pub broken: bool,
}

/// `GET /_emulator/published` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Published {
    pub blobs: usize,
    pub records: usize,
    /// `Id` of every record, blob by blob in publish order.
    pub record_ids: Vec<String>,
    pub content_ids: Vec<String>,
    /// Successful downloads of these blobs (`GET audit/{contentId}` answered 200), repeats counted.
    #[serde(default)]
    pub content_fetches: u64,
}

impl Shared {
    /// Publishes one blob of exactly `records` and schedules its announcement.
    pub fn publish(
        self: &Arc<Self>,
        tenant: &str,
        content_type: ContentType,
        records: Vec<Value>,
        created: Option<DateTime<Utc>>,
    ) -> Result<String, EmulatorError> {
        self.publish_blob(tenant, content_type, records, created, false)
    }

    /// [`Shared::publish`], optionally a blob served broken on every fetch.
    pub fn publish_blob(
        self: &Arc<Self>,
        tenant: &str,
        content_type: ContentType,
        records: Vec<Value>,
        created: Option<DateTime<Utc>>,
        broken: bool,
    ) -> Result<String, EmulatorError> {
        let (body, record_ids) = serialise(&records)?;
        self.publish_serialised(tenant, content_type, body, record_ids, created, broken)
    }

    /// Publishes an already serialised blob (the bytes served as they are).
    fn publish_serialised(
        self: &Arc<Self>,
        tenant: &str,
        content_type: ContentType,
        body: Bytes,
        record_ids: Vec<String>,
        created: Option<DateTime<Utc>>,
        broken: bool,
    ) -> Result<String, EmulatorError> {
        let tenant = self
            .canonical_tenant(tenant)
            .ok_or_else(|| EmulatorError::Request(format!("unknown tenant {tenant}")))?;
        let seq = self.next_seq();
        let created = created.unwrap_or_else(|| self.now());
        let stamp = format!(
            "{}{:06}",
            created.format("%Y%m%d%H%M%S%3f"),
            seq % 1_000_000
        );
        let camel = content_type.as_str().replace('.', "_");
        let content_id = format!(
            "{stamp}${stamp}${}${camel}$emu{:04}",
            content_type.id_piece(),
            seq / 1_000_000
        );
        let blob = Arc::new(Blob {
            tenant: tenant.clone(),
            content_type,
            content_id: content_id.clone(),
            seq,
            created,
            body,
            record_ids,
            broken,
        });
        // Fault `unlist_next`: the blob is kept (served, found by audit search) but never listed
        // nor announced.
        let unlisted = {
            let mut f = lock(&self.faults);
            let n = &mut f.faults.unlist_next;
            *n > 0 && {
                *n -= 1;
                true
            }
        };
        {
            let mut st = lock(&self.state);
            st.blobs.insert(content_id.clone(), blob.clone());
            if unlisted {
                return Ok(content_id);
            }
            let feed = st.feeds.entry((tenant, content_type)).or_default();
            let at = feed.partition_point(|b| (b.created, b.seq) <= (blob.created, blob.seq));
            feed.insert(at, blob.clone());
        }
        let delay = self.cfg.content_delay;
        if delay.is_zero() {
            webhooks::announce(self, blob);
        } else {
            let shared = self.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = shared.cancel.cancelled() => {}
                    _ = tokio::time::sleep(delay) => webhooks::announce(&shared, blob),
                }
            });
        }
        Ok(content_id)
    }

    /// Generates `records` synthetic records spread over `blobs` blobs. Blobs are built on all
    /// cores, each from its own seed drawn in order, so the result depends only on the seed and the
    /// sequence of requests. Blocking: call it outside the async executor for large requests.
    pub fn generate(self: &Arc<Self>, req: &GenerateRequest) -> Result<Vec<String>, EmulatorError> {
        let ct = ContentType::parse(&req.content_type).ok_or_else(|| {
            EmulatorError::Request(format!("invalid content type {}", req.content_type))
        })?;
        let tenant = self
            .canonical_tenant(&req.tenant_id)
            .ok_or_else(|| EmulatorError::Request(format!("unknown tenant {}", req.tenant_id)))?;
        let blobs = req.blobs.max(1);
        let created = req.created.unwrap_or_else(|| self.now());
        let seeds: Vec<u64> = {
            let mut g = lock(&self.generator);
            (0..blobs).map(|_| g.next_seed()).collect()
        };
        let sizes: Vec<usize> = (0..blobs)
            .map(|i| req.records / blobs + usize::from(i < req.records % blobs))
            .collect();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(blobs);
        let facts = TenantFacts::new(&tenant);
        let mut built: Vec<Option<Result<SerialisedBlob, EmulatorError>>> =
            (0..blobs).map(|_| None).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (seeds, sizes, facts) = (&seeds, &sizes, &facts);
                    scope.spawn(move || {
                        (t..seeds.len())
                            .step_by(threads)
                            .map(|i| {
                                let mut g = Generator::new(seeds[i]);
                                let records = (0..sizes[i]).map(|_| g.record(ct, facts, created));
                                (i, serialise_each(records, sizes[i]))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(done) => {
                        for (i, r) in done {
                            built[i] = Some(r);
                        }
                    }
                    Err(_) => tracing::error!("a generator thread panicked"),
                }
            }
        });
        let mut ids = Vec::with_capacity(blobs);
        for slot in built {
            let (body, record_ids) =
                slot.ok_or_else(|| EmulatorError::Request("record generation failed".into()))??;
            ids.push(self.publish_serialised(
                &tenant,
                ct,
                body,
                record_ids,
                Some(created),
                false,
            )?);
        }
        Ok(ids)
    }

    pub fn published(&self, tenant: &str, content_type: Option<ContentType>) -> Published {
        let tenant = tenant.to_ascii_lowercase();
        let st = lock(&self.state);
        let mut blobs: Vec<&Arc<Blob>> = st
            .blobs
            .values()
            .filter(|b| b.tenant == tenant && content_type.is_none_or(|c| c == b.content_type))
            .collect();
        blobs.sort_by_key(|b| b.seq);
        Published {
            blobs: blobs.len(),
            records: blobs.iter().map(|b| b.record_ids.len()).sum(),
            record_ids: blobs
                .iter()
                .flat_map(|b| b.record_ids.iter().cloned())
                .collect(),
            content_ids: blobs.iter().map(|b| b.content_id.clone()).collect(),
            content_fetches: blobs
                .iter()
                .map(|b| st.fetches.get(&b.content_id).copied().unwrap_or(0))
                .sum(),
        }
    }
}

/// A blob's bytes and the `Id`s of its records.
type SerialisedBlob = (Bytes, Vec<String>);

/// Serialises records one by one as they are generated, so a blob of a million records costs its
/// bytes, not a tree of every record at once.
fn serialise_each(
    records: impl Iterator<Item = Value>,
    count: usize,
) -> Result<SerialisedBlob, EmulatorError> {
    let mut body = Vec::with_capacity(count.saturating_mul(1024).min(1 << 30) + 2);
    let mut record_ids = Vec::with_capacity(count);
    body.push(b'[');
    for (i, r) in records.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        if let Some(id) = r.get("Id").and_then(Value::as_str) {
            record_ids.push(id.to_string());
        }
        serde_json::to_writer(&mut body, &r)
            .map_err(|e| EmulatorError::Request(format!("records do not serialise: {e}")))?;
    }
    body.push(b']');
    body.shrink_to_fit();
    Ok((Bytes::from(body), record_ids))
}

/// Serialises a blob once; returns the bytes and the record `Id`s.
fn serialise(records: &[Value]) -> Result<SerialisedBlob, EmulatorError> {
    let record_ids = records
        .iter()
        .filter_map(|r| r.get("Id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let body = serde_json::to_vec(records)
        .map_err(|e| EmulatorError::Request(format!("records do not serialise: {e}")))?;
    Ok((Bytes::from(body), record_ids))
}
