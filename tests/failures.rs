//! Failure classes end to end (ARCHITECTURE.md invariants 1 and 5), the real binary against the
//! in-process emulator: outages (5xx, 429, 401) are retried past `max_attempts` and delivered;
//! content that is gone, expired or has an invalid id is dead-lettered at once with its reason,
//! while the other blobs flow; a redirect to another host is never followed, so no request (and
//! no token) reaches that host.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(90);
const ADMIN_TOKEN: &str = "failures-admin-token-0123456789";
/// Small on purpose: every test injects more failures than this.
const MAX_ATTEMPTS: u32 = 2;

/// A collector in push mode with the admin API, `max_attempts: 2` and `extra_yaml`.
fn start(
    emu: &o365_emulator::Emulator,
    dir: &std::path::Path,
    types: &[&str],
    extra_yaml: &str,
) -> (Setup, Collector) {
    let s = setup(
        emu,
        dir,
        types,
        &format!(
            "admin:\n  token: {ADMIN_TOKEN}\npipeline:\n  max_attempts: {MAX_ATTEMPTS}\n{extra_yaml}"
        ),
    );
    let c = Collector::spawn(&s);
    (s, c)
}

/// One admin API call with the token; the JSON answer.
async fn admin(c: &Collector, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, admin_url(&c.logs(), path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn dead_letter_count(c: &Collector) -> u64 {
    admin(c, reqwest::Method::GET, "/status", None).await["queue"]["dead_letters"]
        .as_u64()
        .expect("queue.dead_letters in /status")
}

/// API calls the emulator answered (or refused) with this operation name, e.g. `GetBlob`.
async fn requests_of(emu: &o365_emulator::Emulator, operation: &str) -> usize {
    let log: Vec<Value> = control_get(emu, "requests", TENANT).await;
    log.iter().filter(|r| r["operation"] == operation).count()
}

/// One blob whose fetch answers `status` `failures` times (more attempts than `max_attempts`)
/// is still delivered, and nothing is dead-lettered: an outage never drops data.
async fn outage_is_retried_past_max_attempts(status: u16, failures: u32) {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = start(&emu, dir.path(), &["Audit.Exchange"], "");
    wait_webhooks_enabled(&emu, &["Audit.Exchange"]).await;
    faults(
        &emu,
        json!({"content_fail_next": failures, "content_error_status": status}),
    )
    .await;
    generate(&emu, "Audit.Exchange", 30, 1).await;
    let published = published_ids(&emu).await;
    wait_for(WAIT, "the blob delivered or given up", || async {
        line_count(&s.events) >= published.len() || dead_letter_count(&c).await > 0
    })
    .await;
    assert_eq!(
        dead_letter_count(&c).await,
        0,
        "an outage ({status}) dead-lettered the blob\n{}",
        c.logs()
    );
    assert_exactly_once(&published, &output_ids(&s.events));
    let fetches = requests_of(&emu, "GetBlob").await;
    assert!(
        fetches > failures as usize,
        "{fetches} fetches for {failures} injected failures"
    );
    let f: Value = control_get(&emu, "faults", TENANT).await;
    assert_eq!(
        f["content_fail_next"], 0,
        "every injected failure was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_past_max_attempts() {
    outage_is_retried_past_max_attempts(503, MAX_ATTEMPTS + 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_past_max_attempts() {
    outage_is_retried_past_max_attempts(429, MAX_ATTEMPTS + 2).await;
}

/// A 401 is answered by one token refresh and a second try, so each attempt takes two failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_retried_past_max_attempts() {
    outage_is_retried_past_max_attempts(401, 2 * (MAX_ATTEMPTS + 1)).await;
}

/// A notification as Microsoft posts it, for a blob of Audit.General.
fn notice(content_id: &str, base: &str) -> Value {
    json!({
        "tenantId": TENANT, "clientId": CLIENT, "contentType": "Audit.General",
        "contentId": content_id,
        "contentUri": format!("{base}/api/v1.0/{TENANT}/activity/feed/audit/{content_id}"),
        "contentCreated": "2026-11-25T12:00:00.000Z", "contentExpiration": "2026-12-02T12:00:00.000Z"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_expired_and_invalid_content_is_dead_lettered_and_the_rest_delivered() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = start(&emu, dir.path(), &["Audit.General"], "");
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;

    // Expired: a blob created more than 7 days ago (AF20051).
    let created = emu.now() - chrono::Duration::days(7) - chrono::Duration::hours(1);
    let resp: Value = client(&emu)
        .post(format!("{}/_emulator/generate", emu.base_url()))
        .json(
            &json!({"tenant_id": TENANT, "content_type": "Audit.General", "records": 25,
                      "created": created}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expired = resp["content_ids"][0].as_str().unwrap().to_string();
    let expired_records = published_ids(&emu).await;
    // Gone: announced, but no such content (AF20050); invalid: an id Microsoft never issues
    // (AF20052). Both reach the collector as authentic notifications.
    let gone =
        "20261125120000000000999$20261125120000000000999$audit_general$Audit_General$emu0999";
    let invalid = "not-a-content-id";
    let resp = client(&emu)
        .post(s.webhook_url())
        .header("Webhook-AuthID", AUTH_ID)
        .json(&json!([
            notice(gone, emu.base_url()),
            notice(invalid, emu.base_url())
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "both notifications stored");
    // The other blobs flow as usual.
    generate(&emu, "Audit.General", 90, 3).await;
    let good: Vec<String> = published_ids(&emu)
        .await
        .into_iter()
        .filter(|id| !expired_records.contains(id))
        .collect();
    assert_eq!(good.len(), 90);

    wait_for(WAIT, "three dead letters", || async {
        dead_letter_count(&c).await >= 3
    })
    .await;
    wait_for(WAIT, "the good records", || async {
        line_count(&s.events) >= good.len()
    })
    .await;
    assert_exactly_once(&good, &output_ids(&s.events));
    assert_eq!(dead_letter_count(&c).await, 3);

    let dead = admin(&c, reqwest::Method::GET, "/dead-letters", None).await;
    let dead = dead.as_array().unwrap();
    for (id, code) in [
        (gone, "AF20050"),
        (expired.as_str(), "AF20051"),
        (invalid, "AF20052"),
    ] {
        let d = dead
            .iter()
            .find(|d| d["content_id"] == id)
            .unwrap_or_else(|| panic!("{code}: {id} not among the dead letters: {dead:?}"));
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains(code), "{id}: {reason}");
        // Given up at its first failure: a blob-specific answer is not worth the attempts.
        assert_eq!(d["attempts"], 1, "{id}: {d}");
        assert_eq!(d["delivered"], 0, "{id}: {d}");
    }
}

/// An HTTPS host that only counts requests, and those that carried a bearer token.
struct Trap {
    base: String,
    hits: Arc<AtomicUsize>,
    with_token: Arc<AtomicUsize>,
}

async fn trap(emu: &o365_emulator::Emulator) -> Trap {
    let hits = Arc::new(AtomicUsize::new(0));
    let with_token = Arc::new(AtomicUsize::new(0));
    let (h, t) = (hits.clone(), with_token.clone());
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let (h, t) = (h.clone(), t.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            if headers.contains_key(axum::http::header::AUTHORIZATION) {
                t.fetch_add(1, Ordering::SeqCst);
            }
            "[]"
        }
    });
    let (cert, key) = emu.issue_server_cert(&["127.0.0.1"]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    Trap {
        base: format!("https://127.0.0.1:{port}"),
        hits,
        with_token,
    }
}

/// The API answers content fetches and listings with a 307 to another host: the client does not
/// follow it (invariant 1), so the other host sees no request and no token. A redirect is an
/// answer about this blob, not an outage: after `max_attempts` the blob is dead-lettered with
/// the status as its reason, and once the API answers again a requeue delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_not_followed() {
    let emu = emulator(|_| {}).await;
    let trap = trap(&emu).await;
    let dir = tempfile::tempdir().unwrap();
    // Reconcile often, so that listings are redirected too.
    let (s, c) = start(
        &emu,
        dir.path(),
        &["Audit.SharePoint"],
        "pull:\n  reconcile_every: 1s\n",
    );
    wait_webhooks_enabled(&emu, &["Audit.SharePoint"]).await;
    faults(
        &emu,
        json!({"redirect_to": trap.base, "redirect_status": 307}),
    )
    .await;
    let listings_before = requests_of(&emu, "ListContent").await;
    generate(&emu, "Audit.SharePoint", 40, 1).await;
    wait_for(
        WAIT,
        "the blob given up, two listings redirected, or a request on the other host",
        || async {
            trap.hits.load(Ordering::SeqCst) > 0
                || (dead_letter_count(&c).await == 1
                    && requests_of(&emu, "ListContent").await >= listings_before + 2)
        },
    )
    .await;
    assert_eq!(
        trap.with_token.load(Ordering::SeqCst),
        0,
        "a token went to the other host"
    );
    assert_eq!(
        trap.hits.load(Ordering::SeqCst),
        0,
        "a redirect was followed to the other host"
    );
    assert_eq!(line_count(&s.events), 0, "nothing delivered from there");
    assert!(
        requests_of(&emu, "GetBlob").await >= MAX_ATTEMPTS as usize,
        "the fetch was tried max_attempts times"
    );
    let dead = admin(&c, reqwest::Method::GET, "/dead-letters", None).await;
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{MAX_ATTEMPTS} attempts")) && reason.contains("307"),
        "{reason}"
    );

    // The API answers again: the requeued blob is delivered, the other host still untouched.
    faults(&emu, json!({"reset": true})).await;
    let answer = admin(
        &c,
        reqwest::Method::POST,
        "/dead-letters/requeue",
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(answer["requeued"], 1, "{answer}");
    let published = published_ids(&emu).await;
    wait_for(WAIT, "the requeued blob delivered", || async {
        line_count(&s.events) >= published.len()
    })
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
    assert_eq!(trap.hits.load(Ordering::SeqCst), 0);
}
