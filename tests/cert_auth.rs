//! Certificate credentials over real HTTPS against the emulator's Azure AD: a registered certificate
//! (PEM PKCS#8, PEM PKCS#1, PKCS#12) gets a token and an API answer; an unregistered one is refused
//! with the AADSTS error; broken key files give a clear error naming the file.

mod support;

use std::path::{Path, PathBuf};

use o365_collector::config::{Credential, TenantConfig};
use o365_collector::core::Secret;
use o365_collector::mgmt_api::ManagementClient;
use o365_collector::mgmt_api::auth::{AuthError, TokenSource};
use o365_emulator::{Emulator, TenantSpec};
use support::*;

/// A self-signed RSA certificate: (certificate PEM, PKCS#8 key PEM, key PKCS#8 DER, cert DER).
fn self_signed(name: &str) -> (String, String, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        key.serialize_der(),
        cert.der().to_vec(),
    )
}

/// An emulator whose test app accepts `cert_pem` (and no secret).
async fn emulator_with_cert(cert_pem: &str) -> Emulator {
    emulator(|cfg| {
        cfg.tenants = vec![TenantSpec {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            client_secret: None,
            certificates_pem: vec![cert_pem.to_string()],
        }];
    })
    .await
}

fn certificate(cert: &Path, key: &Path, password: Option<&str>) -> Credential {
    Credential::Certificate {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        password: password.map(Secret::new),
    }
}

fn source(emu: &Emulator, credential: Credential) -> TokenSource {
    TokenSource::new(
        client(emu),
        emu.base_url(),
        TENANT,
        CLIENT,
        credential,
        emu.base_url(),
    )
}

