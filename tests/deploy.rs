//! The Kubernetes manifests: every overlay renders with `kubectl kustomize`, the result validates
//! offline against the Kubernetes schemas (`kubernetes-validate --strict`), the admin port is
//! exposed by no Service, Ingress or open NetworkPolicy rule, and the pod is locked down.
//!
//! The tools come from `$O365_DEPLOY_TOOLS` (set by scripts/test, which installs them into a
//! virtualenv), the default virtualenv of scripts/test, or PATH. A missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const OVERLAYS: [(&str, u64); 2] = [("single", 1), ("replicas", 3)];
const ADMIN_PORT: u64 = 9090;
const PUBLIC_PORT: u64 = 8080;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from the scripts/test virtualenv or PATH; panics (never skips) when it is missing.
fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("O365_DEPLOY_TOOLS") {
        dirs.push(d.into());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        dirs.push(c.join("o365-collector/deploy-venv/bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is missing (looked in $O365_DEPLOY_TOOLS, the scripts/test virtualenv and PATH): \
                 run scripts/test, which installs kubectl and kubernetes-validate"
            )
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn render(overlay: &str) -> String {
    let dir = root().join("deploy/overlays").join(overlay);
    run(Command::new(tool("kubectl")).arg("kustomize").arg(&dir))
}

/// A deploy config as the user deploys it. Its webhook address names the Ingress host, which only
/// the user knows, so the file ships an `example.com` host that `check-config` refuses (no
/// `allow_placeholders`: a copied example must not pass); the user writes their host there, and so
/// does this.
fn as_deployed(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let refused = o365_collector::config::Config::parse(text, env)
        .expect_err("the example host of webhook.address is refused");
    let keys: Vec<&str> = refused.0.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["webhook.address"], "{refused}");
    assert!(
        refused.0[0].problem.contains("o365-collector.example.com"),
        "{refused}"
    );
    text.replace("o365-collector.example.com", "o365-collector.contoso.com")
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

/// Whether a port reference (number or name) designates the admin port.
fn is_admin(port: &Value) -> bool {
    port.as_u64() == Some(ADMIN_PORT) || port.as_str() == Some("admin")
}

#[test]
fn overlays_render_and_validate_strictly() {
    let validate = tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    for (overlay, _) in OVERLAYS {
        let yaml = render(overlay);
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let out = run(Command::new(&validate).arg("--strict").arg(&file));
        let docs = documents(&yaml);
        let passed = out.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed,
            docs.len(),
            "{overlay}: every resource validates:\n{out}"
        );
        for k in [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Secret",
            "StatefulSet",
            "Service",
            "Ingress",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ] {
            assert!(!of_kind(&docs, k).is_empty(), "{overlay} has no {k}");
        }
    }
}

/// The validator is not a rubber stamp: an unknown field fails strict validation.
#[test]
fn strict_validation_rejects_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80}]\n  exposeAdmin: true\n",
    )
    .unwrap();
    let out = Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown field accepted");
}

