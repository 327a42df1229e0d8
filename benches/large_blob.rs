//! Large blobs end to end: the release binary (`o365-collector run`, pull mode, file output with
//! fsync) against the emulator running in its own process (`o365-collector emulator`), so what is
//! measured is the collector process alone. For each case the emulator publishes the records once;
//! then the collector runs several times, each with a fresh store and output file, until every
//! record is in the file. Printed per case (medians of the runs): records/s from the collector's
//! start to the last record, the time to the first record (streaming: it does not wait for the end
//! of the blob), records per CPU-second of the collector (utime + stime from /proc/PID/stat) and
//! its whole-process peak RSS (VmHWM from /proc/PID/status).
//!
//! `cargo bench --bench large_blob -- [runs] [case filter] [dedup=off] [ledger=compare]` (default
//! 3 runs, every case, record dedup on as by default; `dedup=off` sets
//! `store.record_dedup_window: 0s`). Also printed: the store file's size when the last record is
//! in, per record.
//!
//! `ledger=compare` measures what the completeness ledger costs: after one warm-up run, `runs`
//! pairs of runs with the ledger on and off (`O365_LEDGER=off`), interleaved (on, off, off, on,
//! on, off, …) so that load drifting on a shared machine hits both settings alike; printed are
//! the medians of each setting and their ratio. Records per CPU-second of the collector is the
//! figure to judge by: other processes' load lengthens the wall time, hardly the CPU time.

mod support;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TENANT: &str = "41463f53-8812-40f4-890f-865bf6e35190";
const CLIENT: &str = "2d4f5a8c-1111-4222-8333-444455556666";
const SECRET: &str = "bench-client-secret";
const TYPE: &str = "Audit.General";
const BIN: &str = env!("CARGO_BIN_EXE_o365-collector");

struct Case {
    name: &'static str,
    records: usize,
    blobs: usize,
}

const CASES: [Case; 4] = [
    Case {
        name: "1 blob x 100,000",
        records: 100_000,
        blobs: 1,
    },
    Case {
        name: "100 blobs x 1,000",
        records: 100_000,
        blobs: 100,
    },
    Case {
        name: "1 blob x 1,000,000",
        records: 1_000_000,
        blobs: 1,
    },
    Case {
        name: "1,000 blobs x 1,000",
        records: 1_000_000,
        blobs: 1_000,
    },
];