fn write(dir: &Path, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Reads one DER TLV at `at`: (header length, content length).
fn tlv(der: &[u8], at: usize) -> (usize, usize) {
    let first = der[at + 1];
    if first < 0x80 {
        return (2, first as usize);
    }
    let n = (first & 0x7f) as usize;
    let len = der[at + 2..at + 2 + n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
    (2 + n, len)
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (its OCTET STRING, third element).
fn pkcs1_from_pkcs8(der: &[u8]) -> Vec<u8> {
    let (h, _) = tlv(der, 0);
    let mut at = h;
    for _ in 0..2 {
        let (h, l) = tlv(der, at);
        at += h + l;
    }
    assert_eq!(der[at], 0x04, "OCTET STRING with the RSA key");
    let (h, l) = tlv(der, at);
    der[at + h..at + h + l].to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_pem_certificate_gets_tokens_and_api_answers() {
    let (cert_pem, key_pem, key_der, _) = self_signed("collector");
    let emu = emulator_with_cert(&cert_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "client.pem", &cert_pem);
    let key = write(dir.path(), "client.key", &key_pem);

    // PKCS#8 key: token, then a real API call with it through the client.
    let tokens = source(&emu, certificate(&cert, &key, None));
    let first = tokens.token().await.unwrap();
    assert!(!first.expose().is_empty());
    // A second request signs a fresh assertion (unique jti) and is accepted too.
    tokens.invalidate(&first).await;
    tokens.token().await.unwrap();

    let tenant = TenantConfig {
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        credential: certificate(&cert, &key, None),
        resource: emu.base_url().into(),
        authority: emu.base_url().into(),
        publisher_id: TENANT.into(),
        content_types: vec!["Audit.General".into()],
        output: "file".into(),
        encoding: encoding_rs::UTF_8,
        format: Default::default(),
        request_budget: Default::default(),
        graph: Default::default(),
        tenant_name: None,
    };
    let api = ManagementClient::new(client(&emu), &tenant).unwrap();
    let subs = api.list_subscriptions().await.unwrap();
    assert!(subs.is_empty(), "a fresh tenant has no subscriptions");

    // The same key as PKCS#1 (`RSA PRIVATE KEY`), and cert + key in one PEM file.
    let rsa_key = write(
        dir.path(),
        "client-rsa.key",
        pem("RSA PRIVATE KEY", &pkcs1_from_pkcs8(&key_der)),
    );
    source(&emu, certificate(&cert, &rsa_key, None))
        .token()
        .await
        .unwrap();
    let both = write(dir.path(), "both.pem", format!("{cert_pem}{key_pem}"));
    source(&emu, certificate(&both, &both, None))
        .token()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkcs12_file_with_password_gets_tokens() {
    let (cert_pem, _, key_der, cert_der) = self_signed("collector-p12");
    let emu = emulator_with_cert(&cert_pem).await;
    let dir = tempfile::tempdir().unwrap();

    // Written by p12-keystore (PBES2 AES-256, HMAC-SHA256 MAC: what current tools produce).
    let mut store = p12_keystore::KeyStore::new();
    let chain = p12_keystore::PrivateKeyChain::new(
        b"collector".to_vec(),
        p12_keystore::PrivateKey::from_der(&key_der).unwrap(),
        [p12_keystore::Certificate::from_der(&cert_der).unwrap()],
    );
    store.add_entry(
        "collector",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );
    let p12 = write(
        dir.path(),
        "client.p12",
        store.writer("p12-password").write().unwrap(),
    );
    source(&emu, certificate(&p12, &p12, Some("p12-password")))
        .token()
        .await
        .unwrap();

    // A wrong password says so (and nothing about the key).
    let err = source(&emu, certificate(&p12, &p12, Some("not-it")))
        .token()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AuthError::Credential(_)), "{err:?}");
    assert!(
        text.contains("client.p12") && text.contains("password"),
        "{text}"
    );
    assert!(!err.is_retryable());

    // A .pfx made by OpenSSL (AES and legacy 3DES), when OpenSSL is installed.
    let openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !openssl {
        eprintln!("openssl not installed: OpenSSL-made PKCS#12 files not tested");
        return;
    }
    let cert = write(dir.path(), "c.pem", &cert_pem);
    let key = write(dir.path(), "k.pem", pem("PRIVATE KEY", &key_der));
    for (name, extra) in [
        ("aes.pfx", &[][..]),
        (
            "legacy.pfx",
            &[
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ][..],
        ),
    ] {
        let out = dir.path().join(name);
        let status = std::process::Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:pfx-pass", "-in"])
            .arg(&cert)
            .arg("-inkey")
            .arg(&key)
            .arg("-out")
            .arg(&out)
            .args(extra)
            .status()
            .unwrap();
        assert!(status.success(), "openssl pkcs12 -export {name}");
        source(&emu, certificate(&out, &out, Some("pfx-pass")))
            .token()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_certificate_is_refused_with_the_aadsts_error() {
    let (registered, _, _, _) = self_signed("registered");
    let (other_cert, other_key, _, _) = self_signed("someone-else");
    let emu = emulator_with_cert(&registered).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "other.pem", &other_cert);
    let key = write(dir.path(), "other.key", &other_key);
    match source(&emu, certificate(&cert, &key, None)).token().await {
        Err(e @ AuthError::Rejected { .. }) => {
            let text = e.to_string();
            assert!(text.contains("AADSTS700027"), "{text}");
            assert!(text.contains("not registered"), "{text}");
            assert!(!text.contains("PRIVATE KEY"), "{text}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_key_files_give_a_clear_credential_error_naming_the_file() {
    let (cert_pem, key_pem, _, _) = self_signed("collector");
    let (_, other_key, _, _) = self_signed("other");
    let emu = emulator_with_cert(&cert_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "client.pem", &cert_pem);
    let garbage = write(dir.path(), "garbage.key", "this is not a key at all\n");
    let missing = dir.path().join("missing.key");
    let mismatched = write(dir.path(), "mismatched.key", &other_key);
    let encrypted = write(
        dir.path(),
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let garbage_p12 = write(dir.path(), "garbage.pfx", b"\x30\x03\x02\x01\x03");
    let cases: [(&Path, &Path, &str); 5] = [
        (&cert, &missing, "missing.key"),
        (&cert, &garbage, "no PEM private key"),
        (&cert, &mismatched, "does not belong to the certificate"),
        (&cert, &encrypted, "encrypted PEM keys are not supported"),
        (&garbage_p12, &garbage_p12, "not a readable PKCS#12 file"),
    ];
    for (c, k, expect) in cases {
        let err = source(&emu, certificate(c, k, None))
            .token()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, AuthError::Credential(_)), "{err:?}");
        assert!(!err.is_retryable(), "{text}");
        assert!(text.contains(expect), "{expect}: {text}");
        let named = k.file_name().unwrap().to_str().unwrap();
        assert!(text.contains(named), "names the file: {text}");
        assert!(
            !text.contains(key_pem.lines().nth(1).unwrap()),
            "no key material: {text}"
        );
    }
}
