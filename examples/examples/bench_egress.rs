//! Benchmarks of the egress proxy (`substrate-egress`), each beside a baseline measured in the
//! same run. Everything runs on loopback in this process: an upstream HTTP server on
//! 127.0.0.1, the proxy on a Unix socket, the client; nothing leaves the machine.
//!
//! - throughput: a 256 MiB download from the loopback upstream through the proxy (`CONNECT`
//!   over the proxy's Unix socket, the `200` read, then a `GET` through the tunnel) vs the same
//!   `GET` on a direct TCP connection to the upstream; median of 5 each, MiB/s.
//! - added latency per CONNECT: from starting the connect to the first byte of the response
//!   to a tiny `GET` through a fresh tunnel, p50/p95, vs the same `GET` on a fresh direct TCP
//!   connection; after a warm-up. The target name is pinned in [`ProxyConfig::hosts`], so no
//!   DNS lookup is in these figures: the target (≤ 1 ms added) is the proxy's cost beyond the
//!   lookup.
//!
//! - time to first byte of the scripted model's streamed answer through the credential broker
//!   (placeholder swapped for the key, forwarded, streamed back) vs straight to the model;
//!   fresh connections, p50/p95.
//!
//! An extra, informative row for the first two: a bare relay — a Unix socket that answers `CONNECT`
//! without any checks, connects to the upstream and hands both streams to tokio's
//! `copy_bidirectional` (with the proxy's 256 KiB buffers): a relay of the same design doing
//! none of the proxy's own work (parsing, policy, timeouts, accounting, audit), so that the
//! proxy's cost can be told apart from the cost of relaying as such.
//!
//! The client reads into one reused 256 KiB buffer and the upstream writes its body from one
//! reused 1 MiB buffer, so the figures measure the path, not the endpoints. The client runs on
//! the main thread, the proxy and the upstream on the tokio runtime's workers (one per core):
//! all share this machine's cores. Any relay that reads and writes copies every byte twice
//! more than the direct path (four user/kernel copies instead of two), so where copying
//! dominates and the cores are shared, expect the download ratio to sit well below 1 even
//! for the bare relay; compare the proxy with that row.
//!
//! Run with `cargo xtask bench egress` (a release build). Not a test: it prints figures and
//! ratios.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use substrate_core::{AuditSink, BootSpec};
use substrate_egress::{
    BrokerConfig, BrokerPlan, CredentialBroker, EgressPolicy, EgressProxy, ProxyConfig,
};
use substrate_testkit::model::{Reply, Script, ScriptedModel};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The name the client asks for, pinned to the upstream's address (no DNS).
const NAME: &str = "bench.test";
/// The body of the download.
const BIG: u64 = 256 << 20;
/// The body of the latency probe.
const TINY: &[u8] = b"hello";
/// Downloads per route (the median is reported).
const ROUNDS: usize = 5;
/// Timed connects per route, and untimed ones before them.
const CONNECTS: usize = 500;
const WARMUP: usize = 50;
/// The client's read buffer.
const CLIENT_BUFFER: usize = 256 << 10;
/// The upstream's body buffer, written again and again.
const UPSTREAM_CHUNK: usize = 1 << 20;
/// The bare relay's buffer per direction: the proxy's own (`RELAY_BUFFER` in proxy.rs).
const BARE_RELAY_BUFFER: usize = 256 << 10;

