//! The http output against a real HTTP receiver on a loopback port: Elasticsearch `_bulk` bodies
//! validated line by line (index from `@timestamp`, `_id` = record key, `create`), per-item 429s
//! and mapping rejections, 503s, gzip, basic/token/header auth, Splunk HEC envelopes, NDJSON, and
//! TLS with a custom CA and a client certificate; the real binary with two tenants, each in its
//! own index from the index template.

mod outputs_support;
mod support;

use std::sync::atomic::Ordering;

use o365_collector::config::Config;
use o365_collector::output::OutputConfig;
use o365_collector::output::{AnyOutput, Batch, Output};
use outputs_support::http::HttpReceiver;
use outputs_support::{batch, id_of};
use serde_json::Value;

const PASSWORD: &str = "pa55-Wörd-never-logged";

fn open(outputs_yaml: &str) -> AnyOutput {
    let text = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         outputs:\n  out:\n{outputs_yaml}"
    );
    let cfg = Config::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let o = cfg.outputs.get("out").unwrap();
    assert!(matches!(o, OutputConfig::Http(_)));
    AnyOutput::open("out", o).unwrap()
}

fn es_yaml(r: &HttpReceiver, extra: &str) -> String {
    format!(
        "    type: http\n    format: elasticsearch\n    url: '{}'\n    username: elastic\n    password: '{PASSWORD}'\n{extra}",
        r.url("")
    )
}

fn basic_auth(r: &HttpReceiver) {
    use base64::Engine as _;
    let v = base64::engine::general_purpose::STANDARD.encode(format!("elastic:{PASSWORD}"));
    *r.state.auth.lock().unwrap() = Some(("authorization".into(), format!("Basic {v}")));
}

fn with_rejects(mut b: Batch, positions: &[usize]) -> Batch {
    for &i in positions {
        let mut v: Value = serde_json::from_slice(&b.events[i].json).unwrap();
        v["reject"] = Value::from("not a number");
        b.events[i].json = serde_json::to_vec(&v).unwrap();
    }
    b
}

#[tokio::test]
async fn elasticsearch_bulk_gzip_split_and_dead_letter() {
    let r = HttpReceiver::start();
    basic_auth(&r);
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("rejected.ndjson");
    let out = open(&es_yaml(
        &r,
        &format!(
            "    gzip: true\n    max_events: 7\n    dead_letter_path: '{}'\n",
            dl.display()
        ),
    ));
    let b = with_rejects(batch(0..30), &[3, 20]);
    let report = out.send(&b).await.unwrap();
    assert_eq!(report.written, 30, "28 indexed + 2 dead-lettered");
    assert_eq!(report.duplicates, 0);
    assert!(r.violations().is_empty(), "{:?}", r.violations());
    assert_eq!(
        r.state.requests.load(Ordering::SeqCst),
        5,
        "30 events in requests of 7"
    );
    assert_eq!(r.state.max_items_per_request.load(Ordering::SeqCst), 7);
    assert_eq!(r.state.gzip_seen.load(Ordering::SeqCst), 5);
    {
        let docs = r.state.docs.lock().unwrap();
        assert_eq!(docs.len(), 28);
        for (i, e) in b.events.iter().enumerate() {
            let id = format!("{:032x}", e.key.unwrap());
            match docs.get(&id) {
                Some((index, doc)) => {
                    assert!(![3, 20].contains(&i));
                    assert_eq!(doc, &serde_json::from_slice::<Value>(&e.json).unwrap());
                    assert!(index.starts_with("o365-2020.09."), "{index}");
                }
                None => assert!([3, 20].contains(&i), "event {i} missing"),
            }
        }
    }
    let lines: Vec<Value> = std::fs::read_to_string(&dl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], 400);
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("document_parsing_exception")
    );
    assert_eq!(lines[0]["content_id"], b.content_id.as_str());
    assert_eq!(
        id_of(&lines[1]["event"].to_string()),
        id_of(std::str::from_utf8(&b.events[20].json).unwrap())
    );

    // The same blob again (a crash between send and complete): create + _id makes it a no-op.
    let again = out.send(&b).await.unwrap();
    assert_eq!(again.duplicates, 28);
    assert_eq!(r.state.docs.lock().unwrap().len(), 28);
}

