//! Enrichment of `format: ecs` (`user_agent.*`, `source.geo.*`, `source.as.*`, `tenant_name`)
//! against Elastic's expected documents, field by field; database reloads without a restart.
//!
//! The corpus is read at run time (`O365_CORPUS_DIR`, else `../shared/corpus`). The GeoIP test
//! databases are built here (`support/mmdb.rs`) to hold the corpus addresses with the locations
//! and AS numbers Elastic's expected documents give them (Elastic's own test databases are not
//! ours to ship); what is checked is everything after the lookup: which address is looked up,
//! which fields come out, their names, shapes and values. The user-agent side has no such help:
//! it is our parser on the bundled uap-core patterns against Elastic's parser.
//!
//! `cargo test --test enrichment -- --nocapture` prints the table.

#[path = "support/mmdb.rs"]
mod mmdb;
mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mmdb::{Data, Writer};
use o365_collector::mapping::enrich::{Enrichment, EnrichmentConfig};
use o365_collector::mapping::{Context, Format, map_record};
use serde_json::{Map, Value, json};

const ENRICHMENT_PREFIXES: [&str; 3] = ["user_agent.", "source.geo.", "source.as."];

fn corpus() -> PathBuf {
    let dir = std::env::var_os("O365_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    assert!(
        dir.join("elastic-integrations/audit-pipeline-tests")
            .is_dir(),
        "no corpus at {}: set O365_CORPUS_DIR",
        dir.display()
    );
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Nested objects → dotted keys (arrays are values).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// One record and Elastic's document for it, flattened.
struct Case {
    name: String,
    record: Value,
    doc: BTreeMap<String, Value>,
}

/// Elastic Agent pipeline tests: the record is the document's `event.original` when that parses
/// (some inputs predate their expected file), else the input event's `o365audit`.
fn pipeline_cases(corpus: &Path) -> Vec<Case> {
    let dir = corpus.join("elastic-integrations/audit-pipeline-tests");
    let mut cases = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json-expected.json"))
        .collect();
    files.sort();
    for expected_path in files {
        let input_path = PathBuf::from(
            expected_path
                .to_string_lossy()
                .trim_end_matches("-expected.json"),
        );
        let events = read_json(&input_path)["events"].clone();
        let expected = read_json(&expected_path)["expected"].clone();
        let file = input_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (i, doc) in expected.as_array().unwrap().iter().enumerate() {
            let original = doc["event"]["original"]
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .filter(Value::is_object);
            let record = original.unwrap_or_else(|| events[i]["o365audit"].clone());
            let mut flat = BTreeMap::new();
            flatten("", doc, &mut flat);
            cases.push(Case {
                name: format!("{file}[{i}]"),
                record,
                doc: flat,
            });
        }
    }
    cases
}

/// Filebeat module tests: line i of `X.log` ↔ document i of `X.log-expected.json` (flat keys).
fn beats_cases(corpus: &Path) -> Vec<Case> {
    let dir = corpus.join("elastic-beats/o365-audit-test");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut cases = Vec::new();
    for log in logs {
        let expected = read_json(&PathBuf::from(format!("{}-expected.json", log.display())));
        let text = std::fs::read_to_string(&log).unwrap();
        let file = log.file_name().unwrap().to_string_lossy().into_owned();
        let lines = text.lines().filter(|l| !l.trim().is_empty());
        for (i, (line, doc)) in lines.zip(expected.as_array().unwrap()).enumerate() {
            let mut flat = BTreeMap::new();
            flatten("", doc, &mut flat);
            cases.push(Case {
                name: format!("{file}[{i}]"),
                record: serde_json::from_str(line).unwrap(),
                doc: flat,
            });
        }
    }
    cases
}

fn enrichment_keys(doc: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    doc.iter()
        .filter(|(k, _)| ENRICHMENT_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The City and ASN records that reproduce a document's `source.geo.*` / `source.as.*`.
fn geo_records(doc: &BTreeMap<String, Value>) -> (Option<Data>, Option<Data>) {
    let s = |k: &str| doc.get(k).and_then(Value::as_str);
    let f = |k: &str| doc.get(k).and_then(Value::as_f64);
    let mut city = Vec::new();
    if let Some(v) = s("source.geo.continent_name") {
        city.push(("continent".to_owned(), Data::named(v)));
    }
    let mut country = Vec::new();
    if let Some(v) = s("source.geo.country_iso_code") {
        country.push(("iso_code".to_owned(), Data::str(v)));
    }
    if let Some(v) = s("source.geo.country_name") {
        country.push(("names".to_owned(), Data::map([("en", Data::str(v))])));
    }
    if !country.is_empty() {
        city.push(("country".to_owned(), Data::Map(country)));
    }
    let mut region = Vec::new();
    if let Some((_, iso)) = s("source.geo.region_iso_code").and_then(|v| v.split_once('-')) {
        region.push(("iso_code".to_owned(), Data::str(iso)));
    }
    if let Some(v) = s("source.geo.region_name") {
        region.push(("names".to_owned(), Data::map([("en", Data::str(v))])));
    }
    if !region.is_empty() {
        city.push((
            "subdivisions".to_owned(),
            Data::Array(vec![Data::Map(region)]),
        ));
    }
    if let Some(v) = s("source.geo.city_name") {
        city.push(("city".to_owned(), Data::named(v)));
    }
    if let (Some(lat), Some(lon)) = (f("source.geo.location.lat"), f("source.geo.location.lon")) {
        city.push((
            "location".to_owned(),
            Data::map([("latitude", Data::F64(lat)), ("longitude", Data::F64(lon))]),
        ));
    }
    let mut asn = Vec::new();
    if let Some(n) = doc.get("source.as.number").and_then(Value::as_u64) {
        asn.push((
            "autonomous_system_number".to_owned(),
            Data::U32(u32::try_from(n).unwrap()),
        ));
    }
    if let Some(v) = s("source.as.organization.name") {
        asn.push(("autonomous_system_organization".to_owned(), Data::str(v)));
    }
    let some = |v: Vec<(String, Data)>| (!v.is_empty()).then_some(Data::Map(v));
    (some(city), some(asn))
}

/// City and ASN databases holding every address of `cases` that Elastic located.
fn databases_for(cases: &[Case], dir: &Path) -> (PathBuf, PathBuf) {
    let mut by_ip: BTreeMap<IpAddr, (Option<Data>, Option<Data>, String)> = BTreeMap::new();
    for c in cases {
        let Some(ip) = c.doc.get("source.ip").and_then(Value::as_str) else {
            continue;
        };
        let ip: IpAddr = ip.parse().unwrap();
        let (city, asn) = geo_records(&c.doc);
        if let Some((c0, a0, first)) = by_ip.get(&ip) {
            assert!(
                *c0 == city && *a0 == asn,
                "{ip} is located differently in {first} and {}",
                c.name
            );
            continue;
        }
        by_ip.insert(ip, (city, asn, c.name.clone()));
    }
    let mut city_db = Writer::new("GeoLite2-City");
    let mut asn_db = Writer::new("GeoLite2-ASN");
    for (ip, (city, asn, _)) in &by_ip {
        let host = if ip.is_ipv4() { 32 } else { 128 };
        if let Some(c) = city {
            city_db.insert(*ip, host, c);
        }
        if let Some(a) = asn {
            asn_db.insert(*ip, host, a);
        }
    }
    let (city, asn) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    city_db.write_to(&city);
    asn_db.write_to(&asn);
    (city, asn)
}

fn ecs_ctx<'a>(enrichment: Option<&'a Enrichment>) -> Context<'a> {
    Context {
        format: Format::Ecs,
        enrichment,
        ..Context::default()
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[derive(Default)]
struct Tally {
    records: usize,
    keys: usize,
    equal: usize,
    different: usize,
    missing: usize,
    extra: usize,
    /// Records whose `source.ip` differs from Elastic's: a mapping difference (the conformance
    /// test's business), so their geo keys are not compared.
    ip_differs: usize,
}

/// Maps every case with the enrichment and compares its enrichment keys with Elastic's.
fn compare(cases: &[Case], enrichment: &Enrichment) -> (BTreeMap<String, Tally>, Vec<String>) {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in cases {
        let theirs = enrichment_keys(&c.doc);
        let mut ours_flat = BTreeMap::new();
        let event = map_record(&c.record, &ecs_ctx(Some(enrichment))).event;
        flatten("", &Value::Object(event), &mut ours_flat);
        let mut ours = enrichment_keys(&ours_flat);
        if theirs.is_empty() && ours.is_empty() {
            continue;
        }
        let file = c.name.split('[').next().unwrap().to_owned();
        let t = tallies.entry(file).or_default();
        t.records += 1;
        let mut theirs = theirs;
        if ours_flat.get("source.ip") != c.doc.get("source.ip") {
            t.ip_differs += 1;
            let geo = |k: &String| k.starts_with("source.");
            theirs.retain(|k, _| !geo(k));
            ours.retain(|k, _| !geo(k));
        }
        for (k, v) in &theirs {
            t.keys += 1;
            match ours.get(k) {
                Some(o) if same(o, v) => t.equal += 1,
                Some(o) => {
                    t.different += 1;
                    failures.push(format!("{}: {k}: ours {o}, Elastic {v}", c.name));
                }
                None => {
                    t.missing += 1;
                    failures.push(format!("{}: {k}: missing (Elastic {v})", c.name));
                }
            }
        }
        for (k, o) in &ours {
            if !theirs.contains_key(k) {
                t.extra += 1;
                failures.push(format!("{}: {k}: extra ({o})", c.name));
            }
        }
    }
    (tallies, failures)
}

fn print_table(title: &str, tallies: &BTreeMap<String, Tally>) {
    println!("\n{title}");
    println!(
        "{:<40} {:>7} {:>5} {:>5} {:>9} {:>7} {:>5} {:>10}",
        "file", "records", "keys", "equal", "different", "missing", "extra", "ip differs"
    );
    for (file, t) in tallies {
        println!(
            "{file:<40} {:>7} {:>5} {:>5} {:>9} {:>7} {:>5} {:>10}",
            t.records, t.keys, t.equal, t.different, t.missing, t.extra, t.ip_differs
        );
    }
}

#[test]
fn enrichment_matches_elastic_for_every_corpus_record() {
    let corpus = corpus();
    let dir = tempfile::tempdir().unwrap();
    let mut all_failures = Vec::new();
    let mut compared = 0;
    for (title, cases) in [
        (
            "Elastic Agent pipeline tests (elastic-integrations/audit-pipeline-tests)",
            pipeline_cases(&corpus),
        ),
        (
            "Filebeat module tests (elastic-beats/o365-audit-test)",
            beats_cases(&corpus),
        ),
    ] {
        // One pair of databases per source: the two were made with different database versions.
        let sub = dir
            .path()
            .join(title.split(' ').next().unwrap().to_lowercase());
        std::fs::create_dir_all(&sub).unwrap();
        let (city, asn) = databases_for(&cases, &sub);
        let enrichment = Enrichment::new(&EnrichmentConfig {
            user_agent: true,
            geoip_city: Some(city),
            geoip_asn: Some(asn),
            ..EnrichmentConfig::default()
        })
        .unwrap();
        let (tallies, failures) = compare(&cases, &enrichment);
        print_table(title, &tallies);
        compared += tallies.values().map(|t| t.keys).sum::<usize>();
        // bad-ips and modified-properites: our `source.ip` comes from another field than
        // Elastic's (mapping_conformance.rs reports that); nothing else may drift.
        let ip_differs: usize = tallies.values().map(|t| t.ip_differs).sum();
        assert!(
            ip_differs <= 4,
            "{ip_differs} records with another source.ip"
        );
        all_failures.extend(failures);
    }
    assert!(compared > 1000, "only {compared} enrichment keys compared");
    assert!(
        all_failures.is_empty(),
        "{} enrichment keys differ from Elastic's:\n{}",
        all_failures.len(),
        all_failures.join("\n")
    );
}

#[test]
fn without_enrichment_no_enrichment_keys() {
    let corpus = corpus();
    for c in pipeline_cases(&corpus) {
        let mut flat = BTreeMap::new();
        flatten(
            "",
            &Value::Object(map_record(&c.record, &ecs_ctx(None)).event),
            &mut flat,
        );
        // Only user_agent.original, which the record itself carries.
        let keys: Vec<String> = enrichment_keys(&flat)
            .into_keys()
            .filter(|k| k != "user_agent.original")
            .collect();
        assert!(keys.is_empty(), "{}: {keys:?}", c.name);
    }
}

/// Elastic's test configuration maps tenant ids to names (`_conf.tenants`); with the same
/// `tenant_name`, `host.name` and `organization.name` equal Elastic's for that tenant's records,
/// and records of other organisations keep theirs.
#[test]
fn tenant_name_sets_host_and_organization_name_as_elastic() {
    let corpus = corpus();
    let conf: Value = serde_yaml::from_slice(
        &std::fs::read(
            corpus.join("elastic-integrations/audit-pipeline-tests/test-common-config.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    let tenants = conf["fields"]["_conf"]["tenants"]
        .as_object()
        .unwrap()
        .clone();
    assert!(!tenants.is_empty());
    let mut checked = 0;
    for c in pipeline_cases(&corpus) {
        let Some(org) = c.doc.get("organization.id").and_then(Value::as_str) else {
            continue;
        };
        for (tenant_id, name) in &tenants {
            let ctx = Context {
                format: Format::Ecs,
                tenant_id,
                tenant_name: name.as_str(),
                ..Context::default()
            };
            let ev = map_record(&c.record, &ctx).event;
            if org.eq_ignore_ascii_case(tenant_id) {
                for key in ["host.name", "organization.name"] {
                    assert_eq!(ev.get(key), c.doc.get(key), "{}: {key}", c.name);
                }
                checked += 1;
            } else {
                assert_ne!(ev.get("organization.name"), Some(name), "{}", c.name);
                assert_ne!(ev.get("host.name"), Some(name), "{}", c.name);
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} records of a configured tenant"
    );
}

fn located(country: &str, name: &str) -> Data {
    Data::map([
        (
            "country",
            Data::map([
                ("iso_code", Data::str(country)),
                ("names", Data::map([("en", Data::str(name))])),
            ]),
        ),
        (
            "location",
            Data::map([("latitude", Data::F64(1.5)), ("longitude", Data::F64(2.5))]),
        ),
    ])
}

fn city_db(path: &Path, net: &str, country: &str, name: &str) {
    let mut w = Writer::new("GeoLite2-City");
    w.insert(net.parse().unwrap(), 24, &located(country, name));
    w.write_to(path);
}

/// In process: a replaced database file is picked up by the watch loop, a broken replacement is
/// refused and the previous copy keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_database_answers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    city_db(&path, "203.0.113.0", "NO", "Norway");
    let enrichment = Arc::new(
        Enrichment::new(&EnrichmentConfig {
            geoip_city: Some(path.clone()),
            reload_every: Duration::from_millis(50),
            ..EnrichmentConfig::default()
        })
        .unwrap(),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(enrichment.clone().watch(shutdown.clone()));
    let record = json!({"ClientIP": "203.0.113.9:443", "CreationTime": "2024-01-01T00:00:00"});
    let country = |e: &Enrichment| {
        map_record(&record, &ecs_ctx(Some(e))).event["source.geo.country_iso_code"].clone()
    };
    assert_eq!(country(&enrichment), "NO");
    let ev = map_record(&record, &ecs_ctx(Some(&enrichment))).event;
    assert_eq!(ev["source.geo.location"], json!({"lat": 1.5, "lon": 2.5}));
    assert_eq!(ev["source.geo.country_name"], "Norway");

    city_db(&path, "203.0.113.0", "BT", "Bhutan");
    support::wait_for(Duration::from_secs(10), "the new database in use", || {
        let c = country(&enrichment);
        async move { c == "BT" }
    })
    .await;

    // A broken file (a partial download copied in place) is refused; Bhutan stays.
    std::fs::write(&path, b"not a database").unwrap();
    enrichment.reload();
    assert_eq!(country(&enrichment), "BT");
    // A good file after the broken one is taken again.
    city_db(&path, "203.0.113.0", "NO", "Norway");
    support::wait_for(
        Duration::from_secs(10),
        "the repaired database in use",
        || {
            let c = country(&enrichment);
            async move { c == "NO" }
        },
    )
    .await;
    shutdown.cancel();
    watcher.await.unwrap();
}

/// Events from the real binary against the emulator: `format: ecs` with `tenant_name`,
/// user-agent parsing and a City database that is replaced while the collector runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_enriches_and_reloads_the_database_while_running() {
    let emu = support::emulator(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    city_db(&db, "203.0.113.0", "NO", "Norway");
    let extra = format!(
        "format: ecs\ntenant_name: contoso.onmicrosoft.com\nenrichment:\n  user_agent: true\n  geoip_city: {}\n  reload_every: 1s\n",
        db.display()
    );
    let setup = support::setup(&emu, dir.path(), &["Audit.AzureActiveDirectory"], &extra);
    let mut collector = support::Collector::spawn(&setup);
    support::wait_webhooks_enabled(&emu, &["Audit.AzureActiveDirectory"]).await;

    let events = |country: &'static str| {
        let text = std::fs::read_to_string(&setup.events).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Map<String, Value>>(l).ok())
            .filter(|e| {
                e.get("source.geo.country_iso_code").and_then(Value::as_str) == Some(country)
            })
            .collect::<Vec<_>>()
    };
    support::generate(&emu, "Audit.AzureActiveDirectory", 40, 1).await;
    support::wait_for(Duration::from_secs(30), "events located in Norway", || {
        let n = events("NO").len();
        async move { n > 0 }
    })
    .await;
    let e = &events("NO")[0];
    assert_eq!(e["host.name"], "contoso.onmicrosoft.com");
    assert_eq!(e["organization.name"], "contoso.onmicrosoft.com");
    let text = std::fs::read_to_string(&setup.events).unwrap();
    assert!(
        text.lines().any(|l| l.contains("\"user_agent.name\"")),
        "no parsed user agent in the events"
    );

    city_db(&db, "203.0.113.0", "BT", "Bhutan");
    let logs = || collector.logs();
    support::wait_for(Duration::from_secs(15), "the reload logged", || {
        let reloaded = logs().contains("GeoIP database reloaded");
        async move { reloaded }
    })
    .await;
    support::generate(&emu, "Audit.AzureActiveDirectory", 40, 1).await;
    support::wait_for(Duration::from_secs(30), "events located in Bhutan", || {
        let n = events("BT").len();
        async move { n > 0 }
    })
    .await;
    assert!(collector.child.try_wait().unwrap().is_none(), "no restart");
    let status = collector.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", collector.logs());
}

#[test]
fn check_config_reports_enrichment_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let asn = dir.path().join("asn.mmdb");
    let mut w = Writer::new("GeoLite2-ASN");
    w.insert(
        "203.0.113.0".parse().unwrap(),
        24,
        &Data::map([("autonomous_system_number", Data::U32(64500))]),
    );
    w.write_to(&asn);
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"junk").unwrap();
    let yaml = format!(
        "tenant_id: 41463f53-8812-40f4-890f-865bf6e35190\nclient_id: 2d4f5a8c-1111-4222-8333-444455556666\nclient_secret: s\nformat: ecs\ntenant_name: \"\"\nenrichment:\n  user_agent: maybe\n  geoip_city: {}\n  geoip_asn: {}\n  reload_every: 10ms\n",
        asn.display(),
        junk.display()
    );
    let errors = o365_collector::config::Config::parse(&yaml, &|_| None).unwrap_err();
    let text = errors.to_string();
    for expected in [
        "tenant_name: is empty",
        "enrichment.user_agent: is `maybe`, not true or false",
        "enrichment.geoip_city: names a GeoLite2-ASN database, not a City one",
        "enrichment.geoip_asn: names",
        "which is not a MaxMind database",
        "enrichment.reload_every: is shorter than 1s",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // Enrichment without any `format: ecs` tenant is a mistake too.
    let yaml = format!(
        "tenant_id: 41463f53-8812-40f4-890f-865bf6e35190\nclient_id: 2d4f5a8c-1111-4222-8333-444455556666\nclient_secret: s\nenrichment:\n  geoip_asn: {}\n",
        asn.display()
    );
    let text = o365_collector::config::Config::parse(&yaml, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(text.contains("applies to `format: ecs` only"), "{text}");
    let yaml = yaml.replace(
        "enrichment:",
        "format: ecs\ntenant_name: contoso.onmicrosoft.com\nenrichment:",
    );
    let cfg = o365_collector::config::Config::parse(&yaml, &|_| None).unwrap();
    assert_eq!(
        cfg.tenants[0].tenant_name.as_deref(),
        Some("contoso.onmicrosoft.com")
    );
    assert_eq!(cfg.enrichment.geoip_asn.as_deref(), Some(asn.as_path()));
}

/// `o365-collector map` takes the same enrichment as flags; a database it cannot open is exit 2.
#[test]
fn map_command_enriches_with_flags() {
    use o365_collector::mapping::cli::{MapArgs, run_with};
    let record = br#"{"OrganizationId":"41463F53-8812-40f4-890f-865bf6e35190","UserId":"a@contoso.com","UserAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10.14; rv:72.0) Gecko/20100101 Firefox/72.0","ClientIP":"203.0.113.7"}"#;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    city_db(&db, "203.0.113.0", "NO", "Norway");
    let args = MapArgs {
        format: Format::Ecs,
        tenant_id: "41463f53-8812-40f4-890f-865bf6e35190".into(),
        tenant_name: Some("contoso.onmicrosoft.com".into()),
        user_agent: true,
        geoip_city: Some(db),
        ..MapArgs::default()
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&args, &record[..], &mut out, &mut err).unwrap(), 0);
    let ev: Map<String, Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(ev["user_agent.name"], "Firefox");
    assert_eq!(ev["user_agent.version"], "72.0.");
    assert_eq!(ev["source.geo.country_iso_code"], "NO");
    assert_eq!(ev["host.name"], "contoso.onmicrosoft.com");
    assert_eq!(ev["organization.name"], "contoso.onmicrosoft.com");

    let args = MapArgs {
        format: Format::Ecs,
        geoip_asn: Some(dir.path().join("missing.mmdb")),
        ..MapArgs::default()
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&args, &record[..], &mut out, &mut err).unwrap(), 2);
    assert!(String::from_utf8(err).unwrap().contains("missing.mmdb"));
}
