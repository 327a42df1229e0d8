//! Mapping benchmark: mapping + NDJSON encoding as the pipeline does it (`map_record_json` into a
//! `Vec`, plus a newline), single thread, on corpus-shaped records.
//!
//! Records: the sample corpus's real records when it is found (`O365_CORPUS_DIR`, else
//! `../shared/corpus`, else `/work/shared/corpus`), otherwise the committed test fixtures. They are
//! cycled to 100,000 records per run, in batches of 1,000 (a large content blob). Prints, per
//! format: median of 7 runs in records/s by wall clock and by on-CPU time of the thread (`/proc/thread-self/schedstat`, so
//! other load on a shared machine does not count), MB/s of input record JSON and of output
//! NDJSON, batch latency percentiles over all runs, and the process's peak RSS.
//!
//! Plus 10 % Copilot and AI-app interactions (RecordType 261/284/334, shaped as Microsoft's Copilot
//! schema examples: documents, labelled resources, plugins, prompt/response pairs), built here.
//!
//! `cargo bench --bench mapping` (`MAPPING_BENCH_FORMAT=o365|ecs|ecs+enrich|raw` runs one row,
//! `MAPPING_BENCH_RECORDS=n` sets the records per run)
//!
//! `MAPPING_BENCH_DUMP=file` measures nothing: it writes every distinct record's event in every
//! format, by both `map_record_json` and `map_record`, with its issues, to `file`. Comparing the
//! files before and after a change (`cmp`) shows that a speed-up changed no byte of output.
//!
//! The `ecs+enrich` row adds the enrichment: user-agent parsing (cached, as in the collector) and
//! City + ASN lookups in databases built here (`tests/support/mmdb.rs`) that hold every address of
//! the workload. After the table, the cost of one uncached user-agent parse.
//!
//! About a quarter of the instructions were glibc malloc/free (≈150 small allocations per record:
//! every key and value of the output map is its own `String`), so the binary and this benchmark use
//! mimalloc, as the collector does.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use o365_collector::mapping::enrich::user_agent::{BUNDLED_REGEXES, UaParser};
use o365_collector::mapping::enrich::{Enrichment, EnrichmentConfig};
use o365_collector::mapping::{Context, Format, map_record, map_record_json};
use serde_json::Value;

#[path = "../tests/support/mmdb.rs"]
mod mmdb;

const DEFAULT_RECORDS_PER_RUN: usize = 100_000;
const BATCH: usize = 1_000;
const RUNS: usize = 7;

fn corpus_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("O365_CORPUS_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
            PathBuf::from("/work/shared/corpus"),
        ],
    };
    candidates
        .into_iter()
        .find(|p| p.join("elastic-beats/o365-audit-test").is_dir())
}

fn parse_all(text: &str, out: &mut Vec<Value>) {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    while let Some(Ok(v)) = stream.next() {
        match v {
            Value::Array(a) => out.extend(a),
            v => out.push(v),
        }
    }
}