#[tokio::test]
async fn elasticsearch_item_429_and_503_are_retryable_and_resend_completes() {
    let r = HttpReceiver::start();
    basic_auth(&r);
    let out = open(&es_yaml(&r, ""));
    let b = batch(0..50);
    r.state.fail_items.store(3, Ordering::SeqCst);
    let err = out.send(&b).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("429"), "{err}");
    r.state.fail_requests.store(1, Ordering::SeqCst);
    let err = out.send(&b).await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("503"),
        "{err}"
    );
    let report = out.send(&b).await.unwrap();
    assert_eq!(report.written, 3);
    assert_eq!(report.duplicates, 47);
    assert_eq!(r.state.docs.lock().unwrap().len(), 50);
    assert!(r.violations().is_empty(), "{:?}", r.violations());
}

#[tokio::test]
async fn rejected_document_without_dead_letter_is_fatal_and_secrets_stay_out() {
    let r = HttpReceiver::start();
    basic_auth(&r);
    let out = open(&es_yaml(&r, ""));
    let err = out
        .send(&with_rejects(batch(0..3), &[1]))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("dead_letter_path"), "{err}");

    // Wrong password: 401 is not fixed by retrying the same batch.
    let wrong = es_yaml(&r, "").replace(PASSWORD, "another-secret-pass");
    let err = open(&wrong).send(&batch(0..1)).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(text.contains("401"), "{text}");
        assert!(
            !text.contains("another-secret-pass") && !text.contains(PASSWORD),
            "{text}"
        );
    }
}

#[tokio::test]
async fn splunk_hec_envelopes() {
    let r = HttpReceiver::start();
    *r.state.auth.lock().unwrap() = Some(("authorization".into(), "Splunk 0c5d-hec-token".into()));
    let out = open(&format!(
        "    type: http\n    format: splunk_hec\n    url: '{}'\n    token: 0c5d-hec-token\n\
         \x20   index: 'o365_{{tenant_name}}'\n    source: 'tenant-{{tenant_id}}'\n    sourcetype: 'o365:{{content_type}}:%Y'\n    gzip: true\n",
        r.url("")
    ));
    let b = Batch {
        tenant_name: Some("contoso".into()),
        ..batch(0..25)
    };
    assert_eq!(out.send(&b).await.unwrap().written, 25);
    let got = r.state.events.lock().unwrap().clone();
    assert_eq!(got.len(), 25);
    assert!(r.violations().is_empty(), "{:?}", r.violations());
    for (env, e) in got.iter().zip(&b.events) {
        let event: Value = serde_json::from_slice(&e.json).unwrap();
        assert_eq!(env["event"], event);
        let ts =
            chrono::DateTime::parse_from_rfc3339(event["@timestamp"].as_str().unwrap()).unwrap();
        let time = env["time"].as_f64().unwrap();
        assert!(
            (time - ts.timestamp_millis() as f64 / 1000.0).abs() < 0.0005,
            "{time} vs {ts}"
        );
        // The same name templates as the other outputs, the time from the event's own.
        assert_eq!(env["index"], "o365_contoso");
        assert_eq!(env["source"], format!("tenant-{}", b.tenant_id));
        assert_eq!(
            env["sourcetype"],
            format!("o365:Audit.SharePoint:{}", ts.format("%Y"))
        );
        assert_eq!(env["fields"]["content_id"], b.content_id.as_str());
    }
}

