//! The push pipeline end to end: the real collector binary against the in-process emulator, over
//! HTTPS both ways.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

const TYPES: [&str; 5] = ALL_TYPES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_record_arrives_exactly_once() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &TYPES, "");
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &TYPES).await;

    for (i, ct) in TYPES.iter().enumerate() {
        generate(&emu, ct, 200 + i as u64 * 37, 3).await;
    }
    let published = published_ids(&emu).await;
    assert_eq!(published.len(), 200 * 5 + 37 * 10);
    wait_for(
        Duration::from_secs(60),
        "all records in the output",
        || async { line_count(&s.events) >= published.len() },
    )
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));

    // Every line is a mapped event with provenance.
    let first = std::fs::read_to_string(&s.events).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(line["o365.meta.tenant_id"], TENANT);
    assert!(line["@timestamp"].as_str().unwrap().ends_with('Z'));

    let status = c.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{}",
        c.logs()
    );
    let logs = c.logs();
    for secret in [SECRET, AUTH_ID] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}

/// An HTTPS server that only counts requests: stands for an attacker's host.
async fn trap(emu: &o365_emulator::Emulator) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            "[]"
        }
    });
    let (cert, key) = emu.issue_server_cert(&["127.0.0.1"]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    (format!("https://127.0.0.1:{}", addr.port()), hits)
}

const EVIL_ID: &str = "20261125120000000000000$evil$audit_general$Audit_General$emea0001";

