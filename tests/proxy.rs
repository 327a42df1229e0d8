//! Behind a real reverse proxy: emulator → nginx (TLS, Debian `nginx-light`) → collector (plain
//! HTTP). Microsoft's validation call and notifications pass through, records arrive, the caller
//! from X-Forwarded-For is logged (only because nginx is a trusted proxy), and nginx refuses an
//! oversized body before it reaches the collector.

#[path = "support/nginx.rs"]
mod nginx;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nginx::{Nginx, nginx_binary};
use support::*;

/// A client that trusts the emulator's CA and connects from `from` (another loopback address
/// stands for an outside caller).
fn client_from(emu: &o365_emulator::Emulator, from: [u8; 4]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .local_address(std::net::IpAddr::from(from))
        .http1_only()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_through_nginx() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let types = ["Audit.General", "Audit.Exchange"];
    let s = setup(&emu, dir.path(), &types, "");
    let proxy_port = free_port();
    let public = format!("https://127.0.0.1:{proxy_port}/o365/webhook");

    // The collector: plain HTTP on its port, TLS at nginx, webhook.address = nginx's URL.
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    let tls_block = format!(
        "tls:\n  cert: {d}/server.pem\n  key: {d}/server.key\n",
        d = s.dir.display()
    );
    assert!(yaml.contains(&tls_block));
    let yaml = yaml
        .replace(&tls_block, "")
        .replace(&s.webhook_url(), &public)
        .replace(
            "  admin: 127.0.0.1:0\n",
            "  admin: 127.0.0.1:0\n  trusted_proxies: [127.0.0.1]\n",
        );
    std::fs::write(&s.config, yaml).unwrap();

    let nginx = Nginx::start(
        &s.dir.join("nginx"),
        proxy_port,
        &[s.port],
        &s.dir.join("server.pem"),
        &s.dir.join("server.key"),
    );
    let c = Collector::spawn(&s);

    // Subscriptions are started with nginx's URL; Microsoft's validation call passes through.
    wait_webhooks_enabled(&emu, &types).await;
    assert!(
        c.logs()
            .contains("answered Microsoft's webhook validation call"),
        "{}",
        c.logs()
    );
    assert!(
        c.logs().contains("(https via 127.0.0.1:"),
        "the caller comes from X-Forwarded-For, the proxy is named:\n{}",
        c.logs()
    );

    // Notifications through nginx: every record arrives.
    generate(&emu, "Audit.General", 120, 3).await;
    generate(&emu, "Audit.Exchange", 80, 2).await;
    let published = published_ids(&emu).await;
    wait_for(
        Duration::from_secs(60),
        "all records in the output",
        || async { line_count(&s.events) >= published.len() },
    )
    .await;
    assert_exactly_once(&published, &output_ids(&s.events));
    assert!(
        nginx
            .access_log()
            .contains("POST /o365/webhook 200 upstream=127.0.0.1:")
    );

    // A caller from another address (127.0.0.2) with a forged X-Forwarded-For: nginx appends the
    // real address, and the collector logs that one, not the forged one.
    let outside = client_from(&emu, [127, 0, 0, 2]);
    let resp = outside
        .post(&public)
        .header("X-Forwarded-For", "198.51.100.66")
        .header("Webhook-AuthID", "wrong-auth-id-value")
        .json(&serde_json::json!([]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("through nginx: {e}\n{}", nginx.diagnostics()));
    assert!(resp.status().is_client_error(), "{}", resp.status());
    wait_for(Duration::from_secs(10), "rejection logged", || async {
        c.logs().contains("webhook POST rejected")
    })
    .await;
    let rejected: Vec<String> = c
        .logs()
        .lines()
        .filter(|l| l.contains("webhook POST rejected"))
        .map(str::to_owned)
        .collect();
    assert!(
        rejected
            .iter()
            .any(|l| l.contains("127.0.0.2 (https via 127.0.0.1:")),
        "caller 127.0.0.2 logged from X-Forwarded-For:\n{rejected:?}"
    );
    assert!(
        !rejected.iter().any(|l| l.contains("198.51.100.66")),
        "a forged X-Forwarded-For entry left of the real caller is not believed:\n{rejected:?}"
    );

    // The same headers sent straight to the collector from an untrusted peer are ignored.
    let direct = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{}/o365/webhook", s.port))
        .header("X-Forwarded-For", "203.0.113.77")
        .header("X-Forwarded-Proto", "https")
        .header("Webhook-AuthID", "wrong-auth-id-value")
        .json(&serde_json::json!([]))
        .send()
        .await
        .unwrap();
    assert!(direct.status().is_client_error());
    wait_for(
        Duration::from_secs(10),
        "direct rejection logged",
        || async { c.logs().contains("peer=127.0.0.3:") || c.logs().contains("\"127.0.0.3:") },
    )
    .await;
    assert!(!c.logs().contains("203.0.113.77"), "{}", c.logs());

    // Oversized body: 413 from nginx, never forwarded (no upstream in its access log line).
    let big = vec![b'x'; 2 << 20];
    let resp = outside
        .post(&public)
        .header("Webhook-AuthID", AUTH_ID)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap_or_else(|e| panic!("oversized POST: {e}\n{}", nginx.diagnostics()));
    assert_eq!(resp.status(), 413);
    wait_for(
        Duration::from_secs(10),
        "413 in nginx's access log",
        || async {
            nginx
                .access_log()
                .contains("POST /o365/webhook 413 upstream=-")
        },
    )
    .await;
    assert!(
        !c.logs().contains(&"x".repeat(64)),
        "the oversized body never reached the collector"
    );
    for secret in [SECRET, AUTH_ID] {
        assert!(!c.logs().contains(secret), "a secret leaked into the logs");
    }
}

/// The shipped example (deploy/nginx/o365-collector.conf) is a configuration nginx accepts.
#[tokio::test]
async fn shipped_nginx_example_passes_nginx_t() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = write_certs(&emu, d);
    assert!(ca.is_file());
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/o365-collector.conf"),
    )
    .unwrap();
    for needle in [
        "client_max_body_size 1m;",
        "X-Forwarded-For $proxy_add_x_forwarded_for",
        "X-Forwarded-Proto $scheme",
        "location = /o365/webhook",
    ] {
        assert!(example.contains(needle), "example lacks `{needle}`");
    }
    let site = example
        .replace(
            "/etc/nginx/tls/collector.example.com.fullchain.pem",
            &d.join("server.pem").display().to_string(),
        )
        .replace(
            "/etc/nginx/tls/collector.example.com.key",
            &d.join("server.key").display().to_string(),
        )
        .replace("/var/log/nginx/", &format!("{}/", d.display()));
    std::fs::write(d.join("site.conf"), site).unwrap();
    let main = format!(
        "pid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{}}\nhttp {{\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  include {p}/site.conf;\n}}\n",
        p = d.display()
    );
    std::fs::write(d.join("nginx.conf"), main).unwrap();
    let out = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(d)
        .arg("-e")
        .arg(d.join("error.log"))
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -t rejects the example:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
