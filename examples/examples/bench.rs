//! Benchmarks of the harness path, each reported beside a baseline measured in the same run:
//!
//! - cold start: spawn → healthy, for the harness vs a bare `node` HTTP server on a Unix socket;
//! - event throughput: a finished session's events replayed through `HarnessClient` (parsed,
//!   typed, checked) vs the same SSE bytes read raw;
//! - file transfer: `PUT` then `GET` of 64 MiB through the harness vs a plain local file copy,
//!   both the kernel's (`std::fs::copy`) and one through a user-space buffer.
//!
//! Run with `cargo xtask bench` (a release build). Not a test: it prints figures and ratios.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use substrate_core::protocol::{CreateSession, EngineOptions};
use substrate_core::{BootSpec, Endpoint, HarnessClient, NetworkPolicy, Substrate};
use substrate_testkit::conformance::scripted_engine_envs;
use substrate_testkit::local::LocalSubstrate;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

const STARTS: usize = 10;
const FILE_BYTES: usize = 64 << 20;
const ROUNDS: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let modules = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
    let scratch = tempfile::tempdir()?;
    println!(
        "benchmark                          measured          baseline          ratio   target"
    );
    cold_start(&modules, scratch.path()).await?;
    let substrate = LocalSubstrate::new(&modules).base_dir(scratch.path().join("boots"));
    let harness = substrate
        .boot_harness(BootSpec::new("bench").network(NetworkPolicy::Host))
        .await?;
    let outcome = async {
        events(&harness.client()?, &harness).await?;
        files(&harness.client()?, scratch.path()).await
    }
    .await;
    harness.shutdown().await?;
    outcome
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn cold_start(modules: &Path, scratch: &Path) -> anyhow::Result<()> {
    // Baseline: the smallest node HTTP server that answers on a Unix socket.
    let bare = scratch.join("bare.mjs");
    std::fs::write(
        &bare,
        "import http from 'node:http';\
         http.createServer((q, r) => r.end('{\"ok\":true,\"version\":\"0\"}')).listen(process.env.SOCK);",
    )?;
    let mut baseline = Vec::new();
    for i in 0..STARTS {
        let sock = scratch.join(format!("bare-{i}.sock"));
        let started = Instant::now();
        let mut child = tokio::process::Command::new("node")
            .arg(&bare)
            // The same environment the harness gets: a clean one (host variables such as
            // NODE_EXTRA_CA_CERTS cost node tens of milliseconds at start).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SOCK", &sock)
            .kill_on_drop(true)
            .spawn()?;
        let client = HarnessClient::new(Endpoint::Unix(sock), None)?;
        client.wait_healthy(Duration::from_secs(20), None).await?;
        baseline.push(started.elapsed());
        child.kill().await?;
    }
    let substrate = LocalSubstrate::new(modules).base_dir(scratch.join("starts"));
    let mut measured = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let harness = substrate
            .boot_harness(BootSpec::new("start").network(NetworkPolicy::Host))
            .await?;
        measured.push(started.elapsed());
        harness.shutdown().await?;
    }
    let (m, b) = (median(measured), median(baseline));
    println!(
        "cold start to healthy (median/{STARTS})  {:>10.1?}        {:>10.1?}        {:>5.2}×   ≤ 1.5×",
        m,
        b,
        m.as_secs_f64() / b.as_secs_f64()
    );
    Ok(())
}

