//! DNS answers and IP targets the proxy must never connect to, proven inside a private network
//! namespace (loopback only; nothing can leave this machine even if the code were wrong). A
//! test DNS server on loopback answers the names; "public" is the documentation address
//! 203.0.113.10 on the namespace's loopback, and traps listen on every forbidden address to
//! catch a connection that should never happen.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use substrate_core::{AuditSink, BoundaryEvent, EgressDecision};
use substrate_egress::{EgressPolicy, EgressProxy, ProxyConfig};
use substrate_testkit::dns::DnsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

const PUBLIC: &str = "203.0.113.10";
/// Forbidden addresses a trap listens on (all on the namespace's loopback).
const TRAPS: [&str; 4] = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"];

struct World {
    proxy: EgressProxy,
    dns: DnsServer,
    port: u16,
    upstream_hits: Arc<AtomicUsize>,
    trap_hits: Arc<AtomicUsize>,
    decisions: Arc<Mutex<Vec<EgressDecision>>>,
    _dir: tempfile::TempDir,
}

/// Accepts on `addr`, counts each connection, answers `hello`.
async fn listen(addr: SocketAddr, hits: Arc<AtomicUsize>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            hits.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                    .await;
            });
        }
    });
}

/// Runs `body` on a fresh runtime inside a private network namespace.
fn in_private_namespace<F>(body: impl FnOnce() -> F) -> F::Output
where
    F: Future,
{
    let extra: Vec<IpAddr> = [PUBLIC, "10.0.0.1", "169.254.169.254"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    substrate_testkit::netns::enter_private(&extra).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body())
}

