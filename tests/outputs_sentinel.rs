//! The Sentinel output (Azure Monitor Logs Ingestion API) against the emulator's faithful Logs
//! Ingestion endpoint: 100,000 records through the real binary exactly once, gzip'd, no body over
//! 1 MB; a forced 413 splits the request; a forced 429 waits its Retry-After (read from the
//! emulator's request log, not timed here); a wrong audience and a missing role refused with
//! Microsoft's reason; a SIGKILL mid-run loses nothing; and Microsoft's own Python SDK
//! (azure-monitor-ingestion, installed by scripts/test) uploads the same records and is accepted
//! alike, the stored documents comparing equal.

mod outputs_support;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use o365_collector::config::Config;
use o365_collector::output::{AnyOutput, Batch, Output, OutputError};
use o365_emulator::{DataCollectionRule, Emulator, IngestionRequest, TenantSpec};
use outputs_support::batch;
use serde_json::Value;
use support::*;

const DCR: &str = "dcr-00112233445566778899aabbccddeeff";
const STREAM: &str = "Custom-O365Audit_CL";
/// An app in the same tenant without "Monitoring Metrics Publisher" on the DCR.
const OTHER_CLIENT: &str = "7a7a7a7a-1111-4222-8333-444455556666";
const OTHER_SECRET: &str = "other-app-secret-value";
const MAX_CALL: usize = 1024 * 1024;

async fn monitor_emulator() -> Emulator {
    emulator(|c| {
        c.tenants
            .push(TenantSpec::with_secret(TENANT, OTHER_CLIENT, OTHER_SECRET));
        c.data_collection_rules = vec![DataCollectionRule {
            immutable_id: DCR.into(),
            streams: vec![STREAM.into()],
            publishers: vec![CLIENT.into()],
        }];
        c.webhook_retry_base = Duration::from_millis(50);
    })
    .await
}

/// The `sentinel` output's settings against `emu` (`extra` continues them, indented 4).
fn sentinel_yaml(emu: &Emulator, ca: &std::path::Path, extra: &str) -> String {
    format!(
        "    type: sentinel\n    endpoint: {base}\n    dcr_immutable_id: {DCR}\n    stream: {STREAM}\n    tenant_id: {TENANT}\n    client_id: {CLIENT}\n    authority: {base}\n    ca_file: {ca}\n{extra}",
        base = emu.base_url(),
        ca = ca.display(),
    )
}

/// Opens the output as the configuration file gives it.
fn open(emu: &Emulator, dir: &std::path::Path, extra: &str) -> AnyOutput {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emu.ca_pem()).unwrap();
    let mut settings = sentinel_yaml(emu, &ca, extra);
    if !extra.contains("client_secret") {
        settings.push_str(&format!("    client_secret: {SECRET}\n"));
    }
    let text = format!(
        "tenant_id: 66666666-7777-8888-9999-000000000000\n\
         client_id: 11111111-2222-3333-4444-555555555555\n\
         client_secret: s3cr3t~Value.From_Azure-Portal\n\
         allow_placeholders: true\n\
         outputs:\n  out:\n{settings}"
    );
    let cfg = Config::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    AnyOutput::open("out", cfg.outputs.get("out").unwrap()).unwrap()
}

/// Every record the emulator accepted, as NDJSON of the events (`{"Event": …}` unwrapped).
fn ingested_events(emu: &Emulator) -> Vec<Value> {
    emu.ingested()
        .iter()
        .flat_map(|u| {
            assert_eq!(
                (u.dcr_immutable_id.as_str(), u.stream.as_str()),
                (DCR, STREAM)
            );
            let items: Vec<Value> = serde_json::from_str(&u.body).unwrap();
            items
        })
        .map(|mut item| {
            let obj = item.as_object_mut().expect("each record is an object");
            assert_eq!(obj.len(), 1, "one column, Event: {item}");
            obj.remove("Event").expect("the Event column")
        })
        .collect()
}

/// Record ids with their counts among the accepted records.
fn ingested_ids(emu: &Emulator) -> HashMap<String, u32> {
    let mut ndjson = Vec::new();
    for e in ingested_events(emu) {
        serde_json::to_writer(&mut ndjson, &e).unwrap();
        ndjson.push(b'\n');
    }
    o365_collector::demo::count_ids_in(&ndjson).unwrap()
}

