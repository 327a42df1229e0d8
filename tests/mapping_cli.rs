//! `o365-collector map`: input forms, diagnostics with locations, exit codes.

use o365_collector::mapping::Format;
use o365_collector::mapping::cli::{MapArgs, run_with};
use serde_json::Value;

struct Run {
    code: i32,
    events: Vec<Value>,
    err: String,
}

fn run(format: Format, input: &[u8]) -> Run {
    let args = MapArgs {
        format,
        tenant_id: "tenant-1".into(),
        ..MapArgs::default()
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run_with(&args, input, &mut out, &mut err).unwrap();
    let out = String::from_utf8(out).unwrap();
    let events = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON: {e}: {l}")))
        .collect();
    Run {
        code,
        events,
        err: String::from_utf8(err).unwrap(),
    }
}

const TEAM: &str = include_str!("fixtures/mapping/team-records.jsonl");

#[test]
fn json_lines() {
    let r = run(Format::O365, TEAM.as_bytes());
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.events.len(), TEAM.lines().count());
    assert_eq!(r.events[0]["o365.audit.DeviceProperties.OS"], "Windows 10");
    assert_eq!(r.events[0]["o365.meta.tenant_id"], "tenant-1");
    assert!(r.events[0]["o365.meta.received"].is_string());
    // The last fixture record has a bad CreationTime; its issue names the line.
    let last = TEAM.lines().count();
    assert!(
        r.err.contains(&format!("line {last}: CreationTime")),
        "{}",
        r.err
    );
}

#[test]
fn content_blob_array_with_crlf() {
    let blob = include_str!("fixtures/mapping/microsoft-docs-content-blob.json");
    let r = run(Format::Ecs, blob.as_bytes());
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.events.len(), 3);
    assert_eq!(r.events[0]["event.outcome"], "failure");
    assert_eq!(r.events[1]["event.outcome"], "success");
    assert_eq!(
        r.events[0]["o365.meta.record_type_name"],
        "AzureActiveDirectoryAccountLogon"
    );
}

#[test]
fn pretty_printed_objects_in_a_row() {
    let a = include_str!("fixtures/mapping/microsoft-docs-AipDiscover-2.json");
    let b = include_str!("fixtures/mapping/microsoft-docs-copilot-1.json");
    let r = run(Format::Raw, format!("{a}\n{b}").as_bytes());
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.events.len(), 2);
    // raw: the record's own fields untouched, meta beside them.
    assert!(r.events[0].get("Data State").is_some());
    assert!(r.events[1]["o365.meta.tenant_id"].is_string());
}

#[test]
fn invalid_json_is_reported_and_the_rest_mapped() {
    let bad = include_str!("fixtures/mapping/microsoft-docs-AipFileDeleted-invalid.txt");
    let mut input = String::from("{\"Id\":\"first\",\"CreationTime\":\"2024-01-01T00:00:00\"}\n");
    input.push_str("{not json\n");
    input.push_str(bad);
    input.push_str("\n{\"Id\":\"last\",\"CreationTime\":\"2024-01-01T00:00:00\"}\n");
    let r = run(Format::O365, input.as_bytes());
    assert_eq!(r.code, 1, "{}", r.err);
    let ids: Vec<&str> = r
        .events
        .iter()
        .filter_map(|e| e["o365.audit.Id"].as_str())
        .collect();
    assert_eq!(ids, ["first", "last"]);
    assert!(r.err.contains("line 2: invalid JSON"), "{}", r.err);
    assert!(r.err.contains("line 3: invalid JSON"), "{}", r.err);
}

