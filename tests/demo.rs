//! `o365-collector demo` as a user runs it (the real binary): every record delivered exactly once,
//! the summary line with audit and Graph records and rates apart, the next step, and exactly a
//! twentieth of `--records` per Graph feed (message trace rows included).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_prints_audit_and_graph_rates_and_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out_path = dir.path().join("stdout");
    // 2,020 records: 101 per Graph feed, an odd count (message trace: 50 messages of two
    // recipients and one of one).
    let mut child = Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args([
            "demo",
            "--records",
            "2020",
            "--blob-records",
            "500",
            "--timeout",
            "120",
        ])
        .arg("--dir")
        .arg(&demo_dir)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not exit within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    assert!(status.success(), "{status}\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "the summary and the next step:\n{stdout}");
    let summary = lines[0];
    for part in [
        "demo: 2424 of 2424 records delivered exactly once (0 missing, 0 duplicated) in ",
        ": 2020 audit records in ",
        ", 404 Graph records in ",
    ] {
        assert!(summary.contains(part), "{part:?} in {summary}");
    }
    assert_eq!(summary.matches(" records/s)").count(), 2, "{summary}");
    let next = lines[1];
    assert_eq!(next, o365_collector::demo::NEXT_STEP);
    for part in [
        "Running against a real tenant",
        "o365-collector check-config --config config.yaml",
        "o365-collector run --config config.yaml",
    ] {
        assert!(next.contains(part), "{part:?} in {next}");
    }
    // Each Graph feed got exactly a twentieth of --records.
    let events = std::fs::read_to_string(demo_dir.join("events.ndjson")).unwrap();
    let mut by_type: HashMap<String, u64> = HashMap::new();
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ct = v["o365.meta.content_type"]
            .as_str()
            .expect("a content type");
        let key = if ct.starts_with("Graph.") {
            ct
        } else {
            "audit"
        };
        *by_type.entry(key.to_string()).or_default() += 1;
    }
    assert_eq!(by_type.get("audit"), Some(&2020), "{by_type:?}");
    for ct in [
        "Graph.SignIns",
        "Graph.DirectoryAudits",
        "Graph.MessageTrace",
        "Graph.ServiceHealth",
    ] {
        assert_eq!(by_type.get(ct), Some(&101), "{ct}: {by_type:?}");
    }
}
