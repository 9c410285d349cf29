//! The tart runtime's boot path on the guest simulator, end to end: the real Claude Code CLI
//! in the VM, a prepared boot that installs nothing, secrets in no argv or remote command
//! line, and each failure naming its phase and leaving nothing behind.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::time::Duration;

use serde_json::json;
use substrate_core::client::ChatSession;
use substrate_core::protocol::{CreateSession, EndReason};
use substrate_core::{BootPhase, ErrorKind, PhaseDeadlines, Secret, SshFailure, Substrate};
use substrate_ssh::SshAuth;
use substrate_testkit::conformance::scripted_boot_spec;
use substrate_testkit::guestsim::{Faults, SimTools};
use substrate_testkit::model::{Reply, Script, ScriptedModel};

mod common;

/// A prefix of this test's own, so its VMs can be told from other tests'.
fn prefix(test: &str) -> String {
    format!(
        "catest-{test}-{}-",
        &Secret::random_token().unwrap().expose()[..6].to_ascii_lowercase()
    )
    .replace('_', "-")
}

/// Nothing of a boot with `prefix` is left: no VM, no `tart run`, no host state.
fn assert_nothing_left(tools: &SimTools, prefix: &str) {
    let vms: Vec<String> = tools
        .store()
        .names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(vms.is_empty(), "VMs left: {vms:?}");
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

/// A fresh image cloned from the prepared one, with `faults`.
async fn faulty_image(tools: &SimTools, faults: Faults) -> String {
    let prepared = common::prepared(tools).await.unwrap();
    let name = format!(
        "faulty-{}",
        &Secret::random_token().unwrap().expose()[..8].to_ascii_lowercase()
    );
    let store = tools.store();
    {
        let _lock = store.lock().unwrap();
        store.clone_vm(&prepared, &name).unwrap();
    }
    store.set_faults(&name, &faults).unwrap();
    name
}

fn delete_image(tools: &SimTools, name: &str) {
    let _lock = tools.store().lock().unwrap();
    tools.store().delete(name).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_works_in_the_vm_and_the_key_stays_on_the_host() {
    let tools = common::sim().unwrap();
    let image = common::prepared(&tools).await.unwrap();
    let canary = format!("sk-ant-canary-{}", Secret::random_token().unwrap().expose());
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "hostname > host.txt; id -un > user.txt; \
                    for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done > dump.bin; \
                    find \"$HOME\" -type f -size -20M -exec cat {} + >> dump.bin 2>/dev/null; \
                    printf 'made in the vm\\n' > hello.md"}),
            ))
            .reply(Reply::text("Done.")),
    )
    .await
    .unwrap();
    let prefix = prefix("e2e");
    let substrate = common::substrate(&tools, &image).prefix(prefix.clone());
    let spec =
        scripted_boot_spec("e2e", &model.base_url()).env("ANTHROPIC_API_KEY", canary.clone());
    let harness = substrate.boot_harness(spec).await.unwrap();
    let vm = tools
        .store()
        .names()
        .into_iter()
        .find(|n| n.starts_with(&prefix))
        .expect("the boot's VM");
    let lease = tools.store().run_state(&vm).expect("it runs").lease;

    let client = harness.client().unwrap();
    let mut chat = ChatSession::start(client.clone(), CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap();
    let outcome = chat.ask("Look around").await.unwrap();
    assert_eq!(outcome.result_text(), Some("Done."));
    let id = chat.session_id().to_owned();
    let read = |path: &'static str| {
        let client = client.clone();
        let id = id.clone();
        async move { client.read_file(&id, path).await.unwrap().to_vec() }
    };
    assert_eq!(read("hello.md").await, b"made in the vm\n");
    assert_eq!(
        String::from_utf8(read("host.txt").await).unwrap().trim(),
        "guest"
    );
    assert_eq!(
        String::from_utf8(read("user.txt").await).unwrap().trim(),
        "admin"
    );
    let dump = String::from_utf8_lossy(&read("dump.bin").await).into_owned();
    assert!(dump.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:3129/anthropic"));
    assert!(!dump.contains(&canary), "the key is inside the VM");
    assert_eq!(chat.finish().await.unwrap().reason, EndReason::Complete);
    // The model got the real key, through the broker and the SSH remote forward.
    for r in model.model_requests() {
        let key = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-api-key")
            .map(|(_, v)| v.clone());
        assert_eq!(key.as_deref(), Some(canary.as_str()), "{:?}", r.path);
    }

    // A prepared boot uploaded nothing (no SFTP) and installed nothing (no npm).
    let commands = tools.guest_commands(&vm);
    assert!(!commands.is_empty());
    for c in &commands {
        assert!(!c.contains("sftp-server") && !c.contains("npm"), "{c}");
        assert!(
            !c.contains(&canary),
            "a remote command line carries the key: {c}"
        );
    }
    // A terminal beside the engine, in the booted VM.
    substrate_testkit::terminal::check_booted_terminal(&harness)
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    harness.shutdown().await.unwrap();
    // No argv of any tart call carries the key.
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
async fn a_cold_image_gets_the_harness_uploaded_and_installed() {
    let tools = common::sim().unwrap();
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix("cold");
    let phases = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = phases.clone();
    let spec = scripted_boot_spec("cold", &model.base_url()).progress(
        substrate_core::ProgressSink::new(move |e| {
            if let substrate_core::BootEvent::PhaseFinished {
                phase, error: None, ..
            } = e
            {
                seen.lock().unwrap().push(phase);
            }
        }),
    );
    let harness = common::substrate(&tools, common::VANILLA)
        .prefix(prefix.clone())
        .boot_harness(spec)
        .await
        .unwrap();
    let health = harness.client().unwrap().health().await.unwrap();
    assert!(health.engines.contains_key("claude-agent-sdk"));
    let vm = tools
        .store()
        .names()
        .into_iter()
        .find(|n| n.starts_with(&prefix))
        .unwrap();
    let commands = tools.guest_commands(&vm);
    assert!(
        commands.iter().any(|c| c.contains("sftp-server")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("npm ci")),
        "{commands:?}"
    );
    harness.shutdown().await.unwrap();
    let phases = phases.lock().unwrap().clone();
    for phase in [
        BootPhase::Clone,
        BootPhase::Start,
        BootPhase::WaitIp,
        BootPhase::WaitSsh,
        BootPhase::Upload,
        BootPhase::Install,
        BootPhase::Spawn,
        BootPhase::Forward,
        BootPhase::Health,
    ] {
        assert!(phases.contains(&phase), "{phase} missing from {phases:?}");
    }
    assert_nothing_left(&tools, &prefix);
}

/// Boots `image` expecting a failure in `phase`; returns the error's text.
async fn boot_fails(
    tools: &SimTools,
    image: &str,
    test: &str,
    deadlines: PhaseDeadlines,
    phase: BootPhase,
) -> substrate_core::Error {
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix(test);
    let spec = scripted_boot_spec(test, &model.base_url()).deadlines(deadlines);
    let err = common::substrate(tools, image)
        .prefix(prefix.clone())
        .boot_harness(spec)
        .await
        .unwrap_err();
    assert_eq!(err.phase(), Some(phase), "{err}");
    assert!(err.to_string().contains(phase.as_str()), "{err}");
    assert_nothing_left(tools, &prefix);
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_names_the_clone_phase() {
    let tools = common::sim().unwrap();
    let image = faulty_image(
        &tools,
        Faults {
            clone_fails: true,
            ..Faults::default()
        },
    )
    .await;
    let err = boot_fails(
        &tools,
        &image,
        "clone",
        PhaseDeadlines::default(),
        BootPhase::Clone,
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::ProcessFailed, "{err}");
    assert!(err.to_string().contains("could not be cloned"), "{err}");
    delete_image(&tools, &image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_that_never_appears_times_out_in_wait_ip() {
    let tools = common::sim().unwrap();
    let image = faulty_image(
        &tools,
        Faults {
            no_ip: true,
            ..Faults::default()
        },
    )
    .await;
    let deadlines = PhaseDeadlines::default().with(BootPhase::WaitIp, Duration::from_secs(3));
    let err = boot_fails(&tools, &image, "noip", deadlines, BootPhase::WaitIp).await;
    assert_eq!(err.kind(), ErrorKind::BootTimeout, "{err}");
    assert!(err.to_string().contains("no IP address found"), "{err}");
    delete_image(&tools, &image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_names_wait_ssh() {
    let tools = common::sim().unwrap();
    let image = faulty_image(
        &tools,
        Faults {
            refuse_auth: true,
            ..Faults::default()
        },
    )
    .await;
    let err = boot_fails(
        &tools,
        &image,
        "auth",
        PhaseDeadlines::default(),
        BootPhase::WaitSsh,
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::Ssh(SshFailure::Auth), "{err}");
    delete_image(&tools, &image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused() {
    let tools = common::sim().unwrap();
    let image = faulty_image(&tools, Faults::default()).await;
    // The first boot records the image's key...
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let harness = common::substrate(&tools, &image)
        .boot_harness(scripted_boot_spec("first", &model.base_url()))
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    // ...then the image's VMs come up with another one.
    tools
        .store()
        .set_faults(
            &image,
            &Faults {
                regenerate_host_key: true,
                ..Faults::default()
            },
        )
        .unwrap();
    let err = boot_fails(
        &tools,
        &image,
        "hostkey",
        PhaseDeadlines::default(),
        BootPhase::WaitSsh,
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::Ssh(SshFailure::HostKey), "{err}");
    assert!(err.to_string().contains("changed"), "{err}");
    delete_image(&tools, &image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_that_exits_during_boot_is_reported_with_its_output() {
    let tools = common::sim().unwrap();
    let image = faulty_image(
        &tools,
        Faults {
            node_exits: true,
            ..Faults::default()
        },
    )
    .await;
    let err = boot_fails(
        &tools,
        &image,
        "exits",
        PhaseDeadlines::default(),
        BootPhase::Health,
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::ProcessFailed, "{err}");
    assert!(err.to_string().contains("simulated crash"), "{err}");
    delete_image(&tools, &image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_that_never_turns_green_times_out_in_health() {
    let tools = common::sim().unwrap();
    let image = faulty_image(
        &tools,
        Faults {
            node_hangs: true,
            ..Faults::default()
        },
    )
    .await;
    let deadlines = PhaseDeadlines::default().with(BootPhase::Health, Duration::from_secs(3));
    let err = boot_fails(&tools, &image, "hangs", deadlines, BootPhase::Health).await;
    assert_eq!(err.kind(), ErrorKind::BootTimeout, "{err}");
    delete_image(&tools, &image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_run_are_reaped() {
    let tools = common::sim().unwrap();
    let image = common::prepared(&tools).await.unwrap();
    // A VM named as a run of a process that no longer exists.
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
        tools.store().clone_vm(&image, &name).unwrap();
    }
    let reaped = common::substrate(&tools, &image)
        .prefix(prefix.clone())
        .reap_leftovers()
        .await
        .unwrap();
    assert_eq!(reaped.vms, vec![name]);
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_falls_through_to_the_next_credential() {
    let tools = common::sim().unwrap();
    let image = common::prepared(&tools).await.unwrap();
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix("keyauth");
    let key = tools.store().client_key().unwrap();
    let harness = common::substrate(&tools, &image)
        .prefix(prefix.clone())
        .login(
            "admin",
            vec![
                SshAuth::Password(Secret::new("wrong")),
                SshAuth::KeyFile {
                    path: key,
                    passphrase: None,
                },
            ],
        )
        .boot_harness(scripted_boot_spec("keyauth", &model.base_url()))
        .await
        .unwrap();
    harness.client().unwrap().health().await.unwrap();
    harness.shutdown().await.unwrap();
    assert_nothing_left(&tools, &prefix);
}

/// A Bash step that tries the host's side of the VM's link on `port` and writes `reached` or
/// `blocked` to net.txt.
fn probe_host(port: u16) -> Reply {
    Reply::tool_use(
        "Bash",
        json!({"command": format!(
            "a=$(/usr/sbin/ip -4 -o addr show scope global); a=${{a#*inet }}; a=${{a%%/*}}; h=${{a%.*}}.$(( ${{a##*.}} - 1 )); \
             if timeout 3 bash -c \"echo hello > /dev/tcp/$h/{port}\" 2>/dev/null; then echo reached > net.txt; else echo blocked > net.txt; fi"
        )}),
    )
}

async fn net_probe(policy: substrate_core::NetworkPolicy) -> (String, usize) {
    let tools = common::sim().unwrap();
    let image = common::prepared(&tools).await.unwrap();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let model = ScriptedModel::start(
        Script::new()
            .reply(probe_host(port))
            .reply(Reply::text("Done.")),
    )
    .await
    .unwrap();
    let harness = common::substrate(&tools, &image)
        .boot_harness(scripted_boot_spec("net", &model.base_url()).network(policy))
        .await
        .unwrap();
    let client = harness.client().unwrap();
    let mut chat = ChatSession::start(client.clone(), CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap();
    chat.ask("probe").await.unwrap();
    let net = client
        .read_file(chat.session_id(), "net.txt")
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    let mut accepted = 0;
    while listener.accept().is_ok() {
        accepted += 1;
    }
    (String::from_utf8_lossy(&net).trim().to_owned(), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_network_none_the_vm_opens_no_connection() {
    let (seen, accepted) = net_probe(substrate_core::NetworkPolicy::None).await;
    assert_eq!(seen, "blocked");
    assert_eq!(accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_network_host_the_same_probe_gets_through() {
    // The control: the probe can succeed, so `blocked` above is the policy's doing.
    let (seen, accepted) = net_probe(substrate_core::NetworkPolicy::Host).await;
    assert_eq!(seen, "reached");
    assert_eq!(accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_snapshot_outlives_the_vm() {
    let tools = common::sim().unwrap();
    let image = common::prepared(&tools).await.unwrap();
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix("audit");
    let harness = common::substrate(&tools, &image)
        .prefix(prefix.clone())
        .audit_snapshot(true)
        .boot_harness(scripted_boot_spec("audit", &model.base_url()))
        .await
        .unwrap();
    let vm = tools
        .store()
        .names()
        .into_iter()
        .find(|n| n.starts_with(&prefix))
        .unwrap();
    harness.shutdown().await.unwrap();
    let left: Vec<String> = tools
        .store()
        .names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(left, vec![format!("{vm}-audit")]);
    // The reaper leaves audit snapshots alone.
    common::substrate(&tools, &image)
        .prefix(prefix.clone())
        .reap_leftovers()
        .await
        .unwrap();
    assert!(tools.store().exists(&format!("{vm}-audit")));
    delete_image(&tools, &format!("{vm}-audit"));
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_on_failure_leaves_the_vm_running_for_a_look() {
    let tools = common::sim().unwrap();
    let image = faulty_image(
        &tools,
        Faults {
            node_exits: true,
            ..Faults::default()
        },
    )
    .await;
    let model = ScriptedModel::start(Script::new()).await.unwrap();
    let prefix = prefix("keep");
    let err = common::substrate(&tools, &image)
        .prefix(prefix.clone())
        .keep_on_failure(true)
        .boot_harness(scripted_boot_spec("keep", &model.base_url()))
        .await
        .unwrap_err();
    assert_eq!(err.phase(), Some(BootPhase::Health), "{err}");
    let vm = tools
        .store()
        .names()
        .into_iter()
        .find(|n| n.starts_with(&prefix))
        .expect("the VM is kept");
    assert!(tools.store().run_state(&vm).is_some(), "the kept VM runs");
    let status = std::process::Command::new(tools.tart())
        .env("TART_HOME", tools.store().root())
        .args(["delete", &vm])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(tools.store().root().join("state").join(&vm));
    delete_image(&tools, &image);
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_in_a_vm_sizes_resizes_interrupts_and_brings_its_files_back() {
    let tools = common::sim().unwrap();
    let image = common::prepared(&tools).await.unwrap();
    let prefix = prefix("terminal");
    let substrate = common::substrate(&tools, &image).prefix(prefix.clone());
    let scratch = tempfile::tempdir().unwrap();
    substrate_testkit::terminal::check_terminal(
        &substrate,
        &substrate_core::BootSpec::new("terminal"),
        scratch.path(),
    )
    .await
    .unwrap();
    assert_nothing_left(&tools, &prefix);
}
