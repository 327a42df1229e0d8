//! The Microsoft Graph feeds end to end: the real binary against the emulator's Graph endpoints,
//! delivering sign-ins, directory audits, message trace and service health to the file output.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use o365_collector::demo::graph_key;
use o365_collector::graph::GraphFeed;
use o365_emulator::graph::{
    GraphAccess, GraphAccessRequest, GraphFaults, GraphGenerate, GraphThrottle, GraphUpdate,
};
use o365_emulator::{Emulator, TenantSpec};
use support::*;

const ALL_FEEDS: &str = "sign_ins directory_audits message_trace service_health";
/// Graph settings for a collector under test: all feeds every 300 ms.
fn graph_yaml(feeds: &str, backfill: &str) -> String {
    format!("graph_feeds: {feeds}\ngraph_backfill: {backfill}\npull:\n  interval: 300ms\n")
}

async fn generate(emu: &Emulator, tenant: &str, feed: &str, records: usize) -> Vec<String> {
    emu.graph_generate(GraphGenerate {
        tenant_id: tenant.into(),
        feed: feed.into(),
        records,
        from: None,
        to: None,
        recipients: None,
    })
    .await
    .unwrap()
}

/// Every Graph record published for `tenants`, keyed as the output is counted.
async fn published(emu: &Emulator, tenants: &[&str]) -> Vec<String> {
    let mut keys = Vec::new();
    for t in tenants {
        for (feed, ids) in emu.graph_published(t).await {
            let ct = GraphFeed::from_config_name(&feed).unwrap().content_type();
            keys.extend(ids.iter().map(|id| graph_key(t, ct, id)));
        }
    }
    keys
}

fn delivered(events: &Path) -> HashMap<String, u32> {
    output_ids(events)
}

async fn wait_all(emu: &Emulator, tenants: &[&str], events: &Path) {
    let want = published(emu, tenants).await;
    wait_for(
        Duration::from_secs(120),
        "every Graph record delivered",
        || {
            let out = delivered(events);
            let done = want.iter().all(|k| out.contains_key(k));
            async move { done }
        },
    )
    .await;
}

