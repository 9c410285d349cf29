//! The proxy against real upstreams on loopback, spoken to the way sandboxed clients do.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::{Arc, Mutex};

use substrate_core::{AuditSink, BoundaryEvent, EgressDecision};
use substrate_egress::{EgressPolicy, EgressProxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

struct Setup {
    proxy: EgressProxy,
    upstream_port: u16,
    decisions: Arc<Mutex<Vec<EgressDecision>>>,
    requests: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// An upstream that records each request head and answers `hello`, and a proxy allowing
/// `allowed.test` (answered with the upstream's loopback address).
async fn setup() -> Setup {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = upstream.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    let decisions: Arc<Mutex<Vec<EgressDecision>>> = Arc::default();
    let sink = decisions.clone();
    let mut config = ProxyConfig::new(
        EgressPolicy::from_rules(["allowed.test", "*.wild.test"]).unwrap(),
        AuditSink::new(move |e| match e {
            BoundaryEvent::Egress(d) => sink.lock().unwrap().push(d),
            other => panic!("{other:?}"),
        }),
    );
    for name in ["allowed.test", "api.wild.test"] {
        config
            .hosts
            .insert(name.into(), vec!["127.0.0.1".parse().unwrap()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = EgressProxy::bind(dir.path().join("egress.sock"), config).unwrap();
    Setup {
        proxy,
        upstream_port,
        decisions,
        requests,
        _dir: dir,
    }
}

/// The decisions once `n` have been reported (an allowed tunnel is reported when it closes).
async fn decisions(setup: &Setup, n: usize) -> Vec<EgressDecision> {
    for _ in 0..200 {
        let d = setup.decisions.lock().unwrap().clone();
        if d.len() >= n {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "fewer than {n} decisions: {:?}",
        setup.decisions.lock().unwrap()
    );
}

async fn exchange(setup: &Setup, request: &str) -> String {
    let mut s = UnixStream::connect(setup.proxy.path()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connect_to_an_allowed_name_tunnels_and_is_reported() {
    let s = setup().await;
    let port = s.upstream_port;
    let reply = exchange(
        &s,
        &format!("CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK"),
        "{reply}"
    );
    assert!(reply.ends_with("hello"));
    // The bytes sent right after CONNECT reached the upstream.
    assert!(s.requests.lock().unwrap()[0].starts_with("GET / HTTP/1.1"));
    let d = decisions(&s, 1).await;
    assert_eq!(d.len(), 1);
    assert!(d[0].allowed);
    assert_eq!(d[0].rule.as_deref(), Some("allowed.test"));
    assert_eq!(
        d[0].address.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert!(d[0].bytes_up > 0 && d[0].bytes_down > 0);
}

#[tokio::test]
async fn wildcard_rules_allow_subdomains() {
    let s = setup().await;
    let port = s.upstream_port;
    let reply = exchange(
        &s,
        &format!("CONNECT api.wild.test:{port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(
        decisions(&s, 1).await[0].rule.as_deref(),
        Some("*.wild.test")
    );
}

#[tokio::test]
async fn unlisted_names_and_ip_literals_are_denied_and_reported() {
    let s = setup().await;
    let port = s.upstream_port;
    for target in [
        format!("other.test:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("wild.test:{port}"),
    ] {
        let reply = exchange(&s, &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
        assert!(
            reply.starts_with("HTTP/1.1 403 Forbidden"),
            "{target}: {reply}"
        );
    }
    assert!(
        s.requests.lock().unwrap().is_empty(),
        "a denied request reached the upstream"
    );
    let d = decisions(&s, 4).await;
    assert_eq!(d.len(), 4);
    assert!(d.iter().all(|d| !d.allowed && d.reason.is_some()));
}

#[tokio::test]
async fn plain_http_is_forwarded_in_origin_form() {
    let s = setup().await;
    let port = s.upstream_port;
    let reply = exchange(
        &s,
        &format!("GET http://allowed.test:{port}/v1/x?q=1 HTTP/1.1\r\nHost: allowed.test:{port}\r\nProxy-Authorization: secret\r\n\r\n"),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    let seen = s.requests.lock().unwrap()[0].clone();
    assert!(seen.starts_with("GET /v1/x?q=1 HTTP/1.1\r\n"), "{seen}");
    assert!(
        !seen.to_ascii_lowercase().contains("proxy-authorization"),
        "{seen}"
    );
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let s = setup().await;
    for req in [
        "GET /relative HTTP/1.1\r\n\r\n",
        "CONNECT nohostport HTTP/1.1\r\n\r\n",
        "\x01\x02 garbage\r\n\r\n",
    ] {
        let reply = exchange(&s, req).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{req:?}: {reply}");
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_and_are_reported() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    // Holds every connection open until its client closes, as servers do.
    tokio::spawn(async move {
        loop {
            let (mut s, _) = upstream.accept().await.unwrap();
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    let decisions: Arc<Mutex<Vec<EgressDecision>>> = Arc::default();
    let sink = decisions.clone();
    let mut config = ProxyConfig::new(
        EgressPolicy::from_rules(["held.test"]).unwrap(),
        AuditSink::new(move |e| {
            if let BoundaryEvent::Egress(d) = e {
                sink.lock().unwrap().push(d)
            }
        }),
    );
    config.max_connections = 2;
    config
        .hosts
        .insert("held.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = EgressProxy::bind(dir.path().join("egress.sock"), config).unwrap();
    let connect = format!("CONNECT held.test:{port} HTTP/1.1\r\n\r\n");
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = UnixStream::connect(proxy.path()).await.unwrap();
        s.write_all(connect.as_bytes()).await.unwrap();
        let mut head = [0u8; 39];
        s.read_exact(&mut head).await.unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200"));
        open.push(s);
    }
    let mut third = UnixStream::connect(proxy.path()).await.unwrap();
    third.write_all(connect.as_bytes()).await.unwrap();
    let mut reply = String::new();
    third.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("2 connections"), "{reply}");
    let d = decisions.lock().unwrap().clone();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(!d[0].allowed && d[0].host == "held.test", "{d:?}");

    // A slot freed is a slot reusable.
    drop(open.pop());
    for _ in 0..100 {
        let mut s = UnixStream::connect(proxy.path()).await.unwrap();
        s.write_all(connect.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        if &head == b"HTTP/1.1 200" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the freed slot was never reused");
}

#[tokio::test]
async fn idle_tunnels_are_closed_and_slow_heads_time_out() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = upstream.accept().await.unwrap();
            held.push(s);
        }
    });
    let decisions: Arc<Mutex<Vec<EgressDecision>>> = Arc::default();
    let sink = decisions.clone();
    let mut config = ProxyConfig::new(
        EgressPolicy::from_rules(["idle.test"]).unwrap(),
        AuditSink::new(move |e| {
            if let BoundaryEvent::Egress(d) = e {
                sink.lock().unwrap().push(d)
            }
        }),
    );
    config.idle_timeout = std::time::Duration::from_millis(300);
    config.head_timeout = std::time::Duration::from_millis(300);
    config
        .hosts
        .insert("idle.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = EgressProxy::bind(dir.path().join("egress.sock"), config).unwrap();

    let started = std::time::Instant::now();
    let mut s = UnixStream::connect(proxy.path()).await.unwrap();
    s.write_all(format!("CONNECT idle.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the idle tunnel was closed")
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let d = decisions.lock().unwrap().clone();
    assert!(
        d[0].reason
            .as_deref()
            .is_some_and(|r| r.contains("without traffic")),
        "{d:?}"
    );

    let mut slow = UnixStream::connect(proxy.path()).await.unwrap();
    slow.write_all(b"CONNECT idle.te").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_string(&mut reply),
    )
    .await
    .expect("the slow head was answered")
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
}
