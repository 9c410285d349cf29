//! The proxy: a Unix-socket HTTP proxy (CONNECT and plain-HTTP forwarding) in the host
//! process, one task per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use substrate_core::{AuditSink, BoundaryEvent, EgressDecision};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::policy::EgressPolicy;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// How the proxy decides and where it reports.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The allow-list.
    pub policy: EgressPolicy,
    /// Where decisions go.
    pub audit: AuditSink,
    /// Names answered without DNS (tests, split-horizon setups): name → addresses.
    pub hosts: HashMap<String, Vec<std::net::IpAddr>>,
    /// How long a connect to an upstream may take.
    pub connect_timeout: Duration,
}

impl ProxyConfig {
    /// A proxy for `policy` reporting to `audit`.
    pub fn new(policy: EgressPolicy, audit: AuditSink) -> Self {
        Self {
            policy,
            audit,
            hosts: HashMap::new(),
            connect_timeout: Duration::from_secs(10),
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
        let listener = UnixListener::bind(&path)?;
        let config = Arc::new(config);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let config = config.clone();
                            connections.spawn(async move { serve(stream, &config).await });
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

/// What the client asked for.
struct Target {
    method: String,
    host: String,
    port: u16,
    /// For plain HTTP: the head to send upstream (origin-form, `Connection: close`).
    forward_head: Option<Vec<u8>>,
}

async fn respond(stream: &mut UnixStream, status: &str, message: &str) {
    let body = format!("{message}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
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

async fn resolve(config: &ProxyConfig, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if let Some(addrs) = config.hosts.get(bare.trim_end_matches('.')) {
        return Ok(addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
    }
    Ok(tokio::net::lookup_host((bare.as_str(), port))
        .await?
        .collect())
}

async fn serve(mut client: UnixStream, config: &ProxyConfig) {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(4096);
    let (target, head_len) = loop {
        let mut chunk = [0u8; 4096];
        let n = match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_target(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) => {
                respond(
                    &mut client,
                    "431 Request Header Fields Too Large",
                    "request head too large",
                )
                .await;
                return;
            }
            Err(why) => {
                respond(&mut client, "400 Bad Request", &why).await;
                return;
            }
        }
    };

    let mut decision = EgressDecision::new(false, &target.host, target.port, &target.method);
    let Some(rule) = config.policy.matching(&target.host) else {
        decision.reason = Some(String::from("no allow rule matches this host"));
        decision.duration = started.elapsed();
        respond(
            &mut client,
            "403 Forbidden",
            &format!(
                "egress to {}:{} is denied by the sandbox's network policy",
                target.host, target.port
            ),
        )
        .await;
        config.audit.emit(BoundaryEvent::Egress(decision));
        return;
    };
    decision.allowed = true;
    decision.rule = Some(rule.to_string());

    let upstream = match connect(config, &target).await {
        Ok((stream, addr)) => {
            decision.address = Some(addr.to_string());
            stream
        }
        Err(why) => {
            decision.reason = Some(why.clone());
            decision.duration = started.elapsed();
            respond(&mut client, "502 Bad Gateway", &why).await;
            config.audit.emit(BoundaryEvent::Egress(decision));
            return;
        }
    };
    let mut upstream = upstream;
    let early = &buf[head_len..];
    let setup = async {
        match &target.forward_head {
            None => {
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await?;
            }
            Some(head) => upstream.write_all(head).await?,
        }
        upstream.write_all(early).await
    };
    if let Err(e) = setup.await {
        decision.reason = Some(format!("relay failed: {e}"));
    } else {
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                decision.bytes_up = up + early.len() as u64;
                decision.bytes_down = down;
            }
            Err(e) => decision.reason = Some(format!("relay ended: {e}")),
        }
    }
    decision.duration = started.elapsed();
    config.audit.emit(BoundaryEvent::Egress(decision));
}

async fn connect(config: &ProxyConfig, target: &Target) -> Result<(TcpStream, SocketAddr), String> {
    let addrs = resolve(config, &target.host, target.port)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?;
    let mut last = format!("{} has no address", target.host);
    for addr in addrs {
        match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => last = format!("connect to {addr}: {e}"),
            Err(_) => last = format!("connect to {addr}: timed out"),
        }
    }
    Err(last)
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
