//! Per-tenant health, the real binary in pull mode against the emulator, five tenants at once:
//! a wrong client secret (AADSTS7000215), a tenant Azure AD does not know (AADSTS90002), an app
//! without `ActivityFeed.Read` (AF10001), a tenant whose output is down, and a healthy one. Each
//! shows its state, reason and name in `/status` and in `o365_tenant_up` /
//! `o365_tenant_errors_total`; over ten polls each problem is logged once, not once per poll;
//! no secret appears anywhere.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use o365_emulator::TenantSpec;
use serde_json::Value;
use support::*;

const WRONG_SECRET: &str = "0aa3f2a4-1b2c-4d5e-8f90-a1b2c3d4e5f6";
const UNKNOWN: &str = "1bb3f2a4-1b2c-4d5e-8f90-a1b2c3d4e5f6";
const DENIED: &str = "2cc3f2a4-1b2c-4d5e-8f90-a1b2c3d4e5f6";
const PAUSED: &str = "3dd3f2a4-1b2c-4d5e-8f90-a1b2c3d4e5f6";
/// The app registered in DENIED, granted no role.
const DENIED_CLIENT: &str = "4ee3f2a4-1b2c-4d5e-8f90-a1b2c3d4e5f6";
const BAD_SECRET: &str = "not-the-secret-0123456789";
const TYPE: &str = "Audit.General";
const WAIT: Duration = Duration::from_secs(60);
/// Listing rounds watched for the log bound.
const POLLS: usize = 10;

async fn get(c: &Collector, path: &str) -> reqwest::Response {
    wait_for(Duration::from_secs(30), "the admin listener", || {
        let up = c.logs().contains("admin listener ready");
        async move { up }
    })
    .await;
    reqwest::get(admin_url(&c.logs(), path)).await.unwrap()
}

async fn tenants(c: &Collector) -> HashMap<String, Value> {
    let status: Value = get(c, "/status").await.json().await.unwrap();
    status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tenant_id"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_problem_shows_in_status_and_metrics_and_is_logged_once() {
    let emu = emulator(|cfg| {
        cfg.tenants.extend([
            TenantSpec::with_secret(WRONG_SECRET, CLIENT, SECRET),
            TenantSpec::with_secret(DENIED, DENIED_CLIENT, SECRET),
            TenantSpec::with_secret(PAUSED, CLIENT, SECRET),
        ]);
        cfg.app_roles.insert(DENIED_CLIENT.into(), Vec::new());
    })
    .await;
    // The paused tenant has content; its output refuses connections.
    emu.generate(o365_emulator::GenerateRequest {
        tenant_id: PAUSED.into(),
        content_type: TYPE.into(),
        records: 20,
        blobs: 2,
        created: None,
    })
    .await
    .unwrap();
    let down = format!("http://127.0.0.1:{}/bulk", free_port());

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), emu.ca_pem()).unwrap();
    let base = emu.base_url();
    let yaml = format!(
        "client_id: {CLIENT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\nresource: {base}\nauthority: {base}\n\
         content_type: {TYPE}\nlast_value_storage: {d}/store\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {d}/ca.pem\n\
         pull:\n  interval: 1s\n\
         outputs:\n  down:\n    type: http\n    format: ndjson\n    url: '{down}'\n    timeout: 2s\n\
         \x20 file:\n    type: file\n    path: {d}/events.ndjson\n\
         tenants:\n\
         \x20 - tenant_id: {TENANT}\n    tenant_name: healthy.onmicrosoft.com\n    output: file\n\
         \x20 - tenant_id: {WRONG_SECRET}\n    tenant_name: wrongsecret.onmicrosoft.com\n    output: file\n    client_secret: {BAD_SECRET}\n\
         \x20 - tenant_id: {UNKNOWN}\n    tenant_name: unknown.onmicrosoft.com\n    output: file\n\
         \x20 - tenant_id: {DENIED}\n    tenant_name: denied.onmicrosoft.com\n    output: file\n    client_id: {DENIED_CLIENT}\n\
         \x20 - tenant_id: {PAUSED}\n    tenant_name: paused.onmicrosoft.com\n    output: down\n",
        d = d.display(),
    );
    let setup = custom_setup(d, &yaml, &d.join("events.ndjson"));
    let c = Collector::spawn(&setup);

    let expected = [
        (TENANT, "ok", None, "healthy.onmicrosoft.com"),
        (
            WRONG_SECRET,
            "auth_failed",
            Some("invalid_secret"),
            "wrongsecret.onmicrosoft.com",
        ),
        (
            UNKNOWN,
            "auth_failed",
            Some("unknown_tenant"),
            "unknown.onmicrosoft.com",
        ),
        (
            DENIED,
            "denied",
            Some("permission_missing"),
            "denied.onmicrosoft.com",
        ),
        (
            PAUSED,
            "paused",
            Some("output_paused"),
            "paused.onmicrosoft.com",
        ),
    ];
    wait_for(WAIT, "every tenant in its expected state", || async {
        let t = tenants(&c).await;
        expected
            .iter()
            .all(|(id, state, _, _)| t[*id]["state"] == *state)
    })
    .await;

    // Ten more listing rounds (the denied tenant's listings reach the emulator, each refused).
    let listings = |log: Vec<Value>| {
        log.iter()
            .filter(|r| r["operation"] == "ListContent")
            .count()
    };
    let before = listings(control_get(&emu, "requests", DENIED).await);
    wait_for(WAIT, "ten more listing rounds", || async {
        listings(control_get(&emu, "requests", DENIED).await) >= before + POLLS
    })
    .await;

    let t = tenants(&c).await;
    let metrics = get(&c, "/metrics").await.text().await.unwrap();
    let status_text = serde_json::to_string(&t).unwrap();
    let logs = c.logs();
    for (id, state, reason, name) in expected {
        let s = &t[id];
        assert_eq!(s["state"], state, "{id}: {s}");
        assert_eq!(s["tenant_name"], name, "{id}: {s}");
        let up = sample(
            &metrics,
            &format!("o365_tenant_up{{tenant_id=\"{id}\",tenant_name=\"{name}\"}}"),
        );
        assert_eq!(up, Some(f64::from(state == "ok")), "{id}\n{metrics}");
        let Some(reason) = reason else {
            assert!(s.get("last_error").is_none(), "{id}: {s}");
            continue;
        };
        let e = &s["last_error"];
        assert_eq!(e["reason"], reason, "{id}: {s}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{s}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(e["since"].as_str().unwrap()).is_ok(),
            "{s}"
        );
        if reason != "output_paused" {
            let errors = sample(
                &metrics,
                &format!("o365_tenant_errors_total{{tenant_id=\"{id}\",reason=\"{reason}\"}}"),
            );
            assert!(
                errors.is_some_and(|n| n >= POLLS as f64),
                "{id}: {errors:?}\n{metrics}"
            );
            // Logged when it started; not once per poll.
            let warned: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains(" WARN ") && l.contains(id))
                .collect();
            assert!(
                warned.iter().any(|l| l.contains("tenant problem started")
                    && (l.contains(&format!("reason=\"{reason}\""))
                        || l.contains(&format!("reason={reason}")))),
                "{id}:\n{}",
                warned.join("\n")
            );
            assert!(
                warned.len() <= 2,
                "{id}: {} warnings over {POLLS}+ polls:\n{}",
                warned.len(),
                warned.join("\n")
            );
        }
    }
    if std::env::var_os("HEALTH_TEST_SHOW").is_some() {
        eprintln!("{status_text}\n{logs}");
    }
    for secret in [SECRET, BAD_SECRET] {
        assert!(!metrics.contains(secret), "a secret in /metrics");
        assert!(!status_text.contains(secret), "a secret in /status");
        assert!(!logs.contains(secret), "a secret in the log");
    }
}

