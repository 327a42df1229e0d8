//! The container image, built and run with podman (installed by scripts/test; a missing podman
//! fails the test): deploy/build-image.sh builds it FROM scratch, `demo` runs inside it with a
//! read-only root filesystem, as a non-root user, with every capability dropped and no new
//! privileges, and the collector inside it collects from the emulator on the host network.
//!
//! Which binary: by default the one this test suite runs (`cargo test` built it already), so the
//! suite does not spend a release build (8.5 min on two cores) on it: the image's contents and
//! the way it runs do not depend on the profile, only its size does. So that image is held to
//! "nothing but the binary and a few MiB around it", and the 40 MiB bound is checked on an image
//! built as shipped: `O365_IMAGE_PROFILE=dist` (or `release`) builds that binary,
//! `O365_IMAGE_BINARY=path` takes one built already (measured: the README, Deployment).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Above this the image is not "a binary and its few libraries".
const MAX_IMAGE_BYTES: u64 = 40 * 1024 * 1024;
/// What an image may hold besides the binary: its libraries, CA roots and the user.
const MAX_AROUND_BINARY: u64 = 8 * 1024 * 1024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// podman through deploy/podman.sh (the settings it needs inside a container).
fn podman() -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("podman").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`podman` is missing: run scripts/test, which installs it (apt-get install podman runc)"
    );
    Command::new(root().join("deploy/podman.sh"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits for `child` up to `within`; kills it past that.
fn wait_child(
    child: &mut std::process::Child,
    within: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A container removed when the test ends, however it ends.
struct Container(String);

impl Container {
    fn new(what: &str) -> Container {
        Container(format!("o365-test-{what}-{}", std::process::id()))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The image under test, removed when the test ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rmi", "--force", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The hardening every run gets: what the kustomize base sets for the pod.
const LOCKED_DOWN: [&str; 5] = [
    "--read-only",
    "--user=10001:10001",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--pull=never",
];

/// The image, and whether it was built from a shipping profile's binary (its size then counts).
fn build() -> (Image, bool) {
    let shipped = std::env::var_os("O365_IMAGE_PROFILE").is_some()
        || std::env::var_os("O365_IMAGE_BINARY").is_some();
    let profile = std::env::var("O365_IMAGE_PROFILE").unwrap_or_else(|_| "release".into());
    let tag = format!("localhost/o365-collector:test-{}", std::process::id());
    let started = Instant::now();
    let mut cmd = Command::new(root().join("deploy/build-image.sh"));
    cmd.args(["--profile", &profile, "--tag", &tag])
        .env("CARGO_TERM_COLOR", "never");
    // A binary built elsewhere (e.g. by the CI's own cargo step) instead of cargo's.
    if let Some(b) = std::env::var_os("O365_IMAGE_BINARY") {
        cmd.arg("--binary").arg(b);
    } else if !shipped {
        cmd.arg("--binary")
            .arg(env!("CARGO_BIN_EXE_o365-collector"));
    }
    let out = run(&mut cmd);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let from = match std::env::var("O365_IMAGE_BINARY") {
        Ok(b) => b,
        Err(_) if shipped => format!("--profile {profile}"),
        Err(_) => "the test suite's binary".to_owned(),
    };
    println!(
        "image: deploy/build-image.sh ({from}) took {:.1} s ({})",
        took.as_secs_f64(),
        stderr
            .lines()
            .find(|l| l.contains("cargo build --profile"))
            .unwrap_or("cargo: no line")
    );
    print!("{stdout}");
    (Image(tag), shipped)
}

/// Which files the image holds: exported from a created (never started) container.
fn files_of(image: &str) -> Vec<String> {
    let c = Container::new("files");
    run(podman().args(["create", "--name", &c.0, image]));
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("fs.tar");
    run(podman().args(["export", "--output"]).arg(&tar).arg(&c.0));
    let out = run(Command::new("tar").arg("-tvf").arg(&tar));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn image_builds_from_scratch_and_runs_locked_down() {
    let (image, shipped) = build();
    let tag = image.0.as_str();

    // Size, user, what it runs, and nothing but the binary, its libraries, CA roots and the user.
    let inspect = run(podman().args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}|{{.Config.User}}|{{.Config.Entrypoint}}|{{.Config.Cmd}}",
        tag,
    ]));
    let inspect = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let fields: Vec<&str> = inspect.split('|').collect();
    let size: u64 = fields[0].parse().unwrap();
    println!(
        "image: {tag}: {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );
    assert_eq!(fields[1], "10001:10001");
    assert_eq!(fields[2], "[/usr/local/bin/o365-collector]");
    assert_eq!(fields[3], "[run --config /etc/o365-collector/config.yaml]");
    let files = files_of(tag);
    let libs: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("lib") || f.starts_with("usr/lib"))
        .collect();
    assert!(
        libs.iter().all(|l| l.contains(".so")),
        "only shared libraries: {files:?}"
    );
    let mut rest: Vec<&str> = files
        .iter()
        .filter(|f| !libs.contains(f))
        .map(String::as_str)
        .collect();
    rest.sort_unstable();
    assert_eq!(
        rest,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/o365-collector",
        ],
        "nothing else in the image"
    );
    println!("image: files: {files:?}");

    // `demo` inside: emulator and collector in the container, no network but loopback.
    let demo = Container::new("demo");
    let started = Instant::now();
    let mut child = podman()
        .args(["run", "--name", &demo.0])
        .args(LOCKED_DOWN)
        .args([
            "--network=none",
            tag,
            "demo",
            "--records",
            "5000",
            "--timeout",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child, Duration::from_secs(300), "demo in the image");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "demo in the image: {status}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().next().unwrap_or_default();
    assert!(
        summary.starts_with(
            "demo: 6000 of 6000 records delivered exactly once (0 missing, 0 duplicated) in "
        ),
        "{stdout}"
    );
    println!(
        "image: demo exited 0 in {:.1} s: {summary}",
        started.elapsed().as_secs_f64()
    );

    collects_from_the_emulator_on_the_host_network(tag);
    if shipped {
        assert!(
            size <= MAX_IMAGE_BYTES,
            "the image is {size} bytes, over {MAX_IMAGE_BYTES}"
        );
    } else {
        // The image holds the binary without its debug info (build-image.sh strips it).
        let dir = tempfile::tempdir().unwrap();
        let stripped = dir.path().join("o365-collector");
        std::fs::copy(env!("CARGO_BIN_EXE_o365-collector"), &stripped).unwrap();
        run(Command::new("strip").arg("--strip-debug").arg(&stripped));
        let binary = std::fs::metadata(&stripped).unwrap().len();
        let around = size.saturating_sub(binary);
        println!(
            "image: {around} bytes besides the binary ({:.1} MiB); the shipped (dist) image is 27.4 MiB (deploy/README.md)",
            around as f64 / 1048576.0
        );
        assert!(
            around <= MAX_AROUND_BINARY,
            "{around} bytes besides the binary, over {MAX_AROUND_BINARY}"
        );
    }
}

/// The collector in the image, in push mode against the emulator this test runs on the host: its
/// webhook is enabled, announced blobs are fetched and every record reaches the file output on
/// the mounted volume exactly once; SIGTERM (`podman stop`) ends it with 0.
fn collects_from_the_emulator_on_the_host_network(tag: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let emu = emulator(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let s = setup(&emu, dir.path(), &["Audit.General", "Audit.Exchange"], "");
        // The container's user (10001) writes the store and the events under the same path.
        open_to_everyone(dir.path());
        let volume = format!("{0}:{0}", dir.path().display());
        let c = Container::new("collector");
        run(podman()
            .args(["run", "--detach", "--name", &c.0])
            .args(LOCKED_DOWN)
            .args(["--network=host", "--volume", &volume])
            // The secret from this process's environment, not the command line.
            .args(["--env", "TEST_CLIENT_SECRET", "--env", "RUST_LOG=info"])
            .env("TEST_CLIENT_SECRET", SECRET)
            .args([tag, "run", "--config"])
            .arg(&s.config));
        let logs = || {
            let out = podman().args(["logs", &c.0]).output().unwrap();
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout)
        };
        wait_for(
            Duration::from_secs(60),
            "the collector in the container listens",
            || async { logs().contains("admin listener ready") },
        )
        .await;
        wait_webhooks_enabled(&emu, &["Audit.General", "Audit.Exchange"]).await;
        generate(&emu, "Audit.General", 600, 6).await;
        generate(&emu, "Audit.Exchange", 400, 4).await;
        let published = published_ids(&emu).await;
        assert_eq!(published.len(), 1000);
        wait_for(
            Duration::from_secs(120),
            "every record in the output",
            || async { line_count(&s.events) >= 1000 },
        )
        .await;
        assert_exactly_once(&published, &output_ids(&s.events));
        run(podman().args(["stop", "--time", "30", &c.0]));
        let code = run(podman().args(["inspect", "--format", "{{.State.ExitCode}}", &c.0]));
        let logs = logs();
        assert_eq!(
            String::from_utf8_lossy(&code.stdout).trim(),
            "0",
            "a clean stop:\n{logs}"
        );
        assert!(!logs.contains(SECRET), "the secret in the logs");
        println!(
            "image: the collector in the container delivered 1000 of 1000 records exactly once"
        );
    });
}

/// Lets another uid (the container's) read and write a directory tree the test made.
fn open_to_everyone(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
    }
}
