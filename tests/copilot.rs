//! Copilot and AI-app interactions (RecordType 261, 284, 328, 334) in both formats, built from
//! the facts of Microsoft's Copilot schema page and its two examples (field names, types and
//! values; the records are written here), `map --format ecs` on a file of them (real binary),
//! and a collector delivering records of a RecordType Microsoft's table lacks (counted, logged
//! once, passed through).

mod support;

use std::time::Duration;

use o365_collector::mapping::{Context, Format, map_record, map_record_json};
use serde_json::{Map, Value, json};

const WORD_DOC: &str = "https://contoso-my.sharepoint.com/personal/admin_contoso_onmicrosoft_com/_layouts/15/Doc.aspx?sourcedoc=%7B9FDE1491-B079-4180-9B1E-B87F4ACA19F7%7D&file=About%20Elephants.docx&action=default&mobileredirect=true";
const LABEL: &str = "f41ab342-8706-4188-bd11-ebb85995028c";

/// Copilot in Word with the document open (the schema's first example's shape).
fn word() -> Value {
    json!({
        "CreationTime": "2023-12-13T17:12:36", "Id": "99b0a960-13a0-461f-8c5c-cb2316ea273d",
        "Operation": "CopilotInteraction", "OrganizationId": "408e31c8-8f05-410a-9221-84335f0ce512",
        "RecordType": 261, "UserKey": "12d24f71-64c7-49b3-821f-f8884f3f373e", "UserType": 0,
        "Version": 1, "Workload": "Copilot", "ClientIP": "198.51.100.7", "ClientRegion": "US",
        "UserId": "admin@contoso.onmicrosoft.com",
        "CopilotEventData": {
            "AISystemPlugin": [], "AccessedResources": [], "AppHost": "Word",
            "Contexts": [{"Id": WORD_DOC, "Type": "docx"}],
            "MessageIds": [],
            "Messages": [{"Id": "1715187560311", "isPrompt": true}, {"Id": "1715187561014", "isPrompt": false}],
            "ModelTransparencyDetails": [],
            "ThreadId": "19:lgojcxwbvhJnfU3IhUJW5M-nSX2U7tjccgSrtYAoG341@thread.v2"
        }
    })
}

/// Microsoft 365 Chat with a web-search plugin that read a labelled document (the second
/// example's shape).
fn chat() -> Value {
    json!({
        "CreationTime": "2023-12-14T02:11:55", "Id": "537312b6-dce7-4d9b-8b12-58283204b720",
        "Operation": "CopilotInteraction", "OrganizationId": "408e31c8-8f05-410a-9221-84335f0ce512",
        "RecordType": 261, "UserKey": "12d24f71-64c7-49b3-821f-f8884f3f373e", "UserType": 0,
        "Version": 1, "Workload": "Copilot", "ClientIP": "2001:db8:60d2:179b::b148",
        "ClientRegion": "IN", "UserId": "admin@contoso.onmicrosoft.com",
        "CopilotEventData": {
            "AISystemPlugin": [{"Id": "BingWebSearch", "Name": "BuiltIn"}],
            "AccessedResources": [
                {"Action": "Read", "Id": "AAAAAEYE2GAA", "Name": "Document1.docx",
                 "SensitivityLabelId": LABEL,
                 "SiteUrl": "https://contoso.sharepoint.com/teams/Ops/Shared%20Documents/Document1.docx?web=1",
                 "Type": "docx", "listItemUniqueId": "AAAAAEYE2GAA"},
                {"Action": "Read", "Id": "BBBB", "Name": "Plan.pptx", "SensitivityLabelId": LABEL,
                 "SiteUrl": "https://contoso.sharepoint.com/teams/Ops/Shared%20Documents/Plan.pptx",
                 "Type": "pptx", "listItemUniqueId": "BBBB"}
            ],
            "AppHost": "Bing", "Contexts": [], "MessageIds": [],
            "Messages": [{"Id": "1715186983849", "isPrompt": true}, {"Id": "1715186984291", "isPrompt": false}],
            "ModelTransparencyDetails": [{"ModelName": "DEEP_LEO"}],
            "ThreadId": "19:Xn3uQZYgZ7f2ue0vp5w9MglEVjFyp5pza1efaC6g2U41@thread.v2"
        }
    })
}