/// How the client reaches the upstream.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    /// TCP straight to the upstream.
    Direct(SocketAddr),
    /// `CONNECT bench.test:PORT` on a Unix socket (the proxy's or the bare relay's).
    Tunnel(&'a Path, u16),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let upstream = start_upstream().await?;
    let mut config = ProxyConfig::new(EgressPolicy::from_rules([NAME])?, AuditSink::default());
    config.hosts.insert(NAME.into(), vec![upstream.ip()]);
    let proxy = EgressProxy::bind(dir.path().join("egress.sock"), config)?;
    let bare = dir.path().join("bare-relay.sock");
    start_bare_relay(&bare, upstream)?;

    let direct = Route::Direct(upstream);
    let through_proxy = Route::Tunnel(proxy.path(), upstream.port());
    let through_bare = Route::Tunnel(&bare, upstream.port());
    let mut buf = vec![0u8; CLIENT_BUFFER];

    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let cpu_before = cpu_times();
    println!(
        "egress proxy on loopback; `{NAME}` pinned in ProxyConfig::hosts (no DNS lookup); client, \
         proxy and upstream in this process, {workers} cores"
    );
    row(
        "benchmark",
        "measured",
        "baseline (direct)",
        "ratio / added",
        "target",
    );

    // Throughput: a warm-up download per route, then the rounds, the routes taking turns.
    for route in [direct, through_proxy, through_bare] {
        download(route, &mut buf).await?;
    }
    let (mut d, mut p, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        d.push(download(direct, &mut buf).await?);
        p.push(download(through_proxy, &mut buf).await?);
        b.push(download(through_bare, &mut buf).await?);
    }
    let rate = |d: Duration| (BIG >> 20) as f64 / d.as_secs_f64();
    let (d, p, b) = (rate(median(d)), rate(median(p)), rate(median(b)));
    row(
        &format!("256 MiB download, median of {ROUNDS}: proxy"),
        &format!("{p:>6.0} MiB/s"),
        &format!("{d:>6.0} MiB/s"),
        &format!("{:>5.2}×", p / d),
        &format!("≥ 0.80×  {}", verdict(p / d >= 0.80)),
    );
    row(
        BARE_ROW,
        &format!("{b:>6.0} MiB/s"),
        &format!("{d:>6.0} MiB/s"),
        &format!("{:>5.2}×", b / d),
        "(informative)",
    );

    // Latency: a warm-up, then the routes taking turns, one fresh connection each time.
    for _ in 0..WARMUP {
        for route in [direct, through_proxy, through_bare] {
            first_byte(route, &mut buf).await?;
        }
    }
    let (mut d, mut p, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..CONNECTS {
        d.push(first_byte(direct, &mut buf).await?);
        p.push(first_byte(through_proxy, &mut buf).await?);
        b.push(first_byte(through_bare, &mut buf).await?);
    }
    let (d, p, b) = (percentiles(d), percentiles(p), percentiles(b));
    let pair = |(p50, p95): (Duration, Duration)| format!("{:>5.3} / {:>5.3} ms", ms(p50), ms(p95));
    let added = |(p50, p95): (Duration, Duration)| {
        format!("+{:.3} / +{:.3} ms", ms(p50) - ms(d.0), ms(p95) - ms(d.1))
    };
    row(
        "connect → 1st byte of tiny GET, p50/p95: proxy",
        &pair(p),
        &pair(d),
        &added(p),
        &format!("≤ +1 ms (p50)  {}", verdict(ms(p.0) - ms(d.0) <= 1.0)),
    );
    row(BARE_ROW, &pair(b), &pair(d), &added(b), "(informative)");

    // Time to the first byte of the scripted model's stream: through the broker vs direct.
    let (broker_ttfb, direct_ttfb) = broker_first_bytes(dir.path(), &mut buf).await?;
    let (b50, d50) = (ms(broker_ttfb.0), ms(direct_ttfb.0));
    row(
        "model stream's 1st byte, p50/p95: broker",
        &pair(broker_ttfb),
        &pair(direct_ttfb),
        &format!("{:>5.2}× (p50)", b50 / d50),
        &format!("≤ 1.10×  {}", verdict(b50 / d50 <= 1.10)),
    );
    println!(
        "(throughput: start of connect → last body byte; latency: n = {CONNECTS} fresh connections \
         per route after {WARMUP} untimed, no DNS in either column)"
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_times()) {
        let total = after.total.saturating_sub(before.total).max(1);
        let others = after
            .busy
            .saturating_sub(before.busy)
            .saturating_sub(after.own.saturating_sub(before.own));
        println!(
            "(other processes and steal took {:.0}% of the machine's CPU time during the run; \
             the figures are only comparable when this is near 0)",
            100.0 * others as f64 / total as f64
        );
    }
    Ok(())
}

/// Requests per route for the broker's time to first byte.
const MODEL_REQUESTS: usize = 200;

/// The scripted model behind the credential broker, and the time from sending a streamed
/// Messages request to its first response byte: (through the broker, direct), p50/p95 each.
/// Fresh connections both ways; the routes take turns.
async fn broker_first_bytes(
    dir: &Path,
    buf: &mut [u8],
) -> anyhow::Result<((Duration, Duration), (Duration, Duration))> {
    let model = ScriptedModel::start(Script::new().reply(Reply::text("hi"))).await?;
    let spec = BootSpec::new("bench")
        .env("ANTHROPIC_API_KEY", "sk-ant-bench")
        .env("ANTHROPIC_BASE_URL", model.base_url());
    let plan =
        BrokerPlan::for_spec(&spec, "http://127.0.0.1:3129")?.context("the key is brokered")?;
    let placeholder = plan
        .engine_envs
        .get("ANTHROPIC_API_KEY")
        .context("a placeholder")?
        .expose()
        .to_owned();
    let broker = CredentialBroker::bind(
        dir.join("broker.sock"),
        &plan,
        BrokerConfig::new(AuditSink::default()),
    )?;
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = |path: &str, key: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let via_broker = request("/anthropic/v1/messages", &placeholder);
    let direct = request("/v1/messages", "sk-ant-bench");
    let (mut b, mut d) = (Vec::new(), Vec::new());
    for i in 0..(MODEL_REQUESTS + WARMUP) {
        let started = Instant::now();
        let mut s = UnixStream::connect(broker.path()).await?;
        s.write_all(via_broker.as_bytes()).await?;
        ensure!(
            s.read(buf).await? > 0,
            "the broker closed without answering"
        );
        let through = started.elapsed();
        drain(&mut s, buf).await?;
        let started = Instant::now();
        let mut s = TcpStream::connect(model.addr()).await?;
        s.write_all(direct.as_bytes()).await?;
        ensure!(s.read(buf).await? > 0, "the model closed without answering");
        let straight = started.elapsed();
        drain(&mut s, buf).await?;
        if i >= WARMUP {
            b.push(through);
            d.push(straight);
        }
    }
    ensure!(
        model.model_requests().iter().all(|r| r
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-key" && v == "sk-ant-bench")),
        "a request reached the model without the real key"
    );
    Ok((percentiles(b), percentiles(d)))
}

/// CPU time in clock ticks, from /proc: the machine's total and busy time, and this process's.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    total: u64,
    busy: u64,
    own: u64,
}

fn cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command's closing parenthesis: state is the first field, utime the 12th.
    let fields: Vec<&str> = own[own.rfind(')')? + 1..].split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    let busy = user + nice + system + irq + softirq + steal;
    Some(CpuTimes {
        total: busy + idle + iowait,
        busy,
        own: utime + stime,
    })
}

