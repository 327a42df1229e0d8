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

/// The metric names a PromQL expression reads, roughly: identifiers that are not functions (followed
/// by `(`), keywords, label names (inside `{…}` or a `by (…)`-like clause), strings, durations or
/// numbers. `label_values(metric, label)` (a Grafana variable) reads its first argument.
fn promql_metrics(expr: &str) -> Vec<String> {
    // Strings, label matchers and range selectors say nothing about metric names.
    let mut text = String::new();
    let (mut quote, mut depth_brace, mut depth_bracket) = (None, 0, 0);
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => text.push(c),
            _ => {}
        }
        if c == '{' || c == '}' {
            text.push(' ');
        }
    }
    // Identifiers and the other characters, in order.
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '$' | '.');
    let mut tokens: Vec<String> = Vec::new();
    for c in text.chars() {
        match tokens.last_mut() {
            Some(t) if word(c) && t.starts_with(word) => t.push(c),
            _ if c.is_whitespace() => tokens.push(String::new()),
            _ => tokens.push(c.to_string()),
        }
    }
    tokens.retain(|t| !t.is_empty());
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may put `by (…)` between their name and their parenthesis.
    const KEYWORDS: [&str; 19] = [
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let tok = tokens[i].as_str();
        let next = tokens.get(i + 1).map(String::as_str);
        let lower = tok.to_ascii_lowercase();
        i += 1;
        if GROUPING.contains(&lower.as_str()) {
            // `by (a, b)`: label names up to the closing parenthesis.
            if next == Some("(") {
                while i < tokens.len() && tokens[i] != ")" {
                    i += 1;
                }
            }
            continue;
        }
        if tok == "label_values" && next == Some("(") {
            // label_values(metric, label): the metric, then skip to the closing parenthesis.
            if let Some(m) = tokens.get(i + 1) {
                names.push(m.clone());
            }
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
            continue;
        }
        let ident = tok.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if !ident || next == Some("(") || KEYWORDS.contains(&lower.as_str()) {
            continue;
        }
        names.push(tok.to_string());
    }
    names
}

#[test]
fn promql_metric_names_are_read_roughly_but_right() {
    let got = promql_metrics(
        r#"histogram_quantile(0.99, sum by (output, le) (rate(o365_delivery_seconds_bucket{output=~"$output", x="a b"}[5m]))) / on() group_left max(o365_uptime_seconds) > 7200 unless time() - o365_x offset 5m"#,
    );
    assert_eq!(
        got,
        [
            "o365_delivery_seconds_bucket",
            "o365_uptime_seconds",
            "o365_x"
        ]
    );
    assert_eq!(
        promql_metrics("label_values(o365_tenant_up, tenant_id)"),
        ["o365_tenant_up"]
    );
}

/// The sample names `/metrics` exposes or declares: every sample line's name, and from each
/// `# TYPE` line the names its kind's samples take (a family with no series yet, such as the
/// listing gaps of a tenant that never had one, is declared all the same).
fn exported_names(text: &str) -> (std::collections::BTreeSet<String>, Vec<String>) {
    let mut declared = std::collections::BTreeSet::new();
    let mut sampled = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["_sum", "_count", "_created", ""],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                declared.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if !name.is_empty() {
                sampled.push(name.to_string());
            }
        }
    }
    (declared, sampled)
}