#[test]
fn purview_csv_export() {
    let rec1 = r#"{"CreationTime":"2024-03-01T08:15:42","Id":"a","Operation":"FileAccessed","RecordType":6,"ClientIP":"198.51.100.20","UserId":"bob@example.com","Workload":"SharePoint"}"#;
    let rec2 = r#"{"CreationTime":"2024-03-01T08:15:43","Id":"b","Operation":"Set-Mailbox","RecordType":1,"Parameters":[{"Name":"Identity","Value":"x, \"y\""}]}"#;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let csv = format!(
        "\u{feff}RecordId,CreationDate,RecordType,Operation,UserId,AuditData,AssociatedAdminUnits\r\n\
         a,3/1/2024 8:15:42 AM,SharePointFileOperation,FileAccessed,bob@example.com,{},\r\n\
         b,3/1/2024 8:15:43 AM,ExchangeAdmin,Set-Mailbox,admin@example.com,{},\r\n\
         c,3/1/2024 8:15:44 AM,ExchangeAdmin,Set-Mailbox,admin@example.com,{},\r\n",
        quote(rec1),
        quote(rec2),
        quote("{broken")
    );
    let r = run(Format::Ecs, csv.as_bytes());
    assert_eq!(r.code, 1, "{}", r.err);
    assert_eq!(r.events.len(), 2);
    assert_eq!(r.events[0]["source.ip"], "198.51.100.20");
    assert_eq!(r.events[1]["o365.audit.Parameters.Identity"], "x, \"y\"");
    assert!(
        r.err
            .contains("row 3 (line 4): AuditData is not valid JSON"),
        "{}",
        r.err
    );
}

#[test]
fn csv_without_audit_data_column() {
    let r = run(Format::O365, b"a,b\n1,2\n");
    assert_eq!(r.code, 1);
    assert!(r.events.is_empty());
    assert!(r.err.contains("AuditData"), "{}", r.err);
}

#[test]
fn empty_input_is_fine() {
    let r = run(Format::O365, b"  \n");
    assert_eq!(r.code, 0);
    assert!(r.events.is_empty());
    assert!(r.err.is_empty());
}

#[test]
fn missing_file_is_exit_2() {
    let args = MapArgs {
        file: Some("/nonexistent/o365-map-input.json".into()),
        ..MapArgs::default()
    };
    assert_eq!(o365_collector::mapping::cli::run(args).unwrap(), 2);
}

#[test]
fn binary_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    std::fs::write(&path, TEAM).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(["map", "--format", "ecs"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), TEAM.lines().count());
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["event.code"], "AzureActiveDirectoryStsLogon");
    assert_eq!(
        first["user_agent.original"],
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edg/120.0"
    );
}

/// Exported Graph pages map as the feed their `@odata.context` names; single records of a feed
/// map with `--content-type <feed>`.
#[test]
fn graph_pages_and_records() {
    let pages = r#"{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#auditLogs/signIns",
  "value": [{"id": "s1", "createdDateTime": "2026-11-30T09:41:17Z", "status": {"errorCode": 0}}]}
{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#admin/exchange/tracing/messageTraces",
  "value": [{"id": "t1", "recipientAddress": "a@x", "status": "filteredAsSpam", "size": 3, "subject": "s", "toIP": "",
             "receivedDateTime": "2026-11-29T15:30:14Z"}]}
"#;
    let r = run(Format::O365, pages.as_bytes());
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.events.len(), 2, "{:?}", r.events);
    assert_eq!(r.events[0]["o365.signin.status.errorCode"], 0);
    assert_eq!(r.events[0]["o365.meta.content_type"], "Graph.SignIns");
    assert_eq!(r.events[1]["o365.message.status"], "FilteredAsSpam");
    assert_eq!(r.events[1]["o365.message.size"], 3);
    assert_eq!(r.events[1]["@timestamp"], "2026-11-29T15:30:14.000Z");

    let args = MapArgs {
        format: Format::Ecs,
        content_type: "directory_audits".into(),
        ..MapArgs::default()
    };
    let record = br#"{"id": "a1", "activityDateTime": "2026-11-30T09:52:03Z", "activityDisplayName": "Update user", "result": "success"}"#;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&args, &record[..], &mut out, &mut err).unwrap(), 0);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["o365.directory_audit.activityDisplayName"], "Update user");
    assert_eq!(v["event.action"], "Update user");
    assert_eq!(v["event.outcome"], "success");
}
