//! Purview's Audit Log Query API (Graph `security/auditLog/queries`): the audit log up to 180 days
//! back, where the Management Activity API reaches 7. One query per window: create it, poll its
//! status with back-off (honouring `Retry-After` through the client's pause), page its records,
//! and split the window in two when the query went over its record limit
//! (`isRecordCountLimitExceeded`: the records it holds are then a partial answer, left unread).
//! Each record wraps the Management API record in `auditData`; [`AuditRecord`] keeps that text and
//! the content type its `RecordType` belongs to, so it is mapped like a Management API record.
//!
//! [`Leaves`] walks a range window by window (what `backfill --source audit-search` delivers, one
//! window in memory at a time); [`records_of_window`] returns every record of one range (what a
//! comparison with the Management API needs). Microsoft offers the API in the global cloud only
//! ([`available`]); its permission is `AuditLogsQuery.Read.All` (or the per-workload ones).

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::client::{AUDIT_QUERIES, GraphClient};
use super::feed::is_national_graph_host;
use crate::mgmt_api::ApiError;

/// How far back Microsoft keeps audit records (standard audit retention).
pub const RETENTION: TimeDelta = TimeDelta::days(180);
/// The window one query asks first; one over the record limit is halved.
pub const FIRST_WINDOW: TimeDelta = TimeDelta::days(1);
/// A window this short that is still over the record limit cannot be split further.
pub const MIN_WINDOW: TimeDelta = TimeDelta::seconds(60);
/// First wait between status polls; each next one is 1.5 times longer, up to [`POLL_MAX`].
pub const POLL_FIRST: Duration = Duration::from_secs(1);
pub const POLL_MAX: Duration = Duration::from_secs(15);
/// A query not done after this long is given up (Microsoft's take minutes, rarely an hour).
pub const QUERY_DEADLINE: Duration = Duration::from_secs(3 * 3600);
/// 429s in a row on one call before it is given up (each waits for its `Retry-After`).
const MAX_THROTTLED: u32 = 30;

/// Why an audit search stopped.
#[derive(Debug, thiserror::Error)]
pub enum AuditSearchError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("the audit log query {id} ended as {status}")]
    Ended { id: String, status: String },
    #[error("the audit log query {id} was not done after {secs} s")]
    Timeout { id: String, secs: u64 },
    #[error(
        "{start} – {end} holds more records than one query returns, even in a window of a minute"
    )]
    TooDense {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("Graph's answer is not an audit log query: {0}")]
    Shape(String),
}

impl AuditSearchError {
    /// The API error behind it, if any (for the tenant's health: 403, 429).
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            AuditSearchError::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether the tenant's cloud offers the Audit Log Query API: the global service only.
pub fn available(graph_host: &str) -> bool {
    !is_national_graph_host(graph_host)
}

/// One record of the audit log: its Management API form and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// `auditData.Id` (the record's id in both APIs).
    pub id: String,
    pub created: DateTime<Utc>,
    /// `auditData.RecordType` (-1 when it has none): what `verify` counts by.
    pub record_type: i64,
    /// The Management API content type of its `RecordType` ([`content_type_of`]).
    pub content_type: &'static str,
    /// `auditData` as JSON text: the Management API record.
    pub json: String,
}

/// The Management API content type a record of `RecordType` is published under: DLP events in
/// `DLP.All`; Entra ID (8, 9, 15), Exchange (1–3, 19, 50) and SharePoint / OneDrive (4, 6, 7, 14,
/// 36, 37, 54–56) in their own; every other workload in `Audit.General` (Microsoft's schema:
/// "Audit.General" holds what no other content type does).
pub fn content_type_of(record_type: i64) -> &'static str {
    match record_type {
        11 | 13 | 33 => "DLP.All",
        8 | 9 | 15 => "Audit.AzureActiveDirectory",
        1..=3 | 19 | 50 => "Audit.Exchange",
        4 | 6 | 7 | 14 | 36 | 37 | 54..=56 => "Audit.SharePoint",
        _ => "Audit.General",
    }
}

/// Reads one `auditLogRecord`; `None` when it carries no `auditData` object.
pub fn audit_record(r: &Map<String, Value>) -> Option<AuditRecord> {
    let data = r.get("auditData")?.as_object()?;
    let id = data
        .get("Id")
        .or_else(|| r.get("id"))
        .and_then(Value::as_str)?
        .to_owned();
    let record_type = match data.get("RecordType") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .unwrap_or(-1);
    let created = r
        .get("createdDateTime")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    Some(AuditRecord {
        id,
        created,
        record_type,
        content_type: content_type_of(record_type),
        json: Value::Object(data.clone()).to_string(),
    })
}