async fn events(
    client: &HarnessClient,
    harness: &substrate_core::BootedHarness,
) -> anyhow::Result<()> {
    // A session with many events: the scripted model streams a long answer in small deltas and
    // the engine forwards each as a partial message.
    let chunks = 4000;
    let model = ScriptedModel::start(Script::new().reply(Reply::slow_text(
        &"event ".repeat(chunks),
        chunks,
        Duration::ZERO,
    )))
    .await?;
    let mut req = CreateSession::new("claude-agent-sdk");
    req.envs = scripted_engine_envs(&model.base_url());
    req.messages.push("stream".into());
    req.streaming_input = Some(false);
    req.options = Some(EngineOptions {
        include_partial_messages: Some(true),
        ..EngineOptions::default()
    });
    let id = client.create_session(&req).await?.session_id;
    let total = client.events(&id, None).await?.collect_all().await?.len();
    if total < 1000 {
        bail!("only {total} events; the benchmark needs a long stream");
    }
    // Replays of the finished session: typed client vs raw bytes.
    let rounds = 5;
    let started = Instant::now();
    for _ in 0..rounds {
        let n = client.events(&id, None).await?.collect_all().await?.len();
        if n != total {
            bail!("replay gave {n} events, expected {total}");
        }
    }
    let typed = started.elapsed();
    let raw =
        substrate_testkit::conformance::RawHttp::new(harness.endpoint(), harness.token().expose())?;
    let started = Instant::now();
    for _ in 0..rounds {
        let bytes = raw
            .authed(reqwest::Method::GET, &format!("/v1/sessions/{id}/events"))
            .send()
            .await?
            .bytes()
            .await?;
        if bytes.is_empty() {
            bail!("empty raw stream");
        }
    }
    let raw_elapsed = started.elapsed();
    let per_sec = |d: Duration| (total * rounds) as f64 / d.as_secs_f64();
    println!(
        "event stream ({total} events ×{rounds})     {:>10.0} ev/s    {:>10.0} ev/s    {:>5.2}×   ≥ 20000 ev/s",
        per_sec(typed),
        per_sec(raw_elapsed),
        per_sec(typed) / per_sec(raw_elapsed)
    );
    Ok(())
}

async fn files(client: &HarnessClient, scratch: &Path) -> anyhow::Result<()> {
    let id = client
        .create_session(&CreateSession::new("claude-agent-sdk"))
        .await?
        .session_id;
    // `Bytes`, so that handing the body to each PUT is not a 64 MiB copy inside the timing.
    let data: bytes::Bytes = (0..FILE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let src = scratch.join("src.bin");
    std::fs::write(&src, &data)?;
    let dst = scratch.join("dst.bin");
    // Two baselines: the kernel's in-place copy (copy_file_range, no user-space pass) and a
    // copy through a user-space buffer, which is what any transfer through a process pays.
    let kernel_copy = median_of(ROUNDS, || {
        let _ = std::fs::remove_file(&dst);
        let started = Instant::now();
        std::fs::copy(&src, &dst)?;
        Ok(started.elapsed())
    })?;
    let buffer_copy = median_of(ROUNDS, || {
        let _ = std::fs::remove_file(&dst);
        let started = Instant::now();
        let mut from = std::fs::File::open(&src)?;
        let mut to = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&dst)?);
        std::io::copy(&mut from, &mut to)?;
        std::io::Write::flush(&mut to)?;
        Ok(started.elapsed())
    })?;

    let mut puts = Vec::new();
    let mut gets = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        client
            .write_file(&id, "big.bin", data.clone(), None)
            .await?;
        puts.push(started.elapsed());
        let started = Instant::now();
        let back = client.read_file(&id, "big.bin").await?;
        gets.push(started.elapsed());
        if back.len() != data.len() || back[..] != data[..] {
            bail!("64 MiB round trip returned different bytes");
        }
    }
    let mib = (FILE_BYTES >> 20) as f64;
    let rate = |d: Duration| mib / d.as_secs_f64();
    for (name, d) in [
        ("fs PUT 64 MiB", median(puts)),
        ("fs GET 64 MiB", median(gets)),
    ] {
        for (baseline, b) in [("fs::copy", kernel_copy), ("buffered copy", buffer_copy)] {
            println!(
                "{:<34} {:>8.0} MiB/s    {:>8.0} MiB/s    {:>5.2}×   ≥ 0.5×",
                format!("{name} vs {baseline}"),
                rate(d),
                rate(b),
                rate(d) / rate(b)
            );
        }
    }
    client
        .delete_session(&id)
        .await
        .context("delete the bench session")?;
    Ok(())
}

/// Runs a timed closure `rounds` times and returns the median duration.
fn median_of(
    rounds: usize,
    mut once: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Duration> {
    let mut all = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        all.push(once()?);
    }
    Ok(median(all))
}