#[tokio::test]
async fn ndjson_over_tls_with_client_certificate_and_header_auth() {
    let r = HttpReceiver::start_tls();
    *r.state.auth.lock().unwrap() = Some(("x-api-key".into(), "k3y-value".into()));
    let pki = r.pki.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let yaml = format!(
        "    type: http\n    url: '{}'\n    header_name: X-API-Key\n    header_value: k3y-value\n\
         \x20   ca_file: '{}'\n    client_cert: '{}'\n    client_key: '{}'\n",
        r.url("/ingest"),
        ca.display(),
        cert.display(),
        key.display()
    );
    let out = open(&yaml);
    let b = batch(0..10);
    assert_eq!(out.send(&b).await.unwrap().written, 10);
    let got = r.state.events.lock().unwrap().clone();
    let want: Vec<Value> = b
        .events
        .iter()
        .map(|e| serde_json::from_slice(&e.json).unwrap())
        .collect();
    assert_eq!(got, want);

    // Without the client certificate the server refuses the handshake: retryable, not a crash.
    let no_client = yaml
        .lines()
        .filter(|l| !l.contains("client_"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let err = open(&no_client).send(&b).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("k3y-value"));
}

/// With `linger`, small blobs sent at the same time (by several workers) share requests of at most
/// `max_events`, and each blob gets its own verdict.
#[tokio::test]
async fn linger_shares_requests_between_small_blobs() {
    let r = HttpReceiver::start();
    let out = open(&format!(
        "    type: http\n    format: ndjson\n    url: '{}'\n    max_events: 100\n    linger: 300ms\n",
        r.url("/ingest")
    ));
    // Five blobs of 10 at once: one request after the linger.
    let batches: Vec<Batch> = (0..5).map(|i| batch(i * 10..(i + 1) * 10)).collect();
    let sent = futures_util::future::join_all(batches.iter().map(|b| out.send(b))).await;
    assert!(sent.iter().all(|r| r.as_ref().unwrap().written == 10));
    assert_eq!(r.state.requests.load(Ordering::SeqCst), 1);
    // Twelve blobs of 10: a full request of 100 goes at once, the other 20 after the linger.
    let batches: Vec<Batch> = (5..17).map(|i| batch(i * 10..(i + 1) * 10)).collect();
    let sent = futures_util::future::join_all(batches.iter().map(|b| out.send(b))).await;
    assert!(sent.iter().all(|r| r.as_ref().unwrap().written == 10));
    assert_eq!(r.state.requests.load(Ordering::SeqCst), 3);
    assert!(r.state.max_items_per_request.load(Ordering::SeqCst) <= 100);
    let ids = r.record_ids();
    let want: Vec<String> = batch(0..170)
        .events
        .iter()
        .map(|e| id_of(std::str::from_utf8(&e.json).unwrap()))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, want, "every event once");
    // A blob as big as max_events does not wait.
    let big = batch(1000..1100);
    out.send(&big).await.unwrap();
    assert_eq!(r.state.requests.load(Ordering::SeqCst), 4);
    assert!(r.violations().is_empty(), "{:?}", r.violations());
}

/// In a shared Elasticsearch request, a blob with a rejected document fails alone; a receiver
/// that is down fails every blob of the request as retryable.
#[tokio::test]
async fn linger_gives_each_blob_its_own_verdict() {
    let mut r = HttpReceiver::start();
    basic_auth(&r);
    let out = open(&es_yaml(&r, "    max_events: 100\n    linger: 300ms\n"));
    let good = batch(0..10);
    let bad = with_rejects(batch(10..20), &[3]);
    let other = batch(20..30);
    let sent = futures_util::future::join_all([&good, &bad, &other].map(|b| out.send(b))).await;
    assert_eq!(
        r.state.requests.load(Ordering::SeqCst),
        1,
        "one shared request"
    );
    assert_eq!(sent[0].as_ref().unwrap().written, 10);
    let err = sent[1].as_ref().unwrap_err();
    assert!(
        !err.is_retryable() && err.to_string().contains("dead_letter_path"),
        "{err}"
    );
    assert_eq!(sent[2].as_ref().unwrap().written, 10);

    r.stop();
    let sent = futures_util::future::join_all([&good, &other].map(|b| out.send(b))).await;
    for s in sent {
        assert!(s.unwrap_err().is_retryable());
    }
    assert!(r.violations().is_empty(), "{:?}", r.violations());
}

