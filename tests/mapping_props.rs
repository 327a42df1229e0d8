//! Property tests: `map_record` is total. For arbitrary JSON values and for mutated real records
//! (committed fixtures, plus the sample corpus when present) it never panics, its event
//! serialises to valid JSON, every key is `@timestamp`, an `o365.*` key or an ECS field, and
//! `map_record_json` (the encoding path) writes byte for byte what encoding the event writes.
//!
//! Case counts: 15,000 arbitrary values + 10,000 Name/Value-shaped records + 15,000 mutated
//! records = 40,000 cases, each mapped in all three formats (a debug build: 110,000 took 105 s of
//! CI's half hour). `PROPTEST_CASES=N` runs N of each instead.

use std::path::{Path, PathBuf};

use o365_collector::mapping::{Context, Format, map_record, map_record_json};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// ECS top-level field sets the `ecs` format may write.
const ECS_ROOTS: &[&str] = &[
    "event",
    "user",
    "source",
    "client",
    "destination",
    "server",
    "host",
    "organization",
    "related",
    "network",
    "url",
    "file",
    "rule",
    "group",
    "message",
    "user_agent",
    "ecs",
    "process",
    "email",
    "application",
    "session",
    "token",
];

/// `default` cases, or `PROPTEST_CASES` when set (a deeper run by hand).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn check(raw: &Value) -> Result<(), TestCaseError> {
    for format in [Format::O365, Format::Ecs, Format::Raw] {
        let ctx = Context {
            format,
            tenant_id: "t",
            content_type: "Audit.General",
            content_id: "c",
            content_created: Some("2024-01-01T00:00:00.000Z"),
            received: "2024-01-01T00:00:01.000Z",
            ..Context::default()
        };
        let m = map_record(raw, &ctx);
        let text =
            serde_json::to_string(&m.event).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The encoding path writes exactly these bytes and reports the same issues.
        let mut fast = b"x".to_vec();
        let issues = map_record_json(raw, &ctx, &mut fast)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&fast[1..], text.as_bytes());
        prop_assert_eq!(&issues, &m.issues);
        let back: Value =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(back.is_object());
        match (format, raw) {
            (Format::Raw, Value::Object(rec)) => {
                for (k, v) in rec {
                    if !k.starts_with("o365.meta.") {
                        prop_assert_eq!(m.event.get(k), Some(v));
                    }
                }
            }
            _ => {
                for k in m.event.keys() {
                    let root = k.split('.').next().unwrap_or("");
                    prop_assert!(
                        k == "@timestamp" || k.starts_with("o365.") || ECS_ROOTS.contains(&root),
                        "unexpected key {:?}",
                        k
                    );
                    if format == Format::O365 {
                        prop_assert!(
                            k == "@timestamp" || k.starts_with("o365."),
                            "non-o365 key {:?}",
                            k
                        );
                    }
                }
            }
        }
        for issue in &m.issues {
            prop_assert!(!issue.problem.is_empty());
        }
    }
    Ok(())
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ._:@\\[\\]-]{0,16}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
        // Address-like text for the ClientIP parser.
        "\\[?[0-9a-fA-F:.]{0,24}\\]?(:[0-9]{0,6})?",
        // Date-like text for the CreationTime parser.
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,9})?(Z|[+-][0-9]{2}:[0-9]{2})?",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner.clone()), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            // {Name, Value} and {Name, NewValue, OldValue} arrays, possibly mixed or broken.
            prop::collection::vec((arb_string(), inner.clone(), any::<u8>()), 0..5).prop_map(
                |els| {
                    Value::Array(
                        els.into_iter()
                            .map(|(name, v, shape)| {
                                let mut o = Map::new();
                                o.insert("Name".into(), Value::String(name));
                                match shape % 4 {
                                    0 | 1 => {
                                        o.insert("Value".into(), v);
                                    }
                                    2 => {
                                        o.insert("NewValue".into(), v.clone());
                                        o.insert("OldValue".into(), v);
                                    }
                                    _ => {
                                        o.insert("Other".into(), v);
                                    }
                                }
                                Value::Object(o)
                            })
                            .collect(),
                    )
                }
            ),
        ]
    })
}

