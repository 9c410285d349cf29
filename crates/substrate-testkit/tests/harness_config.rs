//! The harness's own configuration, exercised on a directly spawned `node harness.mjs`: TCP on
//! 127.0.0.1, JSON logs, body limits, the replay ring, the idle reaper, and an engine
//! environment that never carries the token.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use substrate_core::client::ChatSession;
use substrate_core::protocol::CreateSession;
use substrate_core::{Endpoint, HarnessClient, Secret};
use substrate_testkit::conformance::scripted_engine_envs;
use substrate_testkit::model::{Reply, Script, ScriptedModel};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "test-token-0123456789";

/// Spawns the harness on TCP port 0 with `extra` env; returns it, a client, and the first log
/// line (which must announce the port).
async fn spawn(dir: &Path, extra: &[(&str, &str)]) -> (Child, HarnessClient, Value) {
    let modules = substrate_testkit::stage::ensure_staged().expect("staged node_modules");
    let harness = harness_bundle::write_harness(dir).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(harness)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("PORT", "0")
        .env("HARNESS_TOKEN", TOKEN)
        .env("HARNESS_WORKDIR_ROOT", dir.join("root"))
        .env("HARNESS_NODE_MODULES", modules)
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening: Value = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the harness logs within 20 s")
            .unwrap()
            .expect("the harness exited before listening");
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            value["ts"].is_string() && value["level"].is_string(),
            "{line}"
        );
        if value["msg"] == "listening" {
            break value;
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let port = listening["port"]
        .as_u64()
        .expect("port in the listening line");
    let client = HarnessClient::new(
        Endpoint::Tcp(format!("http://127.0.0.1:{port}")),
        Some(Secret::new(TOKEN)),
    )
    .unwrap();
    (child, client, listening)
}

#[tokio::test]
async fn tcp_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, client, listening) = spawn(dir.path(), &[]).await;
    let port = listening["port"].as_u64().unwrap();
    assert_eq!(client.health().await.unwrap().protocol, Some(1));
    // Bound to 127.0.0.1, not 0.0.0.0: the port is not in use on other local addresses.
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = format!(":{port:04X}");
    let listeners: Vec<&str> = tcp
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&hex_port))
        })
        .collect();
    assert!(
        !listeners.is_empty(),
        "port {port} not found in /proc/net/tcp"
    );
    for l in listeners {
        let local = l.split_whitespace().nth(1).unwrap();
        assert!(
            local.starts_with("0100007F:"),
            "bound to {local}, not 127.0.0.1"
        );
    }
}

/// The local addresses (from /proc/net/tcp, hex `ADDR:PORT`) in state LISTEN on `port`.
fn tcp_listeners(port: u64) -> Vec<String> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = format!(":{port:04X}");
    tcp.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 3 && f[1].ends_with(&hex_port) && f[3] == "0A")
        .map(|f| f[1].to_owned())
        .collect()
}

#[tokio::test]
async fn harness_host_moves_the_listener_for_container_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, client, listening) = spawn(dir.path(), &[("HARNESS_HOST", "0.0.0.0")]).await;
    assert_eq!(listening["host"], "0.0.0.0");
    let port = listening["port"].as_u64().unwrap();
    assert_eq!(client.health().await.unwrap().protocol, Some(1));
    assert_eq!(tcp_listeners(port), vec![format!("00000000:{port:04X}")]);
    // The token still guards every route but health.
    let open = HarnessClient::new(Endpoint::Tcp(format!("http://127.0.0.1:{port}")), None).unwrap();
    let err = open.session("sess_any").await.unwrap_err();
    assert_eq!(err.protocol_code(), Some("UNAUTHORIZED"), "{err}");
}