fn notice(content_uri: &str, tenant: &str, content_type: &str) -> serde_json::Value {
    serde_json::json!({
        "tenantId": tenant, "clientId": CLIENT, "contentType": content_type,
        "contentId": EVIL_ID,
        "contentUri": content_uri,
        "contentCreated": "2026-11-25T12:00:00.000Z", "contentExpiration": "2026-12-02T12:00:00.000Z"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_broken_posts_are_refused_and_change_nothing() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &["Audit.General"], "");
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;
    let (evil, hits) = trap(&emu).await;
    let http = client(&emu);
    let url = s.webhook_url();
    let feed = format!("/api/v1.0/{TENANT}/activity/feed/audit/{EVIL_ID}");
    let good_uri = format!("{}{feed}", emu.base_url());

    let post = |auth: Option<&'static str>, body: Vec<u8>| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            r = r.header("Webhook-AuthID", a);
        }
        r.send()
    };
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let cases: Vec<(&str, Option<&'static str>, Vec<u8>, u16)> = vec![
        (
            "forged AuthID",
            Some("not-the-auth-id"),
            json(serde_json::json!([notice(
                &good_uri,
                TENANT,
                "Audit.General"
            )])),
            401,
        ),
        (
            "missing AuthID",
            None,
            json(serde_json::json!([notice(
                &good_uri,
                TENANT,
                "Audit.General"
            )])),
            401,
        ),
        (
            "malformed JSON",
            Some(AUTH_ID),
            b"[{\"contentUri\": ".to_vec(),
            400,
        ),
        ("not an array", Some(AUTH_ID), b"{\"a\":1}".to_vec(), 400),
        (
            "foreign contentUri",
            Some(AUTH_ID),
            json(serde_json::json!([notice(
                &format!("{evil}{feed}"),
                TENANT,
                "Audit.General"
            )])),
            400,
        ),
        (
            "plain-http contentUri",
            Some(AUTH_ID),
            json(serde_json::json!([notice(
                &good_uri.replace("https", "http"),
                TENANT,
                "Audit.General"
            )])),
            400,
        ),
        (
            "unknown tenant",
            Some(AUTH_ID),
            json(serde_json::json!([notice(
                &good_uri,
                "00000000-0000-0000-0000-000000000001",
                "Audit.General"
            )])),
            400,
        ),
        (
            "content type not collected",
            Some(AUTH_ID),
            json(serde_json::json!([notice(
                &good_uri,
                TENANT,
                "Audit.Exchange"
            )])),
            400,
        ),
        (
            "oversized body",
            Some(AUTH_ID),
            vec![b' '; 2 * 1024 * 1024],
            413,
        ),
    ];
    for (what, auth, body, want) in cases {
        let resp = post(auth, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{what}");
    }
    // A batch with one good and one hostile notice is refused whole.
    let mixed = json(serde_json::json!([
        notice(&good_uri, TENANT, "Audit.General"),
        notice(&format!("{evil}{feed}"), TENANT, "Audit.General"),
    ]));
    assert_eq!(
        post(Some(AUTH_ID), mixed).await.unwrap().status().as_u16(),
        400
    );

    // The pipeline still works, and the trap was never contacted.
    generate(&emu, "Audit.General", 40, 2).await;
    let published = published_ids(&emu).await;
    wait_for(Duration::from_secs(30), "the good records", || async {
        line_count(&s.events) >= published.len()
    })
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a request reached the foreign host"
    );
    c.terminate(Duration::from_secs(10));

    // Nothing of the refused POSTs was stored: the hostile contentId is still new to the store.
    use o365_collector::store::{ContentRef, EmbeddedStore, Store};
    let store = EmbeddedStore::open(&s.dir.join("store")).unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased, stats.dead_letters), (0, 0, 0));
    let out = store
        .enqueue(vec![ContentRef {
            tenant_id: TENANT.into(),
            content_type: "Audit.General".into(),
            content_id: EVIL_ID.into(),
            content_uri: good_uri.clone(),
            content_created: None,
            content_expiration: None,
            records: None,
        }])
        .await
        .unwrap();
    assert_eq!(out.added, 1, "a refused notification had been stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_pending_blobs() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &["Audit.General"], "");
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;

    // Every content fetch fails: the blobs stay queued, retried with back-off.
    faults(&emu, serde_json::json!({"content_error_rate": 1.0})).await;
    generate(&emu, "Audit.General", 300, 3).await;
    wait_for(
        Duration::from_secs(30),
        "three notifications acknowledged",
        || async { acknowledged_content_ids(&emu).await.len() >= 3 },
    )
    .await;
    let status = c.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", c.logs());
    assert_eq!(line_count(&s.events), 0);

    // Microsoft recovers; the next process finds the blobs in its store and delivers them.
    faults(&emu, serde_json::json!({"reset": true})).await;
    let mut c = Collector::spawn(&s);
    let published = published_ids(&emu).await;
    wait_for(
        Duration::from_secs(30),
        "pending blobs delivered after the restart",
        || async { line_count(&s.events) >= published.len() },
    )
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
    c.terminate(Duration::from_secs(10));
    assert!(
        !c.logs().contains("listing found new content"),
        "the blobs came from the store, not from a new listing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_fetches_are_retried_until_delivered() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &["Audit.Exchange"], "");
    let _c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.Exchange"]).await;
    // The next four fetches answer 500 (AF50000), then 503: both are retried with back-off.
    faults(
        &emu,
        serde_json::json!({"content_fail_next": 4, "content_error_status": 503}),
    )
    .await;
    generate(&emu, "Audit.Exchange", 120, 2).await;
    let published = published_ids(&emu).await;
    wait_for(
        Duration::from_secs(60),
        "records delivered despite failures",
        || async { line_count(&s.events) >= published.len() },
    )
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_announced_on_another_host_is_never_fetched() {
    let emu = emulator(|_| {}).await;
    let (evil, hits) = trap(&emu).await;
    let dir = tempfile::tempdir().unwrap();
    // Reconcile often, so that the listing path is exercised too.
    let s = setup(
        &emu,
        dir.path(),
        &["Audit.SharePoint"],
        "pull:\n  reconcile_every: 1s\n",
    );
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.SharePoint"]).await;
    faults(&emu, serde_json::json!({"foreign_content_uri": evil})).await;
    generate(&emu, "Audit.SharePoint", 50, 2).await;
    wait_for(
        Duration::from_secs(30),
        "the notifications refused with 400",
        || async {
            deliveries(&emu)
                .await
                .iter()
                .filter(|d| d["kind"] == "notification" && d["status"] == 400)
                .count()
                >= 1
        },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "a listing that skipped the foreign entries",
        || async {
            c.logs().contains(
                "listed contentUri is not this blob's feed URL on the configured resource",
            )
        },
    )
    .await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a request (and a token) went to the foreign host"
    );
    assert_eq!(line_count(&s.events), 0);
    c.terminate(Duration::from_secs(10));
}
