//! The Kubernetes manifests: every overlay renders with `kubectl kustomize`, the result validates
//! offline against the Kubernetes schemas (`kubernetes-validate --strict`), the admin port is
//! exposed by no Service, Ingress or open NetworkPolicy rule, and the pod is locked down.
//!
//! The tools come from `$O365_DEPLOY_TOOLS` (set by scripts/test, which installs them into a
//! virtualenv), the default virtualenv of scripts/test, or PATH. A missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const OVERLAYS: [(&str, u64); 3] = [("single", 1), ("replicas", 3), ("mssp", 1)];
/// Overlays in pull mode: no webhook, so no Ingress, no public Service and no webhook port.
const PULL_ONLY: [&str; 1] = ["mssp"];
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
            "StatefulSet",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ] {
            assert!(!of_kind(&docs, k).is_empty(), "{overlay} has no {k}");
        }
        let pull = PULL_ONLY.contains(&overlay);
        assert_eq!(
            of_kind(&docs, "Ingress").is_empty(),
            pull,
            "{overlay}: an Ingress exactly when Microsoft must reach the webhook"
        );
        // The user creates the Secret; `kubectl apply -k` must never overwrite it with the
        // example's placeholders.
        assert!(
            of_kind(&docs, "Secret").is_empty(),
            "{overlay} renders a Secret: it would overwrite the real one"
        );
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
        if PULL_ONLY.contains(&overlay) {
            assert_eq!(
                ports,
                [ADMIN_PORT],
                "{overlay}: pull mode has no webhook port"
            );
        } else {
            assert_eq!(ports, [PUBLIC_PORT, ADMIN_PORT]);
        }
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
    // The Secret example (not rendered: the user creates the Secret) names every variable the
    // config needs.
    assert_eq!(
        secret_example_keys("deploy/base/secret.example.yaml"),
        env_vars(text),
        "deploy/base/secret.example.yaml"
    );
}

/// The keys of a Secret example file.
fn secret_example_keys(rel: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    let docs = documents(&text);
    assert_eq!(kind(&docs[0]), "Secret", "{rel}");
    docs[0]["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The `${VAR}`s a configuration reads (comments left out).
fn env_vars(config: &str) -> std::collections::BTreeSet<String> {
    config
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(""))
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split("${").skip(1))
        .filter_map(|rest| rest.split_once('}').map(|(v, _)| v.to_string()))
        .collect()
}

/// The MSSP overlay: three customers' tenants through one multi-tenant app (one customer with
/// its own), pull mode with nothing exposed but the admin port, Elasticsearch with an index per
/// tenant, and a Secret example with one key per tenant that the overlay never renders.
#[test]
fn mssp_overlay_collects_three_tenants_in_pull_mode() {
    let docs = documents(&render("mssp"));
    assert!(of_kind(&docs, "Ingress").is_empty());
    for svc in of_kind(&docs, "Service") {
        assert!(
            seq(&svc["spec"]["ports"]).is_empty(),
            "pull mode: no Service routes to the pod ({:?})",
            svc["metadata"]["name"]
        );
    }
    for np in of_kind(&docs, "NetworkPolicy") {
        for rule in seq(&np["spec"]["ingress"]) {
            for p in seq(&rule["ports"]) {
                assert!(is_admin(&p["port"]), "only the admin port is open: {p:?}");
            }
        }
    }
    let cm = of_kind(&docs, "ConfigMap")[0];
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(root().join("deploy/overlays/mssp/config.yaml")).unwrap()
    );
    let keys = secret_example_keys("deploy/overlays/mssp/secret.example.yaml");
    assert_eq!(
        keys,
        env_vars(text),
        "the Secret example names every ${{VAR}}"
    );
    // The config validates with real-looking values; the ES CA file the overlay mounts is
    // stood in for by a generated certificate.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let cert = rcgen::generate_simple_self_signed(vec!["o365-es-http.elastic.svc".into()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let text = text.replace("/etc/o365-collector-es/ca.crt", ca.to_str().unwrap());
    let tenants = [
        (
            "O365_TENANT_ID_CONTOSO",
            "41463f53-8812-40f4-890f-865bf6e35190",
        ),
        (
            "O365_TENANT_ID_FABRIKAM",
            "7c1f0a2e-5b7d-4e0a-9d61-2f3b8c4d5e6f",
        ),
        (
            "O365_TENANT_ID_NORTHWIND",
            "0b9e8d7c-6a5b-4c3d-8e2f-1a0b9c8d7e6f",
        ),
    ];
    let vars = |name: &str| -> Option<String> {
        if let Some((_, id)) = tenants.iter().find(|(k, _)| *k == name) {
            return Some(id.to_string());
        }
        Some(match name {
            "O365_CLIENT_ID" => "2d4f5a8c-1111-4222-8333-444455556666".into(),
            "O365_CLIENT_ID_NORTHWIND" => "5e6f7a8b-2222-4333-8444-555566667777".into(),
            _ => "a-secret-value-0123456789".into(),
        })
    };
    let c = o365_collector::config::Config::parse(&text, &vars)
        .unwrap_or_else(|e| panic!("overlays/mssp/config.yaml:\n{e}"));
    assert!(c.webhook.is_none(), "pull mode");
    let ids: Vec<&str> = c.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
    assert_eq!(ids, tenants.map(|(_, id)| id));
    for t in &c.tenants {
        assert!(t.tenant_name.is_some(), "{}: tenant_name", t.tenant_id);
    }
    let index = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("index: "))
        .expect("an index template");
    assert!(
        index.contains("{tenant_id}") || index.contains("{tenant_name}"),
        "an index per tenant: {index}"
    );
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

