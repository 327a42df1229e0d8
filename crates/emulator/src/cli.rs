//! `o365-emulator` (and `o365-collector emulator`): flags, the optional YAML file, and `serve` (runs
//! until SIGINT/SIGTERM).

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

use super::{
    DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID, Emulator, EmulatorConfig, EmulatorError,
    TenantSpec,
};

/// `o365-emulator` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub listen: std::net::SocketAddr,
    /// The other flags, boxed so the CLI enum stays small.
    #[command(flatten)]
    pub options: Box<EmulatorOptions>,
}

/// Flags of `o365-emulator` besides `--listen`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EmulatorOptions {
    /// Write the CA certificate (PEM) clients must trust to this file
    /// (default: o365-collector-emulator-ca.pem in the temp directory).
    #[arg(long)]
    pub ca_out: Option<PathBuf>,
    /// Serve this certificate (PEM chain) instead of one signed by the generated CA.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Tenant GUID; repeatable, zipped in order with --client-id and --client-secret.
    #[arg(long)]
    pub tenant_id: Vec<String>,
    /// Application (client) id; repeatable.
    #[arg(long)]
    pub client_id: Vec<String>,
    /// Client secret; repeatable.
    #[arg(long)]
    pub client_secret: Vec<String>,
    /// YAML file with `tenants:` and settings (flags win over the file).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed of the synthetic data and of the fault dice.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Access token lifetime in seconds (default 3599).
    #[arg(long)]
    pub token_lifetime: Option<u64>,
    /// Seconds before published content becomes listable and is announced (default 0).
    #[arg(long)]
    pub content_delay: Option<u64>,
    /// Requests per minute per tenant and PublisherIdentifier (default 2000).
    #[arg(long)]
    pub throttle_per_minute: Option<u32>,
    /// Trust this CA (PEM) when calling webhooks, e.g. certs/ca.pem of certs/gen-dev-certs.sh, whose
    /// server.pem the collector serves; repeatable, added to `webhook_ca_files` of the file.
    /// Microsoft calls only webhooks whose certificate chains to a public root.
    #[arg(long, value_name = "PEM_FILE")]
    pub webhook_ca_file: Vec<PathBuf>,
}

/// The YAML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub tenants: Vec<FileTenant>,
    pub listen: Option<std::net::SocketAddr>,
    pub seed: Option<u64>,
    pub token_lifetime_secs: Option<u64>,
    pub content_delay_secs: Option<u64>,
    pub throttle_per_minute: Option<u32>,
    pub page_size: Option<usize>,
    pub webhook_retry_base_ms: Option<u64>,
    pub webhook_timeout_secs: Option<u64>,
    pub webhook_max_failures: Option<u32>,
    pub webhook_disable_after_secs: Option<u64>,
    /// PEM files of extra roots trusted for webhook delivery.
    #[serde(default)]
    pub webhook_ca_files: Vec<PathBuf>,
    #[serde(default)]
    pub server_names: Vec<String>,
    pub public_base_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTenant {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// PEM certificate files accepted for client assertions.
    #[serde(default)]
    pub certificate_files: Vec<PathBuf>,
}

/// Builds the configuration from flags and the optional file.
pub fn config_from_args(cli: &EmulatorArgs) -> Result<EmulatorConfig, EmulatorError> {
    let args = &cli.options;
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            serde_yaml::from_str(&text)
                .map_err(|e| EmulatorError::Config(format!("{}: {e}", path.display())))?
        }
        None => FileConfig::default(),
    };
    let mut cfg = EmulatorConfig {
        listen: cli.listen,
        ..EmulatorConfig::default()
    };
    if let Some(l) = file.listen
        && cli.listen == std::net::SocketAddr::from(([127, 0, 0, 1], 8444))
    {
        cfg.listen = l;
    }
    for t in &file.tenants {
        let certificates_pem = t
            .certificate_files
            .iter()
            .map(std::fs::read_to_string)
            .collect::<Result<Vec<_>, _>>()?;
        cfg.tenants.push(TenantSpec {
            tenant_id: t.tenant_id.clone(),
            client_id: t.client_id.clone(),
            client_secret: t.client_secret.clone(),
            certificates_pem,
        });
    }
    if !args.tenant_id.is_empty() || !args.client_id.is_empty() || !args.client_secret.is_empty() {
        if args.tenant_id.len() != args.client_id.len()
            || args.client_id.len() != args.client_secret.len()
        {
            return Err(EmulatorError::Config(
                "--tenant-id, --client-id and --client-secret must be given the same number of times".into(),
            ));
        }
        for ((t, c), s) in args
            .tenant_id
            .iter()
            .zip(&args.client_id)
            .zip(&args.client_secret)
        {
            cfg.tenants.push(TenantSpec::with_secret(t, c, s));
        }
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        cfg.tls = Some((c.clone(), k.clone()));
    }
    cfg.seed = args.seed.or(file.seed).unwrap_or(cfg.seed);
    if let Some(v) = args.token_lifetime.or(file.token_lifetime_secs) {
        cfg.token_lifetime = Duration::from_secs(v);
    }
    if let Some(v) = args.content_delay.or(file.content_delay_secs) {
        cfg.content_delay = Duration::from_secs(v);
    }
    cfg.throttle_per_minute = args
        .throttle_per_minute
        .or(file.throttle_per_minute)
        .unwrap_or(cfg.throttle_per_minute);
    cfg.page_size = file.page_size.unwrap_or(cfg.page_size);
    if let Some(v) = file.webhook_retry_base_ms {
        cfg.webhook_retry_base = Duration::from_millis(v);
    }
    if let Some(v) = file.webhook_timeout_secs {
        cfg.webhook_timeout = Duration::from_secs(v);
    }
    cfg.webhook_max_failures = file
        .webhook_max_failures
        .unwrap_or(cfg.webhook_max_failures);
    if let Some(v) = file.webhook_disable_after_secs {
        cfg.webhook_disable_after = Duration::from_secs(v);
    }
    for f in file.webhook_ca_files.iter().chain(&args.webhook_ca_file) {
        let pem = std::fs::read_to_string(f).map_err(|e| {
            EmulatorError::Config(format!(
                "webhook CA file {} (--webhook-ca-file / webhook_ca_files): {e}",
                f.display()
            ))
        })?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(EmulatorError::Config(format!(
                "webhook CA file {} (--webhook-ca-file / webhook_ca_files) holds no PEM \
                 CERTIFICATE; give the CA that signed the collector's tls.cert (certs/ca.pem)",
                f.display()
            )));
        }
        cfg.webhook_ca_pem.push(pem);
    }
    cfg.server_names = file.server_names;
    cfg.public_base_url = file.public_base_url;
    Ok(cfg)
}