/// A third-party AI application (RecordType 284) and Copilot in a Teams meeting (334).
fn ai_app_and_team() -> [Value; 2] {
    [
        json!({
            "CreationTime": "2025-05-02T09:00:01", "Id": "0b5f1c3e-2a4d-4c6e-8f10-1a2b3c4d5e6f",
            "Operation": "AIAppInteraction", "OrganizationId": "408e31c8-8f05-410a-9221-84335f0ce512",
            "RecordType": 284, "UserType": 0, "Version": 1, "Workload": "Copilot",
            "UserId": "megan@contoso.com", "ClientIP": "203.0.113.9",
            "CopilotEventData": {
                "AppHost": "ChatGPT Enterprise",
                "Contexts": [{"Id": "https://chatgpt.com/", "Type": "Web"}],
                "Messages": [{"Id": "1", "isPrompt": true}, {"Id": "2", "isPrompt": false},
                             {"Id": "3", "isPrompt": true}, {"Id": "4", "isPrompt": false}],
                "AccessedResources": [],
                "ModelTransparencyDetails": [{"ModelProviderName": "OpenAI", "ModelName": "gpt-4o", "ModelVersion": "2024-08-06"}],
                "ThreadId": "t-1"
            }
        }),
        json!({
            "CreationTime": "2025-05-02T10:00:00", "Id": "1c6f2d4e-3b5d-4d7f-9a21-2b3c4d5e6f70",
            "Operation": "TeamCopilotInteraction", "OrganizationId": "408e31c8-8f05-410a-9221-84335f0ce512",
            "RecordType": "334", "UserType": 0, "Version": 1, "Workload": "Copilot",
            "UserId": "lee@contoso.com",
            "CopilotEventData": {
                "AppHost": "Teams",
                "Contexts": [{"Id": "19:meeting_abc@thread.v2", "Type": "TeamsMeeting"}],
                "Messages": [{"Id": "5", "isPrompt": true}],
                "ThreadId": "19:meeting_abc@thread.v2"
            }
        }),
    ]
}

fn ctx(format: Format) -> Context<'static> {
    Context {
        format,
        tenant_id: "408e31c8-8f05-410a-9221-84335f0ce512",
        content_type: "Audit.General",
        content_id: "c",
        received: "2025-05-02T10:01:00.000Z",
        ..Context::default()
    }
}

/// Both mapping paths of one record: the same bytes, no issues; the event.
fn map(rec: &Value, format: Format) -> Map<String, Value> {
    let mapped = map_record(rec, &ctx(format));
    assert!(mapped.issues.is_empty(), "{:?}", mapped.issues);
    let mut out = Vec::new();
    let issues = map_record_json(rec, &ctx(format), &mut out).unwrap();
    assert!(issues.is_empty());
    assert_eq!(out, serde_json::to_vec(&mapped.event).unwrap());
    mapped.event
}

#[test]
fn o365_keeps_lists_and_adds_counts() {
    let e = map(&word(), Format::O365);
    assert_eq!(e["o365.meta.record_type_name"], "CopilotInteraction");
    assert_eq!(e["o365.audit.CopilotEventData.AppHost"], "Word");
    assert_eq!(
        e["o365.audit.CopilotEventData.Contexts"],
        json!([{"Id": WORD_DOC, "Type": "docx"}])
    );
    assert_eq!(
        e["o365.audit.CopilotEventData.Messages"],
        json!([{"Id": "1715187560311", "isPrompt": true}, {"Id": "1715187561014", "isPrompt": false}])
    );
    assert_eq!(e["o365.audit.CopilotEventData.AISystemPlugin"], json!([]));
    assert_eq!(e["o365.audit.CopilotEventData.prompt_count"], 1);
    assert_eq!(e["o365.audit.CopilotEventData.response_count"], 1);
    assert_eq!(e["o365.audit.CopilotEventData.accessed_resources_count"], 0);
    assert_eq!(e["o365.audit.ClientRegion"], "US");
    assert!(!e.keys().any(|k| k.contains("Messages.")), "{e:?}");

    let e = map(&chat(), Format::O365);
    let resources = e["o365.audit.CopilotEventData.AccessedResources"]
        .as_array()
        .unwrap();
    assert_eq!(resources.len(), 2);
    assert_eq!(resources[0]["SensitivityLabelId"], LABEL);
    // `{Id, Name}` plugins stay objects (never `AISystemPlugin.<Name>` keys).
    assert_eq!(
        e["o365.audit.CopilotEventData.AISystemPlugin"],
        json!([{"Id": "BingWebSearch", "Name": "BuiltIn"}])
    );
    assert_eq!(
        e["o365.audit.CopilotEventData.ModelTransparencyDetails"],
        json!([{"ModelName": "DEEP_LEO"}])
    );
    assert_eq!(e["o365.audit.CopilotEventData.accessed_resources_count"], 2);

    let [app, team] = ai_app_and_team();
    let e = map(&app, Format::O365);
    assert_eq!(e["o365.meta.record_type_name"], "AIAppInteraction");
    assert_eq!(e["o365.audit.CopilotEventData.prompt_count"], 2);
    assert_eq!(e["o365.audit.CopilotEventData.response_count"], 2);
    let e = map(&team, Format::O365);
    assert_eq!(e["o365.meta.record_type_name"], "TeamCopilotInteraction");
    assert_eq!(e["o365.audit.CopilotEventData.prompt_count"], 1);
    assert_eq!(e["o365.audit.CopilotEventData.response_count"], 0);
    // No AccessedResources in the record: no count (not a made-up zero).
    assert!(!e.contains_key("o365.audit.CopilotEventData.accessed_resources_count"));
}