#[tokio::test]
async fn a_harness_host_that_is_no_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let harness = harness_bundle::write_harness(dir.path()).unwrap();
    let out = Command::new("node")
        .arg(harness)
        .env_clear()
        .env("PORT", "0")
        .env("HARNESS_HOST", "example.com")
        .env("HARNESS_WORKDIR_ROOT", dir.path().join("root"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HARNESS_HOST must be an IP address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn missing_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let harness = harness_bundle::write_harness(dir.path()).unwrap();
    let out = Command::new("node")
        .arg(harness)
        .env_clear()
        .env("PORT", "0")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HARNESS_WORKDIR_ROOT"), "{stderr}");
}

#[tokio::test]
async fn file_uploads_over_the_limit_are_413_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, client, _) = spawn(dir.path(), &[("HARNESS_MAX_FILE_BYTES", "1024")]).await;
    let id = client
        .create_session(&CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap()
        .session_id;
    client
        .write_file(&id, "ok.bin", vec![1u8; 1024], None)
        .await
        .unwrap();
    let err = client
        .write_file(&id, "big.bin", vec![1u8; 4096], None)
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some("PAYLOAD_TOO_LARGE"), "{err}");
    let names: Vec<String> = client
        .tree(&id, ".", 0)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, ["ok.bin"], "no partial or temp file left");
    // A chunked body (no content-length) is cut off too.
    let stream =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![7u8; 512])));
    let err = client
        .write_file(&id, "chunked.bin", reqwest::Body::wrap_stream(stream), None)
        .await
        .unwrap_err();
    assert!(
        err.protocol_code() == Some("PAYLOAD_TOO_LARGE")
            || err.kind() == substrate_core::ErrorKind::Transport,
        "{err}"
    );
    let names: Vec<String> = client
        .tree(&id, ".", 0)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, ["ok.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_ring_is_410_events_expired() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(Script::new().reply(Reply::text("short")))
        .await
        .unwrap();
    let (_child, client, _) = spawn(dir.path(), &[("HARNESS_EVENT_RING", "3")]).await;
    let mut req = CreateSession::new("claude-agent-sdk");
    req.envs = scripted_engine_envs(&model.base_url());
    req.messages.push("go".into());
    req.streaming_input = Some(false);
    let id = client.create_session(&req).await.unwrap().session_id;
    let all = client
        .events(&id, None)
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    // Live subscribers see everything; a late replay keeps only the last 3.
    assert!(all.len() > 3 && all[0].id == 0, "{} events", all.len());
    let err = client.events(&id, Some(0)).await.unwrap_err();
    assert_eq!(err.protocol_code(), Some("EVENTS_EXPIRED"), "{err}");
    let last = all.len() as u64 - 1;
    let tail = client
        .events(&id, Some(last - 2))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        tail.iter().map(|e| e.id).collect::<Vec<_>>(),
        [last - 1, last]
    );
}

#[tokio::test]
async fn idle_sessions_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, client, _) = spawn(dir.path(), &[("HARNESS_SESSION_IDLE_MS", "1000")]).await;
    let id = client
        .create_session(&CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap()
        .session_id;
    let workdir = dir.path().join("root").join(&id);
    assert!(workdir.is_dir());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.session(&id).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle session was never reaped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!workdir.exists(), "the reaped session's workdir is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_never_sees_the_token_and_gets_its_own_home() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use("Bash", json!({"command": "env > env.txt"})))
            .reply(Reply::text("done")),
    )
    .await
    .unwrap();
    let (_child, client, _) = spawn(
        dir.path(),
        &[
            ("HARNESS_LOG_LEVEL", "debug"),
            ("CUSTOM_PASSTHROUGH", "yes"),
        ],
    )
    .await;
    let mut req = CreateSession::new("claude-agent-sdk");
    req.envs = scripted_engine_envs(&model.base_url());
    req.envs
        .insert("SESSION_VAR".into(), "session-value".into());
    let mut chat = ChatSession::start(client.clone(), req).await.unwrap();
    chat.ask("dump env").await.unwrap();
    let env = String::from_utf8(
        client
            .read_file(chat.session_id(), "env.txt")
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        !env.contains(TOKEN),
        "the token leaked into the engine:\n{env}"
    );
    assert!(
        !env.contains("HARNESS_"),
        "a HARNESS_ variable leaked:\n{env}"
    );
    assert!(env.contains("SESSION_VAR=session-value"), "{env}");
    assert!(env.contains("CUSTOM_PASSTHROUGH=yes"), "{env}");
    let home = dir
        .path()
        .join("root")
        .join(".home")
        .join(chat.session_id());
    assert!(env.contains(&format!("HOME={}", home.display())), "{env}");
    chat.finish().await.unwrap();
}
