//! A real PostgreSQL server for tests: `initdb` on a temporary directory, the server on a free port
//! of 127.0.0.1 (TCP only, password authentication), a fresh database per test.
//!
//! The server binaries come from `O365_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
//! (scripts/test installs the Debian package when it is missing). PostgreSQL refuses to run as
//! root, so as root the server runs as the `postgres` user. A watchdog shell stops the server and
//! removes its files once the test process is gone, even after a SIGKILL, so a server shared by
//! the tests of one binary (a `static`, never dropped) does not outlive them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use o365_collector::core::Secret;
use o365_collector::store::{PostgresConfig, PostgresStore};
use sqlx::Connection;

pub const USER: &str = "o365";
/// The test role's password: tests assert that it never shows in errors or logs.
pub const PASSWORD: &str = "pg-test-password-7f3a";

pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    /// `Some("postgres")` when the tests run as root.
    run_as: Option<&'static str>,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("O365_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: \
         install postgresql (scripts/test does) or set O365_PG_BIN",
    )
}

impl Postgres {
    /// Initialises and starts a server of its own; stopped when dropped.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// A server that also takes TLS (`ssl = on`) with this certificate and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        Postgres::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = rustix::process::geteuid().is_root().then_some("postgres");
        if let Some(user) = run_as {
            let ok = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "cannot give the data directory to {user}");
        }
        let pg = Postgres {
            port: crate::support::free_port(),
            dir,
            bin,
            run_as,
        };
        let pwfile = pg.dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some(user) = run_as {
            Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&pwfile)
                .status()
                .unwrap();
        }
        let data = pg.data();
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = ''\n\
             max_connections = 300\nshared_buffers = 32MB\nlog_min_messages = warning\n",
            pg.port
        );
        if let Some((cert, key)) = tls {
            // The server refuses a key file others can read.
            for (name, pem, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
                let path = data.join(name);
                std::fs::write(&path, pem).unwrap();
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .unwrap();
                if let Some(user) = run_as {
                    Command::new("chown")
                        .arg(format!("{user}:"))
                        .arg(&path)
                        .status()
                        .unwrap();
                }
            }
            settings
                .push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap();
        pg.start_server();
        pg.watchdog();
        pg
    }

    /// One server for all the tests of this test binary.
    pub fn shared() -> &'static Postgres {
        static SERVER: OnceLock<Postgres> = OnceLock::new();
        SERVER.get_or_init(Postgres::start)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl runs")
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) {
        let log = self.log();
        let out = self.pg_ctl(&["-w", "-t", "60", "-l", log.to_str().unwrap(), "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown: open connections are cut, as in an outage).
    pub fn stop_server(&self) {
        let out = self.pg_ctl(&["-w", "-m", "fast", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server and removes its files once this process is gone.
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {ctl} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            ctl = match self.run_as {
                Some(u) => format!("runuser -u {u} -- '{}'", self.bin.join("pg_ctl").display()),
                None => format!("'{}'", self.bin.join("pg_ctl").display()),
            },
            data = self.data().display(),
            dir = self.dir.path().display(),
        );
        // It outlives this process by design: never waited for.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog starts");
    }

    /// `postgres://o365:…@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; its URL.
    pub async fn create_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test server");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        self.url(&name)
    }

    /// The store settings for a database URL.
    pub fn config(url: &str) -> PostgresConfig {
        PostgresConfig {
            url: Secret::new(url),
            pool_size: 4,
            sslmode: Some("disable".into()),
            tenant_lease: std::time::Duration::from_secs(30),
            ..PostgresConfig::default()
        }
    }

    /// A store on a fresh database.
    pub async fn store(&self) -> PostgresStore {
        let url = self.create_database().await;
        PostgresStore::connect(&Postgres::config(&url))
            .await
            .expect("connect the store")
    }

    /// The server's own log (e.g. to show why it failed).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// The replica (lease owner) token a collector on the PostgreSQL store logged at start-up.
pub fn replica_token(logs: &str) -> Option<String> {
    logs.lines()
        .find(|l| l.contains("connected to the shared PostgreSQL store"))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("replica="))
        .map(|t| t.trim_matches('"').to_owned())
}