/// The label of the informative rows.
const BARE_ROW: &str = "  bare relay (tokio copy_bidirectional Unix→TCP)";

/// One line of the table.
fn row(label: &str, measured: &str, baseline: &str, ratio: &str, target: &str) {
    println!("{label:<48}  {measured:<21}  {baseline:<21}  {ratio:<21}  {target}");
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// p50 and p95.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.95))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where the head of an HTTP message ends (just past its blank line), once it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &[u8]) -> anyhow::Result<u64> {
    let head = std::str::from_utf8(head).context("response head is not UTF-8")?;
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .with_context(|| format!("no content-length in {head:?}"))
}

/// The upstream: answers `GET /big` with a 256 MiB body written from one reused buffer and
/// anything else with a 5-byte body, then closes.
async fn start_upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let chunk: Arc<[u8]> = (0..UPSTREAM_CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &chunk).await;
            });
        }
    });
    Ok(addr)
}

async fn answer(mut stream: TcpStream, chunk: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    let mut piece = [0u8; 1024];
    while head_end(&head).is_none() {
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&piece[..n]);
    }
    if head.starts_with(b"GET /big ") {
        let reply =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\nconnection: close\r\n\r\n");
        stream.write_all(reply.as_bytes()).await?;
        let mut left = BIG;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
    } else {
        // Head and body in one write: one segment.
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            TINY.len()
        )
        .into_bytes();
        reply.extend_from_slice(TINY);
        stream.write_all(&reply).await?;
    }
    stream.shutdown().await
}

/// The bare relay: reads a `CONNECT` head (whatever its target), connects to the upstream,
/// answers `200` and relays with `copy_bidirectional`. No policy, no audit, no timeouts.
fn start_bare_relay(path: &Path, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = UnixListener::bind(path)?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = bare_relay(client, upstream).await;
            });
        }
    });
    Ok(())
}

async fn bare_relay(mut client: UnixStream, upstream: SocketAddr) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(4096);
    let mut piece = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        let n = client.read(&mut piece).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&piece[..n]);
    };
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    up.write_all(&head[end..]).await?;
    tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut up,
        BARE_RELAY_BUFFER,
        BARE_RELAY_BUFFER,
    )
    .await?;
    Ok(())
}