/// One collector run.
struct Run {
    secs: f64,
    /// From the start to the first record in the file.
    first_secs: f64,
    /// The store file's size once every record was delivered.
    store_bytes: u64,
    cpu_secs: f64,
    peak_rss_kib: u64,
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let dedup = !all.iter().any(|a| a == "dedup=off");
    let compare = all.iter().any(|a| a == "ledger=compare");
    let args: Vec<String> = all
        .into_iter()
        .filter(|a| !a.starts_with("--") && !a.contains('='))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let filter = args.get(1).cloned().unwrap_or_default();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = std::env::temp_dir().join(format!("o365-large-blob-{}", std::process::id()));
    let mut table = Vec::new();
    for case in CASES.iter().filter(|c| c.name.contains(&filter)) {
        let dir = root.join(case.name.replace([' ', ','], "_"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut emu = Emulator::start(&dir);
        let started = Instant::now();
        rt.block_on(emu.generate(case.records, case.blobs));
        println!(
            "{}: published in {:.1} s",
            case.name,
            started.elapsed().as_secs_f64()
        );
        if compare {
            compare_ledger(&dir, &emu, case, runs, dedup);
            emu.stop();
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let mut results = Vec::new();
        for run in 0..runs {
            let r = run_collector(
                &dir.join(format!("run{run}")),
                &emu,
                case.records,
                dedup,
                true,
            );
            println!(
                "  run {run}: {:.2} s (first record after {:.2} s), {:.0} records/s, {:.0} records/CPU-s, peak RSS {} MiB, store {:.1} MiB ({:.0} bytes/record)",
                r.secs,
                r.first_secs,
                case.records as f64 / r.secs,
                case.records as f64 / r.cpu_secs,
                r.peak_rss_kib / 1024,
                r.store_bytes as f64 / (1 << 20) as f64,
                r.store_bytes as f64 / case.records as f64
            );
            results.push(r);
        }
        emu.stop();
        let _ = std::fs::remove_dir_all(&dir);
        let rate = median(results.iter().map(|r| case.records as f64 / r.secs));
        let per_cpu = median(results.iter().map(|r| case.records as f64 / r.cpu_secs));
        let first = median(results.iter().map(|r| r.first_secs));
        let rss = median(results.iter().map(|r| r.peak_rss_kib as f64)) / 1024.0;
        let per_record = median(results.iter().map(|r| r.store_bytes as f64)) / case.records as f64;
        table.push((case.name, rate, first, per_cpu, rss, per_record));
    }
    let _ = std::fs::remove_dir_all(&root);
    if compare {
        return;
    }
    println!(
        "\nlarge_blob: medians of {runs} runs (collector process only), record dedup {}",
        if dedup { "on" } else { "off" }
    );
    println!(
        "| case | records/s | first record after | records per CPU-second | peak RSS | store bytes per record |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, rate, first, per_cpu, rss, per_record) in table {
        println!(
            "| {name} | {rate:.0} | {first:.2} s | {per_cpu:.0} | {rss:.0} MiB | {per_record:.0} |"
        );
    }
}

/// `pairs` runs with the ledger on and as many with it off, interleaved after a warm-up run;
/// prints each run and the medians with their ratio (see the module doc).
fn compare_ledger(dir: &Path, emu: &Emulator, case: &Case, pairs: usize, dedup: bool) {
    let n = case.records as f64;
    run_collector(&dir.join("warm-up"), emu, case.records, dedup, true);
    // (ledger on, run): the order alternates within pairs, so neither setting always goes first.
    let mut results: Vec<(bool, Run)> = Vec::new();
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            let r = run_collector(
                &dir.join(format!("pair{pair}-{on}")),
                emu,
                case.records,
                dedup,
                on,
            );
            println!(
                "  pair {pair} ledger {}: {:.2} s, {:.0} records/s, {:.3} CPU-s, {:.0} records/CPU-s, peak RSS {} MiB",
                if on { "on " } else { "off" },
                r.secs,
                n / r.secs,
                r.cpu_secs,
                n / r.cpu_secs,
                r.peak_rss_kib / 1024
            );
            results.push((on, r));
        }
    }
    let med = |on: bool, f: &dyn Fn(&Run) -> f64| {
        median(results.iter().filter(|(o, _)| *o == on).map(|(_, r)| f(r)))
    };
    let rate = |r: &Run| n / r.secs;
    let per_cpu = |r: &Run| n / r.cpu_secs;
    let (rate_on, rate_off) = (med(true, &rate), med(false, &rate));
    let (cpu_on, cpu_off) = (med(true, &per_cpu), med(false, &per_cpu));
    println!(
        "\nlarge_blob \"{}\", ledger on vs off: medians of {pairs} interleaved pairs, record dedup {}, load average {}",
        case.name,
        if dedup { "on" } else { "off" },
        support::load_average()
    );
    println!("| figure | ledger on | ledger off | on / off |");
    println!("|---|---|---|---|");
    println!(
        "| records/s | {rate_on:.0} | {rate_off:.0} | {:.3} |",
        rate_on / rate_off
    );
    println!(
        "| records per CPU-second | {cpu_on:.0} | {cpu_off:.0} | {:.3} |",
        cpu_on / cpu_off
    );
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `o365-collector emulator` as a child process.
struct Emulator {
    child: Child,
    base: String,
    ca: PathBuf,
}

impl Emulator {
    fn start(dir: &Path) -> Emulator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ca = dir.join("emulator-ca.pem");
        let child = Command::new(BIN)
            .args(["emulator", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--ca-out")
            .arg(&ca)
            .args(["--tenant-id", TENANT, "--client-id", CLIENT])
            .args(["--client-secret", SECRET])
            .args(["--throttle-per-minute", "100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("emulator starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(ca.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(Instant::now() < deadline, "emulator did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Emulator {
            child,
            base: format!("https://127.0.0.1:{port}"),
            ca,
        }
    }

    async fn generate(&self, records: usize, blobs: usize) {
        let pem = std::fs::read(&self.ca).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap();
        let resp = client
            .post(format!("{}/_emulator/generate", self.base))
            .json(
                &serde_json::json!({"tenant_id": TENANT, "content_type": TYPE,
                "records": records, "blobs": blobs}),
            )
            .send()
            .await
            .expect("generate");
        assert!(resp.status().is_success(), "generate: {}", resp.status());
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the collector in pull mode until `records` lines are in its file; returns its numbers.
/// `ledger` false turns the completeness ledger off (`O365_LEDGER=off`).
fn run_collector(dir: &Path, emu: &Emulator, records: usize, dedup: bool, ledger: bool) -> Run {
    std::fs::create_dir_all(dir).unwrap();
    let events = dir.join("events.ndjson");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "client_id: {CLIENT}\ntenant_id: {TENANT}\nclient_secret: {SECRET}\nresource: {base}\n\
             content_type: {TYPE}\nlast_value_storage: {store}\nlisten:\n  admin: 127.0.0.1:0\n\
             outbound:\n  ca_file: {ca}\npull:\n  interval: 1s\n\
             outputs:\n  file:\n    type: file\n    path: {events}\n{dedup}",
            dedup = if dedup {
                ""
            } else {
                "store:\n  record_dedup_window: 0s\n"
            },
            base = emu.base,
            store = dir.join("store").display(),
            ca = emu.ca.display(),
            events = events.display(),
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env("O365_LEDGER", if ledger { "on" } else { "off" })
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("collector.log")).unwrap())
        .spawn()
        .expect("collector starts");
    let pid = child.id();
    let mut lines = LineCounter::default();
    let deadline = started + Duration::from_secs(600);
    let mut first_secs = None;
    loop {
        let n = lines.count(&events);
        if n > 0 && first_secs.is_none() {
            first_secs = Some(started.elapsed().as_secs_f64());
        }
        if n >= records {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "collector exited ({status}): {}",
                std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "collector too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let store_bytes = std::fs::metadata(dir.join("store").join("queue.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let cpu_secs = cpu_seconds(pid);
    let peak_rss_kib = peak_rss_kib(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(
        lines.count(&events),
        records,
        "exactly the records published"
    );
    let _ = std::fs::remove_dir_all(dir);
    Run {
        secs,
        first_secs: first_secs.unwrap_or(secs),
        store_bytes,
        cpu_secs,
        peak_rss_kib,
    }
}

/// Counts newlines of a growing file, reading only what was added since the last call.
#[derive(Default)]
struct LineCounter {
    offset: u64,
    lines: usize,
}

impl LineCounter {
    fn count(&mut self, path: &Path) -> usize {
        let Ok(mut f) = std::fs::File::open(path) else {
            return 0;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.lines;
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return self.lines,
                Ok(n) => {
                    self.lines += buf[..n].iter().filter(|b| **b == b'\n').count();
                    self.offset += n as u64;
                }
            }
        }
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; the state (field 3) is index 0 here.
    (ticks(11) + ticks(12)) / support::clock_ticks()
}

/// VmHWM of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
