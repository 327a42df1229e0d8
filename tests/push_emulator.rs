//! README's "Push mode against the emulator" block, run as written by bash (in a temporary
//! directory, on free ports, with this build's binary): the emulator started with
//! `--webhook-ca-file` validates the collector's webhook and delivers notifications to it. Without
//! the flag the validation fails (AF20021) and the collector's log carries the hint.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

/// The shell block under the README heading "### Push mode against the emulator".
fn readme_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### Push mode against the emulator")
        .nth(1)
        .expect("README has the section");
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("\n```").expect("the block ends");
    section[start..end].to_string()
}

/// The block for `dir`: the build line dropped, this build's binary and free ports put in.
fn localise(block: &str, dir: &Path) -> String {
    let collector = env!("CARGO_BIN_EXE_o365-collector");
    let mut out = String::new();
    for line in block.lines() {
        assert!(
            !line.contains("cargo run"),
            "the block should run the built binary: {line}"
        );
        if line.starts_with("cargo build") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for (port, name) in [(8444, "emulator"), (8443, "webhook"), (9090, "admin")] {
        let free = support::free_port();
        assert!(
            out.contains(&format!(":{port}")),
            "{name} port {port} in the block"
        );
        out = out.replace(&format!(":{port}"), &format!(":{free}"));
    }
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/certs/gen-dev-certs.sh"),
        dir.join("certs/gen-dev-certs.sh"),
    )
    .unwrap();
    out.replace("target/debug/o365-collector", collector)
}

/// bash running `script` in `dir`, in a process group of its own (killed whole on drop).
struct Shell(Child);

impl Shell {
    fn start(dir: &Path, script: &str) -> Shell {
        for tool in ["curl", "openssl"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "{tool} is missing: the README block needs it (apt-get install {tool}; scripts/test does)"
            );
        }
        std::fs::write(dir.join("block.sh"), script).unwrap();
        let child = Command::new("bash")
            .args(["-euo", "pipefail", "block.sh"])
            .current_dir(dir)
            .env("RUST_LOG", "info,o365_collector::webhook=debug")
            .stdout(std::fs::File::create(dir.join("block.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("block.err")).unwrap())
            .process_group(0)
            .spawn()
            .expect("bash starts");
        Shell(child)
    }

    /// Waits for the script's exit (`within`), failing with its output and the logs.
    fn finish(&mut self, dir: &Path, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the README block did not finish within {within:?}\n{}",
                report(dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn report(dir: &Path) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}\n--- collector.log\n{}\n--- emulator.log\n{}",
        read(dir.join("block.out")),
        read(dir.join("block.err")),
        read(dir.join("var/push/collector.log")),
        read(dir.join("var/push/emulator.log")),
    )
}

#[test]
fn the_readme_push_block_delivers_by_webhook() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let script = localise(&readme_block(), dir);
    assert!(script.contains("--webhook-ca-file certs/ca.pem"));
    let mut sh = Shell::start(dir, &script);
    let status = sh.finish(dir, Duration::from_secs(120));
    assert!(
        status.success(),
        "the block failed: {status}\n{}",
        report(dir)
    );
    let events = read(dir.join("var/push/events.ndjson"));
    assert_eq!(events.lines().count(), 1000, "{}", report(dir));
    let log = read(dir.join("var/push/collector.log"));
    assert!(
        log.contains("answered Microsoft's webhook validation call"),
        "{log}"
    );
    assert!(
        log.contains("notifications stored"),
        "notifications came by webhook:\n{log}"
    );
    assert!(!log.contains("AF20021"), "{log}");
    assert!(read(dir.join("block.out")).contains("1000 var/push/events.ndjson"));
}

#[test]
fn without_the_webhook_ca_the_validation_fails_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let block = readme_block();
    let cut = block
        .find("until grep -q 'subscription started'")
        .expect("the block waits for the subscription");
    let block = block[..cut].replace(" --webhook-ca-file certs/ca.pem", "")
        + "until grep -q AF20021 var/push/collector.log; do sleep 0.2; done\n\
           kill $COLLECTOR $EMULATOR\n";
    let script = localise(&block, dir);
    assert!(!script.contains("--webhook-ca-file"));
    let mut sh = Shell::start(dir, &script);
    let status = sh.finish(dir, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", report(dir));
    let log = read(dir.join("var/push/collector.log"));
    let line = log
        .lines()
        .find(|l| l.contains("AF20021"))
        .expect("an AF20021 line");
    // Logged once, when the tenant's problem starts (again every 15 minutes while it lasts).
    assert!(line.contains("tenant problem started"), "{line}");
    assert!(line.contains("reason=\"webhook_not_validated\""), "{line}");
    assert!(
        line.contains(o365_collector::mgmt_api::WEBHOOK_VALIDATION_HINT),
        "the hint in the line: {line}"
    );
    for needed in ["reachable from outside", "public root", "--webhook-ca-file"] {
        assert!(line.contains(needed), "{needed}: {line}");
    }
    assert!(
        !log.contains("subscription started"),
        "no subscription without a validated webhook:\n{log}"
    );
}
