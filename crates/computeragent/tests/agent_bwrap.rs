//! The Agent API end to end on real bwrap sandboxes with the real Claude Code CLI and the
//! scripted model: runtime selection, sources, turns, files, permissions, one-shot tasks, and
//! the sandbox gone after dispose (and after a drop).
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use computeragent::{Agent, AgentBuilder, RuntimeConfig, RuntimeName, Source};
use serde_json::json;
use substrate_core::ErrorKind;
use substrate_core::client::permission_fn;
use substrate_core::protocol::{EndReason, EventKind, PermissionDecision};
use substrate_testkit::conformance::scripted_engine_envs;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

/// The workspace's staged modules (staged once by the testkit).
fn config() -> RuntimeConfig {
    substrate_testkit::stage::ensure_staged().unwrap();
    RuntimeConfig {
        stage_dir: Some(substrate_testkit::stage::stage_dir()),
        ..RuntimeConfig::default()
    }
}

/// A bwrap substrate whose per-boot directories live under `base/boots`, for leftover checks
/// (`base` traversable by the sandbox's own uid, as the default under /tmp is).
fn bwrap_in(base: &Path) -> Arc<dyn substrate_core::Substrate> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711)).unwrap();
    let modules = substrate_testkit::stage::ensure_staged().unwrap();
    Arc::new(runtime_bwrap::BwrapSubstrate::new(modules).base_dir(base.join("boots")))
}

