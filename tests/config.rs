//! Configuration: documented defaults, `${ENV}` and `*_file` secrets, every problem at once with key and
//! fix, secrets never echoed, multi-tenant inheritance, cloud authorities, and the annotated example.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use o365_collector::config::{Config, ConfigErrors, Credential, Problem, check_config_with};
use o365_collector::mapping::Format;
use o365_collector::output::OutputConfig;

const TENANT: &str = "66666666-7777-8888-9999-000000000000";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cr3t~Value.From_Azure-Portal";

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// One tenant; example hosts (`example.com`) stand in for real ones, so placeholders are allowed
/// (the tests of the placeholder check itself use [`strict`]).
fn minimal() -> String {
    format!("{}allow_placeholders: true\n", strict())
}

/// One tenant, placeholders refused (the default).
fn strict() -> String {
    format!("tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret: {SECRET}\n")
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, &no_env)
}

fn problems(text: &str) -> Vec<Problem> {
    match Config::parse(text, &no_env) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(e) => e.0,
    }
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A self-signed certificate and its key as PEM.
fn cert_pair() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

#[test]
fn documented_defaults() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.tenants.len(), 1);
    let t = &c.tenants[0];
    assert_eq!(t.tenant_id, TENANT);
    assert_eq!(t.client_id, CLIENT);
    assert!(matches!(&t.credential, Credential::Secret(s) if s.expose() == SECRET));
    assert_eq!(t.resource, "https://manage.office.com");
    assert_eq!(t.authority, "https://login.microsoftonline.com");
    assert_eq!(t.publisher_id, TENANT);
    assert_eq!(
        t.content_types,
        [
            "Audit.AzureActiveDirectory",
            "Audit.Exchange",
            "Audit.SharePoint",
            "Audit.General"
        ]
    );
    assert_eq!(t.encoding, encoding_rs::UTF_8);
    assert_eq!(t.format, Format::O365);
    assert_eq!(t.output, "stdout");
    assert!(matches!(
        c.outputs.get("stdout"),
        Some(OutputConfig::Stdout)
    ));
    assert_eq!(c.outputs.len(), 1);
    assert_eq!(
        c.last_value_storage,
        PathBuf::from("./var/last_value_storage")
    );
    assert!(c.webhook.is_none(), "no webhook → pull mode");
    assert_eq!(c.listen.public.to_string(), "0.0.0.0:8443");
    assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9090");
    assert!(c.tls.is_none());
    assert!(c.admin.token.is_none());
    assert_eq!(c.pull.interval, Duration::from_secs(60));
    assert_eq!(c.pull.reconcile_every, Duration::from_secs(15 * 60));
    assert!(c.outbound.ca_file.is_none());
    assert!(c.outbound.proxy.is_none());
    assert_eq!(c.pipeline.workers, 4);
    assert_eq!(c.pipeline.lease, Duration::from_secs(5 * 60));
    assert_eq!(c.pipeline.max_attempts, 10);
    assert_eq!(c.pipeline.queue_high_water, 10_000);
}