/// What one query answered.
#[derive(Debug, Default)]
pub struct QueryAnswer {
    pub records: Vec<AuditRecord>,
    /// Over the record limit: `records` is empty (left unread); split the window.
    pub exceeded: bool,
    /// Records without `auditData` (counted, not delivered).
    pub unreadable: usize,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Retries a call while Microsoft answers 429 (the client waits for its `Retry-After`).
async fn call(
    client: &GraphClient,
    url: &super::client::GraphUrl,
    body: Option<&Value>,
) -> Result<Value, AuditSearchError> {
    let mut throttled = 0;
    loop {
        match client.audit_call(url, body).await {
            Err(ApiError::Http { status: 429, .. }) if throttled < MAX_THROTTLED => throttled += 1,
            other => return other.map_err(AuditSearchError::from),
        }
    }
}

/// One query over `[start, end)`: create, poll until it succeeded, page its records (unless it
/// went over its limit).
pub async fn query_window(
    client: &GraphClient,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<QueryAnswer, AuditSearchError> {
    let body = json!({
        "@odata.type": "#microsoft.graph.security.auditLogQuery",
        "displayName": format!("o365-collector {} – {}", rfc3339(start), rfc3339(end)),
        "filterStartDateTime": rfc3339(start),
        "filterEndDateTime": rfc3339(end),
    });
    let created = call(client, &client.audit_url(None, false)?, Some(&body)).await?;
    let id = created
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| AuditSearchError::Shape("no id".into()))?
        .to_owned();
    let status_url = client.audit_url(Some(&id), false)?;
    let began = tokio::time::Instant::now();
    let mut wait = POLL_FIRST;
    // The creation's answer is read for its id only: the status (and whether the query went over
    // its limit) comes from reading the query.
    let query = loop {
        let query = call(client, &status_url, None).await?;
        match query.get("status").and_then(Value::as_str).unwrap_or("") {
            "succeeded" => break query,
            "notStarted" | "running" | "" => {}
            other => {
                return Err(AuditSearchError::Ended {
                    id,
                    status: other.to_owned(),
                });
            }
        }
        if began.elapsed() >= QUERY_DEADLINE {
            return Err(AuditSearchError::Timeout {
                id,
                secs: QUERY_DEADLINE.as_secs(),
            });
        }
        // Microsoft's search runs in the background: ask again a little later each time.
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(POLL_MAX);
    };
    if query
        .get("isRecordCountLimitExceeded")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Ok(QueryAnswer {
            exceeded: true,
            ..QueryAnswer::default()
        });
    }
    let mut answer = QueryAnswer::default();
    let records_path = format!("{AUDIT_QUERIES}/{id}/records");
    let mut url = client.audit_url(Some(&id), true)?;
    loop {
        let page = call(client, &url, None).await?;
        for v in page
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match v.as_object().and_then(audit_record) {
                Some(r) => answer.records.push(r),
                None => answer.unreadable += 1,
            }
        }
        match page.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => url = client.next_url(&records_path, next)?,
            _ => break,
        }
    }
    Ok(answer)
}

/// A range walked window by window: each window is one query; one over the record limit is
/// replaced by its two halves, in time order.
pub struct Leaves {
    /// Windows still to ask, the next one last.
    todo: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Windows split so far.
    pub splits: usize,
    /// Queries made so far.
    pub queries: usize,
}

impl Leaves {
    /// `[start, end)` cut into windows of [`FIRST_WINDOW`].
    /// The filter takes whole seconds: `start` is rounded down and `end` up.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Leaves {
        let end = match end.trunc_subsecs(0) {
            e if e < end => e + TimeDelta::seconds(1),
            e => e,
        };
        let mut windows = Vec::new();
        let mut at = start.trunc_subsecs(0);
        while at < end {
            let to = (at + FIRST_WINDOW).min(end);
            windows.push((at, to));
            at = to;
        }
        windows.reverse();
        Leaves {
            todo: windows,
            splits: 0,
            queries: 0,
        }
    }

    /// The next window with all its records; `None` when the range is done.
    pub async fn next(
        &mut self,
        client: &GraphClient,
    ) -> Option<Result<(DateTime<Utc>, DateTime<Utc>, QueryAnswer), AuditSearchError>> {
        loop {
            let (start, end) = self.todo.pop()?;
            self.queries += 1;
            match query_window(client, start, end).await {
                Ok(a) if a.exceeded => {
                    if end - start <= MIN_WINDOW {
                        return Some(Err(AuditSearchError::TooDense { start, end }));
                    }
                    let mid = (start + (end - start) / 2).trunc_subsecs(0);
                    self.splits += 1;
                    self.todo.push((mid, end));
                    self.todo.push((start, mid));
                }
                Ok(a) => return Some(Ok((start, end, a))),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Every record of `[start, end)`, windows split as needed.
pub async fn records_of_window(
    client: &GraphClient,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<AuditRecord>, AuditSearchError> {
    let mut leaves = Leaves::new(start, end);
    let mut out = Vec::new();
    while let Some(leaf) = leaves.next(client).await {
        out.extend(leaf?.2.records);
    }
    Ok(out)
}

impl From<crate::mgmt_api::uri::UriError> for AuditSearchError {
    fn from(e: crate::mgmt_api::uri::UriError) -> Self {
        AuditSearchError::Api(ApiError::Uri(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_types_belong_to_their_content_types() {
        assert_eq!(content_type_of(2), "Audit.Exchange");
        assert_eq!(content_type_of(15), "Audit.AzureActiveDirectory");
        assert_eq!(content_type_of(6), "Audit.SharePoint");
        assert_eq!(content_type_of(13), "DLP.All");
        assert_eq!(content_type_of(25), "Audit.General");
    }

    #[test]
    fn a_record_is_its_audit_data() {
        let r = json!({"id": "x", "createdDateTime": "2026-11-01T10:00:00Z",
            "auditData": {"Id": "abc", "RecordType": 2, "CreationTime": "2026-11-01T10:00:00"}});
        let a = audit_record(r.as_object().unwrap()).unwrap();
        assert_eq!(a.id, "abc");
        assert_eq!(a.content_type, "Audit.Exchange");
        assert_eq!(
            serde_json::from_str::<Value>(&a.json).unwrap(),
            r["auditData"]
        );
        assert!(audit_record(json!({"id": "y"}).as_object().unwrap()).is_none());
    }

    #[test]
    fn a_range_is_cut_into_days() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let l = Leaves::new(t("2026-11-01T00:00:00Z"), t("2026-11-03T12:00:00Z"));
        assert_eq!(l.todo.len(), 3);
        assert_eq!(l.todo[2].0, t("2026-11-01T00:00:00Z"));
        assert_eq!(l.todo[0].1, t("2026-11-03T12:00:00Z"));
    }
}