const INTERESTING_FIELDS: &[&str] = &[
    "ClientIP",
    "ClientIPAddress",
    "ActorIpAddress",
    "CreationTime",
    "RecordType",
    "UserType",
    "Operation",
    "UserId",
    "ObjectId",
    "ResultStatus",
    "Workload",
    "Id",
    "OrganizationId",
    "ExtendedProperties",
    "ModifiedProperties",
    "DeviceProperties",
    "Parameters",
    "PolicyDetails",
    "SharePointMetaData",
    "ExchangeMetaData",
    "ExceptionInfo",
    "Members",
    "Target",
    "UserAgent",
    "MailboxOwnerUPN",
    "SourceFileName",
    "TeamName",
    "a.b",
    "",
];

fn corpus_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("O365_CORPUS_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
            PathBuf::from("/work/shared/corpus"),
        ],
    };
    candidates.into_iter().find(|p| p.is_dir())
}

/// Real records: committed fixtures always, the corpus's Beats records when present.
fn real_records() -> Vec<Value> {
    let mut out = Vec::new();
    let mut add = |text: &str| {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        while let Some(Ok(v)) = stream.next() {
            match v {
                Value::Array(a) => out.extend(a),
                v => out.push(v),
            }
        }
    };
    add(include_str!("fixtures/mapping/team-records.jsonl"));
    add(include_str!(
        "fixtures/mapping/plaso-microsoft_audit_log.jsonl"
    ));
    add(include_str!(
        "fixtures/mapping/microsoft-docs-content-blob.json"
    ));
    add(include_str!(
        "fixtures/mapping/microsoft-docs-copilot-1.json"
    ));
    add(include_str!(
        "fixtures/mapping/microsoft-docs-AipDiscover-2.json"
    ));
    if let Some(dir) = corpus_dir()
        && let Ok(entries) = std::fs::read_dir(dir.join("elastic-beats/o365-audit-test"))
    {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        for p in paths {
            if let Ok(t) = std::fs::read_to_string(&p) {
                add(&t);
            }
        }
    }
    out.sort_by_key(Value::to_string);
    out.dedup();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, Value),
    Remove(usize),
    SetInteresting(usize, Value),
    Nest(usize),
}

fn apply(rec: &mut Value, m: &Mutation) {
    let Value::Object(o) = rec else { return };
    let keys: Vec<String> = o.keys().cloned().collect();
    let pick = |i: usize| keys.get(i % keys.len().max(1)).cloned();
    match m {
        Mutation::Set(i, v) => {
            if let Some(k) = pick(*i) {
                o.insert(k, v.clone());
            }
        }
        Mutation::Remove(i) => {
            if let Some(k) = pick(*i) {
                o.remove(&k);
            }
        }
        Mutation::SetInteresting(i, v) => {
            o.insert(
                INTERESTING_FIELDS[i % INTERESTING_FIELDS.len()].to_owned(),
                v.clone(),
            );
        }
        Mutation::Nest(i) => {
            if let Some(k) = pick(*i)
                && let Some(v) = o.remove(&k)
            {
                o.insert(k, Value::Array(vec![v]));
            }
        }
    }
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), arb_json()).prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), arb_json()).prop_map(|(i, v)| Mutation::SetInteresting(i, v)),
        (any::<usize>(), arb_string())
            .prop_map(|(i, s)| Mutation::SetInteresting(i, Value::String(s))),
        any::<usize>().prop_map(Mutation::Nest),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(15_000), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        check(&v)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(10_000), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_records_never_panic(fields in prop::collection::vec((0..INTERESTING_FIELDS.len(), arb_json()), 0..8)) {
        let rec: Map<String, Value> = fields.into_iter().map(|(i, v)| (INTERESTING_FIELDS[i].to_owned(), v)).collect();
        check(&Value::Object(rec))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(15_000), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn mutated_real_records_never_panic(pick in any::<usize>(), mutations in prop::collection::vec(arb_mutation(), 1..4)) {
        thread_local! { static RECORDS: Vec<Value> = real_records(); }
        let mut rec = RECORDS.with(|r| r[pick % r.len()].clone());
        for m in &mutations {
            apply(&mut rec, m);
        }
        check(&rec)?;
    }
}

#[test]
fn real_records_are_loaded() {
    let records = real_records();
    assert!(records.len() >= 10, "only {} real records", records.len());
    // Every real record unchanged, too (the cases above mutate them).
    for rec in &records {
        check(rec).unwrap_or_else(|e| panic!("{e}: {rec}"));
    }
}