#[test]
fn ecs_fields() {
    let e = map(&word(), Format::Ecs);
    assert_eq!(e["event.code"], "CopilotInteraction");
    assert_eq!(e["event.action"], "CopilotInteraction");
    assert_eq!(e["event.provider"], "Copilot");
    assert_eq!(e["event.category"], json!(["web"]));
    assert_eq!(e["event.type"], json!(["info", "access"]));
    assert_eq!(e["user.id"], "admin@contoso.onmicrosoft.com");
    assert_eq!(e["user.name"], "admin");
    assert_eq!(e["user.domain"], "contoso.onmicrosoft.com");
    assert_eq!(e["related.user"], json!(["admin"]));
    assert_eq!(e["url.original"], WORD_DOC);
    assert_eq!(e["file.name"], "About Elephants.docx");
    assert_eq!(e["file.extension"], "docx");
    assert_eq!(e["source.ip"], "198.51.100.7");
    assert_eq!(e["o365.audit.CopilotEventData.prompt_count"], 1);
    assert_eq!(
        e["o365.audit.CopilotEventData.Messages"],
        json!([{"Id": "1715187560311", "isPrompt": true}, {"Id": "1715187561014", "isPrompt": false}])
    );
    assert!(!e.contains_key("o365.audit.CopilotEventData.sensitivity_label_ids"));

    let e = map(&chat(), Format::Ecs);
    assert_eq!(e["event.category"], json!(["web", "file"]));
    assert_eq!(
        e["o365.audit.CopilotEventData.sensitivity_label_ids"],
        json!([LABEL])
    );
    assert_eq!(e["o365.audit.CopilotEventData.accessed_resources_count"], 2);
    assert!(!e.contains_key("url.original"));
    assert!(!e.contains_key("file.name"));
    assert_eq!(e["network.type"], "ipv6");

    let [app, team] = ai_app_and_team();
    let e = map(&app, Format::Ecs);
    assert_eq!(e["event.code"], "AIAppInteraction");
    assert_eq!(e["url.original"], "https://chatgpt.com/");
    assert!(!e.contains_key("file.extension"), "`Web` is no file type");
    let e = map(&team, Format::Ecs);
    assert_eq!(e["event.code"], "TeamCopilotInteraction");
    assert_eq!(e["o365.audit.RecordType"], "334");
    assert!(!e.contains_key("url.original"));
    assert_eq!(e["related.user"], json!(["lee"]));
}

#[test]
fn map_command_prints_ecs_documents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copilot.jsonl");
    let [app, team] = ai_app_and_team();
    let records = [word(), chat(), app, team];
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(["map", "--format", "ecs"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["event.code"].as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "CopilotInteraction",
            "CopilotInteraction",
            "AIAppInteraction",
            "TeamCopilotInteraction"
        ]
    );
    assert_eq!(docs[0]["file.name"], "About Elephants.docx");
    assert_eq!(docs[0]["@timestamp"], "2023-12-13T17:12:36.000Z");
    assert_eq!(
        docs[1]["o365.audit.CopilotEventData.sensitivity_label_ids"],
        json!([LABEL])
    );
    assert_eq!(docs[2]["o365.audit.CopilotEventData.prompt_count"], 2);
    // What the library maps is what the command prints.
    for (doc, rec) in docs.iter().zip(&records) {
        let mut expected = map_record(
            rec,
            &Context {
                format: Format::Ecs,
                ..Context::default()
            },
        )
        .event;
        expected.remove("o365.meta.received");
        let mut got = doc.as_object().unwrap().clone();
        got.remove("o365.meta.received");
        assert_eq!(got, expected);
    }
}