/// `n` Copilot and AI-app interaction records in a few shapes (varied ids, so none repeats).
fn copilot_records(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let (rt, op, host) = [
                (261, "CopilotInteraction", "Word"),
                (261, "CopilotInteraction", "Bing"),
                (334, "TeamCopilotInteraction", "Teams"),
                (284, "AIAppInteraction", "ChatGPT Enterprise"),
            ][i % 4];
            let contexts = match host {
                "Word" => serde_json::json!([{"Id": format!("https://contoso-my.sharepoint.com/personal/u_contoso_com/_layouts/15/Doc.aspx?sourcedoc=%7B{i:08X}-B079-4180-9B1E-B87F4ACA19F7%7D&file=Plan%20{i}.docx&action=default&mobileredirect=true"), "Type": "docx"}]),
                "Teams" => serde_json::json!([{"Id": format!("19:meeting_{i:024x}@thread.v2"), "Type": "TeamsMeeting"}]),
                "Bing" => serde_json::json!([]),
                _ => serde_json::json!([{"Id": "https://chatgpt.com/", "Type": "Web"}]),
            };
            let resources = if host == "Bing" {
                serde_json::json!([{"Action": "Read", "Id": format!("AAAAAEYE2GAACp1Fln{i:016}"), "Name": "Document1.docx",
                    "SensitivityLabelId": "f41ab342-8706-4188-bd11-ebb85995028c",
                    "SiteUrl": "https://contoso.sharepoint.com/teams/Ops/Shared%20Documents/Document1.docx?web=1",
                    "Type": "docx", "listItemUniqueId": format!("AAAAAEYE2GAACp1Fln{i:016}")}])
            } else {
                serde_json::json!([])
            };
            let t = 1_715_187_560_311u64 + i as u64 * 10_000;
            serde_json::json!({
                "CreationTime": "2023-12-13T17:12:36", "Id": format!("99b0a960-13a0-461f-8c5c-{i:012x}"),
                "Operation": op, "OrganizationId": "408e31c8-8f05-410a-9221-84335f0ce512",
                "RecordType": rt, "UserKey": "12d24f71-64c7-49b3-821f-f8884f3f373e", "UserType": 0,
                "Version": 1, "Workload": "Copilot", "ClientIP": format!("198.51.100.{}", i % 250 + 1),
                "ClientRegion": "US", "UserId": format!("user{}@contoso.onmicrosoft.com", i % 50),
                "CopilotEventData": {
                    "AISystemPlugin": if host == "Bing" { serde_json::json!([{"Id": "BingWebSearch", "Name": "BuiltIn"}]) } else { serde_json::json!([]) },
                    "AccessedResources": resources, "AppHost": host, "Contexts": contexts, "MessageIds": [],
                    "Messages": [{"Id": t.to_string(), "isPrompt": true}, {"Id": (t + 703).to_string(), "isPrompt": false}],
                    "ModelTransparencyDetails": if host == "Bing" { serde_json::json!([{"ModelName": "DEEP_LEO"}]) } else { serde_json::json!([]) },
                    "ThreadId": format!("19:lgojcxwbvhJnfU3IhUJW5M-{i:016x}@thread.v2")
                }
            })
        })
        .collect()
}

/// The corpus (or fixtures) plus 10 % Copilot and AI-app interactions.
fn load() -> (String, Vec<Value>) {
    let (source, mut records) = load_corpus();
    let copilot = records.len() / 9;
    records.extend(copilot_records(copilot));
    (
        format!("{source} + {copilot} Copilot/AI-app records"),
        records,
    )
}

fn load_corpus() -> (String, Vec<Value>) {
    let mut records = Vec::new();
    if let Some(dir) = corpus_dir() {
        let beats = dir.join("elastic-beats/o365-audit-test");
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&beats)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for p in logs {
            if let Ok(t) = std::fs::read_to_string(&p) {
                // One record per line; a broken line is skipped, not fatal.
                for line in t.lines() {
                    if let Ok(v) = serde_json::from_str(line) {
                        records.push(v);
                    }
                }
            }
        }
        if let Ok(t) = std::fs::read_to_string(dir.join("plaso/microsoft_audit_log.jsonl")) {
            parse_all(&t, &mut records);
        }
        if !records.is_empty() {
            return (format!("corpus {}", dir.display()), records);
        }
    }
    parse_all(
        include_str!("../tests/fixtures/mapping/team-records.jsonl"),
        &mut records,
    );
    parse_all(
        include_str!("../tests/fixtures/mapping/plaso-microsoft_audit_log.jsonl"),
        &mut records,
    );
    parse_all(
        include_str!("../tests/fixtures/mapping/microsoft-docs-content-blob.json"),
        &mut records,
    );
    ("committed fixtures".into(), records)
}

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Enrichment with City and ASN databases that locate every `source.ip` of `records`, and the
/// distinct user agents seen.
fn enrichment_for(records: &[Value], dir: &Path) -> (Enrichment, Vec<String>) {
    use mmdb::{Data, Writer};
    let mut ips = std::collections::BTreeSet::new();
    let mut agents = std::collections::BTreeSet::new();
    let ctx = Context {
        format: Format::Ecs,
        ..Context::default()
    };
    for r in records {
        let ev = map_record(r, &ctx).event;
        if let Some(ip) = ev.get("source.ip").and_then(Value::as_str) {
            ips.insert(ip.parse::<std::net::IpAddr>().expect("source.ip is an IP"));
        }
        if let Some(ua) = ev.get("user_agent.original").and_then(Value::as_str) {
            agents.insert(ua.to_owned());
        }
    }
    let place = |n: &str| Data::map([("names", Data::map([("en", Data::str(n))]))]);
    let city_record = Data::map([
        ("city", place("London")),
        ("continent", place("Europe")),
        (
            "country",
            Data::map([
                ("iso_code", Data::str("GB")),
                ("names", Data::map([("en", Data::str("United Kingdom"))])),
            ]),
        ),
        (
            "location",
            Data::map([
                ("latitude", Data::F64(51.5142)),
                ("longitude", Data::F64(-0.0931)),
            ]),
        ),
        (
            "subdivisions",
            Data::Array(vec![Data::map([
                ("iso_code", Data::str("ENG")),
                ("names", Data::map([("en", Data::str("England"))])),
            ])]),
        ),
    ]);
    let asn_record = Data::map([
        ("autonomous_system_number", Data::U32(35908)),
        (
            "autonomous_system_organization",
            Data::str("Example Networks"),
        ),
    ]);
    let (mut city, mut asn) = (Writer::new("GeoLite2-City"), Writer::new("GeoLite2-ASN"));
    for ip in &ips {
        let host = if ip.is_ipv4() { 32 } else { 128 };
        city.insert(*ip, host, &city_record);
        asn.insert(*ip, host, &asn_record);
    }
    let (city_path, asn_path) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    city.write_to(&city_path);
    asn.write_to(&asn_path);
    let e = Enrichment::new(&EnrichmentConfig {
        user_agent: true,
        geoip_city: Some(city_path),
        geoip_asn: Some(asn_path),
        ..EnrichmentConfig::default()
    })
    .expect("enrichment loads");
    (e, agents.into_iter().collect())
}

