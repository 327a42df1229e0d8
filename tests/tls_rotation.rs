//! Certificate rotation without a restart: the real collector serves cert A, the files are replaced
//! by cert B (atomic rename) and B is served; broken or mismatched files are refused with a warning
//! while B stays in service.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::*;

/// The leaf certificate the server at `port` presents, verified against `ca_pem`.
fn served_cert(port: u16, ca_pem: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?
        .to_vec();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(leaf)
}

async fn served(port: u16, ca: &str) -> Result<Vec<u8>, String> {
    let ca = ca.to_owned();
    tokio::task::spawn_blocking(move || served_cert(port, &ca))
        .await
        .unwrap()
}

fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Replaces `path` atomically (write beside, then rename), as cert-manager and ACME clients do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_is_served_and_broken_files_are_refused() {
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&emu, dir.path(), &["Audit.General"], "");
    // Poll the files often so that the test is quick.
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    let key_line = format!("  key: {}/server.key\n", s.dir.display());
    assert!(yaml.contains(&key_line));
    let yaml = yaml.replace(&key_line, &format!("{key_line}  reload_every: 100ms\n"));
    std::fs::write(&s.config, yaml).unwrap();
    let cert_a = std::fs::read_to_string(s.dir.join("server.pem")).unwrap();
    let ca = emu.ca_pem().to_string();
    let cert_path = s.dir.join("server.pem");
    let key_path = s.dir.join("server.key");

    let c = Collector::spawn(&s);
    wait_for(Duration::from_secs(30), "cert A served", || async {
        served(s.port, &ca).await.ok() == Some(leaf_der(&cert_a))
    })
    .await;

    // Rotation: a new key and certificate, key first (a moment of mismatch, as in real renewals).
    let (cert_b, key_b) = emu.issue_server_cert(&["127.0.0.1", "localhost"]).unwrap();
    assert_ne!(leaf_der(&cert_a), leaf_der(&cert_b));
    replace(&key_path, &key_b);
    replace(&cert_path, &cert_b);
    wait_for(Duration::from_secs(30), "cert B served", || async {
        served(s.port, &ca).await.ok() == Some(leaf_der(&cert_b))
    })
    .await;
    wait_for(Duration::from_secs(10), "reload logged", || async {
        c.logs().contains("TLS certificate reloaded")
    })
    .await;
    let warnings_before = c.logs().matches("keeping the current certificate").count();

    // Broken: not PEM at all. B stays in service and a warning says why.
    replace(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    wait_for(
        Duration::from_secs(10),
        "warning for broken files",
        || async { c.logs().matches("keeping the current certificate").count() > warnings_before },
    )
    .await;
    assert_eq!(served(s.port, &ca).await.unwrap(), leaf_der(&cert_b));

    // Mismatched: a valid certificate whose key is not the one in the key file.
    let warnings_before = c.logs().matches("keeping the current certificate").count();
    let (cert_c, _key_c) = emu.issue_server_cert(&["127.0.0.1"]).unwrap();
    replace(&cert_path, &cert_c);
    wait_for(
        Duration::from_secs(10),
        "warning for mismatched files",
        || async { c.logs().matches("keeping the current certificate").count() > warnings_before },
    )
    .await;
    assert!(c.logs().contains("does not match"), "{}", c.logs());
    assert_eq!(served(s.port, &ca).await.unwrap(), leaf_der(&cert_b));

    // Unreadable (as with EMFILE), then back as they were: no spurious "reloaded", B still served.
    let reloads = c.logs().matches("TLS certificate reloaded").count();
    std::fs::remove_file(&cert_path).unwrap();
    wait_for(
        Duration::from_secs(10),
        "unreadable files reported",
        || async { c.logs().contains("TLS certificate files unreadable") },
    )
    .await;
    replace(&cert_path, &cert_b);
    wait_for(Duration::from_secs(10), "readable again", || async {
        c.logs().contains("TLS certificate files readable again")
    })
    .await;
    assert_eq!(served(s.port, &ca).await.unwrap(), leaf_der(&cert_b));

    // A new pair after all that: swapped in, and exactly one more "reloaded" line.
    let (cert_d, key_d) = emu.issue_server_cert(&["127.0.0.1", "localhost"]).unwrap();
    replace(&key_path, &key_d);
    replace(&cert_path, &cert_d);
    wait_for(Duration::from_secs(30), "cert D served", || async {
        served(s.port, &ca).await.ok() == Some(leaf_der(&cert_d))
    })
    .await;
    wait_for(Duration::from_secs(10), "reload of D logged", || async {
        c.logs().matches("TLS certificate reloaded").count() > reloads
    })
    .await;
    assert_eq!(
        c.logs().matches("TLS certificate reloaded").count(),
        reloads + 1,
        "only the swap to D is a reload:\n{}",
        c.logs()
    );
    assert!(!c.logs().contains(&key_b), "key material never logged");
}
