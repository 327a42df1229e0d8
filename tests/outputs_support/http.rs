//! A small real HTTP receiver (axum on a loopback port, optionally TLS with client certificates)
//! that speaks enough Elasticsearch `_bulk`, Splunk HEC and NDJSON to check what the http output
//! sends: it validates every body line by line, records protocol violations, keeps the accepted
//! documents (surviving a stop/start, like a durable server) and can simulate failures. It counts
//! what arrived again ([`HttpReceiver::resent`]): Elasticsearch keeps one document per `_id` and
//! answers a second `create` with 409, so its documents alone cannot show a re-send.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::TestPki;

#[derive(Default)]
pub struct RecvState {
    /// Elasticsearch documents by `_id` (index, document).
    pub docs: Mutex<BTreeMap<String, (String, Value)>>,
    /// Events accepted by the NDJSON and HEC endpoints, in arrival order (HEC: the whole envelope).
    pub events: Mutex<Vec<Value>>,
    /// How many of `events` each accepted request brought, in arrival order.
    pub request_sizes: Mutex<Vec<usize>>,
    /// Elasticsearch `create` actions per `_id` that were answered 201 or 409 (injected 429s and
    /// rejected documents are not counted).
    pub create_attempts: Mutex<HashMap<String, u32>>,
    /// Of those, the ones answered 409 (the document existed: a re-send), per `_id`.
    pub conflicts: Mutex<HashMap<String, u32>>,
    /// Per bulk request, in arrival order: its `create`s answered 201 or 409, and how many were 409.
    pub bulk_outcomes: Mutex<Vec<(usize, usize)>>,
    /// Protocol violations seen (must stay empty).
    pub violations: Mutex<Vec<String>>,
    pub requests: AtomicUsize,
    /// The next N requests answer 503.
    pub fail_requests: AtomicUsize,
    /// The next N bulk items answer 429.
    pub fail_items: AtomicUsize,
    /// Expected `Authorization` (or custom header) as `(name, value)`.
    pub auth: Mutex<Option<(String, String)>>,
    pub gzip_seen: AtomicUsize,
    pub max_items_per_request: AtomicUsize,
    /// Each request is answered this many milliseconds late (a slow destination).
    pub delay_ms: std::sync::atomic::AtomicU64,
}

impl RecvState {
    fn violation(&self, v: String) {
        self.violations.lock().unwrap().push(v);
    }
}