async fn status(c: &Collector) -> serde_json::Value {
    wait_for(Duration::from_secs(30), "the admin listener", || {
        let up = c.logs().contains("admin listener ready");
        async move { up }
    })
    .await;
    reqwest::get(admin_url(&c.logs(), "/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn feed_status<'a>(
    status: &'a serde_json::Value,
    tenant: &str,
    feed: &str,
) -> &'a serde_json::Value {
    status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["tenant_id"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(tenant)
        })
        .and_then(|t| t["graph_feeds"].as_array())
        .and_then(|f| f.iter().find(|f| f["feed"] == feed))
        .unwrap_or_else(|| panic!("no status of {feed} for {tenant}: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_arrives_exactly_once_late_records_and_updates_too_across_a_restart() {
    let emu = emulator(|_| {}).await;
    // Small pages, so every feed follows next links.
    emu.graph_faults(GraphFaults {
        page_size: Some(8),
        ..GraphFaults::default()
    })
    .await;
    for (feed, n) in [
        ("sign_ins", 12),
        ("directory_audits", 12),
        ("message_trace", 6),
        ("service_health", 6),
    ] {
        generate(&emu, TENANT, feed, n).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &graph_yaml(ALL_FEEDS, "1h"),
    );
    let mut c = Collector::spawn(&setup);
    wait_all(&emu, &[TENANT], &setup.events).await;
    let first_end = Utc::now();

    // Stopped: late records inside windows already read, new records, an issue updated in place.
    assert!(c.terminate(Duration::from_secs(20)).success());
    let late = |feed: &str, n: usize| GraphGenerate {
        tenant_id: TENANT.into(),
        feed: feed.into(),
        records: n,
        from: Some(Utc::now() - TimeDelta::minutes(50)),
        to: Some(Utc::now() - TimeDelta::minutes(40)),
        recipients: Some(3),
    };
    for feed in ["sign_ins", "directory_audits", "message_trace"] {
        emu.graph_generate(late(feed, 5)).await.unwrap();
        generate(&emu, TENANT, feed, 5).await;
    }
    let issue = emu.graph_published(TENANT).await["service_health"][0].clone();
    let id = issue.split('@').next().unwrap().to_owned();
    emu.graph_update(GraphUpdate {
        tenant_id: TENANT.into(),
        id,
    })
    .await
    .unwrap();
    let restarted_at = Utc::now();
    let c = Collector::spawn(&setup);
    wait_all(&emu, &[TENANT], &setup.events).await;
    assert_exactly_once(&published(&emu, &[TENANT]).await, &delivered(&setup.events));

    // The restart resumed from the cursors: nothing before cursor − overlap (2 h) was asked.
    let asked = emu.graph_requests().await;
    for r in asked.iter().filter(|r| r.at > restarted_at) {
        if let Some(from) = r.from {
            assert!(
                from >= first_end - TimeDelta::hours(2) - TimeDelta::minutes(1),
                "after the restart {} was read from {from}",
                r.path
            );
        }
    }
    let st = status(&c).await;
    for feed in [
        "sign_ins",
        "directory_audits",
        "message_trace",
        "service_health",
    ] {
        let f = feed_status(&st, TENANT, feed);
        // Message trace's 100 requests / 5 min may be spent by the test's 300 ms rounds across
        // the restart: a 429 then holds the feed for its Retry-After, which is fine.
        assert!(f["state"] == "ok" || f["state"] == "throttled", "{f}");
        assert!(
            f["cursor"].is_string() && f["last_success"].is_string(),
            "{f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_only_that_feed_of_that_tenant() {
    const OTHER: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let emu = emulator(|cfg| {
        cfg.tenants
            .push(TenantSpec::with_secret(OTHER, CLIENT, SECRET))
    })
    .await;
    // Three of the tenant's feeds get one 429 each; its directory audits and the other tenant
    // are left alone.
    let throttled_feeds = ["sign_ins", "message_trace", "service_health"];
    emu.graph_faults(GraphFaults {
        throttle: throttled_feeds
            .iter()
            .map(|f| GraphThrottle {
                tenant_id: TENANT.into(),
                feed: (*f).into(),
                next: 1,
                retry_after_secs: 8,
            })
            .collect(),
        ..GraphFaults::default()
    })
    .await;
    for t in [TENANT, OTHER] {
        for feed in [
            "sign_ins",
            "directory_audits",
            "message_trace",
            "service_health",
        ] {
            generate(&emu, t, feed, 4).await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}tenants:\n  - tenant_id: {OTHER}\n    client_id: {CLIENT}\n    client_secret: {SECRET}\n",
        graph_yaml(ALL_FEEDS, "1h")
    );
    let setup = setup(&emu, dir.path(), &["Audit.General"], &extra);
    let _c = Collector::spawn(&setup);
    wait_all(&emu, &[TENANT, OTHER], &setup.events).await;
    assert_exactly_once(
        &published(&emu, &[TENANT, OTHER]).await,
        &delivered(&setup.events),
    );

    let asked = emu.graph_requests().await;
    let throttled: Vec<_> = asked.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), throttled_feeds.len(), "{throttled:?}");
    for t in throttled {
        assert!(t.tenant_id.eq_ignore_ascii_case(TENANT));
        let retry = asked
            .iter()
            .find(|r| r.at > t.at && r.path == t.path && r.tenant_id == t.tenant_id)
            .expect("the throttled feed was read again");
        // Retry-After was honoured for that feed…
        assert!(
            retry.at - t.at >= TimeDelta::milliseconds(7900),
            "{t:?} {retry:?}"
        );
        // …while the same tenant's directory audits and the other tenant were read meanwhile.
        let meanwhile = |pred: &dyn Fn(&o365_emulator::graph::GraphRequest) -> bool| {
            asked
                .iter()
                .filter(|r| r.at > t.at && r.at < retry.at && r.status == 200)
                .any(pred)
        };
        assert!(
            meanwhile(&|r| r.tenant_id == t.tenant_id && r.path.ends_with("directoryAudits")),
            "{}",
            t.path
        );
        assert!(
            meanwhile(&|r| r.tenant_id.eq_ignore_ascii_case(OTHER)),
            "{}",
            t.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported_then_recovered_when_granted() {
    let emu = emulator(|_| {}).await;
    emu.graph_access(GraphAccessRequest {
        tenant_id: TENANT.into(),
        access: GraphAccess {
            unlicensed: false,
            denied: vec!["directory_audits".into()],
            trace_principal_missing: true,
        },
    })
    .await;
    generate(&emu, TENANT, "directory_audits", 4).await;
    generate(&emu, TENANT, "message_trace", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &graph_yaml("directory_audits message_trace", "1h"),
    );
    let c = Collector::spawn(&setup);
    wait_for(
        Duration::from_secs(30),
        "both feeds reported as denied",
        || {
            let c = &c;
            async move {
                let st = status(c).await;
                ["directory_audits", "message_trace"]
                    .iter()
                    .all(|f| feed_status(&st, TENANT, f)["state"] == "denied")
            }
        },
    )
    .await;
    let st = status(&c).await;
    let audits = feed_status(&st, TENANT, "directory_audits")["last_error_reason"].to_string();
    assert!(
        audits.contains("403") && audits.contains("Authorization_RequestDenied"),
        "{audits}"
    );
    let trace = feed_status(&st, TENANT, "message_trace")["last_error_reason"].to_string();
    assert!(trace.contains("401"), "{trace}");
    // Logged once as the tenant's problem, which /status shows as its state.
    assert!(
        c.logs().contains("tenant problem started") && c.logs().contains("state=\"denied\""),
        "{}",
        c.logs()
    );
    let tenant = &st["tenants"][0];
    assert_eq!(tenant["state"], "denied", "{tenant}");
    assert_eq!(line_count(&setup.events), 0);
    // The process keeps running (no crash loop).
    assert!(c.logs().matches("collector started").count() == 1);

    emu.graph_access(GraphAccessRequest {
        tenant_id: TENANT.into(),
        access: GraphAccess::default(),
    })
    .await;
    wait_all(&emu, &[TENANT], &setup.events).await;
    assert_exactly_once(&published(&emu, &[TENANT]).await, &delivered(&setup.events));
    let st = status(&c).await;
    assert_eq!(feed_status(&st, TENANT, "message_trace")["state"], "ok");
    assert_eq!(st["tenants"][0]["state"], "ok", "{st}");
    assert!(c.logs().contains("tenant problem ended"), "{}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_next_link_is_refused_and_gets_no_token() {
    let emu = emulator(|_| {}).await;
    // Anything connecting here would be the token leaving the Graph host.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = trap.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    emu.graph_faults(GraphFaults {
        page_size: Some(5),
        foreign_next_link: Some(format!("https://{trap_addr}")),
        ..GraphFaults::default()
    })
    .await;
    // A minute old: a round ends at a whole second, so records of this very second would join
    // the first page only in a later round.
    emu.graph_generate(GraphGenerate {
        tenant_id: TENANT.into(),
        feed: "sign_ins".into(),
        records: 12,
        from: Some(Utc::now() - TimeDelta::minutes(10)),
        to: Some(Utc::now() - TimeDelta::minutes(1)),
        recipients: None,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &graph_yaml("sign_ins", "1h"),
    );
    let c = Collector::spawn(&setup);
    wait_for(Duration::from_secs(60), "the next link refused", || {
        let c = &c;
        async move {
            let st = status(c).await;
            feed_status(&st, TENANT, "sign_ins")["last_error_reason"]
                .as_str()
                .is_some_and(|r| r.contains("nextLink refused"))
        }
    })
    .await;
    // The first page was delivered; the rest waits, and nothing went to the foreign host.
    wait_for(Duration::from_secs(60), "the first page delivered", || {
        let n = line_count(&setup.events);
        async move { n >= 5 }
    })
    .await;
    assert_eq!(line_count(&setup.events), 5, "{}", c.logs());
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(emu.graph_requests().await.iter().all(|r| r.authorized));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tenants_one_unlicensed_nineteen_deliver_everything() {
    let ids: Vec<String> = (0..20)
        .map(|i| format!("{i:08x}-1111-4222-8333-444455556666"))
        .collect();
    let ids2 = ids.clone();
    let emu = emulator(move |cfg| {
        cfg.tenants = ids2
            .iter()
            .map(|t| TenantSpec::with_secret(t, CLIENT, SECRET))
            .collect();
    })
    .await;
    let unlicensed = ids[7].clone();
    emu.graph_access(GraphAccessRequest {
        tenant_id: unlicensed.clone(),
        access: GraphAccess {
            unlicensed: true,
            ..GraphAccess::default()
        },
    })
    .await;
    for t in &ids {
        generate(&emu, t, "sign_ins", 6).await;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let base = emu.base_url();
    std::fs::write(dir.path().join("ca.pem"), emu.ca_pem()).unwrap();
    let mut yaml = format!(
        "client_id: {CLIENT}\nclient_secret: {SECRET}\nresource: {base}\nauthority: {base}\n\
         content_type: Audit.General\noutput: file\nlast_value_storage: {d}/store\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {d}/ca.pem\n\
         outputs:\n  file:\n    type: file\n    path: {d}/events.ndjson\n{}tenants:\n",
        graph_yaml("sign_ins", "1h"),
        d = dir.path().display()
    );
    for t in &ids {
        yaml.push_str(&format!("  - tenant_id: {t}\n"));
    }
    let setup = custom_setup(dir.path(), &yaml, &dir.path().join("events.ndjson"));
    let c = Collector::spawn(&setup);
    let licensed: Vec<&str> = ids
        .iter()
        .filter(|t| **t != unlicensed)
        .map(String::as_str)
        .collect();
    wait_all(&emu, &licensed, &setup.events).await;
    wait_for(
        Duration::from_secs(30),
        "the unlicensed tenant reported",
        || {
            let (c, u) = (&c, unlicensed.clone());
            async move {
                let st = status(c).await;
                feed_status(&st, &u, "sign_ins")["state"] == "denied"
            }
        },
    )
    .await;
    let st = status(&c).await;
    let reason = feed_status(&st, &unlicensed, "sign_ins")["last_error_reason"].to_string();
    assert!(reason.contains("NonPremium"), "{reason}");
    let want = published(&emu, &licensed).await;
    assert_eq!(want.len(), 19 * 6);
    assert_exactly_once(&want, &delivered(&setup.events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_day_message_trace_backfill_reads_10_day_windows_never_beyond_90_days() {
    const FAR: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let emu = emulator(|cfg| {
        cfg.tenants
            .push(TenantSpec::with_secret(FAR, CLIENT, SECRET))
    })
    .await;
    let now = Utc::now();
    emu.graph_generate(GraphGenerate {
        tenant_id: TENANT.into(),
        feed: "message_trace".into(),
        records: 12,
        from: Some(now - TimeDelta::days(29)),
        to: Some(now - TimeDelta::minutes(5)),
        recipients: Some(2),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}tenants:\n  - tenant_id: {FAR}\n    client_id: {CLIENT}\n    client_secret: {SECRET}\n    graph_backfill: 200d\n",
        graph_yaml("message_trace", "30d")
    );
    let setup = setup(&emu, dir.path(), &["Audit.General"], &extra);
    let c = Collector::spawn(&setup);
    wait_all(&emu, &[TENANT], &setup.events).await;
    assert_exactly_once(
        &published(&emu, &[TENANT, FAR]).await,
        &delivered(&setup.events),
    );
    wait_for(
        Duration::from_secs(30),
        "the far tenant read up to now",
        || {
            let c = &c;
            async move { feed_status(&status(c).await, FAR, "message_trace")["state"] == "ok" }
        },
    )
    .await;
    let asked = emu.graph_requests().await;
    assert!(
        asked.iter().all(|r| r.status == 200),
        "a window was refused"
    );
    for tenant in [TENANT, FAR] {
        let mine: Vec<_> = asked
            .iter()
            .filter(|r| r.tenant_id.eq_ignore_ascii_case(tenant))
            .collect();
        for r in &mine {
            let (from, to) = (r.from.unwrap(), r.to.unwrap());
            assert!(to - from <= TimeDelta::days(10), "window {from}..{to}");
            assert!(
                from >= r.at - TimeDelta::days(90),
                "asked beyond 90 days: {from}"
            );
        }
        let first = mine.iter().map(|r| r.from.unwrap()).min().unwrap();
        let span = if tenant == TENANT { 30 } else { 90 };
        // The backfill starts where configured (clamped to 90 days), in ≥ 3 windows.
        assert!(
            first <= now - TimeDelta::days(span) + TimeDelta::minutes(10),
            "{tenant}: {first}"
        );
        let windows = mine
            .iter()
            .filter(|r| r.at < mine[0].at + TimeDelta::seconds(30))
            .count();
        assert!(windows >= span as usize / 10, "{tenant}: {windows} windows");
    }
}