fn assert_requests_within_limits(log: &[IngestionRequest]) {
    for r in log {
        assert_eq!(r.content_encoding.as_deref(), Some("gzip"), "{r:?}");
        assert!(r.wire_bytes <= MAX_CALL, "{r:?}");
        assert!(r.json_bytes.is_some_and(|b| b <= MAX_CALL), "{r:?}");
    }
}

/// Waits for the collector's webhooks, failing with its log if it exited (a refused configuration).
async fn wait_started(c: &mut Collector, emu: &Emulator, types: &[&str]) {
    tokio::select! {
        () = wait_webhooks_enabled(emu, types) => {}
        () = async {
            loop {
                if c.child.try_wait().unwrap().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } => panic!("the collector exited:\n{}", c.logs()),
    }
}

/// A collector setup whose output is `sentinel` (declared before `pipeline:`, which `rest` holds).
fn sentinel_setup(emu: &Emulator, dir: &std::path::Path, types: &[&str], rest: &str) -> Setup {
    let mut extra = String::from("  sentinel:\n");
    extra.push_str(&sentinel_yaml(
        emu,
        &dir.join("ca.pem"),
        "    client_secret: ${TEST_CLIENT_SECRET}\n",
    ));
    extra.push_str(rest);
    let s = setup(emu, dir, types, &extra);
    select_output(&s, "sentinel");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_exactly_once_gzip_at_most_1mb() {
    let emu = monitor_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let types = ["Audit.Exchange", "Audit.SharePoint"];
    let s = sentinel_setup(&emu, dir.path(), &types, "pipeline:\n  workers: 4\n");
    let mut c = Collector::spawn(&s);
    wait_started(&mut c, &emu, &types).await;
    generate(&emu, "Audit.Exchange", 60_000, 60).await;
    generate(&emu, "Audit.SharePoint", 40_000, 40).await;
    let ids = published_ids(&emu).await;
    assert_eq!(ids.len(), 100_000);
    wait_for(
        Duration::from_secs(300),
        "100,000 records ingested",
        || async { emu.ingested_records() >= 100_000 },
    )
    .await;
    let status = c.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", c.logs());
    assert_exactly_once(&ids, &ingested_ids(&emu));
    let log = emu.ingestion_requests();
    assert!(log.iter().all(|r| r.status == 204), "every upload accepted");
    assert_requests_within_limits(&log);
    let biggest = log.iter().filter_map(|r| r.json_bytes).max().unwrap();
    let wire: usize = log.iter().map(|r| r.wire_bytes).sum();
    let json: usize = log.iter().filter_map(|r| r.json_bytes).sum();
    println!(
        "100,000 records in {} uploads; largest body {biggest} bytes of JSON; {json} bytes of JSON sent as {wire} gzip'd",
        log.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_run_loses_nothing() {
    let emu = monitor_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let types = ["Audit.General"];
    let s = sentinel_setup(&emu, dir.path(), &types, "pipeline:\n  workers: 2\n");
    let mut c = Collector::spawn(&s);
    wait_started(&mut c, &emu, &types).await;
    generate(&emu, "Audit.General", 40_000, 40).await;
    // Killed once some of it arrived and while the rest is on its way.
    wait_for(
        Duration::from_secs(120),
        "the first records ingested",
        || async { emu.ingested_records() > 0 },
    )
    .await;
    c.kill();
    let before = emu.ingested_records();
    assert!(
        before < 40_000,
        "the kill landed mid-run ({before} ingested)"
    );
    let mut c = Collector::spawn(&s);
    let ids = published_ids(&emu).await;
    wait_for(
        Duration::from_secs(240),
        "every record after the restart",
        || async {
            let got = ingested_ids(&emu);
            ids.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
    let status = c.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", c.logs());
    let got = ingested_ids(&emu);
    let repeated: u32 = got.values().map(|n| n - 1).sum();
    // At-least-once: only the batches in flight at the kill go out again (2 workers × at most
    // 2 batches of pipeline.batch_records, 1000 by default).
    assert!(repeated <= 2 * 2 * 1000, "{repeated} records repeated");
    assert_eq!(got.len(), ids.len(), "nothing else arrived");
    assert_requests_within_limits(&emu.ingestion_requests());
    println!("killed after {before} of 40,000 ingested; {repeated} sent twice, none lost");
}

#[tokio::test]
async fn forced_413_splits_and_forced_429_waits_retry_after() {
    let emu = monitor_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let out = open(&emu, dir.path(), "");

    faults(
        &emu,
        serde_json::json!({"ingestion_fail_next": 1, "ingestion_fail_status": 413}),
    )
    .await;
    let b = batch(0..200);
    out.send(&b).await.unwrap();
    let log = emu.ingestion_requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [413, 204, 204],
        "the refused request split in halves"
    );
    assert_eq!(
        log[0].error_code.as_deref(),
        Some("ContentLengthLimitExceeded")
    );
    assert!(log[1].json_bytes.unwrap() < log[0].json_bytes.unwrap());
    let uploads = emu.ingested();
    assert_eq!(
        uploads.iter().map(|u| u.records).collect::<Vec<_>>(),
        [100, 100]
    );
    let sent: Vec<Value> = b
        .events
        .iter()
        .map(|e| serde_json::from_slice(&e.json).unwrap())
        .collect();
    assert_eq!(ingested_events(&emu), sent, "every event once, in order");

    faults(
        &emu,
        serde_json::json!({"ingestion_fail_next": 1, "ingestion_fail_status": 429, "ingestion_retry_after": 2}),
    )
    .await;
    out.send(&batch(200..210)).await.unwrap();
    let log = emu.ingestion_requests();
    let [.., throttled, retried] = log.as_slice() else {
        panic!("{log:?}")
    };
    assert_eq!((throttled.status, throttled.retry_after), (429, Some(2)));
    assert_eq!(retried.status, 204);
    let gap = retried.at - throttled.at;
    assert!(
        gap >= chrono::Duration::seconds(2),
        "the retry came {gap} after the 429, before its Retry-After of 2 s"
    );
    assert_eq!(emu.ingested_records(), 210);
    assert_requests_within_limits(&log);

    // 503 with Retry-After likewise.
    faults(
        &emu,
        serde_json::json!({"ingestion_fail_next": 1, "ingestion_fail_status": 503, "ingestion_retry_after": 1}),
    )
    .await;
    out.send(&batch(210..215)).await.unwrap();
    let log = emu.ingestion_requests();
    let [.., unavailable, retried] = log.as_slice() else {
        panic!("{log:?}")
    };
    assert_eq!(unavailable.status, 503);
    assert!(retried.at - unavailable.at >= chrono::Duration::seconds(1));
    assert_eq!(emu.ingested_records(), 215);
}

fn fatal_reason(r: Result<o365_collector::output::SendReport, OutputError>) -> String {
    match r {
        Err(OutputError::Fatal { reason, .. }) => reason,
        other => panic!("expected a Fatal refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_audience_and_missing_role_are_refused_with_the_reason() {
    let emu = monitor_emulator().await;
    let dir = tempfile::tempdir().unwrap();

    // Another cloud's audience: the global cloud's Entra ID does not know it.
    let us = open(&emu, dir.path(), "    audience: https://monitor.azure.us\n");
    let reason = fatal_reason(us.send(&batch(0..3)).await);
    assert!(reason.contains("AADSTS500011"), "{reason}");
    assert!(reason.contains("https://monitor.azure.us"), "{reason}");

    // A token for the Management Activity API is not one for Azure Monitor.
    let http = client(&emu);
    let resp = http
        .post(emu.logs_ingestion_url(DCR, STREAM))
        .bearer_auth(token(&emu).await)
        .header("content-type", "application/json")
        .body("[{\"Event\":{}}]")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-ms-error-code"], "InvalidToken");
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("audience") && message.contains("https://monitor.azure.com"),
        "{body}"
    );

    // An app without "Monitoring Metrics Publisher" on the DCR: 403 OperationFailed, Fatal.
    let text = sentinel_yaml(&emu, &dir.path().join("ca.pem"), "").replace(CLIENT, OTHER_CLIENT);
    let cfg = Config::parse(
        &format!(
            "tenant_id: 66666666-7777-8888-9999-000000000000\nclient_id: 11111111-2222-3333-4444-555555555555\nclient_secret: s3cr3t~Value.From_Azure-Portal\nallow_placeholders: true\noutputs:\n  out:\n{text}    client_secret: {OTHER_SECRET}\n"
        ),
        &|_| None,
    )
    .unwrap();
    let dump = format!("{:?}\n{}", cfg.outputs, cfg.summary());
    assert!(!dump.contains(OTHER_SECRET), "{dump}");
    let no_role = AnyOutput::open("out", cfg.outputs.get("out").unwrap()).unwrap();
    let reason = fatal_reason(no_role.send(&batch(0..3)).await);
    assert!(
        reason.starts_with("HTTP 403 OperationFailed: The authentication token provided does not have access to ingest data"),
        "{reason}"
    );
    assert!(!reason.contains(OTHER_SECRET));
    assert_eq!(emu.ingested_records(), 0, "nothing accepted");
}

/// Where scripts/test installed azure-monitor-ingestion (pinned, with hashes).
fn sdk_python() -> std::path::PathBuf {
    let p = std::env::var_os("O365_SENTINEL_SDK_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::Path::new(&home).join(".cache/o365-collector/sentinel-sdk-venv/bin/python")
        });
    assert!(
        p.exists(),
        "{} is missing: scripts/test installs Microsoft's azure-monitor-ingestion SDK there \
         (python3 -m venv ~/.cache/o365-collector/sentinel-sdk-venv && that venv's pip install \
         --require-hashes --only-binary=:all: -r scripts/sentinel-sdk-requirements.txt), or set \
         O365_SENTINEL_SDK_PYTHON to a python that has it",
        p.display()
    );
    p
}

/// Uploads through Microsoft's SDK: `LogsIngestionClient.upload(rule_id, stream_name, logs)`,
/// signing in at the emulator's v2 token endpoint with the scopes the SDK asks for.
const SDK_SCRIPT: &str = r#"
import json, sys, time, requests
from azure.core.credentials import AccessToken
from azure.monitor.ingestion import LogsIngestionClient

endpoint, token_url, client_id, secret, rule_id, stream, logs_path = sys.argv[1:8]

class ClientSecret:
    """A TokenCredential: the client-credentials grant against the v2 endpoint."""
    def get_token(self, *scopes, **kwargs):
        r = requests.post(token_url, data={"grant_type": "client_credentials", "client_id": client_id,
                                           "client_secret": secret, "scope": " ".join(scopes)})
        r.raise_for_status()
        body = r.json()
        return AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))

logs = json.load(open(logs_path))
client = LogsIngestionClient(endpoint=endpoint, credential=ClientSecret())
client.upload(rule_id=rule_id, stream_name=stream, logs=logs)
print("uploaded", len(logs))
"#;

#[tokio::test]
async fn the_python_sdk_and_ours_are_accepted_alike() {
    let python = sdk_python();
    let emu = monitor_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let out = open(&emu, dir.path(), "");
    let b: Batch = batch(0..300);
    out.send(&b).await.unwrap();
    let ours = ingested_events(&emu);
    assert_eq!(ours.len(), 300);

    // The same records, as the SDK's caller hands them over.
    let logs: Vec<Value> = b
        .events
        .iter()
        .map(|e| serde_json::json!({"Event": serde_json::from_slice::<Value>(&e.json).unwrap()}))
        .collect();
    let logs_path = dir.path().join("logs.json");
    std::fs::write(&logs_path, serde_json::to_vec(&logs).unwrap()).unwrap();
    let script = dir.path().join("upload.py");
    std::fs::write(&script, SDK_SCRIPT).unwrap();
    let token_url = format!("{}/{TENANT}/oauth2/v2.0/token", emu.base_url());
    let base = emu.base_url().to_owned();
    let ca = dir.path().join("ca.pem");
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&script)
            .args([&base, &token_url, CLIENT, SECRET, DCR, STREAM])
            .arg(&logs_path)
            .env("REQUESTS_CA_BUNDLE", &ca)
            .env("SSL_CERT_FILE", &ca)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "the SDK's upload failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let log = emu.ingestion_requests();
    assert!(log.iter().all(|r| r.status == 204), "{log:?}");
    assert_requests_within_limits(&log);
    let all = ingested_events(&emu);
    assert_eq!(all.len(), 600);
    let (ours_again, sdk) = all.split_at(300);
    assert_eq!(ours_again, ours.as_slice());
    assert_eq!(sdk, ours.as_slice(), "the SDK's documents equal ours");
    let uploads = emu.ingested();
    let ua: Vec<&str> = uploads.iter().map(|u| u.client_id.as_str()).collect();
    assert!(ua.iter().all(|c| *c == CLIENT));
}

/// `deploy/sentinel/sentinel.json` declares the stream the output sends to by default, with the one
/// dynamic column `Event` the output fills, and every column its transformation projects exists in
/// the table it creates.
#[test]
fn the_deploy_template_declares_what_the_output_sends() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sentinel/sentinel.json");
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let resources = t["resources"].as_array().unwrap();
    let of_type = |ty: &str| {
        resources
            .iter()
            .find(|r| r["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} in {}", path.display()))
    };
    let dcr = &of_type("Microsoft.Insights/dataCollectionRules")["properties"];
    let declared = &dcr["streamDeclarations"][o365_collector::output::sentinel::DEFAULT_STREAM];
    assert_eq!(
        declared["columns"],
        serde_json::json!([{"name": "Event", "type": "dynamic"}])
    );
    let flow = &dcr["dataFlows"][0];
    assert_eq!(
        flow["streams"][0],
        o365_collector::output::sentinel::DEFAULT_STREAM
    );
    let table = &of_type("Microsoft.OperationalInsights/workspaces/tables")["properties"]["schema"];
    let columns: Vec<&str> = table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        flow["outputStream"],
        format!("Custom-{}", table["name"].as_str().unwrap()).as_str()
    );
    let kql = flow["transformKql"].as_str().unwrap();
    let projected = kql.split("| project").nth(1).unwrap();
    for part in projected.split(',') {
        let name = part.split('=').next().unwrap().trim();
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
            assert!(
                columns.contains(&name),
                "{name} is projected but not a column: {columns:?}"
            );
        }
    }
    assert!(columns.contains(&"TimeGenerated") && columns.contains(&"Event"));
    let role = &of_type("Microsoft.Authorization/roleAssignments")["properties"];
    // Monitoring Metrics Publisher's role definition id.
    assert_eq!(
        t["variables"]["monitoringMetricsPublisher"],
        "3913510d-42f4-4e42-8a64-420c390055eb"
    );
    assert!(
        role["roleDefinitionId"]
            .as_str()
            .unwrap()
            .contains("variables('monitoringMetricsPublisher')")
    );
}

