//! The proxy: a Unix-socket HTTP proxy (CONNECT and plain-HTTP forwarding) in the host
//! process, one task per connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use substrate_core::{AuditSink, BoundaryEvent, EgressDecision};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

use crate::policy::{EgressPolicy, ip_literal};
use crate::sni::{self, Hello};
use crate::vet;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// How long a refused client is given to stop sending before its socket closes.
const LINGER: Duration = Duration::from_secs(1);

/// The relay's buffer per direction: large enough that a bulk download costs few syscalls and
/// wake-ups (256 KiB moved a loopback download ~20% faster than 64 KiB). Zeroed allocations of
/// this size are fresh pages the kernel commits only as they are written, so an idle tunnel
/// costs little.
const RELAY_BUFFER: usize = 256 * 1024;

/// A TLS fatal alert `unrecognized_name`: what a tunnel whose server name was refused gets,
/// so the client's TLS stack reports a clear failure instead of a bare reset.
const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// How the proxy decides and where it reports.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The allow-list.
    pub policy: EgressPolicy,
    /// Where decisions go.
    pub audit: AuditSink,
    /// Names answered without DNS: name → addresses. The caller chose them, so they are
    /// trusted as given (an internal mirror, a test upstream on loopback); everything DNS
    /// answers is vetted.
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// The DNS servers asked (UDP, then TCP); `None`: the host's `/etc/resolv.conf`.
    pub name_servers: Option<Vec<SocketAddr>>,
    /// How long a connect to an upstream may take.
    pub connect_timeout: Duration,
    /// How long a client may take to send its request head (and, on port 443, its TLS
    /// ClientHello).
    pub head_timeout: Duration,
    /// A connection with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is refused with 503 and reported.
    pub max_connections: usize,
}

impl ProxyConfig {
    /// A proxy for `policy` reporting to `audit`.
    pub fn new(policy: EgressPolicy, audit: AuditSink) -> Self {
        Self {
            policy,
            audit,
            hosts: HashMap::new(),
            name_servers: None,
            connect_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 64,
        }
    }
}