/// A connection to the upstream, ready for a request.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Connects along `route`; for a tunnel, sends `CONNECT` and reads the `200` head (the
/// tunnel carries nothing else before the request). `buf` is scratch.
async fn open(route: Route<'_>, buf: &mut [u8]) -> anyhow::Result<Conn> {
    let (path, port) = match route {
        Route::Direct(addr) => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            return Ok(Conn::Tcp(s));
        }
        Route::Tunnel(path, port) => (path, port),
    };
    let mut s = UnixStream::connect(path)
        .await
        .with_context(|| format!("connect to {}", path.display()))?;
    s.write_all(
        format!("CONNECT {NAME}:{port} HTTP/1.1\r\nHost: {NAME}:{port}\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).await?;
        ensure!(n > 0, "the tunnel closed before answering CONNECT");
        filled += n;
        if let Some(end) = head_end(&buf[..filled]) {
            ensure!(
                buf.starts_with(b"HTTP/1.1 200") && end == filled,
                "CONNECT answered {:?}",
                String::from_utf8_lossy(&buf[..filled])
            );
            return Ok(Conn::Unix(s));
        }
        ensure!(filled < buf.len(), "CONNECT reply head too large");
    }
}

/// Sends `GET path` and reads the response head; returns the body's length and how many of
/// its bytes came with the head. `buf` is scratch.
async fn request<S>(s: &mut S, path: &str, buf: &mut [u8]) -> anyhow::Result<(u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {NAME}\r\n\r\n").as_bytes())
        .await?;
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).await?;
        ensure!(n > 0, "closed before the response head");
        filled += n;
        if let Some(end) = head_end(&buf[..filled]) {
            ensure!(
                buf.starts_with(b"HTTP/1.1 200"),
                "GET answered {:?}",
                String::from_utf8_lossy(&buf[..end])
            );
            return Ok((content_length(&buf[..end])?, (filled - end) as u64));
        }
        ensure!(filled < buf.len(), "response head too large");
    }
}

/// Reads the rest of the body into `buf`, overwriting it (`got` of `len` bytes already read).
async fn body<S>(s: &mut S, len: u64, mut got: u64, buf: &mut [u8]) -> anyhow::Result<()>
where
    S: AsyncRead + Unpin,
{
    while got < len {
        let n = s.read(buf).await?;
        ensure!(n > 0, "closed after {got} of {len} body bytes");
        got += n as u64;
    }
    ensure!(got == len, "{got} body bytes, {len} announced");
    Ok(())
}

/// Reads until the other side closes.
async fn drain<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> anyhow::Result<()> {
    while s.read(buf).await? > 0 {}
    Ok(())
}

/// One 256 MiB download: from starting the connect to the body's last byte.
async fn download(route: Route<'_>, buf: &mut [u8]) -> anyhow::Result<Duration> {
    async fn get<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        buf: &mut [u8],
    ) -> anyhow::Result<()> {
        let (len, got) = request(s, "/big", buf).await?;
        ensure!(len == BIG, "content-length {len}, expected {BIG}");
        body(s, len, got, buf).await
    }
    let started = Instant::now();
    let took = match open(route, buf).await? {
        Conn::Tcp(mut s) => {
            get(&mut s, buf).await?;
            let took = started.elapsed();
            drain(&mut s, buf).await?;
            took
        }
        Conn::Unix(mut s) => {
            get(&mut s, buf).await?;
            let took = started.elapsed();
            drain(&mut s, buf).await?;
            took
        }
    };
    Ok(took)
}

/// One fresh connection and a tiny `GET`: from starting the connect to the response's first
/// byte. The rest of the response and the close are read outside the timing.
async fn first_byte(route: Route<'_>, buf: &mut [u8]) -> anyhow::Result<Duration> {
    async fn get<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        started: Instant,
        buf: &mut [u8],
    ) -> anyhow::Result<Duration> {
        s.write_all(format!("GET /tiny HTTP/1.1\r\nHost: {NAME}\r\n\r\n").as_bytes())
            .await?;
        let n = s.read(buf).await?;
        let took = started.elapsed();
        ensure!(n > 0, "closed before the response");
        ensure!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "GET answered {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        drain(s, buf).await?;
        Ok(took)
    }
    let started = Instant::now();
    match open(route, buf).await? {
        Conn::Tcp(mut s) => get(&mut s, started, buf).await,
        Conn::Unix(mut s) => get(&mut s, started, buf).await,
    }
}
