//! Notifications that are well-formed but lie, against the real binary: a contentUri that is not
//! the feed URL of its contentId (another blob's, or with a query) and a missing clientId are
//! refused and nothing of them is stored; identifiers in another letter case are accepted and kept
//! in the configured spelling; no record is delivered twice.

mod support;

use std::time::Duration;

use o365_collector::store::{ContentRef, EmbeddedStore, Store};
use o365_emulator::Emulator;
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(60);
const CT: &str = "Audit.General";

fn uri(emu: &Emulator, tenant: &str, content_id: &str) -> String {
    format!(
        "{}/api/v1.0/{tenant}/activity/feed/audit/{content_id}",
        emu.base_url()
    )
}

fn notice(tenant: &str, client: Option<&str>, ct: &str, id: &str, uri: &str) -> Value {
    let mut n = json!({
        "tenantId": tenant, "contentType": ct, "contentId": id, "contentUri": uri,
        "contentCreated": "2026-11-30T12:00:00.000Z", "contentExpiration": "2026-12-07T12:00:00.000Z"
    });
    if let Some(c) = client {
        n["clientId"] = json!(c);
    }
    n
}

/// Content ids of the notification attempts the emulator recorded with `status`.
async fn notified_ids(emu: &Emulator, status: u16) -> Vec<String> {
    deliveries(emu)
        .await
        .into_iter()
        .filter(|d| d["kind"] == "notification" && d["status"] == status)
        .flat_map(|d| d["content_ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_notifications_are_refused_and_other_case_identifiers_normalised() {
    let emu = emulator(|c| {
        c.webhook_max_failures = 100_000;
        c.webhook_max_backoff = Duration::from_millis(200);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &[CT], "");
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &[CT]).await;

    // Blob A is announced and delivered the ordinary way.
    generate(&emu, CT, 10, 1).await;
    wait_for(WAIT, "blob A delivered", || async {
        line_count(&s.events) >= 10
    })
    .await;
    let a = acknowledged_content_ids(&emu)
        .await
        .into_iter()
        .next()
        .unwrap();

    // Blob B is published while the emulator's notifications fail, so we announce it ourselves.
    faults(&emu, json!({"webhook_fail_status": 500})).await;
    generate(&emu, CT, 5, 1).await;
    wait_for(WAIT, "blob B's failed announcement", || async {
        !notified_ids(&emu, 500).await.is_empty()
    })
    .await;
    let b = notified_ids(&emu, 500).await.remove(0);

    let http = client(&emu);
    let post = |body: Value| {
        http.post(s.webhook_url())
            .header("Webhook-AuthID", AUTH_ID)
            .json(&body)
            .send()
    };
    let fresh = "20261130120000000000000$fresh$audit_general$Audit_General$emea0001";
    let refused = [
        (
            "a fresh contentId with an already processed blob's contentUri",
            notice(TENANT, Some(CLIENT), CT, fresh, &uri(&emu, TENANT, &a)),
        ),
        (
            "contentId B with blob A's contentUri",
            notice(TENANT, Some(CLIENT), CT, &b, &uri(&emu, TENANT, &a)),
        ),
        (
            "a query string added",
            notice(
                TENANT,
                Some(CLIENT),
                CT,
                &b,
                &format!("{}?PublisherIdentifier={TENANT}", uri(&emu, TENANT, &b)),
            ),
        ),
        (
            "an empty query string",
            notice(
                TENANT,
                Some(CLIENT),
                CT,
                &b,
                &format!("{}?", uri(&emu, TENANT, &b)),
            ),
        ),
        (
            "no clientId",
            notice(TENANT, None, CT, &b, &uri(&emu, TENANT, &b)),
        ),
    ];
    for (what, n) in refused {
        let resp = post(json!([n])).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{what}");
    }

    // B in other letter cases (tenant, client, content type, the tenant in the URI): accepted.
    let upper = TENANT.to_ascii_uppercase();
    let other_case = notice(
        &upper,
        Some(&CLIENT.to_ascii_uppercase()),
        "AUDIT.general",
        &b,
        &uri(&emu, &upper, &b),
    );
    assert_eq!(post(json!([other_case])).await.unwrap().status(), 200);
    wait_for(WAIT, "blob B delivered", || async {
        line_count(&s.events) >= 15
    })
    .await;

    // The emulator's own retries of B get through now; nothing arrives twice.
    faults(&emu, json!({"reset": true})).await;
    wait_for(WAIT, "B's announcement acknowledged", || async {
        acknowledged_content_ids(&emu).await.contains(&b)
    })
    .await;
    let published = published_ids(&emu).await;
    assert_eq!(published.len(), 15);
    assert_exactly_once(&published, &output_ids(&s.events));

    // Every event, metric label and stored value is in the configured spelling.
    let events = std::fs::read_to_string(&s.events).unwrap();
    for line in events.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["o365.meta.content_type"], CT, "{line}");
        assert_eq!(e["o365.meta.tenant_id"], TENANT, "{line}");
    }
    let metrics = reqwest::get(admin_url(&c.logs(), "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("content_type=\"{CT}\"")),
        "{metrics}"
    );
    for other in ["AUDIT.general", upper.as_str()] {
        assert!(
            !metrics.contains(other),
            "a series in the caller's spelling {other}"
        );
    }
    c.terminate(Duration::from_secs(10));

    // Nothing of the refused notifications was stored: the fresh contentId is still new.
    let store = EmbeddedStore::open(&s.dir.join("store")).unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased, stats.dead_letters), (0, 0, 0));
    let added = store
        .enqueue(vec![ContentRef {
            tenant_id: TENANT.into(),
            content_type: CT.into(),
            content_id: fresh.into(),
            content_uri: uri(&emu, TENANT, fresh),
            content_created: None,
            content_expiration: None,
            records: None,
        }])
        .await
        .unwrap()
        .added;
    assert_eq!(added, 1, "a refused notification had been stored");
}