/// Microsoft's 429 (the emulator's quota of 2 requests a minute): the tenant is `throttled` with
/// reason `throttled`, counted, and down in `o365_tenant_up` while its calls wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_tenant_shows_as_throttled() {
    let emu = emulator(|cfg| cfg.throttle_per_minute = 2).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), emu.ca_pem()).unwrap();
    let base = emu.base_url();
    let yaml = format!(
        "tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\n\
         resource: {base}\nauthority: {base}\ncontent_type: {TYPE}\nlast_value_storage: {d}/store\n\
         output: file\nlisten:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {d}/ca.pem\n\
         pull:\n  interval: 1s\noutputs:\n  file:\n    type: file\n    path: {d}/events.ndjson\n",
        d = d.display(),
    );
    let setup = custom_setup(d, &yaml, &d.join("events.ndjson"));
    let c = Collector::spawn(&setup);
    // /status and /metrics read one after the other, both while the 429's pause lasts.
    let up = format!("o365_tenant_up{{tenant_id=\"{TENANT}\",tenant_name=\"\"}}");
    wait_for(
        WAIT,
        "the tenant throttled in /status and down in /metrics",
        || async {
            let s = tenants(&c).await[TENANT].clone();
            let m = get(&c, "/metrics").await.text().await.unwrap();
            s["state"] == "throttled"
                && s["last_error"]["reason"] == "throttled"
                && sample(&m, &up) == Some(0.0)
        },
    )
    .await;
    let metrics = get(&c, "/metrics").await.text().await.unwrap();
    assert!(
        sample(
            &metrics,
            &format!("o365_tenant_errors_total{{tenant_id=\"{TENANT}\",reason=\"throttled\"}}")
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let logs = c.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("tenant problem started") && l.contains("reason=\"throttled\"")),
        "{logs}"
    );
}
