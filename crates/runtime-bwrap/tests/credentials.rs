//! The model's key never enters the sandbox: the real Claude Code CLI in the jail talks to the
//! scripted model through the credential broker with a per-boot placeholder, the model gets
//! the real (canary) key, and nothing inside holds it — no process's environment or command
//! line, no file in the workdir or the engine's HOME.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::{Arc, Mutex};

use serde_json::json;
use substrate_core::client::ChatSession;
use substrate_core::protocol::{CreateSession, EndReason};
use substrate_core::{AuditSink, BoundaryEvent, BrokerRequest, NetworkPolicy, Secret, Substrate};
use substrate_testkit::conformance::scripted_boot_spec;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

mod common;

/// Everything a process in the sandbox could read the key from, into one file. The command
/// itself must not name the key (it would then be in its own command line).
const DUMP: &str = "for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done > /tmp/dump; \
    find \"$HOME\" /workdir /tmp -type f ! -name dump -size -20M -exec cat {} + >> /tmp/dump 2>/dev/null; \
    cp /tmp/dump dump.bin; \
    exec 3<>/dev/tcp/127.0.0.1/3129; \
    printf 'GET /anthropic/v1/models HTTP/1.1\\r\\nHost: x\\r\\nx-api-key: guessed\\r\\nConnection: close\\r\\n\\r\\n' >&3; \
    head -1 <&3 | tr -d '\\r' > without_placeholder.txt";

/// A fresh fake key nothing else contains.
fn canary() -> String {
    format!("sk-ant-canary-{}", Secret::random_token().unwrap().expose())
}

/// A model whose agent runs [`DUMP`] once, then answers "Dumped.".
async fn dump_model() -> ScriptedModel {
    ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use("Bash", json!({ "command": DUMP })))
            .reply(Reply::text("Dumped.")),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_enters_the_sandbox() {
    let canary = canary();
    let model = dump_model().await;
    let events: Arc<Mutex<Vec<BrokerRequest>>> = Arc::default();
    let seen = events.clone();
    let audit = AuditSink::new(move |e| {
        if let BoundaryEvent::Broker(r) = e {
            seen.lock().unwrap().push(r);
        }
    });
    let spec = scripted_boot_spec("canary", &model.base_url())
        .env("ANTHROPIC_API_KEY", canary.clone())
        .audit(audit);
    let harness = common::substrate()
        .unwrap()
        .boot_harness(spec)
        .await
        .unwrap();
    let client = harness.client().unwrap();
    let mut chat = ChatSession::start(client.clone(), CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap();
    let outcome = chat.ask("Dump everything").await.unwrap();
    assert_eq!(outcome.result_text(), Some("Dumped."));
    let id = chat.session_id().to_owned();
    let dump = client.read_file(&id, "dump.bin").await.unwrap();
    let refused = client
        .read_file(&id, "without_placeholder.txt")
        .await
        .unwrap();
    assert_eq!(chat.finish().await.unwrap().reason, EndReason::Complete);
    harness.shutdown().await.unwrap();

    // The dump saw the engine's environment (the placeholder is there), and no key.
    let dump = String::from_utf8_lossy(&dump);
    assert!(
        dump.contains("ANTHROPIC_API_KEY=brokered-"),
        "the dump missed the engine's environment"
    );
    assert!(dump.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:3129/anthropic"));
    assert!(!dump.contains(&canary), "the key is inside the sandbox");
    assert!(
        !dump.contains("sk-ant-canary-"),
        "part of the key is inside the sandbox"
    );

    // The model got the real key on every request.
    let requests = model.model_requests();
    assert!(requests.len() >= 2);
    for r in &requests {
        let key = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-api-key")
            .map(|(_, v)| v.as_str());
        assert_eq!(key, Some(canary.as_str()), "{:?}", r.path);
    }

    // A request without the placeholder was refused, and every request was reported.
    assert_eq!(
        String::from_utf8_lossy(&refused).trim(),
        "HTTP/1.1 401 Unauthorized"
    );
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| !e.allowed && e.status == 401 && e.path == "/v1/models"),
        "{events:?}"
    );
    let forwarded = events
        .iter()
        .filter(|e| e.allowed && e.status == 200)
        .count();
    assert!(forwarded >= 2, "{events:?}");
    assert!(!format!("{events:?}").contains(&canary));
}

/// The same dump finds the key when the caller opts out of brokering: the check above is not
/// blind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsafe_option_puts_the_key_inside_and_the_dump_finds_it() {
    let canary = canary();
    let model = dump_model().await;
    let spec = scripted_boot_spec("unsafe", &model.base_url())
        .env("ANTHROPIC_API_KEY", canary.clone())
        .unsafe_keys_in_sandbox()
        // Unbrokered, the engine must reach the model on the host's loopback itself.
        .network(NetworkPolicy::Host);
    let harness = common::substrate()
        .unwrap()
        .boot_harness(spec)
        .await
        .unwrap();
    let client = harness.client().unwrap();
    let mut chat = ChatSession::start(client.clone(), CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap();
    assert_eq!(
        chat.ask("Dump").await.unwrap().result_text(),
        Some("Dumped.")
    );
    let dump = client
        .read_file(chat.session_id(), "dump.bin")
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    assert!(String::from_utf8_lossy(&dump).contains(&canary));
}

/// A single command is held to the same rule: it gets the placeholder and a relay to the
/// broker on its own 127.0.0.1, the model gets the key, and nothing in the jail has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_command_gets_the_placeholder_and_a_relay_to_the_broker() {
    let canary = canary();
    let model = ScriptedModel::start(Script::new().reply(Reply::text("hi")))
        .await
        .unwrap();
    let spec = scripted_boot_spec("exec-canary", &model.base_url())
        .env("ANTHROPIC_API_KEY", canary.clone());
    let script = "for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done; \
        node -e \"fetch(process.env.ANTHROPIC_BASE_URL + '/v1/messages', {method: 'POST', \
        headers: {'x-api-key': process.env.ANTHROPIC_API_KEY, 'content-type': 'application/json', \
        'anthropic-version': '2023-06-01'}, body: JSON.stringify({model: 'm', max_tokens: 8, \
        messages: [{role: 'user', content: 'x'}]})}).then(r => console.log('status=' + r.status))\"";
    let out = common::substrate()
        .unwrap()
        .exec(&spec, ["sh", "-c", script])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("status=200"), "{stdout}");
    assert!(
        stdout.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:3129/"),
        "{stdout}"
    );
    assert!(!stdout.contains(&canary), "the key is inside the jail");
    let keys: Vec<String> = model
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/messages"))
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "x-api-key")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(keys, vec![canary]);
}