#[test]
fn webhook_and_file_output_defaults() {
    let text = format!(
        "{}webhook: {{address: 'https://collector.example.com/o365/webhook', auth_id: abcdefgh12}}\n\
         outputs:\n  siem: {{type: file, path: ./var/events.ndjson}}\n",
        minimal()
    );
    let c = parse(&text).unwrap();
    let w = c.webhook.as_ref().unwrap();
    assert_eq!(w.address, "https://collector.example.com/o365/webhook");
    assert_eq!(w.path, "/o365/webhook");
    assert_eq!(w.max_body_bytes, 1024 * 1024);
    assert_eq!(w.auth_id.expose(), "abcdefgh12");
    // The only defined output is the default one.
    assert_eq!(c.tenants[0].output, "siem");
    match c.outputs.get("siem") {
        Some(OutputConfig::File(f)) => {
            assert_eq!(f.path, PathBuf::from("./var/events.ndjson"));
            assert_eq!(f.dedup_window_bytes, 64 * 1024 * 1024);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!c.outputs.contains_key("stdout"));

    // Root address → path "/".
    let text = format!(
        "{}webhook: {{address: 'https://hook.example.com', auth_id: abcdefgh12}}\n",
        minimal()
    );
    assert_eq!(parse(&text).unwrap().webhook.unwrap().path, "/");
}

#[test]
fn values_are_read_as_written() {
    let text = format!(
        "{}content_type: DLP.All Audit.General DLP.All\nencoding: windows-1252\nformat: ECS\n\
         pull: {{interval: 500ms, reconcile_every: 1h30m}}\npipeline: {{workers: 16, lease: 90s, max_attempts: 3, queue_high_water: 500, batch_records: 250, batch_bytes: 1MiB}}\n\
         webhook: {{address: 'https://h.example.com/x', auth_id: abcdefgh12, path: /proxied/x, max_body_bytes: 2MiB}}\n\
         listen: {{public: '[::]:443', admin: '127.0.0.1:0'}}\nlast_value_storage: /var/lib/o365\n",
        minimal()
    );
    let c = parse(&text).unwrap();
    let t = &c.tenants[0];
    assert_eq!(t.content_types, ["DLP.All", "Audit.General"]);
    assert_eq!(t.encoding, encoding_rs::WINDOWS_1252);
    assert_eq!(t.format, Format::Ecs);
    assert_eq!(c.pull.interval, Duration::from_millis(500));
    assert_eq!(c.pull.reconcile_every, Duration::from_secs(5400));
    assert_eq!(c.pipeline.workers, 16);
    assert_eq!(c.pipeline.lease, Duration::from_secs(90));
    assert_eq!(c.pipeline.max_attempts, 3);
    assert_eq!(c.pipeline.queue_high_water, 500);
    assert_eq!(c.pipeline.batch_records, 250);
    assert_eq!(c.pipeline.batch_bytes, 1 << 20);
    let w = c.webhook.unwrap();
    assert_eq!(w.path, "/proxied/x");
    assert_eq!(w.max_body_bytes, 2 << 20);
    assert_eq!(c.listen.public.to_string(), "[::]:443");
    assert_eq!(c.last_value_storage, PathBuf::from("/var/lib/o365"));
    // A list is accepted for content_type too.
    let text = format!("{}content_type: [Audit.Exchange, DLP.All]\n", minimal());
    assert_eq!(
        parse(&text).unwrap().tenants[0].content_types,
        ["Audit.Exchange", "DLP.All"]
    );
}

#[test]
fn listener_limits_have_defaults_and_are_checked() {
    let hook = "webhook: {address: 'https://h.example.com/x', auth_id: abcdefgh12";
    let c = parse(&format!("{}{hook}}}\n", minimal())).unwrap();
    assert_eq!(c.listen.max_connections, 2048);
    assert_eq!(c.listen.header_timeout, Duration::from_secs(10));
    assert_eq!(c.listen.idle_timeout, Duration::from_secs(60));
    let w = c.webhook.unwrap();
    assert_eq!(w.body_timeout, Duration::from_secs(10));
    assert_eq!(w.max_inflight_bytes, 16 << 20);

    let c = parse(&format!(
        "{}{hook}, body_timeout: 3s, max_inflight_bytes: 4MiB}}\n\
         listen: {{max_connections: 500, header_timeout: 2s, idle_timeout: 30s}}\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.listen.max_connections, 500);
    assert_eq!(c.listen.header_timeout, Duration::from_secs(2));
    assert_eq!(c.listen.idle_timeout, Duration::from_secs(30));
    let w = c.webhook.unwrap();
    assert_eq!(w.body_timeout, Duration::from_secs(3));
    assert_eq!(w.max_inflight_bytes, 4 << 20);

    let errs = problems(&format!(
        "{}{hook}, body_timeout: 0s, max_body_bytes: 2MiB, max_inflight_bytes: 1MiB}}\n\
         listen: {{max_connections: 0, header_timeout: 0s, idle_timeout: 0s, max_conections: 5}}\n",
        minimal()
    ));
    assert_eq!(
        keys(&errs),
        [
            "webhook.body_timeout",
            "webhook.max_inflight_bytes",
            "listen.max_connections",
            "listen.header_timeout",
            "listen.idle_timeout",
            "listen.max_conections",
        ],
        "{errs:?}"
    );
}

#[test]
fn env_expansion() {
    let text = format!(
        "tenant_id: ${{TID}}\nclient_id: {CLIENT}\nclient_secret: ${{SECRET}}\n\
         pipeline: {{workers: '${{WORKERS}}'}}\n\
         outputs: {{f: {{type: file, path: './var/$${{literal}}-${{SUFFIX}}.ndjson'}}}}\n"
    );
    let env = env_of(&[
        ("TID", TENANT),
        ("SECRET", SECRET),
        ("WORKERS", "8"),
        ("SUFFIX", "x"),
    ]);
    let c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.tenants[0].tenant_id, TENANT);
    assert!(matches!(&c.tenants[0].credential, Credential::Secret(s) if s.expose() == SECRET));
    assert_eq!(c.pipeline.workers, 8);
    match c.outputs.get("f") {
        Some(OutputConfig::File(f)) => {
            assert_eq!(f.path, PathBuf::from("./var/${literal}-x.ndjson"))
        }
        other => panic!("unexpected {other:?}"),
    }

    // Unset variables: one problem each, naming the key and the variable, and nothing else cascades.
    let errs = Config::parse(&text, &env_of(&[("TID", TENANT), ("WORKERS", "8")])).unwrap_err();
    assert_eq!(keys(&errs.0), ["client_secret", "outputs.f.path"]);
    assert!(errs.0[0].problem.contains("SECRET"), "{}", errs.0[0]);
    assert!(errs.0[0].fix.contains("SECRET"));
    assert!(errs.0[1].problem.contains("SUFFIX"));
}

#[test]
fn secrets_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", &format!("{SECRET}\n"));
    let auth = write(dir.path(), "auth", "auth-id-from-file\r\n");
    let token = write(dir.path(), "token", "admin-token-0123456789");
    let (cert_pem, key_pem) = cert_pair();
    let cert = write(dir.path(), "app.pem", &cert_pem);
    let key = write(dir.path(), "app.key", &key_pem);
    let password = write(dir.path(), "pw", "hunter22\n");
    let text = format!(
        "tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret_file: {}\n\
         webhook: {{address: 'https://collector.contoso.com/hook', auth_id_file: {}}}\n\
         admin: {{token_file: {}}}\n\
         tenants:\n  - tenant_id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n    client_id: {CLIENT}\n\
         \x20   client_certificate: {{cert: {}, key: {}, password_file: {}}}\n",
        secret.display(),
        auth.display(),
        token.display(),
        cert.display(),
        key.display(),
        password.display()
    );
    let c = parse(&text).unwrap();
    assert!(matches!(&c.tenants[0].credential, Credential::Secret(s) if s.expose() == SECRET));
    assert_eq!(c.webhook.unwrap().auth_id.expose(), "auth-id-from-file");
    assert_eq!(
        c.admin.token.as_ref().unwrap().expose(),
        "admin-token-0123456789"
    );
    match &c.tenants[1].credential {
        Credential::Certificate {
            cert: c_path,
            key: k_path,
            password: Some(pw),
        } => {
            assert_eq!(c_path, &cert);
            assert_eq!(k_path, &key);
            assert_eq!(pw.expose(), "hunter22");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Missing files are problems naming the key; an empty file is one too.
    let empty = write(dir.path(), "empty", "\n");
    let missing = dir.path().join("nope");
    let text = format!(
        "tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret_file: {}\n\
         webhook: {{address: 'https://collector.contoso.com/hook', auth_id_file: {}}}\n",
        missing.display(),
        empty.display()
    );
    let p = problems(&text);
    assert_eq!(keys(&p), ["client_secret_file", "webhook.auth_id_file"]);
    assert!(p[0].problem.contains("cannot be read"), "{}", p[0]);
    assert!(p[1].problem.contains("empty"), "{}", p[1]);
}

#[test]
fn every_problem_at_once_in_file_order() {
    let text = "\
tenant_id: contoso.onmicrosoft.com
client_id: 11111111-2222-3333-4444-555555555555
client_secret: abc
content_type: Audit.Exchange Audit.Teams
encoding: klingon
pull:
  interval: 60
outputs:
  siem: {type: amqp}
";
    let p = problems(text);
    assert_eq!(
        keys(&p),
        [
            "tenant_id",
            "content_type",
            "encoding",
            "pull.interval",
            "outputs.siem.type"
        ],
        "{p:#?}"
    );
    for problem in &p {
        assert!(!problem.problem.is_empty() && !problem.fix.is_empty());
    }
    assert!(p[0].problem.contains("domain name"));
    assert!(p[1].problem.contains("Audit.Teams"));
    assert!(p[2].problem.contains("klingon"));
    assert!(p[3].fix.contains("60s"));
    assert!(p[4].fix.contains("file"));
}

#[test]
fn unknown_keys_are_problems_with_their_path() {
    let text = format!(
        "{}client_secert: x\nwebhook:\n  adress: https://h.example.com/\n  auth_id: abcdefgh12\n\
         tenants:\n  - tenant_id: {TENANT}\n    colour: blue\n",
        minimal()
    );
    let p = problems(&text);
    let unknown: Vec<&Problem> = p
        .iter()
        .filter(|p| p.problem == "is not a known key")
        .collect();
    assert_eq!(
        keys(&unknown.iter().map(|p| (*p).clone()).collect::<Vec<_>>()),
        ["client_secert", "webhook.adress", "tenants[0].colour"]
    );
    assert!(unknown[0].fix.contains("did you mean `client_secret`"));
    assert!(unknown[1].fix.contains("did you mean `address`"));
    // The misspelt address also leaves webhook.address missing, reported after the typo.
    assert!(p.iter().any(|p| p.key == "webhook.address"));
}

/// What the typed sections catch, each by its full key and with the rest of the file still
/// checked: misspelt keys inside outputs (with the key that was meant), and values of the wrong
/// type inside the fourth tenant entry.
#[test]
fn typed_sections_report_misspelt_output_keys_and_wrong_types_in_tenants() {
    let entry = |i: u8| {
        format!(
            "  - {{tenant_id: aaaaaaaa-bbbb-cccc-dddd-00000000000{i}, client_id: {CLIENT}, client_secret: {SECRET}}}\n"
        )
    };
    let text = format!(
        "{}output: siem\noutputs:\n  siem:\n    type: kafka\n    brokers: kafka-1:9092\n    compresion: gzip\n\
         \x20 es: {{type: http, url: 'https://es.example.com:9200', formt: elasticsearch}}\n\
         tenants:\n{}{}{}\
         \x20 - tenant_id: aaaaaaaa-bbbb-cccc-dddd-000000000003\n\
         \x20   client_id: {CLIENT}\n\
         \x20   client_secret: {SECRET}\n\
         \x20   requests_per_minute: [100, 200]\n\
         \x20   tenant_name: {{name: contoso}}\n\
         \x20   graph_backfill: 30\n",
        minimal(),
        entry(0),
        entry(1),
        entry(2)
    );
    let p = problems(&text);
    assert_eq!(
        keys(&p),
        [
            "outputs.siem.compresion",
            "outputs.es.formt",
            "tenants[3].requests_per_minute",
            "tenants[3].tenant_name",
            "tenants[3].graph_backfill",
        ],
        "{p:#?}"
    );
    assert_eq!(p[0].problem, "is not a known key");
    assert!(p[0].fix.contains("did you mean `compression`"), "{}", p[0]);
    assert!(p[1].fix.contains("did you mean `format`"), "{}", p[1]);
    assert!(
        p[2].problem.contains("a list") && p[2].problem.contains("whole number"),
        "{}",
        p[2]
    );
    assert!(
        p[3].problem.contains("a mapping") && p[3].problem.contains("text"),
        "{}",
        p[3]
    );
    assert!(p[4].fix.contains("30s"), "{}", p[4]);
    // Fixed, the same file is valid, and the fourth tenant has its values.
    let fixed = text
        .replace("compresion", "compression")
        .replace("formt", "format")
        .replace("[100, 200]", "100")
        .replace("{name: contoso}", "contoso.onmicrosoft.com")
        .replace("graph_backfill: 30", "graph_backfill: 30d");
    let c = parse(&fixed).unwrap();
    assert_eq!(c.tenants.len(), 5);
    assert_eq!(c.tenants[4].request_budget.per_minute, 100);
    assert_eq!(
        c.tenants[4].tenant_name.as_deref(),
        Some("contoso.onmicrosoft.com")
    );
    // check-config's report names the tenant beside its id.
    assert!(
        c.summary().contains(" (contoso.onmicrosoft.com): "),
        "{}",
        c.summary()
    );
}

#[test]
fn guids_are_required() {
    let text = "tenant_id: '{66666666-7777-8888-9999-000000000000}'\nclient_id: myclientid\nclient_secret: x\n";
    let p = problems(text);
    assert_eq!(keys(&p), ["tenant_id", "client_id"]);
    assert!(p[0].fix.contains("Directory (tenant) ID"));
    assert!(p[0].fix.contains("AF20013"));
    assert!(p[1].fix.contains("Application (client) ID"));
    assert!(!p[1].problem.contains("myclientid"), "ids are not echoed");
    // Upper case GUIDs are accepted and normalised.
    let text = format!(
        "tenant_id: {}\nclient_id: {CLIENT}\nclient_secret: {SECRET}\n",
        TENANT.to_uppercase()
    );
    assert_eq!(parse(&text).unwrap().tenants[0].tenant_id, TENANT);
}

#[test]
fn request_budget_defaults_inherits_and_is_checked() {
    use o365_collector::mgmt_api::throttle::RequestBudgetConfig;
    let budget = |per_minute, burst| RequestBudgetConfig { per_minute, burst };
    let c = parse(&minimal()).unwrap();
    assert_eq!(
        c.tenants[0].request_budget,
        budget(1800, 100),
        "default unchanged"
    );
    // The top level sets every tenant's budget; an entry may set its own; a burst not given
    // follows the rate (never above it).
    let other = "99999999-8888-4777-8666-555555555555";
    let c = parse(&format!(
        "{}requests_per_minute: 6000\nrequest_burst: 300\ntenants:\n  - tenant_id: {other}\n    client_id: {CLIENT}\n    client_secret: x\n    requests_per_minute: 120\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.tenants[0].request_budget, budget(6000, 300));
    assert_eq!(c.tenants[1].request_budget, budget(120, 120));
    let c = parse(&format!("{}requests_per_minute: 50\n", minimal())).unwrap();
    assert_eq!(c.tenants[0].request_budget, budget(50, 50));

    let p = problems(&format!(
        "{}requests_per_minute: 0\nrequest_burst: 0\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["requests_per_minute", "request_burst"]);
    assert!(p[0].fix.contains("1800"), "{}", p[0]);
    let p = problems(&format!(
        "{}requests_per_minute: 100\nrequest_burst: 101\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["request_burst"]);
    let p = problems(&format!("{}requests_per_minute: many\n", minimal()));
    assert_eq!(keys(&p), ["requests_per_minute"]);
}

#[test]
fn content_types_are_checked() {
    let p = problems(&format!(
        "{}content_type: audit.exchange Audit.Everything\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["content_type", "content_type"]);
    assert!(p[0].fix.contains("Audit.Exchange"), "case hint: {}", p[0]);
    assert!(p[1].fix.contains("DLP.All"));
    let p = problems(&format!("{}content_type: ''\n", minimal()));
    assert!(p[0].problem.contains("no content type"));
}

#[test]
fn encodings_are_whatwg_labels() {
    for (label, expected) in [
        ("latin1", encoding_rs::WINDOWS_1252),
        ("UTF8", encoding_rs::UTF_8),
        ("shift_jis", encoding_rs::SHIFT_JIS),
        ("utf-16le", encoding_rs::UTF_16LE),
    ] {
        let c = parse(&format!("{}encoding: {label}\n", minimal())).unwrap();
        assert_eq!(c.tenants[0].encoding, expected, "{label}");
    }
    for label in ["utf-9", "iso-2022-kr"] {
        let p = problems(&format!("{}encoding: {label}\n", minimal()));
        assert_eq!(keys(&p), ["encoding"], "{label}");
        assert!(p[0].problem.contains(label));
    }
}

#[test]
fn secrets_never_appear_in_problems() {
    let leaked = [
        "66666666-0000-0000-0000-123456789abc", // a secret ID pasted as the secret
        "short1",                               // too short auth id
        "has space 123",                        // not header-safe
        "Sup3r~Secret.Value_pasted_in_client_id",
        "proxyuser:proxypass",
        "pw-inline-secret",
    ];
    let text = format!(
        "tenant_id: {TENANT}\nclient_id: '{}'\nclient_secret: {}\n\
         webhook: {{address: 'https://h.example.com/x', auth_id: {}}}\n\
         admin: {{token: '{}'}}\n\
         outbound: {{proxy: 'socks5://{}@proxy:1080'}}\n\
         tenants:\n  - tenant_id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n    client_id: {CLIENT}\n\
         \x20   client_secret: x\n    client_certificate: {{cert: /nonexistent.pem, key: /nonexistent.key, password: {}}}\n",
        leaked[3], leaked[0], leaked[1], leaked[2], leaked[4], leaked[5]
    );
    let errs = parse(&text).unwrap_err();
    let rendered = errs.to_string();
    assert!(errs.0.len() >= 5, "{rendered}");
    for secret in leaked {
        assert!(
            !rendered.contains(secret),
            "{secret} leaked in:\n{rendered}"
        );
    }
    // The secret-ID mistake gets its own explanation.
    assert!(rendered.contains("client_secret: looks like the secret's ID"));
}

#[test]
fn tenants_inherit_top_level_defaults() {
    let text = format!(
        "resource: https://manage-gcc.office.com\ncontent_type: Audit.Exchange\noutput: siem\n\
         encoding: latin1\nformat: raw\n\
         outputs:\n  siem: {{type: file, path: ./a.ndjson}}\n  other: {{type: file, path: ./b.ndjson}}\n\
         tenants:\n\
         \x20 - {{tenant_id: {TENANT}, client_id: {CLIENT}, client_secret: {SECRET}}}\n\
         \x20 - tenant_id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n\
         \x20   client_id: {CLIENT}\n\
         \x20   client_secret: {SECRET}\n\
         \x20   resource: https://manage.office365.us\n\
         \x20   content_type: DLP.All\n\
         \x20   output: other\n\
         \x20   encoding: utf-8\n\
         \x20   format: ecs\n\
         \x20   publisher_id: bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.tenants.len(), 2, "no top-level tenant without tenant_id");
    let a = &c.tenants[0];
    assert_eq!(a.resource, "https://manage-gcc.office.com");
    assert_eq!(a.authority, "https://login.microsoftonline.com");
    assert_eq!(a.content_types, ["Audit.Exchange"]);
    assert_eq!(a.output, "siem");
    assert_eq!(a.encoding, encoding_rs::WINDOWS_1252);
    assert_eq!(a.format, Format::Raw);
    assert_eq!(a.publisher_id, TENANT);
    let b = &c.tenants[1];
    assert_eq!(b.resource, "https://manage.office365.us");
    assert_eq!(b.authority, "https://login.microsoftonline.us");
    assert_eq!(b.content_types, ["DLP.All"]);
    assert_eq!(b.output, "other");
    assert_eq!(b.encoding, encoding_rs::UTF_8);
    assert_eq!(b.format, Format::Ecs);
    assert_eq!(b.publisher_id, "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee");

    // A top-level tenant plus entries; explicit publisher_id and authority are inherited.
    let text = format!(
        "{}publisher_id: cccccccc-bbbb-cccc-dddd-eeeeeeeeeeee\nauthority: https://login.example.com/\n\
         tenants:\n  - {{tenant_id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, client_id: {CLIENT}, client_secret: {SECRET}}}\n",
        minimal()
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.tenants.len(), 2);
    for t in &c.tenants {
        assert_eq!(t.publisher_id, "cccccccc-bbbb-cccc-dddd-eeeeeeeeeeee");
        assert_eq!(t.authority, "https://login.example.com");
    }
    assert_eq!(c.tenants[0].tenant_id, TENANT);
}

#[test]
fn multi_tenant_app_shares_client_id_and_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = cert_pair();
    let cert = write(dir.path(), "c.pem", &cert_pem);
    let key = write(dir.path(), "c.key", &key_pem);
    let text = format!(
        "client_id: {CLIENT}\nclient_secret: {SECRET}\ntenants:\n\
         \x20 - tenant_id: {TENANT}\n\
         \x20 - tenant_id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n\
         \x20   client_id: bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee\n\
         \x20   client_certificate: {{cert: {}, key: {}}}\n",
        cert.display(),
        key.display()
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.tenants.len(),
        2,
        "the top level is not a tenant without tenant_id"
    );
    assert_eq!(c.tenants[0].client_id, CLIENT);
    assert!(matches!(&c.tenants[0].credential, Credential::Secret(s) if s.expose() == SECRET));
    assert_eq!(
        c.tenants[1].client_id,
        "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"
    );
    assert!(matches!(
        &c.tenants[1].credential,
        Credential::Certificate { .. }
    ));
    // Without entries, the shared keys alone are not a tenant.
    let p = problems(&format!("client_id: {CLIENT}\nclient_secret: {SECRET}\n"));
    assert_eq!(keys(&p), ["tenant_id"]);
    // With a top-level tenant, entries need their own app and credential.
    let p = problems(&format!(
        "{}tenants:\n  - tenant_id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n",
        minimal()
    ));
    assert_eq!(
        keys(&p),
        ["tenants[0].client_id", "tenants[0].client_secret"]
    );
}

#[test]
fn authority_is_derived_for_every_cloud() {
    for (resource, resource_norm, authority) in [
        (
            "https://manage.office.com",
            "https://manage.office.com",
            "https://login.microsoftonline.com",
        ),
        (
            "https://manage-gcc.office.com/",
            "https://manage-gcc.office.com",
            "https://login.microsoftonline.com",
        ),
        (
            "https://MANAGE.office365.us",
            "https://manage.office365.us",
            "https://login.microsoftonline.us",
        ),
        (
            "https://manage.protection.apps.mil:443",
            "https://manage.protection.apps.mil",
            "https://login.microsoftonline.us",
        ),
        (
            "https://127.0.0.1:8444",
            "https://127.0.0.1:8444",
            "https://127.0.0.1:8444",
        ),
        (
            "https://emulator:8444/",
            "https://emulator:8444",
            "https://emulator:8444",
        ),
    ] {
        let c = parse(&format!("{}resource: {resource}\n", minimal())).unwrap();
        assert_eq!(c.tenants[0].resource, resource_norm, "{resource}");
        assert_eq!(c.tenants[0].authority, authority, "{resource}");
    }
    // An explicit authority wins.
    let c = parse(&format!(
        "{}resource: https://manage.office365.us\nauthority: https://login.example.com\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.tenants[0].authority, "https://login.example.com");
    // http, paths and queries are refused.
    for bad in [
        "http://manage.office.com",
        "https://manage.office.com/api/v1.0",
        "https://manage.office.com/?x=1",
        "manage.office.com",
    ] {
        let p = problems(&format!("{}resource: '{bad}'\n", minimal()));
        assert_eq!(keys(&p), ["resource"], "{bad}");
        assert!(p[0].fix.contains("manage-gcc.office.com"));
    }
}

#[test]
fn pull_mode_without_webhook() {
    let c = parse(&format!("{}webhook:\npull: {{interval: 30s}}\n", minimal())).unwrap();
    assert!(c.webhook.is_none());
    assert!(!c.is_push());
    assert_eq!(c.pull.interval, Duration::from_secs(30));
    // A webhook section without address is a mistake, not pull mode.
    let p = problems(&format!("{}webhook: {{auth_id: abcdefgh12}}\n", minimal()));
    assert_eq!(keys(&p), ["webhook.address"]);
}

#[test]
fn webhook_rules() {
    let base = minimal();
    let p = problems(&format!(
        "{base}webhook: {{address: 'http://h.example.com/x', auth_id: abcdefgh12}}\n"
    ));
    assert_eq!(keys(&p), ["webhook.address"]);
    assert!(p[0].problem.contains("https"));
    let p = problems(&format!(
        "{base}webhook: {{address: 'https://h.example.com/x'}}\n"
    ));
    assert_eq!(keys(&p), ["webhook.auth_id"]);
    assert!(p[0].fix.contains("Webhook-AuthID"));
    let p = problems(&format!(
        "{base}webhook: {{address: 'https://h.example.com/x', auth_id: short, path: nope}}\n"
    ));
    assert_eq!(keys(&p), ["webhook.auth_id", "webhook.path"]);
    assert!(p[0].problem.contains("8 characters"));
}

#[test]
fn credentials_exactly_one() {
    let p = problems(&format!("tenant_id: {TENANT}\nclient_id: {CLIENT}\n"));
    assert_eq!(keys(&p), ["client_secret"]);
    assert!(p[0].fix.contains("client_certificate"));
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "s", SECRET);
    let p = problems(&format!(
        "{}client_secret_file: {}\n",
        minimal(),
        f.display()
    ));
    assert_eq!(keys(&p), ["client_secret_file"]);
    assert!(p[0].problem.contains("together with client_secret"));
    // Certificate files are checked: a swapped cert and key are both reported.
    let (cert_pem, key_pem) = cert_pair();
    let cert = write(dir.path(), "c.pem", &cert_pem);
    let key = write(dir.path(), "c.key", &key_pem);
    let p = problems(&format!(
        "tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_certificate: {{cert: {}, key: {}}}\n",
        key.display(),
        cert.display()
    ));
    assert_eq!(
        keys(&p),
        ["client_certificate.cert", "client_certificate.key"]
    );
    // PKCS#12 needs no separate key.
    let p12 = write(dir.path(), "c.pfx", "binary");
    let c = parse(&format!(
        "tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_certificate: {{cert: {}, password: pw}}\n",
        p12.display()
    ))
    .unwrap();
    assert!(
        matches!(&c.tenants[0].credential, Credential::Certificate { cert, key, .. } if cert == &p12 && key == &p12)
    );
}

#[test]
fn tenant_level_problems() {
    // No tenant at all.
    let p = problems("encoding: utf-8\n");
    assert_eq!(keys(&p), ["tenant_id"]);
    assert!(p[0].fix.contains("tenants"));
    // Duplicates, missing keys in entries, an unknown output name listing the known ones.
    let text = format!(
        "{}outputs: {{siem: {{type: stdout}}}}\ntenants:\n\
         \x20 - {{tenant_id: '{}', client_id: {CLIENT}, client_secret: {SECRET}, output: siem}}\n\
         \x20 - {{client_id: {CLIENT}, client_secret: {SECRET}, output: nowhere}}\n",
        minimal(),
        TENANT.to_uppercase()
    );
    let p = problems(&text);
    assert_eq!(
        keys(&p),
        // A missing key is reported at the end of its entry, after the entry's other keys.
        [
            "tenants[0].tenant_id",
            "tenants[1].output",
            "tenants[1].tenant_id"
        ],
        "{p:#?}"
    );
    assert!(p[0].problem.contains("already configured at tenant_id"));
    assert!(p[1].fix.contains("siem") && p[1].fix.contains("stdout"));
    // Several outputs and none chosen.
    let p = problems(&format!(
        "{}outputs: {{a: {{type: stdout}}, b: {{type: stdout}}}}\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["output"]);
    assert!(p[0].fix.contains("a, b"));
}

#[test]
fn listeners_tls_admin_outbound() {
    let base = minimal();
    let p = problems(&format!(
        "{base}listen: {{public: '0.0.0.0:9090', admin: '127.0.0.1:9090'}}\n"
    ));
    assert_eq!(keys(&p), ["listen.admin"]);
    let p = problems(&format!("{base}listen: {{public: 'localhost:80'}}\n"));
    assert_eq!(keys(&p), ["listen.public"]);
    let p = problems(&format!("{base}listen: {{admin: '0.0.0.0:9090'}}\n"));
    assert_eq!(keys(&p), ["admin.token"]);
    let p = problems(&format!("{base}admin: {{token: tooshort}}\n"));
    assert_eq!(keys(&p), ["admin.token"]);
    let p = problems(&format!("{base}tls: {{cert: /nonexistent/cert.pem}}\n"));
    assert_eq!(keys(&p), ["tls.cert", "tls.key"]);
    let p = problems(&format!(
        "{base}outbound: {{ca_file: /nonexistent/ca.pem}}\n"
    ));
    assert_eq!(keys(&p), ["outbound.ca_file"]);

    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = cert_pair();
    let cert = write(dir.path(), "s.pem", &cert_pem);
    let key = write(dir.path(), "s.key", &key_pem);
    let c = parse(&format!(
        "{base}tls: {{cert: {}, key: {}}}\noutbound: {{ca_file: {}, proxy: 'http://u:p@proxy:3128'}}\n",
        cert.display(),
        key.display(),
        cert.display()
    ))
    .unwrap();
    assert_eq!(c.tls.unwrap().key, key);
    assert_eq!(c.outbound.ca_file.unwrap(), cert);
    assert_eq!(c.outbound.proxy.unwrap(), "http://u:p@proxy:3128");
}

#[test]
fn shapes_and_syntax() {
    let p = problems("tenant_id: [1, 2]\n");
    assert_eq!(p[0].key, "tenant_id");
    assert!(p[0].problem.contains("a list"));
    let p = problems("tenant_id: x\n  bad indent: [\n");
    assert_eq!(keys(&p), ["(file)"]);
    assert!(p[0].problem.contains("YAML"));
    let p = problems("tenant_id: a\ntenant_id: b\n");
    assert_eq!(keys(&p), ["(file)"]);
    assert!(p[0].problem.contains("duplicate") && p[0].problem.contains("line"));
    let p = problems("- a\n- b\n");
    assert_eq!(keys(&p), ["(file)"]);
    assert!(p[0].problem.contains("not a mapping"));
    let p = problems(&format!(
        "{}pipeline: {{workers: 0, lease: 10ms, max_attempts: -1, queue_high_water: 0, batch_records: 0, batch_bytes: 100}}\n",
        minimal()
    ));
    assert_eq!(
        keys(&p),
        [
            "pipeline.workers",
            "pipeline.lease",
            "pipeline.max_attempts",
            "pipeline.queue_high_water",
            "pipeline.batch_records",
            "pipeline.batch_bytes"
        ]
    );
    let c = parse(&minimal()).unwrap();
    assert_eq!(
        (c.pipeline.batch_records, c.pipeline.batch_bytes),
        (1000, 4 << 20),
        "defaults"
    );
    let p = problems(&format!(
        "{}pull: {{reconcile_every: 15 minutes}}\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["pull.reconcile_every"]);
    let p = problems(&format!("{}format: json\n", minimal()));
    assert!(p[0].fix.contains("o365") && p[0].fix.contains("ecs") && p[0].fix.contains("raw"));
    let p = problems(&format!(
        "{}outputs: {{f: {{type: stdout, path: /tmp/x}}}}\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["outputs.f.path"]);
}

/// The annotated example at the repository root, with its `certs/` files generated into a temporary
/// directory (they are produced by the dev certificate generator, not committed).
#[test]
fn example_config_yaml_validates() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = cert_pair();
    for name in ["server.pem", "ca.pem", "tenant-b.pem"] {
        write(dir.path(), name, &cert_pem);
    }
    for name in ["server.key", "tenant-b.key"] {
        write(dir.path(), name, &key_pem);
    }
    let text = text.replace("certs/", &format!("{}/", dir.path().display()));
    let env = env_of(&[
        ("O365_CLIENT_SECRET", SECRET),
        ("O365_WEBHOOK_AUTH_ID", "0123456789abcdef"),
        ("O365_ADMIN_TOKEN", "0123456789abcdef0123"),
        ("ES_PASSWORD", "es-pass"),
        ("SPLUNK_HEC_TOKEN", "hec-token"),
        ("KAFKA_PASSWORD", "kafka-pass"),
    ]);
    // Its hosts are examples: refused as they are, each at its key, and let through for the test.
    let refused = Config::parse(&text, &env).unwrap_err();
    let refused_keys = keys(&refused.0);
    for key in [
        "webhook.address",
        "outbound.proxy",
        "outputs.syslog-siem.address",
        "outputs.elastic.url",
        "outputs.splunk.url",
        "outputs.kafka.brokers",
    ] {
        assert!(refused_keys.contains(&key), "{key} not refused:\n{refused}");
    }
    assert!(
        refused
            .0
            .iter()
            .all(|p| p.problem.contains("reserved for examples")),
        "{refused}"
    );
    let text = format!("{text}\nallow_placeholders: true   # its hosts are examples\n");
    let c = match Config::parse(&text, &env) {
        Ok(c) => c,
        Err(e) => panic!("config.yaml does not validate:\n{e}"),
    };
    assert_eq!(c.tenants.len(), 2);
    assert!(c.is_push());
    assert_eq!(c.tenants[1].authority, "https://login.microsoftonline.us");
    assert!(c.outputs.contains_key("siem") && c.outputs.contains_key("console"));
    assert!(matches!(
        c.outputs.get("syslog-siem"),
        Some(OutputConfig::Syslog(_))
    ));
    assert!(matches!(
        c.outputs.get("elastic"),
        Some(OutputConfig::Http(_))
    ));
    assert!(matches!(
        c.outputs.get("splunk"),
        Some(OutputConfig::Http(_))
    ));

    // Every key of the example has a comment on its line or just above it.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || !trimmed.contains(':') {
            continue;
        }
        let commented = line.contains(" #")
            || (i > 0 && lines[i - 1].trim_start().starts_with('#'))
            || trimmed.starts_with("- ")
            || trimmed.ends_with(':');
        assert!(
            commented,
            "config.yaml line {} has no comment: {line}",
            i + 1
        );
    }
    // Without the environment, each variable is named.
    let errs = Config::parse(&text, &no_env).unwrap_err();
    let rendered = errs.to_string();
    for var in [
        "O365_CLIENT_SECRET",
        "O365_WEBHOOK_AUTH_ID",
        "O365_ADMIN_TOKEN",
    ] {
        assert!(rendered.contains(var), "{rendered}");
    }
}

#[test]
fn check_config_reports() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.yaml",
        &format!("{}content_type: Audit.General\n", minimal()),
    );
    let (report, code) = check_config_with(&good, &no_env);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("OK"));
    assert!(report.contains("tenants: 1"));
    assert!(report.contains("Audit.General"));
    assert!(report.contains("mode: pull"));
    assert!(
        report.contains("listener limits: 2048 connections ("),
        "{report}"
    );
    assert!(report.contains("outputs: stdout"));
    assert!(!report.contains(SECRET));

    let bad = write(
        dir.path(),
        "bad.yaml",
        "tenant_id: nope\nclient_id: nope\nclient_secret: x\nfoo: 1\n",
    );
    let (report, code) = check_config_with(&bad, &no_env);
    assert_eq!(code, 2);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 4, "{report}");
    assert!(lines[0].starts_with("tenant_id: is not a GUID"), "{report}");
    assert!(lines[0].contains(" — fix: "));
    assert!(lines[1].starts_with("client_id: "));
    assert!(lines[2].starts_with("foo: is not a known key"));
    assert!(lines[3].ends_with("3 problems"));

    let (report, code) = check_config_with(&dir.path().join("missing.yaml"), &no_env);
    assert_eq!(code, 2);
    assert!(report.starts_with("(file): cannot read"));
}

/// A store directory on a read-only filesystem: `check-config` reports it with key and fix, and
/// `run` stops with the error printed once.
#[test]
fn the_store_directory_must_take_writes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_ro) = support::Tmpfs::mount(&dir.path().join("ro"), "size=1m,ro") else {
        return;
    };
    let config = write(
        dir.path(),
        "ro.yaml",
        &format!(
            "{}last_value_storage: {}/ro/store\n",
            minimal(),
            dir.path().display()
        ),
    );
    let (report, code) = check_config_with(&config, &no_env);
    assert_eq!(code, 2, "{report}");
    let first = report.lines().next().unwrap();
    assert!(
        first.starts_with("last_value_storage: ") && first.contains("Read-only file system"),
        "{report}"
    );
    assert!(first.contains(" — fix: "), "{report}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("Read-only file system").count(),
        1,
        "the store error is printed once: {stderr}"
    );
    assert!(stderr.contains("last_value_storage"), "{stderr}");
}

mod properties {
    use super::*;
    use o365_collector::core::{format_duration, parse_duration};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn durations_round_trip(millis in 0u64..10_000_000_000) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        /// Arbitrary text never panics the parser, and a problem never quotes a value given to
        /// client_secret.
        #[test]
        fn parse_never_panics(text in "[a-z_:{}\\[\\]$ \n-]{0,80}", secret in "[A-Za-z0-9]{12,20}") {
            let _ = Config::parse(&text, &no_env);
            let with_secret = format!("{text}\nclient_secret: {secret}\n");
            if let Err(e) = Config::parse(&with_secret, &no_env) {
                prop_assert!(!e.to_string().contains(&secret));
            }
        }

        #[test]
        fn text_without_dollar_is_unchanged(value in "[A-Za-z0-9 ._/-]{1,40}") {
            let text = format!("{}outputs: {{f: {{type: file, path: 'x{value}'}}}}\n", minimal());
            let c = Config::parse(&text, &no_env).unwrap();
            match c.outputs.get("f") {
                Some(OutputConfig::File(f)) => prop_assert_eq!(f.path.to_str().unwrap(), format!("x{value}")),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}

#[test]
fn trusted_proxies_and_tls_reload() {
    let base = minimal();
    let c = parse(&base).unwrap();
    assert!(
        c.listen.trusted_proxies.is_empty(),
        "no proxy is trusted by default"
    );
    let c = parse(&format!(
        "{base}listen: {{trusted_proxies: [127.0.0.1, '10.0.0.0/8', 'fd00::/8']}}\n"
    ))
    .unwrap();
    let nets: Vec<String> = c
        .listen
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
    assert!(c.listen.trusted_proxies[1].contains("10.9.8.7".parse().unwrap()));
    let c = parse(&format!(
        "{base}listen: {{trusted_proxies: '127.0.0.1 ::1'}}\n"
    ))
    .unwrap();
    assert_eq!(c.listen.trusted_proxies.len(), 2);

    let p = problems(&format!(
        "{base}listen: {{trusted_proxies: [127.0.0.1, proxy.local, '10.0.0.0/40']}}\n"
    ));
    assert_eq!(
        keys(&p),
        ["listen.trusted_proxies", "listen.trusted_proxies"]
    );
    assert!(p[0].problem.contains("proxy.local"), "{}", p[0]);
    assert!(p[1].problem.contains("/40"), "{}", p[1]);

    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = cert_pair();
    let cert = write(dir.path(), "s.pem", &cert_pem);
    let key = write(dir.path(), "s.key", &key_pem);
    let tls = |extra: &str| {
        format!(
            "{base}tls: {{cert: {}, key: {}{extra}}}\n",
            cert.display(),
            key.display()
        )
    };
    let c = parse(&tls("")).unwrap();
    assert_eq!(c.tls.unwrap().reload_every, Duration::from_secs(10));
    let c = parse(&tls(", reload_every: 2m")).unwrap();
    assert_eq!(c.tls.unwrap().reload_every, Duration::from_secs(120));
    let p = problems(&tls(", reload_every: 0s"));
    assert_eq!(keys(&p), ["tls.reload_every"]);
    let p = problems(&tls(", reload_every: soon"));
    assert_eq!(keys(&p), ["tls.reload_every"]);
}

#[test]
fn syslog_output_defaults_and_options() {
    use o365_collector::output::SyslogTransport;
    let c = parse(&format!(
        "{}outputs: {{s: {{type: syslog, address: 'siem.example.com:514'}}}}\n",
        minimal()
    ))
    .unwrap();
    let Some(OutputConfig::Syslog(s)) = c.outputs.get("s") else {
        panic!("{:?}", c.outputs)
    };
    assert_eq!(s.transport, SyslogTransport::Tcp);
    assert_eq!(s.app_name, "o365-collector");
    assert_eq!((s.facility, s.severity), (16, 6));
    assert_eq!(s.sd_id.as_deref(), Some("o365@32473"));
    assert_eq!(s.msgid, None);
    assert_eq!(s.timeout, Duration::from_secs(30));

    let c = parse(&format!(
        "{}outputs:\n  s:\n    type: syslog\n    address: '[::1]:6514'\n    transport: udp\n    facility: 3\n    severity: err\n    msgid: M\n    app_name: app\n    hostname: h1\n    structured_data: false\n    timeout: 2s\n",
        minimal()
    ))
    .unwrap();
    let Some(OutputConfig::Syslog(s)) = c.outputs.get("s") else {
        panic!()
    };
    assert_eq!(s.transport, SyslogTransport::Udp);
    assert_eq!((s.facility, s.severity), (3, 3));
    assert_eq!(
        (
            s.msgid.as_deref(),
            s.app_name.as_str(),
            s.hostname.as_deref()
        ),
        (Some("M"), "app", Some("h1"))
    );
    assert_eq!(s.sd_id, None);
    assert_eq!(s.timeout, Duration::from_secs(2));
}

#[test]
fn syslog_output_every_problem_at_once() {
    let p = problems(&format!(
        "{}outputs:\n  s:\n    type: syslog\n    transport: sctp\n    ca_file: /nonexistent.pem\n    facility: local9\n    severity: 8\n    app_name: 'has space'\n    msgid: '{}'\n    sd_id: 'a=b'\n    timeout: 0s\n    bogus: 1\n",
        minimal(),
        "x".repeat(33)
    ));
    assert_eq!(
        keys(&p),
        [
            "outputs.s.transport",
            "outputs.s.ca_file",
            "outputs.s.ca_file",
            "outputs.s.facility",
            "outputs.s.severity",
            "outputs.s.app_name",
            "outputs.s.msgid",
            "outputs.s.sd_id",
            "outputs.s.timeout",
            "outputs.s.bogus",
            "outputs.s.address",
        ],
        "{p:#?}"
    );
    let p = problems(&format!(
        "{}outputs: {{s: {{type: syslog, address: nohostport}}}}\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["outputs.s.address"]);
}

#[test]
fn http_output_defaults_auth_and_problems() {
    use o365_collector::output::{HttpAuth, HttpFormat};
    let c = parse(&format!(
        "{}outputs: {{h: {{type: http, url: 'http://127.0.0.1:9200', format: elasticsearch, username: u, password: '{SECRET}'}}}}\n",
        minimal()
    ))
    .unwrap();
    let Some(OutputConfig::Http(h)) = c.outputs.get("h") else {
        panic!()
    };
    assert_eq!(h.format, HttpFormat::Elasticsearch);
    assert_eq!(h.max_events, 500);
    assert_eq!(h.linger, Duration::ZERO, "blobs go out at once by default");
    assert!(!h.gzip);
    assert!(
        matches!(&h.auth, HttpAuth::Basic { username, password } if username == "u" && password.expose() == SECRET)
    );
    assert!(!format!("{c:?}").contains(SECRET));
    assert!(!c.summary().contains(SECRET));

    // Splunk needs its token; credentials in the URL are refused without being echoed.
    let p = problems(&format!(
        "{}outputs:\n  h:\n    type: http\n    format: splunk_hec\n    url: 'https://u:{SECRET}@splunk.example.com'\n    gzip: maybe\n    max_events: 0\n    linger: 1h\n    dead_letter_path: ./x\n",
        minimal()
    ));
    assert_eq!(
        keys(&p),
        [
            "outputs.h.url",
            "outputs.h.gzip",
            "outputs.h.max_events",
            "outputs.h.linger",
            "outputs.h.dead_letter_path",
            "outputs.h.token",
        ],
        "{p:#?}"
    );
    assert!(!ConfigErrors(p).to_string().contains(SECRET));

    let p = problems(&format!(
        "{}outputs:\n  h:\n    type: http\n    url: 'ftp://x'\n    username: u\n    token: '{SECRET}'\n    client_cert: /nonexistent.pem\n    format: xml\n",
        minimal()
    ));
    let k = keys(&p);
    assert!(
        k.contains(&"outputs.h.format") && k.contains(&"outputs.h.url"),
        "{p:#?}"
    );
    assert!(
        k.contains(&"outputs.h.token") && k.contains(&"outputs.h.client_cert"),
        "{p:#?}"
    );
    assert!(k.contains(&"outputs.h.client_key"), "{p:#?}");
    assert!(!ConfigErrors(p).to_string().contains(SECRET));
    let p = problems(&format!("{}outputs: {{h: {{type: http}}}}\n", minimal()));
    assert_eq!(keys(&p), ["outputs.h.url"]);
    let p = problems(&format!("{}outputs: {{h: {{type: kafka2}}}}\n", minimal()));
    assert!(p[0].fix.contains("syslog") && p[0].fix.contains("http"));
}

#[test]
fn kafka_output_defaults_and_problems() {
    use o365_collector::output::{KafkaCompression, KafkaKey, SaslMechanism};
    let c = parse(&format!(
        "{}outputs: {{k: {{type: kafka, brokers: [a:9092, 'b:9093']}}}}\n",
        minimal()
    ))
    .unwrap();
    let Some(OutputConfig::Kafka(k)) = c.outputs.get("k") else {
        panic!()
    };
    assert_eq!(k.brokers, ["a:9092", "b:9093"]);
    assert_eq!(k.topic.as_str(), "o365-{content_type}");
    assert_eq!(k.key, KafkaKey::Id);
    assert_eq!(k.compression, KafkaCompression::None);
    assert!(k.sasl.is_none());

    let c = parse(&format!(
        "{}outputs: {{k: {{type: kafka, brokers: 'a:1', compression: snappy, key: none, sasl_mechanism: PLAIN, username: u, password: '{SECRET}'}}}}\n",
        minimal()
    ))
    .unwrap();
    let Some(OutputConfig::Kafka(k)) = c.outputs.get("k") else {
        panic!()
    };
    assert_eq!(
        (k.compression, k.key),
        (KafkaCompression::Snappy, KafkaKey::None)
    );
    let sasl = k.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::Plain);
    assert_eq!(sasl.password.expose(), SECRET);
    assert!(!format!("{c:?}").contains(SECRET));

    let p = problems(&format!(
        "{}outputs:\n  k:\n    type: kafka\n    topic: 'bad topic/{{content_type}}'\n    compression: lz4\n    key: random\n    password: '{SECRET}'\n",
        minimal()
    ));
    assert_eq!(
        keys(&p),
        [
            "outputs.k.topic",
            "outputs.k.compression",
            "outputs.k.key",
            "outputs.k.brokers",
            "outputs.k.sasl_mechanism",
            "outputs.k.username",
        ],
        "{p:#?}"
    );
    assert!(!ConfigErrors(p).to_string().contains(SECRET));
    let p = problems(&format!(
        "{}outputs: {{k: {{type: kafka, brokers: 'nohost'}}}}\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["outputs.k.brokers"]);
}

#[test]
fn non_text_secrets_are_reported_by_key_without_their_value() {
    let text = format!(
        "{}admin:\n  token: 98765432109876543210\nwebhook:\n  address: https://collector.example.com/hook\n  auth_id: 1234567890123456\npipeline:\n  workers: 99999999999999999999999999999999999999999\n  lease: forever\n",
        minimal()
    );
    let p = problems(&text);
    let all = format!("{p:?}");
    assert_eq!(
        keys(&p),
        [
            "admin.token",
            "webhook.auth_id",
            "pipeline.workers",
            "pipeline.lease"
        ],
        "{all}"
    );
    assert!(p[0].problem.contains("not text"), "{all}");
    assert!(p[1].problem.contains("a number"), "{all}");
    assert!(p[0].fix.contains("quote"), "{all}");
    // Where text is expected, a huge integer is reported as such (no tag was written).
    let p = problems(&format!("{}output: 98765432109876543210\n", minimal()));
    assert_eq!(keys(&p), ["output"]);
    assert!(
        p[0].problem.contains("too large") && !p[0].fix.contains("tag"),
        "{p:?}"
    );
    for value in ["98765432109876543210", "1234567890123456"] {
        assert!(
            !all.contains(value),
            "a secret's value in the problems: {all}"
        );
    }
}

#[test]
fn graph_feeds_default_off_derive_their_host_and_refuse_message_trace_outside_global() {
    use o365_collector::graph::GraphFeed;
    let cfg = parse(&minimal()).unwrap();
    assert!(cfg.tenants[0].graph.feeds.is_empty());
    assert_eq!(cfg.tenants[0].graph.host, "https://graph.microsoft.com");
    assert_eq!(cfg.tenants[0].graph.backfill, Duration::from_secs(86400));

    let cfg = parse(&format!(
        "{}graph_feeds: sign_ins message_trace\ngraph_backfill: 30d\ntenants:\n  - tenant_id: {TENANT2}\n    client_id: {CLIENT}\n    client_secret: x\n    resource: https://manage.office365.us\n    graph_feeds: directory_audits\n",
        minimal(),
        TENANT2 = "77777777-7777-8888-9999-000000000000"
    ))
    .unwrap();
    assert_eq!(
        cfg.tenants[0].graph.feeds,
        vec![GraphFeed::SignIns, GraphFeed::MessageTrace]
    );
    assert_eq!(
        cfg.tenants[0].graph.backfill,
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(cfg.tenants[1].graph.host, "https://graph.microsoft.us");
    assert_eq!(cfg.tenants[1].authority, "https://login.microsoftonline.us");
    assert_eq!(cfg.tenants[1].graph.feeds, vec![GraphFeed::DirectoryAudits]);
    assert!(cfg.summary().contains("graph: sign_ins message_trace"));

    // Message trace where Microsoft does not offer it, and an unknown feed: clear problems.
    let p = problems(&format!(
        "{}resource: https://manage.protection.apps.mil\ngraph_feeds: message_trace signins\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["graph_feeds", "graph_feeds"], "{p:?}");
    assert!(
        p.iter()
            .any(|p| p.problem.contains("`signins` is not a Graph feed"))
    );
    assert!(p.iter().any(|p| p.problem.contains("global cloud only")));
    // An explicit Graph host wins; a path is refused.
    let cfg = parse(&format!(
        "{}graph_host: https://graph.example:8443\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(cfg.tenants[0].graph.host, "https://graph.example:8443");
    let p = problems(&format!(
        "{}graph_host: https://graph.example/v1.0\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["graph_host"]);
}

mod store {
    use super::*;
    use o365_collector::store::StoreConfig;

    const PG_PASSWORD: &str = "db-Pa55word-9d2e";

    fn pg(extra: &str) -> String {
        format!(
            "{}store:\n  type: postgres\n  url: postgres://o365:{PG_PASSWORD}@db.example:5432/o365\n{extra}",
            minimal()
        )
    }

    #[test]
    fn embedded_is_the_default_and_postgres_takes_its_settings() {
        assert!(matches!(
            parse(&minimal()).unwrap().store,
            StoreConfig::Embedded
        ));
        assert!(matches!(
            parse(&format!("{}store: embedded\n", minimal()))
                .unwrap()
                .store,
            StoreConfig::Embedded
        ));
        let cfg = parse(&pg(
            "  pool_size: 3\n  sslmode: verify-full\n  tenant_lease: 45s\n",
        ))
        .unwrap();
        let StoreConfig::Postgres(p) = &cfg.store else {
            panic!("postgres expected");
        };
        assert_eq!(p.pool_size, 3);
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.tenant_lease, Duration::from_secs(45));
        assert!(!p.allow_file_output);
        // The summary names the database, never the password.
        let summary = cfg.summary();
        assert!(
            summary.contains("store: postgres db.example:5432/o365 (pool 3)"),
            "{summary}"
        );
        assert!(!summary.contains(PG_PASSWORD), "{summary}");
        assert!(
            !format!("{cfg:?}").contains(PG_PASSWORD),
            "Debug shows the password"
        );
    }

    #[test]
    fn the_url_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "db-url",
            &format!("postgres://o365:{PG_PASSWORD}@db:5432/o365\n"),
        );
        let text = format!(
            "{}store:\n  type: postgres\n  url_file: {}\n",
            minimal(),
            file.display()
        );
        let StoreConfig::Postgres(p) = parse(&text).unwrap().store else {
            panic!("postgres expected");
        };
        assert_eq!(
            p.url.expose(),
            format!("postgres://o365:{PG_PASSWORD}@db:5432/o365")
        );
    }

    #[test]
    fn bad_store_settings_are_reported_without_the_password() {
        let found = problems(&format!(
            "{}store:\n  type: postgres\n  url: mysql://u:{PG_PASSWORD}@db/x\n  sslmode: maybe\n  pool_size: 0\n",
            minimal()
        ));
        assert_eq!(
            keys(&found),
            ["store.url", "store.sslmode", "store.pool_size"]
        );
        let text = format!("{found:?}");
        assert!(!text.contains(PG_PASSWORD), "{text}");
        assert_eq!(
            keys(&problems(&format!(
                "{}store:\n  type: postgres\n",
                minimal()
            ))),
            ["store"]
        );
        assert_eq!(
            keys(&problems(&format!("{}store: redis\n", minimal()))),
            ["store"]
        );
        assert_eq!(
            keys(&problems(&format!(
                "{}store:\n  type: embedded\n  pool_size: 2\n",
                minimal()
            ))),
            ["store.pool_size"]
        );
    }

    /// Each replica would write its own file, where duplicates across replicas cannot be found:
    /// refused with the reason, unless explicitly allowed.
    #[test]
    fn a_file_output_with_replicas_is_refused_unless_allowed() {
        let file = "output: archive\noutputs:\n  archive:\n    type: file\n    path: /var/log/o365.ndjson\n";
        let found = problems(&format!("{}{file}", pg("")));
        assert_eq!(keys(&found), ["outputs.archive"]);
        assert!(
            found[0].problem.contains("several replicas"),
            "{:?}",
            found[0]
        );
        assert!(found[0].problem.contains("duplicates"), "{:?}", found[0]);
        assert!(found[0].fix.contains("allow_file_output"), "{:?}", found[0]);
        let cfg = parse(&format!("{}{file}", pg("  allow_file_output: true\n"))).unwrap();
        assert!(matches!(cfg.store, StoreConfig::Postgres(_)));
    }
}

#[test]
fn dedup_retention_defaults_and_the_short_retention_guard() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(
        c.retention.dedup_retention,
        Duration::from_secs(8 * 24 * 3600)
    );
    assert!(!c.retention.allow_short_retention);

    // Retention keys alone keep the default store.
    let c = parse(&format!("{}store:\n  dedup_retention: 30d\n", minimal())).unwrap();
    assert!(matches!(
        c.store,
        o365_collector::store::StoreConfig::Embedded
    ));
    assert_eq!(
        c.retention.dedup_retention,
        Duration::from_secs(30 * 24 * 3600)
    );

    // Below Microsoft's 7-day horizon: refused, with why and the way out.
    let p = problems(&format!(
        "{}store:\n  type: embedded\n  dedup_retention: 2d\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["store.dedup_retention"]);
    assert!(p[0].problem.contains("7 days"), "{}", p[0].problem);
    assert!(p[0].fix.contains("allow_short_retention"), "{}", p[0].fix);

    let c = parse(&format!(
        "{}store:\n  dedup_retention: 2h\n  allow_short_retention: true\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.retention.dedup_retention, Duration::from_secs(7200));

    // A misspelt retention key is an unknown key of the store, and a wrong type is named.
    let p = problems(&format!(
        "{}store:\n  dedup_retention: soon\n  allow_short_retention: maybe\n",
        minimal()
    ));
    assert_eq!(
        keys(&p),
        ["store.dedup_retention", "store.allow_short_retention"]
    );
}

// ---- traps: example values, output paths, name templates (issue 25) -------------------------------

/// Example values are refused at their key, each with a fix that also names the escape hatch;
/// `allow_placeholders: true` lets the same file through. Secrets are never quoted.
#[test]
fn placeholders_are_refused_with_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", "replace-me\n");
    let text = format!(
        "tenant_id: 00000000-0000-0000-0000-000000000000\nclient_id: {CLIENT}\nclient_secret: ${{SECRET}}\noutput: s\n\
         webhook: {{address: 'https://collector.example.com/o365/webhook', auth_id: REPLACE-ME-0123456789}}\n\
         outputs:\n\
         \x20 es: {{type: http, format: elasticsearch, url: 'https://es.example.net:9200', password: pw, username: u}}\n\
         \x20 k: {{type: kafka, brokers: 'kafka-1.contoso.com:9092 kafka-2.example.com:9092'}}\n\
         \x20 s: {{type: syslog, address: 'siem.example.com:6514'}}\n\
         tenants:\n  - tenant_id: {TENANT}\n    client_id: 00000000-0000-0000-0000-000000000000\n\
         \x20   client_secret_file: {}\n",
        secret_file.display()
    );
    let env = env_of(&[("SECRET", "Replace-Me")]);
    let p = match Config::parse(&text, &env) {
        Ok(_) => panic!("placeholders accepted"),
        Err(e) => e.0,
    };
    assert_eq!(
        keys(&p),
        [
            "tenant_id",
            "client_secret",
            "webhook.address",
            "webhook.auth_id",
            "outputs.es.url",
            "outputs.k.brokers",
            "outputs.s.address",
            "tenants[0].client_id",
            "tenants[0].client_secret_file",
        ],
        "{p:#?}"
    );
    for problem in &p {
        assert!(
            problem.fix.contains("allow_placeholders: true"),
            "{problem}"
        );
        let text = problem.to_string();
        assert!(
            !text.contains("Replace-Me") && !text.contains("replace-me"),
            "{text}"
        );
    }
    assert!(p[0].fix.contains("Tenant ID"), "{}", p[0]);
    assert!(p[1].problem.contains("REPLACE-ME"), "{}", p[1]);
    assert!(p[4].problem.contains("es.example.net"), "{}", p[4]);
    assert!(p[5].problem.contains("kafka-2.example.com"), "{}", p[5]);
    assert!(p[7].fix.contains("Application (client) ID"), "{}", p[7]);
    assert!(p[8].problem.contains("secret"), "{}", p[8]);

    // The same file as an example: accepted.
    let allowed = format!("allow_placeholders: true\n{text}");
    if let Err(e) = Config::parse(&allowed, &env) {
        panic!("allow_placeholders: true still refuses:\n{e}");
    }
    // `check-config` reports them the same way, one line each, and exits 2.
    let file = write(dir.path(), "placeholders.yaml", &text);
    let (report, code) = check_config_with(&file, &env);
    assert_eq!(code, 2, "{report}");
    assert!(
        report.contains("outputs.es.url: names the host es.example.net"),
        "{report}"
    );
    assert!(report.ends_with("9 problems\n"), "{report}");
    // The real binary: `check-config` prints the same and `run` stops before starting anything.
    for command in ["check-config", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
            .args([command, "--config"])
            .arg(&file)
            .env("SECRET", "Replace-Me")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{command}: {all}");
        assert!(
            all.contains("tenants[0].client_id: is the all-zero GUID")
                && all.contains("allow_placeholders: true"),
            "{command}: {all}"
        );
        assert!(!all.contains("Replace-Me"), "{command}: {all}");
    }
    // A misspelt flag is a problem of its own, not an escape.
    let p = problems(&format!("{}allow_placeholders: maybe\n", strict()));
    assert_eq!(keys(&p), ["allow_placeholders"]);
}

/// A file output's path: a directory, a special file, a path under a regular file and a kernel
/// interface are refused by `check-config` at `outputs.<name>.path` with a fix; `run` stops at
/// start-up naming the output, the key and a fix (not "refused the batch").
#[test]
fn file_output_paths_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = write(d, "plain.txt", "x");
    std::fs::create_dir(d.join("a-dir")).unwrap();
    let fifo = d.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) is needed by this test");
    assert!(made.success());
    let cases = [
        (d.join("a-dir"), "is a directory", "name a file in it"),
        (
            plain.join("events.ndjson"),
            "is a file, not a directory",
            "every part before the file name must be a directory",
        ),
        (
            PathBuf::from("/sys/kernel/o365/events.ndjson"),
            "under /sys, a kernel interface",
            "real filesystem",
        ),
        (
            PathBuf::from("/proc/self/o365.ndjson"),
            "under /proc",
            "real filesystem",
        ),
        (fifo.clone(), "is a special file", "regular file"),
        (
            PathBuf::from("/dev/null"),
            "is a special file",
            "regular file",
        ),
    ];
    for (i, (path, problem, fix)) in cases.iter().enumerate() {
        let config = write(
            d,
            &format!("c{i}.yaml"),
            &format!(
                "{}last_value_storage: {}/store\noutput: siem\noutputs:\n  siem: {{type: file, path: '{}'}}\n",
                minimal(),
                d.display(),
                path.display()
            ),
        );
        let (report, code) = check_config_with(&config, &no_env);
        assert_eq!(code, 2, "{}: {report}", path.display());
        let first = report.lines().next().unwrap();
        assert!(first.starts_with("outputs.siem.path: "), "{report}");
        assert!(first.contains(problem), "{}: {report}", path.display());
        assert!(
            first.contains(" — fix: ") && first.contains(fix),
            "{report}"
        );
    }
    // An Elasticsearch dead-letter file is judged the same way.
    let config = write(
        d,
        "dl.yaml",
        &format!(
            "{}last_value_storage: {}/store\noutputs:\n  es: {{type: http, format: elasticsearch, url: 'http://127.0.0.1:9', dead_letter_path: '{}'}}\n",
            minimal(),
            d.display(),
            d.join("a-dir").display()
        ),
    );
    let (report, code) = check_config_with(&config, &no_env);
    assert_eq!(code, 2, "{report}");
    assert!(
        report.starts_with("outputs.es.dead_letter_path: "),
        "{report}"
    );
    // A good path passes, in a directory `run` will create.
    let good = write(
        d,
        "good.yaml",
        &format!(
            "{}last_value_storage: {}/store\noutput: siem\noutputs:\n  siem: {{type: file, path: '{}/new/events.ndjson'}}\n",
            minimal(),
            d.display(),
            d.display()
        ),
    );
    let (report, code) = check_config_with(&good, &no_env);
    assert_eq!(code, 0, "{report}");

    // `run` with the path under a regular file: stops at once, naming output, key and fix.
    let config = d.join("c1.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_o365-collector"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("output siem cannot start: outputs.siem.path: ")
            && stderr.contains(" — fix: "),
        "{stderr}"
    );
    assert!(!stderr.contains("refused the batch"), "{stderr}");
}

/// Index, source and topic templates take the same placeholders; anything else in `{…}` or after
/// `%` is refused at its key with the list of what is allowed. A tenant name that would make an
/// invalid index or topic is refused too.
#[test]
fn name_templates_are_checked() {
    let c = parse(&format!(
        "{}outputs:\n\
         \x20 es: {{type: http, format: elasticsearch, url: 'http://127.0.0.1:9', index: 'o365-{{tenant_id}}-{{tenant_name}}-{{content_type}}-%Y.%m.%d.%H'}}\n\
         \x20 hec: {{type: http, format: splunk_hec, url: 'http://127.0.0.1:9', token: t0k3n, index: 'o365_{{tenant_name}}', source: 'o365:{{tenant_id}}', sourcetype: 'o365:{{content_type}}'}}\n\
         \x20 k: {{type: kafka, brokers: '127.0.0.1:9092', topic: 'o365-{{tenant_name}}-%Y%m'}}\n\
         output: es\n",
        minimal()
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(OutputConfig::Http(es)) = c.outputs.get("es") else {
        panic!()
    };
    assert_eq!(
        es.index.as_ref().unwrap().as_str(),
        "o365-{tenant_id}-{tenant_name}-{content_type}-%Y.%m.%d.%H"
    );

    let p = problems(&format!(
        "{}outputs:\n\
         \x20 es: {{type: http, format: elasticsearch, url: 'http://127.0.0.1:9', index: 'o365-{{tenant}}-%Y.%m.%d'}}\n\
         \x20 hec: {{type: http, format: splunk_hec, url: 'http://127.0.0.1:9', token: t0k3n, source: 'o365-%q'}}\n\
         \x20 k: {{type: kafka, brokers: '127.0.0.1:9092', topic: 'o365-{{tenant_id'}}\n\
         output: es\n",
        minimal()
    ));
    assert_eq!(
        keys(&p),
        ["outputs.es.index", "outputs.hec.source", "outputs.k.topic"],
        "{p:#?}"
    );
    assert!(
        p[0].problem.contains("unknown placeholder `{tenant}`"),
        "{}",
        p[0]
    );
    assert!(
        p[1].problem.contains("unknown time pattern `%q`"),
        "{}",
        p[1]
    );
    assert!(p[2].problem.contains("never closed"), "{}", p[2]);
    for problem in &p {
        assert!(
            problem
                .fix
                .contains("{tenant_id}, {tenant_name}, {content_type}, %Y, %m, %d, %H"),
            "{problem}"
        );
    }

    // A tenant name with a space cannot be part of an index or topic name.
    let p = problems(&format!(
        "{}tenant_name: Contoso Ltd\noutput: es\noutputs:\n\
         \x20 es: {{type: http, format: elasticsearch, url: 'http://127.0.0.1:9', index: 'o365-{{tenant_name}}-%Y'}}\n",
        minimal()
    ));
    assert_eq!(keys(&p), ["outputs.es.index"], "{p:#?}");
    assert!(p[0].problem.contains("`o365-contoso ltd-"), "{}", p[0]);
    assert!(p[0].fix.contains("{tenant_id}"), "{}", p[0]);
}

/// A directory this user cannot write: `check-config` (the real binary, as an unprivileged user
/// when the tests run as root) names the key, the directory and the user to give write permission.
#[test]
fn file_output_in_a_directory_this_user_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(d, 0o755);
    let locked = d.join("locked");
    std::fs::create_dir(&locked).unwrap();
    let store = d.join("store");
    std::fs::create_dir(&store).unwrap();
    mode(&store, 0o777);
    let config = write(
        d,
        "c.yaml",
        &format!(
            "{}last_value_storage: {}\noutput: siem\noutputs:\n  siem: {{type: file, path: '{}/events.ndjson'}}\n",
            minimal(),
            store.display(),
            locked.display()
        ),
    );
    mode(&config, 0o644);
    let bin = env!("CARGO_BIN_EXE_o365-collector");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    let mut cmd = if root {
        // Root writes anywhere: check as `nobody`, the way the collector runs in its container.
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        mode(&locked, 0o555);
        std::process::Command::new(bin)
    };
    let out = cmd
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("setpriv (util-linux) is needed by this test when it runs as root");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("outputs.siem.path: ")
            && first.contains("cannot be written")
            && first.contains("Permission denied"),
        "{stdout}{stderr}"
    );
    assert!(
        first.contains(&format!(
            "fix: create {} with write permission for the user the collector runs as (uid ",
            locked.display()
        )),
        "{stdout}"
    );
}

/// The completeness ledger's keys: defaults, values, and a zero refused at its key with the fix.
#[test]
fn completeness_keys() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.completeness.horizon, Duration::from_secs(24 * 3600));
    assert!(c.completeness.record);
    assert_eq!(c.completeness.metrics_refresh, Duration::from_secs(60));
    assert_eq!(
        c.retention.completeness_retention,
        Duration::from_secs(30 * 24 * 3600)
    );
    let c = parse(&format!(
        "{}completeness:\n  horizon: 2h\n  record: false\n  metrics_refresh: 5m\nstore:\n  completeness_retention: 10d\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.completeness.horizon, Duration::from_secs(2 * 3600));
    assert!(!c.completeness.record);
    assert_eq!(c.completeness.metrics_refresh, Duration::from_secs(300));
    assert_eq!(
        c.retention.completeness_retention,
        Duration::from_secs(10 * 24 * 3600)
    );
    let p = problems(&format!(
        "{}completeness:\n  horizon: 0s\nstore:\n  completeness_retention: 0s\n",
        minimal()
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["completeness.horizon", "store.completeness_retention"],
        "{p:?}"
    );
    assert!(p.iter().all(|p| !p.fix.is_empty()), "{p:?}");
}
