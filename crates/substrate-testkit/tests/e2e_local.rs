//! End to end on the host: HarnessClient → harness → claude-agent-sdk → the real Claude Code
//! CLI → the scripted model. Only the model is scripted.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use substrate_core::client::ChatSession;
use substrate_core::protocol::{EndReason, EventKind, SourceSpec};
use substrate_core::{
    BootEvent, BootPhase, BootSpec, ErrorKind, NetworkPolicy, PhaseDeadlines, ProgressSink,
    Substrate, WorkdirPolicy,
};
use substrate_testkit::conformance::scripted_engine_envs;
use substrate_testkit::local::LocalSubstrate;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

fn modules() -> PathBuf {
    substrate_testkit::stage::ensure_staged().expect("staged node_modules")
}

fn spec() -> BootSpec {
    BootSpec::new("e2e").network(NetworkPolicy::Host)
}

/// Every live process whose command line or working directory mentions `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(dir) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cli_runs_a_tool_and_the_file_comes_back() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "printf 'hello from the agent\\n' > hello.md"}),
            ))
            .reply(Reply::text("I wrote hello.md.")),
    )
    .await
    .unwrap();
    let base = tempfile::tempdir().unwrap();
    let phases = Arc::new(Mutex::new(Vec::new()));
    let seen = phases.clone();
    let substrate = LocalSubstrate::new(modules()).base_dir(base.path());
    let harness = substrate
        .boot_harness(spec().progress(ProgressSink::new(move |e| seen.lock().unwrap().push(e))))
        .await
        .unwrap();
    let finished: Vec<BootPhase> = phases
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            BootEvent::PhaseFinished {
                phase, error: None, ..
            } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [BootPhase::Stage, BootPhase::Spawn, BootPhase::Health]
    );

    let mut request = substrate_core::protocol::CreateSession::new("claude-agent-sdk");
    request.envs = scripted_engine_envs(&model.base_url());
    let mut chat = ChatSession::start(harness.client().unwrap(), request)
        .await
        .unwrap();
    let outcome = chat.ask("Write hello.md").await.unwrap();

    // The Bash tool really ran: the file exists, fetched back through fs/file.
    let body = harness
        .client()
        .unwrap()
        .read_file(chat.session_id(), "hello.md")
        .await
        .unwrap();
    assert_eq!(&body[..], b"hello from the agent\n");
    assert_eq!(outcome.result_text(), Some("I wrote hello.md."));

    // Ids increase one by one; the permission round trip and a usage snapshot happened.
    let ids: Vec<u64> = outcome.events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert!(outcome.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::PermissionRequest { tool_name, .. } if tool_name == "Bash"
    )));
    assert!(
        outcome
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::UsageSnapshot { .. }))
    );
    assert!(outcome.usage.output_tokens > 0, "{:?}", outcome.usage);

    // The model saw the tool's result.
    let requests = model.model_requests();
    assert!(requests.len() >= 2, "{} model requests", requests.len());
    let last = requests.last().unwrap().body["messages"].to_string();
    assert!(last.contains("tool_result"), "{last}");
    assert!(model.unexpected().is_empty(), "{:?}", model.unexpected());

    let summary = chat.finish().await.unwrap();
    assert_eq!(summary.reason, EndReason::Complete);

    // Shutdown leaves nothing behind: no process, no directory.
    let root = std::fs::read_dir(base.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    harness.shutdown().await.unwrap();
    harness.shutdown().await.unwrap(); // idempotent
    assert!(
        !root.exists(),
        "boot directory left behind: {}",
        root.display()
    );
    assert_eq!(processes_under(&root), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_turn_kills_the_engine_and_its_tools() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "tail -f /dev/null"}),
            ))
            .reply(Reply::text("never")),
    )
    .await
    .unwrap();
    let base = tempfile::tempdir().unwrap();
    let harness = LocalSubstrate::new(modules())
        .base_dir(base.path())
        .boot_harness(spec())
        .await
        .unwrap();
    let root = std::fs::read_dir(base.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut request = substrate_core::protocol::CreateSession::new("claude-agent-sdk");
    request.envs = scripted_engine_envs(&model.base_url());
    let mut chat = ChatSession::start(harness.client().unwrap(), request)
        .await
        .unwrap();
    // The turn never ends by itself: drive it (and its permission answers) in a task.
    let driver = tokio::spawn(async move { chat.ask("block").await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !processes_under(&root)
        .iter()
        .any(|p| p.contains("tail -f /dev/null"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tool never started; model requests: {:?}; processes: {:?}",
            model.requests().iter().map(|r| &r.path).collect::<Vec<_>>(),
            processes_under(&root)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    harness.shutdown().await.unwrap();
    assert_eq!(processes_under(&root), Vec::<String>::new());
    assert!(!root.exists());
    assert!(
        driver.await.unwrap().is_err(),
        "the turn cannot complete once the harness is gone"
    );
}

#[tokio::test]
async fn a_missing_node_is_not_installed_and_leaves_nothing() {
    let base = tempfile::tempdir().unwrap();
    let err = LocalSubstrate::new(modules())
        .node("/nonexistent/node")
        .base_dir(base.path())
        .boot_harness(spec())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotInstalled, "{err}");
    assert!(err.to_string().contains("Node.js"), "{err}");
    assert_eq!(
        std::fs::read_dir(base.path()).unwrap().count(),
        0,
        "boot dir left behind"
    );
}

#[tokio::test]
async fn a_harness_that_exits_at_once_is_process_failed_with_its_stderr() {
    let base = tempfile::tempdir().unwrap();
    let fake = base.path().join("fake-node");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake node: cannot start' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let boots = base.path().join("boots");
    let err = LocalSubstrate::new(modules())
        .node(&fake)
        .base_dir(&boots)
        .boot_harness(spec())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessFailed, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("fake node: cannot start") && text.contains("exit status: 3"),
        "{text}"
    );
    assert!(!text.contains("HARNESS_TOKEN"), "{text}");
    assert_eq!(
        std::fs::read_dir(&boots).unwrap().count(),
        0,
        "boot dir left behind"
    );
}

#[tokio::test]
async fn a_harness_that_never_answers_times_out_in_the_health_phase() {
    let base = tempfile::tempdir().unwrap();
    let fake = base.path().join("silent-node");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let boots = base.path().join("boots");
    let spec = spec()
        .deadlines(PhaseDeadlines::default().with(BootPhase::Health, Duration::from_millis(700)));
    let err = LocalSubstrate::new(modules())
        .node(&fake)
        .base_dir(&boots)
        .boot_harness(spec)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BootTimeout, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`health`") && text.contains("harness.sock"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&boots).unwrap().count(),
        0,
        "boot dir left behind"
    );
    assert_eq!(processes_under(&boots), Vec::<String>::new());
}

#[tokio::test]
async fn the_local_runtime_refuses_what_it_cannot_enforce() {
    let substrate = LocalSubstrate::new(modules());
    for spec in [
        BootSpec::new("x"), // network `none` cannot be enforced on the host
        BootSpec::new("x").network(NetworkPolicy::Allow(vec!["example.com".into()])),
    ] {
        let err = substrate.boot_harness(spec).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(
            err.to_string().contains("local runtime cannot enforce"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn keep_leaves_the_workdir_for_inspection() {
    let base = tempfile::tempdir().unwrap();
    let harness = LocalSubstrate::new(modules())
        .base_dir(base.path())
        .boot_harness(spec().workdir(WorkdirPolicy::Keep))
        .await
        .unwrap();
    let client = harness.client().unwrap();
    let id = client
        .create_session(&substrate_core::protocol::CreateSession::new(
            "claude-agent-sdk",
        ))
        .await
        .unwrap()
        .session_id;
    client
        .write_file(&id, "keep.txt", "kept", None)
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    let root = std::fs::read_dir(base.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(root.join("workdir").join(&id).join("keep.txt")).unwrap(),
        b"kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_and_directory_sources_are_materialised() {
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("AGENT.md"), "from git").unwrap();
    git(&["add", "."]);
    git(&[
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-qm",
        "init",
    ]);
    let harness = LocalSubstrate::new(modules())
        .boot_harness(spec())
        .await
        .unwrap();
    let client = harness.client().unwrap();
    let mut req = substrate_core::protocol::CreateSession::new("claude-agent-sdk");
    req.source = Some(SourceSpec::Git {
        url: format!("file://{}", repo.path().display()),
        reference: Some("main".into()),
    });
    let id = client.create_session(&req).await.unwrap().session_id;
    assert_eq!(
        &client.read_file(&id, "AGENT.md").await.unwrap()[..],
        b"from git"
    );
    req.source = Some(SourceSpec::Git {
        url: format!("file://{}", repo.path().join("missing").display()),
        reference: None,
    });
    let err = client.create_session(&req).await.unwrap_err();
    assert_eq!(err.protocol_code(), Some("VALIDATION"), "{err}");
    assert!(err.to_string().contains("git clone failed"), "{err}");

    // A directory the runtime made visible is copied, not linked.
    req.source = Some(SourceSpec::Dir {
        path: repo.path().display().to_string(),
    });
    let id = client.create_session(&req).await.unwrap().session_id;
    client
        .write_file(&id, "AGENT.md", "changed in the session", None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(repo.path().join("AGENT.md")).unwrap(),
        b"from git"
    );
    req.source = Some(SourceSpec::Dir {
        path: String::from("relative/dir"),
    });
    let err = client.create_session(&req).await.unwrap_err();
    assert_eq!(err.protocol_code(), Some("VALIDATION"), "{err}");
    harness.shutdown().await.unwrap();
}
