//! The client's event stream survives dropped connections against the real harness: a proxy
//! between them cuts the first event stream mid-frame, and the client resumes with
//! Last-Event-ID without losing or repeating an event.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use substrate_core::protocol::{CreateSession, EngineOptions};
use substrate_core::{BootSpec, Endpoint, HarnessClient, NetworkPolicy, Substrate};
use substrate_testkit::conformance::{check_event_order, scripted_engine_envs};
use substrate_testkit::local::LocalSubstrate;
use substrate_testkit::model::{Reply, Script, ScriptedModel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Forwards connections from `listen` to `target`; the first `cuts` connections that carry an
/// event stream are closed after `cut_after` bytes of the answer.
async fn cutting_proxy(
    listen: PathBuf,
    target: PathBuf,
    cuts: usize,
    cut_after: usize,
) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(&listen).unwrap();
    let event_connections = Arc::new(AtomicUsize::new(0));
    let counter = event_connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut upstream = UnixStream::connect(&target).await.unwrap();
                let mut head = vec![0u8; 8192];
                let n = client.read(&mut head).await.unwrap_or(0);
                let is_events = String::from_utf8_lossy(&head[..n]).contains("/events");
                upstream.write_all(&head[..n]).await.unwrap();
                let cut = is_events && counter.fetch_add(1, Ordering::SeqCst) < cuts;
                if !cut {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
                let mut sent = 0;
                let mut buf = vec![0u8; 512];
                while sent < cut_after {
                    let n = upstream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let n = n.min(cut_after - sent);
                    if client.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                // Dropping both ends mid-frame: the client sees the stream break.
            });
        }
    });
    event_connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_event_stream_resumes_without_loss_or_duplicates() {
    let modules = substrate_testkit::stage::ensure_staged().expect("staged node_modules");
    // A long streamed answer, forwarded as partial messages: many events, arriving live.
    let model = ScriptedModel::start(Script::new().reply(Reply::slow_text(
        &"word ".repeat(300),
        300,
        Duration::from_millis(2),
    )))
    .await
    .unwrap();
    let harness = LocalSubstrate::new(modules)
        .boot_harness(BootSpec::new("resume").network(NetworkPolicy::Host))
        .await
        .unwrap();
    let Endpoint::Unix(socket) = harness.endpoint().clone() else {
        panic!("unix endpoint")
    };
    let proxy_sock = socket.with_file_name("proxy.sock");
    let connections = cutting_proxy(proxy_sock.clone(), socket, 3, 7_000).await;

    let direct = harness.client().unwrap();
    let proxied =
        HarnessClient::new(Endpoint::Unix(proxy_sock), Some(harness.token().clone())).unwrap();
    let mut req = CreateSession::new("claude-agent-sdk");
    req.envs = scripted_engine_envs(&model.base_url());
    req.messages.push("stream".into());
    req.streaming_input = Some(false);
    req.options = Some(EngineOptions {
        include_partial_messages: Some(true),
        ..EngineOptions::default()
    });
    let id = direct.create_session(&req).await.unwrap().session_id;

    let through_cuts = proxied
        .events(&id, None)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let reference = direct
        .events(&id, None)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();

    assert!(
        connections.load(Ordering::SeqCst) >= 4,
        "the stream was cut and reopened"
    );
    assert!(reference.len() > 300, "{} events", reference.len());
    check_event_order(&through_cuts).unwrap();
    assert_eq!(
        through_cuts, reference,
        "resumed stream differs from a clean one"
    );
    harness.shutdown().await.unwrap();
}
