//! The server's exec path under load, beside its floor measured in the same run: runs per
//! second and p50/p95 time to first event of `POST /v1/exec` (`echo hi` in a fresh bwrap
//! sandbox, through HTTP, auth, admission and SSE) at concurrency 1, 4 and 16, against the
//! same command run directly in `bwrap` (the bare jail: `--unshare-all --ro-bind / /`) with
//! its time to first byte of output.
//!
//! Run with `cargo xtask bench server` (release build, Linux with bubblewrap).

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use computeragent::RuntimeConfig;
    use computeragent::server::{Server, ServerConfig};
    use tokio::io::AsyncReadExt;

    /// Requests per concurrency level.
    const REQUESTS: usize = 96;
    const TOKEN: &str = "bench-token";

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i]
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    /// Time to first output byte of `echo hi` in a bare bwrap jail.
    async fn floor_once() -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut child = tokio::process::Command::new("bwrap")
            .args([
                "--unshare-all",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "echo",
                "hi",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("run bwrap")?;
        let mut out = child.stdout.take().context("bwrap's stdout")?;
        let mut byte = [0u8; 1];
        out.read_exact(&mut byte).await?;
        let first = started.elapsed();
        child.wait().await?;
        Ok(first)
    }

    /// Time to first output byte of `echo hi` through the runtime's own jail (no server).
    async fn runtime_once(substrate: &runtime_bwrap::BwrapSubstrate) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut process = substrate
            .spawn(&substrate_core::BootSpec::new("bench"), ["echo", "hi"])
            .await?;
        let mut out = process.take_stdout().context("stdout")?;
        let mut byte = [0u8; 1];
        out.read_exact(&mut byte).await?;
        let first = started.elapsed();
        process.wait().await?;
        Ok(first)
    }

    /// Time to the first `stdout` frame of `POST /v1/exec`.
    async fn server_once(http: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut response = http
            .post(format!("{url}/v1/exec"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"command": ["echo", "hi"]}))
            .send()
            .await?;
        if response.status() != 200 {
            bail!("the server answered {}", response.status());
        }
        let mut seen = String::new();
        let mut first = None;
        while let Some(chunk) = response.chunk().await? {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if first.is_none() && seen.contains("event: stdout") {
                first = Some(started.elapsed());
            }
        }
        if !seen.contains("event: exit") {
            bail!("no exit frame: {seen}");
        }
        first.context("no stdout frame")
    }

    /// `REQUESTS` calls of `one` by `concurrency` workers: sorted latencies and runs/s.
    async fn load<F, Fut>(concurrency: usize, one: F) -> anyhow::Result<(Vec<Duration>, f64)>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<Duration>> + Send,
    {
        let one = Arc::new(one);
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let one = one.clone();
            workers.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..REQUESTS / concurrency {
                    times.push(one().await?);
                }
                Ok::<_, anyhow::Error>(times)
            }));
        }
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await??);
        }
        let rate = all.len() as f64 / started.elapsed().as_secs_f64();
        all.sort();
        Ok((all, rate))
    }

    pub async fn run() -> anyhow::Result<()> {
        let stage = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
        let runtimes = RuntimeConfig {
            stage_dir: stage.parent().map(Into::into),
            ..RuntimeConfig::default()
        };
        let mut config = ServerConfig::from_toml(&format!(
            "tokens = [\"{TOKEN}\"]\nmax_concurrent_runs = 16\n[groups.default]\nruntime = \"bwrap\"\n"
        ))?;
        config.bind = "127.0.0.1:0".parse()?;
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = Server::with_runtimes(config, runtimes);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        let http = reqwest::Client::new();
        // Warm both paths once.
        floor_once().await?;
        server_once(&http, &url).await?;
        let jail = Arc::new(runtime_bwrap::BwrapSubstrate::new(&stage));
        println!(
            "exec path, {REQUESTS} runs each   server p50 / p95 (runs/s)        runtime jail p50 / p95 (runs/s)    bwrap floor p50 / p95 (runs/s)     p50 ratio to floor   runs/s ratio to floor"
        );
        for concurrency in [1usize, 4, 16] {
            let (floor, floor_rate) = load(concurrency, floor_once).await?;
            let j = jail.clone();
            let (jailed, jail_rate) = load(concurrency, move || {
                let j = j.clone();
                async move { runtime_once(&j).await }
            })
            .await?;
            let h = http.clone();
            let u = url.clone();
            let (served_times, served_rate) = load(concurrency, move || {
                let h = h.clone();
                let u = u.clone();
                async move { server_once(&h, &u).await }
            })
            .await?;
            let (s50, s95) = (
                percentile(&served_times, 0.5),
                percentile(&served_times, 0.95),
            );
            let (f50, f95) = (percentile(&floor, 0.5), percentile(&floor, 0.95));
            let (j50, j95) = (percentile(&jailed, 0.5), percentile(&jailed, 0.95));
            println!(
                "concurrency {concurrency:>2}                {:>7.1} / {:>7.1} ms ({:>6.1})    {:>7.1} / {:>7.1} ms ({:>6.1})    {:>7.1} / {:>7.1} ms ({:>6.1})      {:>5.1}x               {:>5.2}x",
                ms(s50),
                ms(s95),
                served_rate,
                ms(j50),
                ms(j95),
                jail_rate,
                ms(f50),
                ms(f95),
                floor_rate,
                ms(s50) / ms(f50),
                served_rate / floor_rate,
            );
        }
        let _ = stop.send(());
        served.await??;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    linux::run().await
}

#[cfg(not(target_os = "linux"))]
fn main() -> anyhow::Result<()> {
    anyhow::bail!("the server benchmark runs bubblewrap sandboxes: Linux only")
}
