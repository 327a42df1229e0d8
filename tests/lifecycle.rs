//! Subscription lifecycle and reconciliation: a webhook Microsoft disabled is detected, waits for
//! Microsoft's 15 minutes between starts while listing carries its content, downtime is backfilled from the content listing, pull mode alone delivers everything, and
//! one tenant's bad secret does not hold up the others.

mod support;

use std::time::Duration;

use o365_emulator::TenantSpec;
use support::*;

/// The admin API's bearer token in these tests.
const ADMIN_TOKEN: &str = "lifecycle-admin-token-0123456789";

/// Microsoft disables the webhook minutes after the collector started its subscription: the
/// keeper notices, but does not start it again before 15 minutes have passed since its start
/// (Microsoft's rule); meanwhile the content type is listed every `pull.interval`, so the outage's
/// records and later ones arrive, and `/status` says when the start will be made.
/// (tests/subscription_starts.rs shows the start made at the allowed time, with 3 replicas.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_waits_for_the_fifteen_minutes_and_listing_carries_the_outage() {
    let emu = emulator(|c| {
        c.webhook_max_failures = 3;
        c.webhook_retry_base = Duration::from_millis(20);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        &emu,
        dir.path(),
        &["Audit.Exchange"],
        &format!("pull:\n  interval: 1s\n  reconcile_every: 1h\nadmin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.Exchange"]).await;

    // Deliveries fail until Microsoft disables the webhook; the content stays listable.
    faults(&emu, serde_json::json!({"webhook_fail_status": 500})).await;
    generate(&emu, "Audit.Exchange", 150, 3).await;
    wait_for(Duration::from_secs(30), "the webhook disabled", || async {
        subscriptions(&emu)
            .await
            .iter()
            .any(|s| s["webhook"]["status"] == "disabled")
    })
    .await;
    faults(&emu, serde_json::json!({"reset": true})).await;

    // The keeper looks at start-up and every 5 minutes; an operator's start asks it at once
    // (`POST /subscriptions/{ct}/start`): refused by the rule, with when, and listing by pull.
    let url = admin_url(&c.logs(), "/subscriptions/Audit.Exchange/start");
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: serde_json::Value = resp.json().await.unwrap();
    let result = &body["results"][0];
    assert!(result["next_allowed_start"].is_string(), "{body}");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("one start of a subscription every 15 minutes"),
        "{body}"
    );

    // The outage's records, and later ones, arrive by listing while the start waits.
    generate(&emu, "Audit.Exchange", 50, 1).await;
    let published = published_ids(&emu).await;
    wait_for(
        Duration::from_secs(60),
        "the outage's records, by pull",
        || async { line_count(&s.events) >= published.len() },
    )
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
    let status: serde_json::Value = reqwest::Client::new()
        .get(admin_url(&c.logs(), "/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ct = &status["tenants"][0]["content_types"][0];
    assert_eq!(ct["start_waiting"], true, "{status}");
    assert!(ct["next_allowed_start"].is_string(), "{status}");
    let log: Vec<o365_emulator::ApiRequest> = control_get(&emu, "requests", TENANT).await;
    let starts = log
        .iter()
        .filter(|r| r.operation == "StartSubscription")
        .count();
    assert_eq!(starts, 1, "no second start within 15 minutes");
    let _ = c;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_days_of_downtime_are_backfilled_at_start() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &["Audit.SharePoint"], "");

    // The collector last ran 3 days ago: its cursor says so.
    let now = std::time::SystemTime::now();
    {
        use o365_collector::store::{EmbeddedStore, Store};
        let store = EmbeddedStore::open(&s.dir.join("store")).unwrap();
        store
            .advance_cursor(
                TENANT,
                "Audit.SharePoint",
                now - Duration::from_secs(72 * 3600),
            )
            .await
            .unwrap();
    }
    // Content created while it was down, spread over four 24-hour windows; nobody was notified.
    for hours_ago in [70, 50, 26, 2] {
        let created = chrono::Utc::now() - chrono::TimeDelta::hours(hours_ago);
        let resp = client(&emu)
            .post(format!("{}/_emulator/generate", emu.base_url()))
            .json(
                &serde_json::json!({"tenant_id": TENANT, "content_type": "Audit.SharePoint",
                "records": 40, "blobs": 2, "created": created.to_rfc3339()}),
            )
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let c = Collector::spawn(&s);
    let published = published_ids(&emu).await;
    assert_eq!(published.len(), 160);
    wait_for(
        Duration::from_secs(60),
        "the downtime backfilled",
        || async { line_count(&s.events) >= published.len() },
    )
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_mode_alone_delivers_everything() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(&emu, dir.path());
    let events = dir.path().join("events.ndjson");
    let yaml = format!(
        "client_id: {CLIENT}\ntenant_id: {TENANT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\nresource: {b}\n\
         content_type: Audit.General DLP.All\nlast_value_storage: {d}/store\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
         outputs:\n  file:\n    type: file\n    path: {e}\n",
        b = emu.base_url(),
        d = dir.path().display(),
        ca = certs.display(),
        e = events.display()
    );
    let s = custom_setup(dir.path(), &yaml, &events);
    let c = Collector::spawn(&s);
    generate(&emu, "Audit.General", 120, 3).await;
    generate(&emu, "DLP.All", 30, 1).await;
    let published = published_ids(&emu).await;
    wait_for(Duration::from_secs(60), "pulled records", || async {
        line_count(&events) >= published.len()
    })
    .await;
    assert_exactly_once(&published, &output_ids(&events));
    // No webhook was registered.
    let subs = subscriptions(&emu).await;
    assert!(subs.iter().all(|s| s["webhook"].is_null()), "{subs:?}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tenants_one_with_a_wrong_secret() {
    const N: usize = 20;
    let tenant = |i: usize| format!("{i:08x}-1111-4222-8333-444455556666");
    let app = |i: usize| format!("{i:08x}-aaaa-4bbb-8ccc-dddddddddddd");
    let emu = emulator(|c| {
        c.tenants = (0..N)
            .map(|i| TenantSpec {
                tenant_id: tenant(i),
                client_id: app(i),
                client_secret: Some(format!("secret-of-tenant-{i}")),
                certificates_pem: Vec::new(),
            })
            .collect();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(&emu, dir.path());
    let port = free_port();
    let events = dir.path().join("events.ndjson");
    let mut yaml = format!(
        "resource: {b}\ncontent_type: Audit.General\nlast_value_storage: {d}/store\n\
         webhook:\n  address: https://127.0.0.1:{port}/o365/webhook\n  auth_id: {AUTH_ID}\n\
         listen:\n  public: 127.0.0.1:{port}\n  admin: 127.0.0.1:0\n\
         tls:\n  cert: {d}/server.pem\n  key: {d}/server.key\noutbound:\n  ca_file: {ca}\n\
         outputs:\n  file:\n    type: file\n    path: {e}\ntenants:\n",
        b = emu.base_url(),
        d = dir.path().display(),
        ca = certs.display(),
        e = events.display()
    );
    for i in 0..N {
        let secret = if i == 7 {
            "a-wrong-secret".to_string()
        } else {
            format!("secret-of-tenant-{i}")
        };
        yaml.push_str(&format!(
            "  - tenant_id: {}\n    client_id: {}\n    client_secret: {secret}\n",
            tenant(i),
            app(i)
        ));
    }
    let s = custom_setup(dir.path(), &yaml, &events);
    let c = Collector::spawn(&s);
    let http = client(&emu);
    for i in 0..N {
        let resp = http
            .post(format!("{}/_emulator/generate", emu.base_url()))
            .json(&serde_json::json!({"tenant_id": tenant(i), "content_type": "Audit.General", "records": 25, "blobs": 1}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let mut expected = Vec::new();
    for i in (0..N).filter(|i| *i != 7) {
        let v: serde_json::Value = http
            .get(format!("{}/_emulator/published", emu.base_url()))
            .query(&[("tenant_id", tenant(i))])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        expected.extend(
            v["record_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
    }
    assert_eq!(expected.len(), 19 * 25);
    wait_for(
        Duration::from_secs(90),
        "the 19 good tenants' records",
        || async { line_count(&events) >= expected.len() },
    )
    .await;
    assert_exactly_once(&expected, &output_ids(&events));
    wait_for(
        Duration::from_secs(30),
        "the bad tenant's refusal in the log",
        || async { c.logs().contains("AADSTS7000215") },
    )
    .await;
    assert!(
        !c.logs().contains("a-wrong-secret"),
        "a secret leaked into the logs"
    );
}

/// A self-signed RSA certificate and its key, PEM.
fn rsa_cert() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["o365-collector".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_credentials_from_the_config_collect_and_a_wrong_one_shows_aadsts() {
    let (registered, registered_key) = rsa_cert();
    let (other, other_key) = rsa_cert();
    let emu = emulator(|c| {
        c.tenants = vec![TenantSpec {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            client_secret: None,
            certificates_pem: vec![registered.clone()],
        }];
    })
    .await;

    for (cert, key, works) in [
        (&registered, &registered_key, true),
        (&other, &other_key, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ca = write_certs(&emu, dir.path());
        std::fs::write(dir.path().join("app.pem"), cert).unwrap();
        std::fs::write(dir.path().join("app.key"), key).unwrap();
        let events = dir.path().join("events.ndjson");
        let yaml = format!(
            "client_id: {CLIENT}\ntenant_id: {TENANT}\nclient_certificate:\n  cert: {d}/app.pem\n  key: {d}/app.key\n\
             resource: {b}\ncontent_type: Audit.General\nlast_value_storage: {d}/store\n\
             listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
             outputs:\n  file:\n    type: file\n    path: {e}\n",
            b = emu.base_url(),
            d = dir.path().display(),
            ca = ca.display(),
            e = events.display()
        );
        let s = custom_setup(dir.path(), &yaml, &events);
        let c = Collector::spawn(&s);
        if works {
            generate(&emu, "Audit.General", 30, 1).await;
            let published = published_ids(&emu).await;
            wait_for(
                Duration::from_secs(60),
                "records collected with a certificate",
                || async { line_count(&events) >= published.len() },
            )
            .await;
            assert_exactly_once(&published, &output_ids(&events));
        } else {
            wait_for(
                Duration::from_secs(30),
                "Azure AD's refusal shown to the user",
                || async { c.logs().contains("AADSTS700027") },
            )
            .await;
        }
    }
}

/// The listing's end time is whole seconds: content published in the last fraction of a second
/// before the pull must be listed by that pull, and the cursor must stop where the listing did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_of_the_last_second_is_listed_by_the_same_pull() {
    use chrono::Timelike;
    use o365_collector::config::{Credential, TenantConfig};
    use o365_collector::core::Secret;
    use o365_collector::mgmt_api::ManagementClient;
    use o365_collector::output::AnyOutput;
    use o365_collector::output::OutputConfig;
    use o365_collector::pipeline::gate::OutputGate;
    use o365_collector::pipeline::{TenantRuntime, puller};
    use o365_collector::store::{EmbeddedStore, Store};
    use o365_emulator::GenerateRequest;

    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantConfig {
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        credential: Credential::Secret(Secret::new(SECRET)),
        resource: emu.base_url().into(),
        authority: emu.base_url().into(),
        publisher_id: TENANT.into(),
        content_types: vec!["Audit.General".into()],
        output: "o".into(),
        encoding: encoding_rs::UTF_8,
        format: Default::default(),
        request_budget: Default::default(),
        graph: Default::default(),
        tenant_name: None,
    };
    let client = ManagementClient::new(client(&emu), &tenant).unwrap();
    client
        .start_subscription("Audit.General", None)
        .await
        .unwrap();
    // Published 700 ms into a second; the pull runs 200 ms later, within the same second.
    let second = emu.now().with_nanosecond(0).unwrap() - chrono::TimeDelta::minutes(10);
    let created = second + chrono::TimeDelta::milliseconds(700);
    emu.generate(GenerateRequest {
        tenant_id: TENANT.into(),
        content_type: "Audit.General".into(),
        records: 3,
        blobs: 1,
        created: Some(created),
    })
    .await
    .unwrap();
    let runtime = TenantRuntime {
        cfg: tenant,
        client,
        output: std::sync::Arc::new(AnyOutput::open("o", &OutputConfig::Stdout).unwrap()),
        output_name: "o".into(),
        gate: std::sync::Arc::new(OutputGate::new(
            Duration::from_secs(1),
            std::sync::Arc::new(tokio::sync::Notify::new()),
        )),
        paused: Default::default(),
        graph: None,
        audit_search: None,
        listing: Default::default(),
        health: Default::default(),
        start_waits: Default::default(),
    };
    let store = EmbeddedStore::open(&dir.path().join("store")).unwrap();
    let now = created + chrono::TimeDelta::milliseconds(200);
    let report = puller::pull_once(&runtime, "Audit.General", &store, now)
        .await
        .unwrap();
    assert_eq!(report.added, 1, "the blob of the last second is listed now");
    let cursor = store
        .cursor(TENANT, "Audit.General")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        chrono::DateTime::<chrono::Utc>::from(cursor),
        second + chrono::TimeDelta::seconds(1),
        "the cursor stops where the listing ended"
    );
}