async fn world(rules: &[&str]) -> World {
    let upstream = TcpListener::bind(format!("{PUBLIC}:0")).await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    drop(upstream);
    let upstream_hits = Arc::new(AtomicUsize::new(0));
    listen(
        SocketAddr::new(PUBLIC.parse().unwrap(), port),
        upstream_hits.clone(),
    )
    .await;
    let trap_hits = Arc::new(AtomicUsize::new(0));
    for trap in TRAPS {
        listen(
            SocketAddr::new(trap.parse().unwrap(), port),
            trap_hits.clone(),
        )
        .await;
    }
    let dns = DnsServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let decisions: Arc<Mutex<Vec<EgressDecision>>> = Arc::default();
    let sink = decisions.clone();
    let mut config = ProxyConfig::new(
        EgressPolicy::from_rules(rules).unwrap(),
        AuditSink::new(move |e| match e {
            BoundaryEvent::Egress(d) => sink.lock().unwrap().push(d),
            other => panic!("{other:?}"),
        }),
    );
    config.name_servers = Some(vec![dns.addr()]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = EgressProxy::bind(dir.path().join("egress.sock"), config).unwrap();
    World {
        proxy,
        dns,
        port,
        upstream_hits,
        trap_hits,
        decisions,
        _dir: dir,
    }
}

impl World {
    async fn exchange(&self, request: String) -> String {
        let mut s = UnixStream::connect(self.proxy.path()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("the proxy answered in time")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn connect(&self, host: &str) -> String {
        let port = self.port;
        self.exchange(format!(
            "CONNECT {host}:{port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        ))
        .await
    }

    async fn decisions(&self, n: usize) -> Vec<EgressDecision> {
        for _ in 0..500 {
            let d = self.decisions.lock().unwrap().clone();
            if d.len() >= n {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "fewer than {n} decisions: {:?}",
            self.decisions.lock().unwrap()
        );
    }

    fn assert_no_trap_reached(&self) {
        assert_eq!(
            self.trap_hits.load(Ordering::SeqCst),
            0,
            "the proxy connected to a forbidden address"
        );
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn a_listed_name_with_a_public_answer_passes() {
    in_private_namespace(|| async {
        let w = world(&["api.test"]).await;
        w.dns.set("api.test", &ips(&[PUBLIC]));
        let reply = w.connect("api.test").await;
        assert!(
            reply.starts_with("HTTP/1.1 200 Connection Established"),
            "{reply}"
        );
        assert!(reply.ends_with("hello"), "{reply}");
        let d = &w.decisions(1).await[0];
        assert!(d.allowed, "{d:?}");
        assert_eq!(
            d.address.as_deref(),
            Some(format!("{PUBLIC}:{}", w.port).as_str())
        );
        assert_eq!(w.upstream_hits.load(Ordering::SeqCst), 1);
        w.assert_no_trap_reached();
    })
}

#[test]
fn listed_names_answering_private_loopback_or_metadata_addresses_are_denied() {
    in_private_namespace(|| async {
        let w = world(&["api.test", "*.api.test"]).await;
        let cases: [(&str, &[&str]); 7] = [
            ("lo.api.test", &["127.0.0.1"]),
            ("private.api.test", &["10.0.0.1"]),
            ("metadata.api.test", &["169.254.169.254"]),
            ("lo6.api.test", &["::1"]),
            ("mapped.api.test", &["::ffff:127.0.0.1"]),
            ("ec2v6.api.test", &["fd00:ec2::254"]),
            ("mixed.api.test", &["127.0.0.1", "10.0.0.1"]),
        ];
        for (name, answer) in cases {
            w.dns.set(name, &ips(answer));
            let reply = w.connect(name).await;
            assert!(reply.starts_with("HTTP/1.1 403"), "{name}: {reply}");
            // Plain HTTP is vetted the same way.
            let reply = w
                .exchange(format!(
                    "GET http://{name}:{}/ HTTP/1.1\r\nHost: {name}\r\n\r\n",
                    w.port
                ))
                .await;
            assert!(reply.starts_with("HTTP/1.1 403"), "{name}: {reply}");
        }
        let d = w.decisions(14).await;
        assert!(d.iter().all(|d| !d.allowed), "{d:?}");
        assert!(
            d.iter().all(|d| d
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("resolves only to"))),
            "{d:?}"
        );
        w.assert_no_trap_reached();
        assert_eq!(w.upstream_hits.load(Ordering::SeqCst), 0);
    })
}

#[test]
fn a_mixed_answer_connects_only_to_the_public_address() {
    in_private_namespace(|| async {
        let w = world(&["api.test"]).await;
        w.dns.set("api.test", &ips(&["127.0.0.1", PUBLIC, "::1"]));
        let reply = w.connect("api.test").await;
        assert!(reply.ends_with("hello"), "{reply}");
        assert_eq!(w.upstream_hits.load(Ordering::SeqCst), 1);
        w.assert_no_trap_reached();
    })
}

#[test]
fn a_rebinding_name_never_reaches_its_second_address() {
    in_private_namespace(|| async {
        let w = world(&["rebind.test"]).await;
        w.dns
            .sequence("rebind.test", &[&ips(&[PUBLIC]), &ips(&["127.0.0.1"])]);
        let first = w.connect("rebind.test").await;
        assert!(first.ends_with("hello"), "{first}");
        // One connection, one lookup: nothing resolves the name a second time to connect.
        let a_queries = w
            .dns
            .queries()
            .iter()
            .filter(|q| q.as_str() == "rebind.test/A")
            .count();
        assert_eq!(a_queries, 1, "{:?}", w.dns.queries());
        let second = w.connect("rebind.test").await;
        assert!(second.starts_with("HTTP/1.1 403"), "{second}");
        assert_eq!(w.upstream_hits.load(Ordering::SeqCst), 1);
        w.assert_no_trap_reached();
    })
}

#[test]
fn unlisted_names_are_denied_before_any_lookup() {
    in_private_namespace(|| async {
        let w = world(&["api.test"]).await;
        w.dns.set("other.test", &ips(&[PUBLIC]));
        let reply = w.connect("other.test").await;
        assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
        assert!(w.dns.queries().is_empty(), "{:?}", w.dns.queries());
        assert_eq!(w.upstream_hits.load(Ordering::SeqCst), 0);
    })
}

#[test]
fn raw_ip_targets_need_a_cidr_rule_and_never_reach_special_addresses() {
    in_private_namespace(|| async {
        let w = world(&["api.test"]).await;
        for host in [
            PUBLIC,
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            let reply = w.connect(host).await;
            assert!(reply.starts_with("HTTP/1.1 403"), "{host}: {reply}");
        }
        assert_eq!(w.upstream_hits.load(Ordering::SeqCst), 0);
        w.assert_no_trap_reached();

        // A range that covers everything still reaches no special address.
        let w = world(&["0.0.0.0/0", "::/0"]).await;
        for host in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "[::1]",
            "[::ffff:10.0.0.1]",
        ] {
            let reply = w.connect(host).await;
            assert!(reply.starts_with("HTTP/1.1 403"), "{host}: {reply}");
        }
        w.assert_no_trap_reached();
        let reply = w.connect(PUBLIC).await;
        assert!(reply.ends_with("hello"), "{reply}");
        let d = w.decisions(6).await;
        assert_eq!(d.last().unwrap().rule.as_deref(), Some("0.0.0.0/0"));
    })
}

#[test]
fn no_route_leaves_the_namespace() {
    in_private_namespace(|| async {
        // A public address not on loopback is unreachable: the proof these tests send nothing
        // beyond this machine.
        let err = tokio::net::TcpStream::connect("192.0.2.1:80")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NetworkUnreachable, "{err}");
    })
}

/// A minimal TLS 1.2-style ClientHello naming `server_name` (or none).
fn client_hello(server_name: Option<&str>) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    let mut extensions = Vec::new();
    if let Some(name) = server_name {
        let name = name.as_bytes();
        let list_len = name.len() + 3;
        extensions.extend_from_slice(&[0, 0]);
        extensions.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        extensions.extend_from_slice(&(list_len as u16).to_be_bytes());
        extensions.push(0);
        extensions.extend_from_slice(&(name.len() as u16).to_be_bytes());
        extensions.extend_from_slice(name);
    }
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// A TLS "server" on PUBLIC:443 that records what reaches it.
async fn tls_upstream() -> Arc<Mutex<Vec<Vec<u8>>>> {
    let listener = TcpListener::bind(format!("{PUBLIC}:443")).await.unwrap();
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                // A connection the proxy opened and dropped unused carries no byte.
                if n > 0 {
                    s.lock().unwrap().push(buf[..n].to_vec());
                }
                let _ = conn.write_all(b"server-hello").await;
            });
        }
    });
    seen
}