/// The context every row maps with (enrichment and a tenant name for `ecs+enrich`).
fn bench_context(format: Format, enrichment: Option<&Enrichment>) -> Context<'_> {
    Context {
        enrichment,
        tenant_name: enrichment.map(|_| "mytenant.onmicrosoft.com"),
        format,
        tenant_id: "b86ab9d4-fcf1-4b11-8a06-7a8f91b47fbd",
        content_type: "Audit.AzureActiveDirectory",
        content_id: "20200210151313000000000000000000000000000000000000000$20200210151313000000000000000000000000000000000000000$audit_azureactivedirectory$Audit_AzureActiveDirectory$emea0026",
        content_created: Some("2020-02-10T15:20:00.000Z"),
        received: "2020-02-10T15:21:00.000Z",
    }
}

/// `MAPPING_BENCH_DUMP`: each record's event in each format by both mapping paths, and its issues.
fn dump(records: &[Value], enrichment: &Enrichment, path: &Path) {
    use std::io::Write;
    let mut out = Vec::new();
    for (label, format, enrich) in [
        ("o365", Format::O365, None),
        ("ecs", Format::Ecs, None),
        ("ecs+enrich", Format::Ecs, Some(enrichment)),
        ("raw", Format::Raw, None),
    ] {
        let ctx = bench_context(format, enrich);
        for (i, rec) in records.iter().enumerate() {
            write!(out, "{label} {i} json ").expect("in memory");
            let issues = map_record_json(rec, &ctx, &mut out).expect("every value encodes");
            write!(out, "\n{label} {i} issues {issues:?}\n{label} {i} map ").expect("in memory");
            let mapped = map_record(rec, &ctx);
            serde_json::to_writer(&mut out, &mapped.event).expect("every value encodes");
            writeln!(out, "\n{label} {i} map-issues {:?}", mapped.issues).expect("in memory");
        }
    }
    std::fs::write(path, out).expect("dump written");
    println!(
        "{} records × 4 formats written to {}",
        records.len(),
        path.display()
    );
}

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // MAPPING_BENCH_RECORDS=n shortens runs (e.g. under valgrind --tool=callgrind, whose
    // instruction counts do not depend on other load on the machine).
    let records_per_run: usize = std::env::var("MAPPING_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= BATCH)
        .unwrap_or(DEFAULT_RECORDS_PER_RUN);
    let (source, records) = load();
    assert!(!records.is_empty(), "no records to benchmark");
    let workload: Vec<&Value> = records.iter().cycle().take(records_per_run).collect();
    let input_bytes: usize = workload.iter().map(|v| v.to_string().len() + 1).sum();
    println!(
        "mapping benchmark: {} distinct records from {source}, {records_per_run} records/run \
         ({:.1} MB of record JSON), batches of {BATCH}, {RUNS} runs, 1 thread",
        records.len(),
        input_bytes as f64 / 1e6
    );
    println!(
        "{:<12} {:>11} {:>11} {:>9} {:>9} {:>10} {:>10} {:>10} {:>7}",
        "format",
        "rec/s wall",
        "rec/s cpu",
        "in MB/s",
        "out MB/s",
        "p50 batch",
        "p90 batch",
        "p99 batch",
        "issues"
    );
    let mut out = Vec::with_capacity(64 << 20);
    let db_dir = std::env::temp_dir().join(format!("o365-mapping-bench-{}", std::process::id()));
    std::fs::create_dir_all(&db_dir).expect("temporary directory");
    let (enrichment, agents) = enrichment_for(&records, &db_dir);
    if let Some(path) = std::env::var_os("MAPPING_BENCH_DUMP") {
        dump(&records, &enrichment, Path::new(&path));
        let _ = std::fs::remove_dir_all(&db_dir);
        return;
    }
    // MAPPING_BENCH_FORMAT=o365|ecs|ecs+enrich|raw runs one row only (for profiling).
    let only = std::env::var("MAPPING_BENCH_FORMAT").ok();
    for (label, format, enrich) in [
        ("o365", Format::O365, None),
        ("ecs", Format::Ecs, None),
        ("ecs+enrich", Format::Ecs, Some(&enrichment)),
        ("raw", Format::Raw, None),
    ] {
        if only
            .as_deref()
            .is_some_and(|o| !label.eq_ignore_ascii_case(o))
        {
            continue;
        }
        let ctx = bench_context(format, enrich);
        let mut rates = Vec::with_capacity(RUNS);
        let mut cpu_rates = Vec::with_capacity(RUNS);
        let mut out_rates = Vec::with_capacity(RUNS);
        let mut batches = Vec::with_capacity(RUNS * records_per_run / BATCH);
        let mut issues = 0usize;
        for run in 0..=RUNS {
            out.clear();
            let mut wall = Duration::ZERO;
            let mut cpu_ns = 0u64;
            for chunk in workload.chunks(BATCH) {
                let c0 = thread_cpu_ns();
                let t = Instant::now();
                for rec in chunk {
                    match map_record_json(rec, &ctx, &mut out) {
                        Ok(i) => issues += i.len(),
                        Err(e) => panic!("encoding failed: {e}"),
                    }
                    out.push(b'\n');
                }
                let dt = t.elapsed();
                if let (Some(a), Some(b)) = (c0, thread_cpu_ns()) {
                    cpu_ns += b.saturating_sub(a);
                }
                wall += dt;
                if run > 0 {
                    batches.push(dt);
                }
            }
            black_box(&out);
            if run == 0 {
                // Warm-up run: caches, allocator, lazily parsed enum tables.
                issues = 0;
                continue;
            }
            let secs = wall.as_secs_f64();
            rates.push(records_per_run as f64 / secs);
            cpu_rates.push(if cpu_ns > 0 {
                records_per_run as f64 / (cpu_ns as f64 / 1e9)
            } else {
                f64::NAN
            });
            out_rates.push(out.len() as f64 / secs / 1e6);
        }
        rates.sort_by(f64::total_cmp);
        cpu_rates.sort_by(f64::total_cmp);
        out_rates.sort_by(f64::total_cmp);
        batches.sort();
        let median = rates[RUNS / 2];
        println!(
            "{:<12} {:>11.0} {:>11.0} {:>9.1} {:>9.1} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>7}",
            label,
            median,
            cpu_rates[RUNS / 2],
            median * input_bytes as f64 / records_per_run as f64 / 1e6,
            out_rates[RUNS / 2],
            percentile(&batches, 0.50).as_secs_f64() * 1e3,
            percentile(&batches, 0.90).as_secs_f64() * 1e3,
            percentile(&batches, 0.99).as_secs_f64() * 1e3,
            issues / RUNS
        );
    }
    // A user agent not yet in the cache: every distinct one of the workload, parsed afresh.
    let t = Instant::now();
    let parser = UaParser::new(BUNDLED_REGEXES).expect("bundled patterns compile");
    println!(
        "user-agent patterns compiled in {:.0} ms (once, at start-up)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let mut parses = 0usize;
    while t.elapsed() < Duration::from_millis(500) {
        for ua in &agents {
            black_box(parser.parse(ua));
            parses += 1;
        }
    }
    println!(
        "uncached user-agent parse: {:.1} µs each ({} distinct user agents in the workload)",
        t.elapsed().as_secs_f64() * 1e6 / parses.max(1) as f64,
        agents.len()
    );
    let _ = std::fs::remove_dir_all(&db_dir);
    match o365_collector::telemetry::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: not available"),
    }
}
