//! `/metrics` on the admin listener: the counters, the per-tenant series and the latency histograms
//! move as records flow and as bad POSTs are refused.

mod support;

use std::time::Duration;

use o365_collector::app::App;
use o365_collector::config::Config;
use support::*;
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "metrics-test-admin-token";

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_records_flow() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &format!("admin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    let cfg = Config::parse(&yaml, &|name| {
        (name == "TEST_CLIENT_SECRET").then(|| SECRET.to_string())
    })
    .expect("valid config");
    let shutdown = CancellationToken::new();
    let app = App::start(cfg, shutdown.clone()).await.unwrap();
    let url = format!("http://{}/metrics", app.admin_addr);
    let http = reqwest::Client::new();
    let scrape = || async {
        let r = http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;

    let before = scrape().await;
    assert_eq!(sample(&before, "o365_records_delivered_total"), Some(0.0));

    generate(&emu, "Audit.General", 90, 3).await;
    // A forged POST is refused and counted by reason.
    let forged = client(&emu)
        .post(s.webhook_url())
        .header("Webhook-AuthID", "forged")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // The file can hold the records before the counters moved: wait until every metric below
    // reached its value (at least), then check that none went past it.
    let labels = format!("{{tenant_id=\"{TENANT}\",content_type=\"Audit.General\"}}");
    let delivered_by_tenant = format!("o365_records_delivered_by_tenant_total{labels}");
    let mapped_by_tenant = format!("o365_records_mapped_by_tenant_total{labels}");
    let fetches = format!("o365_fetch_seconds_count{labels}");
    let reached = [
        ("o365_records_delivered_total", 90.0),
        (delivered_by_tenant.as_str(), 90.0),
        (mapped_by_tenant.as_str(), 90.0),
        (fetches.as_str(), 3.0),
        ("o365_delivery_seconds_count{output=\"file\"}", 3.0),
        (
            "o365_notifications_rejected_by_reason_total{reason=\"auth_id\"}",
            1.0,
        ),
    ];
    wait_for(
        Duration::from_secs(60),
        "every record counted and its blob completed",
        || async {
            let text = scrape().await;
            reached
                .iter()
                .all(|(m, v)| sample(&text, m).is_some_and(|n| n >= *v))
                && sample(&text, "o365_queue_pending") == Some(0.0)
        },
    )
    .await;

    let text = scrape().await;
    for (metric, value) in reached {
        assert_eq!(sample(&text, metric), Some(value), "{metric}\n{text}");
    }
    assert_exactly_once(&published_ids(&emu).await, &output_ids(&s.events));
    assert!(
        sample(&text, "o365_token_refreshes_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "o365_queue_pending"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "o365_output_paused{output=\"file\"}"),
        Some(0.0),
        "{text}"
    );
    // Every metric the example alerts use is exposed (a renamed metric would silence an alert).
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/monitoring/prometheusrule.yaml"),
    )
    .unwrap();
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("o365_") && !w.starts_with("o365_collector"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name)),
            "the alert rules use {name}, which /metrics does not expose"
        );
    }
    for secret in [SECRET, AUTH_ID, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "a secret in /metrics");
    }
    app.stop();
    app.wait().await;
}