fn boots_left(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base.join("boots"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn scripted(builder: AgentBuilder, model: &ScriptedModel) -> AgentBuilder {
    scripted_engine_envs(&model.base_url())
        .into_iter()
        .fold(builder, |b, (k, v)| b.env(k, v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_host_selects_bwrap_and_never_local() {
    let selected = computeragent::runtime::select(&config()).await.unwrap();
    assert_eq!(selected, RuntimeName::Bwrap, "CI installs bubblewrap");
    let all = computeragent::runtime::check_all(&config()).await;
    let bwrap = all
        .iter()
        .find(|a| a.runtime == RuntimeName::Bwrap)
        .unwrap();
    assert!(bwrap.usable(), "{bwrap:?}");
    // Runtimes of other hosts say what works here.
    for name in [RuntimeName::Tart, RuntimeName::AppleContainer] {
        let a = all.iter().find(|a| a.runtime == name).unwrap();
        assert!(!a.usable(), "{a:?}");
        let err = computeragent::runtime::open(name, &config())
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(
            err.to_string().contains("on Linux use bwrap or lima"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_works_on_its_source_over_two_turns_and_leaves_nothing() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "cat src/lib.txt notes.md > seen.txt; printf 'one\\n' > out.md"}),
            ))
            .reply(Reply::text("First done."))
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "cat upload.txt >> out.md; mkdir -p deep/er && echo x > deep/er/f.txt"}),
            ))
            .reply(Reply::text("Second done.")),
    )
    .await
    .unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("src")).unwrap();
    std::fs::write(project.path().join("src/lib.txt"), "from the project\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", project.path().join("escape")).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut agent = scripted(Agent::builder(), &model)
        .substrate(bwrap_in(base.path()))
        .source(Source::Dir(project.path().to_owned()))
        .label("facade-two-turns")
        .start()
        .await
        .unwrap();
    assert_eq!(agent.runtime(), Some(substrate_core::SubstrateKind::Bwrap));
    // Files can go in between turns too.
    agent.write_artifact("notes.md", "a note\n").await.unwrap();
    let first = agent.ask("Read the project").await.unwrap();
    assert_eq!(first.result_text(), Some("First done."));
    assert_eq!(
        &agent.fetch_artifact("seen.txt").await.unwrap()[..],
        b"from the project\na note\n"
    );
    agent
        .write_artifact("upload.txt", "uploaded\n")
        .await
        .unwrap();
    // The second turn, streamed event by event.
    let mut turn = agent.chat("Append").await.unwrap();
    let mut kinds = Vec::new();
    while let Some(event) = turn.next().await {
        kinds.push(event.unwrap().kind);
    }
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, EventKind::TurnStarted { turn: 2, .. }))
    );
    let outcome = turn.finish().await.unwrap();
    assert_eq!(outcome.result_text(), Some("Second done."));
    assert_eq!(
        &agent.fetch_artifact("out.md").await.unwrap()[..],
        b"one\nuploaded\n"
    );
    let paths: Vec<String> = agent
        .list_workdir()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    for expected in ["src/lib.txt", "deep/er/f.txt", "out.md", "notes.md"] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} not in {paths:?}"
        );
    }
    assert!(
        !paths.iter().any(|p| p == "escape"),
        "a symlink was copied: {paths:?}"
    );
    let summary = agent.dispose().await.unwrap();
    assert_eq!(summary.reason, EndReason::Complete);
    assert_eq!(summary.turns, 2);
    assert!(
        boots_left(base.path()).is_empty(),
        "{:?}",
        boots_left(base.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_task_returns_the_answer_and_every_file() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "mkdir -p out && printf '# Report\\n' > out/report.md"}),
            ))
            .reply(Reply::text("Report written.")),
    )
    .await
    .unwrap();
    let task = Agent::run_task(
        scripted(Agent::builder(), &model)
            .runtime(RuntimeName::Bwrap)
            .runtime_config(config())
            .source(Source::Files(vec![(
                "brief.txt".into(),
                b"write a report".to_vec(),
            )])),
        "Write the report",
    )
    .await
    .unwrap();
    assert_eq!(task.outcome.result_text(), Some("Report written."));
    assert_eq!(task.summary.reason, EndReason::Complete);
    let files: Vec<(&str, &[u8])> = task
        .files
        .iter()
        .map(|(p, c)| (p.as_str(), &c[..]))
        .collect();
    assert!(
        files.contains(&("out/report.md", b"# Report\n".as_slice())),
        "{files:?}"
    );
    assert!(
        files.contains(&("brief.txt", b"write a report".as_slice())),
        "{files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tool_call_never_runs() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "echo ran > ran.txt"}),
            ))
            .reply(Reply::text("It was denied.")),
    )
    .await
    .unwrap();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let base = tempfile::tempdir().unwrap();
    let mut agent = scripted(Agent::builder(), &model)
        .substrate(bwrap_in(base.path()))
        .permissions(permission_fn(move |request| {
            seen.lock().unwrap().push(request.tool_name.clone());
            PermissionDecision::deny("not in this test")
        }))
        .start()
        .await
        .unwrap();
    let outcome = agent.ask("Try it").await.unwrap();
    assert_eq!(outcome.result_text(), Some("It was denied."));
    assert_eq!(asked.lock().unwrap().as_slice(), ["Bash"]);
    let err = agent.fetch_artifact("ran.txt").await.unwrap_err();
    assert_eq!(err.protocol_code(), Some("NOT_FOUND"), "{err}");
    agent.dispose().await.unwrap();
    assert!(boots_left(base.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_agent_takes_its_sandbox_with_it() {
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let base = tempfile::tempdir().unwrap();
    let agent = scripted(Agent::builder(), &model)
        .substrate(bwrap_in(base.path()))
        .start()
        .await
        .unwrap();
    assert_eq!(boots_left(base.path()).len(), 1);
    drop(agent);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !boots_left(base.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            boots_left(base.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_no_directory_fails_before_anything_boots() {
    let base = tempfile::tempdir().unwrap();
    let err = Agent::builder()
        .substrate(bwrap_in(base.path()))
        .source(Source::Dir(PathBuf::from("/nonexistent/project")))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/project"), "{err}");
    assert!(boots_left(base.path()).is_empty());
    let err = Agent::builder()
        .substrate(bwrap_in(base.path()))
        .source(Source::Git {
            url: "/nonexistent/repo.git".into(),
            reference: None,
        })
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("git clone"), "{err}");
    assert!(boots_left(base.path()).is_empty());
}