/// A running proxy. Dropping it stops accepting, ends its connections and removes the socket.
#[derive(Debug)]
pub struct EgressProxy {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl EgressProxy {
    /// Listens on a Unix socket at `path` (replacing a stale one).
    pub fn bind(path: impl Into<PathBuf>, config: ProxyConfig) -> std::io::Result<Self> {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let resolver = build_resolver(config.name_servers.as_deref())?;
        let listener = UnixListener::bind(&path)?;
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let shared = Arc::new(Shared { config, resolver });
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let shared = shared.clone();
                            match slots.clone().try_acquire_owned() {
                                Ok(slot) => connections.spawn(async move {
                                    serve(stream, &shared).await;
                                    drop(slot);
                                }),
                                Err(_) => connections.spawn(async move {
                                    refuse_over_cap(stream, &shared).await;
                                }),
                            };
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "egress proxy: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Self { task, path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The configuration and the resolver every connection shares.
struct Shared {
    config: ProxyConfig,
    resolver: TokioResolver,
}

fn build_resolver(name_servers: Option<&[SocketAddr]>) -> std::io::Result<TokioResolver> {
    let builder = match name_servers {
        None => TokioResolver::builder_tokio().map_err(std::io::Error::other)?,
        Some(servers) => {
            let mut group = NameServerConfigGroup::new();
            for addr in servers {
                group.push(NameServerConfig::new(*addr, Protocol::Udp));
                group.push(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                TokioConnectionProvider::default(),
            )
        }
    };
    Ok(builder.build())
}

/// Why a connection did not happen.
enum Refused {
    /// Policy: every address the name has is one the sandbox must not reach (403).
    Denied(String),
    /// The upstream could not be reached (502).
    Failed(String),
}

/// What the client asked for.
struct Target {
    method: String,
    host: String,
    port: u16,
    /// For plain HTTP: the head to send upstream (origin-form, `Connection: close`).
    forward_head: Option<Vec<u8>>,
}

/// Answers `status` with `message`, then closes after a lingering read — which may last until
/// the client closes, so decisions are reported before this is called.
async fn respond(stream: &mut UnixStream, status: &str, message: &str) {
    let body = format!("{message}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
    // A lingering close: bytes the client sent after its head (a request body, the first
    // bytes meant for the tunnel) are read and dropped, because closing a socket with unread
    // data resets the peer, which may then lose this answer before reading it.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut left = MAX_HEAD * 4;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Splits `host:port` / `[v6]:port`.
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port?,
            None => return None,
        };
        (format!("[{host}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), default_port?),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// Parses the request head in `buf[..head_len]`.
fn parse_target(buf: &[u8]) -> Result<Option<(Target, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed request: {e}")),
    };
    let method = req.method.unwrap_or_default().to_owned();
    let path = req.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) =
            split_authority(path, None).ok_or_else(|| format!("bad CONNECT target `{path}`"))?;
        return Ok(Some((
            Target {
                method,
                host,
                port,
                forward_head: None,
            },
            head_len,
        )));
    }
    let rest = path.strip_prefix("http://").ok_or_else(|| {
        format!("`{path}` is not an absolute http:// URL (use CONNECT for https)")
    })?;
    let (authority, origin_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) =
        split_authority(authority, Some(80)).ok_or_else(|| format!("bad URL `{path}`"))?;
    let mut head = format!("{method} {origin_path} HTTP/1.1\r\n").into_bytes();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name.starts_with("proxy-") || name == "connection" || name == "keep-alive" {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    Ok(Some((
        Target {
            method,
            host,
            port,
            forward_head: Some(head),
        },
        head_len,
    )))
}

/// The addresses the proxy may connect to for `host`: an IP literal only under a CIDR rule,
/// pinned names as given, DNS answers only when they pass [`vet::refusal`] (or a CIDR rule
/// names their special block on purpose).
async fn vetted_addresses(
    shared: &Shared,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Refused> {
    let policy = &shared.config.policy;
    if let Some(ip) = ip_literal(host) {
        // `matching` already required a CIDR rule for it.
        return match policy.address_rule(ip, port) {
            Some(_) => Ok(vec![SocketAddr::new(ip, port)]),
            None => Err(Refused::Denied(format!("no address rule allows {ip}"))),
        };
    }
    let bare = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(addrs) = shared.config.hosts.get(&bare) {
        return Ok(addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
    }
    // A trailing dot: the name as given, never a search-domain expansion.
    let lookup = shared
        .resolver
        .lookup_ip(format!("{bare}."))
        .await
        .map_err(|e| Refused::Failed(format!("cannot resolve {bare}: {e}")))?;
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for ip in lookup.iter() {
        match vet::refusal(ip) {
            Some(_) if policy.address_rule(ip, port).is_some() => {
                allowed.push(SocketAddr::new(ip, port))
            }
            None => allowed.push(SocketAddr::new(ip, port)),
            Some(why) => refused.push(format!("{ip} ({why})")),
        }
    }
    if allowed.is_empty() {
        return Err(if refused.is_empty() {
            Refused::Failed(format!("{bare} has no address"))
        } else {
            Refused::Denied(format!("{bare} resolves only to {}", refused.join(", ")))
        });
    }
    Ok(allowed)
}

/// Reads until the request head is complete: the target and where the head ends in `buf`.
/// `Err` holds the status and message already due to the client.
async fn read_head(
    client: &mut UnixStream,
    buf: &mut Vec<u8>,
) -> Result<(Target, usize), Option<(&'static str, String)>> {
    loop {
        let mut chunk = [0u8; 4096];
        let n = match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_target(buf) {
            Ok(Some(parsed)) => return Ok(parsed),
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) => {
                return Err(Some((
                    "431 Request Header Fields Too Large",
                    String::from("request head too large"),
                )));
            }
            Err(why) => return Err(Some(("400 Bad Request", why))),
        }
    }
}

/// Reads the request head within the head timeout, answering the client itself when it
/// cannot be read.
async fn head_or_answer(
    shared: &Shared,
    client: &mut UnixStream,
    buf: &mut Vec<u8>,
) -> Option<(Target, usize)> {
    match tokio::time::timeout(shared.config.head_timeout, read_head(client, buf)).await {
        Ok(Ok(parsed)) => Some(parsed),
        Ok(Err(Some((status, why)))) => {
            respond(client, status, &why).await;
            None
        }
        Ok(Err(None)) => None,
        Err(_) => {
            respond(
                client,
                "408 Request Timeout",
                "no complete request head in time",
            )
            .await;
            None
        }
    }
}

/// A connection beyond the cap: its request is read (so the event names the target), refused
/// with 503 and reported.
async fn refuse_over_cap(mut client: UnixStream, shared: &Shared) {
    let started = Instant::now();
    let mut buf = Vec::new();
    let Some((target, _)) = head_or_answer(shared, &mut client, &mut buf).await else {
        return;
    };
    let why = format!(
        "the sandbox already has {} connections open, its cap",
        shared.config.max_connections
    );
    let mut decision = EgressDecision::new(false, &target.host, target.port, &target.method);
    decision.reason = Some(why.clone());
    decision.duration = started.elapsed();
    shared.config.audit.emit(BoundaryEvent::Egress(decision));
    respond(&mut client, "503 Service Unavailable", &why).await;
}

/// For a CONNECT to port 443 of a name: the TLS ClientHello the client sends first must name
/// the same host, or the tunnel is refused (an allowed front must not carry TLS for another
/// name). Reads into `buf` past `from`.
async fn check_server_name(
    shared: &Shared,
    client: &mut UnixStream,
    buf: &mut Vec<u8>,
    from: usize,
    host: &str,
) -> Result<(), String> {
    let read = async {
        loop {
            match sni::client_hello(&buf[from..]) {
                Hello::Incomplete => {}
                Hello::ServerName(Some(name)) if sni::sni_matches(host, &name) => return Ok(()),
                Hello::ServerName(Some(name)) => {
                    return Err(format!(
                        "the TLS server name `{name}` differs from the CONNECT host `{host}`"
                    ));
                }
                Hello::ServerName(None) => {
                    return Err(String::from("the TLS ClientHello names no server"));
                }
                Hello::NotTls(why) => return Err(format!("not a TLS ClientHello: {why}")),
            }
            let mut chunk = [0u8; 4096];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    return Err(String::from("the client closed before its TLS ClientHello"));
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(shared.config.head_timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(String::from("no TLS ClientHello in time")),
    }
}

async fn serve(mut client: UnixStream, shared: &Shared) {
    let config = &shared.config;
    let started = Instant::now();
    let mut buf = Vec::with_capacity(4096);
    let Some((target, head_len)) = head_or_answer(shared, &mut client, &mut buf).await else {
        return;
    };
    let mut decision = EgressDecision::new(false, &target.host, target.port, &target.method);
    let deny = |mut decision: EgressDecision, why: String| {
        decision.allowed = false;
        decision.reason = Some(why);
        decision.duration = started.elapsed();
        config.audit.emit(BoundaryEvent::Egress(decision));
    };
    let Some(rule) = config.policy.matching(&target.host, target.port) else {
        let why = match ip_literal(&target.host) {
            Some(_) => "no address rule allows this IP target",
            None => "no allow rule matches this host and port",
        };
        let message = format!(
            "egress to {}:{} is denied by the sandbox's network policy",
            target.host, target.port
        );
        deny(decision, why.to_owned());
        respond(&mut client, "403 Forbidden", &message).await;
        return;
    };
    decision.allowed = true;
    decision.rule = Some(rule.to_string());

    let mut upstream = match connect(shared, &target).await {
        Ok((stream, addr)) => {
            decision.address = Some(addr.to_string());
            stream
        }
        Err(Refused::Denied(why)) => {
            let message = format!("egress denied: {why}");
            deny(decision, why);
            respond(&mut client, "403 Forbidden", &message).await;
            return;
        }
        Err(Refused::Failed(why)) => {
            decision.reason = Some(why.clone());
            decision.duration = started.elapsed();
            config.audit.emit(BoundaryEvent::Egress(decision));
            respond(&mut client, "502 Bad Gateway", &why).await;
            return;
        }
    };
    if target.forward_head.is_none() {
        if client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if target.port == 443
            && ip_literal(&target.host).is_none()
            && let Err(why) =
                check_server_name(shared, &mut client, &mut buf, head_len, &target.host).await
        {
            let _ = client.write_all(&ALERT_UNRECOGNIZED_NAME).await;
            let _ = client.shutdown().await;
            deny(decision, why);
            return;
        }
    }
    let early = &buf[head_len..];
    let setup = async {
        if let Some(head) = &target.forward_head {
            upstream.write_all(head).await?;
        }
        upstream.write_all(early).await
    };
    if let Err(e) = setup.await {
        decision.reason = Some(format!("relay failed: {e}"));
    } else {
        let outcome = relay(client, upstream, config.idle_timeout).await;
        decision.bytes_up = outcome.up + early.len() as u64;
        decision.bytes_down = outcome.down;
        decision.reason = outcome.ended;
    }
    decision.duration = started.elapsed();
    config.audit.emit(BoundaryEvent::Egress(decision));
}

async fn connect(shared: &Shared, target: &Target) -> Result<(TcpStream, SocketAddr), Refused> {
    let addrs = vetted_addresses(shared, &target.host, target.port).await?;
    let mut last = String::new();
    for addr in addrs {
        match tokio::time::timeout(shared.config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(e)) => last = format!("connect to {addr}: {e}"),
            Err(_) => last = format!("connect to {addr}: timed out"),
        }
    }
    Err(Refused::Failed(last))
}

/// What a relay moved, and why it ended if not by both sides closing.
struct RelayOutcome {
    up: u64,
    down: u64,
    ended: Option<String>,
}

/// Copies one direction until EOF, then half-closes the writer. Every read stamps `last`
/// (milliseconds since `epoch`) for the idle watchdog.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    epoch: Instant,
    last: &AtomicU64,
    moved: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Both directions until both close, one fails, or nothing moved for `idle`.
async fn relay(client: UnixStream, upstream: TcpStream, idle: Duration) -> RelayOutcome {
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let both = async {
        tokio::try_join!(
            pump(client_read, upstream_write, epoch, &last, &up),
            pump(upstream_read, client_write, epoch, &last, &down),
        )
    };
    let watchdog = async {
        let tick = (idle / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let quiet = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
        }
    };
    let ended = tokio::select! {
        result = both => result.err().map(|e| format!("relay ended: {e}")),
        () = watchdog => Some(format!("closed after {} s without traffic", idle.as_secs_f64())),
    };
    RelayOutcome {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_with_and_without_ports() {
        assert_eq!(
            split_authority("a.com:443", None),
            Some(("a.com".into(), 443))
        );
        assert_eq!(
            split_authority("a.com", Some(80)),
            Some(("a.com".into(), 80))
        );
        assert_eq!(
            split_authority("[::1]:8080", None),
            Some(("[::1]".into(), 8080))
        );
        assert_eq!(split_authority("a.com", None), None);
        assert_eq!(split_authority("a.com:x", None), None);
    }

    #[test]
    fn plain_http_is_rewritten_to_origin_form_without_proxy_headers() {
        let req = b"GET http://a.com:8080/x?y=1 HTTP/1.1\r\nHost: a.com:8080\r\nProxy-Authorization: z\r\nConnection: keep-alive\r\n\r\nBODY";
        let (t, n) = parse_target(req).unwrap().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("a.com", 8080));
        assert_eq!(&req[n..], b"BODY");
        let head = String::from_utf8(t.forward_head.unwrap()).unwrap();
        assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("proxy-"), "{head}");
        assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
    }
}
