//! `check-config --online` (the preflight run before the first start): the real binary against the
//! in-process emulator. A healthy tenant passes every line and exits 0 without changing anything;
//! each failure the emulator simulates (audit log off, wrong secret, permission missing, Graph
//! licence missing, webhook unreachable) gives its own line with its fix, and exit 2. No secret is
//! printed.

#[path = "support/nginx.rs"]
mod nginx;
mod support;

use std::path::Path;
use std::process::Command;

use nginx::Nginx;
use o365_emulator::Emulator;
use o365_emulator::graph::{GraphAccess, GraphAccessRequest};
use support::*;

const TYPES: [&str; 2] = ["Audit.Exchange", "Audit.General"];
const GRAPH: &str = "graph_feeds: sign_ins directory_audits service_health\n";

/// The preflight's stdout and exit code, with `secret` as the tenant's client secret.
fn preflight(setup: &Setup, secret: &str) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(["check-config", "--online", "--config"])
        .arg(&setup.config)
        .env("TEST_CLIENT_SECRET", secret)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for text in [&stdout[..], &stderr[..]] {
        assert!(!text.contains(SECRET), "client secret printed:\n{text}");
        assert!(!text.contains(AUTH_ID), "webhook auth id printed:\n{text}");
        if secret != SECRET {
            assert!(!text.contains(secret), "given secret printed:\n{text}");
        }
    }
    (stdout, out.status.code().expect("exited"))
}

/// The line of `check` (a prefix of the text after the subject), whatever its verdict.
fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .filter(|l| {
            ["passed ", "FAILED ", "not checked "]
                .iter()
                .any(|v| l.starts_with(v))
        })
        .find(|l| l.contains(&format!(" {check}")))
        .unwrap_or_else(|| panic!("no line for {check}:\n{out}"))
}

fn assert_failed(out: &str, check: &str, problem: &str, fix: &str) {
    let l = line(out, check);
    assert!(l.starts_with("FAILED"), "{check} should fail:\n{out}");
    assert!(
        l.contains(problem),
        "{check}: problem {problem:?} missing:\n{l}"
    );
    let fix_part = l.split(" — fix: ").nth(1).unwrap_or("");
    assert!(fix_part.contains(fix), "{check}: fix {fix:?} missing:\n{l}");
}

fn assert_passed(out: &str, check: &str) {
    let l = line(out, check);
    assert!(l.starts_with("passed"), "{check} should pass:\n{out}");
}