/// Runs the emulator until SIGINT/SIGTERM. Boxed, so that its async code is compiled once, in
/// this crate, and not again in each binary that awaits it.
pub fn serve(args: EmulatorArgs) -> Pin<Box<dyn Future<Output = Result<(), EmulatorError>>>> {
    Box::pin(serve_until_signal(args))
}

async fn serve_until_signal(args: EmulatorArgs) -> Result<(), EmulatorError> {
    let cfg = config_from_args(&args)?;
    let demo = cfg.tenants.is_empty();
    let emulator = Emulator::start(cfg).await?;
    let ca_path = args
        .options
        .ca_out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("o365-collector-emulator-ca.pem"));
    std::fs::write(&ca_path, emulator.ca_pem())?;
    println!(
        "o365-collector emulator listening on {}",
        emulator.base_url()
    );
    println!(
        "CA certificate (trust it, e.g. curl --cacert): {}",
        ca_path.display()
    );
    if demo {
        println!(
            "demo tenant: tenant_id={DEMO_TENANT_ID} client_id={DEMO_CLIENT_ID} client_secret={DEMO_CLIENT_SECRET}"
        );
    } else {
        for t in emulator.tenants() {
            println!(
                "tenant: tenant_id={} client_id={}",
                t.tenant_id, t.client_id
            );
        }
    }
    println!("control surface: {}/_emulator", emulator.base_url());
    wait_for_signal().await?;
    println!("shutting down");
    emulator.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), EmulatorError> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: EmulatorArgs,
    }

    #[test]
    fn tenants_are_zipped_and_counts_checked() {
        let t = T::parse_from([
            "x",
            "--tenant-id",
            "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f",
            "--client-id",
            "c1",
            "--client-secret",
            "s1",
            "--token-lifetime",
            "60",
        ]);
        let cfg = config_from_args(&t.a).unwrap();
        assert_eq!(cfg.tenants.len(), 1);
        assert_eq!(cfg.tenants[0].client_secret.as_deref(), Some("s1"));
        assert_eq!(cfg.token_lifetime, Duration::from_secs(60));
        let bad = T::parse_from(["x", "--tenant-id", "a", "--client-id", "c1"]);
        assert!(config_from_args(&bad.a).is_err());
    }

    #[test]
    fn yaml_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("emu.yaml");
        std::fs::write(
            &p,
            "tenants:\n  - tenant_id: 6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f\n    client_id: app\n    client_secret: s\npage_size: 5\nseed: 9\n",
        )
        .unwrap();
        let t = T::parse_from(["x", "--config", p.to_str().unwrap()]);
        let cfg = config_from_args(&t.a).unwrap();
        assert_eq!(cfg.page_size, 5);
        assert_eq!(cfg.seed, 9);
        assert_eq!(cfg.tenants[0].client_id, "app");
    }

    #[test]
    fn webhook_ca_files_from_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join("a.pem"), pem).unwrap();
        std::fs::write(dir.path().join("b.pem"), pem).unwrap();
        std::fs::write(dir.path().join("not.pem"), "hello").unwrap();
        let p = dir.path().join("emu.yaml");
        let a = dir.path().join("a.pem");
        std::fs::write(&p, format!("webhook_ca_files: [{}]\n", a.display())).unwrap();
        let b = dir.path().join("b.pem");
        let t = T::parse_from([
            "x",
            "--config",
            p.to_str().unwrap(),
            "--webhook-ca-file",
            b.to_str().unwrap(),
        ]);
        assert_eq!(config_from_args(&t.a).unwrap().webhook_ca_pem.len(), 2);
        let not = dir.path().join("not.pem");
        let bad = T::parse_from(["x", "--webhook-ca-file", not.to_str().unwrap()]);
        let e = config_from_args(&bad.a).unwrap_err().to_string();
        assert!(
            e.contains("--webhook-ca-file") && e.contains("not.pem"),
            "{e}"
        );
        let missing = T::parse_from(["x", "--webhook-ca-file", "/nonexistent/ca.pem"]);
        let e = config_from_args(&missing.a).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
