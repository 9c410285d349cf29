//! The credential broker against real upstreams on loopback, spoken to the way the engine in
//! a sandbox does (HTTP/1.1 over the socket its relay reaches).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use substrate_core::{AuditSink, BootSpec, BoundaryEvent, BrokerRequest, BrokeredUpstream, Secret};
use substrate_egress::{BrokerConfig, BrokerPlan, CredentialBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Notify;

const KEY: &str = "sk-ant-real-key-0123456789";

/// An upstream that records request heads and answers with an SSE stream in two parts: the
/// second only after `release` is notified.
struct Upstream {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
    release: Arc<Notify>,
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let release = Arc::new(Notify::new());
    let (h, r) = (heads.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let (h, r) = (h.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Head plus a content-length body.
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                h.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).into_owned());
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let first = b"event: message_start\ndata: {}\n\n";
                let _ = s
                    .write_all(format!("{:x}\r\n", first.len()).as_bytes())
                    .await;
                let _ = s.write_all(first).await;
                let _ = s.write_all(b"\r\n").await;
                r.notified().await;
                let second = b"event: message_stop\ndata: {}\n\n";
                let _ = s
                    .write_all(format!("{:x}\r\n", second.len()).as_bytes())
                    .await;
                let _ = s.write_all(second).await;
                let _ = s.write_all(b"\r\n0\r\n\r\n").await;
            });
        }
    });
    Upstream {
        url,
        heads,
        release,
    }
}

struct Setup {
    broker: CredentialBroker,
    plan: BrokerPlan,
    events: Arc<Mutex<Vec<BrokerRequest>>>,
    _dir: tempfile::TempDir,
}

fn setup(spec: BootSpec) -> Setup {
    let events: Arc<Mutex<Vec<BrokerRequest>>> = Arc::default();
    let sink = events.clone();
    let audit = AuditSink::new(move |e| match e {
        BoundaryEvent::Broker(r) => sink.lock().unwrap().push(r),
        other => panic!("{other:?}"),
    });
    let plan = BrokerPlan::for_spec(&spec, "http://127.0.0.1:3129")
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = CredentialBroker::bind(
        dir.path().join("broker.sock"),
        &plan,
        BrokerConfig::new(audit),
    )
    .unwrap();
    Setup {
        broker,
        plan,
        events,
        _dir: dir,
    }
}

impl Setup {
    fn placeholder(&self, var: &str) -> String {
        self.plan.engine_envs.get(var).unwrap().expose().to_owned()
    }

