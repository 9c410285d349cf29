//! End to end inside the jail: HarnessClient → harness (in bwrap) → claude-agent-sdk → the real
//! Claude Code CLI (in bwrap) → the scripted model. The agent's Bash tool sees the jail.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use serde_json::json;
use substrate_core::Substrate;
use substrate_core::client::ChatSession;
use substrate_core::protocol::{CreateSession, EndReason};
use substrate_testkit::conformance::scripted_boot_spec;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_bash_tool_runs_inside_the_jail() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "ls -A / > root.txt; id -u > uid.txt; grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status > status.txt; printf 'made in the jail\\n' > hello.md"}),
            ))
            .reply(Reply::text("Done.")),
    )
    .await
    .unwrap();
    // The model is reached through the credential broker, as a real run reaches the real API.
    let substrate = common::substrate().unwrap();
    let harness = substrate
        .boot_harness(scripted_boot_spec("e2e", &model.base_url()))
        .await
        .unwrap();
    let client = harness.client().unwrap();
    let request = CreateSession::new("claude-agent-sdk");
    let mut chat = ChatSession::start(client.clone(), request).await.unwrap();
    let outcome = chat.ask("Look around").await.unwrap();
    assert_eq!(outcome.result_text(), Some("Done."));
    let id = chat.session_id().to_owned();
    let read = |path: &'static str| {
        let client = client.clone();
        let id = id.clone();
        async move { String::from_utf8(client.read_file(&id, path).await.unwrap().to_vec()).unwrap() }
    };

    assert_eq!(read("hello.md").await, "made in the jail\n");
    let root: Vec<String> = read("root.txt").await.lines().map(str::to_owned).collect();
    for entry in ["workdir", "opt", "proc", "usr"] {
        assert!(root.contains(&entry.to_owned()), "{root:?}");
    }
    for host_only in ["root", "home", "work", "var", "srv", "boot"] {
        assert!(
            !root.contains(&host_only.to_owned()),
            "host entry {host_only} in {root:?}"
        );
    }
    assert_eq!(read("uid.txt").await.trim(), "1000");
    let status = read("status.txt").await;
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");

    assert_eq!(chat.finish().await.unwrap().reason, EndReason::Complete);
    assert!(model.unexpected().is_empty(), "{:?}", model.unexpected());
    harness.shutdown().await.unwrap();
}
