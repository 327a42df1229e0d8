//! Emulator throughput: blobs of 10,000 synthetic records served over HTTPS to an in-process
//! reqwest client. Prints MB/s (median of several runs), request latency p50/p90/p99 and peak RSS.
//! Run: `cargo bench --bench emulator`.

use std::time::{Duration, Instant};

use o365_emulator::{Emulator, EmulatorConfig, GenerateRequest, TenantSpec};

const TENANT: &str = "6a1b2c3d-0000-4000-8000-0000000000b1";
const CLIENT: &str = "0c1a0000-0000-4000-8000-0000000000b1";
const SECRET: &str = "bench";
const RECORDS_PER_BLOB: usize = 10_000;
const BLOBS: usize = 8;
const RUNS: usize = 7;
const FETCHES_PER_RUN: usize = 32;
const CONCURRENCY: usize = 4;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let emu = Emulator::start(EmulatorConfig {
        tenants: vec![TenantSpec::with_secret(TENANT, CLIENT, SECRET)],
        throttle_per_minute: u32::MAX,
        ..EmulatorConfig::default()
    })
    .await?;
    let http = emu.client()?;

    let mut ids = Vec::new();
    let mut total_secs = 0.0;
    for ct in ["Audit.AzureActiveDirectory", "Audit.SharePoint"] {
        let started = Instant::now();
        ids.extend(
            emu.generate(GenerateRequest {
                tenant_id: TENANT.into(),
                content_type: ct.into(),
                records: RECORDS_PER_BLOB * BLOBS / 2,
                blobs: BLOBS / 2,
                created: None,
            })
            .await?,
        );
        let secs = started.elapsed().as_secs_f64();
        total_secs += secs;
        println!(
            "generate {ct}: {} records in {secs:.2} s ({:.0} records/s, serialised once into blobs)",
            RECORDS_PER_BLOB * BLOBS / 2,
            (RECORDS_PER_BLOB * BLOBS / 2) as f64 / secs
        );
    }
    println!(
        "generated {} records in {} blobs in {total_secs:.2} s",
        RECORDS_PER_BLOB * BLOBS,
        ids.len()
    );

    let token: serde_json::Value = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emu.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", &format!("{}/.default", emu.base_url())),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .ok_or("no token")?
        .to_string();
    for ct in ["Audit.AzureActiveDirectory", "Audit.SharePoint"] {
        http.post(format!(
            "{}/subscriptions/start?contentType={ct}",
            emu.feed_url(TENANT)
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?;
    }
    let uris: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "{}/audit/{id}?PublisherIdentifier={CLIENT}",
                emu.feed_url(TENANT)
            )
        })
        .collect();

    // Warm-up: one fetch per blob, also gives the blob sizes.
    let mut sizes = Vec::new();
    for u in &uris {
        sizes.push(
            http.get(u)
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?
                .len(),
        );
    }
    let avg = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    println!(
        "blob size: {:.1} MB average ({} records each)",
        avg / 1e6,
        RECORDS_PER_BLOB
    );

    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    for run in 0..RUNS {
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..CONCURRENCY {
            let http = http.clone();
            let token = token.clone();
            let uris = uris.clone();
            tasks.push(tokio::spawn(async move {
                let mut bytes = 0usize;
                let mut lat = Vec::new();
                for i in (worker..FETCHES_PER_RUN).step_by(CONCURRENCY) {
                    let t = Instant::now();
                    let body = http
                        .get(&uris[i % uris.len()])
                        .bearer_auth(&token)
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await?;
                    lat.push(t.elapsed());
                    bytes += body.len();
                }
                Ok::<_, reqwest::Error>((bytes, lat))
            }));
        }
        let mut bytes = 0usize;
        for t in tasks {
            let (b, l) = t.await??;
            bytes += b;
            latencies.extend(l);
        }
        let secs = t0.elapsed().as_secs_f64();
        let rate = bytes as f64 / 1e6 / secs;
        println!(
            "run {run}: {FETCHES_PER_RUN} blobs, {:.1} MB in {secs:.3} s = {rate:.1} MB/s",
            bytes as f64 / 1e6
        );
        rates.push(rate);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    latencies.sort();
    println!("---");
    println!(
        "throughput: median {:.1} MB/s (min {:.1}, max {:.1}) over {RUNS} runs, concurrency {CONCURRENCY}, HTTPS/1.1, client in-process",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
    println!(
        "blob request latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms ({} requests)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
    println!(
        "peak RSS: {:.1} MiB",
        o365_collector::telemetry::peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    emu.shutdown().await;
    Ok(())
}