async fn start(dir: &Path, extra: &str) -> (Emulator, Setup) {
    let emu = emulator(|_| {}).await;
    let setup = setup(&emu, dir, &TYPES, extra);
    (emu, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_tenant_passes_every_line_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, setup) = start(dir.path(), GRAPH).await;
    generate(&emu, "Audit.Exchange", 5, 1).await;

    let (port, url) = (setup.port, setup.webhook_url());
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert_passed(&out, "token");
    assert_passed(&out, "subscriptions");
    assert!(
        line(&out, "subscriptions").contains("not started yet: Audit.Exchange Audit.General"),
        "{out}"
    );
    for ct in TYPES {
        assert_passed(&out, &format!("{ct} content"));
    }
    for feed in [
        "sign_ins (auditLogs/signIns)",
        "directory_audits",
        "service_health (admin/serviceAnnouncement/issues)",
        "service_health (admin/serviceAnnouncement/messages)",
    ] {
        assert_passed(&out, &format!("Graph {feed}"));
    }
    let hook = line(&out, &url);
    assert!(
        hook.starts_with("passed") && hook.contains("from outside with 200"),
        "{out}"
    );
    assert!(out.contains("online checks: all 9 passed"), "{out}");

    // Without side effects: nothing was started, and the validation listener is gone.
    assert!(subscriptions(&emu).await.is_empty());
    let calls: Vec<serde_json::Value> = control_get(&emu, "requests", TENANT).await;
    assert!(
        calls.iter().all(|c| c["operation"] != "StartSubscription"),
        "{calls:?}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the preflight's listener still holds listen.public"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_off_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, setup) = start(dir.path(), "").await;
    emu.set_audit_log(TENANT, false).await.unwrap();
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert_passed(&out, "token");
    assert_failed(
        &out,
        "subscriptions",
        "does not exist",
        "the tenant's unified audit log is off: turn on auditing in Microsoft Purview",
    );
    assert!(line(&out, "subscriptions").contains("wait up to 60 minutes"));
    assert!(
        line(&out, "content listing").starts_with("not checked"),
        "{out}"
    );
    assert_passed(&out, "webhook https://127.0.0.1");
    assert!(out.contains("online checks: 1 failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, setup) = start(dir.path(), GRAPH).await;
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup, "not-the-secret-1234"))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert_failed(
        &out,
        "token",
        "AADSTS7000215",
        "the client secret is wrong: use the secret's value (not its id)",
    );
    assert!(
        line(&out, "subscriptions, content and Graph").starts_with("not checked"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, setup) = start(dir.path(), GRAPH).await;
    // The Graph permissions granted, the Management API's ActivityFeed.Read not; and the Graph
    // permission for directory audits (AuditLog.Read.All) denied for that feed.
    emu.set_app_roles(
        CLIENT,
        &[
            "ServiceHealth.Read",
            "AuditLog.Read.All",
            "ServiceHealth.Read.All",
            "ServiceMessage.Read.All",
        ],
    )
    .await;
    emu.graph_access(GraphAccessRequest {
        tenant_id: TENANT.into(),
        access: GraphAccess {
            denied: vec!["directory_audits".into()],
            ..GraphAccess::default()
        },
    })
    .await;
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert_failed(
        &out,
        "subscriptions",
        "AF10001",
        "a permission (ActivityFeed.Read",
    );
    assert!(line(&out, "subscriptions").contains("ActivityFeed.Read"));
    assert_failed(
        &out,
        "Graph directory_audits",
        "Authorization_RequestDenied",
        "grant the app the Microsoft Graph application permission AuditLog.Read.All",
    );
    assert_passed(&out, "Graph sign_ins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_graph_licence_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, setup) = start(dir.path(), GRAPH).await;
    emu.graph_access(GraphAccessRequest {
        tenant_id: TENANT.into(),
        access: GraphAccess {
            unlicensed: true,
            ..GraphAccess::default()
        },
    })
    .await;
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert_failed(
        &out,
        "Graph sign_ins",
        "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "sign-in logs need a Microsoft Entra ID P1 or P2 licence",
    );
    // Directory audits need no premium licence.
    assert_passed(&out, "Graph directory_audits");
    assert!(out.contains("online checks: 1 failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_webhook_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, setup) = start(dir.path(), "").await;
    // webhook.address leads nowhere: nothing listens on its port (listen.public is elsewhere).
    let nowhere = free_port();
    let yaml = std::fs::read_to_string(&setup.config).unwrap().replacen(
        &format!("address: https://127.0.0.1:{}/", setup.port),
        &format!("address: https://127.0.0.1:{nowhere}/"),
        1,
    );
    std::fs::write(&setup.config, yaml).unwrap();
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert_failed(
        &out,
        &format!("https://127.0.0.1:{nowhere}/o365/webhook"),
        "webhook unreachable",
        "check that webhook.address is reachable from outside",
    );
    assert_passed(&out, "subscriptions");
    assert!(out.contains("online checks: 1 failed"), "{out}");
}

/// Behind a reverse proxy (nginx terminating TLS, the collector on plain HTTP): the validation call
/// goes to the proxy's public address and through it to `listen.public`, where the preflight answers
/// it while the collector is not running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validation_call_passes_through_the_reverse_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, s) = start(dir.path(), "").await;
    let proxy_port = free_port();
    let public = format!("https://127.0.0.1:{proxy_port}/o365/webhook");
    let tls_block = format!(
        "tls:\n  cert: {d}/server.pem\n  key: {d}/server.key\n",
        d = s.dir.display()
    );
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    assert!(yaml.contains(&tls_block));
    let yaml = yaml
        .replace(&tls_block, "")
        .replace(&s.webhook_url(), &public);
    std::fs::write(&s.config, yaml).unwrap();
    let nginx = Nginx::start(
        &s.dir.join("nginx"),
        proxy_port,
        &[s.port],
        &s.dir.join("server.pem"),
        &s.dir.join("server.key"),
    );
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&s, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}\n{}", nginx.diagnostics());
    assert!(
        line(&out, &public).contains("from outside with 200"),
        "{out}"
    );
    assert!(
        nginx
            .access_log()
            .contains("POST /o365/webhook 200 upstream=127.0.0.1:"),
        "{}",
        nginx.access_log()
    );
}

/// While the collector runs, it holds `listen.public` and answers the validation call itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_collector_answers_the_validation_call() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, s) = start(dir.path(), "").await;
    let mut c = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &TYPES).await;
    let log = c.log.clone();
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&s, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "subscriptions").contains("all 2 content types subscribed"),
        "{out}"
    );
    assert!(
        line(&out, "webhook https://").contains("the running collector answered"),
        "{out}"
    );
    let validations = std::fs::read_to_string(&log)
        .unwrap()
        .matches("answered Microsoft's webhook validation call")
        .count();
    // One per subscription start, one for the preflight.
    assert_eq!(validations, TYPES.len() + 1, "{}", c.logs());
    c.terminate(std::time::Duration::from_secs(20));
}