/// Every query of the Grafana dashboard and of the alert rules names only metrics the real binary
/// exports: a collector in push mode with a Graph feed delivers records, refuses a forged POST and
/// is scraped; a renamed or removed metric would leave a panel empty or an alert silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_queries_name_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().map_or(&[][..], |t| &t[..]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            queries.push((format!("panel {title:?}"), expr.to_string()));
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            queries.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    let rules =
        std::fs::read_to_string(root.join("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules).unwrap();
    for g in rules["spec"]["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap_or_default();
            queries.push((
                format!("alert {name}"),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let mut used: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (place, expr) in &queries {
        let names = promql_metrics(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for n in names {
            assert!(
                n.starts_with("o365_"),
                "{place}: {n:?} read as a metric in {expr}"
            );
            used.entry(n).or_default().push(place.clone());
        }
    }
    // What the issue asks the dashboard to show, each by the metric that carries it.
    for needed in [
        "o365_records_delivered_by_tenant_total",
        "o365_last_delivery_timestamp_seconds",
        "o365_tenant_queue_depth",
        "o365_checkpoint_timestamp_seconds",
        "o365_graph_last_success_timestamp_seconds",
        "o365_graph_denied",
        "o365_listing_gaps_by_tenant_total",
        "o365_delivery_seconds_bucket",
        "o365_output_paused",
        "o365_output_consecutive_errors",
        "o365_webhook_ack_seconds_bucket",
        "o365_notifications_rejected_by_reason_total",
    ] {
        assert!(used.contains_key(needed), "the dashboard shows no {needed}");
    }

    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &format!(
            "admin:\n  token: {ADMIN_TOKEN}\ngraph_feeds: sign_ins\ngraph_backfill: 1h\npull:\n  interval: 300ms\n"
        ),
    );
    let c = support::Collector::spawn(&s);
    wait_for(Duration::from_secs(30), "the admin listener", || async {
        c.logs().contains("admin listener ready")
    })
    .await;
    let url = admin_url(&c.logs(), "/metrics");
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
    // One failed fetch (Microsoft's 500), counted per tenant and reason; the blob is fetched again.
    faults(&emu, serde_json::json!({"content_fail_next": 1})).await;
    generate(&emu, "Audit.General", 40, 2).await;
    let forged = client(&emu)
        .post(s.webhook_url())
        .header("Webhook-AuthID", "forged")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let labels = format!("{{tenant_id=\"{TENANT}\",content_type=\"Audit.General\"}}");
    let want = [
        format!("o365_records_delivered_by_tenant_total{labels}"),
        format!("o365_last_delivery_timestamp_seconds{labels}"),
        format!("o365_tenant_queue_depth{{tenant_id=\"{TENANT}\"}}"),
        format!("o365_tenant_errors_total{{tenant_id=\"{TENANT}\""),
        "o365_webhook_ack_seconds_count".to_string(),
        format!(
            "o365_graph_last_success_timestamp_seconds{{tenant_id=\"{TENANT}\",feed=\"sign_ins\"}}"
        ),
    ];
    wait_for(
        Duration::from_secs(60),
        "records delivered, a notification acknowledged, a Graph read and a listing round",
        || async {
            let text = scrape().await;
            sample(&text, &want[0]).is_some_and(|n| n >= 40.0)
                && want[1..].iter().all(|m| sample(&text, m).is_some())
        },
    )
    .await;
    assert_exactly_once(&published_ids(&emu).await, &output_ids(&s.events));
    let text = scrape().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = sample(&text, &want[1]).unwrap();
    assert!(
        (now - 120.0..=now + 1.0).contains(&last),
        "last delivery {last}, now {now}"
    );
    assert!(sample(&text, "o365_webhook_ack_seconds_count").unwrap() >= 1.0);

    let (declared, sampled) = exported_names(&text);
    let mut without_series = Vec::new();
    for (name, places) in &used {
        assert!(
            declared.contains(name) || sampled.contains(name),
            "{} read {name}, which /metrics does not export",
            places.join(", ")
        );
        if !sampled.contains(name) {
            without_series.push(name.as_str());
        }
    }
    // Every one has a series: a family with none is not exposed at all, and a query on it would
    // show nothing (the per-tenant gap and duplicate counters start at 0 for this reason).
    assert!(
        without_series.is_empty(),
        "declared without a series: {without_series:?}\n{text}"
    );
    println!(
        "dashboard and alerts: {} queries read {} metrics, all exported",
        queries.len(),
        used.len()
    );
    for secret in [SECRET, AUTH_ID, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "a secret in /metrics");
    }
}