/// Every value of Microsoft's current `AuditLogRecordType` table is its name in `event.code`
/// and `o365.meta.record_type_name`; a value missing from it passes through without a name.
#[test]
fn every_record_type_has_its_name() {
    let table = include_str!("../src/mapping/enums/record-type.tsv");
    let mut n = 0;
    for line in table.lines().skip(1) {
        let (value, name) = line.split_once('\t').unwrap();
        let value: i64 = value.parse().unwrap();
        let rec =
            json!({"CreationTime": "2025-01-01T00:00:00", "RecordType": value, "Operation": "X"});
        let e = map(&rec, Format::Ecs);
        // Elastic's own names win where its table has them (src/mapping/ecs.rs).
        let code = match value {
            12 => "Sway",
            22 => "Yammer",
            44 => "WorkplaceAnalytics",
            _ => name,
        };
        assert_eq!(e["event.code"], code, "{value}");
        assert_eq!(e["o365.meta.record_type_name"], name, "{value}");
        n += 1;
    }
    assert_eq!(n, 257);
    let unknown =
        json!({"CreationTime": "2025-01-01T00:00:00", "RecordType": 999, "Operation": "X"});
    let e = map(&unknown, Format::Ecs);
    assert!(!e.contains_key("event.code"));
    assert_eq!(e["o365.audit.RecordType"], "999");
    let e = map(&unknown, Format::O365);
    assert_eq!(e["o365.audit.RecordType"], 999);
    assert!(!e.contains_key("o365.meta.record_type_name"));
}

/// A RecordType missing from Microsoft's table passes through, is counted per value in
/// `o365_unknown_record_types_total{record_type}` and logged once per value (real binary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_record_types_pass_through_counted_and_logged_once() {
    use support::*;
    const ADMIN_TOKEN: &str = "copilot-test-admin-token";
    let emu = emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        &emu,
        dir.path(),
        &["Audit.General"],
        &format!("format: ecs\nadmin:\n  token: {ADMIN_TOKEN}\n"),
    );
    let mut collector = Collector::spawn(&s);
    wait_webhooks_enabled(&emu, &["Audit.General"]).await;
    let rec = |id: &str, rt: Value| {
        json!({"CreationTime": "2025-05-02T10:00:00", "Id": id, "Operation": "NewThing",
               "RecordType": rt, "Workload": "Future", "UserId": "a@contoso.com"})
    };
    let general = o365_emulator::ContentType::General;
    let blobs = [
        vec![
            rec("u1", json!(999)),
            rec("u2", json!("998")),
            word(),
            rec("u3", json!(999)),
        ],
        vec![rec("u4", json!(999)), rec("u5", json!(6))],
    ];
    for records in blobs {
        emu.publish(TENANT, general, records, None).await.unwrap();
    }
    wait_for(Duration::from_secs(60), "6 events delivered", || async {
        line_count(&s.events) >= 6
    })
    .await;
    let text = std::fs::read_to_string(&s.events).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 6);
    let u1 = events.iter().find(|e| e["event.id"] == "u1").unwrap();
    assert_eq!(u1["o365.audit.RecordType"], "999");
    assert!(u1.get("event.code").is_none());
    assert!(u1.get("o365.meta.record_type_name").is_none());
    let word_event = events
        .iter()
        .find(|e| e["event.code"] == "CopilotInteraction")
        .unwrap();
    assert_eq!(word_event["file.name"], "About Elephants.docx");

    let url = admin_url(&collector.logs(), "/metrics");
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
    // The output can hold the records a moment before the worker's counters moved.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m = scrape().await;
        if m.contains("o365_unknown_record_types_total{record_type=\"999\"} 3") {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "not counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut unknown: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("o365_unknown_record_types_total"))
        .collect();
    unknown.sort();
    assert_eq!(
        unknown,
        [
            "o365_unknown_record_types_total{record_type=\"998\"} 1",
            "o365_unknown_record_types_total{record_type=\"999\"} 3"
        ],
        "{metrics}"
    );
    let logs = collector.logs();
    assert_eq!(
        logs.matches("RecordType 999 is not in").count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.matches("RecordType 998 is not in").count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains("RecordType 6 is not in"));
    collector.terminate(Duration::from_secs(20));
}