pub struct HttpReceiver {
    pub state: Arc<RecvState>,
    pub addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub pki: Option<TestPki>,
    rt: Option<tokio::runtime::Runtime>,
    running: Option<(axum_server::Handle<SocketAddr>, tokio::task::JoinHandle<()>)>,
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        Self::start_with(false)
    }

    /// With TLS: a server certificate from a fresh CA, and client certificates from that CA required.
    pub fn start_tls() -> HttpReceiver {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> HttpReceiver {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tls, pki) = if tls {
            let pki = TestPki::generate();
            (Some(server_tls(&pki)), Some(pki))
        } else {
            (None, None)
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut r = HttpReceiver {
            state: Arc::new(RecvState::default()),
            addr,
            tls,
            pki,
            rt: Some(rt),
            running: None,
        };
        r.serve(listener);
        r
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://localhost:{}{path}", self.addr.port())
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(self.state.clone());
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        let tls = self.tls.clone();
        let task = self.rt.as_ref().unwrap().spawn(async move {
            let _ = match tls {
                Some(cfg) => {
                    axum_server::from_tcp_rustls(
                        listener,
                        axum_server::tls_rustls::RustlsConfig::from_config(cfg),
                    )
                    .unwrap()
                    .handle(h)
                    .serve(app.into_make_service())
                    .await
                }
                None => {
                    axum_server::from_tcp(listener)
                        .unwrap()
                        .handle(h)
                        .serve(app.into_make_service())
                        .await
                }
            };
        });
        self.running = Some((handle, task));
    }

    /// Stops listening and drops every connection (an outage).
    pub fn stop(&mut self) {
        if let Some((handle, task)) = self.running.take() {
            handle.shutdown();
            super::wait_for(
                "the receiver to stop",
                std::time::Duration::from_secs(10),
                || task.is_finished(),
            );
        }
    }

    /// Listens again on the same port with the same stored documents.
    pub fn restart(&mut self) {
        self.stop();
        let listener = super::bind_retry(self.addr);
        self.serve(listener);
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Requests that brought records accepted before: Elasticsearch `create`s answered 409, or
    /// NDJSON / HEC records whose id an earlier request (or the same one) brought.
    pub fn resent(&self) -> Resent {
        let mut r = Resent::default();
        let mut count = |n: usize, again: usize| {
            if again > 0 {
                r.requests += 1;
                r.records += again as u64;
                r.mixed += u64::from(again < n);
            }
        };
        let bulk = self.state.bulk_outcomes.lock().unwrap().clone();
        if !bulk.is_empty() {
            for (n, again) in bulk {
                count(n, again);
            }
            return r;
        }
        // One snapshot of both, locked in the order `accept` locks them: requests still arrive.
        let events = self.state.events.lock().unwrap();
        let sizes = self.state.request_sizes.lock().unwrap();
        let (mut seen, mut at) = (HashSet::new(), 0);
        for &n in sizes.iter() {
            let again = events[at..at + n]
                .iter()
                .filter(|e| !seen.insert(event_id(e)))
                .count();
            at += n;
            count(n, again);
        }
        r
    }

    /// `o365.audit.Id` (`Id` for format `raw`) of every accepted record: the Elasticsearch documents by `_id` (a re-sent
    /// one replaces itself), otherwise the NDJSON / HEC events in arrival order (HEC: inside its
    /// envelope, which always has a `sourcetype`).
    pub fn record_ids(&self) -> Vec<String> {
        let docs = self.state.docs.lock().unwrap();
        if !docs.is_empty() {
            return docs.values().map(|(_, d)| record_id(d)).collect();
        }
        let events = self.state.events.lock().unwrap();
        events.iter().map(event_id).collect()
    }
}

/// `o365.audit.Id` (`Id` for format `raw`) of a record, `""` without one.
fn record_id(v: &Value) -> String {
    let id = v.get("o365.audit.Id").or_else(|| v.get("Id"));
    id.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// The record id of an accepted NDJSON event or HEC envelope (which always has a `sourcetype`).
fn event_id(e: &Value) -> String {
    match e.get("sourcetype") {
        Some(_) => record_id(&e["event"]),
        None => record_id(e),
    }
}

/// What arrived again at a receiver (see [`HttpReceiver::resent`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resent {
    /// Requests that brought at least one record again.
    pub requests: u64,
    /// Records that arrived again.
    pub records: u64,
    /// Of `requests`, those that also brought new records. The collector re-sends whole batches
    /// (it resumes a blob after the batches its progress counts), so with one batch per request
    /// this stays 0; a resume in the middle of a batch would not.
    pub mixed: u64,
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if let Some((handle, _)) = self.running.take() {
            handle.shutdown();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn server_tls(pki: &TestPki) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn handle(
    State(s): State<Arc<RecvState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if s.fail_requests
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
    }
    let expected = s.auth.lock().unwrap().clone();
    if let Some((name, value)) = expected {
        let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        if got != Some(value.as_str()) {
            return (StatusCode::UNAUTHORIZED, "bad credentials".into());
        }
    }
    let body = if headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip")
    {
        s.gzip_seen.fetch_add(1, Ordering::SeqCst);
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            s.violation("body is not valid gzip".into());
            return (StatusCode::BAD_REQUEST, "bad gzip".into());
        }
        out
    } else {
        body.to_vec()
    };
    match uri.path() {
        "/_bulk" => bulk(&s, &headers, &body),
        "/services/collector/event" => hec(&s, &body),
        _ => ndjson(&s, &body),
    }
}

fn bulk(s: &RecvState, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-ndjson") {
        s.violation("bulk content-type is not application/x-ndjson".into());
    }
    if !body.ends_with(b"\n") {
        s.violation("bulk body does not end with a newline".into());
    }
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if !lines.len().is_multiple_of(2) {
        s.violation(format!("bulk body has {} lines, not pairs", lines.len()));
        return (StatusCode::BAD_REQUEST, "odd lines".into());
    }
    let mut items = Vec::new();
    let mut errors = false;
    let (mut stored, mut conflicts) = (0, 0);
    s.max_items_per_request
        .fetch_max(lines.len() / 2, Ordering::SeqCst);
    for pair in lines.chunks(2) {
        let action: Value = match serde_json::from_slice(pair[0]) {
            Ok(v) => v,
            Err(e) => {
                s.violation(format!("action line is not JSON: {e}"));
                return (StatusCode::BAD_REQUEST, "bad action".into());
            }
        };
        let doc: Value = match serde_json::from_slice(pair[1]) {
            Ok(v) => v,
            Err(e) => {
                s.violation(format!("document line is not JSON: {e}"));
                return (StatusCode::BAD_REQUEST, "bad doc".into());
            }
        };
        let Some(meta) = action.get("create").and_then(Value::as_object) else {
            s.violation(format!("action is not `create`: {action}"));
            continue;
        };
        let index = meta.get("_index").and_then(Value::as_str).unwrap_or("");
        let ts = doc.get("@timestamp").and_then(Value::as_str).unwrap_or("");
        // `o365-<date>`, or with a part between (a tenant) as `o365-<tenant>-<date>`; lowercase,
        // as Elasticsearch requires.
        let date = format!(
            "{}.{}.{}",
            ts.get(0..4).unwrap_or(""),
            ts.get(5..7).unwrap_or(""),
            ts.get(8..10).unwrap_or("")
        );
        let dated = index == format!("o365-{date}")
            || (index.starts_with("o365-") && index.ends_with(&format!("-{date}")));
        if !dated || index.chars().any(char::is_uppercase) {
            s.violation(format!("index {index} for @timestamp {ts}"));
        }
        let Some(id) = meta.get("_id").and_then(Value::as_str) else {
            s.violation("action without _id".into());
            continue;
        };
        let item = if s
            .fail_items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            errors = true;
            json!({"create": {"_index": index, "_id": id, "status": 429,
                "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}})
        } else if doc.get("reject").is_some() {
            errors = true;
            json!({"create": {"_index": index, "_id": id, "status": 400,
                "error": {"type": "document_parsing_exception",
                          "reason": "failed to parse field [reject] of type [long]"}}})
        } else {
            let mut docs = s.docs.lock().unwrap();
            stored += 1;
            *s.create_attempts
                .lock()
                .unwrap()
                .entry(id.to_owned())
                .or_insert(0) += 1;
            if docs.contains_key(id) {
                errors = true;
                conflicts += 1;
                *s.conflicts
                    .lock()
                    .unwrap()
                    .entry(id.to_owned())
                    .or_insert(0) += 1;
                json!({"create": {"_index": index, "_id": id, "status": 409,
                    "error": {"type": "version_conflict_engine_exception",
                              "reason": "document already exists"}}})
            } else {
                docs.insert(id.to_owned(), (index.to_owned(), doc));
                json!({"create": {"_index": index, "_id": id, "status": 201, "result": "created"}})
            }
        };
        items.push(item);
    }
    s.bulk_outcomes.lock().unwrap().push((stored, conflicts));
    (
        StatusCode::OK,
        json!({"took": 1, "errors": errors, "items": items}).to_string(),
    )
}

fn hec(s: &RecvState, body: &[u8]) -> (StatusCode, String) {
    let mut accepted = Vec::new();
    for v in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let Ok(v) = v else {
            s.violation("HEC body is not a sequence of JSON objects".into());
            return (
                StatusCode::BAD_REQUEST,
                json!({"text": "Invalid data format", "code": 6}).to_string(),
            );
        };
        if !v.get("event").is_some_and(Value::is_object)
            || !v.get("time").is_some_and(Value::is_number)
        {
            s.violation(format!(
                "HEC envelope without event object or numeric time: {v}"
            ));
        }
        accepted.push(v);
    }
    accept(s, accepted);
    (
        StatusCode::OK,
        json!({"text": "Success", "code": 0}).to_string(),
    )
}

fn ndjson(s: &RecvState, body: &[u8]) -> (StatusCode, String) {
    let mut accepted = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => accepted.push(v),
            Err(e) => s.violation(format!("NDJSON line is not JSON: {e}")),
        }
    }
    accept(s, accepted);
    (StatusCode::OK, "{}".into())
}

fn accept(s: &RecvState, accepted: Vec<Value>) {
    let mut events = s.events.lock().unwrap();
    s.request_sizes.lock().unwrap().push(accepted.len());
    events.extend(accepted);
}