/// The real binary in pull mode against the emulator, two tenants into one Elasticsearch: the
/// index template's `{tenant_id}` and `{tenant_name}` (lowercased) make an index per tenant and day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_lands_in_its_own_index() {
    use o365_emulator::{GenerateRequest, TenantSpec};
    use support::{CLIENT, Collector, SECRET, TENANT, custom_setup, wait_for};
    const OTHER: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    const TYPE: &str = "Audit.General";

    let emu = support::emulator(|cfg| {
        cfg.tenants
            .push(TenantSpec::with_secret(OTHER, CLIENT, SECRET))
    })
    .await;
    let r = HttpReceiver::start();
    let mut want: Vec<(String, String)> = Vec::new();
    for tenant in [TENANT, OTHER] {
        emu.generate(GenerateRequest {
            tenant_id: tenant.into(),
            content_type: TYPE.into(),
            records: 30,
            blobs: 3,
            created: None,
        })
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), emu.ca_pem()).unwrap();
    let base = emu.base_url();
    let es = |index: &str| {
        format!(
            "    type: http\n    format: elasticsearch\n    url: '{}'\n    index: '{index}'\n",
            r.url("")
        )
    };
    let yaml = format!(
        "client_id: {CLIENT}\nclient_secret: {SECRET}\nresource: {base}\nauthority: {base}\n\
         content_type: {TYPE}\nlast_value_storage: {d}/store\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {d}/ca.pem\npull:\n  interval: 2s\n\
         outputs:\n  by-id:\n{by_id}  by-name:\n{by_name}\
         tenants:\n  - tenant_id: {TENANT}\n    output: by-id\n\
         \x20 - tenant_id: {OTHER}\n    tenant_name: Fabrikam.onmicrosoft.com\n    output: by-name\n",
        by_id = es("o365-{tenant_id}-%Y.%m.%d"),
        by_name = es("o365-{tenant_name}-%Y.%m.%d"),
        d = d.display(),
    );
    let setup = custom_setup(d, &yaml, &d.join("unused.ndjson"));
    let c = Collector::spawn(&setup);
    wait_for(
        std::time::Duration::from_secs(90),
        "both tenants' 60 records in Elasticsearch",
        || {
            let n = r.state.docs.lock().unwrap().len();
            async move { n >= 60 }
        },
    )
    .await;
    assert!(r.violations().is_empty(), "{:?}", r.violations());
    let ids_of = |v: Value| -> Vec<String> {
        v["record_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let by_id = ids_of(support::control_get(&emu, "published", TENANT).await);
    let by_name = ids_of(support::control_get(&emu, "published", OTHER).await);
    assert_eq!((by_id.len(), by_name.len()), (30, 30));
    let docs = r.state.docs.lock().unwrap().clone();
    assert_eq!(docs.len(), 60);
    for (index, doc) in docs.values() {
        let id = doc["o365.audit.Id"].as_str().unwrap_or_default().to_owned();
        let ts = doc["@timestamp"].as_str().unwrap();
        let date = format!("{}.{}.{}", &ts[0..4], &ts[5..7], &ts[8..10]);
        let who = if by_id.contains(&id) {
            TENANT
        } else {
            assert!(by_name.contains(&id), "{doc}");
            "fabrikam.onmicrosoft.com"
        };
        assert_eq!(index, &format!("o365-{who}-{date}"), "{doc}");
        want.push((who.to_owned(), index.clone()));
    }
    drop(c);
}
