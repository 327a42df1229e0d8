//! An nginx reverse proxy for tests (Debian `nginx-light`): TLS in front of one or more
//! collectors, configured like deploy/nginx/o365-collector.conf.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// nginx from PATH or /usr/sbin; panics (never skips) when it is missing.
pub fn nginx_binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is missing: run scripts/test, which installs Debian's nginx-light")
        })
}

/// An nginx in the foreground with its own prefix, killed on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx on 127.0.0.1:`port` (TLS with `cert`/`key`), proxying only `/o365/webhook`
    /// to the collectors on 127.0.0.1:`upstreams` (round robin), like
    /// deploy/nginx/o365-collector.conf.
    pub fn start(dir: &Path, port: u16, upstreams: &[u16], cert: &Path, key: &Path) -> Nginx {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let d = dir.display();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("server 127.0.0.1:{p}; "))
            .collect();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format probe '$request_method $uri $status upstream=$upstream_addr';
    access_log {d}/logs/access.log probe;
    upstream collector {{ {servers}keepalive 4; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 1m;
        client_body_timeout 10s;
        location = /o365/webhook {{
            limit_except POST {{ deny all; }}
            proxy_pass http://collector;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 5s;
            proxy_read_timeout 30s;
            proxy_next_upstream off;
        }}
        location / {{ return 404; }}
    }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("logs/stderr.log")).unwrap())
            .spawn()
            .expect("nginx starts");
        Nginx {
            child,
            dir: dir.to_path_buf(),
        }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/access.log")).unwrap_or_default()
    }

    pub fn diagnostics(&self) -> String {
        let read =
            |f: &str| std::fs::read_to_string(self.dir.join("logs").join(f)).unwrap_or_default();
        format!("{}\n{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