/// An egress proxy (HTTP CONNECT) that records the targets asked for and whether the client
/// authenticated (`Proxy-Authorization`); it tunnels every CONNECT.
async fn connect_proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let authenticated = head.to_ascii_lowercase().contains("proxy-authorization:");
                if !head.starts_with("CONNECT ") {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                }
                log.lock().unwrap().push((target.clone(), authenticated));
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (port, seen)
}

/// With `outbound.proxy`, every call of the preflight (Azure AD, the API, the webhook's validation
/// call) goes through the egress proxy, and the proxy's credentials are not printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_goes_through_the_egress_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, s) = start(dir.path(), "").await;
    let (proxy_port, seen) = connect_proxy().await;
    let proxy_password = "proxy-pass-5678";
    let yaml = std::fs::read_to_string(&s.config).unwrap().replacen(
        "outbound:\n",
        &format!("outbound:\n  proxy: http://preflight:{proxy_password}@127.0.0.1:{proxy_port}\n"),
        1,
    );
    std::fs::write(&s.config, yaml).unwrap();
    let (port, emulator_port) = (
        s.port,
        reqwest::Url::parse(emu.base_url()).unwrap().port().unwrap(),
    );
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&s, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(proxy_password), "{out}");
    let seen = seen.lock().unwrap().clone();
    for target in [
        format!("127.0.0.1:{emulator_port}"),
        format!("127.0.0.1:{port}"),
    ] {
        assert!(
            seen.iter().any(|(t, auth)| *t == target && *auth),
            "no authenticated CONNECT to {target}: {seen:?}"
        );
    }
}

/// Pull mode with two tenants: each tenant has its own lines, named; the healthy one passes while
/// the other's audit log is off; without `webhook:` there is no webhook line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_has_its_own_lines_in_pull_mode() {
    const OTHER: &str = "9b2e7c1d-3f4a-4b5c-8d6e-7f8091a2b3c4";
    let emu = emulator(|cfg| {
        cfg.tenants.push(o365_emulator::TenantSpec::with_secret(
            OTHER, CLIENT, SECRET,
        ))
    })
    .await;
    emu.set_audit_log(OTHER, false).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), emu.ca_pem()).unwrap();
    let base = emu.base_url();
    let yaml = format!(
        "client_id: {CLIENT}\nclient_secret: ${{TEST_CLIENT_SECRET}}\nresource: {base}\nauthority: {base}\n\
         content_type: Audit.General\nlast_value_storage: {d}/store\noutput: file\n\
         listen:\n  admin: 127.0.0.1:0\noutbound:\n  ca_file: {d}/ca.pem\n\
         outputs:\n  file:\n    type: file\n    path: {d}/events.ndjson\n\
         tenants:\n  - tenant_id: {TENANT}\n    tenant_name: alpha\n\
         \x20 - tenant_id: {OTHER}\n    tenant_name: beta\n",
        d = d.display(),
    );
    let s = custom_setup(d, &yaml, &d.join("events.ndjson"));
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&s, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(
        line(&out, &format!("tenant alpha ({TENANT}) subscriptions")).starts_with("passed"),
        "{out}"
    );
    assert!(
        line(
            &out,
            &format!("tenant alpha ({TENANT}) Audit.General content")
        )
        .starts_with("passed"),
        "{out}"
    );
    assert_failed(
        &out,
        &format!("tenant beta ({OTHER}) subscriptions"),
        "does not exist",
        "unified audit log is off",
    );
    assert!(!out.contains(" webhook http"), "{out}");
    assert!(out.contains("online checks: 1 failed of 6"), "{out}");
}

/// A start the store recorded 5 minutes ago (by a collector that ran before): Microsoft would
/// refuse another for 10 minutes more, and the subscription line says until when. The store is
/// read, never created: without one there is no such line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_subscription_start_is_named_with_its_time() {
    use o365_collector::store::{EmbeddedStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let (_emu, setup) = start(dir.path(), "").await;
    {
        let store = EmbeddedStore::open(&dir.path().join("store")).unwrap();
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
        store
            .set_next_subscription_start(TENANT, "Audit.Exchange", ahead)
            .await
            .unwrap();
    }
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert_failed(
        &out,
        "Audit.Exchange subscription start",
        "subscription start throttled: Microsoft refuses another start until",
        "lists this content type by pull until then",
    );
    assert!(
        !out.contains("Audit.General subscription start"),
        "only the content type that must wait: {out}"
    );

    // A fresh configuration: no store, no line, and none created.
    let fresh = tempfile::tempdir().unwrap();
    let (_emu2, setup2) = start(fresh.path(), "").await;
    let (out, code) = tokio::task::spawn_blocking(move || preflight(&setup2, SECRET))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("subscription start"), "{out}");
    assert!(
        !fresh.path().join("store").join("queue.redb").exists(),
        "the store was created"
    );
}