    async fn send(&self, request: String) -> UnixStream {
        let mut s = UnixStream::connect(self.broker.path()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        s
    }

    async fn exchange(&self, request: String) -> String {
        let mut s = self.send(request).await;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("the broker answered in time")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn events(&self, n: usize) -> Vec<BrokerRequest> {
        for _ in 0..500 {
            let e = self.events.lock().unwrap().clone();
            if e.len() >= n {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} events: {:?}", self.events.lock().unwrap());
    }
}

fn model_spec(base_url: &str) -> BootSpec {
    BootSpec::new("t")
        .env("ANTHROPIC_API_KEY", KEY)
        .env("ANTHROPIC_BASE_URL", base_url)
}

fn messages_request(key: &str) -> String {
    let body = r#"{"model":"m","messages":[]}"#;
    format!(
        "POST /anthropic/v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1:3129\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn the_placeholder_is_replaced_by_the_real_key_and_the_stream_is_not_buffered() {
    let up = upstream().await;
    let s = setup(model_spec(&up.url));
    let placeholder = s.placeholder("ANTHROPIC_API_KEY");
    assert!(!placeholder.contains(KEY));
    let mut stream = s.send(messages_request(&placeholder)).await;

    // The first event arrives while the upstream still holds back the rest.
    let mut got = Vec::new();
    let started = Instant::now();
    while !String::from_utf8_lossy(&got).contains("message_start") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the first event was passed on before the response ended")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!String::from_utf8_lossy(&got).contains("message_stop"));
    up.release.notify_one();
    stream.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("message_stop"), "{text}");

    let head = up.heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("POST /v1/messages?beta=true HTTP/1.1"),
        "{head}"
    );
    assert!(head.contains(&format!("x-api-key: {KEY}")), "{head}");
    assert!(!head.contains(&placeholder), "{head}");
    assert!(head.contains("anthropic-version: 2023-06-01"), "{head}");
    assert!(head.ends_with(r#"{"model":"m","messages":[]}"#), "{head}");

    let e = &s.events(1).await[0];
    assert!(e.allowed && e.status == 200, "{e:?}");
    assert_eq!(
        (e.upstream.as_str(), e.path.as_str()),
        ("anthropic", "/v1/messages")
    );
    assert!(e.bytes_down > 0 && e.bytes_up > 0, "{e:?}");
    assert!(!format!("{e:?}").contains(KEY) && !format!("{e:?}").contains(&placeholder));
}

#[tokio::test]
async fn a_request_without_the_placeholder_is_401_and_reported() {
    let up = upstream().await;
    let s = setup(model_spec(&up.url));
    for key in ["wrong", KEY, ""] {
        let reply = s.exchange(messages_request(key)).await;
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
        assert!(reply.contains("authentication_error"), "{reply}");
        assert!(reply.contains("placeholder"), "{reply}");
    }
    assert!(
        up.heads.lock().unwrap().is_empty(),
        "a refused request reached the upstream"
    );
    let events = s.events(3).await;
    assert!(
        events.iter().all(|e| !e.allowed && e.status == 401),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_unknown_upstream_is_404_naming_the_known_ones() {
    let up = upstream().await;
    let s = setup(model_spec(&up.url));
    let reply = s
        .exchange(String::from(
            "GET /elsewhere/x HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n",
        ))
        .await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(reply.contains("anthropic"), "{reply}");
}

#[tokio::test]
async fn a_down_upstream_is_a_clear_502_without_a_hang() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = setup(model_spec(&format!("http://127.0.0.1:{port}")));
    let placeholder = s.placeholder("ANTHROPIC_API_KEY");
    let started = Instant::now();
    let reply = s.exchange(messages_request(&placeholder)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    assert!(reply.contains("could not be reached"), "{reply}");
    let e = &s.events(1).await[0];
    assert_eq!(e.status, 502);
    assert!(
        e.reason
            .as_deref()
            .is_some_and(|r| r.contains("could not be reached")),
        "{e:?}"
    );
}

#[tokio::test]
async fn further_upstreams_are_brokered_the_same_way() {
    let up = upstream().await;
    let spec = BootSpec::new("t").broker(
        BrokeredUpstream::new("github", format!("{}/api/v3", up.url))
            .credential(
                "Authorization",
                "token ",
                Secret::new("ghp_real"),
                Some("GH_TOKEN"),
            )
            .url_env("GITHUB_API_URL"),
    );
    let s = setup(spec);
    assert_eq!(
        s.plan.engine_envs.get("GITHUB_API_URL").unwrap().expose(),
        "http://127.0.0.1:3129/github"
    );
    let placeholder = s.placeholder("GH_TOKEN");
    let mut stream = s
        .send(format!(
            "GET /github/repos/a/b HTTP/1.1\r\nHost: x\r\nauthorization: token {placeholder}\r\nconnection: close\r\n\r\n"
        ))
        .await;
    let mut first = [0u8; 64];
    let _ = stream.read(&mut first).await.unwrap();
    up.release.notify_one();
    let head = up.heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /api/v3/repos/a/b HTTP/1.1"), "{head}");
    assert!(head.contains("authorization: token ghp_real"), "{head}");
}

/// A TLS upstream on loopback with a certificate for 127.0.0.1 only the broker is told to
/// trust: answers every request with its head echoed back.
async fn tls_upstream() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let der = certified.cert.der().clone();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(
        certified.signing_key.serialize_der(),
    )
    .unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{head}",
                    head.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, cert_pem)
}

#[tokio::test]
async fn https_upstreams_are_reached_over_verified_tls() {
    let (url, cert_pem) = tls_upstream().await;
    let plan = BrokerPlan::for_spec(&model_spec(&url), "http://127.0.0.1:3129")
        .unwrap()
        .unwrap();
    let placeholder = plan
        .engine_envs
        .get("ANTHROPIC_API_KEY")
        .unwrap()
        .expose()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let request = messages_request(&placeholder);

    // Without the root, the upstream's certificate is refused: a clear 502, nothing sent.
    let untrusting = CredentialBroker::bind(
        dir.path().join("untrusting.sock"),
        &plan,
        BrokerConfig::new(AuditSink::default()),
    )
    .unwrap();
    let mut s = UnixStream::connect(untrusting.path()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("certificate"),
        "{reply}"
    );

    // With it, the request arrives over TLS with the real key.
    let mut config = BrokerConfig::new(AuditSink::default());
    config.extra_roots_pem.push(cert_pem);
    let trusting = CredentialBroker::bind(dir.path().join("trusting.sock"), &plan, config).unwrap();
    let mut s = UnixStream::connect(trusting.path()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(&format!("x-api-key: {KEY}")), "{reply}");
    assert!(!reply.contains(&placeholder), "{reply}");
}