#[test]
fn admin_port_is_never_exposed() {
    for (overlay, _) in OVERLAYS {
        let docs = documents(&render(overlay));
        for svc in of_kind(&docs, "Service") {
            for p in seq(&svc["spec"]["ports"]) {
                assert!(
                    !is_admin(&p["port"]) && !is_admin(&p["targetPort"]) && !is_admin(&p["name"]),
                    "{overlay}: Service {:?} exposes the admin port: {p:?}",
                    svc["metadata"]["name"]
                );
            }
            let t = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
            assert_eq!(t, "ClusterIP", "{overlay}: Services stay cluster-internal");
        }
        for ing in of_kind(&docs, "Ingress") {
            let mut backends = 0;
            for rule in seq(&ing["spec"]["rules"]) {
                for path in seq(&rule["http"]["paths"]) {
                    let port = &path["backend"]["service"]["port"];
                    assert!(
                        !is_admin(&port["number"]) && !is_admin(&port["name"]),
                        "{overlay}: Ingress routes to the admin port"
                    );
                    assert_eq!(path["path"].as_str(), Some("/o365/webhook"));
                    backends += 1;
                }
            }
            assert!(backends > 0);
            assert!(
                !seq(&ing["spec"]["tls"]).is_empty(),
                "{overlay}: Ingress terminates TLS"
            );
            assert!(ing["spec"]["defaultBackend"].is_null());
        }
        let policies = of_kind(&docs, "NetworkPolicy");
        assert!(!policies.is_empty());
        for np in policies {
            for rule in seq(&np["spec"]["ingress"]) {
                let ports = seq(&rule["ports"]);
                let covers_admin = ports.is_empty() || ports.iter().any(|p| is_admin(&p["port"]));
                if !covers_admin {
                    continue;
                }
                let from = seq(&rule["from"]);
                assert!(
                    !from.is_empty(),
                    "{overlay}: a NetworkPolicy rule opens the admin port to everyone"
                );
                for peer in from {
                    assert!(
                        peer["ipBlock"].is_null(),
                        "{overlay}: admin port open to an ipBlock"
                    );
                    let ns = &peer["namespaceSelector"];
                    if !ns.is_null() {
                        let labels = ns["matchLabels"].as_mapping().map_or(0, |m| m.len());
                        let exprs = seq(&ns["matchExpressions"]).len();
                        assert!(
                            labels + exprs > 0,
                            "{overlay}: admin port open to every namespace"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn pod_is_locked_down_and_probed_on_the_admin_port() {
    for (overlay, replicas) in OVERLAYS {
        let docs = documents(&render(overlay));
        let sts = of_kind(&docs, "StatefulSet");
        assert_eq!(sts.len(), 1);
        let sts = sts[0];
        assert_eq!(
            sts["spec"]["replicas"].as_u64(),
            Some(replicas),
            "{overlay}"
        );
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
        let c = &seq(&pod["containers"])[0];
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(seq(&sc["capabilities"]["drop"]), [Value::from("ALL")]);
        for probe in ["livenessProbe", "readinessProbe"] {
            let port = &c[probe]["httpGet"]["port"];
            assert!(is_admin(port), "{overlay}: {probe} on the admin port");
        }
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
        for r in ["requests", "limits"] {
            assert!(!c["resources"][r]["memory"].is_null(), "{overlay}: {r}");
            assert!(!c["resources"][r]["cpu"].is_null(), "{overlay}: {r}");
        }
        // The README's "Bounds" says what this limit holds (tenants, blob size); the benches
        // measure against it.
        let limit = c["resources"]["limits"]["memory"]
            .as_str()
            .unwrap_or_default();
        let mib = limit
            .strip_suffix("Mi")
            .and_then(|n| n.parse::<u64>().ok())
            .or_else(|| {
                limit
                    .strip_suffix("Gi")
                    .and_then(|n| n.parse::<u64>().ok())
                    .map(|g| g * 1024)
            });
        assert!(
            mib.is_some_and(|m| m <= 512),
            "{overlay}: memory limit {limit:?} is above the 512Mi the README's Bounds are measured for"
        );
        let ports: Vec<u64> = seq(&c["ports"])
            .iter()
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
        assert_eq!(ports, [PUBLIC_PORT, ADMIN_PORT]);
        // The only writable path is the state volume; the config is read-only. One pod keeps its
        // store on a volume of its own; the replicas keep theirs in PostgreSQL and need none.
        let mounts = seq(&c["volumeMounts"]);
        let state = mounts
            .iter()
            .find(|m| m["name"].as_str() == Some("state"))
            .expect("state volume mounted");
        assert_eq!(state["mountPath"].as_str(), Some("/var/lib/o365-collector"));
        let claims = seq(&sts["spec"]["volumeClaimTemplates"]);
        if replicas == 1 {
            assert_eq!(claims[0]["metadata"]["name"].as_str(), Some("state"));
        } else {
            assert!(claims.is_empty(), "{overlay}: no volume per pod");
            let state = seq(&pod["volumes"])
                .iter()
                .find(|v| v["name"].as_str() == Some("state"))
                .expect("state volume");
            assert!(!state["emptyDir"].is_null(), "{overlay}: scratch state");
        }
        assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    }
}

/// The ConfigMap's config.yaml is a valid collector configuration for a pod behind the Ingress:
/// no TLS, trusted proxies, listeners on the container ports, the store on the volume.
#[test]
fn deploy_config_validates() {
    let docs = documents(&render("single"));
    let cm = of_kind(&docs, "ConfigMap")[0];
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let disk = std::fs::read_to_string(root().join("deploy/base/config.yaml")).unwrap();
    assert_eq!(text, disk);
    let env = |name: &str| -> Option<String> {
        Some(match name {
            "O365_TENANT_ID" => "41463f53-8812-40f4-890f-865bf6e35190".into(),
            "O365_CLIENT_ID" => "2d4f5a8c-1111-4222-8333-444455556666".into(),
            "O365_CLIENT_SECRET" => "placeholder-secret".into(),
            "O365_WEBHOOK_AUTH_ID" => "placeholder-auth-id".into(),
            "O365_ADMIN_TOKEN" => "placeholder-admin-token-0123456789".into(),
            _ => return None,
        })
    };
    let text = &as_deployed(text, &env);
    let c = o365_collector::config::Config::parse(text, &env)
        .unwrap_or_else(|e| panic!("deploy/base/config.yaml:\n{e}"));
    assert!(c.tls.is_none(), "the Ingress terminates TLS");
    assert!(!c.listen.trusted_proxies.is_empty());
    assert_eq!(c.listen.public.port() as u64, PUBLIC_PORT);
    assert_eq!(c.listen.admin.port() as u64, ADMIN_PORT);
    assert!(c.admin.token.is_some());
    assert!(c.last_value_storage.starts_with("/var/lib/o365-collector"));
    assert!(c.webhook.unwrap().address.starts_with("https://"));
    // The Secret example names every variable the config needs, with placeholders only.
    let secret = of_kind(&docs, "Secret")[0];
    let data = secret["stringData"].as_mapping().unwrap();
    for var in [
        "O365_TENANT_ID",
        "O365_CLIENT_ID",
        "O365_CLIENT_SECRET",
        "O365_WEBHOOK_AUTH_ID",
        "O365_ADMIN_TOKEN",
    ] {
        assert!(data.contains_key(var), "Secret example lacks {var}");
    }
}

/// The replicas overlay: three pods spread over nodes, two kept through drains, the database URL
/// from a Secret, and a config that validates with `store: postgres` and a network output.
#[test]
fn replicas_overlay_shares_one_database() {
    let docs = documents(&render("replicas"));
    let sts = of_kind(&docs, "StatefulSet")[0];
    let pod = &sts["spec"]["template"]["spec"];
    let spread = seq(&pod["topologySpreadConstraints"]);
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
                && c["whenUnsatisfiable"] == "DoNotSchedule"),
        "one pod per node"
    );
    let pdb = of_kind(&docs, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(2));
    let env = seq(&seq(&pod["containers"])[0]["env"]);
    let url = env
        .iter()
        .find(|e| e["name"] == "O365_DATABASE_URL")
        .expect("O365_DATABASE_URL set");
    let from = &url["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (from["name"].as_str(), from["key"].as_str()),
        (Some("o365-db-app"), Some("uri")),
        "the Secret CloudNativePG makes for a Cluster named o365-db"
    );
    let cm = of_kind(&docs, "ConfigMap")[0];
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let vars = |name: &str| -> Option<String> {
        Some(match name {
            "O365_TENANT_ID" => "41463f53-8812-40f4-890f-865bf6e35190".into(),
            "O365_CLIENT_ID" => "2d4f5a8c-1111-4222-8333-444455556666".into(),
            "O365_DATABASE_URL" => "postgres://app:pw@o365-db-rw:5432/app".into(),
            _ => "placeholder-value-0123456789".into(),
        })
    };
    let deployed = as_deployed(text, &vars);
    let c = o365_collector::config::Config::parse(&deployed, &vars)
        .unwrap_or_else(|e| panic!("overlays/replicas/config.yaml:\n{e}"));
    assert!(matches!(
        c.store,
        o365_collector::store::StoreConfig::Postgres(_)
    ));
    // The overlay's config is the base's but for the store.
    let base = std::fs::read_to_string(root().join("deploy/base/config.yaml")).unwrap();
    // Every setting line but the store's (the `store:` block, `last_value_storage`).
    let body = |t: &str| -> Vec<String> {
        let mut in_store = false;
        t.lines()
            .filter(|l| {
                if !l.starts_with(' ') && !l.starts_with('#') {
                    in_store = l.starts_with("store:");
                }
                !in_store
                    && !l.trim_start().starts_with('#')
                    && !l.starts_with("last_value_storage")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        body(text),
        body(&base),
        "overlay config drifted from the base"
    );
}

/// The optional CloudNativePG example: a three-instance Cluster whose app Secret is the one the
/// replicas overlay reads.
#[test]
fn cloudnativepg_example_matches_the_overlay() {
    let text = std::fs::read_to_string(root().join("deploy/cloudnativepg/cluster.yaml")).unwrap();
    let docs = documents(&text);
    let cluster = of_kind(&docs, "Cluster")[0];
    assert_eq!(
        cluster["apiVersion"].as_str(),
        Some("postgresql.cnpg.io/v1")
    );
    assert_eq!(cluster["metadata"]["name"].as_str(), Some("o365-db"));
    assert!(cluster["spec"]["instances"].as_u64() >= Some(3));
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    assert!(pdb.is_empty(), "CloudNativePG makes its own");
}

#[test]
fn dockerfile_runs_unprivileged_with_the_k8s_config_path() {
    let d = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(
        d.matches("\nFROM ").count() + usize::from(d.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    assert!(d.contains("\nUSER 10001"), "non-root user");
    assert!(d.contains(
        r#"ENTRYPOINT ["o365-collector", "run", "--config", "/etc/o365-collector/config.yaml"]"#
    ));
    assert!(Path::new(&root().join("deploy/nginx/o365-collector.conf")).is_file());
}

/// The PodMonitor example scrapes /metrics on the admin port with the Secret's token.
#[test]
fn podmonitor_example_scrapes_the_admin_port() {
    let text = std::fs::read_to_string(root().join("deploy/monitoring/podmonitor.yaml")).unwrap();
    let docs = documents(&text);
    let ep = &seq(&docs[0]["spec"]["podMetricsEndpoints"])[0];
    assert!(is_admin(&ep["port"]));
    assert_eq!(ep["path"].as_str(), Some("/metrics"));
    assert_eq!(
        ep["authorization"]["credentials"]["key"].as_str(),
        Some("O365_ADMIN_TOKEN")
    );
}

/// The alert rules example is a well-formed PrometheusRule: every rule has a name, an expression on
/// the collector's metrics and a severity (tests/metrics.rs checks the metrics exist).
#[test]
fn prometheusrule_example_is_well_formed() {
    let text =
        std::fs::read_to_string(root().join("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let docs = documents(&text);
    assert_eq!(docs[0]["kind"].as_str(), Some("PrometheusRule"));
    let rules = seq(&seq(&docs[0]["spec"]["groups"])[0]["rules"]);
    assert!(rules.len() >= 5);
    for r in rules {
        assert!(
            r["alert"]
                .as_str()
                .is_some_and(|a| a.starts_with("O365Collector"))
        );
        assert!(r["expr"].as_str().is_some_and(|e| e.contains("o365_")));
        assert!(r["labels"]["severity"].as_str().is_some());
    }
}
