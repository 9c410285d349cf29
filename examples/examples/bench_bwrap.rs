//! Benchmarks of the bwrap runtime, each beside a baseline measured in the same run:
//!
//! - boot to healthy, p50/p95: the harness in a jail vs the floor — the same jail (mounts,
//!   namespaces, filters) running a bare `node` HTTP server on the same socket;
//! - one command in a fresh sandbox: `BwrapSubstrate::exec` vs `srt` (`@anthropic-ai/sandbox-
//!   runtime`) running the same command;
//! - 32 sandboxes booted at once on this machine: all healthy, and the wall time;
//! - PSS per idle session (proportional set size of every process of a sandbox, so pages
//!   shared between sandboxes are split between them).
//!
//! Run with `cargo xtask bench bwrap` (release build; it installs `srt` under target/).

#[cfg(target_os = "linux")]
mod linux {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use runtime_bwrap::BwrapSubstrate;
    use substrate_core::{BootSpec, Endpoint, HarnessClient, Substrate};

    const BOOTS: usize = 20;
    const EXECS: usize = 20;
    const SRT_RUNS: usize = 5;
    const CONCURRENT: usize = 32;

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i]
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    /// The bare server of the floor: the smallest node HTTP server answering health.
    const BARE: &str = "require('http').createServer((q, r) => r.end('{\"ok\":true,\"version\":\"0\"}'))\
                        .listen('/run/harness/harness.sock')";

    pub async fn run() -> anyhow::Result<()> {
        let modules = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
        let substrate = BwrapSubstrate::new(&modules);
        println!(
            "benchmark                                 measured                 baseline                 ratio     target"
        );

        // Boot to healthy vs the floor.
        let mut harness_times = Vec::new();
        let mut floor_times = Vec::new();
        for _ in 0..BOOTS {
            let started = Instant::now();
            let floor = substrate
                .spawn(
                    &BootSpec::new("floor"),
                    ["/opt/harness/bin/node", "-e", BARE],
                )
                .await?;
            let client =
                HarnessClient::new(Endpoint::Unix(floor.run_dir().join("harness.sock")), None)?;
            client.wait_healthy(Duration::from_secs(20), None).await?;
            floor_times.push(started.elapsed());
            floor.kill().await?;

            let started = Instant::now();
            let harness = substrate.boot_harness(BootSpec::new("boot")).await?;
            harness_times.push(started.elapsed());
            harness.shutdown().await?;
        }
        harness_times.sort();
        floor_times.sort();
        let (h50, h95) = (
            percentile(&harness_times, 0.5),
            percentile(&harness_times, 0.95),
        );
        let (f50, f95) = (
            percentile(&floor_times, 0.5),
            percentile(&floor_times, 0.95),
        );
        println!(
            "boot to healthy p50/p95 (n={BOOTS})            {:>6.1} / {:>6.1} ms      {:>6.1} / {:>6.1} ms      {:>5.2}×    ≤ 1.3× (p50)",
            ms(h50),
            ms(h95),
            ms(f50),
            ms(f95),
            ms(h50) / ms(f50)
        );

        // One command in a fresh sandbox vs srt.
        let mut ours = Vec::new();
        for _ in 0..EXECS {
            let started = Instant::now();
            let out = substrate
                .exec(&BootSpec::new("exec"), ["/bin/echo", "hi"])
                .await?;
            ours.push(started.elapsed());
            if out.stdout != b"hi\n" {
                bail!("exec printed {:?}", String::from_utf8_lossy(&out.stdout));
            }
        }
        ours.sort();
        let ours50 = percentile(&ours, 0.5);
        match srt() {
            Ok(srt) => {
                let mut theirs = Vec::new();
                for _ in 0..SRT_RUNS {
                    let started = Instant::now();
                    let out = std::process::Command::new(&srt)
                        .args(["-c", "echo hi"])
                        .output()
                        .context("run srt")?;
                    theirs.push(started.elapsed());
                    if out.stdout != b"hi\n" {
                        bail!(
                            "srt printed {:?} {:?}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
                theirs.sort();
                let theirs50 = percentile(&theirs, 0.5);
                println!(
                    "`echo hi` in a fresh sandbox, p50          {:>10.1} ms            {:>10.1} ms (srt)    {:>5.1}× faster  ≥ 10×",
                    ms(ours50),
                    ms(theirs50),
                    ms(theirs50) / ms(ours50)
                );
            }
            Err(e) => println!(
                "`echo hi` in a fresh sandbox, p50          {:>10.1} ms            srt NOT MEASURED: {e:#}",
                ms(ours50)
            ),
        }

        // 32 at once, then PSS per idle session.
        let started = Instant::now();
        let boots = (0..CONCURRENT).map(|i| {
            let substrate = substrate.clone();
            async move {
                substrate
                    .boot_harness(BootSpec::new(format!("many-{i}")))
                    .await
            }
        });
        let results = futures_util::future::join_all(boots).await;
        let wall = started.elapsed();
        let mut harnesses = Vec::new();
        let mut failures = Vec::new();
        for r in results {
            match r {
                Ok(h) => harnesses.push(h),
                Err(e) => failures.push(e.to_string()),
            }
        }
        for h in &harnesses {
            h.client()?.health().await?;
        }
        println!(
            "{CONCURRENT} concurrent boots                         {:>3}/{CONCURRENT} healthy in {:>6.0} ms                                   all healthy",
            harnesses.len(),
            ms(wall)
        );
        let mut pss_total = 0u64;
        for h in &harnesses {
            let Endpoint::Unix(sock) = h.endpoint() else {
                continue;
            };
            pss_total += sandbox_pss(sock.parent().and_then(Path::parent).context("boot dir")?)?;
        }
        if !harnesses.is_empty() {
            let per = pss_total as f64 / harnesses.len() as f64 / 1024.0;
            println!(
                "PSS per idle session ({} sessions)          {:>10.1} MiB                                                ≤ 60 MiB",
                harnesses.len(),
                per
            );
        }
        for h in harnesses {
            h.shutdown().await?;
        }
        if !failures.is_empty() {
            bail!(
                "{} of {CONCURRENT} concurrent boots failed: {}",
                failures.len(),
                failures[0]
            );
        }
        Ok(())
    }

    /// PSS (KiB) of every process of the sandbox whose boot directory is `dir`: bwrap, the
    /// sandbox's init and everything under it.
    fn sandbox_pss(dir: &Path) -> anyhow::Result<u64> {
        let init: i32 = std::fs::read_to_string(dir.join("sandbox"))?
            .trim()
            .parse()?;
        let mut pids = vec![init];
        if let Some(parent) = parent_of(init) {
            pids.push(parent); // the outer bwrap
        }
        let mut i = 0;
        while i < pids.len() {
            for child in children_of(pids[i]) {
                if !pids.contains(&child) {
                    pids.push(child);
                }
            }
            i += 1;
        }
        let mut total = 0;
        for pid in pids {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("Pss:") {
                    total += v
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    fn parent_of(pid: i32) -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn children_of(pid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
        out
    }

    /// `srt` installed under target/bench-tools (npm, pinned), with its Linux dependencies.
    fn srt() -> anyhow::Result<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tools/srt");
        let bin = root.join("node_modules/.bin/srt");
        if !bin.exists() {
            std::fs::create_dir_all(&root)?;
            std::fs::write(root.join("package.json"), "{\"private\":true}")?;
            let status = std::process::Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "@anthropic-ai/sandbox-runtime@0.0.83",
                ])
                .current_dir(&root)
                .status()
                .context("npm install @anthropic-ai/sandbox-runtime")?;
            if !status.success() {
                bail!("npm install @anthropic-ai/sandbox-runtime failed ({status})");
            }
        }
        for (tool, package) in [("rg", "ripgrep"), ("socat", "socat")] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !found {
                bail!("srt needs `{tool}`: apt-get install {package}");
            }
        }
        Ok(bin)
    }
}

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    linux::run().await
}

#[cfg(not(target_os = "linux"))]
fn main() -> anyhow::Result<()> {
    anyhow::bail!("the bwrap benchmarks need Linux")
}