/// The image is built FROM scratch (nothing to pull; tests/image.rs builds and runs it), as the
/// non-root user the pod runs as, and runs the collector on the config path the manifests mount.
#[test]
fn dockerfile_runs_unprivileged_with_the_k8s_config_path() {
    let d = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms, ["FROM scratch"], "no base image to pull");
    assert!(d.contains("\nUSER 10001:10001\n"), "non-root user");
    assert!(d.contains(r#"ENTRYPOINT ["/usr/local/bin/o365-collector"]"#));
    assert!(d.contains(r#"CMD ["run", "--config", "/etc/o365-collector/config.yaml"]"#));
    let script = std::fs::read_to_string(root().join("deploy/build-image.sh")).unwrap();
    assert!(
        script.contains("10001:10001"),
        "passwd names the image's user"
    );
    // The pod runs the image's user and says what to run, whatever the image's CMD.
    let sts = std::fs::read_to_string(root().join("deploy/base/statefulset.yaml")).unwrap();
    let docs = documents(&sts);
    let pod = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(10001));
    let args: Vec<&str> = seq(&seq(&pod["containers"])[0]["args"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/o365-collector/config.yaml"]);
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

/// `promtool` (Debian package `prometheus`, installed by scripts/test); panics when missing.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`promtool` is missing: run scripts/test, which installs it (apt-get install prometheus)"
        )
    })
}

/// One `promtool test rules` group: input series (one sample a minute) and, per alert, the times
/// it is checked at with the label sets it must fire with then (none: it must not fire).
struct AlertCase {
    series: &'static [(&'static str, &'static str)],
    checks: &'static [AlertCheck],
}

/// An alert, when it is checked, and the extra labels of each alert expected firing then.
type AlertCheck = (&'static str, &'static str, &'static [Labels]);
type Labels = &'static [(&'static str, &'static str)];

/// Every alert of the example, each firing for its case after its `for:` and not before, and none
/// firing for a healthy collector.
const ALERT_CASES: &[AlertCase] = &[
    // Tenant a's Audit.General gets an incomplete hour after 10 minutes; b stays whole.
    AlertCase {
        series: &[
            (
                r#"o365_completeness_incomplete_hours{tenant_id="a",content_type="Audit.General"}"#,
                "0x10 1x30",
            ),
            (
                r#"o365_completeness_incomplete_hours{tenant_id="b",content_type="Audit.General"}"#,
                "0x40",
            ),
        ],
        checks: &[
            ("O365CollectorIncompleteHours", "12m", &[]),
            (
                "O365CollectorIncompleteHours",
                "20m",
                &[&[("tenant_id", "a"), ("content_type", "Audit.General")]],
            ),
        ],
    },
    // An output paused from minute 6 (another one flowing): pending at 15m, firing at 17m.
    AlertCase {
        series: &[
            (r#"o365_output_paused{output="siem"}"#, "0x5 1x30"),
            (r#"o365_output_paused{output="file"}"#, "0x35"),
        ],
        checks: &[
            ("O365CollectorOutputDown", "15m", &[]),
            ("O365CollectorOutputDown", "17m", &[&[("output", "siem")]]),
        ],
    },
    // Tenant a (contoso) is up for 10 minutes, then down; b (fabrikam) stays up. Content is
    // announced for c and d every minute from the start; d's records are delivered, c's never:
    // "no record from a tenant for 2 h while Microsoft announced content".
    AlertCase {
        series: &[
            (
                r#"o365_tenant_up{tenant_id="a",tenant_name="contoso"}"#,
                "1x10 0x200",
            ),
            (
                r#"o365_tenant_up{tenant_id="b",tenant_name="fabrikam"}"#,
                "1x210",
            ),
            (r#"o365_uptime_seconds{instance="x"}"#, "0+60x210"),
            (
                r#"o365_content_announced_by_tenant_total{tenant_id="c",content_type="Audit.General"}"#,
                "0+1x210",
            ),
            (
                r#"o365_content_announced_by_tenant_total{tenant_id="d",content_type="Audit.General"}"#,
                "0+1x210",
            ),
            (
                r#"o365_records_delivered_by_tenant_total{tenant_id="d",content_type="Audit.General"}"#,
                "0+30x210",
            ),
        ],
        checks: &[
            ("O365CollectorTenantDown", "20m", &[]),
            (
                "O365CollectorTenantDown",
                "30m",
                &[&[("tenant_id", "a"), ("tenant_name", "contoso")]],
            ),
            ("O365CollectorTenantSilent", "2h", &[]),
            (
                "O365CollectorTenantSilent",
                "2h20m",
                &[&[("tenant_id", "c")]],
            ),
        ],
    },
    // The oldest pending blob ages a minute a minute: past an hour at 61m, firing 15 min later.
    AlertCase {
        series: &[("o365_queue_oldest_pending_age_seconds", "0+60x120")],
        checks: &[
            ("O365CollectorBacklog", "70m", &[]),
            ("O365CollectorBacklog", "80m", &[&[]]),
        ],
    },
    // A blob dead-lettered at minute 31: alerting for the following hour, then quiet.
    AlertCase {
        series: &[
            ("o365_blobs_dead_lettered_total", "0x30 1x70"),
            ("o365_listing_gaps_total", "0x30 1x70"),
        ],
        checks: &[
            ("O365CollectorDeadLetters", "30m", &[]),
            ("O365CollectorDeadLetters", "40m", &[&[]]),
            ("O365CollectorDeadLetters", "95m", &[]),
            ("O365CollectorListingGap", "30m", &[]),
            ("O365CollectorListingGap", "40m", &[&[]]),
            ("O365CollectorListingGap", "95m", &[]),
        ],
    },
    // The store stops answering at minute 11.
    AlertCase {
        series: &[("o365_store_up", "1x10 0x10")],
        checks: &[
            ("O365CollectorStoreDown", "12m", &[]),
            ("O365CollectorStoreDown", "14m", &[&[]]),
        ],
    },
    // Ten refused POSTs a minute (0.17/s) for an hour.
    AlertCase {
        series: &[("o365_notifications_rejected_total", "0+10x60")],
        checks: &[
            ("O365CollectorWebhookRejections", "10m", &[]),
            ("O365CollectorWebhookRejections", "30m", &[&[]]),
        ],
    },
    // Microsoft answers 429 every minute.
    AlertCase {
        series: &[("o365_throttled_total", "0+1x90")],
        checks: &[
            ("O365CollectorThrottled", "20m", &[]),
            ("O365CollectorThrottled", "45m", &[&[]]),
        ],
    },
    // Pruned every 10 minutes (the gauge holds the last prune's Unix time) until minute 60, then
    // never: more than an hour old after 120m, firing 30 min later.
    AlertCase {
        series: &[(
            "o365_dedup_last_prune_timestamp_seconds",
            "0x9 600x9 1200x9 1800x9 2400x9 3000x9 3600x100",
        )],
        checks: &[
            ("O365CollectorDedupNotPruned", "140m", &[]),
            ("O365CollectorDedupNotPruned", "160m", &[&[]]),
        ],
    },
    // Healthy for 3 hours: outputs flowing, tenants up and delivered, a short queue, nothing dead
    // or lost, few refusals, no 429, pruned as it goes. No alert fires.
    AlertCase {
        series: &[
            (r#"o365_output_paused{output="file"}"#, "0x200"),
            (
                r#"o365_tenant_up{tenant_id="a",tenant_name="contoso"}"#,
                "1x200",
            ),
            (r#"o365_uptime_seconds{instance="x"}"#, "0+60x200"),
            (
                r#"o365_content_announced_by_tenant_total{tenant_id="a",content_type="Audit.General"}"#,
                "0+1x200",
            ),
            (
                r#"o365_records_delivered_by_tenant_total{tenant_id="a",content_type="Audit.General"}"#,
                "0+30x200",
            ),
            ("o365_queue_oldest_pending_age_seconds", "30x200"),
            ("o365_blobs_dead_lettered_total", "0x200"),
            ("o365_listing_gaps_total", "0x200"),
            ("o365_store_up", "1x200"),
            ("o365_notifications_rejected_total", "0+1x200"),
            ("o365_throttled_total", "0x200"),
            ("o365_dedup_last_prune_timestamp_seconds", "0+60x200"),
        ],
        checks: &[
            ("O365CollectorOutputDown", "3h", &[]),
            ("O365CollectorTenantDown", "3h", &[]),
            ("O365CollectorTenantSilent", "3h", &[]),
            ("O365CollectorBacklog", "3h", &[]),
            ("O365CollectorDeadLetters", "3h", &[]),
            ("O365CollectorStoreDown", "3h", &[]),
            ("O365CollectorWebhookRejections", "3h", &[]),
            ("O365CollectorThrottled", "3h", &[]),
            ("O365CollectorListingGap", "3h", &[]),
            ("O365CollectorDedupNotPruned", "3h", &[]),
        ],
    },
];

/// The alert's annotations as Prometheus renders them for `labels` (`{{ $labels.x }}` only).
fn rendered(annotations: &Value, labels: &[(&str, &str)]) -> serde_yaml::Mapping {
    let mut out = serde_yaml::Mapping::new();
    for (k, v) in annotations.as_mapping().into_iter().flatten() {
        let mut text = v.as_str().unwrap().to_string();
        for (name, value) in labels {
            text = text.replace(&format!("{{{{ $labels.{name} }}}}"), value);
        }
        assert!(!text.contains("{{"), "a template left in {text:?}");
        out.insert(k.clone(), text.into());
    }
    out
}

/// Every alert of the PrometheusRule example fires as documented and only then, checked by
/// `promtool test rules` on the example's own groups (ALERT_CASES): each alert fires for its case,
/// after its `for:` and not before, with its labels and rendered annotations, and no alert fires
/// for a healthy collector.
#[test]
fn every_alert_fires_in_promtool() {
    let text =
        std::fs::read_to_string(root().join("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let docs = documents(&text);
    let mut groups = serde_yaml::Mapping::new();
    groups.insert("groups".into(), docs[0]["spec"]["groups"].clone());
    let rules: Vec<&Value> = seq(&docs[0]["spec"]["groups"])
        .iter()
        .flat_map(|g| seq(&g["rules"]))
        .collect();
    let rule = |name: &str| {
        *rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no alert {name} in the PrometheusRule"))
    };

    let mut fired = std::collections::BTreeSet::new();
    let mut quiet = std::collections::BTreeSet::new();
    let mut tests = Vec::new();
    for case in ALERT_CASES {
        let series: Vec<Value> = case
            .series
            .iter()
            .map(|(s, v)| {
                serde_yaml::from_str(&format!("{{series: '{s}', values: '{v}'}}")).unwrap()
            })
            .collect();
        let mut checks = Vec::new();
        for (alert, at, expected) in case.checks {
            let r = rule(alert);
            let exp: Vec<Value> = expected
                .iter()
                .map(|labels| {
                    let mut l = r["labels"].as_mapping().unwrap().clone();
                    for (k, v) in *labels {
                        l.insert((*k).into(), (*v).into());
                    }
                    let mut m = serde_yaml::Mapping::new();
                    m.insert("exp_labels".into(), Value::Mapping(l));
                    m.insert(
                        "exp_annotations".into(),
                        Value::Mapping(rendered(&r["annotations"], labels)),
                    );
                    Value::Mapping(m)
                })
                .collect();
            if exp.is_empty() {
                quiet.insert(*alert);
            } else {
                fired.insert(*alert);
            }
            let mut m = serde_yaml::Mapping::new();
            m.insert("eval_time".into(), (*at).into());
            m.insert("alertname".into(), (*alert).into());
            m.insert("exp_alerts".into(), Value::Sequence(exp));
            checks.push(Value::Mapping(m));
        }
        let mut t = serde_yaml::Mapping::new();
        t.insert("interval".into(), "1m".into());
        t.insert("input_series".into(), Value::Sequence(series));
        t.insert("alert_rule_test".into(), Value::Sequence(checks));
        tests.push(Value::Mapping(t));
    }
    let names: std::collections::BTreeSet<&str> =
        rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(fired, names, "every alert fires for a case of its own");
    assert_eq!(
        quiet, names,
        "every alert is checked quiet (before its time, or healthy)"
    );

    let mut file = serde_yaml::Mapping::new();
    file.insert("rule_files".into(), vec![Value::from("rules.yaml")].into());
    file.insert("evaluation_interval".into(), "1m".into());
    file.insert("tests".into(), Value::Sequence(tests));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&groups).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tests.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    let promtool = promtool();
    let checked =
        run(Command::new(&promtool)
            .current_dir(dir.path())
            .args(["check", "rules", "rules.yaml"]));
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested =
        run(Command::new(&promtool)
            .current_dir(dir.path())
            .args(["test", "rules", "tests.yaml"]));
    assert!(tested.contains("SUCCESS"), "{tested}");
    println!(
        "promtool test rules: {} alerts, each fired and quiet: SUCCESS",
        names.len()
    );
}