async fn tunnel_443(w: &World, host: &str, hello: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(w.proxy.path()).await.unwrap();
    s.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s.write_all(hello).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the proxy answered in time")
        .unwrap();
    out
}

#[test]
fn connect_to_443_needs_a_client_hello_naming_the_connect_host() {
    in_private_namespace(|| async {
        let seen = tls_upstream().await;
        let w = world(&["api.test", "other.test"]).await;
        w.dns.set("api.test", &ips(&[PUBLIC]));
        w.dns.set("other.test", &ips(&[PUBLIC]));

        let ok = tunnel_443(&w, "api.test", &client_hello(Some("API.test."))).await;
        let ok = String::from_utf8_lossy(&ok);
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("server-hello"), "{ok}");
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(seen.lock().unwrap()[0], client_hello(Some("API.test.")));
        // Its decision is recorded as the tunnel closes.
        assert!(w.decisions(1).await[0].allowed);

        // Another name (even an allowed one), no name, or no TLS at all: a TLS alert, and
        // nothing reaches the upstream.
        for (hello, needle) in [
            (client_hello(Some("other.test")), "differs"),
            (client_hello(Some("evil.test")), "differs"),
            (client_hello(None), "names no server"),
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "not a TLS ClientHello"),
        ] {
            let before = w.decisions.lock().unwrap().len();
            let out = tunnel_443(&w, "api.test", &hello).await;
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(
                out.ends_with(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]),
                "{out:?}"
            );
            // The decision is recorded as the tunnel closes: wait for it, not for the last one.
            let d = w.decisions(before + 1).await[before].clone();
            assert!(!d.allowed, "{d:?}");
            assert!(d.reason.as_deref().unwrap().contains(needle), "{d:?}");
        }
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "a refused hello reached the upstream"
        );
    })
}