/// The emulated endpoint's own checks, each answered as Azure does (`{"error":{"code","message"}}`
/// and `x-ms-error-code`), nothing stored for any of them.
#[tokio::test]
async fn the_emulated_endpoint_judges_every_upload() {
    use std::io::Write as _;
    let emu = monitor_emulator().await;
    let http = client(&emu);
    let token: Value = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emu.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", "https://monitor.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let gz = |body: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    };
    let post = |url: String, body: Vec<u8>, encoding: Option<&'static str>| {
        let mut r = http
            .post(url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        if let Some(e) = encoding {
            r = r.header("content-encoding", e);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let code = resp
                .headers()
                .get("x-ms-error-code")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, code)
        }
    };
    let url = emu.logs_ingestion_url(DCR, STREAM);
    let small = br#"[{"Event":{"Id":"1"}}]"#.to_vec();
    // 1 MiB and one byte of JSON, gzip'd to a few kB: too large all the same.
    let mut big = br#"[{"Event":{"pad":""#.to_vec();
    big.resize(MAX_CALL - 3, b'x');
    big.extend_from_slice(br#""}}]"#);
    assert_eq!(big.len(), MAX_CALL + 1);
    /// What is sent (name, URL, body, Content-Encoding) and the answer expected (status, code).
    type Case<'a> = (
        &'a str,
        String,
        Vec<u8>,
        Option<&'static str>,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "no api-version",
            url.replace("?api-version=2023-01-01", ""),
            gz(&small),
            Some("gzip"),
            400,
            Some("MissingApiVersionParameter"),
        ),
        (
            "unknown rule",
            emu.logs_ingestion_url("dcr-ffffffffffffffffffffffffffffffff", STREAM),
            gz(&small),
            Some("gzip"),
            404,
            Some("NotFound"),
        ),
        (
            "undeclared stream",
            emu.logs_ingestion_url(DCR, "Custom-Other_CL"),
            gz(&small),
            Some("gzip"),
            400,
            Some("InvalidStream"),
        ),
        (
            "not gzip",
            url.clone(),
            small.clone(),
            Some("gzip"),
            400,
            Some("InvalidContentEncoding"),
        ),
        (
            "not an array",
            url.clone(),
            gz(br#"{"Event":{}}"#),
            Some("gzip"),
            400,
            Some("InvalidPayload"),
        ),
        (
            "over 1 MiB of JSON",
            url.clone(),
            gz(&big),
            Some("gzip"),
            413,
            Some("ContentLengthLimitExceeded"),
        ),
        ("gzip'd", url.clone(), gz(&small), Some("gzip"), 204, None),
        ("plain JSON", url.clone(), small.clone(), None, 204, None),
    ];
    for (what, url, body, encoding, status, code) in cases {
        let got = post(url, body, encoding).await;
        assert_eq!(got, (status, code.map(str::to_owned)), "{what}");
    }
    assert_eq!(
        emu.ingested_records(),
        2,
        "only the two accepted uploads are stored"
    );
}
