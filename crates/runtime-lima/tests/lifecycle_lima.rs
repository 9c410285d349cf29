//! The lima runtime's boot path on the guest simulator: a project mounted read-write, the
//! runtime script before the harness, a base that installs nothing, secrets in no argv or
//! remote command line, failures that name their phase and leave nothing behind.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::{Arc, Mutex};

use serde_json::json;
use substrate_core::client::ChatSession;
use substrate_core::protocol::CreateSession;
use substrate_core::{
    BootEvent, BootPhase, ErrorKind, NetworkPolicy, ProgressSink, Secret, Substrate,
};
use substrate_testkit::guestsim::SimTools;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

mod common;

fn prefix(test: &str) -> String {
    format!(
        "catest-{test}-{}-",
        &Secret::random_token().unwrap().expose()[..6].to_ascii_lowercase()
    )
}

fn assert_nothing_left(tools: &SimTools, prefix: &str) {
    let left: Vec<String> = tools
        .store()
        .names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "instances left: {left:?}");
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(prefix))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let state: Vec<String> = std::fs::read_dir(tools.store().root().join("state"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(state.is_empty(), "host state left: {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_edits_the_mounted_project_after_the_runtime_script() {
    let tools = common::sim().unwrap();
    let base = common::base(&tools).await.unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README.md"), "the project\n").unwrap();
    // The guest's user is not the test's (root): let it in, as a host user's own project is.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let canary = format!("sk-ant-canary-{}", Secret::random_token().unwrap().expose());
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": format!(
                    "cat {p}/README.md > seen.txt; cat {p}/.prepared-by-script >> seen.txt; \
                     cat ~admin/.setup-mark >> seen.txt; echo 'from the agent' > {p}/NOTES.md",
                    p = project.path().display()
                )}),
            ))
            .reply(Reply::text("Done.")),
    )
    .await
    .unwrap();
    let prefix = prefix("project");
    let notes = Arc::new(Mutex::new(Vec::new()));
    let seen = notes.clone();
    let spec = common::spec("project", &model.base_url())
        .env("ANTHROPIC_API_KEY", canary.clone())
        .progress(ProgressSink::new(move |e| {
            if let BootEvent::Note { phase, message } = e {
                seen.lock().unwrap().push((phase, message));
            }
        }));
    let harness = common::substrate(&tools, base)
        .prefix(prefix.clone())
        .mount(project.path(), true)
        .runtime_script(b"echo preparing the project; pwd > .prepared-by-script\n".to_vec())
        .boot_harness(spec)
        .await
        .unwrap();
    let instance = tools
        .store()
        .names()
        .into_iter()
        .find(|n| n.starts_with(&prefix))
        .unwrap();
    let lease = tools.store().run_state(&instance).expect("it runs").lease;
    let client = harness.client().unwrap();
    let mut chat = ChatSession::start(client.clone(), CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap();
    let outcome = chat.ask("Take notes").await.unwrap();
    assert_eq!(outcome.result_text(), Some("Done."));
    let seen = client
        .read_file(chat.session_id(), "seen.txt")
        .await
        .unwrap();
    let seen = String::from_utf8_lossy(&seen);
    // The project as the host has it, the script ran in it, the base's setup ran once.
    assert!(seen.contains("the project"), "{seen}");
    assert!(
        seen.contains(&project.path().display().to_string()),
        "{seen}"
    );
    assert!(seen.contains("built-by-setup"), "{seen}");
    // The agent's write reached the host's directory.
    assert_eq!(
        std::fs::read_to_string(project.path().join("NOTES.md")).unwrap(),
        "from the agent\n"
    );
    let notes = notes.lock().unwrap().clone();
    assert!(
        notes
            .iter()
            .any(|(p, m)| *p == BootPhase::Script && m.contains("preparing the project")),
        "{notes:?}"
    );
    // A clone of the base uploads and installs nothing; no secret in any command line.
    let commands = tools.guest_commands(&instance);
    for c in &commands {
        assert!(!c.contains("sftp-server") && !c.contains("npm"), "{c}");
        assert!(!c.contains(&canary), "{c}");
    }
    for r in model.model_requests() {
        let key = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-api-key")
            .map(|(_, v)| v.clone());
        assert_eq!(key.as_deref(), Some(canary.as_str()));
    }
    // A terminal beside the engine, in the booted VM.
    substrate_testkit::terminal::check_booted_terminal(&harness)
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    for call in tools.calls() {
        assert!(!call.join(" ").contains(&canary), "{call:?}");
    }
    // Its network namespace and subnet lease went with it.
    let netns = substrate_testkit::guestsim::vm::netns_name(lease);
    assert!(
        !std::path::Path::new("/run/netns").join(&netns).exists(),
        "{netns} left"
    );
    assert!(
        !substrate_testkit::guestsim::vm::leases().contains(&lease),
        "lease {lease} left"
    );
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_runtime_script_stops_the_boot_with_its_status() {
    let tools = common::sim().unwrap();
    let base = common::base(&tools).await.unwrap();
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix("script");
    let err = common::substrate(&tools, base)
        .prefix(prefix.clone())
        .runtime_script(b"echo missing dependency >&2; exit 7\n".to_vec())
        .boot_harness(common::spec("script", &model.base_url()))
        .await
        .unwrap_err();
    assert_eq!(err.phase(), Some(BootPhase::Script), "{err}");
    assert_eq!(err.kind(), ErrorKind::ProcessFailed, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("exit status: 7") && text.contains("missing dependency"),
        "{text}"
    );
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_lima_cannot_enforce_are_refused() {
    let tools = common::sim().unwrap();
    let substrate = common::substrate(&tools, runtime_lima::LimaBase::Clone("unused".into()));
    for policy in [
        NetworkPolicy::None,
        NetworkPolicy::Allow(vec!["example.com".into()]),
    ] {
        let spec = common::spec("refused", "http://127.0.0.1:9").network(policy);
        let err = substrate.boot_harness(spec).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    }
    // Refused before anything was created.
    assert!(
        tools
            .calls()
            .iter()
            .all(|c| !c.iter().any(|a| a.contains("unused")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_base_names_the_clone_phase() {
    let tools = common::sim().unwrap();
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix("nobase");
    let err = common::substrate(&tools, runtime_lima::LimaBase::Clone("no-such-base".into()))
        .prefix(prefix.clone())
        .boot_harness(common::spec("nobase", &model.base_url()))
        .await
        .unwrap_err();
    assert_eq!(err.phase(), Some(BootPhase::Clone), "{err}");
    assert!(err.to_string().contains("no-such-base"), "{err}");
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_run_are_reaped() {
    let tools = common::sim().unwrap();
    let runtime_lima::LimaBase::Clone(base) = common::base(&tools).await.unwrap() else {
        panic!("a clone base");
    };
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let prefix = prefix("reap");
    let name = format!("{prefix}{dead}-crashed-abc");
    {
        let _lock = tools.store().lock().unwrap();
        tools.store().clone_vm(&base, &name).unwrap();
    }
    let reaped = common::substrate(&tools, runtime_lima::LimaBase::Clone(base))
        .prefix(prefix.clone())
        .reap_leftovers()
        .await
        .unwrap();
    assert_eq!(reaped.instances, vec![name]);
    assert_nothing_left(&tools, &prefix);
}

/// A base cloned from the built one, with `faults`.
async fn faulty_base(tools: &SimTools, faults: substrate_testkit::guestsim::Faults) -> String {
    let runtime_lima::LimaBase::Clone(base) = common::base(tools).await.unwrap() else {
        panic!("a clone base");
    };
    let name = format!(
        "faulty-{}",
        &Secret::random_token().unwrap().expose()[..8].to_ascii_lowercase()
    );
    {
        let _lock = tools.store().lock().unwrap();
        tools.store().clone_vm(&base, &name).unwrap();
    }
    tools.store().set_faults(&name, &faults).unwrap();
    name
}

async fn boot_fails_on(tools: &SimTools, base: &str, test: &str) -> substrate_core::Error {
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix(test);
    let err = common::substrate(tools, runtime_lima::LimaBase::Clone(base.to_owned()))
        .prefix(prefix.clone())
        .boot_harness(common::spec(test, &model.base_url()))
        .await
        .unwrap_err();
    assert_nothing_left(tools, &prefix);
    let _lock = tools.store().lock().unwrap();
    tools.store().delete(base).unwrap();
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_names_wait_ssh() {
    let tools = common::sim().unwrap();
    let faults = substrate_testkit::guestsim::Faults {
        refuse_auth: true,
        ..Default::default()
    };
    let base = faulty_base(&tools, faults).await;
    let err = boot_fails_on(&tools, &base, "auth").await;
    assert_eq!(err.phase(), Some(BootPhase::WaitSsh), "{err}");
    assert_eq!(
        err.kind(),
        ErrorKind::Ssh(substrate_core::SshFailure::Auth),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_that_exits_during_boot_is_reported_with_its_output() {
    let tools = common::sim().unwrap();
    let faults = substrate_testkit::guestsim::Faults {
        node_exits: true,
        ..Default::default()
    };
    let base = faulty_base(&tools, faults).await;
    let err = boot_fails_on(&tools, &base, "exits").await;
    assert_eq!(err.phase(), Some(BootPhase::Health), "{err}");
    assert!(err.to_string().contains("simulated crash"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_in_an_instance_sizes_resizes_interrupts_and_brings_its_files_back() {
    let tools = common::sim().unwrap();
    let base = common::base(&tools).await.unwrap();
    let prefix = prefix("terminal");
    let substrate = common::substrate(&tools, base).prefix(prefix.clone());
    let scratch = tempfile::tempdir().unwrap();
    substrate_testkit::terminal::check_terminal(
        &substrate,
        &substrate_core::BootSpec::new("terminal").network(substrate_core::NetworkPolicy::Host),
        scratch.path(),
    )
    .await
    .unwrap();
    assert_nothing_left(&tools, &prefix);
}
