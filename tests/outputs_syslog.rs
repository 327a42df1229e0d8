//! The syslog output against a real rsyslog (started here on a loopback port): TCP with octet
//! counting, TLS through rsyslog's gtls driver with a CA made for the run, and UDP. rsyslog parses
//! each message and writes timestamp, hostname, app-name, procid, msgid, PRI, structured data and
//! msg to a file, which is compared field by field with what was sent.

mod outputs_support;

use std::time::Duration;

use o365_collector::config::Config;
use o365_collector::output::OutputConfig;
use o365_collector::output::{AnyOutput, Output};
use outputs_support::{Rsyslog, SyslogMode, batch, id_of};

fn config_for(r: &Rsyslog) -> String {
    let transport = match r.mode {
        SyslogMode::Tcp => "tcp",
        SyslogMode::Tls => "tls",
        SyslogMode::Udp => "udp",
    };
    let mut out = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         outputs:\n  siem:\n    type: syslog\n    transport: {transport}\n    address: '{}'\n\
         \x20   hostname: collector-test\n    app_name: o365test\n    facility: local3\n    severity: notice\n",
        r.address()
    );
    if r.mode == SyslogMode::Tls {
        out.push_str(&format!(
            "    ca_file: '{}'\n    server_name: localhost\n",
            r.ca_file.display()
        ));
    }
    out
}

fn open(r: &Rsyslog) -> AnyOutput {
    let cfg = Config::parse(&config_for(r), &|_| None).unwrap();
    let o = cfg.outputs.get("siem").unwrap();
    assert!(matches!(o, OutputConfig::Syslog(_)));
    AnyOutput::open("siem", o).unwrap()
}

async fn roundtrip(mode: SyslogMode) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let r = Rsyslog::start(mode);
    let out = open(&r);
    let batches = [batch(0..40), batch(40..41), batch(41..100)];
    for b in &batches {
        let report = out.send(b).await.unwrap();
        assert_eq!(report.written, b.events.len());
    }
    let got = r.wait_received(100, Duration::from_secs(30));
    assert_eq!(got.len(), 100, "no more than sent");
    let sent: Vec<_> = batches
        .iter()
        .flat_map(|b| b.events.iter().map(move |e| (b, e)))
        .collect();
    let pid = std::process::id().to_string();
    for (rec, (b, e)) in got.iter().zip(&sent) {
        let json = std::str::from_utf8(&e.json).unwrap();
        // MSG is the JSON event, byte for byte and in order.
        assert_eq!(rec.msg, json);
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let want = chrono::DateTime::parse_from_rfc3339(v["@timestamp"].as_str().unwrap()).unwrap();
        let have = chrono::DateTime::parse_from_rfc3339(&rec.timestamp)
            .unwrap_or_else(|e| panic!("timestamp {:?}: {e}", rec.timestamp));
        assert_eq!(have, want, "the record's own time is the syslog timestamp");
        assert_eq!(rec.hostname, "collector-test");
        assert_eq!(rec.app_name, "o365test");
        assert_eq!(rec.procid, pid);
        assert_eq!(rec.msgid, "Audit.SharePoint");
        assert_eq!(rec.pri, (19 * 8 + 5).to_string());
        assert_eq!(
            rec.structured_data,
            format!(
                "[o365@32473 tenant=\"{}\" contentType=\"Audit.SharePoint\" contentId=\"{}\"]",
                b.tenant_id, b.content_id
            )
        );
    }
    let ids: std::collections::HashSet<_> = got.iter().map(|r| id_of(&r.msg)).collect();
    assert_eq!(ids.len(), 100);
}

#[tokio::test]
async fn tcp_octet_counting_parsed_by_rsyslog() {
    roundtrip(SyslogMode::Tcp).await;
}

#[tokio::test]
async fn tls_through_rsyslog_gtls() {
    roundtrip(SyslogMode::Tls).await;
}

#[tokio::test]
async fn udp_parsed_by_rsyslog() {
    roundtrip(SyslogMode::Udp).await;
}

#[tokio::test]
async fn tls_with_an_unknown_ca_is_refused() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let r = Rsyslog::start(SyslogMode::Tls);
    // Trust a different CA than the one that signed rsyslog's certificate.
    let other = outputs_support::TestPki::generate();
    let ca = r.dir.path().join("other-ca.pem");
    std::fs::write(&ca, other.ca_pem).unwrap();
    let text = config_for(&r).replace(&r.ca_file.display().to_string(), &ca.display().to_string());
    let cfg = Config::parse(&text, &|_| None).unwrap();
    let out = AnyOutput::open("siem", cfg.outputs.get("siem").unwrap()).unwrap();
    let err = out.send(&batch(0..1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn large_record_over_tcp_is_framed_whole() {
    let r = Rsyslog::start(SyslogMode::Tcp);
    let out = open(&r);
    let mut b = batch(0..2);
    // ~200 KiB of JSON: octet counting, not newline framing, delimits it.
    let mut v: serde_json::Value = serde_json::from_slice(&b.events[0].json).unwrap();
    v["big"] = serde_json::Value::String("x".repeat(200 * 1024));
    b.events[0].json = serde_json::to_vec(&v).unwrap();
    out.send(&b).await.unwrap();
    let got = r.wait_received(2, Duration::from_secs(30));
    assert_eq!(got[0].msg.as_bytes(), &b.events[0].json[..]);
    assert_eq!(got[1].msg.as_bytes(), &b.events[1].json[..]);
}
